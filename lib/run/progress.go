package run

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// Progress shows a long manual run's advance on a terminal as a bar below the log
// lines. Jobs call Step; without a terminal (cron, systemd) there is no Progress and
// the logs carry the story.
//
// A Progress is also the run's log writer on a terminal (Runner routes the logger
// through it): while a bar is shown, log lines go through the bar's container, which
// prints them above the bar at its next refresh, so a line never lands on the bar's
// row. The bar is drawn by vbauerster/mpb.
type Progress struct {
	mu   sync.Mutex
	w    io.Writer // the terminal
	now  func() time.Time
	last time.Time // when the bar was last moved, to bound the updates

	// While a bar is shown: its container, the bar, what it counts and its total.
	bars  *mpb.Progress
	bar   *mpb.Bar
	what  string
	total int64
	// forceTTY draws escapes as on a terminal into any writer (tests' screens).
	forceTTY bool
}

// barRefresh is how often the bar is redrawn (and pending log lines printed).
const barRefresh = 100 * time.Millisecond

// NewProgress returns a Progress drawing on w (a terminal); w nil disables it.
func NewProgress(w io.Writer, now func() time.Time) *Progress {
	if now == nil {
		now = time.Now
	}
	return &Progress{w: w, now: now}
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

// ItemLevel is the level of a per-item log line (one hour rated, one invoice
// opened): Info, so cron's logs keep a line per item, but Debug while a bar is shown
// on a terminal, where the bar says how far the run is and the report lists every
// item; warnings and phase summaries keep their own levels. A job calls Step(what,
// 0, total) before its loop so that the bar, and the demotion, start with the first
// item.
func ItemLevel(ctx context.Context) zerolog.Level {
	if ProgressFrom(ctx).Showing() {
		return zerolog.DebugLevel
	}
	return zerolog.InfoLevel
}

// Item starts a per-item log event on the context's logger at ItemLevel; for a
// narrowed logger use log.WithLevel(run.ItemLevel(ctx)).
func Item(ctx context.Context) *zerolog.Event {
	return zerolog.Ctx(ctx).WithLevel(ItemLevel(ctx))
}

// Showing reports whether a bar is on the screen.
func (p *Progress) Showing() bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bars != nil
}

// Step reports done of total units of what (total 0: unknown). A new what replaces
// the bar; reaching total removes it. Updates are drawn at most every 100 ms.
func (p *Progress) Step(what string, done, total int64) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	complete := total > 0 && done >= total
	if p.bars != nil && what != p.what {
		p.stop()
	}
	if p.bars == nil {
		if complete {
			return // finished already (or done in one step): a bar would only flash
		}
		p.start(what, total)
	}
	if total != p.total {
		p.bar.SetTotal(max(total, 0), false)
		p.total = total
	}
	now := p.now()
	if !complete && now.Sub(p.last) < barRefresh {
		return
	}
	p.last = now
	p.bar.SetCurrent(done)
	if complete {
		// SetCurrent completed the bar; Wait lets the container draw its last frame,
		// remove it and print any pending log line.
		p.bars.Wait()
		p.bars, p.bar = nil, nil
	}
}

// start shows a bar for what. The caller holds p.mu.
func (p *Progress) start(what string, total int64) {
	p.bars = mpb.New(mpb.WithOutput(p.w), mpb.WithAutoRefresh(), mpb.WithRefreshRate(barRefresh), mpb.WithWidth(100),
		mpb.ContainerOptional(mpb.ForceTTY(), p.forceTTY))
	start := p.now()
	p.bar = p.bars.New(max(total, 0), mpb.BarStyle().Lbound("[").Rbound("]"),
		mpb.BarRemoveOnComplete(),
		mpb.PrependDecorators(
			decor.Name(what, decor.WCSyncSpaceR),
			decor.CountersNoUnit("%d/%d", decor.WCSyncSpace),
		),
		mpb.AppendDecorators(
			decor.NewPercentage("%d", decor.WC{W: 5}),
			decor.NewElapsed(decor.ET_STYLE_GO, start, decor.WC{W: 5}),
			decor.Name(" eta "),
			decor.NewAverageETA(decor.ET_STYLE_GO, start, nil),
		),
	)
	p.what, p.total, p.last = what, total, time.Time{}
}

// stop removes the bar shown and waits until the screen is clean. The caller holds
// p.mu.
func (p *Progress) stop() {
	if p.bars == nil {
		return
	}
	p.bar.Abort(true)
	p.bars.Wait()
	p.bars, p.bar = nil, nil
}

// Done removes any bar still shown (a run that stopped early), so that the report
// and the last log lines print on a clean screen. It may be called more than once.
func (p *Progress) Done() {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stop()
}

// Write prints a log line: above the bar while one is shown, else straight to the
// terminal.
func (p *Progress) Write(b []byte) (int, error) {
	if p == nil || p.w == nil {
		return len(b), nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bars != nil {
		return p.bars.Write(b)
	}
	return p.w.Write(b)
}
