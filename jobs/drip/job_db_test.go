package drip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/orchestrator/fakecloudstack"
	"github.com/cronkit/cronkit/lib/run"
)

// A message queued before the account left is cancelled when delivery claims it,
// even when no run has looked at the account since; the next run records the exit.
func TestClaimTimeCheckCancelsAMessageQueuedBeforeAnExit(t *testing.T) {
	w := newWorld(t, utc("2026-03-02T03:00:00Z"))
	w.signup(42, "eve@example.com", "Eve", "America/New_York", "", utc("2026-03-02T03:00:00Z")) // 22:00 local
	rep := w.runJob(nil)
	if !hasAct(rep, "queue", "account 42", "welcome: due 2026-03-02T03:00:00Z, sends Mon 2026-03-02 09:00 EST") {
		t.Fatalf("queue: %+v", rep)
	}
	w.exec(`UPDATE accounts SET status = 'suspended' WHERE id = 42`)
	w.now = utc("2026-03-02T14:30:00Z") // its next look was 14:00
	dr, err := w.job().outbox().Deliver(w.ctx(), w.sender, 10)
	if err != nil || dr.Cancelled != 1 || dr.Sent != 0 {
		t.Fatalf("delivery: %+v %v", dr, err)
	}
	if r := dr.Items[0].Reason; r != "cancelled: welcome: account suspended" {
		t.Fatalf("reason %q", r)
	}
	if s := w.scalar(`SELECT check_at FROM drip_due WHERE account_id = 42`); !strings.HasPrefix(s, "2026-03-02T14:30:00") {
		t.Fatalf("next look %q, want now", s)
	}
	rep = w.runJob(nil)
	if !hasAct(rep, EventExit, "account 42", "welcome -> exited: account suspended") || len(w.sink.Messages()) != 0 {
		t.Fatalf("exit run: %+v, %d mails", rep, len(w.sink.Messages()))
	}
}

// A dry run plans exactly what the real run then does, with the report's structured
// fields, hands every message to Preview rendered for real, and writes nothing.
func TestDryRunPlansAndPreviewsWithoutWriting(t *testing.T) {
	w := newWorld(t, utc("2026-03-02T12:00:00Z"))
	w.signup(1, "old@example.com", "Old", "UTC", "", utc("2026-01-01T00:00:00Z"))
	w.signup(42, "ada@example.com", "Ada", "Europe/Paris", "", utc("2026-03-02T10:00:00Z"))
	w.trial(42, "42.5", utc("2026-03-02T10:00:00Z"), utc("2026-03-16T10:00:00Z"))
	tables := []string{"drip_funnels", "drip_due", "cases", "case_transitions", "mail_outbox"}
	counts := func() string {
		var b strings.Builder
		for _, tb := range tables {
			b.WriteString(tb + "=" + w.scalar("SELECT COUNT(*) FROM "+tb) + " ")
		}
		return b.String()
	}
	before := counts()
	j := w.job()
	j.Config.DryRun = true
	j.Sender = nil
	var previews []mail.Message
	j.Preview = func(p Planned, msg mail.Message) error {
		previews = append(previews, msg)
		var b bytes.Buffer
		return mail.WriteMessage(&b, msg, p.SendAt)
	}
	plan := w.runJob(j)
	if after := counts(); after != before {
		t.Fatalf("a dry run wrote: %s -> %s", before, after)
	}
	if !plan.DryRun && len(plan.Actions) == 0 {
		t.Fatalf("plan: %+v", plan)
	}
	if len(previews) != 1 || previews[0].To != "ada@example.com" || !strings.Contains(previews[0].Text, "EUR 42.50 of trial credit") ||
		!strings.Contains(previews[0].Text, "Monday 16 March") || !strings.Contains(previews[0].HTML, testUnsubURL+"?token=42.onboarding.") {
		t.Fatalf("previews: %+v", previews)
	}
	var q *run.Action
	for i, a := range plan.Actions {
		if a.Kind == "queue" {
			q = &plan.Actions[i]
		}
	}
	if q == nil {
		t.Fatalf("no queue line: %+v", plan.Actions)
	}
	for k, want := range map[string]any{"account_id": int64(42), "step": "welcome", "due_at": "2026-03-02T10:00:00Z",
		"queued_at": "2026-03-02T12:00:00Z", "send_at": "2026-03-02T12:00:00Z", "local_time": "2026-03-02T13:00:00+01:00",
		"time_zone": "Europe/Paris", "category": "marketing"} {
		if got := q.Field(k); got != want {
			t.Errorf("field %s = %v, want %v", k, got, want)
		}
	}
	// The real run does what the plan said (the funnel's start aside).
	rep := w.runJob(nil)
	if got, want := actionText(rep, "queue"), actionText(plan, "queue"); got != want || got == "" {
		t.Fatalf("real run %q, plan %q", got, want)
	}
	if hasAct(plan, "start", "funnel onboarding", "") || !hasAct(plan, "note", "funnel onboarding", "not started yet") ||
		!hasAct(rep, "start", "funnel onboarding", "signups created from 2026-03-02T00:00:00Z on") {
		t.Fatalf("start lines: plan %+v\nrun %+v", plan.Actions, rep.Actions)
	}
}

func actionText(rep *run.Report, kind string) string {
	var out []string
	for _, a := range rep.Actions {
		if a.Kind == kind {
			out = append(out, a.Subject+": "+a.Detail)
		}
	}
	return strings.Join(out, "\n")
}

// Only signups from the funnel's start on enter; the start cannot move; a signup
// committed late (created_at before the last run) is still enrolled.
func TestEnrolmentStartsAtTheFunnelsStart(t *testing.T) {
	w := newWorld(t, utc("2026-03-02T12:00:00Z"))
	w.signup(1, "before@example.com", "", "UTC", "", utc("2026-03-01T23:59:59Z"))
	w.signup(2, "after@example.com", "", "UTC", "", utc("2026-03-02T00:00:00Z"))
	rep := w.runJob(nil)
	if rep.Counts["enrolled"] != 1 || !hasAct(rep, "queue", "account 2", "welcome") || hasAct(rep, "queue", "account 1", "") {
		t.Fatalf("first run: %+v", rep)
	}
	j := w.job()
	j.Config.Since = utc("2026-01-01T00:00:00Z")
	if _, err := j.Run(w.ctx()); err == nil || run.ExitCode(err) != run.ExitUsage || !strings.Contains(err.Error(), "cannot move it") {
		t.Fatalf("moving the start: %v", err)
	}
	// Committed at 12:40 with a created_at of 11:50, after the 12:00 run moved the
	// watermark: the 13:00 run reaches back and enrols it.
	w.now = utc("2026-03-02T13:00:00Z")
	w.signup(3, "late@example.com", "", "UTC", "", utc("2026-03-02T11:50:00Z"))
	if rep := w.runJob(nil); rep.Counts["enrolled"] != 1 || !hasAct(rep, "queue", "account 3", "welcome") {
		t.Fatalf("late signup: %+v", rep)
	}
}

// Operators: exit keeps an account out (even one that never entered), unsubscribe
// by address suppresses it and exits every account with it, show tells the story,
// and a case in a state the funnel no longer has is a problem, not a guess.
func TestOperatorCommandsAndAStepTheFunnelLost(t *testing.T) {
	w := newWorld(t, utc("2026-03-02T12:00:00Z"))
	w.signup(42, "ada@example.com", "Ada", "UTC", "", utc("2026-03-02T10:00:00Z"))
	w.signup(43, "ben@example.com", "Ben", "UTC", "", utc("2026-03-02T10:00:00Z"))
	w.signup(44, "cy@example.com", "", "UTC", "", utc("2026-03-02T10:00:00Z"))
	j := w.job()
	ctx := context.Background()
	res, err := j.Exit(ctx, 44, "alice", "internal test account")
	if err != nil || res.Event != EventExit || res.From != StateSignedUp {
		t.Fatalf("exit before entering: %+v %v", res, err)
	}
	w.runJob(nil)
	if got := w.received("cy@example.com"); len(got) != 0 {
		t.Fatalf("an exited account got %v", got)
	}
	res, err = j.Exit(ctx, 44, "alice", "again")
	if err != nil || res.Event != "" || !strings.Contains(res.Reason, "exited already") {
		t.Fatalf("second exit: %+v %v", res, err)
	}
	if _, err := j.Exit(ctx, 999, "alice", "x"); !errors.Is(err, ErrNoAccount) {
		t.Fatalf("exit of a missing account: %v", err)
	}

	results, err := j.UnsubscribeAddress(ctx, "Ben@Example.com", "operator:alice", "mailto request")
	if err != nil || len(results) != 1 || results[0].Event != EventExit || !results[0].Suppressed {
		t.Fatalf("unsubscribe by address: %+v %v", results, err)
	}
	if s := w.scalar(`SELECT CONCAT(kind, ' ', reason) FROM mail_suppressions WHERE email = 'ben@example.com'`); s != "unsubscribe mailto request by operator:alice" {
		t.Fatalf("suppression %q", s)
	}
	results, err = j.UnsubscribeAddress(ctx, "nobody@example.com", "operator:alice", "mailto request")
	if err != nil || len(results) != 1 || !results[0].Suppressed || results[0].AccountID != 0 {
		t.Fatalf("unsubscribe of an unknown address: %+v %v", results, err)
	}

	v, err := j.Show(ctx, 42)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := v.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"account 42  ada@example.com (Ada)  status active", "funnel onboarding  started 2026-03-02T00:00:00Z",
		"signed_up -> welcome (send)  cronkit", "welcome  sent", "next: first_vm due 2026-03-04 10:00 UTC", "drip:onboarding  welcome  (version 1)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("show lacks %q:\n%s", want, b.String())
		}
	}

	// The funnel file changed under an open case: welcome is gone.
	changed, err := ParseFunnel("changed.toml", []byte(strings.Replace(string(DefaultFunnelTOML()), `name     = "welcome"`, `name     = "hello"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	j = w.job()
	j.Funnel = changed
	w.now = w.now.Add(48 * time.Hour)
	rep := w.runJob(j)
	if len(rep.Problems) != 1 || rep.Problems[0].Subject != "account 42" || !strings.Contains(rep.Problems[0].Detail, `state "welcome", which funnel onboarding does not have`) {
		t.Fatalf("problems %+v", rep.Problems)
	}
}

// has_vm: read only for accounts at a step that asks; three of them in a small cloud
// cost fewer calls as one paged listing than account by account; without CloudStack,
// billed usage answers.
func TestHasVMFromTheListingOrFromUsage(t *testing.T) {
	w := newWorld(t, utc("2026-03-02T10:00:00Z"))
	for i, id := range []int64{41, 42, 43} {
		w.signup(id, fmt.Sprintf("u%d@example.com", id), "", "UTC", fmt.Sprintf("cs-%d", id), utc("2026-03-02T10:00:00Z"))
		if i == 0 {
			if _, err := w.fake.AddVM(fakecloudstack.VM{ID: "vm-41", AccountID: "cs-41", State: "Stopped", Created: w.now}); err != nil {
				t.Fatal(err)
			}
		}
	}
	w.signup(44, "u44@example.com", "", "UTC", "", utc("2026-03-02T10:00:00Z"))
	w.runJob(nil) // welcomes, no orchestrator call
	if n := w.fake.Calls("listVirtualMachines") + w.fake.Calls("listVirtualMachinesMetrics"); n != 0 {
		t.Fatalf("%d VM reads for the welcomes", n)
	}
	w.now = utc("2026-03-04T10:00:00Z")
	rep := w.runJob(nil)
	if !hasAct(rep, "skip", "account 41", "first_vm: has_vm") || !hasAct(rep, "queue", "account 42", "first_vm") ||
		!hasAct(rep, "queue", "account 43", "first_vm") || !hasAct(rep, "queue", "account 44", "first_vm") {
		t.Fatalf("first_vm: %+v", rep.Actions)
	}
	if w.fake.Calls("listVirtualMachines") == 0 || w.fake.Calls("listVirtualMachinesMetrics") != 0 {
		t.Fatalf("VM reads: %d listings, %d per account", w.fake.Calls("listVirtualMachines"), w.fake.Calls("listVirtualMachinesMetrics"))
	}

	// Without CloudStack: 51 was billed for usage, 52 not.
	w2 := newWorld(t, utc("2026-03-02T10:00:00Z"))
	w2.signup(51, "a@example.com", "", "UTC", "", utc("2026-03-02T10:00:00Z"))
	w2.signup(52, "b@example.com", "", "UTC", "", utc("2026-03-02T10:00:00Z"))
	w2.exec(`INSERT INTO charges (account_id, product, hour, quantity, unit_price, amount, currency, rated_at)
VALUES (51, 'instance.small', '2026-03-02 11:00:00', 1, 0.01, 0.01, 'EUR', '2026-03-02 12:05:00')`)
	j := w2.job()
	j.Orchestrator = nil
	w2.runJob(j)
	w2.now = utc("2026-03-04T10:00:00Z")
	rep = w2.runJob(j)
	if !hasAct(rep, "skip", "account 51", "first_vm: has_vm") || !hasAct(rep, "queue", "account 52", "first_vm") {
		t.Fatalf("from usage: %+v", rep.Actions)
	}
}
