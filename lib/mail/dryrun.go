package mail

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ErrDryRun is what every mutating method of DryRunOutbox and DryRunSender returns: a
// dry run that reaches one should have planned instead, and the error stops it before
// a message is queued or sent.
var ErrDryRun = errors.New("dry run: no mail is queued or sent")

// OutboxReader is the part of *Outbox that changes nothing, so a dry run may call it
// (to say a notice would be skipped for a suppressed address). It holds no mutating
// method: DryRunOutbox cannot pass a message through.
type OutboxReader interface {
	IsSuppressed(ctx context.Context, email string, c Category) (bool, error)
	Suppressions(ctx context.Context, tx *sql.Tx, email string) ([]Suppression, error)
	ListSuppressions(ctx context.Context, q SuppressionQuery) ([]Suppression, error)
	MarketingTimes(ctx context.Context, tx *sql.Tx, email string, from, to time.Time) ([]time.Time, error)
}

var (
	_ OutboxReader  = (*Outbox)(nil)
	_ OutboxReader  = (*DryRunOutbox)(nil)
	_ MessageSender = (*DryRunSender)(nil)
)

// DryRunOutbox stands in for *Outbox in a dry run: it has every method of *Outbox,
// reads go to Reader, and queueing, delivering, requeueing, suppressing and lifting
// are refused with ErrDryRun, whatever Reader holds. A nil Reader refuses the reads
// too.
type DryRunOutbox struct {
	Reader OutboxReader
}

// NewDryRunOutbox wires a dry run: NewDryRunOutbox(&Outbox{DB: db}) to read the
// suppression list (the dry run's read-only session is enough), NewDryRunOutbox(nil)
// when the job reads nothing from the outbox (abuse today).
func NewDryRunOutbox(r OutboxReader) *DryRunOutbox { return &DryRunOutbox{Reader: r} }

// Enqueue refuses: a dry run queues nothing.
func (d *DryRunOutbox) Enqueue(_ context.Context, _ *sql.Tx, key string, _ Message) (bool, error) {
	return false, fmt.Errorf("enqueue mail %s: %w", key, ErrDryRun)
}

// EnqueueAt refuses: a dry run queues nothing.
func (d *DryRunOutbox) EnqueueAt(_ context.Context, _ *sql.Tx, key string, _ Message, _ time.Time) (Enqueued, error) {
	return Enqueued{}, fmt.Errorf("enqueue mail %s: %w", key, ErrDryRun)
}

// Deliver refuses without touching sender: a dry run sends nothing.
func (d *DryRunOutbox) Deliver(context.Context, MessageSender, int) (DeliveryReport, error) {
	return DeliveryReport{}, fmt.Errorf("deliver mail: %w", ErrDryRun)
}

// Requeue refuses: a dry run changes no message.
func (d *DryRunOutbox) Requeue(_ context.Context, id int64) error {
	return fmt.Errorf("requeue mail %d: %w", id, ErrDryRun)
}

// Suppress refuses: a dry run changes no suppression.
func (d *DryRunOutbox) Suppress(_ context.Context, _ *sql.Tx, email string, _ SuppressionKind, _ string) (bool, error) {
	return false, fmt.Errorf("suppress %s: %w", email, ErrDryRun)
}

// Lift refuses: a dry run changes no suppression.
func (d *DryRunOutbox) Lift(_ context.Context, _ *sql.Tx, email string, _ SuppressionKind) (int, error) {
	return 0, fmt.Errorf("lift suppression of %s: %w", email, ErrDryRun)
}

// IsSuppressed reads through Reader.
func (d *DryRunOutbox) IsSuppressed(ctx context.Context, email string, c Category) (bool, error) {
	if d.Reader == nil {
		return false, fmt.Errorf("is suppressed %s: %w (no outbox to read from)", email, ErrDryRun)
	}
	return d.Reader.IsSuppressed(ctx, email, c)
}

// Suppressions reads through Reader.
func (d *DryRunOutbox) Suppressions(ctx context.Context, tx *sql.Tx, email string) ([]Suppression, error) {
	if d.Reader == nil {
		return nil, fmt.Errorf("suppressions of %s: %w (no outbox to read from)", email, ErrDryRun)
	}
	return d.Reader.Suppressions(ctx, tx, email)
}

// ListSuppressions reads through Reader.
func (d *DryRunOutbox) ListSuppressions(ctx context.Context, q SuppressionQuery) ([]Suppression, error) {
	if d.Reader == nil {
		return nil, fmt.Errorf("list suppressions: %w (no outbox to read from)", ErrDryRun)
	}
	return d.Reader.ListSuppressions(ctx, q)
}

// MarketingTimes reads through Reader.
func (d *DryRunOutbox) MarketingTimes(ctx context.Context, tx *sql.Tx, email string, from, to time.Time) ([]time.Time, error) {
	if d.Reader == nil {
		return nil, fmt.Errorf("marketing times of %s: %w (no outbox to read from)", email, ErrDryRun)
	}
	return d.Reader.MarketingTimes(ctx, tx, email, from, to)
}

// DryRunSender stands in for *Sender in a dry run, so a dry run needs no SMTP
// settings: it has every method of *Sender and sends nothing.
type DryRunSender struct{}

// Send refuses: a dry run sends nothing.
func (DryRunSender) Send(_ context.Context, msg Message) error {
	return fmt.Errorf("send mail to %s: %w", msg.To, ErrDryRun)
}
