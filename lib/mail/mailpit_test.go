package mail_test

// The Sender against a real SMTP server, mailpit, read back through its HTTP API: the
// sink proves what go-mail writes, mailpit proves another implementation parses it
// the same way. Needs the mailpit binary (CRONKIT_MAILPIT, PATH, or $GOPATH/bin);
// without it the test is skipped, unless CRONKIT_INTEGRATION=1.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mail"
)

// needIntegration skips the test, or fails it when CI requires every dependency.
func needIntegration(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CRONKIT_INTEGRATION") == "1" {
		t.Fatalf("CRONKIT_INTEGRATION=1 but %s is not available", what)
	}
	t.Skipf("%s is not available (go install github.com/axllent/mailpit@v1.33.1, or set CRONKIT_MAILPIT)", what)
}

func findMailpit(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CRONKIT_MAILPIT"); p != "" {
		return p
	}
	if p, err := exec.LookPath("mailpit"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			p := filepath.Join(dir, "bin", "mailpit")
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	needIntegration(t, "the mailpit binary")
	return ""
}

// mailpit is a running mailpit: SMTP on smtpPort, the HTTP API at api.
type mailpit struct {
	smtpPort int
	api      string
}

func startMailpit(t *testing.T, extraArgs ...string) *mailpit {
	t.Helper()
	bin := findMailpit(t)
	dir := t.TempDir()
	smtpPort, httpPort := closedPort(t), closedPort(t)
	args := append([]string{
		"--smtp", fmt.Sprintf("127.0.0.1:%d", smtpPort),
		"--listen", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"--database", filepath.Join(dir, "mailpit.db"),
		"--log-file", filepath.Join(dir, "mailpit.log"),
		"--disable-version-check", "--smtp-disable-rdns",
	}, extraArgs...)
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		needIntegration(t, "mailpit ("+err.Error()+")")
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	m := &mailpit{smtpPort: smtpPort, api: fmt.Sprintf("http://127.0.0.1:%d/api/v1", httpPort)}
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			log, _ := os.ReadFile(filepath.Join(dir, "mailpit.log"))
			t.Fatalf("mailpit exited: %v\n%s", err, log)
		default:
		}
		resp, err := http.Get(m.api + "/info")
		if err == nil {
			_ = resp.Body.Close()
			if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", smtpPort)); err == nil && resp.StatusCode == http.StatusOK {
				_ = c.Close()
				return m
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "mailpit.log"))
			t.Fatalf("mailpit not ready after 15s\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (m *mailpit) get(t *testing.T, path string, into any) {
	t.Helper()
	resp, err := http.Get(m.api + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v: %s", path, resp.StatusCode, err, body)
	}
	if err := json.Unmarshal(body, into); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, body)
	}
}

type mailpitAddress struct {
	Name    string
	Address string
}

type mailpitSummary struct {
	ID        string
	MessageID string
	Subject   string
	From      mailpitAddress
	To        []mailpitAddress
}

type mailpitMessage struct {
	mailpitSummary
	Text string
	HTML string
}

func TestSenderAgainstMailpit(t *testing.T) {
	mp := startMailpit(t)
	s, err := mail.NewSender(mail.SMTPConfig{Host: "127.0.0.1", Port: mp.smtpPort, TLS: "none", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s.Now = func() time.Time { return fixedNow }
	msg := validMessage()
	msg.Subject = "Rechnung INV-42 überfällig"
	msg.HTML = "<p>Please pay invoice <b>INV-42</b>.</p>"
	if err := s.Send(context.Background(), msg); err != nil {
		t.Fatalf("Send: %v", err)
	}

	var list struct {
		Total    int
		Messages []mailpitSummary
	}
	mp.get(t, "/messages", &list)
	if list.Total != 1 || len(list.Messages) != 1 {
		t.Fatalf("mailpit holds %d messages, want 1", list.Total)
	}
	var got mailpitMessage
	mp.get(t, "/message/"+list.Messages[0].ID, &got)
	if got.Subject != msg.Subject {
		t.Errorf("Subject = %q, want %q", got.Subject, msg.Subject)
	}
	if got.MessageID != msg.MessageID {
		t.Errorf("MessageID = %q, want %q", got.MessageID, msg.MessageID)
	}
	if got.From != (mailpitAddress{"Cronkit Billing", "billing@cloud.example"}) {
		t.Errorf("From = %+v", got.From)
	}
	if len(got.To) != 1 || got.To[0] != (mailpitAddress{"Ada Lovelace", "ada@customer.example"}) {
		t.Errorf("To = %+v", got.To)
	}
	if strings.TrimSpace(got.Text) != strings.TrimSpace(msg.Text) {
		t.Errorf("Text = %q, want %q", got.Text, msg.Text)
	}
	if !strings.Contains(got.HTML, msg.HTML) {
		t.Errorf("HTML = %q, want it to contain %q", got.HTML, msg.HTML)
	}

	var headers map[string][]string
	mp.get(t, "/message/"+got.ID+"/headers", &headers)
	for name, want := range map[string]string{
		"List-Unsubscribe":      "<https://cloud.example/unsubscribe?t=abc123>, <mailto:unsubscribe@cloud.example?subject=unsubscribe%20abc123>",
		"List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
		"X-Cronkit-Case":        "42",
		"Date":                  "Fri, 14 Mar 2025 09:26:53 +0000",
	} {
		if v := headers[name]; len(v) != 1 || v[0] != want {
			t.Errorf("header %s = %q, want [%q]", name, v, want)
		}
	}
	if ct := headers["Content-Type"]; len(ct) != 1 || !strings.HasPrefix(ct[0], "multipart/alternative") {
		t.Errorf("Content-Type = %q, want multipart/alternative", ct)
	}
}

func TestSenderAuthAgainstMailpit(t *testing.T) {
	authFile := filepath.Join(t.TempDir(), "smtp-auth")
	if err := os.WriteFile(authFile, []byte("cronkit:s3cret-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mp := startMailpit(t, "--smtp-auth-file", authFile, "--smtp-auth-allow-insecure")
	send := func(password string) error {
		s, err := mail.NewSender(mail.SMTPConfig{Host: "127.0.0.1", Port: mp.smtpPort, TLS: "none",
			Username: "cronkit", Password: password, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return s.Send(context.Background(), validMessage())
	}
	err := send("wrong-pw")
	if err == nil {
		t.Fatalf("Send with a wrong password succeeded")
	}
	if mail.IsPermanent(err) || !errors.Is(err, mail.ErrRelayUnavailable) {
		t.Errorf("err = %v, want ErrRelayUnavailable and not permanent: a login failure is the relay's config, not the message's fault", err)
	}
	if strings.Contains(err.Error(), "wrong-pw") {
		t.Errorf("error repeats the password: %v", err)
	}
	var te *textproto.Error
	if !errors.As(err, &te) || te.Code != 535 {
		t.Errorf("err = %v, want the server's 535 authentication failure", err)
	}
	if err := send("s3cret-pw"); err != nil {
		t.Fatalf("Send with the right password: %v", err)
	}
	var list struct{ Total int }
	mp.get(t, "/messages", &list)
	if list.Total != 1 {
		t.Errorf("mailpit holds %d messages, want 1", list.Total)
	}
}

// TestMarketingUnsubscribeAgainstMailpit sends a funnel step as drip will, through the
// outbox (stored, read back, rebuilt), to mailpit; checks that the RFC 8058 headers
// arrive intact and pass mailpit's own List-Unsubscribe check; then does what a
// mailbox provider does with them: a one-click POST to the https URL, answered by
// UnsubscribeHandler.
func TestMarketingUnsubscribeAgainstMailpit(t *testing.T) {
	mp := startMailpit(t)
	f := newDBFixture(t)
	f.outbox.KeyPrefix = "drip:"
	k, err := mail.NewUnsubscribeKeys(secretNew, secretOld)
	if err != nil {
		t.Fatal(err)
	}
	links := mail.UnsubscribeLinks{BaseURL: "https://cloud.example/mail/unsubscribe", Mailto: "unsubscribe@cloud.example", Keys: k}
	link, err := links.Link(42, "onboarding")
	if err != nil {
		t.Fatal(err)
	}
	msg := mail.Message{Category: mail.Marketing, From: "Example Cloud <hello@cloud.example>", To: "Ada <ada@customer.example>",
		Subject: "Your first VM", Text: "Start one today.\n\nUnsubscribe: " + link.URL + "\n",
		HTML:               `<p>Start one today.</p><p><a href="` + link.URL + `">Unsubscribe</a></p>`,
		ListUnsubscribeURL: link.URL, ListUnsubscribeMailto: link.Mailto}
	if _, err := f.outbox.EnqueueAt(context.Background(), nil, "drip:onboarding:account:42:first_vm", msg, time.Time{}); err != nil {
		t.Fatal(err)
	}
	s, err := mail.NewSender(mail.SMTPConfig{Host: "127.0.0.1", Port: mp.smtpPort, TLS: "none", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := f.outbox.Deliver(context.Background(), s, 10); err != nil || rep.Sent != 1 {
		t.Fatalf("Deliver = %+v, %v", rep, err)
	}

	var list struct {
		Messages []mailpitSummary
	}
	mp.get(t, "/messages", &list)
	if len(list.Messages) != 1 {
		t.Fatalf("mailpit holds %d messages, want 1", len(list.Messages))
	}
	var headers map[string][]string
	mp.get(t, "/message/"+list.Messages[0].ID+"/headers", &headers)
	wantLU := "<" + link.URL + ">, <mailto:" + link.Mailto + ">"
	if v := headers["List-Unsubscribe"]; len(v) != 1 || v[0] != wantLU {
		t.Errorf("List-Unsubscribe = %q, want [%q]", v, wantLU)
	}
	if v := headers["List-Unsubscribe-Post"]; len(v) != 1 || v[0] != "List-Unsubscribe=One-Click" {
		t.Errorf("List-Unsubscribe-Post = %q, want [List-Unsubscribe=One-Click]", v)
	}
	var got struct {
		mailpitMessage
		ListUnsubscribe struct {
			Header     string
			Links      []string
			Errors     string
			HeaderPost string
		}
	}
	mp.get(t, "/message/"+list.Messages[0].ID, &got)
	if !strings.Contains(got.Text, link.URL) {
		t.Errorf("the text body does not show the unsubscribe link: %q", got.Text)
	}
	lu := got.ListUnsubscribe
	if lu.Errors != "" || lu.HeaderPost != "List-Unsubscribe=One-Click" || len(lu.Links) != 2 || lu.Links[0] != link.URL {
		t.Errorf("mailpit's List-Unsubscribe check = %+v, want no errors and the https link first", lu)
	}

	// The mailbox provider's side: POST List-Unsubscribe=One-Click to the https URI.
	rec := &recorder{}
	h, err := mail.NewUnsubscribeHandler(k, rec, "Example Cloud")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	u, err := url.Parse(strings.TrimSuffix(strings.TrimPrefix(strings.Split(headers["List-Unsubscribe"][0], ", ")[0], "<"), ">"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(srv.URL+u.RequestURI(), "application/x-www-form-urlencoded", strings.NewReader("List-Unsubscribe=One-Click"))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("one-click POST = %d, want 200", resp.StatusCode)
	}
	if reqs := rec.got(); len(reqs) != 1 || reqs[0] != (mail.UnsubscribeRequest{AccountID: 42, List: "onboarding", OneClick: true}) {
		t.Errorf("recorded %+v, want account 42's one-click unsubscribe from onboarding", reqs)
	}
}
