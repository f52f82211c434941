package prune

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
	"github.com/cronkit/cronkit/lib/run"
)

// now is the tests' instant; with the default retentions the cut-offs are:
// usage 2026-06-01 (the month of now-180d), samples 2026-10-31T12:00,
// outbox 2026-09-01T12:00, job runs 2026-06-03T12:00.
var now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func exec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// usageRow inserts one raw usage record; hour nil leaves it unmapped (start_date
// dates it).
func usageRow(t *testing.T, db *sql.DB, name, status string, start time.Time, hour any) {
	t.Helper()
	exec(t, db, `INSERT INTO cloudstack_usage (identity, usage_id, usage_type, start_date, end_date, cs_account_id,
  content_hash, raw_usage, status, hour, first_seen_at, changed_at)
VALUES (UNHEX(SHA2(?, 256)), ?, 1, ?, ?, 'cs-acct', UNHEX(SHA2('c', 256)), '1', ?, ?, ?, ?)`,
		name, name, start, start.Add(time.Hour-time.Second), status, hour, now, now)
}

// seedWorld puts rows on both sides of every cut-off, and rows in the audit tables.
func seedWorld(t *testing.T, db *sql.DB) {
	t.Helper()
	exec(t, db, `INSERT INTO billing_state (name, hour_watermark, updated_at) VALUES ('rating', '2026-11-30 10:00:00', ?)`, now)
	// Charges: everything before November invoiced.
	exec(t, db, `INSERT INTO charges (account_id, product, hour, quantity, amount, currency, invoice_id, rated_at) VALUES
  (1, 'instance.small', '2026-03-01 00:00:00', 1, 1, 'USD', 1, ?),
  (1, 'instance.small', '2026-11-01 00:00:00', 1, 1, 'USD', NULL, ?)`, now, now)
	for _, u := range []struct {
		name, status string
		start        string
		mapped       bool
	}{
		{"u-may-last", "collected", "2026-05-31T23:00:00Z", true},   // pruned
		{"u-jun-first", "collected", "2026-06-01T00:00:00Z", true},  // kept: its month is within retention
		{"u-apr-ignored", "ignored", "2026-04-10T05:00:00Z", false}, // pruned, dated by start_date
		{"u-mar-pending", "pending", "2026-03-01T00:00:00Z", false}, // kept: not billed yet
		{"u-nov", "collected", "2026-11-02T00:00:00Z", true},        // kept
	} {
		var hour any
		if u.mapped {
			hour = ts(u.start)
		}
		usageRow(t, db, u.name, u.status, ts(u.start), hour)
	}
	// Many old ones, so the batches (of 2 in the tests) go round.
	for i := range 25 {
		h := ts("2026-02-01T00:00:00Z").Add(time.Duration(i) * time.Hour)
		usageRow(t, db, fmt.Sprintf("u-feb-%d", i), "collected", h, h)
	}

	for i, at := range []string{"2026-10-31T11:59:59.999999Z", "2026-10-31T12:00:00Z", "2026-11-29T00:00:00Z"} {
		exec(t, db, `INSERT INTO abuse_cpu_samples (account_id, sampled_at, vms_running, vms_hot, avg_cpu) VALUES (?, ?, 1, 1, 99)`, i+1, ts(at))
	}
	for i := range 25 {
		exec(t, db, `INSERT INTO abuse_cpu_samples (account_id, sampled_at, vms_running, vms_hot, avg_cpu) VALUES (?, ?, 1, 0, 5)`,
			100+i%3, ts("2026-01-01T00:00:00Z").Add(time.Duration(i)*time.Minute))
	}

	for _, m := range []struct {
		key, status string
		created     string
		sent        any
	}{
		{"sent-old", "sent", "2026-08-01T00:00:00Z", ts("2026-09-01T11:59:59Z")},  // pruned
		{"sent-edge", "sent", "2026-08-01T00:00:00Z", ts("2026-09-01T12:00:00Z")}, // kept
		{"cancelled-old", "cancelled", "2026-08-31T00:00:00Z", nil},               // pruned
		{"cancelled-new", "cancelled", "2026-10-01T00:00:00Z", nil},               // kept
		{"queued-old", "queued", "2026-01-01T00:00:00Z", nil},                     // kept: not finished
		{"failed-old", "failed", "2026-01-01T00:00:00Z", nil},                     // kept: an operator's
		{"sending-old", "sending", "2026-01-01T00:00:00Z", nil},                   // kept: an operator's
		{"suppressed-old", "suppressed", "2026-01-01T00:00:00Z", nil},             // kept
		{"sent-late", "sent", "2026-05-01T00:00:00Z", ts("2026-10-01T00:00:00Z")}, // kept: dated by sent_at
	} {
		exec(t, db, `INSERT INTO mail_outbox (dedupe_key, recipient, subject, body_text, body_html, status, next_attempt_at, sent_at, created_at)
VALUES (?, 'a@example.com', 's', 't', 'h', ?, ?, ?, ?)`, m.key, m.status, ts(m.created), m.sent, ts(m.created))
	}

	for _, r := range []struct{ id, job, status, started string }{
		{"01A0000000000000000000OLD1", "billing", "ok", "2026-06-03T11:59:59Z"},      // pruned
		{"01A0000000000000000000OLD2", "abuse", "running", "2026-01-01T00:00:00Z"},   // pruned: a killed run
		{"01A0000000000000000000EDGE", "billing", "ok", "2026-06-03T12:00:00Z"},      // kept
		{"01Z0000000000000000000NEW1", "drip", "failed", "2026-11-29T00:00:00Z"},     // kept
		{"0000000000000000000000OUTQ", "billing", "partial", "2026-11-01T00:00:00Z"}, // kept, below every key
	} {
		exec(t, db, `INSERT INTO job_runs (id, job, host, version, args, started_at, status) VALUES (?, ?, 'h', 'v', '', ?, ?)`,
			r.id, r.job, ts(r.started), r.status)
	}

	// The audit trail, older than every retention.
	exec(t, db, `INSERT INTO invoices (account_id, period_start, currency, subtotal, total_minor, status, created_at)
VALUES (1, '2025-01-01', 'USD', 1, 100, 'paid', '2025-02-01')`)
	exec(t, db, `INSERT INTO invoice_lines (invoice_id, kind, product, quantity, amount) VALUES (1, 'usage', 'instance.small', 1, 1)`)
	exec(t, db, `INSERT INTO payments (invoice_id, account_id, attempt, idempotency_key, amount_minor, currency, status, created_at, updated_at)
VALUES (1, 1, 1, 'cronkit-invoice-1-attempt-1', 100, 'USD', 'succeeded', '2025-02-02', '2025-02-02')`)
	exec(t, db, `INSERT INTO case_transitions (case_id, case_version, account_id, machine, from_state, to_state, event, reason, evidence, actor, at)
VALUES (1, 1, 1, 'dunning', 'good', 'reminded', 'remind', 'late', '{}', 'cronkit', '2025-01-01')`)
}

// auditTables are never pruned; their checksums must not move.
var auditTables = []string{"invoices", "invoice_lines", "payments", "credit_applications", "charges", "usage_records",
	"case_transitions", "cases", "case_actions", "abuse_cases", "abuse_transitions", "abuse_actions",
	"reconcile_findings", "reconcile_finding_events", "payment_refunds", "payment_disputes", "mail_suppressions", "accounts"}

// snapshot is the keys left in the pruned tables and every audit table's checksum.
func snapshot(t *testing.T, db *sql.DB) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		`SELECT usage_id FROM cloudstack_usage WHERE usage_id NOT LIKE 'u-feb-%' ORDER BY usage_id`,
		`SELECT CONCAT('feb:', COUNT(*)) FROM cloudstack_usage WHERE usage_id LIKE 'u-feb-%'`,
		`SELECT CONCAT(account_id, '@', DATE_FORMAT(sampled_at, '%Y-%m-%dT%H:%i:%s.%f')) FROM abuse_cpu_samples WHERE account_id < 100 ORDER BY 1`,
		`SELECT CONCAT('old samples:', COUNT(*)) FROM abuse_cpu_samples WHERE account_id >= 100`,
		`SELECT dedupe_key FROM mail_outbox ORDER BY dedupe_key`,
		`SELECT id FROM job_runs ORDER BY id`,
	} {
		rows, err := db.Query(q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			b.WriteString(s + "\n")
		}
		rows.Close()
	}
	for _, tbl := range auditTables {
		var name string
		var sum sql.NullInt64
		if err := db.QueryRow("CHECKSUM TABLE "+tbl).Scan(&name, &sum); err != nil {
			t.Fatalf("checksum %s: %v", tbl, err)
		}
		fmt.Fprintf(&b, "%s %d\n", tbl, sum.Int64)
	}
	return b.String()
}

func runPrune(t *testing.T, db *sql.DB, cfg Config) *run.Report {
	t.Helper()
	rep, err := (&Job{DB: db, Config: cfg, Now: func() time.Time { return now }}).Run(context.Background())
	if err != nil {
		t.Fatalf("prune: %v", err)
	}
	return rep
}

func testConfig() Config {
	c := DefaultConfig()
	c.Batch, c.Pause = 2, 0
	return c
}

func TestPruneRetentionBoundariesAuditUntouchedIdempotent(t *testing.T) {
	db := mysqltest.New(t)
	seedWorld(t, db.DB)
	before := snapshot(t, db.DB)

	dry := testConfig()
	dry.DryRun = true
	plan := runPrune(t, db.DB, dry)
	if got := snapshot(t, db.DB); got != before {
		t.Fatalf("a dry run changed the tables:\n%s", got)
	}

	rep := runPrune(t, db.DB, testConfig())
	wantCounts := map[string]int64{"cloudstack_usage_pruned": 27, "abuse_cpu_samples_pruned": 26, "mail_outbox_pruned": 2, "job_runs_pruned": 2}
	for k, v := range wantCounts {
		if rep.Counts[k] != v {
			t.Errorf("count %s = %d, want %d (all: %v)", k, rep.Counts[k], v, rep.Counts)
		}
		if plan.Counts[k] != v {
			t.Errorf("dry run's count %s = %d, want %d", k, plan.Counts[k], v)
		}
	}
	after := snapshot(t, db.DB)
	want := `u-jun-first
u-mar-pending
u-nov
feb:0
2@2026-10-31T12:00:00.000000
3@2026-11-29T00:00:00.000000
old samples:0
cancelled-new
failed-old
queued-old
sending-old
sent-edge
sent-late
suppressed-old
0000000000000000000000OUTQ
01A0000000000000000000EDGE
01Z0000000000000000000NEW1
`
	if !strings.HasPrefix(after, want) {
		t.Fatalf("after the prune:\n%s\nwant the pruned tables:\n%s", after, want)
	}
	// The audit tables: identical checksums, and the seeded ones are not empty.
	if a, b := after[len(want):], before[strings.Index(before, "invoices "):]; a != b {
		t.Fatalf("audit tables changed:\nbefore:\n%s\nafter:\n%s", b, a)
	}
	for _, tbl := range []string{"invoices", "payments", "case_transitions", "charges"} {
		if strings.Contains(after, "\n"+tbl+" 0\n") {
			t.Fatalf("%s is empty: the audit check proves nothing", tbl)
		}
	}

	again := runPrune(t, db.DB, testConfig())
	for k := range wantCounts {
		if again.Counts[k] != 0 {
			t.Errorf("second run pruned %d from %s", again.Counts[k], k)
		}
	}
	if got := snapshot(t, db.DB); got != after {
		t.Fatalf("second run changed the tables:\n%s", got)
	}
}

// A month with a charge not on an invoice holds back the raw usage of that month and
// every later one, whatever the retention; so does rating's watermark.
func TestPruneUsageWaitsForRatingAndInvoicing(t *testing.T) {
	for _, tc := range []struct {
		name, setup string
		cutoff      time.Time
		kept        string
	}{
		{"uninvoiced March", `UPDATE charges SET invoice_id = NULL WHERE hour = '2026-03-01 00:00:00'`,
			ts("2026-03-01T00:00:00Z"), "u-apr-ignored,u-jun-first,u-mar-pending,u-may-last,u-nov"},
		{"rated to April", `UPDATE billing_state SET hour_watermark = '2026-04-20 00:00:00'`,
			ts("2026-04-01T00:00:00Z"), "u-apr-ignored,u-jun-first,u-mar-pending,u-may-last,u-nov"},
		{"nothing rated", `DELETE FROM billing_state`,
			time.Time{}, "u-apr-ignored,u-jun-first,u-mar-pending,u-may-last,u-nov"},
		{"retention 0 keeps all", ``, time.Time{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := mysqltest.New(t)
			seedWorld(t, db.DB)
			cfg := testConfig()
			if tc.setup != "" {
				exec(t, db.DB, tc.setup)
			} else {
				cfg.Usage = 0
			}
			rep := runPrune(t, db.DB, cfg)
			var kept string
			if err := db.QueryRow(`SELECT GROUP_CONCAT(usage_id ORDER BY usage_id) FROM cloudstack_usage WHERE usage_id NOT LIKE 'u-feb-%'`).Scan(&kept); err != nil {
				t.Fatal(err)
			}
			if cfg.Usage == 0 {
				if rep.Counts["cloudstack_usage_pruned"] != 0 || countAll(t, db.DB) != 30 {
					t.Fatalf("retention 0 pruned usage: %v", rep.Counts)
				}
				return
			}
			if kept != tc.kept {
				t.Fatalf("kept %s, want %s", kept, tc.kept)
			}
			for _, a := range rep.Actions {
				if a.Subject == "cloudstack_usage" && a.Field("before") != run.Time("", tc.cutoff).Value {
					t.Fatalf("cut-off %v, want %s (%s)", a.Field("before"), tc.cutoff, a.Detail)
				}
			}
		})
	}
}

func countAll(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM cloudstack_usage`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A prune stops between batches when its run is cancelled, and the next run finishes
// the job.
func TestPruneStopsBetweenBatchesAndResumes(t *testing.T) {
	db := mysqltest.New(t)
	seedWorld(t, db.DB)
	ctx, cancel := context.WithCancelCause(context.Background())
	cfg := testConfig()
	cfg.Pause = 20 * time.Millisecond
	go func() { time.Sleep(30 * time.Millisecond); cancel(run.ErrInterrupted) }()
	_, err := (&Job{DB: db.DB, Config: cfg, Now: func() time.Time { return now }}).Run(ctx)
	if err == nil {
		t.Fatal("a cancelled prune returned no error")
	}
	rep := runPrune(t, db.DB, testConfig())
	if n := countAll(t, db.DB); n != 3 {
		t.Fatalf("after the resumed prune %d raw records remain, want 3 (%v)", n, rep.Counts)
	}
}
