package cases_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/looplab/fsm"

	"github.com/cronkit/cronkit/lib/cases"
	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

// funnel is a drip-like machine, to show the store needs nothing from abuse: a
// signup is welcomed, nudged, and leaves converted or exited.
func funnel() *cases.Machine {
	return &cases.Machine{
		Name: "test_funnel", Initial: "signed_up", Open: []string{"welcomed", "nudged"},
		Events: fsm.Events{
			{Name: "welcome", Src: []string{"signed_up"}, Dst: "welcomed"},
			{Name: "nudge", Src: []string{"welcomed"}, Dst: "nudged"},
			{Name: "convert", Src: []string{"welcomed", "nudged"}, Dst: "converted"},
			{Name: "exit", Src: []string{"welcomed", "nudged"}, Dst: "exited"},
		},
	}
}

// other is a second job's machine in the same tables.
func other() *cases.Machine {
	return &cases.Machine{Name: "test_other", Initial: "none", Open: []string{"open"},
		Events: fsm.Events{{Name: "open", Src: []string{"none"}, Dst: "open"}, {Name: "close", Src: []string{"open"}, Dst: "closed"}}}
}

var t0 = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

type env struct {
	t   *testing.T
	db  *mysqltest.DB
	now time.Time
}

func newEnv(t *testing.T, accounts ...int64) *env {
	t.Helper()
	e := &env{t: t, db: mysqltest.New(t), now: t0}
	for _, id := range accounts {
		e.exec(`INSERT INTO accounts (id, email, currency, created_at) VALUES (?, ?, 'EUR', ?)`, id, fmt.Sprintf("u%d@example.com", id), t0)
	}
	return e
}

func (e *env) store(machines ...*cases.Machine) *cases.Store {
	if len(machines) == 0 {
		machines = []*cases.Machine{funnel()}
	}
	return &cases.Store{DB: e.db.DB, Machines: machines, Now: func() time.Time { return e.now }}
}

func (e *env) exec(q string, args ...any) {
	e.t.Helper()
	if _, err := e.db.Exec(q, args...); err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
}

func (e *env) list(q string, args ...any) string {
	e.t.Helper()
	rows, err := e.db.Query(q, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

// decide always returns d.
func decide(d cases.Decision) func(context.Context, cases.Querier, *cases.Case) (cases.Decision, error) {
	return func(context.Context, cases.Querier, *cases.Case) (cases.Decision, error) { return d, nil }
}

// welcome opens a funnel case for account with a welcome mail as its action.
func welcome(account int64) cases.Request {
	return cases.Request{Machine: "test_funnel", AccountID: account, Actor: "drip", RunID: "01KTESTRUN0000000000000001",
		Decide: decide(cases.Decision{Event: "welcome", Reason: "signed up", Evidence: map[string]int{"day": 0}}),
		Effects: func(_ context.Context, ch *cases.Change) error {
			ch.Act(1, "send", fmt.Sprintf("welcome:%d", ch.Case.AccountID), []byte(`{"step":"welcome"}`))
			return nil
		}}
}

func TestTransitionsAreAppendOnlyInTheDatabase(t *testing.T) {
	e := newEnv(t)
	insert := `INSERT INTO case_transitions
  (case_id, case_version, account_id, machine, from_state, to_state, event, reason, evidence, run_id, actor, at)
VALUES (1, 1, 42, 'dunning', 'good', 'reminded', 'remind', ?, '{}', NULL, ?, NOW(6))`
	e.exec(insert, "r", "cronkit")
	for _, q := range []string{`UPDATE case_transitions SET to_state = 'resolved'`, `DELETE FROM case_transitions`} {
		if _, err := e.db.Exec(q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if got := e.list(`SELECT CONCAT(COUNT(*), ' ', MAX(to_state)) FROM case_transitions`); got != "1 reminded" {
		t.Fatalf("rows: %s", got)
	}
	if _, err := e.db.Exec(insert, "again", "cronkit"); !mysql.IsDuplicate(err) {
		t.Fatalf("second transition for one version: %v", err)
	}
	if _, err := e.db.Exec(strings.Replace(insert, "(1, 1,", "(1, 2,", 1), "no actor", ""); err == nil {
		t.Fatal("a transition without an actor was recorded")
	}
}

func TestOneOpenCasePerAccountAndMachine(t *testing.T) {
	e := newEnv(t)
	insert := func(machine, state string, closed bool) error {
		closedAt := "NULL"
		if closed {
			closedAt = "NOW(6)"
		}
		_, err := e.db.Exec(`INSERT INTO cases (account_id, machine, state, version, opened_at, state_since, closed_at, evidence, updated_at)
VALUES (42, ?, ?, 1, NOW(6), NOW(6), `+closedAt+`, '{}', NOW(6))`, machine, state)
		return err
	}
	if err := insert("test_funnel", "welcomed", false); err != nil {
		t.Fatal(err)
	}
	if err := insert("test_funnel", "nudged", false); !mysql.IsDuplicate(err) {
		t.Fatalf("second open case: %v", err)
	}
	if err := insert("test_other", "open", false); err != nil {
		t.Fatalf("another machine may have its own: %v", err)
	}
	if err := insert("test_funnel", "converted", true); err != nil {
		t.Fatalf("closed cases are not limited: %v", err)
	}
	e.exec(`UPDATE cases SET state = 'exited', closed_at = NOW(6) WHERE machine = 'test_funnel' AND closed_at IS NULL`)
	if err := insert("test_funnel", "welcomed", false); err != nil {
		t.Fatalf("a new case once the old one closed: %v", err)
	}
}

// Intent, perform, confirm: the transition and its action commit together; the
// action is performed after the commit and confirmed; a performance that is never
// confirmed (the run died) is performed again with the same key, and only a
// confirmed one is done.
func TestActionsAreIntentThenPerformThenConfirm(t *testing.T) {
	e := newEnv(t, 42)
	s := e.store()
	ctx := context.Background()
	res, err := s.Apply(ctx, welcome(42))
	if err != nil {
		t.Fatal(err)
	}
	c := res.Case
	if c.ID == 0 || c.Version != 1 || c.State != "welcomed" || res.TransitionID == 0 || len(res.Actions) != 1 || res.Actions[0].ID != 0 {
		t.Fatalf("result %+v, case %+v", res, c)
	}
	if got := e.list(`SELECT CONCAT_WS(' ', from_state, to_state, event, reason, actor, run_id, at = ?, JSON_EXTRACT(evidence, '$.day')) FROM case_transitions`, t0); got != "signed_up welcomed welcome signed up drip 01KTESTRUN0000000000000001 1 0" {
		t.Fatalf("transition %q", got)
	}
	if got := e.list(`SELECT CONCAT_WS(' ', machine, action, target, status, attempts) FROM case_actions`); got != "test_funnel send welcome:42 pending 0" {
		t.Fatalf("intent %q", got)
	}
	open, err := s.OpenCases(ctx, s.DB, "test_funnel", []int64{42, 43})
	if err != nil || len(open) != 1 || open[42].PendingActions != 1 {
		t.Fatalf("open cases %+v %v", open, err)
	}

	var keys []string
	var mu sync.Mutex
	crash := true
	perform := func(ctx context.Context, a *cases.Action) (cases.Outcome, error) {
		if ok, err := s.Attempt(ctx, a); err != nil || !ok {
			return cases.Outcome{}, fmt.Errorf("attempt: %v %v", ok, err)
		}
		mu.Lock()
		defer mu.Unlock()
		keys = append(keys, a.Key())
		if crash {
			return cases.Outcome{}, errors.New("killed before the confirmation")
		}
		return cases.Outcome{Detail: "sent"}, nil
	}
	var failed []string
	report := func(_ context.Context, caseID int64, a *cases.Action, err error) {
		failed = append(failed, fmt.Sprintf("%d %s %v", caseID, a.Name, err))
	}
	e.now = t0.Add(time.Minute)
	if err := s.Drive(ctx, cases.DriveOptions{Perform: perform, Failed: report}); err != nil {
		t.Fatal(err)
	}
	if len(failed) != 1 || e.list(`SELECT CONCAT_WS(' ', status, attempts, last_error) FROM case_actions`) != "pending 1 killed before the confirmation" {
		t.Fatalf("after a failed run: %v %q", failed, e.list(`SELECT CONCAT_WS(' ', status, attempts, last_error) FROM case_actions`))
	}
	crash = false
	e.now = t0.Add(2 * time.Minute)
	if err := s.Drive(ctx, cases.DriveOptions{Perform: perform, Failed: report}); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0] != keys[1] {
		t.Fatalf("keys %v: a retry must carry the same key", keys)
	}
	if got := e.list(`SELECT CONCAT_WS(' ', status, attempts, outcome, last_error IS NULL, done_at = ?) FROM case_actions`, t0.Add(2*time.Minute)); got != "done 2 sent 1 1" {
		t.Fatalf("confirmed %q", got)
	}
	// Nothing left: a third run performs nothing.
	if err := s.Drive(ctx, cases.DriveOptions{Perform: perform, Failed: report}); err != nil || len(keys) != 2 {
		t.Fatalf("third run: %v %v", keys, err)
	}
	if got, err := s.Case(ctx, s.DB, c.ID); err != nil || got.PendingActions != 0 {
		t.Fatalf("case %+v %v", got, err)
	}
}

// A plan made on a case that has moved since is not acted on; two writers racing
// on one case: one wins, the other gets ErrConflict, and the log holds one row per
// version.
func TestStalePlansAndRacesConflict(t *testing.T) {
	e := newEnv(t, 42)
	s := e.store()
	ctx := context.Background()
	res, err := s.Apply(ctx, welcome(42))
	if err != nil {
		t.Fatal(err)
	}
	// A plan that saw no case.
	if _, err := s.Apply(ctx, welcome(42)); !errors.Is(err, cases.ErrConflict) {
		t.Fatalf("stale plan: %v", err)
	}
	plan := *res.Case
	nudge := cases.Request{Machine: "test_funnel", AccountID: 42, Expect: &plan, Actor: "drip",
		Decide: decide(cases.Decision{Event: "nudge", Reason: "day 3"})}
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Apply(ctx, nudge)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	won := 0
	for err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, cases.ErrConflict):
			t.Fatalf("race: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d writers won", won)
	}
	if got := e.list(`SELECT CONCAT(case_version, ':', to_state) FROM case_transitions ORDER BY id`); got != "1:welcomed 2:nudged" {
		t.Fatalf("log %q", got)
	}
	// An operator's command by id acts on the case as it is now.
	res, err = s.Apply(ctx, cases.Request{Machine: "test_funnel", AccountID: 42, CaseID: plan.ID, Actor: "operator:alice",
		Decide: decide(cases.Decision{Event: "exit", Reason: "asked to stop", SignOff: true})})
	if err != nil || res.Case.ClosedAt == nil || res.Case.ApprovedBy != "operator:alice" || res.Case.Version != 3 {
		t.Fatalf("operator exit: %+v %v", res.Case, err)
	}
	if open, err := s.OpenCases(ctx, s.DB, "test_funnel", []int64{42}); err != nil || len(open) != 0 {
		t.Fatalf("closed case still open: %+v %v", open, err)
	}
	// Closed: a new case can open.
	if _, err := s.Apply(ctx, welcome(42)); err != nil {
		t.Fatalf("reopen: %v", err)
	}
}

// A decision that changed inside the transaction wins, "nothing" does nothing, an
// effect's error cancels the transition, and an event the machine does not allow
// from the state is refused: in every case nothing is written.
func TestApplyWritesNothingUnlessTheTransitionHappens(t *testing.T) {
	e := newEnv(t, 42)
	s := e.store()
	ctx := context.Background()
	res, err := s.Apply(ctx, cases.Request{Machine: "test_funnel", AccountID: 42, Actor: "drip",
		Decide: decide(cases.Decision{Reason: "converted before the welcome"})})
	if err != nil || res.Case != nil || res.Event != "" || res.Reason != "converted before the welcome" {
		t.Fatalf("nothing: %+v %v", res, err)
	}
	boom := errors.New("boom")
	req := welcome(42)
	req.Effects = func(_ context.Context, ch *cases.Change) error {
		ch.Act(1, "send", "x", nil)
		return boom
	}
	if _, err := s.Apply(ctx, req); !errors.Is(err, boom) {
		t.Fatalf("effects error: %v", err)
	}
	req = welcome(42)
	req.Decide = decide(cases.Decision{Event: "nudge"})
	var invalid fsm.InvalidEventError
	if _, err := s.Apply(ctx, req); !errors.As(err, &invalid) {
		t.Fatalf("nudge before welcome: %v", err)
	}
	if got := e.list(`SELECT CONCAT((SELECT COUNT(*) FROM cases), (SELECT COUNT(*) FROM case_transitions), (SELECT COUNT(*) FROM case_actions))`); got != "000" {
		t.Fatalf("rows written: %s", got)
	}
	if _, err := s.Apply(ctx, cases.Request{Machine: "nope", AccountID: 42, Actor: "x", Decide: decide(cases.Decision{})}); err == nil {
		t.Fatal("unknown machine accepted")
	}
}

// A dry run decides through the same steps and returns the plan, writes nothing, and
// performs nothing.
func TestDryRunPlansAndWritesNothing(t *testing.T) {
	e := newEnv(t, 42)
	ctx := context.Background()
	if _, err := e.store().Apply(ctx, welcome(42)); err != nil {
		t.Fatal(err)
	}
	s := e.store()
	s.DryRun = true
	s.DB = e.db.DB
	open, err := s.OpenCases(ctx, s.DB, "test_funnel", []int64{42})
	if err != nil {
		t.Fatal(err)
	}
	committed := false
	res, err := s.Apply(ctx, cases.Request{Machine: "test_funnel", AccountID: 42, Expect: open[42], Actor: "drip",
		Decide: decide(cases.Decision{Event: "exit", Reason: "unsubscribed"}),
		Effects: func(_ context.Context, ch *cases.Change) error {
			if ch.Tx != nil {
				return errors.New("a dry run got a transaction")
			}
			ch.CancelPending()
			ch.Act(1, "send", "goodbye:42", nil)
			ch.AfterCommit(func() { committed = true })
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if res.To != "exited" || res.Case.ClosedAt == nil || !res.Cancelled || len(res.Actions) != 1 || res.Actions[0].CaseID != open[42].ID || !committed {
		t.Fatalf("plan %+v", res)
	}
	if got := e.list(`SELECT CONCAT_WS(' ', state, version) FROM cases`); got != "welcomed 1" {
		t.Fatalf("dry run wrote: %s", got)
	}
	if got := e.list(`SELECT CONCAT(action, ':', status) FROM case_actions`); got != "send:pending" {
		t.Fatalf("dry run wrote actions: %s", got)
	}
	if err := s.Drive(ctx, cases.DriveOptions{Perform: func(context.Context, *cases.Action) (cases.Outcome, error) {
		t.Fatal("a dry run performed")
		return cases.Outcome{}, nil
	}}); err == nil {
		t.Fatal("Drive in a dry run must refuse")
	}
}

// Confirmation writes commit together: the job's own row (InTx), the follow-up
// actions (Then) and the outcome; Attempted and PendingCount see what happened; a
// later transition's CancelPending cancels what was still pending before its own
// actions; and a store sees only its machines' actions.
func TestConfirmationFollowUpsAndCancellation(t *testing.T) {
	e := newEnv(t, 42, 43)
	ctx := context.Background()
	s := e.store()
	req := welcome(42)
	req.Effects = func(_ context.Context, ch *cases.Change) error {
		ch.Act(1, "expand", "all", nil)
		ch.Act(9, "announce", "u42@example.com", nil)
		return nil
	}
	res, err := s.Apply(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	// Another job's pending action on another account: not this store's business.
	o := e.store(other())
	if _, err := o.Apply(ctx, cases.Request{Machine: "test_other", AccountID: 43, Actor: "other",
		Decide: decide(cases.Decision{Event: "open"}),
		Effects: func(_ context.Context, ch *cases.Change) error {
			ch.Act(1, "poke", "43", nil)
			return nil
		}}); err != nil {
		t.Fatal(err)
	}
	var performed []string
	perform := func(ctx context.Context, a *cases.Action) (cases.Outcome, error) {
		performed = append(performed, a.Name+" "+a.Target)
		switch a.Name {
		case "expand":
			return cases.Outcome{Detail: "2 parts", Then: []*cases.Action{{Seq: 2, Name: "part", Target: "a"}, {Seq: 2, Name: "part", Target: "b"}},
				InTx: func(ctx context.Context, tx *sql.Tx) error {
					_, err := tx.ExecContext(ctx, `INSERT INTO account_tags (account_id, tag, reason, actor, created_at) VALUES (42, 'expanded', 'x', 'drip', ?)`, t0)
					return err
				}}, nil
		case "part":
			if ok, err := s.Attempt(ctx, a); err != nil || !ok {
				return cases.Outcome{}, fmt.Errorf("attempt %v %v", ok, err)
			}
			if a.Target == "b" {
				return cases.Outcome{}, errors.New("part b is down")
			}
			return cases.Outcome{Detail: "ok"}, nil
		}
		return cases.Outcome{}, fmt.Errorf("unexpected %s", a.Name)
	}
	if err := s.Drive(ctx, cases.DriveOptions{Perform: perform, Concurrency: 4}); err != nil {
		t.Fatal(err)
	}
	// In order, stopped at the first failure: the announcement waits.
	if got := strings.Join(performed, ", "); got != "expand all, part a, part b" {
		t.Fatalf("performed %s", got)
	}
	if got := e.list(`SELECT CONCAT(action, ':', target, ':', status) FROM case_actions WHERE machine = 'test_funnel' ORDER BY seq, target`); got != "expand:all:done part:a:done part:b:pending announce:u42@example.com:pending" {
		t.Fatalf("actions %s", got)
	}
	if e.list(`SELECT tag FROM account_tags WHERE account_id = 42`) != "expanded" {
		t.Fatal("InTx did not commit with the confirmation")
	}
	att, err := s.Attempted(ctx, s.DB, 42, "part", "expand")
	if err != nil || len(att) != 2 || att[0].Target != "a" || att[1].Target != "b" || att[0].LastID >= att[1].LastID {
		t.Fatalf("attempted %+v %v", att, err)
	}
	if n, err := s.PendingCount(ctx, s.DB, res.Case.ID, "announce"); err != nil || n != 1 {
		t.Fatalf("pending announce %d %v", n, err)
	}
	// The signup converts: what was pending is cancelled, the new action is not.
	c, _ := s.Case(ctx, s.DB, res.Case.ID)
	if _, err := s.Apply(ctx, cases.Request{Machine: "test_funnel", AccountID: 42, Expect: c, Actor: "drip",
		Decide: decide(cases.Decision{Event: "convert", Reason: "paid"}),
		Effects: func(_ context.Context, ch *cases.Change) error {
			ch.CancelPending()
			ch.Act(1, "thank", "u42@example.com", nil)
			return nil
		}}); err != nil {
		t.Fatal(err)
	}
	if got := e.list(`SELECT CONCAT(action, ':', status) FROM case_actions WHERE machine = 'test_funnel' AND status <> 'done' ORDER BY id`); got != "announce:cancelled part:cancelled thank:pending" {
		t.Fatalf("after convert: %s", got)
	}
	pending, err := s.Pending(ctx, s.DB, 0)
	if err != nil || len(pending) != 1 || pending[0].Name != "thank" {
		t.Fatalf("pending of the funnel store: %+v %v", pending, err)
	}
	if cs, err := s.CasesOf(ctx, s.DB, 43); err != nil || len(cs) != 0 {
		t.Fatalf("the funnel store sees another machine's cases: %+v %v", cs, err)
	}
	if _, err := s.Case(ctx, s.DB, 2); !errors.Is(err, cases.ErrNoCase) {
		t.Fatalf("another machine's case by id: %v", err)
	}
	tr, err := s.Transitions(ctx, s.DB, res.Case.ID)
	if err != nil || len(tr) != 2 || tr[1].Event != "convert" || tr[1].CaseVersion != 2 {
		t.Fatalf("transitions %+v %v", tr, err)
	}
	recs, err := s.ActionRecords(ctx, s.DB, res.Case.ID)
	if err != nil || len(recs) != 5 || recs[0].Action != "expand" || recs[0].Outcome != "2 parts" || recs[0].DoneAt == nil {
		t.Fatalf("records %+v %v", recs, err)
	}
}
