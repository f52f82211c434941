package mail

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ErrDryRun is what every mutating method of DryRunOutbox and DryRunSender returns: a
// dry run that reaches one should have planned instead, and the error stops it before
// a message is queued or sent.
var ErrDryRun = errors.New("dry run: no mail is queued or sent")

// OutboxReader is the part of *Outbox that changes nothing, so a dry run may call it
// (to say a notice would be skipped for a suppressed address). It holds no mutating
// method: DryRunOutbox cannot pass a message through.
type OutboxReader interface {
	IsSuppressed(ctx context.Context, email string) (bool, error)
}

var (
	_ OutboxReader  = (*Outbox)(nil)
	_ OutboxReader  = (*DryRunOutbox)(nil)
	_ MessageSender = (*DryRunSender)(nil)
)

// DryRunOutbox stands in for *Outbox in a dry run: it has every method of *Outbox,
// reads go to Reader, and queueing, delivering, requeueing and suppressing are refused
// with ErrDryRun, whatever Reader holds. A nil Reader refuses the reads too.
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

// Deliver refuses without touching sender: a dry run sends nothing.
func (d *DryRunOutbox) Deliver(context.Context, MessageSender, int) (DeliveryReport, error) {
	return DeliveryReport{}, fmt.Errorf("deliver mail: %w", ErrDryRun)
}

// Requeue refuses: a dry run changes no message.
func (d *DryRunOutbox) Requeue(_ context.Context, id int64) error {
	return fmt.Errorf("requeue mail %d: %w", id, ErrDryRun)
}

// Suppress refuses: a dry run changes no suppression.
func (d *DryRunOutbox) Suppress(_ context.Context, email, _ string) error {
	return fmt.Errorf("suppress %s: %w", email, ErrDryRun)
}

// IsSuppressed reads through Reader.
func (d *DryRunOutbox) IsSuppressed(ctx context.Context, email string) (bool, error) {
	if d.Reader == nil {
		return false, fmt.Errorf("is suppressed %s: %w (no outbox to read from)", email, ErrDryRun)
	}
	return d.Reader.IsSuppressed(ctx, email)
}

// DryRunSender stands in for *Sender in a dry run, so a dry run needs no SMTP
// settings: it has every method of *Sender and sends nothing.
type DryRunSender struct{}

// Send refuses: a dry run sends nothing.
func (DryRunSender) Send(_ context.Context, msg Message) error {
	return fmt.Errorf("send mail to %s: %w", msg.To, ErrDryRun)
}
