package mail_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/cronkit/cronkit/lib/mail"
)

const (
	secretNew = "0123456789abcdef0123456789abcdef-new"
	secretOld = "fedcba9876543210fedcba9876543210-old"
)

func keys(t *testing.T, secrets ...string) *mail.UnsubscribeKeys {
	t.Helper()
	k, err := mail.NewUnsubscribeKeys(secrets...)
	if err != nil {
		t.Fatalf("NewUnsubscribeKeys: %v", err)
	}
	return k
}

func TestUnsubscribeTokenRoundTrip(t *testing.T) {
	k := keys(t, secretNew)
	tok, err := k.Token(42, "onboarding")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "42.onboarding.") || len(tok) != len("42.onboarding.")+43 {
		t.Errorf("token = %q, want 42.onboarding.<43 base64url characters>", tok)
	}
	if url.QueryEscape(tok) != tok {
		t.Errorf("token %q needs escaping in a URL", tok)
	}
	if strings.Contains(tok, secretNew) {
		t.Errorf("token carries the secret")
	}
	id, list, err := k.Verify(tok)
	if err != nil || id != 42 || list != "onboarding" {
		t.Errorf("Verify = %d, %q, %v; want 42, onboarding", id, list, err)
	}
	// Signing is deterministic: the link in a re-rendered preview is the one sent.
	if again, _ := k.Token(42, "onboarding"); again != tok {
		t.Errorf("second token %q differs from %q", again, tok)
	}
}

func TestUnsubscribeTokenRefusesForgedAndAltered(t *testing.T) {
	k := keys(t, secretNew)
	tok, err := k.Token(42, "onboarding")
	if err != nil {
		t.Fatal(err)
	}
	sig := tok[strings.LastIndex(tok, ".")+1:]
	other, _ := k.Token(43, "onboarding")
	otherSig := other[strings.LastIndex(other, ".")+1:]
	forger := keys(t, strings.Repeat("x", 40))
	forged, _ := forger.Token(42, "onboarding")
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	for name, bad := range map[string]string{
		"empty":                    "",
		"signed with another key":  forged,
		"another account":          "43.onboarding." + sig,
		"another list":             "42.billing." + sig,
		"another account's sig":    "42.onboarding." + otherSig,
		"signature changed":        "42.onboarding." + flip(sig, 5),
		"signature cut":            "42.onboarding." + sig[:42],
		"signature longer":         tok + "A",
		"no signature":             "42.onboarding.",
		"leading zero":             "042.onboarding." + sig,
		"plus sign":                "+42.onboarding." + sig,
		"negative":                 "-42.onboarding." + sig,
		"extra part":               tok + ".x",
		"two parts":                "42." + sig,
		"upper-case list":          "42.Onboarding." + sig,
		"padded base64":            tok + "=",
		"standard base64 alphabet": strings.NewReplacer("-", "+", "_", "/").Replace(tok),
	} {
		if name == "standard base64 alphabet" && !strings.ContainsAny(sig, "-_") {
			continue
		}
		if id, list, err := k.Verify(bad); !errors.Is(err, mail.ErrBadToken) || id != 0 || list != "" {
			t.Errorf("%s: Verify(%q) = %d, %q, %v; want ErrBadToken", name, bad, id, list, err)
		}
	}
}

func TestUnsubscribeKeysRotate(t *testing.T) {
	old := keys(t, secretOld)
	sentLastMonth, _ := old.Token(7, "onboarding")
	rotated := keys(t, " "+secretNew+" ", secretOld) // as split from "new, old"
	if id, _, err := rotated.Verify(sentLastMonth); err != nil || id != 7 {
		t.Errorf("a link signed with the previous secret: %d, %v; want it still valid", id, err)
	}
	fresh, _ := rotated.Token(7, "onboarding")
	if fresh == sentLastMonth {
		t.Errorf("the first secret does not sign")
	}
	if _, _, err := keys(t, secretNew).Verify(sentLastMonth); !errors.Is(err, mail.ErrBadToken) {
		t.Errorf("after the old secret is dropped: %v, want ErrBadToken", err)
	}
	if _, _, err := old.Verify(fresh); !errors.Is(err, mail.ErrBadToken) {
		t.Errorf("a new link against only the old secret: %v, want ErrBadToken", err)
	}
}

func TestNewUnsubscribeKeysRefusesWeakSecrets(t *testing.T) {
	for name, secrets := range map[string][]string{
		"none":          nil,
		"short":         {"hunter2-is-not-a-secret"},
		"short second":  {secretNew, "hunter2"},
		"empty in list": {secretNew, ""},
	} {
		_, err := mail.NewUnsubscribeKeys(secrets...)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: error repeats the secret: %v", name, err)
		}
	}
}

func TestUnsubscribeTokenRefusesBadInput(t *testing.T) {
	k := keys(t, secretNew)
	for _, c := range []struct {
		id   int64
		list string
	}{{0, "onboarding"}, {-1, "onboarding"}, {1, ""}, {1, "On-boarding"}, {1, "a.b"}, {1, "-x"}, {1, strings.Repeat("a", 65)}} {
		if _, err := k.Token(c.id, c.list); err == nil {
			t.Errorf("Token(%d, %q) succeeded", c.id, c.list)
		}
	}
}

func TestUnsubscribeLinks(t *testing.T) {
	k := keys(t, secretNew)
	tok, _ := k.Token(42, "onboarding")
	l := mail.UnsubscribeLinks{BaseURL: "https://cloud.example/mail/unsubscribe?lang=de", Mailto: "unsubscribe@cloud.example", Keys: k}
	link, err := l.Link(42, "onboarding")
	if err != nil {
		t.Fatal(err)
	}
	if want := "https://cloud.example/mail/unsubscribe?lang=de&token=" + tok; link.URL != want {
		t.Errorf("URL = %q, want %q", link.URL, want)
	}
	if want := "unsubscribe@cloud.example?subject=unsubscribe%20" + tok; link.Mailto != want {
		t.Errorf("Mailto = %q, want %q", link.Mailto, want)
	}
	msg := mail.Message{Category: mail.Marketing, To: "a@b.example", Subject: "s", Text: "Unsubscribe: " + link.URL,
		ListUnsubscribeURL: link.URL, ListUnsubscribeMailto: link.Mailto}
	if err := msg.Validate(); err != nil {
		t.Errorf("a message with the link: %v", err)
	}
	noMailto := mail.UnsubscribeLinks{BaseURL: "https://cloud.example/u", Keys: k}
	if link, err := noMailto.Link(42, "onboarding"); err != nil || link.Mailto != "" {
		t.Errorf("without mailto: %+v, %v", link, err)
	}
	for name, bad := range map[string]mail.UnsubscribeLinks{
		"http":          {BaseURL: "http://cloud.example/u", Keys: k},
		"relative":      {BaseURL: "/u", Keys: k},
		"fragment":      {BaseURL: "https://cloud.example/u#x", Keys: k},
		"token taken":   {BaseURL: "https://cloud.example/u?token=1", Keys: k},
		"no keys":       {BaseURL: "https://cloud.example/u"},
		"bad mailto":    {BaseURL: "https://cloud.example/u", Mailto: "nobody", Keys: k},
		"mailto with ?": {BaseURL: "https://cloud.example/u", Mailto: "u@cloud.example?subject=x", Keys: k},
	} {
		if err := bad.Check(); err == nil {
			t.Errorf("%s: Check accepted %+v", name, bad)
		}
		if _, err := bad.Link(1, "onboarding"); err == nil {
			t.Errorf("%s: Link succeeded", name)
		}
	}
}

// recorder is an Unsubscriber that keeps what it was told, like the suppression table
// it stands for: idempotent.
type recorder struct {
	mu   sync.Mutex
	reqs []mail.UnsubscribeRequest
	err  error
}

func (r *recorder) Unsubscribe(_ context.Context, req mail.UnsubscribeRequest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.reqs = append(r.reqs, req)
	return nil
}

func (r *recorder) got() []mail.UnsubscribeRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]mail.UnsubscribeRequest(nil), r.reqs...)
}

type handlerFixture struct {
	srv   *httptest.Server
	rec   *recorder
	token string
}

func newHandlerFixture(t *testing.T) *handlerFixture {
	t.Helper()
	k := keys(t, secretNew, secretOld)
	rec := &recorder{}
	h, err := mail.NewUnsubscribeHandler(k, rec, "Example Cloud")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/mail/unsubscribe", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	tok, _ := k.Token(42, "onboarding")
	return &handlerFixture{srv: srv, rec: rec, token: tok}
}

func (f *handlerFixture) url(token string) string {
	return f.srv.URL + "/mail/unsubscribe?token=" + url.QueryEscape(token)
}

func do(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func newRequest(t *testing.T, method, url, contentType string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return req
}

// oneClick is the POST a mailbox provider sends (RFC 8058 section 3.2).
func oneClick(t *testing.T, url string) *http.Request {
	return newRequest(t, http.MethodPost, url, "application/x-www-form-urlencoded", strings.NewReader("List-Unsubscribe=One-Click"))
}

func TestUnsubscribeHandlerOneClickPost(t *testing.T) {
	f := newHandlerFixture(t)
	for i := range 2 { // providers retry, people click twice: the same answer
		resp, body := do(t, oneClick(t, f.url(f.token)))
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "You are unsubscribed") {
			t.Fatalf("POST #%d = %d %q, want 200 and the confirmation", i+1, resp.StatusCode, body)
		}
		for name, want := range map[string]string{
			"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "Content-Type": "text/html; charset=utf-8",
		} {
			if got := resp.Header.Get(name); got != want {
				t.Errorf("%s = %q, want %q", name, got, want)
			}
		}
	}
	want := mail.UnsubscribeRequest{AccountID: 42, List: "onboarding", OneClick: true}
	if got := f.rec.got(); len(got) != 2 || got[0] != want || got[1] != want {
		t.Errorf("recorded %+v, want %+v twice", got, want)
	}
}

func TestUnsubscribeHandlerOneClickMultipart(t *testing.T) {
	f := newHandlerFixture(t)
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	if err := mw.WriteField("List-Unsubscribe", "One-Click"); err != nil {
		t.Fatal(err)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	resp, _ := do(t, newRequest(t, http.MethodPost, f.url(f.token), mw.FormDataContentType(), &b))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST multipart = %d, want 200", resp.StatusCode)
	}
	if got := f.rec.got(); len(got) != 1 || !got[0].OneClick {
		t.Errorf("recorded %+v, want one one-click unsubscribe", got)
	}
}

func TestUnsubscribeHandlerPageAndButton(t *testing.T) {
	f := newHandlerFixture(t)
	resp, page := do(t, newRequest(t, http.MethodGet, f.url(f.token), "", nil))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET = %d, want 200", resp.StatusCode)
	}
	for _, want := range []string{`<form method="post">`, `<button type="submit">Unsubscribe</button>`, "onboarding emails from Example Cloud"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}
	if strings.Count(page, "<button") != 1 || strings.Contains(page, "action=") {
		t.Errorf("page wants one button posting back to its own URL (token included):\n%s", page)
	}
	if resp, body := do(t, newRequest(t, http.MethodHead, f.url(f.token), "", nil)); resp.StatusCode != http.StatusOK || body != "" {
		t.Errorf("HEAD = %d %q, want 200 and no body", resp.StatusCode, body)
	}
	if got := f.rec.got(); len(got) != 0 {
		t.Fatalf("GET or HEAD unsubscribed %+v: link scanners fetch every URL", got)
	}
	// The page's button posts its form to the page's URL.
	resp, body := do(t, newRequest(t, http.MethodPost, f.url(f.token), "application/x-www-form-urlencoded", strings.NewReader("confirm=yes")))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "You are unsubscribed") {
		t.Fatalf("button POST = %d %q", resp.StatusCode, body)
	}
	if got := f.rec.got(); len(got) != 1 || got[0] != (mail.UnsubscribeRequest{AccountID: 42, List: "onboarding"}) {
		t.Errorf("recorded %+v, want one unsubscribe from the page (not one-click)", got)
	}
}

func TestUnsubscribeHandlerRefusesBadTokens(t *testing.T) {
	f := newHandlerFixture(t)
	forger := keys(t, strings.Repeat("f", 32))
	forged, _ := forger.Token(42, "onboarding")
	sig := f.token[strings.LastIndex(f.token, ".")+1:]
	for name, tok := range map[string]string{
		"forged":          forged,
		"altered account": "43.onboarding." + sig,
		"altered list":    "42.billing." + sig,
		"missing":         "",
	} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			req := oneClick(t, f.url(tok))
			if method == http.MethodGet {
				req = newRequest(t, method, f.url(tok), "", nil)
			}
			resp, body := do(t, req)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "not valid") || strings.Contains(body, "<form") {
				t.Errorf("%s %s token: %d %q, want 403 without a button", method, name, resp.StatusCode, body)
			}
		}
	}
	if got := f.rec.got(); len(got) != 0 {
		t.Errorf("recorded %+v from bad tokens", got)
	}
}

func TestUnsubscribeHandlerOtherMethods(t *testing.T) {
	f := newHandlerFixture(t)
	for _, method := range []string{http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodOptions} {
		resp, _ := do(t, newRequest(t, method, f.url(f.token), "", nil))
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD, POST" {
			t.Errorf("%s = %d (Allow %q), want 405 with Allow", method, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
	if got := f.rec.got(); len(got) != 0 {
		t.Errorf("recorded %+v", got)
	}
}

func TestUnsubscribeHandlerRecorderFailure(t *testing.T) {
	f := newHandlerFixture(t)
	f.rec.err = errors.New("database down")
	resp, body := do(t, oneClick(t, f.url(f.token)))
	if resp.StatusCode != http.StatusInternalServerError || strings.Contains(body, "database down") {
		t.Errorf("POST with the recorder failing = %d %q, want 500 without internals (the provider retries)", resp.StatusCode, body)
	}
}

func TestNewUnsubscribeHandlerNeedsKeysAndRecorder(t *testing.T) {
	if _, err := mail.NewUnsubscribeHandler(nil, &recorder{}, ""); err == nil {
		t.Error("no keys: accepted")
	}
	if _, err := mail.NewUnsubscribeHandler(keys(t, secretNew), nil, ""); err == nil {
		t.Error("no recorder: accepted")
	}
	var called bool
	h, err := mail.NewUnsubscribeHandler(keys(t, secretNew), mail.UnsubscriberFunc(func(context.Context, mail.UnsubscribeRequest) error {
		called = true
		return nil
	}), "")
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := keys(t, secretNew).Token(1, "onboarding")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/?token="+tok, strings.NewReader("List-Unsubscribe=One-Click")))
	if w.Code != http.StatusOK || !called {
		t.Errorf("UnsubscriberFunc: %d, called %v", w.Code, called)
	}
}
