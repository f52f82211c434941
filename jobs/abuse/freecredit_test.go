package abuse

import (
	"context"
	"strings"
	"testing"
	"time"
)

// seedMiner adds a trial account on a disposable domain running two VMs at 99 % CPU,
// with three hours of hot samples already recorded by earlier runs.
func seedMiner(w *world, id int64, cs string) {
	w.account(id, "x7@mailinator.com", cs, w.now.Add(-10*time.Hour))
	w.exec(`INSERT INTO credits (account_id, amount, currency, reason, granted_at) VALUES (?, 50, 'EUR', 'trial', ?)`, id, w.now.Add(-10*time.Hour))
	w.vm(cs, cs+"-miner-1", "Running", 99.5, w.now.Add(-9*time.Hour))
	w.vm(cs, cs+"-miner-2", "Running", 98, w.now.Add(-9*time.Hour))
	for h := 3; h >= 1; h-- {
		w.exec(`INSERT INTO abuse_cpu_samples (account_id, sampled_at, vms_running, vms_hot, avg_cpu) VALUES (?, ?, 2, 2, 99)`,
			id, w.now.Add(-time.Duration(h)*time.Hour))
	}
}

func TestMinerIsFlaggedAndSuspendedThenClearedByAPerson(t *testing.T) {
	w := newWorld(t)
	w.now = utc("2026-11-20T12:00:00Z")
	seedMiner(w, 77, "cs-77")
	// A heavy but honest trial user: hot CPU alone does not reach the score.
	w.account(78, "researcher@example.org", "cs-78", w.now.Add(-20*time.Hour))
	w.exec(`INSERT INTO credits (account_id, amount, currency, reason, granted_at) VALUES (78, 50, 'EUR', 'trial', ?)`, w.now.Add(-20*time.Hour))
	w.vm("cs-78", "vm-research", "Running", 100, w.now.Add(-19*time.Hour))

	rep := w.runJob(nil)
	if len(rep.Problems) != 0 {
		t.Fatalf("problems %+v", rep.Problems)
	}
	if got := w.transitions(77); !equal(got, []string{"good->flagged(flag)", "flagged->suspended(suspend)"}) {
		t.Fatalf("transitions %v", got)
	}
	if !hasAct(rep, "transition", "free_credit case 1: good -> flagged (flag): score 80 >= 60: cpu (+50") {
		t.Fatalf("flag reason: %+v", rep.Actions)
	}
	if w.vmState("cs-77-miner-1") != "Stopped" || w.vmState("cs-77-miner-2") != "Stopped" || w.accountState("cs-77") != "disabled" {
		t.Fatal("miner not suspended")
	}
	if len(w.cases(78)) != 0 || w.vmState("vm-research") != "Running" {
		t.Fatalf("honest heavy user touched: %v", w.cases(78))
	}
	if n := w.scalar(`SELECT COUNT(*) FROM abuse_cpu_samples WHERE account_id = 78`); n != "1" {
		t.Fatalf("samples of 78: %s", n)
	}
	if got := w.mails(); !equal(got, []string{"free_credit/1 Your account has been suspended pending review -> x7@mailinator.com"}) {
		t.Fatalf("mails %v", got)
	}
	var ev string
	if ev = w.scalar(`SELECT evidence FROM case_transitions WHERE event = 'flag'`); !strings.Contains(ev, `"name": "disposable_email"`) &&
		!strings.Contains(ev, `"name":"disposable_email"`) {
		t.Fatalf("evidence %s", ev)
	}

	// A person looks and clears it: the suspension is lifted by the next run.
	ctx := context.Background()
	res, err := w.job().Operate(ctx, OpClear, 1, "bob", "a student's thesis job, verified by phone")
	if err != nil {
		t.Fatal(err)
	}
	if res.To != StateCleared || res.PendingActions != 4 {
		t.Fatalf("clear: %+v", res)
	}
	w.now = w.now.Add(15 * time.Minute)
	rep = w.runJob(nil)
	if len(rep.Problems) != 0 || w.vmState("cs-77-miner-1") != "Running" || w.accountState("cs-77") != "enabled" {
		t.Fatalf("lift: %+v", rep.Problems)
	}
	if got := w.cases(77); !equal(got, []string{"free_credit:cleared"}) {
		t.Fatalf("cases %v", got)
	}
	// Cleared accounts are not candidates again.
	before := w.fake.Counters()
	w.now = w.now.Add(15 * time.Minute)
	rep = w.runJob(nil)
	if rep.Counts["free_credit_candidates"] != 1 || w.fake.Counters() != before {
		t.Fatalf("after clear: %v %+v", rep.Counts, w.fake.Counters())
	}
	if got := w.mails(); len(got) != 2 || !strings.Contains(got[1], "Your account is active again") {
		t.Fatalf("mails %v", got)
	}
}

// Two machines can hold one account: resolving one must not lift the other's
// suspension, and the last one lifted restarts what the first stopped.
func TestTwoMachinesHoldingOneAccount(t *testing.T) {
	w := newWorld(t)
	w.now = utc("2026-11-20T12:00:00Z")
	seedMiner(w, 77, "cs-77")
	w.invoice(5001, 77, w.now.AddDate(0, 0, -25), 3000, 0)
	w.runJob(nil) // free credit: flagged + suspended; dunning: warned
	w.now = w.now.AddDate(0, 0, 4)
	w.runJob(nil) // dunning: suspended (nothing left running to stop)
	if got := w.cases(77); !equal(got, []string{"dunning:suspended", "free_credit:suspended"}) {
		t.Fatalf("cases %v", got)
	}
	w.pay(5001, 3000)
	w.now = w.now.Add(time.Hour)
	rep := w.runJob(nil)
	if !hasAct(rep, "transition", "account stays suspended: free_credit case 2 is suspended") {
		t.Fatalf("resolve: %+v", rep.Actions)
	}
	if w.vmState("cs-77-miner-1") != "Stopped" || w.accountState("cs-77") != "disabled" {
		t.Fatal("dunning's resolution lifted the free-credit suspension")
	}
	if _, err := w.job().Operate(context.Background(), OpClear, 2, "bob", "false positive"); err != nil {
		t.Fatal(err)
	}
	w.runJob(nil)
	if w.vmState("cs-77-miner-1") != "Running" || w.vmState("cs-77-miner-2") != "Running" || w.accountState("cs-77") != "enabled" {
		t.Fatal("last hold lifted but account not restored")
	}
	if c := w.fake.Counters(); c.Stops != 2 || c.Starts != 2 || c.Disables != 1 || c.Enables != 1 {
		t.Fatalf("counters %+v", c)
	}
}

func TestExcludeTagsTheAccountAndClosesTheCase(t *testing.T) {
	w := newWorld(t)
	due := utc("2026-10-01T00:00:00Z")
	w.account(42, "bigcorp@example.com", "cs-42", due.AddDate(-1, 0, 0))
	w.vm("cs-42", "vm-a", "Running", 20, due.AddDate(0, -6, 0))
	w.invoice(1001, 42, due, 12000, 0)
	for _, d := range []int{3, 14, 21} {
		w.now = due.AddDate(0, 0, d)
		w.runJob(nil)
	}
	res, err := w.job().Operate(context.Background(), OpExclude, 1, "carol", "invoiced customer, pays by transfer")
	if err != nil {
		t.Fatal(err)
	}
	if res.To != StateResolved || res.Tagged != TagNeverSuspend {
		t.Fatalf("exclude: %+v", res)
	}
	if who := w.scalar(`SELECT actor FROM account_tags WHERE account_id = 42 AND tag = 'never_suspend'`); who != "operator:carol" {
		t.Fatalf("tag actor %q", who)
	}
	w.now = due.AddDate(0, 0, 40)
	w.runJob(nil)
	if got := w.cases(42); !equal(got, []string{"dunning:resolved"}) || w.vmState("vm-a") != "Running" {
		t.Fatalf("cases %v vm %s", got, w.vmState("vm-a"))
	}
	if _, err := w.job().Operate(context.Background(), OpClear, 99, "carol", "x"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("unknown case: %v", err)
	}
	if _, err := w.job().Operate(context.Background(), OpApprove, 1, "carol", "x"); err == nil || !strings.Contains(err.Error(), "is resolved") {
		t.Fatalf("approve a resolved case: %v", err)
	}
}

func TestDryRunPlansWithoutTouching(t *testing.T) {
	w := newWorld(t)
	w.now = utc("2026-11-20T12:00:00Z")
	seedMiner(w, 77, "cs-77")
	due := w.now.AddDate(0, 0, -30)
	w.account(42, "late@example.com", "cs-42", due.AddDate(0, -6, 0))
	w.vm("cs-42", "vm-a", "Running", 20, due.AddDate(0, -6, 0))
	w.invoice(1001, 42, due, 12000, 0)

	j := w.job()
	j.Config.DryRun = true
	ro, err := openReadOnly(w.db.SelectOnlyUser(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	j.DB = ro
	j.Outbox = refusingOutbox{}
	j.Sender = nil
	rep := w.runJob(j)
	if len(rep.Problems) != 0 {
		t.Fatalf("problems %+v", rep.Problems)
	}
	for _, want := range []string{
		"dunning case new: good -> warned (warn)",
		"free_credit case new: good -> flagged (flag)",
		"free_credit case new: flagged -> suspended (suspend)",
	} {
		if !hasAct(rep, "transition", want) {
			t.Errorf("plan lacks %q: %+v", want, rep.Actions)
		}
	}
	if !hasAct(rep, "orchestrator", "stop_vm cs-77-miner-1 (free_credit case new)") || !hasAct(rep, "orchestrator", "disable_account cs-77") ||
		!hasAct(rep, "mail", "trial_suspension notice to x7@mailinator.com") {
		t.Fatalf("plan: %+v", rep.Actions)
	}
	if c := w.fake.Counters(); c.Stops+c.Disables+c.AsyncJobs != 0 || len(w.cases(77)) != 0 || len(w.sink.Messages()) != 0 {
		t.Fatalf("a dry run touched something: %+v", c)
	}
}
