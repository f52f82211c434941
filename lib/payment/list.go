package payment

import (
	"context"
	"iter"
	"maps"
	"time"

	"github.com/stripe/stripe-go/v82"
)

// Customer is what the billing job needs of a Stripe customer.
type Customer struct {
	ID    string
	Email string
	// DefaultPaymentMethod is invoice_settings.default_payment_method, "" if none.
	DefaultPaymentMethod string
}

// GetCustomer fetches a customer, for the default payment method Charge uses. A
// missing or deleted customer is ErrNotFound.
func (c *Client) GetCustomer(ctx context.Context, id string) (Customer, error) {
	const op = "get customer"
	cust, err := c.stripe.V1Customers.Retrieve(ctx, id, nil)
	if err != nil {
		return Customer{}, c.wrapError(op+" "+id, err)
	}
	if cust.Deleted {
		return Customer{}, &Error{Op: op + " " + id, Message: "customer was deleted", kind: ErrNotFound}
	}
	out := Customer{ID: cust.ID, Email: cust.Email}
	if s := cust.InvoiceSettings; s != nil && s.DefaultPaymentMethod != nil {
		out.DefaultPaymentMethod = s.DefaultPaymentMethod.ID
	}
	return out, nil
}

// ListParams narrows a PaymentIntent listing.
type ListParams struct {
	// Customer keeps one customer's PaymentIntents; empty means all.
	Customer string
	// CreatedFrom (inclusive) and CreatedTo (exclusive) bound the creation time, so
	// that consecutive periods neither overlap nor leave gaps; zero means unbounded.
	// Stripe stores whole seconds.
	CreatedFrom, CreatedTo time.Time
}

// PaymentIntent is the summary of a Stripe PaymentIntent that reconciliation compares
// with our invoices.
type PaymentIntent struct {
	ID             string
	Customer       string
	AmountMinor    int64
	AmountReceived int64
	Currency       string
	Status         string
	// Metadata holds what Charge was given (invoice_id, attempt).
	Metadata map[string]string
	Created  time.Time
}

// ListPaymentIntents streams PaymentIntents, newest first, fetching pages of 100 with
// starting_after as the loop goes, so memory stays flat however many there are. The
// first error ends the sequence. Nothing is requested until the loop starts, and
// breaking out of the loop stops the paging.
func (c *Client) ListPaymentIntents(ctx context.Context, p ListParams) iter.Seq2[PaymentIntent, error] {
	return func(yield func(PaymentIntent, error) bool) {
		params := &stripe.PaymentIntentListParams{}
		params.Limit = stripe.Int64(100)
		if p.Customer != "" {
			params.Customer = stripe.String(p.Customer)
		}
		if !p.CreatedFrom.IsZero() || !p.CreatedTo.IsZero() {
			r := &stripe.RangeQueryParams{}
			if !p.CreatedFrom.IsZero() {
				r.GreaterThanOrEqual = ceilUnix(p.CreatedFrom)
			}
			if !p.CreatedTo.IsZero() {
				r.LesserThan = ceilUnix(p.CreatedTo)
			}
			params.CreatedRange = r
		}
		for pi, err := range c.stripe.V1PaymentIntents.List(ctx, params) {
			if err != nil {
				yield(PaymentIntent{}, c.wrapError("list payment intents", err))
				return
			}
			if !yield(summarize(pi), nil) {
				return
			}
		}
	}
}

// ceilUnix rounds up to Stripe's whole seconds: an intent created at second s is at
// or after t exactly when s >= ceil(t), and before t exactly when s < ceil(t).
func ceilUnix(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

func summarize(pi *stripe.PaymentIntent) PaymentIntent {
	out := PaymentIntent{
		ID:             pi.ID,
		AmountMinor:    pi.Amount,
		AmountReceived: pi.AmountReceived,
		Currency:       string(pi.Currency),
		Status:         string(pi.Status),
		Metadata:       maps.Clone(pi.Metadata),
		Created:        time.Unix(pi.Created, 0).UTC(),
	}
	if pi.Customer != nil {
		out.Customer = pi.Customer.ID
	}
	return out
}
