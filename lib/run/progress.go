package run

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// Progress shows a long manual run's advance on a terminal, one rewritten line. Jobs
// call Step; without a terminal (cron, systemd) it is a no-op and logs carry the story.
type Progress struct {
	mu    sync.Mutex
	w     io.Writer
	now   func() time.Time
	last  time.Time
	start time.Time
}

// NewProgress returns a Progress drawing on w (a terminal); w nil disables it.
func NewProgress(w io.Writer, now func() time.Time) *Progress {
	if now == nil {
		now = time.Now
	}
	return &Progress{w: w, now: now, start: now()}
}

type progressKey struct{}

// WithProgress attaches p to ctx.
func WithProgress(ctx context.Context, p *Progress) context.Context {
	return context.WithValue(ctx, progressKey{}, p)
}

// ProgressFrom returns the run's Progress, or a disabled one.
func ProgressFrom(ctx context.Context) *Progress {
	if p, ok := ctx.Value(progressKey{}).(*Progress); ok && p != nil {
		return p
	}
	return &Progress{}
}

// Step reports done of total units of what (total 0: unknown), at most 10 times a
// second.
func (p *Progress) Step(what string, done, total int64) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if now.Sub(p.last) < 100*time.Millisecond && done != total {
		return
	}
	p.last = now
	el := now.Sub(p.start).Round(time.Second)
	if total > 0 {
		fmt.Fprintf(p.w, "\r\033[K%s %d/%d (%d%%) %s", what, done, total, done*100/total, el)
	} else {
		fmt.Fprintf(p.w, "\r\033[K%s %d %s", what, done, el)
	}
}

// Done ends the progress line.
func (p *Progress) Done() {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.last.IsZero() {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
