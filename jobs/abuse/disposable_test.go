package abuse

import (
	"os"
	"strings"
	"testing"
)

// The community list, kept outside the repository (see shared/reference/README.md).
const referenceBlocklist = "../../../shared/reference/disposable-email-domains/disposable_email_blocklist.conf"

func TestDisposableDomainsFromTheReferenceList(t *testing.T) {
	f, err := os.Open(referenceBlocklist)
	if err != nil {
		t.Fatalf("reference list: %v", err)
	}
	defer f.Close()
	l, err := ParseDomainList(f)
	if err != nil {
		t.Fatal(err)
	}
	if l.Len() < 1000 {
		t.Fatalf("only %d domains read", l.Len())
	}
	for _, tc := range []struct{ email, want string }{
		{"miner@mailinator.com", "mailinator.com"},
		{"Miner <miner@MAILINATOR.com>", "mailinator.com"},
		{"x@a.b.mailinator.com", "mailinator.com"},
		{"x@0-mailer.dynv6.net", "0-mailer.dynv6.net"},
		{"x@mailinator.co.uk", "mailinator.co.uk"},
		{"alice@example.com", ""},
		{"bob@co.uk", ""},
		{"not an address", ""},
	} {
		if got := l.Match(tc.email); got != tc.want {
			t.Errorf("Match(%q) = %q, want %q", tc.email, got, tc.want)
		}
	}
}

func TestDomainListParsing(t *testing.T) {
	l, err := ParseDomainList(strings.NewReader("# comment\n\nTempMail.example\n"))
	if err != nil || l.Len() != 1 || l.Match("a@tempmail.example") != "tempmail.example" {
		t.Fatalf("%v %d", err, l.Len())
	}
	if _, err := ParseDomainList(strings.NewReader("ok.example\nnot a domain\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("bad line: %v", err)
	}
	var none *DomainList
	if none.Match("a@mailinator.com") != "" || none.Len() != 0 {
		t.Fatal("a nil list matches nothing")
	}
}
