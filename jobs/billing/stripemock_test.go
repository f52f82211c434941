package billing

import (
	"github.com/cronkit/cronkit/lib/payment/stripemock"

	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/payment"
)

// Stripe's own mock checks every request against Stripe's OpenAPI description: an
// unknown or malformed parameter is a 400, which the job would report as refused.
func TestChargeThroughStripeMock(t *testing.T) {
	url := stripemock.Start(t)
	db := newDB(t)
	account(t, db.DB, 1, "USD", "cus_123")
	opened := april.Add(20 * time.Minute)
	id := openInvoice(t, db.DB, 1, "USD", 4321, opened)
	client := payment.New(payment.Config{APIKey: "sk_test_123", BaseURL: url})
	var lookups int
	pay := &paymentsMock{
		// stripe-mock's customer fixture has no default card; give it one after a
		// real lookup, so that the PaymentIntent request is made and checked.
		GetCustomerFn: func(ctx context.Context, id string) (payment.Customer, error) {
			lookups++
			c, err := client.GetCustomer(ctx, id)
			if err != nil {
				return c, err
			}
			c.DefaultPaymentMethod = "pm_card_visa"
			return c, nil
		},
		ChargeFn: client.Charge,
	}
	rep, err := (&Job{DB: db.DB, Payments: pay, Now: at(opened)}).Charge(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 || lookups != 1 {
		t.Fatalf("stripe-mock refused our requests (%d lookups):\n%s", lookups, problems(rep))
	}
	// stripe-mock answers with its fixture PaymentIntent, status
	// requires_payment_method: a decline without a code, so a soft decline.
	p := payments(t, db.DB, id)
	if p != fmt.Sprintf("1 cronkit-invoice-%d-attempt-1 4321 soft_declined - 1\n", id) {
		t.Fatalf("payments: %q\n%+v", p, rep.Actions)
	}
	if got := invoiceStateOf(t, db.DB, id); got.collection != "retrying" || got.attempts != 1 {
		t.Fatalf("invoice: %+v", got)
	}
}
