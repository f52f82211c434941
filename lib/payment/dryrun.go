package payment

import (
	"context"
	"errors"
	"fmt"
	"iter"
)

// ErrDryRun is what every mutating method of DryRun returns: a dry run that reaches
// one should have planned instead, and the error stops it before anything changes at
// the provider.
var ErrDryRun = errors.New("dry run: the payment provider is not changed")

// Reader is the part of *Client that changes nothing at the provider, so a dry run
// may call it. It holds no mutating method: DryRun cannot pass a charge through.
type Reader interface {
	GetCustomer(ctx context.Context, id string) (Customer, error)
	ListPaymentIntents(ctx context.Context, p ListParams) iter.Seq2[PaymentIntent, error]
	GetPaymentIntent(ctx context.Context, id string) (PaymentIntent, error)
	SearchPaymentIntents(ctx context.Context, metadata map[string]string) iter.Seq2[PaymentIntent, error]
	ListRefunds(ctx context.Context, p RefundListParams) iter.Seq2[Refund, error]
	ListDisputes(ctx context.Context, p RefundListParams) iter.Seq2[Dispute, error]
}

var (
	_ Reader = (*Client)(nil)
	_ Reader = (*DryRun)(nil)
)

// DryRun stands in for *Client in a dry run: it has every method of *Client, reads
// go to Reader, and every change is refused with ErrDryRun, whatever Reader holds.
// A nil Reader (a dry run with no Stripe key, as billing's is) refuses the reads too.
type DryRun struct {
	Reader Reader
}

// NewDryRun wires a dry run: NewDryRun(client) to read from Stripe, NewDryRun(nil) when
// the dry run needs no provider at all (billing plans charges from the database).
func NewDryRun(r Reader) *DryRun { return &DryRun{Reader: r} }

// Charge refuses: a dry run never charges.
func (d *DryRun) Charge(_ context.Context, req ChargeRequest) (ChargeResult, error) {
	return ChargeResult{}, fmt.Errorf("charge %s (key %s): %w", req.Customer, req.IdempotencyKey, ErrDryRun)
}

// GetCustomer reads through Reader.
func (d *DryRun) GetCustomer(ctx context.Context, id string) (Customer, error) {
	if d.Reader == nil {
		return Customer{}, fmt.Errorf("get customer %s: %w (no provider to read from)", id, ErrDryRun)
	}
	return d.Reader.GetCustomer(ctx, id)
}

// ListPaymentIntents reads through Reader.
func (d *DryRun) ListPaymentIntents(ctx context.Context, p ListParams) iter.Seq2[PaymentIntent, error] {
	if d.Reader == nil {
		return refuseSeq[PaymentIntent]("list payment intents")
	}
	return d.Reader.ListPaymentIntents(ctx, p)
}

// GetPaymentIntent reads through Reader.
func (d *DryRun) GetPaymentIntent(ctx context.Context, id string) (PaymentIntent, error) {
	if d.Reader == nil {
		return PaymentIntent{}, fmt.Errorf("get payment intent %s: %w (no provider to read from)", id, ErrDryRun)
	}
	return d.Reader.GetPaymentIntent(ctx, id)
}

// SearchPaymentIntents reads through Reader.
func (d *DryRun) SearchPaymentIntents(ctx context.Context, metadata map[string]string) iter.Seq2[PaymentIntent, error] {
	if d.Reader == nil {
		return refuseSeq[PaymentIntent]("search payment intents")
	}
	return d.Reader.SearchPaymentIntents(ctx, metadata)
}

// ListRefunds reads through Reader.
func (d *DryRun) ListRefunds(ctx context.Context, p RefundListParams) iter.Seq2[Refund, error] {
	if d.Reader == nil {
		return refuseSeq[Refund]("list refunds")
	}
	return d.Reader.ListRefunds(ctx, p)
}

// ListDisputes reads through Reader.
func (d *DryRun) ListDisputes(ctx context.Context, p RefundListParams) iter.Seq2[Dispute, error] {
	if d.Reader == nil {
		return refuseSeq[Dispute]("list disputes")
	}
	return d.Reader.ListDisputes(ctx, p)
}

// refuseSeq is a listing a dry run without a reader cannot make: one ErrDryRun.
func refuseSeq[T any](op string) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		var zero T
		yield(zero, fmt.Errorf("%s: %w (no provider to read from)", op, ErrDryRun))
	}
}
