package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"time"
)

// ErrDryRun is what every mutating method of DryRun returns: a dry run that reaches
// one should have planned instead, and the error stops the change before any request
// is made. (A Config.ReadOnly client refuses too, but only after reading whether a
// change is needed; DryRun refuses without asking.)
var ErrDryRun = errors.New("dry run: the orchestrator is not changed")

// Reader is the part of *Client that changes nothing in CloudStack, so a dry run may
// call it. It holds no mutating method: DryRun cannot pass a change through.
type Reader interface {
	ListAccounts(ctx context.Context) ([]Account, error)
	VMs(ctx context.Context, f ListVMs) iter.Seq2[VM, error]
	VMMetrics(ctx context.Context, accountID string) ([]VM, error)
	ListingCalls(ctx context.Context) (int, error)
	UsagePages(ctx context.Context, f ListUsage) iter.Seq2[UsagePage, error]
	UsageCoverage(ctx context.Context) (time.Time, error)
	Events(ctx context.Context, f ListEvents) iter.Seq2[Event, error]
	Volumes(ctx context.Context) iter.Seq2[Volume, error]
	PublicIPs(ctx context.Context) iter.Seq2[PublicIP, error]
}

var (
	_ Reader = (*Client)(nil)
	_ Reader = (*DryRun)(nil)
)

// DryRun stands in for *Client in a dry run: it has every method of *Client, reads go
// to Reader, and every change is refused with ErrDryRun, whatever Reader holds. A nil
// Reader refuses the reads too.
type DryRun struct {
	Reader Reader
}

// NewDryRun wires a dry run that reads the real CloudStack: NewDryRun(client), best
// with a client built with Config.ReadOnly as a second guard.
func NewDryRun(r Reader) *DryRun { return &DryRun{Reader: r} }

// ListAccounts reads through Reader.
func (d *DryRun) ListAccounts(ctx context.Context) ([]Account, error) {
	if d.Reader == nil {
		return nil, fmt.Errorf("list accounts: %w (no orchestrator to read from)", ErrDryRun)
	}
	return d.Reader.ListAccounts(ctx)
}

// VMs reads through Reader.
func (d *DryRun) VMs(ctx context.Context, f ListVMs) iter.Seq2[VM, error] {
	if d.Reader == nil {
		return func(yield func(VM, error) bool) {
			yield(VM{}, fmt.Errorf("list vms: %w (no orchestrator to read from)", ErrDryRun))
		}
	}
	return d.Reader.VMs(ctx, f)
}

// VMMetrics reads through Reader.
func (d *DryRun) VMMetrics(ctx context.Context, accountID string) ([]VM, error) {
	if d.Reader == nil {
		return nil, fmt.Errorf("vm metrics of account %q: %w (no orchestrator to read from)", accountID, ErrDryRun)
	}
	return d.Reader.VMMetrics(ctx, accountID)
}

// ListingCalls reads through Reader.
func (d *DryRun) ListingCalls(ctx context.Context) (int, error) {
	if d.Reader == nil {
		return 0, fmt.Errorf("listing calls: %w (no orchestrator to read from)", ErrDryRun)
	}
	return d.Reader.ListingCalls(ctx)
}

// UsagePages reads through Reader: collecting usage changes nothing in CloudStack.
func (d *DryRun) UsagePages(ctx context.Context, f ListUsage) iter.Seq2[UsagePage, error] {
	if d.Reader == nil {
		return func(yield func(UsagePage, error) bool) {
			yield(UsagePage{}, fmt.Errorf("list usage: %w (no orchestrator to read from)", ErrDryRun))
		}
	}
	return d.Reader.UsagePages(ctx, f)
}

// UsageCoverage reads through Reader.
func (d *DryRun) UsageCoverage(ctx context.Context) (time.Time, error) {
	if d.Reader == nil {
		return time.Time{}, fmt.Errorf("usage server metrics: %w (no orchestrator to read from)", ErrDryRun)
	}
	return d.Reader.UsageCoverage(ctx)
}

// Events reads through Reader: the event log is only read.
func (d *DryRun) Events(ctx context.Context, f ListEvents) iter.Seq2[Event, error] {
	if d.Reader == nil {
		return func(yield func(Event, error) bool) {
			yield(Event{}, fmt.Errorf("list events: %w (no orchestrator to read from)", ErrDryRun))
		}
	}
	return d.Reader.Events(ctx, f)
}

// Volumes reads through Reader.
func (d *DryRun) Volumes(ctx context.Context) iter.Seq2[Volume, error] {
	if d.Reader == nil {
		return func(yield func(Volume, error) bool) {
			yield(Volume{}, fmt.Errorf("list volumes: %w (no orchestrator to read from)", ErrDryRun))
		}
	}
	return d.Reader.Volumes(ctx)
}

// PublicIPs reads through Reader.
func (d *DryRun) PublicIPs(ctx context.Context) iter.Seq2[PublicIP, error] {
	if d.Reader == nil {
		return func(yield func(PublicIP, error) bool) {
			yield(PublicIP{}, fmt.Errorf("list public ips: %w (no orchestrator to read from)", ErrDryRun))
		}
	}
	return d.Reader.PublicIPs(ctx)
}

// StopVM refuses: a dry run stops no VM.
func (d *DryRun) StopVM(_ context.Context, id string) error {
	return fmt.Errorf("stop vm %s: %w", id, ErrDryRun)
}

// StartVM refuses: a dry run starts no VM.
func (d *DryRun) StartVM(_ context.Context, id string) error {
	return fmt.Errorf("start vm %s: %w", id, ErrDryRun)
}

// DestroyVM refuses: a dry run destroys no VM.
func (d *DryRun) DestroyVM(_ context.Context, id string, expunge bool) error {
	return fmt.Errorf("destroy vm %s (expunge %t): %w", id, expunge, ErrDryRun)
}

// DisableAccount refuses: a dry run disables no account.
func (d *DryRun) DisableAccount(_ context.Context, accountID string) error {
	return fmt.Errorf("disable account %s: %w", accountID, ErrDryRun)
}

// EnableAccount refuses: a dry run enables no account.
func (d *DryRun) EnableAccount(_ context.Context, accountID string) error {
	return fmt.Errorf("enable account %s: %w", accountID, ErrDryRun)
}
