package abuse

import (
	"regexp"
	"testing"
)

// policyErr is what every policy error must look like: it says it is the policy and
// names where (a key, or the TOML parser's line).
var policyErr = regexp.MustCompile(`^policy(:| [a-z_]+[a-z_.\[\]0-9]*:)`)

// FuzzParsePolicy feeds arbitrary TOML to the policy parser: it must never panic,
// and an error must name the input (the key, or the line of a syntax error).
func FuzzParsePolicy(f *testing.F) {
	f.Add(defaultPolicy)
	f.Add([]byte("[dunning]\nremind_after = \"3d\"\n"))
	f.Add([]byte("[free_credit.cpu]\nhot_percent = 101\n"))
	f.Add([]byte("[free_credit.cpu]\nsustained = \"-1h\"\n"))
	f.Add([]byte("unknown = 1\n"))
	f.Add([]byte("[dunning\n"))
	f.Add([]byte("[free_credit]\nthreshold = 1e400\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := ParsePolicy(data)
		if err != nil && !policyErr.MatchString(err.Error()) {
			t.Fatalf("error does not name the policy and where: %v", err)
		}
	})
}
