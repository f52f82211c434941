package abuse

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/run"
)

// The late payer's whole life on the real MariaDB and the fake CloudStack: reminded,
// warned, suspended (VMs stopped, account disabled), then a payment resolves the case
// and lifts the suspension in the same run, restarting exactly the VMs cronkit
// stopped.
func TestDunningLifecycleWithSuspensionLiftedOnPayment(t *testing.T) {
	w := newWorld(t)
	due := utc("2026-10-01T00:00:00Z")
	w.account(42, "late@example.com", "cs-42", due.AddDate(0, -6, 0))
	w.vm("cs-42", "vm-a", "Running", 20, due.AddDate(0, -6, 0))
	w.vm("cs-42", "vm-b", "Running", 5, due.AddDate(0, -6, 0))
	w.vm("cs-42", "vm-c", "Stopped", 0, due.AddDate(0, -6, 0)) // stopped by the customer
	w.invoice(1001, 42, due, 12000, 0)

	w.now = due.AddDate(0, 0, 2)
	if rep := w.runJob(nil); len(rep.Actions) != 0 || len(rep.Problems) != 0 {
		t.Fatalf("day 2: %+v", rep)
	}
	w.now = due.AddDate(0, 0, 3)
	rep := w.runJob(nil)
	if !hasAct(rep, "transition", "dunning case 1: good -> reminded (remind)") || rep.Counts["mail_sent"] != 1 {
		t.Fatalf("day 3: %+v", rep)
	}
	w.now = due.AddDate(0, 0, 14)
	w.runJob(nil)
	w.now = due.AddDate(0, 0, 21)
	rep = w.runJob(nil)
	if len(rep.Problems) != 0 {
		t.Fatalf("day 21 problems: %+v", rep.Problems)
	}
	if got := w.cases(42); !equal(got, []string{"dunning:suspended"}) {
		t.Fatalf("cases %v", got)
	}
	if w.vmState("vm-a") != "Stopped" || w.vmState("vm-b") != "Stopped" || w.accountState("cs-42") != "disabled" {
		t.Fatalf("not suspended at the orchestrator: %s %s %s", w.vmState("vm-a"), w.vmState("vm-b"), w.accountState("cs-42"))
	}
	if c := w.fake.Counters(); c.Stops != 2 || c.Disables != 1 {
		t.Fatalf("counters %+v", c)
	}
	if s := w.scalar(`SELECT status FROM accounts WHERE id = 42`); s != "suspended" {
		t.Fatalf("accounts.status %s", s)
	}

	// Running again at the same instant changes nothing and calls nothing.
	before := w.fake.Counters()
	rep = w.runJob(nil)
	if len(rep.Actions) != 0 || w.fake.Counters() != before {
		t.Fatalf("rerun acted: %+v %+v", rep.Actions, w.fake.Counters())
	}

	// Paid the next day: resolved and lifted in one run.
	w.pay(1001, 12000)
	w.now = due.AddDate(0, 0, 22)
	rep = w.runJob(nil)
	if len(rep.Problems) != 0 {
		t.Fatalf("lift problems: %+v", rep.Problems)
	}
	if got := w.cases(42); !equal(got, []string{"dunning:resolved"}) {
		t.Fatalf("cases %v", got)
	}
	if w.vmState("vm-a") != "Running" || w.vmState("vm-b") != "Running" || w.vmState("vm-c") != "Stopped" || w.accountState("cs-42") != "enabled" {
		t.Fatalf("not lifted: %s %s %s %s", w.vmState("vm-a"), w.vmState("vm-b"), w.vmState("vm-c"), w.accountState("cs-42"))
	}
	if c := w.fake.Counters(); c.Starts != 2 || c.Enables != 1 || c.Stops != 2 {
		t.Fatalf("counters %+v", c)
	}
	if s := w.scalar(`SELECT status FROM accounts WHERE id = 42`); s != "active" {
		t.Fatalf("accounts.status %s", s)
	}
	want := []string{"good->reminded(remind)", "reminded->warned(warn)", "warned->suspended(suspend)", "suspended->resolved(resolve)"}
	if got := w.transitions(42); !equal(got, want) {
		t.Fatalf("transitions %v", got)
	}
	wantMail := []string{
		"dunning/1 Action needed: your account will be suspended from 22 October 2026 -> late@example.com",
		"dunning/1 Reminder: invoice 1001 is overdue -> late@example.com",
		"dunning/1 Your account has been suspended for non-payment -> late@example.com",
		"dunning/1 Your account is active again -> late@example.com",
	}
	if got := w.mails(); !equal(got, wantMail) {
		t.Fatalf("mails:\n%s", strings.Join(got, "\n"))
	}

	h, err := w.job().Show(context.Background(), 42)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := h.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"case 1  dunning  resolved  (version 4)", "warned -> suspended (suspend) by cronkit run 01KTESTRUN",
		"stop_vm          vm-a", "start_vm         vm-b", "\"days_late\":21"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("show lacks %q:\n%s", s, b.String())
		}
	}
}

// A payment that lands between the plan (read outside the transaction) and the act
// is honoured: the transaction re-reads the facts and resolves instead of suspending.
func TestPaymentBetweenEvaluationAndAction(t *testing.T) {
	w := newWorld(t)
	due := utc("2026-10-01T00:00:00Z")
	w.account(42, "late@example.com", "cs-42", due.AddDate(0, -6, 0))
	w.vm("cs-42", "vm-a", "Running", 20, due.AddDate(0, -6, 0))
	w.invoice(1001, 42, due, 12000, 0)
	for _, d := range []int{3, 14} {
		w.now = due.AddDate(0, 0, d)
		w.runJob(nil)
	}
	w.now = due.AddDate(0, 0, 21)

	j := w.job()
	tmpl, err := Templates()
	if err != nil {
		t.Fatal(err)
	}
	ctx := w.ctx()
	r := newRunState(j, w.now, run.FromContext(ctx).ID, false, tmpl)
	facts, err := dunningFacts(ctx, w.db, []int64{42})
	if err != nil {
		t.Fatal(err)
	}
	open, err := r.store.OpenCases(ctx, w.db, Dunning, []int64{42})
	if err != nil {
		t.Fatal(err)
	}
	if d := DecideDunning(open[42], *facts[42], w.now, j.Policy.Dunning); d.Event != EventSuspend {
		t.Fatalf("plan: %q %s", d.Event, d.Reason)
	}
	w.pay(1001, 12000) // the payment lands now
	r.evaluate(ctx, Dunning, 42, open[42], r.dunningEval(*facts[42]))
	r.drive(ctx)

	if got := w.transitions(42); !equal(got, []string{"good->reminded(remind)", "reminded->warned(warn)", "warned->resolved(resolve)"}) {
		t.Fatalf("transitions %v", got)
	}
	if r.rep.Counts["decisions_changed"] != 1 || w.vmState("vm-a") != "Running" || w.fake.Counters().Stops != 0 {
		t.Fatalf("counts %v, vm %s, counters %+v", r.rep.Counts, w.vmState("vm-a"), w.fake.Counters())
	}
}

// A partial payment that pays off the oldest invoice re-anchors the clock on the
// next: the suspension (justified by the oldest) is lifted and a new case, at the
// younger invoice's level, opens in the same run.
func TestPartialPaymentReanchorsTheClock(t *testing.T) {
	w := newWorld(t)
	due := utc("2026-10-01T00:00:00Z")
	w.account(42, "late@example.com", "cs-42", due.AddDate(0, -6, 0))
	w.vm("cs-42", "vm-a", "Running", 20, due.AddDate(0, -6, 0))
	w.invoice(1001, 42, due, 12000, 0)
	w.invoice(1002, 42, due.AddDate(0, 0, 14), 9000, 0)
	for _, d := range []int{3, 14, 21} {
		w.now = due.AddDate(0, 0, d)
		w.runJob(nil)
	}
	if got := w.cases(42); !equal(got, []string{"dunning:suspended"}) {
		t.Fatalf("cases %v", got)
	}
	// 150.00 paid of 210.00 (billing applies it to the oldest first): 1001 is paid
	// off, 1002 (due day 14) is partly paid and is now the oldest unpaid.
	w.pay(1001, 12000)
	w.pay(1002, 3000)
	w.now = due.AddDate(0, 0, 22)
	rep := w.runJob(nil)
	if got := w.cases(42); !equal(got, []string{"dunning:resolved", "dunning:reminded"}) {
		t.Fatalf("cases %v (%+v)", got, rep.Actions)
	}
	if w.vmState("vm-a") != "Running" || w.accountState("cs-42") != "enabled" {
		t.Fatalf("suspension not lifted")
	}
	if !hasAct(rep, "transition", "dunning case 2: good -> reminded (remind): invoice 1002 due 2026-10-15 00:00 UTC is 8 days overdue; unpaid EUR 60.00") {
		t.Fatalf("new case: %+v", rep.Actions)
	}
}

// Orchestrator errors and timeouts: the case's step stays unconfirmed (no suspension
// notice, no further step), the run reports a problem (exit 3), the next run retries.
func TestOrchestratorErrorsAndTimeoutsAreRetried(t *testing.T) {
	w := newWorld(t)
	due := utc("2026-08-01T00:00:00Z")
	w.account(42, "late@example.com", "cs-42", due.AddDate(0, -6, 0))
	w.vm("cs-42", "vm-a", "Running", 20, due.AddDate(0, -6, 0))
	w.invoice(1001, 42, due, 12000, 0)
	for _, d := range []int{3, 14} {
		w.now = due.AddDate(0, 0, d)
		w.runJob(nil)
	}

	w.fake.FailNext("stopVirtualMachine", 1, 530)
	w.now = due.AddDate(0, 0, 21)
	rep := w.runJob(nil)
	if st, err := run.Outcome(context.Background(), rep, nil); run.ExitCode(err) != run.ExitPartial {
		t.Fatalf("outcome %s %v, problems %+v", st, err, rep.Problems)
	}
	if !strings.Contains(rep.Problems[0].Detail, "stop_vm vm-a (dunning case 1)") || !strings.Contains(rep.Problems[0].Detail, "530") {
		t.Fatalf("problem %+v", rep.Problems)
	}
	if w.vmState("vm-a") != "Running" || w.scalar(`SELECT COUNT(*) FROM mail_outbox WHERE dedupe_key LIKE '%:suspension'`) != "0" {
		t.Fatal("a suspension notice must wait for the suspension")
	}

	// A timeout: the call outlives the client's deadline and is dropped by the fake.
	slow := w.job()
	fast, err := newShortTimeoutClient(w)
	if err != nil {
		t.Fatal(err)
	}
	slow.Orchestrator = fast
	w.fake.SetLatency("stopVirtualMachine", 2*time.Second)
	w.now = due.AddDate(0, 0, 61) // termination level: but the suspension is not confirmed
	rep = w.runJob(slow)
	if len(rep.Problems) != 1 || w.vmState("vm-a") != "Running" {
		t.Fatalf("timeout run: %+v, vm %s", rep.Problems, w.vmState("vm-a"))
	}
	if got := w.cases(42); !equal(got, []string{"dunning:suspended"}) {
		t.Fatalf("advanced past an unconfirmed step: %v", got)
	}

	w.fake.SetLatency("stopVirtualMachine", 0)
	rep = w.runJob(nil)
	if len(rep.Problems) != 0 || w.vmState("vm-a") != "Stopped" || w.accountState("cs-42") != "disabled" {
		t.Fatalf("retry: %+v", rep.Problems)
	}
	if n := w.scalar(`SELECT COUNT(*) FROM mail_outbox WHERE dedupe_key = 'abuse:dunning:case:1:suspension'`); n != "1" {
		t.Fatalf("suspension notices %s", n)
	}
	if c := w.fake.Counters(); c.Stops != 1 || c.Disables != 1 {
		t.Fatalf("counters %+v", c)
	}
	// Confirmed now: the next run proposes termination.
	rep = w.runJob(nil)
	if got := w.cases(42); !equal(got, []string{"dunning:termination_proposed"}) {
		t.Fatalf("cases %v %+v", got, rep.Actions)
	}
}

// Termination needs a person and a retention period, then destroys the VMs.
func TestTerminationNeedsApprovalAndRetention(t *testing.T) {
	w := newWorld(t)
	due := utc("2026-06-01T00:00:00Z")
	w.account(42, "late@example.com", "cs-42", due.AddDate(0, -6, 0))
	w.vm("cs-42", "vm-a", "Running", 20, due.AddDate(0, -6, 0))
	w.invoice(1001, 42, due, 12000, 0)
	for _, d := range []int{3, 14, 21, 60, 75} {
		w.now = due.AddDate(0, 0, d)
		w.runJob(nil)
	}
	if got := w.cases(42); !equal(got, []string{"dunning:termination_proposed"}) {
		t.Fatalf("cases %v", got)
	}
	j := w.job()
	ctx := context.Background()
	if _, err := j.Operate(ctx, OpApprove, 1, "alice", ""); err == nil || !strings.Contains(err.Error(), "--reason is required") {
		t.Fatalf("approve without reason: %v", err)
	}
	if _, err := j.Operate(ctx, OpConfirm, 1, "alice", "x"); err == nil {
		t.Fatal("confirm is for free-credit cases")
	}
	res, err := j.Operate(ctx, OpApprove, 1, "alice", "no answer to 4 notices")
	if err != nil {
		t.Fatal(err)
	}
	if res.To != StateTerminationApproved || res.Case.ApprovedBy != "operator:alice" {
		t.Fatalf("approve: %+v", res)
	}
	approved := w.now
	w.now = approved.Add(30*24*time.Hour - time.Second)
	w.runJob(nil)
	if w.vmState("vm-a") != "Stopped" {
		t.Fatal("destroyed before the retention period")
	}
	w.now = approved.Add(30 * 24 * time.Hour)
	rep := w.runJob(nil)
	if got := w.cases(42); !equal(got, []string{"dunning:terminated"}) {
		t.Fatalf("cases %v %+v", got, rep.Problems)
	}
	if w.vmState("vm-a") != "Destroyed" || w.accountState("cs-42") != "disabled" || w.scalar(`SELECT status FROM accounts WHERE id = 42`) != "terminated" {
		t.Fatalf("after termination: %s %s", w.vmState("vm-a"), w.accountState("cs-42"))
	}
	var sb strings.Builder
	h, _ := j.Show(ctx, 42)
	_ = h.WriteText(&sb)
	if !strings.Contains(sb.String(), "termination_proposed -> termination_approved (approve) by operator:alice") ||
		!strings.Contains(sb.String(), "reason: approve by alice: no answer to 4 notices") {
		t.Fatalf("show:\n%s", sb.String())
	}
	// Payment after termination changes nothing: the case is closed.
	w.pay(1001, 12000)
	w.runJob(nil)
	if got := w.cases(42); !equal(got, []string{"dunning:terminated"}) {
		t.Fatalf("cases %v", got)
	}
}

func newShortTimeoutClient(w *world) (Orchestrator, error) {
	return newClient(w, 300*time.Millisecond)
}

// A suspension whose orchestrator calls failed is not carried out on stale facts: the
// payment that lands before the next run resolves the case first, the pending stops
// are cancelled, and the customer hears nothing of a suspension that never happened.
func TestPaymentCancelsASuspensionNotCarriedOut(t *testing.T) {
	w := newWorld(t)
	due := utc("2026-10-01T00:00:00Z")
	w.account(42, "late@example.com", "cs-42", due.AddDate(0, -6, 0))
	w.vm("cs-42", "vm-a", "Running", 20, due.AddDate(0, -6, 0))
	w.invoice(1001, 42, due, 12000, 0)
	for _, d := range []int{3, 14} {
		w.now = due.AddDate(0, 0, d)
		w.runJob(nil)
	}
	w.fake.FailNext("listAccounts", 1, 530) // the stop_vms expansion cannot list the VMs
	w.now = due.AddDate(0, 0, 21)
	if rep := w.runJob(nil); len(rep.Problems) != 1 {
		t.Fatalf("problems %+v", rep.Problems)
	}
	w.pay(1001, 12000)
	w.now = due.AddDate(0, 0, 22)
	rep := w.runJob(nil)
	if len(rep.Problems) != 0 {
		t.Fatalf("problems %+v", rep.Problems)
	}
	if got := w.transitions(42); !equal(got, []string{"good->reminded(remind)", "reminded->warned(warn)", "warned->suspended(suspend)", "suspended->resolved(resolve)"}) {
		t.Fatalf("transitions %v", got)
	}
	if c := w.fake.Counters(); c.Stops+c.Disables+c.Starts+c.Enables != 0 || w.vmState("vm-a") != "Running" {
		t.Fatalf("acted on a paid account: %+v", c)
	}
	if got := w.scalar(`SELECT GROUP_CONCAT(action, ':', status ORDER BY id) FROM case_actions WHERE case_id = 1`); got != "stop_vms:cancelled,disable_account:cancelled,notify:cancelled" {
		t.Fatalf("actions %s", got)
	}
	for _, m := range w.mails() {
		if strings.Contains(m, "has been suspended") || strings.Contains(m, "active again") {
			t.Fatalf("mail about a suspension that never happened: %v", w.mails())
		}
	}
	if !hasAct(rep, "transition", "the suspension had not been carried out: nothing to lift") {
		t.Fatalf("report %+v", rep.Actions)
	}
}

// An attempt whose outcome is unknown (a pending payment: the answer was lost) holds
// the suspension as a card still retrying does: the customer may have paid. Once
// reconciliation settles it as failed, the suspension goes ahead.
func TestPendingPaymentHoldsSuspension(t *testing.T) {
	w := newWorld(t)
	due := utc("2026-10-01T00:00:00Z")
	w.account(42, "late@example.com", "cs-42", due.AddDate(0, -6, 0))
	w.vm("cs-42", "vm-a", "Running", 20, due.AddDate(0, -6, 0))
	w.invoice(1001, 42, due, 12000, 0)
	w.exec(`INSERT INTO payments (invoice_id, account_id, attempt, idempotency_key, amount_minor, currency, status, created_at, updated_at)
VALUES (1001, 42, 1, 'cronkit-invoice-1001-attempt-1', 12000, 'EUR', 'pending', ?, ?)`, due, due)
	for _, d := range []int{3, 14, 21, 25} {
		w.now = due.AddDate(0, 0, d)
		w.runJob(nil)
	}
	if got := w.cases(42); !equal(got, []string{"dunning:warned"}) || w.vmState("vm-a") != "Running" {
		t.Fatalf("with a pending attempt: cases %v, vm %s", got, w.vmState("vm-a"))
	}
	facts, err := dunningFacts(w.ctx(), w.db, []int64{42})
	if err != nil || len(facts[42].Unpaid) != 1 || !facts[42].Unpaid[0].Retrying {
		t.Fatalf("facts %+v %v: want the invoice retrying", facts[42], err)
	}

	w.exec(`UPDATE payments SET status = 'failed', decline_code = 'not_at_provider' WHERE invoice_id = 1001`)
	w.now = due.AddDate(0, 0, 26)
	w.runJob(nil)
	if got := w.cases(42); !equal(got, []string{"dunning:suspended"}) || w.vmState("vm-a") != "Stopped" {
		t.Fatalf("once settled: cases %v, vm %s", got, w.vmState("vm-a"))
	}
}
