package billing

import (
	"context"
	"database/sql"
	"fmt"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/orchestrator/fakecloudstack"
	"github.com/cronkit/cronkit/lib/payment"
	"github.com/cronkit/cronkit/lib/run"
)

// The collect tests run against the real MariaDB and the fake CloudStack: a cloud
// with two CloudStack accounts, acme (our account 1) and beta (unknown to us until
// a test adds it).

const testProducts = `
[[product]]
usage_type  = 1
offering_id = "offering-small"
product     = "instance.small"
quantity    = "hours"

[[product]]
usage_type = 6
product    = "volume.gb"
quantity   = "gib_hours"

[[product]]
usage_type = 3
product    = "ip.public"
quantity   = "hours"

[[ignore]]
usage_type = 2
`

// day is March 2nd 2025, in the tests' March (t0 is March 1st).
var day = t0.Add(24 * time.Hour)

type collectWorld struct {
	t     *testing.T
	db    *sql.DB
	fake  *fakecloudstack.Server
	usage *orchestrator.Client
	clock time.Time
	prod  *Products
}

func newCollectWorld(t *testing.T) *collectWorld {
	t.Helper()
	db := newDB(t)
	w := &collectWorld{t: t, db: db.DB, fake: fakecloudstack.New()}
	w.fake.AddCredential("KEY", "SECRET")
	w.clock = day.Add(9 * time.Hour)
	w.fake.Now = func() time.Time { return w.clock }
	srv := httptest.NewServer(w.fake.Handler())
	t.Cleanup(srv.Close)
	var err error
	if w.usage, err = orchestrator.New(orchestrator.Config{APIURL: srv.URL + "/client/api", APIKey: "KEY", SecretKey: "SECRET", Timeout: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if w.prod, err = ParseProducts([]byte(testProducts)); err != nil {
		t.Fatal(err)
	}
	for _, a := range []fakecloudstack.Account{{ID: "cs-acme", Name: "acme"}, {ID: "cs-beta", Name: "beta"}} {
		if _, err := w.fake.AddAccount(a); err != nil {
			t.Fatal(err)
		}
	}
	account(t, w.db, 1, "USD", "")
	execSQL(t, w.db, `UPDATE accounts SET cloudstack_account_id = 'cs-acme' WHERE id = 1`)
	// acme: a VM since 09:30 (stopped at 11:15), a 10 GiB volume and an IP since 09:00.
	w.clock = day.Add(9*time.Hour + 30*time.Minute)
	w.mustVM(fakecloudstack.VM{ID: "vm-1", AccountID: "cs-acme", ServiceOfferingID: "offering-small"})
	if _, err := w.fake.AddVolume(fakecloudstack.Volume{ID: "vol-1", AccountID: "cs-acme", SizeBytes: 10 << 30, Created: day.Add(9 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.fake.AddPublicIP(fakecloudstack.PublicIP{ID: "ip-1", AccountID: "cs-acme", Allocated: day.Add(9 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	w.clock = day.Add(11*time.Hour + 15*time.Minute)
	if err := w.usage.StopVM(context.Background(), "vm-1"); err != nil {
		t.Fatal(err)
	}
	w.clock = day.Add(13*time.Hour + 5*time.Minute) // the usage server has done 09:00-12:00
	return w
}

func (w *collectWorld) mustVM(v fakecloudstack.VM) {
	w.t.Helper()
	if _, err := w.fake.AddVM(v); err != nil {
		w.t.Fatal(err)
	}
}

func (w *collectWorld) job(dryRun bool) *Job {
	return &Job{DB: w.db, Usage: w.usage, Config: Config{Products: w.prod, DryRun: dryRun}, Now: at(w.clock)}
}

func (w *collectWorld) collect() *run.Report {
	w.t.Helper()
	rep, err := w.job(false).Collect(testCtx())
	if err != nil {
		w.t.Fatalf("collect: %v\n%s", err, problems(rep))
	}
	return rep
}

// usageRows is usage_records as "resource product hour account quantity" lines.
func usageRows(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query(`SELECT resource_id, product, hour, account_id, quantity FROM usage_records ORDER BY hour, resource_id, product`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var res, product, qty string
		var h time.Time
		var acct int64
		if err := rows.Scan(&res, &product, &h, &acct, &qty); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %s %s %d %s", res, product, h.UTC().Format("15:04"), acct, qty))
	}
	return out
}

func recordedAt(t *testing.T, db *sql.DB) map[string]time.Time {
	t.Helper()
	rows, err := db.Query(`SELECT CONCAT(resource_id, ' ', product, ' ', hour), recorded_at FROM usage_records`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]time.Time{}
	for rows.Next() {
		var k string
		var at time.Time
		if err := rows.Scan(&k, &at); err != nil {
			t.Fatal(err)
		}
		out[k] = at
	}
	return out
}

func count(t *testing.T, db *sql.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func actions(rep *run.Report, kind string) []string {
	var out []string
	for _, a := range rep.Actions {
		if a.Kind == kind {
			out = append(out, a.Subject+": "+a.Detail)
		}
	}
	sort.Strings(out)
	return out
}

var wantDay = []string{
	"ip-1 ip.public 09:00 1 1.000000", "vol-1 volume.gb 09:00 1 10.000000",
	"vm-1 instance.small 09:00 1 0.500000",
	"ip-1 ip.public 10:00 1 1.000000", "vol-1 volume.gb 10:00 1 10.000000",
	"vm-1 instance.small 10:00 1 1.000000",
	"ip-1 ip.public 11:00 1 1.000000", "vol-1 volume.gb 11:00 1 10.000000",
	"vm-1 instance.small 11:00 1 0.250000",
	"ip-1 ip.public 12:00 1 1.000000", "vol-1 volume.gb 12:00 1 10.000000",
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

func TestCollectWritesOnceAndAReadAgainChangesNothing(t *testing.T) {
	w := newCollectWorld(t)
	rep := w.collect()
	if got := sorted(usageRows(t, w.db)); strings.Join(got, "\n") != strings.Join(sorted(wantDay), "\n") {
		t.Fatalf("usage_records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(sorted(wantDay), "\n"))
	}
	// 4 hours x (IP + volume + allocated VM) + 3 running hours; allocated is ignored.
	if rep.Counts["records_new"] != 15 || rep.Counts["records_collected"] != 11 || rep.Counts["records_ignored"] != 4 ||
		rep.Counts["usage_rows_new"] != 11 || len(rep.Problems) != 0 {
		t.Fatalf("first run counts %v, problems %s", rep.Counts, problems(rep))
	}
	if got := actions(rep, "usage"); len(got) != 4 || got[0] != "hour 2025-03-02T09:00Z: 3 new, 0 changed: instance.small 1 +0.500000, ip.public 1 +1.000000, volume.gb 1 +10.000000" {
		t.Errorf("usage actions: %q", got)
	}
	if got := actions(rep, "coverage"); len(got) != 1 || got[0] != "usage: complete to 2025-03-02T13:00Z (the usage server's last successful job)" {
		t.Errorf("coverage: %q", got)
	}
	before := recordedAt(t, w.db)
	var changedAt time.Time
	if err := w.db.QueryRow(`SELECT MAX(changed_at) FROM cloudstack_usage`).Scan(&changedAt); err != nil {
		t.Fatal(err)
	}

	w.clock = w.clock.Add(10 * time.Minute)
	rep = w.collect()
	if rep.Counts["records_unchanged"] != 15 || rep.Counts["records_new"] != 0 || rep.Counts["usage_rows_new"] != 0 ||
		rep.Counts["usage_rows_changed"] != 0 || len(actions(rep, "usage")) != 0 {
		t.Fatalf("second run wrote: %v %q", rep.Counts, actions(rep, "usage"))
	}
	after := recordedAt(t, w.db)
	for k, at := range before {
		if !after[k].Equal(at) {
			t.Errorf("%s: recorded_at moved from %v to %v on a re-read", k, at, after[k])
		}
	}
	var changedAfter time.Time
	if err := w.db.QueryRow(`SELECT MAX(changed_at) FROM cloudstack_usage`).Scan(&changedAfter); err != nil || !changedAfter.Equal(changedAt) {
		t.Errorf("raw records changed on a re-read: %v -> %v (%v)", changedAt, changedAfter, err)
	}
	if n := count(t, w.db, `SELECT COUNT(*) FROM cloudstack_usage`); n != 15 {
		t.Errorf("raw records %d, want 15", n)
	}
}

func TestCollectDuplicatesAreCountedNeverSummed(t *testing.T) {
	w := newCollectWorld(t)
	w.fake.DuplicateUsageHour(day.Add(10 * time.Hour))
	rep := w.collect()
	if got := sorted(usageRows(t, w.db)); strings.Join(got, "\n") != strings.Join(sorted(wantDay), "\n") {
		t.Fatalf("duplicates reached usage_records:\n%s", strings.Join(got, "\n"))
	}
	dups := actions(rep, "duplicate")
	if rep.Counts["records_duplicate"] != 4 || len(dups) != 4 || !strings.Contains(dups[0], "listed 2 times; kept once") {
		t.Fatalf("duplicates reported: %v %q", rep.Counts["records_duplicate"], dups)
	}
	for _, a := range rep.Actions {
		if a.Kind == "duplicate" && (a.Field("usage_id") == nil || a.Field("start") != "2025-03-02T10:00:00Z") {
			t.Errorf("duplicate action lacks its fields: %+v", a)
		}
	}
	if n := count(t, w.db, `SELECT COUNT(*) FROM cloudstack_usage WHERE duplicates = 1 AND start_date = ?`, day.Add(10*time.Hour)); n != 4 {
		t.Errorf("raw rows marked as duplicated: %d, want 4", n)
	}
	// Read again: still no double billing.
	w.collect()
	if got := sorted(usageRows(t, w.db)); strings.Join(got, "\n") != strings.Join(sorted(wantDay), "\n") {
		t.Fatalf("after a re-read:\n%s", strings.Join(got, "\n"))
	}
}

func TestCollectChangedRecordIsAnUpdate(t *testing.T) {
	w := newCollectWorld(t)
	daily := fakecloudstack.UsageRecord{AccountID: "cs-acme", UsageID: "vm-9", UsageType: 1, OfferingID: "offering-small",
		Start: day, End: day.Add(24*time.Hour - time.Second), RawUsage: "24"}
	w.fake.SetUsageProcessed(day.Add(24 * time.Hour))
	w.clock = day.Add(24*time.Hour + 30*time.Minute)
	if err := w.fake.AddUsageRecord(daily); err != nil {
		t.Fatal(err)
	}
	rep := w.collect()
	if rep.Counts["records_longer_than_an_hour"] != 1 {
		t.Errorf("long records counted %d, want 1", rep.Counts["records_longer_than_an_hour"])
	}
	if n := count(t, w.db, `SELECT COUNT(*) FROM usage_records WHERE resource_id = 'vm-9' AND hour = ? AND quantity = 24`, day); n != 1 {
		t.Fatalf("a daily record is kept whole on its start hour: %q", usageRows(t, w.db))
	}
	var start, end time.Time
	if err := w.db.QueryRow(`SELECT start_date, end_date FROM cloudstack_usage WHERE usage_id = 'vm-9'`).Scan(&start, &end); err != nil ||
		!start.Equal(day) || !end.Equal(daily.End) {
		t.Errorf("raw keeps the real span: %v %v %v", start, end, err)
	}
	before := recordedAt(t, w.db)

	time.Sleep(5 * time.Millisecond) // recorded_at is the database's clock
	daily.RawUsage = "12.5"
	if err := w.fake.AddUsageRecord(daily); err != nil {
		t.Fatal(err)
	}
	rep = w.collect()
	ups := actions(rep, "update")
	if rep.Counts["records_changed"] != 1 || len(ups) != 1 || ups[0] != "usage vm-9: type 1 2025-03-02T00:00Z: rawusage 24 -> 12.5, size 0 -> 0" {
		t.Fatalf("changed record: %v %q", rep.Counts, ups)
	}
	if got := actions(rep, "usage"); len(got) != 1 || got[0] != "hour 2025-03-02T00:00Z: 0 new, 1 changed: instance.small 1 -11.500000" {
		t.Errorf("usage actions after the change: %q", got)
	}
	after := recordedAt(t, w.db)
	for k, at := range before {
		moved := !after[k].Equal(at)
		if want := strings.HasPrefix(k, "vm-9 "); moved != want {
			t.Errorf("%s: recorded_at moved %t, want %t", k, moved, want)
		}
	}
	if n := count(t, w.db, `SELECT COUNT(*) FROM usage_records WHERE resource_id = 'vm-9' AND quantity = 12.5`); n != 1 {
		t.Fatalf("correction not applied: %q", usageRows(t, w.db))
	}
	if n := count(t, w.db, `SELECT COUNT(*) FROM cloudstack_usage WHERE usage_id = 'vm-9'`); n != 1 {
		t.Errorf("a changed record is one raw row, updated; got %d", n)
	}
}

func TestCollectUnknownAccountIsKeptThenCollected(t *testing.T) {
	w := newCollectWorld(t)
	w.clock = day.Add(9*time.Hour + 30*time.Minute)
	w.mustVM(fakecloudstack.VM{ID: "vm-beta", AccountID: "cs-beta", ServiceOfferingID: "offering-small"})
	w.clock = day.Add(13*time.Hour + 5*time.Minute)
	rep := w.collect()
	if !hasProblem(rep, problemUnknownAccount, "cloudstack account cs-beta") || len(rep.Problems) != 1 {
		t.Fatalf("problems: %s", problems(rep))
	}
	p := rep.Problems[0]
	if p.Field("records") != int64(4) || p.Field("cloudstack_account_id") != "cs-beta" || p.Field("account") != "beta" {
		t.Errorf("problem fields: %+v", p.Fields)
	}
	if n := count(t, w.db, `SELECT COUNT(*) FROM cloudstack_usage WHERE status = 'pending' AND problem = 'unknown_account'`); n != 4 {
		t.Fatalf("pending raw records %d, want 4 (running hours of vm-beta; allocated is ignored)", n)
	}
	if n := count(t, w.db, `SELECT COUNT(*) FROM usage_records WHERE resource_id = 'vm-beta'`); n != 0 {
		t.Fatal("usage of an unknown account reached usage_records")
	}
	// Still unknown: reported again, nothing written.
	rep = w.collect()
	if !hasProblem(rep, problemUnknownAccount, "cloudstack account cs-beta") || rep.Counts["records_still_pending"] != 4 {
		t.Fatalf("second run: %v %s", rep.Counts, problems(rep))
	}
	// The account arrives: the next run collects it.
	account(t, w.db, 2, "EUR", "")
	execSQL(t, w.db, `UPDATE accounts SET cloudstack_account_id = 'cs-beta' WHERE id = 2`)
	rep = w.collect()
	if len(rep.Problems) != 0 || rep.Counts["records_resolved"] != 4 {
		t.Fatalf("after the account exists: %v %s", rep.Counts, problems(rep))
	}
	if n := count(t, w.db, `SELECT COUNT(*) FROM usage_records WHERE resource_id = 'vm-beta' AND account_id = 2`); n != 4 {
		t.Fatalf("vm-beta's usage: %q", usageRows(t, w.db))
	}
}

func TestCollectUnmappedOfferingAndUnknownTypeWaitForTheMapping(t *testing.T) {
	w := newCollectWorld(t)
	w.clock = day.Add(9*time.Hour + 30*time.Minute)
	w.mustVM(fakecloudstack.VM{ID: "vm-big", AccountID: "cs-acme", ServiceOfferingID: "offering-big"})
	w.clock = day.Add(13*time.Hour + 5*time.Minute)
	if err := w.fake.AddUsageRecord(fakecloudstack.UsageRecord{AccountID: "cs-acme", UsageID: "snap-1", UsageType: 9,
		Start: day.Add(10 * time.Hour), End: day.Add(11*time.Hour - time.Second), RawUsage: "1", Size: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	rep := w.collect()
	if !hasProblem(rep, problemUnmappedOffering, "usage type 1 offering offering-big") || !hasProblem(rep, problemUnknownUsageType, "usage type 9") {
		t.Fatalf("problems: %s", problems(rep))
	}
	w.prod.Product = append(w.prod.Product, ProductRule{UsageType: 1, OfferingID: "offering-big", Product: "instance.big", Quantity: QuantityHours},
		ProductRule{UsageType: 9, Product: "snapshot.gb", Quantity: QuantityGiBHours})
	rep = w.collect()
	if len(rep.Problems) != 0 {
		t.Fatalf("after the mapping: %s", problems(rep))
	}
	if n := count(t, w.db, `SELECT COUNT(*) FROM usage_records WHERE product IN ('instance.big', 'snapshot.gb')`); n != 5 {
		t.Fatalf("newly mapped usage: %q", usageRows(t, w.db))
	}
}

func TestCollectBothDateFormatsGiveTheSameRows(t *testing.T) {
	plain := newCollectWorld(t)
	plain.collect()
	quoted := newCollectWorld(t)
	quoted.fake.SetUsageQuotedT(true)
	quoted.collect()
	a, b := usageRows(t, plain.db), usageRows(t, quoted.db)
	if strings.Join(a, "\n") != strings.Join(b, "\n") || len(a) != len(wantDay) {
		t.Fatalf("plain dates:\n%s\nquoted T:\n%s", strings.Join(a, "\n"), strings.Join(b, "\n"))
	}
	var start time.Time
	if err := quoted.db.QueryRow(`SELECT MIN(start_date) FROM cloudstack_usage`).Scan(&start); err != nil || !start.Equal(day.Add(9*time.Hour)) {
		t.Errorf("raw start in UTC: %q %v", start, err)
	}
}

func TestCollectDryRunPlansWhatTheRunWrites(t *testing.T) {
	w := newCollectWorld(t)
	w.fake.DuplicateUsageHour(day.Add(10 * time.Hour))
	plan, err := w.job(true).Collect(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"usage_records", "cloudstack_usage", "usage_collect_state"} {
		if n := count(t, w.db, `SELECT COUNT(*) FROM `+table); n != 0 {
			t.Fatalf("dry run wrote %d rows to %s", n, table)
		}
	}
	rep := w.collect()
	if strings.Join(shape(plan), "\n") != strings.Join(shape(rep), "\n") {
		t.Fatalf("plan:\n%s\nrun:\n%s", strings.Join(shape(plan), "\n"), strings.Join(shape(rep), "\n"))
	}
	if strings.Join(actions(plan, "usage"), "\n") != strings.Join(actions(rep, "usage"), "\n") {
		t.Errorf("plan's usage lines differ:\n%q\n%q", actions(plan, "usage"), actions(rep, "usage"))
	}
}

func TestCloseWaitsForCollectCoverage(t *testing.T) {
	w := newCollectWorld(t)
	// February is rated to its end, but collect has only covered to Feb 28th 22:00.
	price(t, w.db, "instance.small", "USD", "0.5", t0.AddDate(0, -1, 0), nil)
	usage(t, w.db, 1, "vm-old", "instance.small", t0.Add(-2*time.Hour), "1")
	execSQL(t, w.db, `INSERT INTO billing_state (name, hour_watermark, updated_at) VALUES ('rating', ?, ?)`, t0.Add(-time.Hour), t0)
	execSQL(t, w.db, `INSERT INTO charges (account_id, product, hour, quantity, unit_price, amount, currency, status, rated_at)
VALUES (1, 'instance.small', ?, 1, 0.5, 0.5, 'USD', 'rated', ?)`, t0.Add(-2*time.Hour), t0)
	execSQL(t, w.db, `INSERT INTO usage_collect_state (name, coverage, read_to, updated_at) VALUES ('cloudstack', ?, ?, ?)`,
		t0.Add(-2*time.Hour), t0, t0)
	j := &Job{DB: w.db, Now: at(day.Add(time.Hour))}
	rep, err := j.Close(testCtx())
	if err != nil || rep.Counts["months_waiting"] != 1 || count(t, w.db, `SELECT COUNT(*) FROM invoices`) != 0 {
		t.Fatalf("close before coverage: %v %v %s", err, rep.Counts, problems(rep))
	}
	j.Config.Month = t0.AddDate(0, -1, 0)
	rep, err = j.Close(testCtx())
	if err != nil || !hasProblem(rep, "month_not_collected", "period 2025-02") {
		t.Fatalf("explicit close before coverage: %v %s", err, problems(rep))
	}
	execSQL(t, w.db, `UPDATE usage_collect_state SET coverage = ?`, t0)
	j.Config.Month = time.Time{}
	if _, err := j.Close(testCtx()); err != nil || count(t, w.db, `SELECT COUNT(*) FROM invoices`) != 1 {
		t.Fatalf("close once covered: %v", err)
	}
}

func TestRunRatesWhenCloudStackCannotBeRead(t *testing.T) {
	w := newCollectWorld(t)
	w.collect()
	w.fake.FailNext("listUsageRecords", 10, 530)
	j := w.job(false)
	j.Now = at(day.Add(14 * time.Hour))
	j.Payments = payment.NewDryRun(nil) // nothing to charge: no month has ended
	rep, err := j.Run(testCtx())
	if err != nil || !hasProblem(rep, "collect_failed", "cloudstack usage") {
		t.Fatalf("run: %v\n%s", err, problems(rep))
	}
	// Rating still ran: the collected hours are charged (unpriced, as no price is set).
	if n := count(t, w.db, `SELECT COUNT(*) FROM charges WHERE hour = ?`, day.Add(9*time.Hour)); n != 3 {
		t.Fatalf("charges of 09:00: %d, want 3 (rating ran after collect failed)", n)
	}
}

// More records than a batch: full batches go through statements prepared once per
// run, a window's short last batch is sent as it is; every record must be stored
// once, and a second run must find every one unchanged.
func TestCollectFullBatchesStoreEveryRecordOnce(t *testing.T) {
	w := newCollectWorld(t)
	for i := range 60 {
		w.mustVM(fakecloudstack.VM{ID: fmt.Sprintf("vm-b%d", i), AccountID: "cs-acme", ServiceOfferingID: "offering-small"})
	}
	w.clock = w.clock.Add(24 * time.Hour)
	rep := w.collect()
	read := rep.Counts["records_read"]
	if read <= 2*writeBatch || rep.Counts["records_new"] != read {
		t.Fatalf("first run: counts %v, want over %d records read, all new", rep.Counts, 2*writeBatch)
	}
	var raw, collected, usage int64
	if err := w.db.QueryRow(`SELECT (SELECT COUNT(*) FROM cloudstack_usage),
  (SELECT COUNT(*) FROM cloudstack_usage WHERE status = 'collected'), (SELECT COUNT(*) FROM usage_records)`).Scan(&raw, &collected, &usage); err != nil {
		t.Fatal(err)
	}
	if raw != read || usage != collected || collected < 60*20 {
		t.Fatalf("%d raw rows (%d collected), %d usage rows; %d records read", raw, collected, usage, read)
	}
	again := w.collect()
	if again.Counts["records_unchanged"] != read || again.Counts["records_new"] != 0 || again.Counts["records_changed"] != 0 {
		t.Fatalf("second run: counts %v, want all %d unchanged", again.Counts, read)
	}
}
