package mail

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
)

// ErrBadToken is what Verify returns for a token it did not sign: forged, altered,
// truncated, or signed with a secret no longer configured.
var ErrBadToken = errors.New("invalid unsubscribe token")

// minSecretLength is the shortest secret NewUnsubscribeKeys takes: 32 bytes, as from
// `openssl rand -hex 32` (which gives 64).
const minSecretLength = 32

// tokenParam is the query parameter of the link that carries the token.
const tokenParam = "token"

// UnsubscribeKeys signs and verifies unsubscribe tokens. A token names an account and a
// list in clear and carries an HMAC-SHA256 of both: it holds no secret, cannot be
// changed to name another account or list, and never expires (a link in an old mail
// must keep working). The first secret signs; every secret verifies, so a secret is
// rotated by putting the new one first and dropping the old one once the mail signed
// with it no longer matters.
type UnsubscribeKeys struct {
	secrets [][]byte
}

// NewUnsubscribeKeys takes the secrets, the signing one first (a comma-separated flag
// split by the caller; blanks around each are trimmed). Each must be at least 32 bytes.
// Errors never repeat a secret.
func NewUnsubscribeKeys(secrets ...string) (*UnsubscribeKeys, error) {
	k := &UnsubscribeKeys{}
	for i, s := range secrets {
		s = strings.TrimSpace(s)
		if len(s) < minSecretLength {
			return nil, fmt.Errorf("unsubscribe secret #%d: %d bytes, want at least %d (openssl rand -hex 32)", i+1, len(s), minSecretLength)
		}
		k.secrets = append(k.secrets, []byte(s))
	}
	if len(k.secrets) == 0 {
		return nil, errors.New("unsubscribe secret: none given")
	}
	return k, nil
}

// validList accepts list names of 1 to 64 of [a-z0-9_-], starting with a letter or
// digit: they appear in tokens and URLs as they are.
func validList(list string) bool {
	if list == "" || len(list) > 64 || list[0] == '-' || list[0] == '_' {
		return false
	}
	for i := 0; i < len(list); i++ {
		c := list[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// mac is the token's signature with secret: the version and the fields, each on its
// own line, so no two (account, list) pairs sign the same bytes.
func mac(secret []byte, account, list string) string {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte("cronkit-unsubscribe-v1\n" + account + "\n" + list))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// Token returns the token of accountID's unsubscribe from list:
// "<account>.<list>.<signature>", safe in a URL as it is.
func (k *UnsubscribeKeys) Token(accountID int64, list string) (string, error) {
	if accountID <= 0 {
		return "", fmt.Errorf("unsubscribe token: account id %d", accountID)
	}
	if !validList(list) {
		return "", fmt.Errorf("unsubscribe token: list %q: want 1 to 64 of a-z, 0-9, - and _", list)
	}
	account := strconv.FormatInt(accountID, 10)
	return account + "." + list + "." + mac(k.secrets[0], account, list), nil
}

// Verify returns the account and list of a token signed with any of the secrets, and
// ErrBadToken for anything else. The signature is compared in constant time.
func (k *UnsubscribeKeys) Verify(token string) (accountID int64, list string, err error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return 0, "", ErrBadToken
	}
	account, list, sig := parts[0], parts[1], parts[2]
	id, perr := strconv.ParseInt(account, 10, 64)
	// Only the canonical form: "042" or "+42" would be another spelling of a signed
	// token, and a token is either exactly what we issued or nothing.
	if perr != nil || id <= 0 || strconv.FormatInt(id, 10) != account || !validList(list) {
		return 0, "", ErrBadToken
	}
	ok := false
	for _, s := range k.secrets {
		// Every secret is tried, so the time taken does not say which one matched.
		if hmac.Equal([]byte(mac(s, account, list)), []byte(sig)) {
			ok = true
		}
	}
	if !ok {
		return 0, "", ErrBadToken
	}
	return id, list, nil
}

// UnsubscribeLinks builds the unsubscribe link of a marketing message.
type UnsubscribeLinks struct {
	// BaseURL is where UnsubscribeHandler is mounted (--unsubscribe-url), an https
	// URL; the token is added as its "token" query parameter.
	BaseURL string
	// Mailto is the optional address for mailto unsubscribes (--unsubscribe-mailto):
	// the requests land in a mailbox that ops process with `cronkit drip suppress`, the
	// token in the subject telling them which account asked.
	Mailto string
	Keys   *UnsubscribeKeys
}

// UnsubscribeLink is one message's unsubscribe URIs: Message.ListUnsubscribeURL and
// ListUnsubscribeMailto, and URL for the template's visible link.
type UnsubscribeLink struct {
	URL    string
	Mailto string
}

// Check validates the configuration, for a job to fail at start (exit 2) rather than
// at its first message.
func (l UnsubscribeLinks) Check() error {
	if l.Keys == nil {
		return errors.New("unsubscribe links: no secret")
	}
	u, err := url.Parse(l.BaseURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("unsubscribe url %q: want an https URL without user or fragment (RFC 8058)", l.BaseURL)
	}
	if u.Query().Has(tokenParam) {
		return fmt.Errorf("unsubscribe url %q: already has a %q parameter", l.BaseURL, tokenParam)
	}
	if l.Mailto != "" {
		if err := (Message{To: "x@example.com", Subject: "x", Text: "x", ListUnsubscribeMailto: l.Mailto}).Validate(); err != nil || strings.Contains(l.Mailto, "?") {
			return fmt.Errorf("unsubscribe mailto %q: want a bare address", l.Mailto)
		}
	}
	return nil
}

// Link returns accountID's unsubscribe link for list.
func (l UnsubscribeLinks) Link(accountID int64, list string) (UnsubscribeLink, error) {
	if err := l.Check(); err != nil {
		return UnsubscribeLink{}, err
	}
	token, err := l.Keys.Token(accountID, list)
	if err != nil {
		return UnsubscribeLink{}, err
	}
	u, _ := url.Parse(l.BaseURL) // checked
	q := u.Query()
	q.Set(tokenParam, token)
	u.RawQuery = q.Encode()
	link := UnsubscribeLink{URL: u.String()}
	if l.Mailto != "" {
		link.Mailto = strings.TrimPrefix(l.Mailto, "mailto:") + "?subject=unsubscribe%20" + token
	}
	return link, nil
}

// UnsubscribeRequest is an unsubscribe the handler verified.
type UnsubscribeRequest struct {
	AccountID int64
	List      string
	// OneClick is true for an RFC 8058 POST from a mailbox provider (body
	// List-Unsubscribe=One-Click), false for the button of the page: evidence for the
	// audit trail.
	OneClick bool
}

// Unsubscriber records an unsubscribe; the job that owns the list decides what it
// means (drip: suppress the account's address with SuppressUnsubscribe and leave the
// funnel). It must be idempotent: mailbox providers and people click twice.
type Unsubscriber interface {
	Unsubscribe(ctx context.Context, req UnsubscribeRequest) error
}

// UnsubscriberFunc adapts a function to Unsubscriber.
type UnsubscriberFunc func(ctx context.Context, req UnsubscribeRequest) error

// Unsubscribe calls f.
func (f UnsubscriberFunc) Unsubscribe(ctx context.Context, req UnsubscribeRequest) error {
	return f(ctx, req)
}

// UnsubscribeHandler is the endpoint behind the links, for a provider's web app to
// mount at UnsubscribeLinks.BaseURL (or `cronkit drip unsubscribe-server` to serve):
//   - POST (RFC 8058 one-click from the mailbox provider, or the page's button)
//     records the unsubscribe and answers 200, as often as it comes;
//   - GET and HEAD show a page with one button, and change nothing: link scanners
//     and previews fetch every URL in a message;
//   - a token that does not verify gets 403, any other method 405.
//
// It logs through the request context's zerolog logger, never the token.
type UnsubscribeHandler struct {
	keys     *UnsubscribeKeys
	recorder Unsubscriber
	org      string
	page     *htmltemplate.Template
}

var _ http.Handler = (*UnsubscribeHandler)(nil)

// unsubscribePage is the handler's one page, in three states.
const unsubscribePage = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{if .Done}}Unsubscribed{{else if .Bad}}Invalid link{{else}}Unsubscribe{{end}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;line-height:1.5}button{font-size:1rem;padding:.5rem 1.5rem}</style>
</head>
<body>
<main>
{{- if .Bad}}
<h1>This link is not valid</h1>
<p>It may have been changed or cut short. Use the link in your latest email from {{.Org}}.</p>
{{- else if .Done}}
<h1>You are unsubscribed</h1>
<p>You will no longer receive {{.List}} emails from {{.Org}}. Invoices and notices about your account still reach you.</p>
{{- else}}
<h1>Unsubscribe</h1>
<p>Stop receiving {{.List}} emails from {{.Org}}? Invoices and notices about your account will still reach you.</p>
<form method="post"><input type="hidden" name="confirm" value="yes"><button type="submit">Unsubscribe</button></form>
{{- end}}
</main>
</body>
</html>
`

// NewUnsubscribeHandler builds the handler; org names the sender on the page
// ("Example Cloud").
func NewUnsubscribeHandler(keys *UnsubscribeKeys, recorder Unsubscriber, org string) (*UnsubscribeHandler, error) {
	if keys == nil || recorder == nil {
		return nil, errors.New("unsubscribe handler: keys and recorder are required")
	}
	if org == "" {
		org = "us"
	}
	page, err := htmltemplate.New("unsubscribe").Option("missingkey=error").Parse(unsubscribePage)
	if err != nil {
		return nil, fmt.Errorf("unsubscribe page: %w", err)
	}
	return &UnsubscribeHandler{keys: keys, recorder: recorder, org: org, page: page}, nil
}

// maxUnsubscribeBody bounds what a POST may send: the one-click body is 26 bytes.
const maxUnsubscribeBody = 16 << 10

// ServeHTTP implements http.Handler.
func (h *UnsubscribeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Referrer-Policy", "no-referrer") // the URL holds the token
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPost:
	default:
		hdr.Set("Allow", "GET, HEAD, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	log := zerolog.Ctx(r.Context())
	account, list, err := h.keys.Verify(r.URL.Query().Get(tokenParam))
	if err != nil {
		log.Warn().Str("method", r.Method).Msg("unsubscribe with an invalid token refused")
		h.render(w, http.StatusForbidden, pageData{Org: h.org, Bad: true})
		return
	}
	if r.Method != http.MethodPost {
		h.render(w, http.StatusOK, pageData{Org: h.org, List: list})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxUnsubscribeBody)
	// RFC 8058 allows multipart/form-data and x-www-form-urlencoded; a body that
	// does not parse is still a POST with a valid token, and the token is the consent.
	oneClick := r.PostFormValue("List-Unsubscribe") == "One-Click"
	req := UnsubscribeRequest{AccountID: account, List: list, OneClick: oneClick}
	if err := h.recorder.Unsubscribe(r.Context(), req); err != nil {
		log.Error().Err(err).Int64("account_id", account).Str("list", list).Msg("unsubscribe not recorded")
		http.Error(w, "unsubscribe could not be recorded; please try again later", http.StatusInternalServerError)
		return
	}
	log.Info().Int64("account_id", account).Str("list", list).Bool("one_click", oneClick).Msg("unsubscribed")
	h.render(w, http.StatusOK, pageData{Org: h.org, List: list, Done: true})
}

type pageData struct {
	Org  string
	List string
	Done bool
	Bad  bool
}

func (h *UnsubscribeHandler) render(w http.ResponseWriter, status int, d pageData) {
	var b strings.Builder
	if err := h.page.Execute(&b, d); err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}
