package abuse

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/run"
)

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// countingOrch counts the calls that reach the orchestrator.
type countingOrch struct {
	Orchestrator
	calls atomic.Int64
}

func (c *countingOrch) VMMetrics(ctx context.Context, id string) ([]orchestrator.VM, error) {
	c.calls.Add(1)
	return c.Orchestrator.VMMetrics(ctx, id)
}

func (c *countingOrch) StopVM(ctx context.Context, id string) error {
	c.calls.Add(1)
	return c.Orchestrator.StopVM(ctx, id)
}

func (c *countingOrch) DisableAccount(ctx context.Context, id string) error {
	c.calls.Add(1)
	return c.Orchestrator.DisableAccount(ctx, id)
}

func wantDown(t *testing.T, err error, dep string) {
	t.Helper()
	if !errors.Is(err, run.ErrUnreachable) || run.ExitCode(err) != run.ExitFailed || run.UnreachableDependency(err) != dep {
		t.Fatalf("want %s unreachable (exit 1), got %v (exit %d)", dep, err, run.ExitCode(err))
	}
	if !strings.Contains(err.Error(), dep+" unreachable: ") {
		t.Fatalf("error %q does not name %s", err, dep)
	}
}

// CloudStack unreachable when two suspensions are due: one call is refused, no other
// is made, nothing is confirmed or announced, and the run exits 1. Once CloudStack is
// back the next run carries out both suspensions.
func TestCloudStackUnreachableStopsCallingIt(t *testing.T) {
	w := newWorld(t)
	due := utc("2026-08-01T00:00:00Z")
	for _, a := range []struct {
		id     int64
		cs, vm string
	}{{42, "cs-42", "vm-a"}, {43, "cs-43", "vm-b"}} {
		w.account(a.id, "late"+a.cs+"@example.com", a.cs, due.AddDate(0, -6, 0))
		w.vm(a.cs, a.vm, "Running", 20, due.AddDate(0, -6, 0))
		w.invoice(1000+a.id, a.id, due, 12000, 0)
	}
	for _, d := range []int{3, 14} {
		w.now = due.AddDate(0, 0, d)
		w.runJob(nil)
	}
	sentBefore := len(w.sink.Messages())

	down, err := orchestrator.New(orchestrator.Config{APIURL: "http://127.0.0.1:" + strconv.Itoa(closedPort(t)) + "/client/api",
		APIKey: testAPIKey, SecretKey: testSecretKey, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingOrch{Orchestrator: down}
	j := w.job()
	j.Orchestrator = counted
	j.Config.Concurrency = 1
	w.now = due.AddDate(0, 0, 21)
	_, err = j.Run(w.ctx())
	wantDown(t, err, "cloudstack")
	if n := counted.calls.Load(); n != 1 {
		t.Fatalf("%d orchestrator calls, want 1 (none after it was found unreachable)", n)
	}
	if w.vmState("vm-a") != "Running" || w.vmState("vm-b") != "Running" ||
		w.scalar(`SELECT COUNT(*) FROM mail_outbox WHERE dedupe_key LIKE '%:suspension'`) != "0" {
		t.Fatal("a suspension was announced or carried out without the orchestrator")
	}
	if len(w.sink.Messages()) != sentBefore {
		t.Fatal("mail sent for a suspension not carried out")
	}

	rep := w.runJob(nil)
	if len(rep.Problems) != 0 || w.vmState("vm-a") != "Stopped" || w.vmState("vm-b") != "Stopped" ||
		w.accountState("cs-42") != "disabled" || w.accountState("cs-43") != "disabled" {
		t.Fatalf("the next run: %+v, vms %s %s", rep.Problems, w.vmState("vm-a"), w.vmState("vm-b"))
	}
	if w.scalar(`SELECT COUNT(*) FROM mail_outbox WHERE dedupe_key LIKE '%:suspension' AND status = 'sent'`) != "2" {
		t.Fatal("suspension notices not sent once CloudStack was back")
	}
}

// The SMTP relay unreachable: the reminder stays queued with no attempt spent, the
// run exits 1 naming smtp, and the next run with the relay back sends it once.
func TestRelayUnreachableStopsTheRun(t *testing.T) {
	w := newWorld(t)
	due := utc("2026-08-01T00:00:00Z")
	w.account(42, "late@example.com", "cs-42", due.AddDate(0, -6, 0))
	w.vm("cs-42", "vm-a", "Running", 20, due.AddDate(0, -6, 0))
	w.invoice(1001, 42, due, 12000, 0)

	down, err := mail.NewSender(mail.SMTPConfig{Host: "127.0.0.1", Port: closedPort(t), TLS: "none", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	j := w.job()
	j.Sender = down
	w.now = due.AddDate(0, 0, 3)
	_, err = j.Run(w.ctx())
	wantDown(t, err, "smtp")
	if !strings.Contains(err.Error(), "1 item(s) left for the next run") {
		t.Fatalf("error %q", err)
	}
	if got := w.scalar(`SELECT CONCAT(status, ' ', attempts) FROM mail_outbox`); got != "queued 0" {
		t.Fatalf("outbox after the refused run: %q", got)
	}
	if got := w.cases(42); !equal(got, []string{"dunning:reminded"}) {
		t.Fatalf("the case's own step was not kept: %v", got)
	}

	w.runJob(nil)
	if got := w.scalar(`SELECT CONCAT(status, ' ', attempts) FROM mail_outbox`); got != "sent 1" || len(w.sink.Messages()) != 1 {
		t.Fatalf("outbox after the relay came back: %q, %d received", got, len(w.sink.Messages()))
	}
}
