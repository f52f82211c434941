package drip

import (
	"strings"
	"testing"
)

// FuzzParseFunnel feeds arbitrary TOML to the funnel parser: it must never panic, and
// an error must name the file it was given.
func FuzzParseFunnel(f *testing.F) {
	f.Add(defaultFunnel)
	f.Add([]byte("[funnel]\nname = \"x\"\n"))
	f.Add([]byte("[[step]]\nname = \"welcome\"\nafter = \"-1h\"\n"))
	f.Add([]byte("[funnel\n"))
	f.Add([]byte("[[step]]\nname = \"a\"\n[[step]]\nname = \"a\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := ParseFunnel("fuzz.toml", data)
		if err != nil && !strings.HasPrefix(err.Error(), "funnel fuzz.toml: ") {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}
