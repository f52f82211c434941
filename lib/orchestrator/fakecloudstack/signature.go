package fakecloudstack

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/url"
	"sort"
	"strings"
	"time"
)

// CanonicalString is the string CloudStack signs, built exactly as its ApiServer
// verifyRequest does, so the fake rejects every request the real server would:
//
//   - every parameter except "signature" (matched case-insensitively), first value only;
//   - parameter names sorted as Java's Collections.sort does, i.e. case-sensitively by
//     code unit (this is also what cloudstack-go's EncodeValues does; a case-insensitive
//     sort gives the same order unless two names differ only by case at the first
//     differing letter, e.g. "apiKey" vs "apiaccess");
//   - "name=" + value encoded with Java's URLEncoder, then "+" replaced by "%20";
//   - pairs joined with "&" and the whole string lowercased.
//
// It is exported so tests and scripts (curl) can sign requests by hand.
func CanonicalString(params url.Values) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		if strings.EqualFold(k, "signature") {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('&')
		}
		v := ""
		if vs := params[k]; len(vs) > 0 {
			v = vs[0]
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(strings.ReplaceAll(javaURLEncode(v), "+", "%20"))
	}
	return strings.ToLower(b.String())
}

// Sign returns the signature CloudStack expects for params under secretKey:
// base64(HMAC-SHA1(secretKey, CanonicalString(params))). Put it in the "signature"
// parameter (URL-encoded like any other value).
func Sign(params url.Values, secretKey string) string {
	mac := hmac.New(sha1.New, []byte(secretKey))
	mac.Write([]byte(CanonicalString(params)))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// javaURLEncode is java.net.URLEncoder.encode(s, "UTF-8"): letters, digits and ".-*_"
// stay, a space becomes "+", every other UTF-8 byte becomes %XX (upper-case hex).
// It differs from Go's url.QueryEscape on "*" (kept) and "~" (escaped); cloudstack-go
// patches the first but not the second, so a value containing "~" signed by the SDK is
// rejected by CloudStack, and by this fake too.
func javaURLEncode(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '-', c == '*', c == '_':
			b.WriteByte(c)
		case c == ' ':
			b.WriteByte('+')
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0x0f])
		}
	}
	return b.String()
}

// expiresLayouts are the forms of the "expires" parameter CloudStack's
// DateUtil.parseTZDateString accepts: "2026-11-25T12:00:00+0000" from its docs and
// RFC 3339 ("...Z" or "+00:00"), which is what cloudstack-go sends.
var expiresLayouts = []string{
	"2006-01-02T15:04:05-0700",
	time.RFC3339,
	"2006-01-02T15:04:05.000-0700",
}

func parseExpires(s string) (time.Time, bool) {
	for _, l := range expiresLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// verify reports whether the request's parameters carry a valid signature from a
// known API key, following ApiServer.verifyRequest: signature and apikey present;
// with signatureversion=3, an "expires" that parses and is not in the past; a known
// apikey; and a signature equal (in constant time) to the one computed with its secret.
func (s *Server) verify(params url.Values) bool {
	var signature, apiKey, version, expires string
	var haveSig, haveKey bool
	for k, vs := range params {
		v := ""
		if len(vs) > 0 {
			v = vs[0]
		}
		switch {
		case strings.EqualFold(k, "signature"):
			signature, haveSig = v, true
		case strings.EqualFold(k, "apikey"):
			apiKey, haveKey = v, true
		case strings.EqualFold(k, "signatureversion"):
			version = v
		case strings.EqualFold(k, "expires"):
			expires = v
		}
	}
	if !haveSig || !haveKey {
		return false
	}
	if version == "3" {
		if expires == "" {
			return false
		}
		ts, ok := parseExpires(expires)
		if !ok || ts.Before(s.now()) {
			return false
		}
	}
	s.mu.Lock()
	secret, ok := s.secrets[apiKey]
	s.mu.Unlock()
	if !ok {
		return false
	}
	return hmac.Equal([]byte(signature), []byte(Sign(params, secret)))
}
