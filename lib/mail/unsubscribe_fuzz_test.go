package mail

import (
	"errors"
	"strings"
	"testing"
)

// FuzzUnsubscribeVerify: no token but one we issued verifies. Arbitrary tokens never
// panic; every refusal is ErrBadToken; a token that verifies is exactly the token
// Token issues for its account and list, so no altered spelling is accepted.
func FuzzUnsubscribeVerify(f *testing.F) {
	k, err := NewUnsubscribeKeys(strings.Repeat("k", 32), strings.Repeat("o", 40))
	if err != nil {
		f.Fatal(err)
	}
	good, _ := k.Token(42, "onboarding")
	old, _ := (&UnsubscribeKeys{secrets: k.secrets[1:]}).Token(7, "billing-notices")
	sig := good[strings.LastIndex(good, ".")+1:]
	for _, s := range []string{good, old, "43.onboarding." + sig, "42.billing." + sig, "042.onboarding." + sig,
		"+42.onboarding." + sig, good + "=", good[:len(good)-1], "42.onboarding", "..", "", "-1.x.y",
		"9223372036854775808.a." + sig, "42.ONBOARDING." + sig, strings.Replace(good, sig, strings.ToUpper(sig), 1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		id, list, err := k.Verify(token)
		if err != nil {
			if !errors.Is(err, ErrBadToken) || id != 0 || list != "" {
				t.Fatalf("refusal of %q: %v (id %d, list %q)", token, err, id, list)
			}
			return
		}
		want, terr := k.Token(id, list)
		wantOld, _ := (&UnsubscribeKeys{secrets: k.secrets[1:]}).Token(id, list)
		if terr != nil || (token != want && token != wantOld) {
			t.Fatalf("accepted %q for account %d list %q, which is not a token we issued", token, id, list)
		}
	})
}
