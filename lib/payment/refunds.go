package payment

import (
	"context"
	"iter"
	"maps"
	"time"

	"github.com/stripe/stripe-go/v82"
)

// RefundListParams narrows a refund (or dispute) listing.
type RefundListParams struct {
	// PaymentIntent keeps one PaymentIntent's refunds; empty means all.
	PaymentIntent string
	// CreatedFrom (inclusive) and CreatedTo (exclusive) bound the refund's own
	// creation time, not its PaymentIntent's: a refund issued today on last month's
	// payment belongs to today. Zero means unbounded.
	CreatedFrom, CreatedTo time.Time
}

// Refund is the summary of a Stripe refund that reconciliation compares with the
// refunds cronkit recorded.
type Refund struct {
	ID            string
	PaymentIntent string
	Charge        string
	AmountMinor   int64
	Currency      string
	// Status is pending, succeeded, failed, canceled or requires_action.
	Status  string
	Reason  string
	Created time.Time
	// IntentMetadata is the metadata of the refunded PaymentIntent (invoice_id,
	// attempt), read through expansion: the refund's own metadata is empty.
	IntentMetadata map[string]string
}

// ListRefunds streams refunds newest first, with their PaymentIntents expanded for
// the metadata, a page of 100 at a time (starting_after), so memory stays flat.
func (c *Client) ListRefunds(ctx context.Context, p RefundListParams) iter.Seq2[Refund, error] {
	return func(yield func(Refund, error) bool) {
		params := &stripe.RefundListParams{}
		params.Limit = stripe.Int64(100)
		params.AddExpand("data.payment_intent")
		if p.PaymentIntent != "" {
			params.PaymentIntent = stripe.String(p.PaymentIntent)
		}
		params.CreatedRange = createdRange(p.CreatedFrom, p.CreatedTo)
		for r, err := range c.stripe.V1Refunds.List(ctx, params) {
			if err != nil {
				yield(Refund{}, c.wrapError("list refunds", err))
				return
			}
			out := Refund{ID: r.ID, AmountMinor: r.Amount, Currency: string(r.Currency), Status: string(r.Status),
				Reason: string(r.Reason), Created: time.Unix(r.Created, 0).UTC()}
			if r.Charge != nil {
				out.Charge = r.Charge.ID
			}
			if pi := r.PaymentIntent; pi != nil {
				out.PaymentIntent, out.IntentMetadata = pi.ID, maps.Clone(pi.Metadata)
			}
			if !yield(out, nil) {
				return
			}
		}
	}
}

// Dispute is the summary of a Stripe dispute (a chargeback): money the customer's
// bank took back, or may.
type Dispute struct {
	ID            string
	PaymentIntent string
	Charge        string
	AmountMinor   int64
	Currency      string
	// Status is warning_needs_response, warning_under_review, warning_closed,
	// needs_response, under_review, won, lost or prevented.
	Status  string
	Reason  string
	Created time.Time
	// EvidenceDueBy is when a response must reach Stripe; zero when none is possible.
	EvidenceDueBy time.Time
	// IntentMetadata is the disputed PaymentIntent's metadata, read through expansion.
	IntentMetadata map[string]string
}

// ListDisputes streams disputes newest first, as ListRefunds streams refunds, with
// their PaymentIntents expanded for the metadata.
func (c *Client) ListDisputes(ctx context.Context, p RefundListParams) iter.Seq2[Dispute, error] {
	return func(yield func(Dispute, error) bool) {
		params := &stripe.DisputeListParams{}
		params.Limit = stripe.Int64(100)
		params.AddExpand("data.payment_intent")
		if p.PaymentIntent != "" {
			params.PaymentIntent = stripe.String(p.PaymentIntent)
		}
		params.CreatedRange = createdRange(p.CreatedFrom, p.CreatedTo)
		for d, err := range c.stripe.V1Disputes.List(ctx, params) {
			if err != nil {
				yield(Dispute{}, c.wrapError("list disputes", err))
				return
			}
			out := Dispute{ID: d.ID, AmountMinor: d.Amount, Currency: string(d.Currency), Status: string(d.Status),
				Reason: string(d.Reason), Created: time.Unix(d.Created, 0).UTC()}
			if d.Charge != nil {
				out.Charge = d.Charge.ID
			}
			if pi := d.PaymentIntent; pi != nil {
				out.PaymentIntent, out.IntentMetadata = pi.ID, maps.Clone(pi.Metadata)
			}
			if e := d.EvidenceDetails; e != nil && e.DueBy > 0 {
				out.EvidenceDueBy = time.Unix(e.DueBy, 0).UTC()
			}
			if !yield(out, nil) {
				return
			}
		}
	}
}
