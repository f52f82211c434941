package abuse

import (
	"os"
	"strings"
	"testing"
)

// The built-in snapshot of the community list parses and matches the way the job
// needs: subdomains up to the second level, case and display names ignored.
func TestBuiltinDomainList(t *testing.T) {
	l, err := BuiltinDomainList()
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

// The snapshot is dated and sourced where people look: the constant (shown in --help)
// and the README beside the file, with the licence next to it.
func TestBuiltinDomainListIsDated(t *testing.T) {
	readme, err := os.ReadFile("disposable_domains.README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "taken "+DisposableDomainsSnapshot) {
		t.Errorf("disposable_domains.README.md does not give the snapshot date %s", DisposableDomainsSnapshot)
	}
	if !strings.Contains(string(readme), DisposableDomainsSource) {
		t.Errorf("disposable_domains.README.md does not give the download address %s", DisposableDomainsSource)
	}
	if _, err := os.Stat("disposable_domains.LICENSE"); err != nil {
		t.Errorf("the list's licence is not beside it: %v", err)
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
