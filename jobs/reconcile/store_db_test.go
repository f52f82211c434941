package reconcile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
	"github.com/cronkit/cronkit/lib/run"
)

func dayOf(d int) time.Time { return time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, d) }

func runCtx(id string) context.Context {
	return run.WithInfo(context.Background(), run.Info{ID: id, Job: "reconcile"})
}

func paymentsScope(from, to time.Time, rechecked ...int64) Scope {
	return Scope{Check: "payments", Classes: []string{ClassPaidNotRecorded, ClassDisputed}, From: from, To: to, Rechecked: rechecked}
}

func lostPayment(seen time.Time) Finding {
	return Finding{Class: ClassPaidNotRecorded, Fingerprint: Fingerprint(ClassPaidNotRecorded, "pi_1"), InvoiceID: 7,
		AccountID: 42, PaymentIntent: "pi_1", Amount: "12.30", Currency: "EUR", Detail: "succeeded at Stripe, pending here",
		Evidence: map[string]any{"stripe": map[string]any{"status": "succeeded"}, "local": map[string]any{"status": "pending"}},
		Fixable:  true, Seen: seen}
}

func events(t *testing.T, db *sql.DB, id int64) string {
	t.Helper()
	rows, err := db.Query(`SELECT event, COALESCE(run_id, '-'), actor FROM reconcile_finding_events WHERE finding_id = ? ORDER BY id`, id)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var e, r, a string
		if err := rows.Scan(&e, &r, &a); err != nil {
			t.Fatal(err)
		}
		out = append(out, e+"@"+r+"/"+a)
	}
	return strings.Join(out, " ")
}

// One problem seen on two nights is one finding; a check of its window that no
// longer sees it resolves it; seen again, it opens again. Each state change is one
// audited event with its run.
func TestFindingLifecycleAcrossRuns(t *testing.T) {
	db := mysqltest.New(t)
	clock := dayOf(1).Add(3 * time.Hour)
	s := &Store{DB: db.DB, Now: func() time.Time { return clock }}

	sum, err := s.Record(runCtx("RUN1"), paymentsScope(dayOf(0), dayOf(1)), []Finding{lostPayment(clock)})
	if err != nil || sum.Opened != 1 || sum.Seen[ClassPaidNotRecorded] != 1 {
		t.Fatalf("run 1: %+v %v", sum, err)
	}
	var first []StoredFinding
	for f, err := range s.List(context.Background(), Filter{}) {
		if err != nil {
			t.Fatal(err)
		}
		first = append(first, f)
	}
	if len(first) != 1 || first[0].State != StateOpen || first[0].InvoiceID != 7 || first[0].Amount != "12.30" ||
		!first[0].FirstSeen.Equal(clock) || !first[0].WindowFrom.Equal(dayOf(0)) {
		t.Fatalf("after run 1: %+v", first)
	}
	id := first[0].ID

	// The same window again the next day: same finding, last_seen moves.
	clock = dayOf(2).Add(3 * time.Hour)
	sum, err = s.Record(runCtx("RUN2"), paymentsScope(dayOf(0), dayOf(1)), []Finding{lostPayment(clock)})
	if err != nil || sum.Opened != 0 || sum.Resolved != 0 {
		t.Fatalf("run 2: %+v %v", sum, err)
	}
	f, err := s.Get(context.Background(), id)
	if err != nil || f.State != StateOpen || !f.LastSeen.Equal(clock) || !f.FirstSeen.Equal(dayOf(1).Add(3*time.Hour)) {
		t.Fatalf("after run 2: %+v %v", f, err)
	}

	// A run of another window does not judge it.
	sum, err = s.Record(runCtx("RUN3"), paymentsScope(dayOf(1), dayOf(2)), nil)
	if err != nil || sum.Resolved != 0 {
		t.Fatalf("other window: %+v %v", sum, err)
	}
	// Its own window, without it: resolved.
	sum, err = s.Record(runCtx("RUN4"), paymentsScope(dayOf(-1), dayOf(1)), nil)
	if err != nil || sum.Resolved != 1 {
		t.Fatalf("run 4: %+v %v", sum, err)
	}
	if f, _ := s.Get(context.Background(), id); f.State != StateResolved || f.ResolvedAt.IsZero() {
		t.Fatalf("after run 4: %+v", f)
	}
	// Seen again: open again, same id.
	sum, err = s.Record(runCtx("RUN5"), paymentsScope(dayOf(0), dayOf(1)), []Finding{lostPayment(clock)})
	if err != nil || sum.Reopened != 1 || sum.Opened != 0 {
		t.Fatalf("run 5: %+v %v", sum, err)
	}
	if got, want := events(t, db.DB, id), "opened@RUN1/cronkit resolved@RUN4/cronkit reopened@RUN5/cronkit"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}
	// The audit trail is append-only.
	if _, err := db.Exec(`UPDATE reconcile_finding_events SET reason = 'x' WHERE finding_id = ?`, id); err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Errorf("rewriting an event: %v", err)
	}
}

func TestAcknowledgeAndRecheck(t *testing.T) {
	db := mysqltest.New(t)
	ctx := context.Background()
	s := &Store{DB: db.DB, Now: func() time.Time { return dayOf(1) }}
	dispute := Finding{Class: ClassDisputed, Fingerprint: Fingerprint(ClassDisputed, "dp_1"), ResourceID: "dp_1", Detail: "dispute"}
	if _, err := s.Record(runCtx("RUN1"), paymentsScope(dayOf(0), dayOf(1)), []Finding{lostPayment(dayOf(1)), dispute}); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for f, err := range s.List(ctx, Filter{Class: ClassDisputed}) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, f.ID)
	}
	if len(ids) != 1 {
		t.Fatalf("disputes: %v", ids)
	}
	f, err := s.Acknowledge(ctx, ids[0], "operator:alice", "evidence sent to Stripe")
	if err != nil || f.State != StateAcknowledged || f.AcknowledgedBy != "operator:alice" || len(f.Events) != 2 {
		t.Fatalf("ack: %+v %v", f, err)
	}
	if _, err := s.Acknowledge(ctx, ids[0], "operator:bob", "again"); !errors.Is(err, ErrState) {
		t.Errorf("second ack: %v, want ErrState", err)
	}
	if _, err := s.Acknowledge(ctx, 999, "operator:bob", "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ack of nothing: %v, want ErrNotFound", err)
	}
	if _, err := s.Acknowledge(ctx, ids[0], "", "x"); err == nil {
		t.Error("ack without actor accepted")
	}
	n := 0
	for _, err := range s.List(ctx, Filter{State: StateOpen}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 1 {
		t.Errorf("open after ack: %d, want 1 (the lost payment)", n)
	}

	// A janitor re-judges the acknowledged dispute outside its window by id: unseen,
	// it resolves; the lost payment, not rechecked, stays open.
	sum, err := s.Record(runCtx("RUN2"), paymentsScope(dayOf(5), dayOf(6), ids[0]), nil)
	if err != nil || sum.Resolved != 1 {
		t.Fatalf("recheck: %+v %v", sum, err)
	}
	if f, _ := s.Get(ctx, ids[0]); f.State != StateResolved {
		t.Errorf("rechecked dispute: %s", f.State)
	}

	// A class the check does not judge is refused; usage findings are untouched by
	// a payments run.
	if _, err := s.Record(runCtx("RUN3"), paymentsScope(dayOf(0), dayOf(1)), []Finding{{Class: ClassMeteredNotFound, ResourceID: "vm-1"}}); err == nil {
		t.Error("recorded a class outside the scope")
	}
	if _, err := s.Record(context.Background(), paymentsScope(dayOf(0), dayOf(1)), nil); err == nil {
		t.Error("recorded without a run id")
	}
}

func TestMarkFixedCommitsWithTheRepair(t *testing.T) {
	db := mysqltest.New(t)
	ctx := context.Background()
	s := &Store{DB: db.DB, Now: func() time.Time { return dayOf(1) }}
	if _, err := s.Record(runCtx("RUN1"), paymentsScope(dayOf(0), dayOf(1)), []Finding{lostPayment(dayOf(1))}); err != nil {
		t.Fatal(err)
	}
	var id int64
	if err := db.QueryRow(`SELECT id FROM reconcile_findings`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	// A rolled-back repair leaves the finding open.
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s.MarkFixed(ctx, tx, id, "RUN2", "recorded", map[string]any{"payment": "succeeded"}); !ok || err != nil {
		t.Fatalf("mark fixed: %v %v", ok, err)
	}
	_ = tx.Rollback()
	if f, _ := s.Get(ctx, id); f.State != StateOpen {
		t.Fatalf("after rollback: %s", f.State)
	}
	tx, _ = db.Begin()
	if ok, err := s.MarkFixed(ctx, tx, id, "RUN2", "recorded pi_1 as succeeded", map[string]any{"payment": "succeeded"}); !ok || err != nil {
		t.Fatalf("mark fixed: %v %v", ok, err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	f, _ := s.Get(ctx, id)
	if f.State != StateFixed || f.FixedBy != ActorJob || f.FixReason != "recorded pi_1 as succeeded" {
		t.Fatalf("after fix: %+v", f)
	}
	tx, _ = db.Begin()
	defer tx.Rollback()
	if ok, err := s.MarkFixed(ctx, tx, id, "RUN3", "again", nil); ok || err != nil {
		t.Errorf("fixing a fixed finding: %v %v, want false", ok, err)
	}
	if got := events(t, db.DB, id); got != "opened@RUN1/cronkit fixed@RUN2/cronkit" {
		t.Errorf("events %q", got)
	}
	// A fixed finding that is not seen again stays fixed.
	if sum, err := s.Record(runCtx("RUN4"), paymentsScope(dayOf(0), dayOf(1)), nil); err != nil || sum.Resolved != 0 {
		t.Errorf("after a fix: %+v %v", sum, err)
	}
}

// A dry run, with a SELECT-only user, writes nothing and shows the findings as the
// run would leave them.
func TestDryRunPlansWithoutWriting(t *testing.T) {
	db := mysqltest.New(t)
	ctx := context.Background()
	s := &Store{DB: db.DB, Now: func() time.Time { return dayOf(1) }}
	old := Finding{Class: ClassDisputed, Fingerprint: Fingerprint(ClassDisputed, "dp_old"), ResourceID: "dp_old", Detail: "old"}
	if _, err := s.Record(runCtx("RUN1"), paymentsScope(dayOf(0), dayOf(1)), []Finding{lostPayment(dayOf(1)), old}); err != nil {
		t.Fatal(err)
	}
	ro, err := mysql.Open(ctx, db.SelectOnlyUser(t), mysql.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	dry := &Store{DB: ro, Now: func() time.Time { return dayOf(2) }, DryRun: true}
	fresh := Finding{Class: ClassDisputed, Fingerprint: Fingerprint(ClassDisputed, "dp_new"), ResourceID: "dp_new", Detail: "new"}
	sum, err := dry.Record(runCtx("DRY"), paymentsScope(dayOf(0), dayOf(1)), []Finding{lostPayment(dayOf(2)), fresh})
	if err != nil || sum.Opened != 1 || sum.Resolved != 1 {
		t.Fatalf("dry run: %+v %v", sum, err)
	}
	var open []string
	for f, err := range dry.Open(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, f.Subject()+" "+f.ResourceID+f.PaymentIntent)
	}
	if len(open) != 2 || !strings.HasPrefix(open[0], "finding ") || !strings.HasSuffix(open[0], "pi_1") ||
		!strings.HasPrefix(open[1], "new finding disputed:") || dry.PlannedOpen() != 1 {
		t.Errorf("dry run's open findings: %q", open)
	}
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM reconcile_findings WHERE state = 'open'`).Scan(&n); err != nil || n != 2 {
		t.Errorf("the dry run changed findings: %d open, %v", n, err)
	}
}

// A check that streams its findings (the usage check) plugs in as a FindingsCheck:
// what it emits is recorded in batches; what it no longer emits resolves, unless
// the check failed before judging its whole window.
func TestFindingsCheckRecordsWhatIsEmitted(t *testing.T) {
	db := mysqltest.New(t)
	emitN := func(n int, fail bool) FindingsCheck {
		return FindingsCheck{CheckName: "usage", Classes: []string{ClassMeteredNotFound},
			Find: func(ctx context.Context, env *CheckEnv, emit func(Finding) error) error {
				for i := range n {
					if err := emit(Finding{Class: ClassMeteredNotFound, ResourceID: fmt.Sprintf("vm-%d", i), Detail: "metered, unknown"}); err != nil {
						return err
					}
				}
				if fail {
					return errors.New("CloudStack went away")
				}
				return nil
			}}
	}
	job := func(c Check) *Job {
		return &Job{DB: db.DB, Checks: []Check{c}, Now: func() time.Time { return dayOf(2) },
			Config: Config{Window: Window{From: dayOf(0), To: dayOf(1)}}}
	}
	open := func() int {
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM reconcile_findings WHERE state = 'open'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	rep, err := job(emitN(450, false)).Run(runCtx("RUN1"))
	if err != nil || open() != 450 || rep.Counts["findings_open_metered_not_found"] != 450 || len(rep.Problems) != 450 {
		t.Fatalf("run 1: %v, %d open, counts %v", err, open(), rep.Counts)
	}
	// A failed check keeps what it emitted and resolves nothing.
	if _, err := job(emitN(10, true)).Run(runCtx("RUN2")); err == nil || !strings.Contains(err.Error(), "usage check: CloudStack went away") {
		t.Fatalf("run 2: %v", err)
	}
	if open() != 450 {
		t.Fatalf("a failed check resolved findings: %d open", open())
	}
	rep, err = job(emitN(300, false)).Run(runCtx("RUN3"))
	if err != nil || open() != 300 || rep.Counts["findings_resolved"] != 150 {
		t.Fatalf("run 3: %v, %d open, counts %v", err, open(), rep.Counts)
	}
}
