package payment

import (
	"github.com/cronkit/cronkit/lib/payment/stripemock"

	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v82"
)

// TestAgainstStripeMock checks our request shapes against Stripe's OpenAPI spec, as
// enforced by stripe-mock. stripe-mock is stateless (canned fixtures that echo some
// parameters), so the assertions are about acceptance, not business outcomes.
func TestAgainstStripeMock(t *testing.T) {
	base := stripemock.Start(t)
	c := New(Config{APIKey: "sk_test_123", BaseURL: base, HTTPClient: &http.Client{Timeout: 10 * time.Second}})
	ctx := context.Background()

	t.Run("charge", func(t *testing.T) {
		res, err := c.Charge(ctx, ChargeRequest{
			Customer:       "cus_123",
			PaymentMethod:  "pm_card_visa",
			AmountMinor:    1234,
			Currency:       "USD",
			Description:    "Invoice 42",
			Metadata:       map[string]string{"invoice_id": "42", "attempt": "1"},
			IdempotencyKey: "invoice-42-attempt-1",
		})
		if err != nil {
			t.Fatalf("stripe-mock rejected our charge: %v", err)
		}
		if !strings.HasPrefix(res.PaymentIntentID, "pi_") || res.AmountMinor != 1234 || res.Currency != "usd" ||
			res.PaymentMethod != "pm_card_visa" || res.Outcome == 0 {
			t.Errorf("result = %+v", res)
		}
	})

	t.Run("get customer", func(t *testing.T) {
		cust, err := c.GetCustomer(ctx, "cus_abc")
		if err != nil || cust.ID != "cus_abc" {
			t.Fatalf("GetCustomer = %+v, %v", cust, err)
		}
		// stripe-mock's customer has no default payment method: Charge looks it up
		// and declines without creating anything.
		res, err := c.Charge(ctx, ChargeRequest{Customer: "cus_abc", AmountMinor: 500, Currency: "eur", IdempotencyKey: "k"})
		if err != nil || res.Outcome != OutcomeHardDecline || res.DeclineCode != DeclineNoPaymentMethod {
			t.Errorf("charge without payment method = %+v, %v", res, err)
		}
	})

	t.Run("list payment intents", func(t *testing.T) {
		n := 0
		for pi, err := range c.ListPaymentIntents(ctx, ListParams{
			Customer:    "cus_123",
			CreatedFrom: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
			CreatedTo:   time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC),
		}) {
			if err != nil {
				t.Fatalf("stripe-mock rejected our list: %v", err)
			}
			if !strings.HasPrefix(pi.ID, "pi_") {
				t.Errorf("item = %+v", pi)
			}
			n++
		}
		if n == 0 {
			t.Error("no PaymentIntent listed")
		}
	})

	// Reconciliation's reads: one PaymentIntent, a search on cronkit's metadata, and
	// refunds and disputes in a window with their PaymentIntents expanded.
	t.Run("get payment intent", func(t *testing.T) {
		pi, err := c.GetPaymentIntent(ctx, "pi_123")
		if err != nil || !strings.HasPrefix(pi.ID, "pi_") {
			t.Fatalf("GetPaymentIntent = %+v, %v", pi, err)
		}
	})

	t.Run("search payment intents", func(t *testing.T) {
		n := 0
		for pi, err := range c.SearchPaymentIntents(ctx, map[string]string{"invoice_id": "42", "attempt": "1"}) {
			if err != nil {
				t.Fatalf("stripe-mock rejected our search: %v", err)
			}
			if !strings.HasPrefix(pi.ID, "pi_") {
				t.Errorf("item = %+v", pi)
			}
			n++
		}
		if n == 0 {
			t.Error("no PaymentIntent found")
		}
	})

	window := RefundListParams{CreatedFrom: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), CreatedTo: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)}
	t.Run("list refunds", func(t *testing.T) {
		n := 0
		for _, p := range []RefundListParams{window, {PaymentIntent: "pi_123"}} {
			for r, err := range c.ListRefunds(ctx, p) {
				if err != nil {
					t.Fatalf("stripe-mock rejected our refund list %+v: %v", p, err)
				}
				if !strings.HasPrefix(r.ID, "re_") || r.PaymentIntent == "" {
					t.Errorf("item = %+v", r)
				}
				n++
			}
		}
		if n == 0 {
			t.Error("no refund listed")
		}
	})

	t.Run("list disputes", func(t *testing.T) {
		n := 0
		for _, p := range []RefundListParams{window, {PaymentIntent: "pi_123"}} {
			for d, err := range c.ListDisputes(ctx, p) {
				if err != nil {
					t.Fatalf("stripe-mock rejected our dispute list %+v: %v", p, err)
				}
				if !strings.HasPrefix(d.ID, "dp_") && !strings.HasPrefix(d.ID, "du_") {
					t.Errorf("item = %+v", d)
				}
				n++
			}
		}
		if n == 0 {
			t.Error("no dispute listed")
		}
	})

	// Proof that stripe-mock validates at all, so the passes above mean something.
	t.Run("invalid parameters are rejected", func(t *testing.T) {
		p := &stripe.PaymentIntentCreateParams{Amount: stripe.Int64(100), Currency: stripe.String("usd")}
		p.AddExtra("not_a_stripe_parameter", "1")
		_, err := c.stripe.V1PaymentIntents.Create(ctx, p)
		if err == nil {
			t.Fatal("stripe-mock accepted an unknown parameter")
		}
		werr := c.wrapError("create payment intent", err)
		var perr *Error
		if !errors.Is(werr, ErrInvalidRequest) || !errors.As(werr, &perr) || perr.StatusCode != http.StatusBadRequest {
			t.Errorf("unknown parameter: %v, want ErrInvalidRequest (400)", werr)
		}
		_, err = c.stripe.V1PaymentIntents.Create(ctx, &stripe.PaymentIntentCreateParams{Currency: stripe.String("usd")})
		if werr := c.wrapError("create payment intent", err); !errors.Is(werr, ErrInvalidRequest) {
			t.Errorf("missing amount: %v, want ErrInvalidRequest", werr)
		}
	})

	// stripe-mock echoes the Authorization header in its 401 message.
	t.Run("bad key is redacted", func(t *testing.T) {
		const bad = "not_a_stripe_key_9f8e7d6c"
		bc := New(Config{APIKey: bad, BaseURL: base})
		_, err := bc.GetCustomer(ctx, "cus_123")
		if !errors.Is(err, ErrAuthentication) {
			t.Fatalf("err = %v, want ErrAuthentication", err)
		}
		if msg := err.Error(); strings.Contains(msg, bad) || !strings.Contains(msg, "[redacted]") {
			t.Errorf("error = %q: the key must be redacted", msg)
		}
	})
}
