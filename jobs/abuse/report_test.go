package abuse

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/run"
)

// reportLines renders the report as --output json does and reads its actions and
// problems back as plain objects, numbers kept as written.
func reportLines(t *testing.T, rep *run.Report) (actions, problems []map[string]any) {
	t.Helper()
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Actions  []map[string]any `json:"actions"`
		Problems []map[string]any `json:"problems"`
	}
	dec := json.NewDecoder(&b)
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc.Actions, doc.Problems
}

// wantFields checks one line's keys: ints are JSON integers, the rest strings.
func wantFields(t *testing.T, line map[string]any, want map[string]any) {
	t.Helper()
	for k, v := range want {
		got, ok := line[k]
		if !ok {
			t.Errorf("%s line lacks %q: %v", line["kind"], k, line)
			continue
		}
		switch v := v.(type) {
		case int:
			n, isNum := got.(json.Number)
			if i, err := n.Int64(); !isNum || err != nil || i != int64(v) {
				t.Errorf("%s line: %s = %v (%T), want the integer %d", line["kind"], k, got, got, v)
			}
		default:
			if got != v {
				t.Errorf("%s line: %s = %v, want %v", line["kind"], k, got, v)
			}
		}
	}
}

// Every action and problem of a run carries flat, typed fields a program can read:
// ids as integers, the machine, states, events, the action and its target, times
// in RFC 3339; the text report is unchanged.
func TestReportLinesCarryStructuredFields(t *testing.T) {
	w := newWorld(t)
	w.now = utc("2026-11-20T12:00:00Z")
	seedMiner(w, 77, "cs-77")
	w.fake.FailNext("stopVirtualMachine", 1, 530)
	rep := w.runJob(nil)
	actions, problems := reportLines(t, rep)

	byDetail := func(list []map[string]any, kind, part string) map[string]any {
		for _, l := range list {
			if l["kind"] == kind && strings.Contains(fmt.Sprint(l["detail"]), part) {
				return l
			}
		}
		t.Fatalf("no %s line with %q in %v", kind, part, list)
		return nil
	}
	wantFields(t, byDetail(actions, "transition", "good -> flagged"), map[string]any{
		"account_id": 77, "case_id": 1, "machine": FreeCredit, "from": StateGood, "to": StateFlagged, "event": EventFlag,
		"actor": ActorJob, "at": "2026-11-20T12:00:00Z"})
	wantFields(t, byDetail(actions, "transition", "flagged -> suspended"), map[string]any{
		"account_id": 77, "case_id": 1, "machine": FreeCredit, "from": StateFlagged, "to": StateSuspended, "event": EventSuspend})
	// The first stop failed (a problem with the action's fields); the queue stopped there.
	wantFields(t, byDetail(problems, "orchestrator", "stop_vm"), map[string]any{
		"account_id": 77, "case_id": 1, "machine": FreeCredit, "action": actStopVM, "target": "cs-77-miner-1"})

	// The next run completes the suspension and announces it.
	rep = w.runJob(nil)
	actions, _ = reportLines(t, rep)
	wantFields(t, byDetail(actions, "orchestrator", "disable_account"), map[string]any{
		"account_id": 77, "case_id": 1, "machine": FreeCredit, "action": actDisableAccount, "target": "cs-77"})
	wantFields(t, byDetail(actions, "mail", "trial_suspension"), map[string]any{
		"account_id": 77, "case_id": 1, "machine": FreeCredit, "step": noticeTrialSuspension, "email": "x7@mailinator.com",
		"mail_key": "abuse:free_credit:case:1:trial_suspension"})

	// A plan names no case it would open.
	w2 := newWorld(t)
	w2.now = utc("2026-11-20T12:00:00Z")
	seedMiner(w2, 77, "cs-77")
	j := w2.job()
	j.Config.DryRun = true
	j.Outbox = refusingOutbox{}
	rep = w2.runJob(j)
	actions, _ = reportLines(t, rep)
	l := byDetail(actions, "transition", "good -> flagged")
	if _, ok := l["case_id"]; ok {
		t.Errorf("a planned case has an id: %v", l)
	}
	wantFields(t, l, map[string]any{"account_id": 77, "machine": FreeCredit, "event": EventFlag})
}

// trialSignups adds n honest trial accounts (one idle VM each, two for the first)
// that the free-credit pass must read and leave alone.
func trialSignups(w *world, n int) {
	for i := 0; i < n; i++ {
		id := int64(200 + i)
		cs := fmt.Sprintf("cs-%d", id)
		w.account(id, fmt.Sprintf("founder%d@startup.example", i), cs, w.now.Add(-20*time.Hour))
		w.exec(`INSERT INTO credits (account_id, amount, currency, reason, granted_at) VALUES (?, 50, 'EUR', 'trial', ?)`, id, w.now.Add(-20*time.Hour))
		w.vm(cs, cs+"-a", "Running", 3, w.now.Add(-19*time.Hour))
		if i == 0 {
			w.vm(cs, cs+"-b", "Running", 5, w.now.Add(-19*time.Hour))
		}
	}
}

// In a small cloud the free-credit pass reads every VM in one listing instead of two
// calls per account, and each account still gets its own VMs.
func TestFreeCreditReadsVMsInOneListingWhenCheaper(t *testing.T) {
	w := newWorld(t)
	w.now = utc("2026-11-20T12:00:00Z")
	trialSignups(w, 5)
	rep := w.runJob(nil)
	if len(rep.Problems) != 0 || len(rep.Actions) != 0 || rep.Counts["orchestrator_reads"] != 5 {
		t.Fatalf("report %+v", rep)
	}
	if n := w.fake.Calls("listVirtualMachinesMetrics"); n != 1 {
		t.Fatalf("%d metrics calls, want one listing", n)
	}
	if n := w.fake.Calls("listAccounts"); n != 2 { // the total, then the one page
		t.Fatalf("%d listAccounts calls, want 2", n)
	}
	if got := w.scalar(`SELECT GROUP_CONCAT(account_id, ':', vms_running ORDER BY account_id) FROM abuse_cpu_samples`); got != "200:2,201:1,202:1,203:1,204:1" {
		t.Fatalf("samples %s", got)
	}

	// A listing that fails leaves every account unevaluated, none misread as idle.
	w.now = w.now.Add(15 * time.Minute)
	w.fake.FailNext("listVirtualMachinesMetrics", 1, 530)
	rep = w.runJob(nil)
	if len(rep.Problems) != 5 || !strings.Contains(rep.Problems[0].Detail, "(not evaluated)") {
		t.Fatalf("problems %+v", rep.Problems)
	}
	if n := w.scalar(`SELECT COUNT(*) FROM abuse_cpu_samples`); n != "5" {
		t.Fatalf("samples recorded without a reading: %s", n)
	}
}

// In a cloud whose listing takes more calls than reading the few accounts one by
// one, the pass reads them one by one.
func TestFreeCreditReadsAccountByAccountWhenTheCloudIsLarge(t *testing.T) {
	w := newWorld(t)
	w.now = utc("2026-11-20T12:00:00Z")
	trialSignups(w, 3)
	for i := 0; i < 6; i++ { // customers the pass has no reason to read
		w.account(int64(300+i), fmt.Sprintf("c%d@example.com", i), fmt.Sprintf("cs-%d", 300+i), w.now.AddDate(-1, 0, 0))
	}
	orch, err := orchestrator.New(orchestrator.Config{APIURL: w.apiURL, APIKey: testAPIKey, SecretKey: testSecretKey,
		Timeout: 5 * time.Second, PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	j := w.job()
	j.Orchestrator = orch // pages of one: listing 9 accounts and 4 VMs is 13 calls, reading 3 accounts 6
	rep := w.runJob(j)
	if len(rep.Problems) != 0 || rep.Counts["orchestrator_reads"] != 3 {
		t.Fatalf("report %+v", rep)
	}
	// One listing per account (two pages for the account with two VMs), each after
	// a lookup of the account; and the one total that decided.
	if n := w.fake.Calls("listVirtualMachinesMetrics"); n != 4 {
		t.Fatalf("%d metrics calls, want 4", n)
	}
	if n := w.fake.Calls("listAccounts"); n != 1+3 {
		t.Fatalf("%d listAccounts calls, want 4", n)
	}
	if got := w.scalar(`SELECT GROUP_CONCAT(account_id, ':', vms_running ORDER BY account_id) FROM abuse_cpu_samples`); got != "200:2,201:1,202:1" {
		t.Fatalf("samples %s", got)
	}
}
