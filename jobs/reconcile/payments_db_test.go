package reconcile

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
	"github.com/cronkit/cronkit/lib/payment"
	"github.com/cronkit/cronkit/lib/payment/fakestripe"
	"github.com/cronkit/cronkit/lib/run"
)

// The payments check on MariaDB against the fake Stripe: a world with one invoice per
// class, judged over March 2nd, 2026 on March 3rd at 03:00.

var (
	winFrom = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	winTo   = winFrom.AddDate(0, 0, 1)
	runAt   = winTo.Add(3 * time.Hour)
)

func hourOf(h int) time.Time { return winFrom.Add(time.Duration(h) * time.Hour) }

type world struct {
	t      *testing.T
	db     *mysqltest.DB
	fake   *fakestripe.Server
	stripe *payment.Client
	now    time.Time
	runs   int
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, db: mysqltest.New(t), fake: fakestripe.New("sk_test_reconcile"), now: runAt}
	w.fake.Now = func() time.Time { return w.now }
	srv := httptest.NewServer(w.fake.Handler())
	t.Cleanup(func() {
		w.fake.Close()
		srv.Close()
	})
	w.stripe = payment.New(payment.Config{APIKey: "sk_test_reconcile", BaseURL: srv.URL})
	return w
}

func (w *world) exec(q string, args ...any) {
	w.t.Helper()
	if _, err := w.db.Exec(q, args...); err != nil {
		w.t.Fatalf("%s: %v", q, err)
	}
}

// invoice writes an invoice of account (= id + 100) opened a month before the window.
func (w *world) invoice(id int64, currency string, total int64, status string, attempts int) {
	w.t.Helper()
	paid := int64(0)
	collection := "pending"
	if status == "paid" {
		paid, collection = total, "succeeded"
	}
	w.exec(`INSERT INTO invoices (id, account_id, period_start, currency, subtotal, total_minor, amount_paid_minor, status,
  created_at, opened_at, due_at, attempt_count, collection) VALUES (?, ?, '2026-02-01', ?, 0, ?, ?, ?, '2026-03-01', '2026-03-01', '2026-03-01', ?, ?)`,
		id, id+100, currency, total, paid, status, attempts, collection)
}

// payment writes attempt n of an invoice and returns its id.
func (w *world) payment(invoice int64, attempt int, amount int64, currency, status, pi string, created time.Time) int64 {
	w.t.Helper()
	var piArg any
	if pi != "" {
		piArg = pi
	}
	res, err := w.db.Exec(`INSERT INTO payments (invoice_id, account_id, attempt, idempotency_key, amount_minor, currency, status,
  provider_payment_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		invoice, invoice+100, attempt, idempotencyKey(invoice, attempt), amount, currency, status, piArg, created, created)
	if err != nil {
		w.t.Fatal(err)
	}
	id, _ := res.LastInsertId()
	return id
}

// intent seeds a PaymentIntent with cronkit's metadata for invoice and attempt.
func (w *world) intent(id string, invoice int64, attempt int, amount int64, currency, status string, created time.Time) string {
	w.t.Helper()
	pi, err := w.fake.AddPaymentIntent(fakestripe.PaymentIntent{ID: id, Amount: amount, Currency: currency, Status: status,
		Created: created, Metadata: map[string]string{"invoice_id": fmt.Sprint(invoice), "attempt": fmt.Sprint(attempt),
			"account_id": fmt.Sprint(invoice + 100)}})
	if err != nil {
		w.t.Fatal(err)
	}
	return pi
}

// paidInvoice is an invoice paid by one attempt in the window: no finding.
func (w *world) paidInvoice(id int64, currency string, total int64, created time.Time) string {
	w.t.Helper()
	w.invoice(id, currency, total, "paid", 1)
	pi := w.intent(fmt.Sprintf("pi_ok_%d", id), id, 1, total, currency, "succeeded", created.Add(time.Second))
	w.payment(id, 1, total, currency, "succeeded", pi, created)
	return pi
}

func (w *world) job(fix bool, dry bool) *Job {
	return &Job{DB: w.db.DB, Checks: []Check{&Payments{Stripe: w.stripe}}, Now: func() time.Time { return w.now },
		Config: Config{Window: Window{From: winFrom, To: winTo}, Grace: DefaultGrace, Fix: fix, DryRun: dry,
			TempDir: w.t.TempDir(), BillingLockWait: time.Second}}
}

func (w *world) run(fix bool) *run.Report {
	w.t.Helper()
	w.runs++
	ctx := run.WithInfo(context.Background(), run.Info{ID: fmt.Sprintf("RUN%02d", w.runs), Job: "reconcile"})
	rep, err := w.job(fix, false).Run(ctx)
	if err != nil {
		w.t.Fatalf("run %d: %v", w.runs, err)
	}
	return rep
}

// findings are the stored findings by class, "fingerprint state" each, sorted.
func (w *world) findings() map[string][]StoredFinding {
	w.t.Helper()
	s := &Store{DB: w.db.DB}
	out := map[string][]StoredFinding{}
	for f, err := range s.List(context.Background(), Filter{}) {
		if err != nil {
			w.t.Fatal(err)
		}
		out[f.Class] = append(out[f.Class], f)
	}
	return out
}

func (w *world) one(class string) StoredFinding {
	w.t.Helper()
	fs := w.findings()[class]
	if len(fs) != 1 {
		w.t.Fatalf("%s: %d findings, want 1: %+v\nall: %s", class, len(fs), fs, w.describe())
	}
	return fs[0]
}

func (w *world) describe() string {
	var lines []string
	for c, fs := range w.findings() {
		for _, f := range fs {
			lines = append(lines, fmt.Sprintf("%s %d %s: %s", c, f.ID, f.State, f.Detail))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// plant builds one class's world; cure removes the cause (not through --fix).
type classCase struct {
	class string
	plant func(w *world)
	// check looks at the finding.
	check func(t *testing.T, f StoredFinding)
	cure  func(w *world)
	// fixable: --fix repairs it (and then it is fixed, not resolved).
	fixable bool
	// also are other classes the plant produces (a drift, a duplicate's unrecorded twin).
	also []string
}

func classCases() []classCase {
	return []classCase{
		{class: ClassPaidNotRecorded, fixable: true, also: []string{ClassBalanceDrift},
			plant: func(w *world) {
				w.invoice(2, "EUR", 1230, "open", 1)
				w.payment(2, 1, 1230, "EUR", "pending", "", hourOf(10))
				w.intent("pi_lost", 2, 1, 1230, "eur", "succeeded", hourOf(10).Add(time.Second))
			},
			check: func(t *testing.T, f StoredFinding) {
				if f.InvoiceID != 2 || f.AccountID != 102 || f.PaymentIntent != "pi_lost" || f.Amount != "12.30" || f.Currency != "EUR" || !f.Fixable {
					t.Errorf("finding %+v", f)
				}
			},
			cure: func(w *world) {
				w.exec(`UPDATE payments SET status = 'succeeded', provider_payment_id = 'pi_lost' WHERE invoice_id = 2`)
				w.exec(`UPDATE invoices SET status = 'paid', amount_paid_minor = total_minor WHERE id = 2`)
			}},
		{class: ClassRecordedNotPaid, also: []string{ClassBalanceDrift},
			plant: func(w *world) {
				w.invoice(3, "USD", 500, "paid", 1)
				w.payment(3, 1, 500, "USD", "succeeded", "pi_declined", hourOf(11))
				w.intent("pi_declined", 3, 1, 500, "usd", "requires_payment_method", hourOf(11).Add(time.Second))
			},
			check: func(t *testing.T, f StoredFinding) {
				if f.InvoiceID != 3 || f.PaymentIntent != "pi_declined" || f.Amount != "5.00" || !strings.Contains(f.Detail, "requires_payment_method") {
					t.Errorf("finding %+v", f)
				}
			},
			cure: func(w *world) {
				w.exec(`UPDATE payments SET status = 'soft_declined' WHERE invoice_id = 3`)
				w.exec(`UPDATE invoices SET status = 'open', amount_paid_minor = 0 WHERE id = 3`)
			}},
		{class: ClassAmountMismatch, also: []string{ClassBalanceDrift},
			plant: func(w *world) {
				w.invoice(4, "EUR", 1000, "paid", 1)
				w.payment(4, 1, 1000, "EUR", "succeeded", "pi_short", hourOf(12))
				w.intent("pi_short", 4, 1, 900, "eur", "succeeded", hourOf(12).Add(time.Second))
			},
			check: func(t *testing.T, f StoredFinding) {
				if f.PaymentIntent != "pi_short" || f.Amount != "9.00" || !strings.Contains(f.Detail, "EUR 10.00") {
					t.Errorf("finding %+v", f)
				}
			},
			cure: func(w *world) { w.exec(`UPDATE payments SET amount_minor = 900 WHERE invoice_id = 4`) }},
		{class: ClassCurrencyMismatch, also: []string{ClassBalanceDrift},
			plant: func(w *world) {
				w.invoice(5, "EUR", 700, "paid", 1)
				w.payment(5, 1, 700, "EUR", "succeeded", "pi_usd", hourOf(13))
				w.intent("pi_usd", 5, 1, 700, "usd", "succeeded", hourOf(13).Add(time.Second))
			},
			check: func(t *testing.T, f StoredFinding) {
				if f.PaymentIntent != "pi_usd" || f.Currency != "USD" {
					t.Errorf("finding %+v", f)
				}
			},
			cure: func(w *world) { w.exec(`UPDATE payments SET currency = 'USD' WHERE invoice_id = 5`) }},
		{class: ClassDuplicateCharge, also: []string{ClassPaidNotRecorded, ClassBalanceDrift},
			plant: func(w *world) {
				w.invoice(6, "EUR", 2000, "paid", 1)
				w.payment(6, 1, 2000, "EUR", "succeeded", "pi_first", hourOf(14))
				w.intent("pi_first", 6, 1, 2000, "eur", "succeeded", hourOf(14).Add(time.Second))
				w.intent("pi_second", 6, 1, 2000, "eur", "succeeded", hourOf(15)) // made by hand in the dashboard
			},
			check: func(t *testing.T, f StoredFinding) {
				if f.InvoiceID != 6 || f.Amount != "20.00" || !strings.Contains(f.Detail, "pi_first, pi_second") {
					t.Errorf("finding %+v", f)
				}
			},
			cure: func(w *world) {
				if _, err := w.fake.AddRefund(fakestripe.Refund{ID: "re_dup", PaymentIntent: "pi_second", Created: hourOf(20)}); err != nil {
					w.t.Fatal(err)
				}
				// The refund is recorded here and the duplicate's attempt too: the books
				// show both, the money is back.
				w.exec(`INSERT INTO payments (invoice_id, account_id, attempt, idempotency_key, amount_minor, currency, status,
  provider_payment_id, created_at, updated_at) VALUES (6, 106, 2, 'manual-6-2', 2000, 'EUR', 'succeeded', 'pi_second', ?, ?)`, hourOf(15), hourOf(15))
				w.exec(`INSERT INTO payment_refunds (provider_refund_id, provider_payment_id, invoice_id, amount_minor, currency, status,
  refunded_at, recorded_at, updated_at, recorded_by) VALUES ('re_dup', 'pi_second', 6, 2000, 'EUR', 'succeeded', ?, ?, ?, 'operator:test')`, hourOf(20), hourOf(20), hourOf(20))
			}},
		{class: ClassRefundedNotRecorded, fixable: true, also: []string{ClassBalanceDrift},
			plant: func(w *world) {
				// Paid ten days earlier (outside the window), refunded in it.
				w.invoice(7, "EUR", 3000, "paid", 1)
				w.payment(7, 1, 3000, "EUR", "succeeded", "pi_old", winFrom.AddDate(0, 0, -10))
				w.intent("pi_old", 7, 1, 3000, "eur", "succeeded", winFrom.AddDate(0, 0, -10))
				if _, err := w.fake.AddRefund(fakestripe.Refund{ID: "re_dash", PaymentIntent: "pi_old", Amount: 1000, Created: hourOf(9)}); err != nil {
					w.t.Fatal(err)
				}
			},
			check: func(t *testing.T, f StoredFinding) {
				if f.ResourceID != "re_dash" || f.PaymentIntent != "pi_old" || f.InvoiceID != 7 || f.Amount != "10.00" || !f.Fixable {
					t.Errorf("finding %+v", f)
				}
			},
			cure: func(w *world) {
				w.exec(`INSERT INTO payment_refunds (provider_refund_id, provider_payment_id, invoice_id, amount_minor, currency, status,
  refunded_at, recorded_at, updated_at, recorded_by) VALUES ('re_dash', 'pi_old', 7, 1000, 'EUR', 'succeeded', ?, ?, ?, 'operator:test')`, hourOf(9), hourOf(9), hourOf(9))
			}},
		{class: ClassDisputed, fixable: true,
			plant: func(w *world) {
				w.invoice(8, "USD", 4000, "paid", 1)
				w.payment(8, 1, 4000, "USD", "succeeded", "pi_disputed", winFrom.AddDate(0, 0, -20))
				w.intent("pi_disputed", 8, 1, 4000, "usd", "succeeded", winFrom.AddDate(0, 0, -20))
				if _, err := w.fake.AddDispute(fakestripe.Dispute{ID: "dp_1", PaymentIntent: "pi_disputed", Created: hourOf(8)}); err != nil {
					w.t.Fatal(err)
				}
			},
			check: func(t *testing.T, f StoredFinding) {
				if f.ResourceID != "dp_1" || f.InvoiceID != 8 || f.Amount != "40.00" || !strings.Contains(f.Detail, "needs_response") {
					t.Errorf("finding %+v", f)
				}
			},
			cure: func(w *world) {
				w.exec(`INSERT INTO payment_disputes (provider_dispute_id, provider_payment_id, invoice_id, amount_minor, currency, status,
  disputed_at, recorded_at, updated_at, recorded_by) VALUES ('dp_1', 'pi_disputed', 8, 4000, 'USD', 'needs_response', ?, ?, ?, 'operator:test')`, hourOf(8), hourOf(8), hourOf(8))
			}},
		{class: ClassUnknownPayment,
			plant: func(w *world) {
				w.intent("pi_stray", 999, 1, 1500, "eur", "requires_payment_method", hourOf(16))
			},
			check: func(t *testing.T, f StoredFinding) {
				if f.PaymentIntent != "pi_stray" || f.InvoiceID != 999 {
					t.Errorf("finding %+v", f)
				}
			},
			cure: func(w *world) {
				w.invoice(999, "EUR", 1500, "open", 1)
				w.payment(999, 1, 1500, "EUR", "soft_declined", "pi_stray", hourOf(16))
			}},
		{class: ClassPaymentUnsettled, fixable: true,
			plant: func(w *world) {
				// Attempted two days before the run, its answer lost, never replayed:
				// Stripe has no PaymentIntent for it.
				w.invoice(10, "EUR", 800, "open", 1)
				w.payment(10, 1, 800, "EUR", "pending", "", runAt.Add(-50*time.Hour))
			},
			check: func(t *testing.T, f StoredFinding) {
				if f.InvoiceID != 10 || f.PaymentIntent != "" || !strings.Contains(f.Detail, "no PaymentIntent") || !f.Fixable {
					t.Errorf("finding %+v", f)
				}
			},
			cure: func(w *world) { w.exec(`UPDATE payments SET status = 'failed' WHERE invoice_id = 10`) }},
	}
}

// Each class: planted, found with its fingerprint, the same finding on a second
// run, resolved once the cause is gone (the same window checked again).
func TestPaymentsClassesFoundKeptAndResolved(t *testing.T) {
	for _, tc := range classCases() {
		t.Run(tc.class, func(t *testing.T) {
			w := newWorld(t)
			w.paidInvoice(1, "EUR", 990, hourOf(5)) // a paid invoice beside: never a finding
			tc.plant(w)

			rep := w.run(false)
			f := w.one(tc.class)
			tc.check(t, f)
			if f.State != StateOpen || f.FirstSeen.IsZero() || !f.WindowFrom.Equal(winFrom) {
				t.Errorf("first run: %+v", f)
			}
			for class, fs := range w.findings() {
				if class != tc.class && !contains(tc.also, class) {
					t.Errorf("unexpected %s findings: %+v", class, fs)
				}
			}
			if !hasProblem(rep, tc.class, f.ID) {
				t.Errorf("report lacks the problem for finding %d: %+v", f.ID, rep.Problems)
			}

			w.now = w.now.Add(time.Hour)
			w.run(false)
			again := w.one(tc.class)
			if again.ID != f.ID || again.Fingerprint != f.Fingerprint || !again.LastSeen.After(f.LastSeen) || !again.FirstSeen.Equal(f.FirstSeen) {
				t.Errorf("second run: %+v, first %+v", again, f)
			}

			tc.cure(w)
			w.now = w.now.Add(time.Hour)
			rep = w.run(false)
			if len(rep.Problems) != 0 {
				t.Errorf("problems after the cure: %+v", rep.Problems)
			}
			if got := w.one(tc.class); got.State != StateResolved {
				t.Errorf("after the cure: %s\n%s", got.State, w.describe())
			}
			for _, fs := range w.findings() {
				for _, f := range fs {
					if f.State == StateOpen {
						t.Errorf("still open after the cure: %s %s", f.Class, f.Detail)
					}
				}
			}
		})
	}
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func hasProblem(rep *run.Report, class string, id int64) bool {
	for _, p := range rep.Problems {
		if p.Kind == class && p.Field("id") == id && p.Field("class") == class {
			return true
		}
	}
	return false
}

func (w *world) row(q string, args ...any) string {
	w.t.Helper()
	rows, err := w.db.Query(q, args...)
	if err != nil {
		w.t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			w.t.Fatal(err)
		}
		parts := make([]string, len(vals))
		for i, v := range vals {
			switch v := v.(type) {
			case nil:
				parts[i] = "NULL"
			case []byte:
				parts[i] = string(v)
			case time.Time:
				parts[i] = v.UTC().Format(time.RFC3339)
			default:
				parts[i] = fmt.Sprint(v)
			}
		}
		out = append(out, strings.Join(parts, " "))
	}
	return strings.Join(out, "\n")
}

// --fix, after a dry run that shows it, repairs each fixable class by recording what
// Stripe says, audited with the run; a second --fix finds nothing to do, and a plain
// run afterwards finds nothing open.
func TestPaymentsFixRecordsWhatStripeSays(t *testing.T) {
	w := newWorld(t)
	w.paidInvoice(1, "EUR", 990, hourOf(5))
	for _, tc := range classCases() {
		if tc.fixable {
			tc.plant(w)
		}
	}
	// A pending attempt whose PaymentIntent Stripe declined.
	w.invoice(11, "EUR", 600, "open", 1)
	w.payment(11, 1, 600, "EUR", "pending", "pi_stuck", hourOf(2))
	w.intent("pi_stuck", 11, 1, 600, "eur", "requires_payment_method", hourOf(2).Add(time.Second))

	// The dry run shows the repairs and changes nothing.
	ctx := run.WithInfo(context.Background(), run.Info{ID: "DRY", Job: "reconcile", DryRun: true})
	rep, err := w.job(true, true).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var plans []string
	for _, a := range rep.Actions {
		if a.Kind == "fix" {
			plans = append(plans, a.Detail)
		}
	}
	sort.Strings(plans)
	want := []string{
		"would record dispute dp_1 of pi_disputed (USD 40.00, needs_response)",
		"would record pi_lost (EUR 12.30) as the payment of invoice 2 and mark it paid",
		"would record refund re_dash of pi_old (EUR 10.00, succeeded)",
		"would settle attempt 1 of invoice 10 as failed (not_at_provider)",
		"would settle attempt 1 of invoice 11 as soft_declined (generic_decline)",
	}
	if strings.Join(plans, "\n") != strings.Join(want, "\n") {
		t.Errorf("dry run plans:\n%s\nwant:\n%s", strings.Join(plans, "\n"), strings.Join(want, "\n"))
	}
	if n := w.row(`SELECT COUNT(*) FROM reconcile_findings`); n != "0" {
		t.Fatalf("the dry run wrote %s findings", n)
	}

	rep = w.run(true)
	fixed := map[string]string{}
	for _, a := range rep.Actions {
		if a.Kind == "fix" {
			fixed[a.Field("class").(string)+" "+fmt.Sprint(a.Field("invoice_id"))] = a.Detail
		}
	}
	if len(fixed) != 5 {
		t.Errorf("fixed %d findings, want 5: %v", len(fixed), fixed)
	}
	if got := w.row(`SELECT status, provider_payment_id FROM payments WHERE invoice_id = 2`); got != "succeeded pi_lost" {
		t.Errorf("invoice 2's payment: %s", got)
	}
	if got := w.row(`SELECT status, amount_paid_minor, collection, paid_at FROM invoices WHERE id = 2`); got != "paid 1230 succeeded "+hourOf(10).Add(time.Second).Format(time.RFC3339) {
		t.Errorf("invoice 2: %s", got)
	}
	if got := w.row(`SELECT status, decline_code FROM payments WHERE invoice_id = 10`); got != "failed not_at_provider" {
		t.Errorf("invoice 10's attempt: %s", got)
	}
	if got := w.row(`SELECT status, decline_code, provider_payment_id FROM payments WHERE invoice_id = 11`); got != "soft_declined generic_decline pi_stuck" {
		t.Errorf("invoice 11's attempt: %s", got)
	}
	if got := w.row(`SELECT status, collection, last_decline_code FROM invoices WHERE id IN (10, 11) ORDER BY id`); got != "open failed not_at_provider\nopen failed generic_decline" {
		t.Errorf("invoices 10 and 11: %s", got)
	}
	if got := w.row(`SELECT provider_refund_id, invoice_id, account_id, amount_minor, currency, status, recorded_by, run_id FROM payment_refunds`); got != "re_dash 7 107 1000 EUR succeeded cronkit RUN01" {
		t.Errorf("refunds: %s", got)
	}
	if got := w.row(`SELECT provider_dispute_id, invoice_id, amount_minor, currency, status, evidence_due_by IS NOT NULL FROM payment_disputes`); got != "dp_1 8 4000 USD needs_response 1" {
		t.Errorf("disputes: %s", got)
	}
	if got := w.row(`SELECT f.class, e.event, e.actor, e.run_id FROM reconcile_finding_events e JOIN reconcile_findings f ON f.id = e.finding_id
WHERE e.event = 'fixed' ORDER BY f.class, f.invoice_id`); got != strings.Join([]string{
		"disputed fixed cronkit RUN01", "paid_not_recorded fixed cronkit RUN01", "payment_unsettled fixed cronkit RUN01",
		"payment_unsettled fixed cronkit RUN01", "refunded_not_recorded fixed cronkit RUN01"}, "\n") {
		t.Errorf("fix events:\n%s", got)
	}
	state := func() string {
		return w.row(`SELECT class, state, COALESCE(invoice_id, 0) FROM reconcile_findings ORDER BY class, invoice_id`) + "\n" +
			w.row(`SELECT id, invoice_id, attempt, status, COALESCE(provider_payment_id, '') FROM payments ORDER BY id`) + "\n" +
			w.row(`SELECT id, status, amount_paid_minor, collection FROM invoices ORDER BY id`)
	}

	// Again: nothing left to fix; the drift of the first run resolves now that the
	// books agree.
	w.now = w.now.Add(time.Hour)
	rep = w.run(true)
	for _, a := range rep.Actions {
		if a.Kind == "fix" || a.Kind == "fix_skipped" {
			t.Errorf("second --fix: %s %s", a.Kind, a.Detail)
		}
	}
	if len(rep.Problems) != 0 {
		t.Errorf("problems after the fixes: %+v\n%s", rep.Problems, w.describe())
	}
	before := state()
	w.now = w.now.Add(time.Hour)
	w.run(true)
	if after := state(); after != before {
		t.Errorf("a third run changed something:\n%s", diff(before, after))
	}
}

func diff(a, b string) string {
	return "- " + strings.ReplaceAll(a, "\n", "\n- ") + "\n+ " + strings.ReplaceAll(b, "\n", "\n+ ")
}

// A finding re-judged by id from a later window, and seen again, keeps the window it
// was found in: a second run over that later window (the nightly run, then --fix)
// judges it by id again rather than resolving it unseen; once its cause is gone, the
// re-judging resolves it.
func TestRecheckedFindingKeepsItsWindow(t *testing.T) {
	w := newWorld(t)
	w.invoice(4, "EUR", 1000, "paid", 1)
	w.payment(4, 1, 1000, "EUR", "succeeded", "pi_short", hourOf(12))
	w.intent("pi_short", 4, 1, 900, "eur", "succeeded", hourOf(12).Add(time.Second))
	w.run(false)
	found := w.one(ClassAmountMismatch)

	nextDay := func(fix bool) *run.Report {
		t.Helper()
		w.runs++
		ctx := run.WithInfo(context.Background(), run.Info{ID: fmt.Sprintf("RUN%02d", w.runs), Job: "reconcile"})
		j := w.job(fix, false)
		j.Config.Window = Window{From: winTo, To: winTo.AddDate(0, 0, 1)}
		rep, err := j.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	w.now = runAt.AddDate(0, 0, 1)
	for i, fix := range []bool{false, true, false} {
		nextDay(fix)
		f := w.one(ClassAmountMismatch)
		if f.ID != found.ID || f.State != StateOpen || !f.WindowFrom.Equal(winFrom) || !f.WindowTo.Equal(winTo) {
			t.Fatalf("run %d over the next day (fix %v): %s, window %s .. %s; want open in its own window",
				i+1, fix, f.State, f.WindowFrom.Format(time.RFC3339), f.WindowTo.Format(time.RFC3339))
		}
	}
	w.exec(`UPDATE payments SET amount_minor = 900 WHERE invoice_id = 4`)
	nextDay(false)
	if f := w.one(ClassAmountMismatch); f.State != StateResolved {
		t.Fatalf("after the cure: %s", f.State)
	}
}

// The balance drift of a currency over a window is one finding whatever the window's
// end: runs with --to now during the day and the nightly run over the whole day keep
// the same fingerprint (its currency and the window's start), the finding's window
// widens with them, and a run after the books agree resolves it.
func TestBalanceDriftStableAcrossWindowEnds(t *testing.T) {
	w := newWorld(t)
	w.paidInvoice(1, "EUR", 990, hourOf(5))
	// Stripe took 12.30 EUR for invoice 2 at 10:00; here the attempt is pending.
	w.invoice(2, "EUR", 1230, "open", 1)
	w.payment(2, 1, 1230, "EUR", "pending", "", hourOf(10))
	w.intent("pi_lost", 2, 1, 1230, "eur", "succeeded", hourOf(10).Add(time.Second))

	runTo := func(now time.Time) *run.Report {
		t.Helper()
		w.runs++
		w.now = now
		j := w.job(false, false)
		if now.Before(winTo) {
			j.Config.Window.To = now // --to now: the check judges up to now minus the grace
		}
		rep, err := j.Run(run.WithInfo(context.Background(), run.Info{ID: fmt.Sprintf("RUN%02d", w.runs), Job: "reconcile"}))
		if err != nil {
			t.Fatalf("run %d: %v", w.runs, err)
		}
		return rep
	}
	rep := runTo(hourOf(15))
	f := w.one(ClassBalanceDrift)
	if f.State != StateOpen || f.Currency != "EUR" || f.Amount != "12.30" || !f.WindowFrom.Equal(winFrom) ||
		!f.WindowTo.Equal(hourOf(14)) || f.Fingerprint != Fingerprint(ClassBalanceDrift, "EUR", winFrom.Format(time.RFC3339)) {
		t.Fatalf("first run (to 15:00): %+v", f)
	}
	if !hasProblem(rep, ClassBalanceDrift, f.ID) {
		t.Errorf("report lacks the drift: %+v", rep.Problems)
	}
	// Later the same day, another --to now, then the nightly run of the whole day:
	// the same finding, its window widened to the one judged.
	for _, tc := range []struct{ now, windowTo time.Time }{{hourOf(20), hourOf(19)}, {runAt, winTo}} {
		runTo(tc.now)
		again := w.one(ClassBalanceDrift)
		if again.ID != f.ID || again.Fingerprint != f.Fingerprint || again.State != StateOpen || !again.FirstSeen.Equal(f.FirstSeen) ||
			!again.LastSeen.Equal(tc.now) || !again.WindowTo.Equal(tc.windowTo) {
			t.Errorf("run at %s: %+v; want finding %d open, last seen then, window to %s", tc.now.Format(time.RFC3339), again, f.ID,
				tc.windowTo.Format(time.RFC3339))
		}
	}
	// Recorded here (by a person): the totals agree, the drift resolves.
	w.exec(`UPDATE payments SET status = 'succeeded', provider_payment_id = 'pi_lost' WHERE invoice_id = 2`)
	w.exec(`UPDATE invoices SET status = 'paid', amount_paid_minor = total_minor WHERE id = 2`)
	rep = runTo(runAt.Add(time.Hour))
	if got := w.one(ClassBalanceDrift); got.ID != f.ID || got.State != StateResolved {
		t.Errorf("after the cure: %+v\n%s", got, w.describe())
	}
	if len(rep.Problems) != 0 {
		t.Errorf("problems after the cure: %+v", rep.Problems)
	}
}
