package drip

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/run"
)

// The SMTP relay unreachable: the welcome mails stay queued with no attempt spent,
// the funnel's steps are kept (queued in their transitions), the run exits 1 with one
// error naming smtp and the mails left; the next run sends each once.
func TestRelayUnreachableStopsTheRun(t *testing.T) {
	w := newWorld(t, utc("2026-03-02T12:00:00Z"))
	w.signup(1, "one@example.com", "", "UTC", "", utc("2026-03-02T01:00:00Z"))
	w.signup(2, "two@example.com", "", "UTC", "", utc("2026-03-02T02:00:00Z"))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	down, err := mail.NewSender(mail.SMTPConfig{Host: "127.0.0.1", Port: port, TLS: "none", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	j := w.job()
	j.Sender = down
	_, err = j.Run(w.ctx())
	if !errors.Is(err, run.ErrUnreachable) || run.ExitCode(err) != run.ExitFailed || run.UnreachableDependency(err) != "smtp" ||
		!strings.Contains(err.Error(), "2 item(s) left for the next run") {
		t.Fatalf("want smtp unreachable with 2 left (exit 1), got %v (exit %d)", err, run.ExitCode(err))
	}
	if got := w.list(`SELECT CONCAT(status, ' ', attempts) FROM mail_outbox`); strings.Join(got, ",") != "queued 0,queued 0" {
		t.Fatalf("outbox after the refused run: %v", got)
	}
	w.runJob(nil)
	if got := w.list(`SELECT CONCAT(status, ' ', attempts) FROM mail_outbox`); strings.Join(got, ",") != "sent 1,sent 1" {
		t.Fatalf("outbox once the relay is back: %v", got)
	}
	if n := len(w.received("one@example.com")) + len(w.received("two@example.com")); n != 2 {
		t.Fatalf("%d mails received, want 2", n)
	}
}
