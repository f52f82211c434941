package billing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/payment"
	"github.com/cronkit/cronkit/lib/payment/fakestripe"
)

// paymentsMock is a Payments whose behaviour each test sets; GetCustomerFn nil
// answers that every customer has a Visa card.
type paymentsMock struct {
	ChargeFn      func(ctx context.Context, req payment.ChargeRequest) (payment.ChargeResult, error)
	GetCustomerFn func(ctx context.Context, id string) (payment.Customer, error)
}

func (m *paymentsMock) Charge(ctx context.Context, req payment.ChargeRequest) (payment.ChargeResult, error) {
	return m.ChargeFn(ctx, req)
}

func (m *paymentsMock) GetCustomer(ctx context.Context, id string) (payment.Customer, error) {
	if m.GetCustomerFn == nil {
		return payment.Customer{ID: id, DefaultPaymentMethod: "pm_card_visa"}, nil
	}
	return m.GetCustomerFn(ctx, id)
}

var (
	_ Payments = (*paymentsMock)(nil)
	_ Payments = (*payment.Client)(nil)
)

const fakeKey = "sk_test_billing"

// fakeStripe starts the fake provider and returns it with a client on it.
func fakeStripe(t *testing.T, timeout time.Duration) (*fakestripe.Server, *payment.Client) {
	t.Helper()
	fake := fakestripe.New(fakeKey)
	url, stop, err := fake.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return fake, payment.New(payment.Config{APIKey: fakeKey, BaseURL: url, HTTPClient: &http.Client{Timeout: timeout}})
}

// openInvoice writes an open invoice directly: charging reads only invoices,
// accounts and payments.
func openInvoice(t *testing.T, db *sql.DB, acct int64, currency string, totalMinor int64, opened time.Time) int64 {
	t.Helper()
	res, err := db.Exec(`INSERT INTO invoices (account_id, period_start, currency, subtotal, total_minor, status, created_at, opened_at, due_at)
VALUES (?, ?, ?, ?, ?, 'open', ?, ?, ?)`, acct, monthStart(opened.AddDate(0, -1, 0)), currency, "1", totalMinor, opened, opened, opened)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := res.LastInsertId()
	return id
}

type invoiceState struct {
	status, collection string
	attempts           int
	next               string
	paid               int64
	decline            string
}

func invoiceStateOf(t *testing.T, db *sql.DB, id int64) invoiceState {
	t.Helper()
	var s invoiceState
	var next sql.NullTime
	var decline sql.NullString
	if err := db.QueryRow(`SELECT status, collection, attempt_count, next_attempt_at, amount_paid_minor, last_decline_code FROM invoices WHERE id = ?`, id).
		Scan(&s.status, &s.collection, &s.attempts, &next, &s.paid, &decline); err != nil {
		t.Fatal(err)
	}
	if next.Valid {
		s.next = next.Time.UTC().Format(time.RFC3339)
	}
	s.decline = decline.String
	return s
}

func payments(t *testing.T, db *sql.DB, invoice int64) string {
	t.Helper()
	return dump(t, db, `SELECT attempt, idempotency_key, amount_minor, status, COALESCE(decline_code, '-'), provider_payment_id IS NOT NULL
FROM payments WHERE invoice_id = ? ORDER BY attempt`, invoice)
}

func TestChargeOutcomesWithFakeStripe(t *testing.T) {
	db := newDB(t)
	fake, client := fakeStripe(t, 5*time.Second)
	cards := map[int64]string{1: "pm_card_visa", 2: "pm_card_chargeDeclinedInsufficientFunds", 3: "pm_card_chargeDeclinedLostCard", 5: ""}
	for acct, pm := range cards {
		id := fmt.Sprintf("cus_%d", acct)
		if _, err := fake.AddCustomer(fakestripe.Customer{ID: id, Email: "x@example.com", DefaultPaymentMethod: pm}); err != nil {
			t.Fatal(err)
		}
		account(t, db.DB, acct, "USD", id)
	}
	account(t, db.DB, 4, "USD", "") // no Stripe customer at all
	opened := april.Add(20 * time.Minute)
	inv := map[int64]int64{}
	for acct := int64(1); acct <= 5; acct++ {
		inv[acct] = openInvoice(t, db.DB, acct, "USD", 1000+acct, opened)
	}
	zero := openInvoice(t, db.DB, 6, "USD", 0, opened) // nothing to charge
	account(t, db.DB, 6, "USD", "cus_1")
	small := openInvoice(t, db.DB, 7, "USD", 30, opened) // below Stripe's minimum charge
	account(t, db.DB, 7, "USD", "cus_1")

	j := &Job{DB: db.DB, Payments: client, Now: at(opened.Add(time.Hour))}
	rep, err := j.Charge(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	dayLater := opened.Add(24 * time.Hour).Format(time.RFC3339)
	for acct, want := range map[int64]invoiceState{
		1: {status: "paid", collection: "succeeded", attempts: 1, paid: 1001},
		2: {status: "open", collection: "retrying", attempts: 1, next: dayLater, decline: "insufficient_funds"},
		3: {status: "open", collection: "hard_declined", attempts: 1, decline: "lost_card"},
		4: {status: "open", collection: "no_payment_method"},
		5: {status: "open", collection: "hard_declined", attempts: 1, decline: payment.DeclineNoPaymentMethod},
	} {
		if got := invoiceStateOf(t, db.DB, inv[acct]); got != want {
			t.Errorf("account %d invoice: %+v, want %+v", acct, got, want)
		}
	}
	if got := invoiceStateOf(t, db.DB, zero); got.attempts != 0 {
		t.Errorf("zero invoice charged: %+v", got)
	}
	if p := payments(t, db.DB, inv[1]); p != fmt.Sprintf("1 cronkit-invoice-%d-attempt-1 1001 succeeded - 1\n", inv[1]) {
		t.Errorf("payments of invoice 1: %q", p)
	}
	if p := payments(t, db.DB, inv[2]); p != fmt.Sprintf("1 cronkit-invoice-%d-attempt-1 1002 soft_declined insufficient_funds 1\n", inv[2]) {
		t.Errorf("payments of invoice 2: %q", p)
	}
	if got := invoiceStateOf(t, db.DB, small); got.collection != "failed" || got.decline != "amount_too_small" {
		t.Errorf("30 cents: %+v", got)
	}
	if !hasProblem(rep, "no_payment_method", fmt.Sprintf("invoice %d", inv[4])) ||
		!hasProblem(rep, "charge_refused", fmt.Sprintf("invoice %d", small)) || len(rep.Problems) != 2 {
		t.Errorf("problems:\n%s", problems(rep))
	}
	if n := fake.PaymentIntentCount(); n != 3 {
		t.Fatalf("%d PaymentIntents, want 3 (account 5 has no card, 4 no customer)", n)
	}

	// The next run before the retry day charges nothing.
	j.Now = at(opened.Add(23 * time.Hour))
	if rep, err = j.Charge(testCtx()); err != nil || rep.Counts["charge_attempts"] != 0 {
		t.Fatalf("early run: %v %+v", err, rep.Counts)
	}
	// The customer fixes the card; on the retry day attempt 2 succeeds, with its own key.
	if err := fake.SetDefaultPaymentMethod("cus_2", "pm_card_visa"); err != nil {
		t.Fatal(err)
	}
	// Account 4 gets a customer: its parked invoice is charged again.
	execSQL(t, db.DB, `UPDATE accounts SET stripe_customer_id = 'cus_1' WHERE id = 4`)
	j.Now = at(opened.Add(24*time.Hour + time.Minute))
	if rep, err = j.Charge(testCtx()); err != nil {
		t.Fatal(err)
	}
	if got := invoiceStateOf(t, db.DB, inv[2]); got.status != "paid" || got.attempts != 2 || got.paid != 1002 {
		t.Fatalf("retry day: %+v", got)
	}
	if p := payments(t, db.DB, inv[2]); !strings.HasSuffix(p, fmt.Sprintf("2 cronkit-invoice-%d-attempt-2 1002 succeeded - 1\n", inv[2])) {
		t.Fatalf("payments of invoice 2: %q", p)
	}
	if got := invoiceStateOf(t, db.DB, inv[4]); got.status != "paid" {
		t.Fatalf("account 4 after adding a customer: %+v", got)
	}
	if rep.Counts["charge_attempts"] != 2 || fake.PaymentIntentCount() != 5 {
		t.Fatalf("attempts %d, PaymentIntents %d", rep.Counts["charge_attempts"], fake.PaymentIntentCount())
	}
}

func TestChargeRetryScheduleExhausts(t *testing.T) {
	db := newDB(t)
	fake, client := fakeStripe(t, 5*time.Second)
	if _, err := fake.AddCustomer(fakestripe.Customer{ID: "cus_poor", Email: "p@example.com", DefaultPaymentMethod: "pm_card_chargeDeclinedInsufficientFunds"}); err != nil {
		t.Fatal(err)
	}
	account(t, db.DB, 1, "EUR", "cus_poor")
	opened := april.Add(20 * time.Minute)
	id := openInvoice(t, db.DB, 1, "EUR", 2500, opened)
	j := &Job{DB: db.DB, Payments: client}
	wantNext := []string{"2025-04-02T00:20:00Z", "2025-04-04T00:20:00Z", "2025-04-06T00:20:00Z", "2025-04-08T00:20:00Z", ""}
	for day, n := range []int{0, 1, 3, 5, 7} {
		j.Now = at(opened.Add(time.Duration(n)*24*time.Hour + time.Minute))
		if _, err := j.Charge(testCtx()); err != nil {
			t.Fatal(err)
		}
		got := invoiceStateOf(t, db.DB, id)
		if got.attempts != day+1 || got.next != wantNext[day] {
			t.Fatalf("after day %d: %+v", n, got)
		}
	}
	if got := invoiceStateOf(t, db.DB, id); got.collection != "exhausted" || got.status != "open" {
		t.Fatalf("after the schedule: %+v", got)
	}
	// Nothing more is tried.
	j.Now = at(opened.Add(30 * 24 * time.Hour))
	if rep, err := j.Charge(testCtx()); err != nil || rep.Counts["charge_attempts"] != 0 {
		t.Fatalf("after exhaustion: %v %+v", err, rep.Counts)
	}
	if n := strings.Count(payments(t, db.DB, id), "soft_declined"); n != 5 || fake.PaymentIntentCount() != 5 {
		t.Fatalf("%d declined attempts, %d intents", n, fake.PaymentIntentCount())
	}
}

func TestChargeProviderTimeoutReplaysTheSameKey(t *testing.T) {
	db := newDB(t)
	fake, client := fakeStripe(t, 300*time.Millisecond)
	if _, err := fake.AddCustomer(fakestripe.Customer{ID: "cus_1", Email: "a@example.com", DefaultPaymentMethod: "pm_card_visa"}); err != nil {
		t.Fatal(err)
	}
	account(t, db.DB, 1, "USD", "cus_1")
	opened := april.Add(20 * time.Minute)
	id := openInvoice(t, db.DB, 1, "USD", 4200, opened)
	j := &Job{DB: db.DB, Payments: client, Now: at(opened)}

	// The charge happens at the provider, but its answer is lost.
	fake.DropResponseNext(1)
	rep, err := j.Charge(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	if !hasProblem(rep, "charge_unknown", fmt.Sprintf("invoice %d", id)) {
		t.Fatalf("problems:\n%s", problems(rep))
	}
	if p := payments(t, db.DB, id); p != fmt.Sprintf("1 cronkit-invoice-%d-attempt-1 4200 pending - 0\n", id) {
		t.Fatalf("after the timeout: %q", p)
	}
	if fake.PaymentIntentCount() != 1 {
		t.Fatal("the lost request did not charge")
	}

	// The next run replays attempt 1 with its key and records the original result.
	j.Now = at(opened.Add(time.Hour))
	if rep, err = j.Charge(testCtx()); err != nil {
		t.Fatal(err)
	}
	if got := invoiceStateOf(t, db.DB, id); got.status != "paid" || got.attempts != 1 {
		t.Fatalf("after the replay: %+v", got)
	}
	if p := payments(t, db.DB, id); p != fmt.Sprintf("1 cronkit-invoice-%d-attempt-1 4200 succeeded - 1\n", id) {
		t.Fatalf("payments: %q", p)
	}
	if n := fake.PaymentIntentCount(); n != 1 {
		t.Fatalf("charged %d times", n)
	}
	if len(rep.Problems) != 0 || !strings.Contains(rep.Actions[0].Detail, "(replay) -> succeeded") {
		t.Fatalf("replay report: %+v %+v", rep.Actions, rep.Problems)
	}

	// A 503 on the charge itself, before anything happened: the replay is then the
	// first real charge.
	id2 := openInvoice(t, db.DB, 1, "USD", 999, opened.AddDate(0, 1, 0))
	j.Payments = &paymentsMock{
		GetCustomerFn: client.GetCustomer,
		ChargeFn: func(ctx context.Context, req payment.ChargeRequest) (payment.ChargeResult, error) {
			fake.FailNext(1, http.StatusServiceUnavailable)
			return client.Charge(ctx, req)
		},
	}
	j.Now = at(opened.AddDate(0, 1, 0))
	if rep, err = j.Charge(testCtx()); err != nil {
		t.Fatal(err)
	}
	if got := invoiceStateOf(t, db.DB, id2); got.status != "open" || got.attempts != 1 || !hasProblem(rep, "charge_unknown", fmt.Sprintf("invoice %d", id2)) {
		t.Fatalf("after a 503: %+v\n%s", got, problems(rep))
	}
	j.Payments = client
	if _, err := j.Charge(testCtx()); err != nil {
		t.Fatal(err)
	}
	if got := invoiceStateOf(t, db.DB, id2); got.status != "paid" || fake.PaymentIntentCount() != 2 {
		t.Fatalf("after the replay of a 503: %+v, %d intents", got, fake.PaymentIntentCount())
	}

	// A 503 on the card lookup: nothing is attempted, the next run starts attempt 1.
	id3 := openInvoice(t, db.DB, 1, "USD", 777, opened.AddDate(0, 2, 0))
	fake.FailNext(1, http.StatusServiceUnavailable)
	j.Now = at(opened.AddDate(0, 2, 0))
	if rep, err = j.Charge(testCtx()); err != nil {
		t.Fatal(err)
	}
	if got := invoiceStateOf(t, db.DB, id3); got.attempts != 0 || !hasProblem(rep, "customer_lookup_failed", fmt.Sprintf("invoice %d", id3)) {
		t.Fatalf("after a failed lookup: %+v\n%s", got, problems(rep))
	}
	if _, err := j.Charge(testCtx()); err != nil {
		t.Fatal(err)
	}
	if got := invoiceStateOf(t, db.DB, id3); got.status != "paid" || got.attempts != 1 || fake.PaymentIntentCount() != 3 {
		t.Fatalf("after the lookup recovered: %+v, %d intents", got, fake.PaymentIntentCount())
	}
}

// The crash window: the provider answered, the process died before recording it.
func TestChargeCrashAfterProviderAnswerRecordsTheOriginalResult(t *testing.T) {
	db := newDB(t)
	fake, client := fakeStripe(t, 5*time.Second)
	if _, err := fake.AddCustomer(fakestripe.Customer{ID: "cus_1", Email: "a@example.com", DefaultPaymentMethod: "pm_card_chargeDeclined"}); err != nil {
		t.Fatal(err)
	}
	account(t, db.DB, 1, "USD", "cus_1")
	opened := april.Add(20 * time.Minute)
	id := openInvoice(t, db.DB, 1, "USD", 5000, opened)
	j := &Job{DB: db.DB, Payments: client, Now: at(opened)}
	a := &attempt{invoiceID: id, account: 1, n: 1, key: IdempotencyKey(id, 1), amountMinor: 5000, currency: "USD",
		customer: "cus_1", card: "pm_card_chargeDeclined", openedAt: opened, period: monthStart(opened.AddDate(0, -1, 0))}
	if ok, err := j.startAttempt(testCtx(), a, opened); err != nil || !ok {
		t.Fatalf("start attempt: %v %v", ok, err)
	}
	first, err := client.Charge(testCtx(), a.request())
	if err != nil || first.Outcome != payment.OutcomeSoftDecline {
		t.Fatalf("first answer %+v %v", first, err)
	}
	// ... crash. The card is fixed meanwhile; the replay must still record the
	// original decline, not charge the new card.
	if err := fake.SetDefaultPaymentMethod("cus_1", "pm_card_visa"); err != nil {
		t.Fatal(err)
	}
	rep, err := j.Charge(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	got := invoiceStateOf(t, db.DB, id)
	if got.collection != "retrying" || got.attempts != 1 || got.decline != "generic_decline" || len(rep.Problems) != 0 {
		t.Fatalf("after the replay: %+v\n%s", got, problems(rep))
	}
	if p := payments(t, db.DB, id); p != fmt.Sprintf("1 cronkit-invoice-%d-attempt-1 5000 soft_declined generic_decline 1\n", id) {
		t.Fatalf("payments: %q", p)
	}
	if fake.PaymentIntentCount() != 1 {
		t.Fatalf("charged %d times", fake.PaymentIntentCount())
	}
}

func TestChargeProviderAnswersThatAreNotDeclines(t *testing.T) {
	db := newDB(t)
	account(t, db.DB, 1, "USD", "cus_1")
	opened := april.Add(20 * time.Minute)
	var calls []string
	answer := func(res payment.ChargeResult, err error) *paymentsMock {
		return &paymentsMock{ChargeFn: func(_ context.Context, req payment.ChargeRequest) (payment.ChargeResult, error) {
			calls = append(calls, req.IdempotencyKey)
			return res, err
		}}
	}
	for _, tc := range []struct {
		name       string
		pay        *paymentsMock
		wantErr    bool
		problem    string
		collection string
		payStatus  string
	}{
		{"refused", answer(payment.ChargeResult{}, fmt.Errorf("charge cus_1: %w", payment.ErrInvalidRequest)), false, "charge_refused", "failed", "failed"},
		{"bad key", answer(payment.ChargeResult{}, fmt.Errorf("charge: %w", payment.ErrAuthentication)), true, "", "pending", "pending"},
		{"processing", answer(payment.ChargeResult{Outcome: payment.OutcomePending, PaymentIntentID: "pi_1", Status: "processing", AmountMinor: 700, Currency: "usd"}, nil), false, "payment_processing", "pending", "pending"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			execSQL(t, db.DB, `DELETE FROM payments`)
			execSQL(t, db.DB, `DELETE FROM invoices`)
			id := openInvoice(t, db.DB, 1, "USD", 700, opened)
			j := &Job{DB: db.DB, Payments: tc.pay, Now: at(opened)}
			rep, err := j.Charge(testCtx())
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v", err)
			}
			if tc.problem != "" && !hasProblem(rep, tc.problem, fmt.Sprintf("invoice %d", id)) {
				t.Fatalf("problems:\n%s", problems(rep))
			}
			if got := invoiceStateOf(t, db.DB, id); got.collection != tc.collection {
				t.Fatalf("invoice %+v", got)
			}
			if p := payments(t, db.DB, id); !strings.Contains(p, " "+tc.payStatus+" ") {
				t.Fatalf("payments %q", p)
			}
			// Nothing is charged again while the attempt is pending or refused.
			calls = nil
			j.Payments = &paymentsMock{ChargeFn: func(context.Context, payment.ChargeRequest) (payment.ChargeResult, error) {
				calls = append(calls, "again")
				return payment.ChargeResult{}, errors.New("must not be called")
			}}
			j.Now = at(opened.Add(time.Hour))
			if tc.payStatus == "pending" && tc.name == "bad key" {
				// A pending attempt without a provider id is replayed: same key.
				j.Payments = answer(payment.ChargeResult{Outcome: payment.OutcomeSucceeded, PaymentIntentID: "pi_2", AmountMinor: 700, Currency: "usd"}, nil)
				calls = nil
			}
			if _, err := j.Charge(testCtx()); err != nil {
				t.Fatal(err)
			}
			switch tc.name {
			case "bad key":
				if len(calls) != 1 || calls[0] != IdempotencyKey(id, 1) {
					t.Fatalf("replay calls %v", calls)
				}
			default:
				if len(calls) != 0 {
					t.Fatalf("charged again: %v", calls)
				}
			}
		})
	}
}

func TestChargeDoesNotReplayBeyondTheIdempotencyWindow(t *testing.T) {
	db := newDB(t)
	account(t, db.DB, 1, "USD", "cus_1")
	opened := april.Add(20 * time.Minute)
	id := openInvoice(t, db.DB, 1, "USD", 700, opened)
	lost := &paymentsMock{ChargeFn: func(context.Context, payment.ChargeRequest) (payment.ChargeResult, error) {
		return payment.ChargeResult{}, fmt.Errorf("charge: %w", payment.ErrTemporary)
	}}
	j := &Job{DB: db.DB, Payments: lost, Now: at(opened)}
	if _, err := j.Charge(testCtx()); err != nil {
		t.Fatal(err)
	}
	j.Payments = &paymentsMock{ChargeFn: func(context.Context, payment.ChargeRequest) (payment.ChargeResult, error) {
		t.Fatal("replayed a key the provider has forgotten")
		return payment.ChargeResult{}, nil
	}}
	j.Now = at(opened.Add(25 * time.Hour))
	rep, err := j.Charge(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	if !hasProblem(rep, "payment_unknown", fmt.Sprintf("invoice %d", id)) {
		t.Fatalf("problems:\n%s", problems(rep))
	}
}

func TestChargeDryRunCallsNothingAndListsKeys(t *testing.T) {
	db := newDB(t)
	account(t, db.DB, 1, "USD", "cus_1")
	account(t, db.DB, 2, "USD", "")
	opened := april.Add(20 * time.Minute)
	id := openInvoice(t, db.DB, 1, "USD", 1234, opened)
	id2 := openInvoice(t, db.DB, 2, "USD", 99, opened)
	ro, err := mysql.Open(context.Background(), db.SelectOnlyUser(t), mysql.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	never := &paymentsMock{ChargeFn: func(context.Context, payment.ChargeRequest) (payment.ChargeResult, error) {
		t.Fatal("dry run called the provider")
		return payment.ChargeResult{}, nil
	}}
	rep, err := (&Job{DB: ro, Payments: never, Now: at(opened), Config: Config{DryRun: true}}).Charge(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("account 1 USD 12.34, attempt 1, key cronkit-invoice-%d-attempt-1", id)
	if len(rep.Actions) != 1 || rep.Actions[0].Detail != want {
		t.Fatalf("plan %+v", rep.Actions)
	}
	if !hasProblem(rep, "no_payment_method", fmt.Sprintf("invoice %d", id2)) {
		t.Fatalf("problems:\n%s", problems(rep))
	}
	if got := invoiceStateOf(t, db.DB, id); got.attempts != 0 {
		t.Fatalf("dry run wrote: %+v", got)
	}
}

func fakeCustomer(id, pm string) fakestripe.Customer {
	return fakestripe.Customer{ID: id, Email: id + "@example.com", DefaultPaymentMethod: pm}
}
