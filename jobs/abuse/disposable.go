package abuse

import (
	"bufio"
	"fmt"
	"io"
	"net/mail"
	"strings"
)

// DomainList is a disposable-email domain list (one domain a line, "#" comments), such
// as the community disposable_email_blocklist.conf. Ops refresh the file; the job
// reads it at start.
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
