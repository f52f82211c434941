package abuse

import (
	"context"
	"errors"
	"sync"

	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/run"
)

// errNotCalled is what the breaker answers once CloudStack was found unreachable:
// the call was not made, the item waits for the next run.
var errNotCalled = errors.New("not called: cloudstack unreachable this run")

// breaker stops calling CloudStack for the rest of the run after the first call that
// failed at the transport level (run.IsUnreachable): every later call would only time
// out or be refused in turn. An answer CloudStack gave (an errorcode) stays the
// item's problem. It is safe for concurrent use.
type breaker struct {
	o    Orchestrator
	mu   sync.Mutex
	down error
	left int
}

// err is the run's error for a breaker that tripped, or nil.
func (b *breaker) err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down == nil {
		return nil
	}
	return run.Unreachable("cloudstack", b.down, b.left)
}

// skip reports whether calls are off, counting the item it skips.
func (b *breaker) skip() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.down == nil {
		return nil
	}
	b.left++
	return errNotCalled
}

// after records the outcome of a call made with ctx.
func (b *breaker) after(ctx context.Context, err error) error {
	if err != nil && ctx.Err() == nil && run.IsUnreachable(err) {
		b.mu.Lock()
		if b.down == nil {
			b.down = err
		}
		b.left++
		b.mu.Unlock()
	}
	return err
}

func (b *breaker) VMMetrics(ctx context.Context, id string) ([]orchestrator.VM, error) {
	if err := b.skip(); err != nil {
		return nil, err
	}
	vms, err := b.o.VMMetrics(ctx, id)
	return vms, b.after(ctx, err)
}

// ListingCalls is no item: a skip or a failure is not counted as one left.
func (b *breaker) ListingCalls(ctx context.Context) (int, error) {
	b.mu.Lock()
	down := b.down
	b.mu.Unlock()
	if down != nil {
		return 0, errNotCalled
	}
	n, err := b.o.ListingCalls(ctx)
	if err != nil && ctx.Err() == nil && run.IsUnreachable(err) {
		b.mu.Lock()
		if b.down == nil {
			b.down = err
		}
		b.mu.Unlock()
	}
	return n, err
}

func (b *breaker) StopVM(ctx context.Context, id string) error {
	return b.call(ctx, func() error { return b.o.StopVM(ctx, id) })
}

func (b *breaker) StartVM(ctx context.Context, id string) error {
	return b.call(ctx, func() error { return b.o.StartVM(ctx, id) })
}

func (b *breaker) DestroyVM(ctx context.Context, id string, expunge bool) error {
	return b.call(ctx, func() error { return b.o.DestroyVM(ctx, id, expunge) })
}

func (b *breaker) DisableAccount(ctx context.Context, id string) error {
	return b.call(ctx, func() error { return b.o.DisableAccount(ctx, id) })
}

func (b *breaker) EnableAccount(ctx context.Context, id string) error {
	return b.call(ctx, func() error { return b.o.EnableAccount(ctx, id) })
}

func (b *breaker) call(ctx context.Context, fn func() error) error {
	if err := b.skip(); err != nil {
		return err
	}
	return b.after(ctx, fn())
}
