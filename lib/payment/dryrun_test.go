package payment_test

import (
	"context"
	"errors"
	"iter"
	"reflect"
	"slices"
	"testing"

	"github.com/cronkit/cronkit/lib/internal/standintest"
	"github.com/cronkit/cronkit/lib/payment"
)

// clientMethods is every exported method of *payment.Client and whether a dry run
// may call it. A method added to the client fails TestDryRunCoversClient until it is
// classified here (and DryRun has it).
var clientMethods = standintest.Methods{
	"Charge":               standintest.Mutates,
	"GetCustomer":          standintest.Reads,
	"ListPaymentIntents":   standintest.Reads,
	"GetPaymentIntent":     standintest.Reads,
	"SearchPaymentIntents": standintest.Reads,
	"ListRefunds":          standintest.Reads,
	"ListDisputes":         standintest.Reads,
}

func TestDryRunCoversClient(t *testing.T) {
	standintest.CheckCoverage(t, (*payment.Client)(nil), (*payment.DryRun)(nil),
		reflect.TypeFor[payment.Reader](), clientMethods)
}

// recordingReader is a payment.Reader that records each call and answers canned values.
type recordingReader struct {
	calls    []string
	customer payment.Customer
	err      error
}

func (r *recordingReader) GetCustomer(_ context.Context, id string) (payment.Customer, error) {
	r.calls = append(r.calls, "GetCustomer")
	c := r.customer
	c.ID = id
	return c, r.err
}

func (r *recordingReader) ListPaymentIntents(_ context.Context, p payment.ListParams) iter.Seq2[payment.PaymentIntent, error] {
	r.calls = append(r.calls, "ListPaymentIntents")
	return func(yield func(payment.PaymentIntent, error) bool) {
		yield(payment.PaymentIntent{ID: "pi_for_" + p.Customer}, r.err)
	}
}

func (r *recordingReader) GetPaymentIntent(_ context.Context, id string) (payment.PaymentIntent, error) {
	r.calls = append(r.calls, "GetPaymentIntent")
	return payment.PaymentIntent{ID: id}, r.err
}

func (r *recordingReader) SearchPaymentIntents(_ context.Context, m map[string]string) iter.Seq2[payment.PaymentIntent, error] {
	r.calls = append(r.calls, "SearchPaymentIntents")
	return func(yield func(payment.PaymentIntent, error) bool) {
		yield(payment.PaymentIntent{ID: "pi_for_" + m["invoice_id"]}, r.err)
	}
}

func (r *recordingReader) ListRefunds(_ context.Context, p payment.RefundListParams) iter.Seq2[payment.Refund, error] {
	r.calls = append(r.calls, "ListRefunds")
	return func(yield func(payment.Refund, error) bool) {
		yield(payment.Refund{ID: "re_for_" + p.PaymentIntent}, r.err)
	}
}

func (r *recordingReader) ListDisputes(_ context.Context, p payment.RefundListParams) iter.Seq2[payment.Dispute, error] {
	r.calls = append(r.calls, "ListDisputes")
	return func(yield func(payment.Dispute, error) bool) {
		yield(payment.Dispute{ID: "dp_for_" + p.PaymentIntent}, r.err)
	}
}

func TestDryRunRefusesEveryChange(t *testing.T) {
	for name, reader := range map[string]payment.Reader{"with reader": &recordingReader{}, "nil reader": nil} {
		t.Run(name, func(t *testing.T) {
			standintest.CheckRefuses(t, payment.NewDryRun(reader), clientMethods, payment.ErrDryRun)
			if r, ok := reader.(*recordingReader); ok && len(r.calls) > 0 {
				t.Errorf("a refused change reached the reader: %q", r.calls)
			}
		})
	}
}

func TestDryRunChargeSaysWhat(t *testing.T) {
	_, err := payment.NewDryRun(nil).Charge(context.Background(),
		payment.ChargeRequest{Customer: "cus_1", AmountMinor: 1230, Currency: "EUR", IdempotencyKey: "invoice-7-attempt-1"})
	if want := "charge cus_1 (key invoice-7-attempt-1): dry run: the payment provider is not changed"; err == nil || err.Error() != want {
		t.Errorf("Charge error = %v, want %q", err, want)
	}
}

func TestDryRunReadsDelegate(t *testing.T) {
	ctx := context.Background()
	errReader := errors.New("reader's error")
	r := &recordingReader{customer: payment.Customer{Email: "a@example.com", DefaultPaymentMethod: "pm_1"}, err: errReader}
	d := payment.NewDryRun(r)

	c, err := d.GetCustomer(ctx, "cus_1")
	if want := (payment.Customer{ID: "cus_1", Email: "a@example.com", DefaultPaymentMethod: "pm_1"}); c != want || !errors.Is(err, errReader) {
		t.Errorf("GetCustomer = %+v, %v; want %+v, %v", c, err, want, errReader)
	}
	n := 0
	for pi, err := range d.ListPaymentIntents(ctx, payment.ListParams{Customer: "cus_1"}) {
		n++
		if pi.ID != "pi_for_cus_1" || !errors.Is(err, errReader) {
			t.Errorf("ListPaymentIntents yielded %q, %v; want pi_for_cus_1, %v", pi.ID, err, errReader)
		}
	}
	if n != 1 {
		t.Errorf("ListPaymentIntents yielded %d times, want the reader's one", n)
	}
	if pi, err := d.GetPaymentIntent(ctx, "pi_1"); pi.ID != "pi_1" || !errors.Is(err, errReader) {
		t.Errorf("GetPaymentIntent = %+v, %v", pi, err)
	}
	checkOne(t, "SearchPaymentIntents", d.SearchPaymentIntents(ctx, map[string]string{"invoice_id": "7"}),
		func(pi payment.PaymentIntent) bool { return pi.ID == "pi_for_7" }, errReader)
	checkOne(t, "ListRefunds", d.ListRefunds(ctx, payment.RefundListParams{PaymentIntent: "pi_2"}),
		func(r payment.Refund) bool { return r.ID == "re_for_pi_2" }, errReader)
	checkOne(t, "ListDisputes", d.ListDisputes(ctx, payment.RefundListParams{PaymentIntent: "pi_3"}),
		func(r payment.Dispute) bool { return r.ID == "dp_for_pi_3" }, errReader)

	slices.Sort(r.calls)
	if want := standintest.ReadNames(clientMethods); !slices.Equal(r.calls, want) {
		t.Errorf("reader saw %q, want each read once: %q", r.calls, want)
	}
}

func TestDryRunWithoutReaderRefusesReads(t *testing.T) {
	ctx := context.Background()
	d := payment.NewDryRun(nil)
	if _, err := d.GetCustomer(ctx, "cus_1"); !errors.Is(err, payment.ErrDryRun) {
		t.Errorf("GetCustomer without reader: %v, want ErrDryRun", err)
	}
	n := 0
	for _, err := range d.ListPaymentIntents(ctx, payment.ListParams{}) {
		n++
		if !errors.Is(err, payment.ErrDryRun) {
			t.Errorf("ListPaymentIntents without reader yielded %v, want ErrDryRun", err)
		}
	}
	if n != 1 {
		t.Errorf("ListPaymentIntents without reader yielded %d times, want once", n)
	}
	if _, err := d.GetPaymentIntent(ctx, "pi_1"); !errors.Is(err, payment.ErrDryRun) {
		t.Errorf("GetPaymentIntent without reader: %v, want ErrDryRun", err)
	}
	checkOne(t, "SearchPaymentIntents", d.SearchPaymentIntents(ctx, map[string]string{"a": "b"}),
		func(payment.PaymentIntent) bool { return true }, payment.ErrDryRun)
	checkOne(t, "ListRefunds", d.ListRefunds(ctx, payment.RefundListParams{}),
		func(payment.Refund) bool { return true }, payment.ErrDryRun)
	checkOne(t, "ListDisputes", d.ListDisputes(ctx, payment.RefundListParams{}),
		func(payment.Dispute) bool { return true }, payment.ErrDryRun)
}

// checkOne requires seq to yield exactly one item, accepted by ok, with wantErr.
func checkOne[T any](t *testing.T, name string, seq iter.Seq2[T, error], ok func(T) bool, wantErr error) {
	t.Helper()
	n := 0
	for v, err := range seq {
		n++
		if !ok(v) || !errors.Is(err, wantErr) {
			t.Errorf("%s yielded %+v, %v; want %v", name, v, err, wantErr)
		}
	}
	if n != 1 {
		t.Errorf("%s yielded %d times, want once", name, n)
	}
}
