package billing

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/run"
)

var april = time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC)

func credit(t *testing.T, db *sql.DB, acct int64, amount, currency, reason string, granted time.Time, expires *time.Time) int64 {
	t.Helper()
	res, err := db.Exec(`INSERT INTO credits (account_id, amount, currency, reason, granted_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)`,
		acct, amount, currency, reason, granted, expires)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := res.LastInsertId()
	return id
}

func ptr(t time.Time) *time.Time { return &t }

// closeWorld is March 2025 for four accounts: credits in every state, a yen
// account, and amounts whose cents only come out right when rounded once.
func closeWorld(t *testing.T, db *sql.DB) (credits map[string]int64) {
	t.Helper()
	account(t, db, 1, "USD", "cus_1")
	account(t, db, 2, "JPY", "cus_2")
	account(t, db, 3, "USD", "cus_3")
	account(t, db, 4, "USD", "cus_4")
	old := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	price(t, db, "instance.small", "USD", "0.01166700", old, nil)
	price(t, db, "instance.small", "JPY", "1.23456000", old, nil)
	price(t, db, "volume.gb", "USD", "0.50000000", old, nil)
	for h := 0; h < 3; h++ {
		usage(t, db, 1, "vm-1", "instance.small", hr(h), "1") // 3 x 0.011667 = 0.035001
	}
	usage(t, db, 1, "vol-1", "volume.gb", hr(5), "13") // 6.5
	for h := 0; h < 100; h++ {
		usage(t, db, 2, "vm-2", "instance.small", hr(h), "1") // 123.456 JPY
	}
	usage(t, db, 3, "vol-3", "volume.gb", hr(10), "0.25") // 0.125
	usage(t, db, 4, "vol-4", "volume.gb", hr(10), "0.25") // 0.125
	usage(t, db, 1, "vm-1", "instance.small", april.Add(3*time.Hour), "1")
	usage(t, db, 3, "vol-3", "volume.gb", april.Add(3*time.Hour), "1")
	credits = map[string]int64{
		"trial":    credit(t, db, 1, "5", "USD", "trial", time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC), ptr(time.Date(2025, 4, 10, 0, 0, 0, 0, time.UTC))),
		"goodwill": credit(t, db, 1, "1", "USD", "goodwill", old, nil),
		"expired":  credit(t, db, 1, "50", "USD", "trial", old, ptr(time.Date(2025, 2, 28, 0, 0, 0, 0, time.UTC))),
		"euro":     credit(t, db, 1, "50", "EUR", "goodwill", old, nil),
		"april":    credit(t, db, 1, "2", "USD", "goodwill", time.Date(2025, 4, 2, 0, 0, 0, 0, time.UTC), nil),
		"acct3":    credit(t, db, 3, "10", "USD", "trial", time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC), nil),
		"soonest":  credit(t, db, 1, "0.5", "USD", "goodwill", time.Date(2025, 3, 5, 0, 0, 0, 0, time.UTC), ptr(time.Date(2025, 3, 20, 0, 0, 0, 0, time.UTC))),
	}
	return credits
}

type invoiceRow struct {
	account       int64
	period        string
	currency      string
	subtotal      string
	creditApplied string
	totalMinor    int64
	status        string
	collection    string
}

func loadInvoices(t *testing.T, db *sql.DB) map[string]invoiceRow {
	t.Helper()
	rows, err := db.Query(`SELECT account_id, DATE_FORMAT(period_start, '%Y-%m'), currency, subtotal, credit_applied, total_minor, status, collection FROM invoices`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]invoiceRow{}
	for rows.Next() {
		var r invoiceRow
		if err := rows.Scan(&r.account, &r.period, &r.currency, &r.subtotal, &r.creditApplied, &r.totalMinor, &r.status, &r.collection); err != nil {
			t.Fatal(err)
		}
		out[fmt.Sprintf("%d %s", r.account, r.period)] = r
	}
	return out
}

// dump renders a query's rows, one line each, for comparing whole tables.
func dump(t *testing.T, db *sql.DB, q string, args ...any) string {
	t.Helper()
	rows, err := db.Query(q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var b strings.Builder
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		for i, v := range vals {
			if i > 0 {
				b.WriteString(" ")
			}
			b.WriteString(nullStr(v))
		}
		b.WriteString("\n")
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func rateAndClose(t *testing.T, db *sql.DB, now time.Time, cfg Config) (*Job, string) {
	t.Helper()
	j := &Job{DB: db, Now: at(now), Config: cfg}
	if _, err := j.Rate(testCtx()); err != nil {
		t.Fatal(err)
	}
	rep, err := j.Close(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	_ = rep.WriteText(&b)
	return j, b.String()
}

func TestCloseInvoicesWithCreditsAndRoundsOnce(t *testing.T) {
	db := newDB(t)
	cr := closeWorld(t, db.DB)
	closeAt := april.Add(20 * time.Minute)
	_, text := rateAndClose(t, db.DB, closeAt, Config{NetDays: 14})

	want := map[string]invoiceRow{
		// 6.535001 - (0.5 soonest-expiring + 5 trial + 1 goodwill) = 0.035001 -> 4 cents,
		// where rounding each hour's charge to cents would have made 3.
		"1 2025-03": {1, "2025-03", "USD", "6.535001", "6.500000", 4, "open", "pending"},
		"2 2025-03": {2, "2025-03", "JPY", "123.456000", "0.000000", 123, "open", "pending"},
		// 0.125 of a 10.00 credit: paid by credit, 9.875 carried over.
		"3 2025-03": {3, "2025-03", "USD", "0.125000", "0.125000", 0, "paid", "succeeded"},
		// 0.125 rounds half up to 13 cents.
		"4 2025-03": {4, "2025-03", "USD", "0.125000", "0.000000", 13, "open", "pending"},
	}
	if got := loadInvoices(t, db.DB); !reflect.DeepEqual(got, want) {
		t.Fatalf("invoices:\n got %+v\nwant %+v\n%s", got, want, text)
	}
	lines := dump(t, db.DB, `SELECT i.account_id, l.kind, l.product, l.quantity, l.amount FROM invoice_lines l
JOIN invoices i ON i.id = l.invoice_id ORDER BY i.account_id, l.kind, l.product`)
	wantLines := fmt.Sprintf(`1 usage instance.small 3.000000 0.035001
1 usage volume.gb 13.000000 6.500000
1 credit credit:%d 1.000000 -5.000000
1 credit credit:%d 1.000000 -1.000000
1 credit credit:%d 1.000000 -0.500000
2 usage instance.small 100.000000 123.456000
3 usage volume.gb 0.250000 0.125000
3 credit credit:%d 1.000000 -0.125000
4 usage volume.gb 0.250000 0.125000
`, cr["trial"], cr["goodwill"], cr["soonest"], cr["acct3"])
	if lines != wantLines {
		t.Fatalf("lines:\n%s\nwant:\n%s", lines, wantLines)
	}
	// Every March charge is on its invoice; April's are not.
	if n := dump(t, db.DB, `SELECT COUNT(*) FROM charges c JOIN invoices i ON i.id = c.invoice_id AND i.account_id = c.account_id
WHERE c.hour < ?`, april); n != "106\n" {
		t.Fatalf("charges on invoices: %s", n)
	}
	if n := dump(t, db.DB, `SELECT COUNT(*) FROM charges WHERE invoice_id IS NULL AND hour < ?`, april); n != "0\n" {
		t.Fatalf("March charges left off: %s", n)
	}
	if due := dump(t, db.DB, `SELECT DISTINCT DATE_FORMAT(due_at, '%Y-%m-%d %H:%i') FROM invoices WHERE status = 'open'`); due != "2025-04-15 00:20\n" {
		t.Fatalf("due_at %s", due)
	}

	// Close again, at once and later: never a second invoice.
	for _, now := range []time.Time{closeAt, closeAt.Add(48 * time.Hour)} {
		rep, err := (&Job{DB: db.DB, Now: at(now)}).Close(testCtx())
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Actions) != 0 || len(rep.Problems) != 0 {
			t.Fatalf("second close did something: %+v %+v", rep.Actions, rep.Problems)
		}
	}

	// April: the credit granted in April pays account 1, account 3's carried-over
	// credit pays its April.
	rateAndClose(t, db.DB, time.Date(2025, 5, 1, 0, 20, 0, 0, time.UTC), Config{})
	got := loadInvoices(t, db.DB)
	if g := got["1 2025-04"]; g.creditApplied != "0.011667" || g.totalMinor != 0 || g.status != "paid" {
		t.Fatalf("account 1 April: %+v", g)
	}
	if g := got["3 2025-04"]; g.creditApplied != "0.500000" || g.totalMinor != 0 {
		t.Fatalf("account 3 April: %+v", g)
	}
	apps := dump(t, db.DB, `SELECT credit_id, SUM(amount) FROM credit_applications GROUP BY credit_id ORDER BY credit_id`)
	wantApps := fmt.Sprintf("%d 5.000000\n%d 1.000000\n%d 0.011667\n%d 0.625000\n%d 0.500000\n",
		cr["trial"], cr["goodwill"], cr["april"], cr["acct3"], cr["soonest"])
	if apps != wantApps {
		t.Fatalf("credit applications:\n%s\nwant\n%s", apps, wantApps)
	}
}

func TestCloseWaitsUntilTheMonthIsRated(t *testing.T) {
	db := newDB(t)
	closeWorld(t, db.DB)
	early := april.Add(5 * time.Minute) // settle delay: 23:00 is not rated yet
	j := &Job{DB: db.DB, Now: at(early)}
	if _, err := j.Rate(testCtx()); err != nil {
		t.Fatal(err)
	}
	rep, err := j.Close(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Counts["months_waiting"] != 1 || len(loadInvoices(t, db.DB)) != 0 || len(rep.Problems) != 0 {
		t.Fatalf("closed an unrated month: %+v %+v", rep.Counts, rep.Problems)
	}
	j.Config.Month = t0
	rep, err = j.Close(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	if !hasProblem(rep, "month_not_rated", "period 2025-03") {
		t.Fatalf("explicit month: %+v", rep.Problems)
	}
	j.Config.Month = april
	if _, err := j.Close(testCtx()); err == nil || !strings.Contains(err.Error(), "has not ended") {
		t.Fatalf("closing the current month: %v", err)
	}
}

func TestCloseOneAccountAndOneMonth(t *testing.T) {
	db := newDB(t)
	closeWorld(t, db.DB)
	may := time.Date(2025, 5, 1, 0, 20, 0, 0, time.UTC)
	if _, err := (&Job{DB: db.DB, Now: at(may)}).Rate(testCtx()); err != nil {
		t.Fatal(err)
	}
	rep, err := (&Job{DB: db.DB, Now: at(may), Config: Config{Account: 4, Month: t0}}).Close(testCtx())
	if err != nil || len(rep.Actions) != 1 {
		t.Fatalf("close: %v %+v", err, rep.Actions)
	}
	got := loadInvoices(t, db.DB)
	if len(got) != 1 || got["4 2025-03"].totalMinor != 13 {
		t.Fatalf("invoices %+v", got)
	}
}

func TestLateUsageAfterCloseIsReportedNotBilled(t *testing.T) {
	db := newDB(t)
	closeWorld(t, db.DB)
	rateAndClose(t, db.DB, april.Add(20*time.Minute), Config{})
	before := dump(t, db.DB, `SELECT account_id, product, hour, quantity, amount, invoice_id FROM charges ORDER BY id`)
	usage(t, db.DB, 4, "vol-late", "volume.gb", hr(10), "1")     // existing key, invoiced
	usage(t, db.DB, 4, "vm-late", "instance.small", hr(11), "1") // new key in the invoiced month
	rep, err := (&Job{DB: db.DB, Now: at(april.Add(80 * time.Minute))}).Rate(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"account 4 volume.gb 2025-03-01T10:00Z", "account 4 instance.small 2025-03-01T11:00Z"} {
		if !hasProblem(rep, "late_usage_after_close", s) {
			t.Errorf("%s not reported:\n%s", s, problems(rep))
		}
	}
	if !strings.Contains(problems(rep), "period 2025-03 is invoiced; quantity 0.250000 -> 1.250000, amount USD 0.125000 -> USD 0.625000 not billed") {
		t.Errorf("detail:\n%s", problems(rep))
	}
	after := dump(t, db.DB, `SELECT account_id, product, hour, quantity, amount, invoice_id FROM charges ORDER BY id`)
	if before != after {
		t.Fatalf("charges of an invoiced month changed:\n%s\n%s", before, after)
	}
}

func TestCloseDryRunPlansTheRealClose(t *testing.T) {
	db := newDB(t)
	closeWorld(t, db.DB)
	j := &Job{DB: db.DB, Now: at(april.Add(20 * time.Minute))}
	if _, err := j.Rate(testCtx()); err != nil {
		t.Fatal(err)
	}
	ro, err := mysql.Open(context.Background(), db.SelectOnlyUser(t), mysql.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	plan, err := (&Job{DB: ro, Now: j.Now, Config: Config{DryRun: true}}).Close(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(loadInvoices(t, db.DB)); n != 0 {
		t.Fatalf("dry run wrote %d invoices", n)
	}
	real, err := j.Close(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	plan.Sort()
	real.Sort()
	id := regexp.MustCompile(`; invoice \d+$`)
	if len(plan.Actions) != 4 || len(plan.Actions) != len(real.Actions) {
		t.Fatalf("plan %+v\nreal %+v", plan.Actions, real.Actions)
	}
	for i := range plan.Actions {
		// The plan is the run without the invoice's id, in the detail and the fields.
		r := real.Actions[i]
		r.Detail = id.ReplaceAllString(r.Detail, "")
		if r.Field("invoice_id") == nil {
			t.Errorf("real run's invoice action has no invoice_id: %+v", r)
		}
		var fields []run.Field
		for _, f := range r.Fields {
			if f.Key != "invoice_id" {
				fields = append(fields, f)
			}
		}
		r.Fields = fields
		if !reflect.DeepEqual(plan.Actions[i], r) {
			t.Errorf("plan %+v\nreal %+v", plan.Actions[i], r)
		}
	}
	if !reflect.DeepEqual(plan.Counts, real.Counts) {
		t.Errorf("counts: plan %v real %v", plan.Counts, real.Counts)
	}
}
