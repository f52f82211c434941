package orchestrator

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A server that quotes the request back in its error text (some proxies do) must not
// make the client leak the key, the secret or a signature.
func TestErrorsNeverCarryCredentials(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(431)
		fmt.Fprintf(w, `{"listaccountsresponse":{"errorcode":431,"errortext":"bad request %s secret=sEcReT+/="}}`, r.URL.RawQuery)
	}))
	defer srv.Close()
	c, err := New(Config{APIURL: srv.URL, APIKey: "kEyMaRkEr", SecretKey: "sEcReT+/="})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ListAccounts(context.Background())
	if err == nil {
		t.Fatal("want an error")
	}
	msg := err.Error()
	for _, s := range []string{"kEyMaRkEr", "sEcReT+/="} {
		if strings.Contains(msg, s) {
			t.Fatalf("credential %q in error: %s", s, msg)
		}
	}
	if !strings.Contains(msg, "signature=***") {
		t.Fatalf("signature not scrubbed: %s", msg)
	}
	if !strings.Contains(msg, "error 431") {
		t.Fatalf("the CloudStack error itself was lost: %s", msg)
	}
}
