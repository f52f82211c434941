package billing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/payment"
	"github.com/cronkit/cronkit/lib/payment/fakestripe"
	"github.com/cronkit/cronkit/lib/run"
)

// stripeFor starts a fake Stripe that knows customers cus_1..cus_n and returns it, a
// client on it and its stop function (which makes it unreachable: refused dials).
func stripeFor(t *testing.T, n int) (*fakestripe.Server, *payment.Client, func()) {
	t.Helper()
	fake := fakestripe.New(fakeKey)
	for i := 1; i <= n; i++ {
		if _, err := fake.AddCustomer(fakestripe.Customer{ID: fmt.Sprintf("cus_%d", i), Email: fmt.Sprintf("%d@example.com", i),
			DefaultPaymentMethod: "pm_card_visa"}); err != nil {
			t.Fatal(err)
		}
	}
	url, stop, err := fake.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stopOnce := func() { once.Do(stop) }
	t.Cleanup(stopOnce)
	return fake, payment.New(payment.Config{APIKey: fakeKey, BaseURL: url, HTTPClient: &http.Client{Timeout: 5 * time.Second}}), stopOnce
}

// threeInvoices opens one invoice for each of accounts 1..3 (customers cus_1..3).
func threeInvoices(t *testing.T, j *Job, opened time.Time) []int64 {
	t.Helper()
	var ids []int64
	for a := int64(1); a <= 3; a++ {
		account(t, j.DB, a, "USD", fmt.Sprintf("cus_%d", a))
		ids = append(ids, openInvoice(t, j.DB, a, "USD", 1000*a, opened))
	}
	return ids
}

func wantUnreachable(t *testing.T, err error, left int) {
	t.Helper()
	if !errors.Is(err, run.ErrUnreachable) || run.ExitCode(err) != run.ExitFailed || run.UnreachableDependency(err) != "stripe" {
		t.Fatalf("want stripe unreachable (exit 1), got %v (exit %d)", err, run.ExitCode(err))
	}
	if want := fmt.Sprintf("%d item(s) left for the next run", left); !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
}

// Stripe down at start: nothing is attempted, the run stops at the first refused
// call (exit 1, every invoice counted as left), and the next run with Stripe back
// charges them all.
func TestChargeStripeDownAtStartStopsTheRun(t *testing.T) {
	db := newDB(t)
	_, client, stop := stripeFor(t, 3)
	opened := april.Add(20 * time.Minute)
	calls := 0
	counting := &paymentsMock{
		GetCustomerFn: func(ctx context.Context, id string) (payment.Customer, error) {
			calls++
			return client.GetCustomer(ctx, id)
		},
		ChargeFn: func(ctx context.Context, req payment.ChargeRequest) (payment.ChargeResult, error) {
			calls++
			return client.Charge(ctx, req)
		},
	}
	j := &Job{DB: db.DB, Payments: counting, Now: at(opened)}
	ids := threeInvoices(t, j, opened)
	stop()

	_, err := j.Charge(testCtx())
	wantUnreachable(t, err, 3)
	if calls != 1 {
		t.Fatalf("Stripe was called %d times, want once (then no more)", calls)
	}
	for _, id := range ids {
		if got := invoiceStateOf(t, db.DB, id); got.attempts != 0 || got.collection != "pending" {
			t.Fatalf("invoice %d after the refused run: %+v", id, got)
		}
		if p := payments(t, db.DB, id); p != "" {
			t.Fatalf("invoice %d: payments written: %q", id, p)
		}
	}

	fake2, client2, _ := stripeFor(t, 3)
	j.Payments = client2
	if _, err := j.Charge(testCtx()); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if got := invoiceStateOf(t, db.DB, id); got.status != "paid" || got.attempts != 1 {
			t.Fatalf("invoice %d once Stripe is back: %+v", id, got)
		}
	}
	if n := fake2.PaymentIntentCount(); n != 3 {
		t.Fatalf("%d charges, want 3", n)
	}
}

// Stripe goes away in the middle: the charge in flight stays pending with its key
// (as after an interrupted run), the invoices after it are not attempted, the run
// exits 1; the next run replays the pending key and charges the rest, once each.
func TestChargeStripeDownMidRunLeavesTheAttemptForReplay(t *testing.T) {
	db := newDB(t)
	fake, client, stop := stripeFor(t, 3)
	opened := april.Add(20 * time.Minute)
	charges := 0
	j := &Job{DB: db.DB, Now: at(opened), Payments: &paymentsMock{
		GetCustomerFn: client.GetCustomer,
		ChargeFn: func(ctx context.Context, req payment.ChargeRequest) (payment.ChargeResult, error) {
			charges++
			if charges == 2 {
				stop()
			}
			return client.Charge(ctx, req)
		},
	}}
	ids := threeInvoices(t, j, opened)

	_, err := j.Charge(testCtx())
	wantUnreachable(t, err, 2)
	if charges != 2 {
		t.Fatalf("%d charge calls, want 2 (none after the refused one)", charges)
	}
	if got := invoiceStateOf(t, db.DB, ids[0]); got.status != "paid" {
		t.Fatalf("first invoice: %+v", got)
	}
	if p := payments(t, db.DB, ids[1]); p != fmt.Sprintf("1 cronkit-invoice-%d-attempt-1 2000 pending - 0\n", ids[1]) {
		t.Fatalf("the attempt in flight: %q", p)
	}
	if got := invoiceStateOf(t, db.DB, ids[2]); got.attempts != 0 || payments(t, db.DB, ids[2]) != "" {
		t.Fatalf("the invoice after it was touched: %+v", got)
	}
	if n := fake.PaymentIntentCount(); n != 1 {
		t.Fatalf("%d charges at the first Stripe, want 1", n)
	}

	fake2, client2, _ := stripeFor(t, 3)
	j.Payments = client2
	j.Now = at(opened.Add(time.Hour))
	if _, err := j.Charge(testCtx()); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if got := invoiceStateOf(t, db.DB, id); got.status != "paid" || got.attempts != 1 {
			t.Fatalf("invoice %d after the next run: %+v", id, got)
		}
	}
	if p := payments(t, db.DB, ids[1]); p != fmt.Sprintf("1 cronkit-invoice-%d-attempt-1 2000 succeeded - 1\n", ids[1]) {
		t.Fatalf("the replayed attempt: %q", p)
	}
	if n := fake2.PaymentIntentCount(); n != 2 {
		t.Fatalf("%d charges at the second Stripe, want 2", n)
	}
}

// An answer is not unreachability: one charge's 500 is that invoice's problem (exit
// 3), and the invoices after it are charged in the same run.
func TestChargeOneStripe500IsAnItemProblem(t *testing.T) {
	db := newDB(t)
	fake, client, _ := stripeFor(t, 3)
	opened := april.Add(20 * time.Minute)
	charges := 0
	j := &Job{DB: db.DB, Now: at(opened), Payments: &paymentsMock{
		GetCustomerFn: client.GetCustomer,
		ChargeFn: func(ctx context.Context, req payment.ChargeRequest) (payment.ChargeResult, error) {
			charges++
			if charges == 2 {
				fake.FailNext(1, http.StatusInternalServerError)
			}
			return client.Charge(ctx, req)
		},
	}}
	ids := threeInvoices(t, j, opened)
	rep, err := j.Charge(testCtx())
	if err != nil {
		t.Fatalf("run error %v, want none (the 500 is an item problem)", err)
	}
	if st, err := run.Outcome(context.Background(), rep, err); st != run.StatusPartial || run.ExitCode(err) != run.ExitPartial {
		t.Fatalf("outcome %s exit %d, want partial, 3", st, run.ExitCode(err))
	}
	if !hasProblem(rep, "charge_unknown", fmt.Sprintf("invoice %d", ids[1])) || len(rep.Problems) != 1 {
		t.Fatalf("problems:\n%s", problems(rep))
	}
	for _, i := range []int{0, 2} {
		if got := invoiceStateOf(t, db.DB, ids[i]); got.status != "paid" {
			t.Fatalf("invoice %d: %+v", ids[i], got)
		}
	}
}
