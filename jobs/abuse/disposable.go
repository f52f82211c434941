package abuse

import (
	"bufio"
	"bytes"
	_ "embed" // the built-in domain list
	"fmt"
	"io"
	"net/mail"
	"strings"
)

// DisposableDomainsSnapshot is the date of the built-in domain list, a copy of the
// community list (see disposable_domains.README.md), shown in `cronkit abuse --help` so
// ops can tell how old it is.
const DisposableDomainsSnapshot = "2026-11-30"

// DisposableDomainsSource is where a fresher copy of the community list is downloaded
// from, for --disposable-domains.
const DisposableDomainsSource = "https://raw.githubusercontent.com/disposable-email-domains/disposable-email-domains/main/disposable_email_blocklist.conf"

// builtinDomains is the community list as of DisposableDomainsSnapshot (CC0).
//
//go:embed disposable_domains.txt
var builtinDomains []byte

// DomainList is a disposable-email domain list (one domain a line, "#" comments), such
// as the community disposable_email_blocklist.conf. The binary carries a dated
// snapshot (BuiltinDomainList); ops may point the job at a fresher file instead.
type DomainList struct {
	domains map[string]struct{}
}

// ParseDomainList reads a list. Blank lines and lines starting with "#" are skipped;
// domains are lower-cased.
func ParseDomainList(r io.Reader) (*DomainList, error) {
	l := &DomainList{domains: map[string]struct{}{}}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		d := strings.ToLower(strings.TrimSpace(sc.Text()))
		if d == "" || strings.HasPrefix(d, "#") {
			continue
		}
		if strings.ContainsAny(d, " \t@/") || !strings.Contains(d, ".") {
			return nil, fmt.Errorf("disposable domain list line %d: %q is not a domain", line, d)
		}
		l.domains[strings.TrimSuffix(d, ".")] = struct{}{}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("disposable domain list: %w", err)
	}
	return l, nil
}

// BuiltinDomainList is the list embedded in the binary, so a fresh install runs
// without downloading one. It is parsed on each call: callers keep the result.
func BuiltinDomainList() (*DomainList, error) {
	l, err := ParseDomainList(bytes.NewReader(builtinDomains))
	if err != nil {
		return nil, fmt.Errorf("built-in %w", err)
	}
	return l, nil
}

// Len is the number of domains listed.
func (l *DomainList) Len() int {
	if l == nil {
		return 0
	}
	return len(l.domains)
}

// Match returns the listed domain that email's domain is, or is a subdomain of
// (a.b.mailinator.com matches mailinator.com), checking every parent down to the
// second level; "" when none is listed or email has no domain.
func (l *DomainList) Match(email string) string {
	if l == nil {
		return ""
	}
	addr := email
	if a, err := mail.ParseAddress(email); err == nil {
		addr = a.Address
	}
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return ""
	}
	domain := strings.TrimSuffix(strings.ToLower(addr[at+1:]), ".")
	for {
		if _, ok := l.domains[domain]; ok {
			return domain
		}
		dot := strings.IndexByte(domain, '.')
		if dot < 0 {
			return ""
		}
		rest := domain[dot+1:]
		if !strings.Contains(rest, ".") {
			return "" // only a top-level domain is left
		}
		domain = rest
	}
}
