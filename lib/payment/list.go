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
	// PaymentMethod and LatestCharge are the pm_... charged and its ch_..., so a
	// payment recorded from Stripe's object says what was charged.
	PaymentMethod string
	LatestCharge  string
	// ErrorCode and DeclineCode are last_payment_error's code and decline_code: why a
	// PaymentIntent is back in requires_payment_method.
	ErrorCode   string
	DeclineCode string
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
		params.CreatedRange = createdRange(p.CreatedFrom, p.CreatedTo)
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

// createdRange is Stripe's created[gte]/created[lt] for [from, to); nil when both are
// zero (unbounded).
func createdRange(from, to time.Time) *stripe.RangeQueryParams {
	if from.IsZero() && to.IsZero() {
		return nil
	}
	r := &stripe.RangeQueryParams{}
	if !from.IsZero() {
		r.GreaterThanOrEqual = ceilUnix(from)
	}
	if !to.IsZero() {
		r.LesserThan = ceilUnix(to)
	}
	return r
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
	if pi.PaymentMethod != nil {
		out.PaymentMethod = pi.PaymentMethod.ID
	}
	if pi.LatestCharge != nil {
		out.LatestCharge = pi.LatestCharge.ID
	}
	if e := pi.LastPaymentError; e != nil {
		out.ErrorCode, out.DeclineCode = string(e.Code), string(e.DeclineCode)
	}
	return out
}
