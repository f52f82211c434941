package run

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/run/runtest"
)

// tickingClock advances by step at every reading, so every Step passes the
// progress's rate limit.
func tickingClock(step time.Duration) func() time.Time {
	var mu sync.Mutex
	t := time.Date(2026, 11, 30, 4, 47, 0, 0, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(step)
		return t
	}
}

// terminal is a Screen that also keeps the raw bytes, to prove a bar was drawn.
type terminal struct {
	runtest.Screen
	mu  sync.Mutex
	raw bytes.Buffer
}

func (t *terminal) Write(b []byte) (int, error) {
	t.mu.Lock()
	t.raw.Write(b)
	t.mu.Unlock()
	return t.Screen.Write(b)
}

func (t *terminal) Raw() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.raw.String()
}

// newTestProgress draws as on a terminal into term.
func newTestProgress(term io.Writer) *Progress {
	p := NewProgress(term, tickingClock(time.Second))
	p.forceTTY = true
	return p
}

// consoleLine is a log line as the console logger writes it, from its first column.
var consoleLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (DBG|INF|WRN|ERR) `)

func TestLogLinesPrintAboveTheBarNeverOnIt(t *testing.T) {
	term := &terminal{}
	p := newTestProgress(term)
	log := NewLogger(p, "console", true, zerolog.InfoLevel, map[string]any{"job": "billing"})
	const total = 40
	p.Step("rating hours", 0, total)
	for i := int64(1); i <= total; i++ {
		if i%4 == 0 {
			log.Info().Int64("hour", i).Msg("a line while the bar is drawn")
		}
		p.Step("rating hours", i, total)
		time.Sleep(10 * time.Millisecond) // let the bar redraw between lines
	}
	log.Info().Msg("after the bar")

	if n := strings.Count(term.Raw(), "rating hours"); n < 2 {
		t.Fatalf("the bar was drawn %d times; the test proves nothing:\n%q", n, term.Raw())
	}
	lines := term.Lines()
	if len(lines) != total/4+1 {
		t.Errorf("%d lines on the screen, want %d log lines", len(lines), total/4+1)
	}
	for _, l := range lines {
		if !consoleLine.MatchString(l) || strings.Contains(l, "rating hours") {
			t.Errorf("not a log line from its first column: %q", l)
		}
	}
	if len(term.Unknown) != 0 {
		t.Errorf("escapes the screen does not know: %q", term.Unknown)
	}
	if t.Failed() {
		t.Logf("screen:\n%s\nraw:\n%q", strings.Join(lines, "\n"), term.Raw())
	}
}

func TestANewPhaseReplacesTheBarAndDoneRemovesIt(t *testing.T) {
	term := &terminal{}
	p := newTestProgress(term)
	p.Step("late usage hours", 0, 10)
	p.Step("late usage hours", 3, 10)
	time.Sleep(3 * barRefresh / 2)
	p.Step("rating hours", 0, 100) // the late scan stopped early: its bar goes
	p.Step("rating hours", 50, 100)
	time.Sleep(3 * barRefresh / 2)
	p.Done()
	p.Done()
	fmt.Fprintln(p, "report")
	raw := term.Raw()
	if !strings.Contains(raw, "late usage hours") || !strings.Contains(raw, "rating hours") {
		t.Fatalf("bars not drawn: %q", raw)
	}
	if got := term.Lines(); len(got) != 1 || got[0] != "report" {
		t.Fatalf("screen after Done: %q", got)
	}
	// A phase already complete at its first step draws nothing.
	before := len(term.Raw())
	p.Step("closing 2025-03", 1, 1)
	if p.Showing() || len(term.Raw()) != before {
		t.Fatalf("a one-step phase drew a bar: %q", term.Raw()[before:])
	}
}

func TestItemLinesAreDebugOnlyWhileABarIsShown(t *testing.T) {
	if got := ItemLevel(context.Background()); got != zerolog.InfoLevel {
		t.Errorf("no progress (cron): %v, want info", got)
	}
	disabled := WithProgress(context.Background(), NewProgress(nil, nil))
	if got := ItemLevel(disabled); got != zerolog.InfoLevel {
		t.Errorf("progress without a terminal: %v, want info", got)
	}
	p := newTestProgress(io.Discard)
	ctx := WithProgress(context.Background(), p)
	if got := ItemLevel(ctx); got != zerolog.InfoLevel {
		t.Errorf("terminal, no bar yet: %v, want info", got)
	}
	p.Step("rating hours", 0, 3)
	if got := ItemLevel(ctx); got != zerolog.DebugLevel {
		t.Errorf("bar shown: %v, want debug", got)
	}
	var logs bytes.Buffer
	ctx = zerolog.New(&logs).Level(zerolog.InfoLevel).WithContext(ctx)
	Item(ctx).Msg("hour rated")
	zerolog.Ctx(ctx).Warn().Msg("a warning")
	p.Step("rating hours", 3, 3)
	if got := ItemLevel(ctx); got != zerolog.InfoLevel {
		t.Errorf("bar complete: %v, want info", got)
	}
	Item(ctx).Msg("invoice opened")
	want := `{"level":"warn","message":"a warning"}` + "\n" + `{"level":"info","message":"invoice opened"}` + "\n"
	if logs.String() != want {
		t.Errorf("logs:\n%s\nwant:\n%s", logs.String(), want)
	}
}

// TestRunnerOnATerminal runs a job as an operator would see it: the bar below the
// lines that matter, per-item lines demoted, the bar gone before the report, the
// report folded.
func TestRunnerOnATerminal(t *testing.T) {
	term := &terminal{}
	r := &Runner{Job: "billing", Host: "h", Version: "v", DryRun: true, Output: "text", LogFormat: "console",
		LogLevel: zerolog.InfoLevel, Stdout: term, Stderr: term, Progress: newTestProgress(term),
		NewID: func(time.Time) string { return "01JTERMINAL000000000000000" }}
	h0 := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	code := ExitCode(r.Run(context.Background(), nil, func(ctx context.Context) (*Report, error) {
		rep := NewReport("billing")
		const hours = 30
		progress := ProgressFrom(ctx)
		progress.Step("rating hours", 0, hours)
		for i := range int64(hours) {
			h := h0.Add(time.Duration(i) * time.Hour)
			rep.Act("rate", "hour "+h.Format("2006-01-02T15:04Z"), "2 charges: EUR 0.50",
				Seq("hour", h), Tally("charges", 2), Tally("unrated", 0), Amounts("amounts", map[string]string{"EUR": "0.50"}))
			Item(ctx).Str("hour", h.Format(time.RFC3339)).Msg("hour rated")
			if i == 10 {
				zerolog.Ctx(ctx).Warn().Msg("price list overlaps")
			}
			progress.Step("rating hours", i+1, hours)
			time.Sleep(5 * time.Millisecond)
		}
		zerolog.Ctx(ctx).Info().Int("hours", hours).Msg("rating caught up")
		return rep, nil
	}))
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	screen := strings.Join(term.Lines(), "\n")
	for _, want := range []string{
		"WRN price list overlaps",
		"INF rating caught up",
		"rate   hour 2026-10-01T00:00Z .. 2026-10-02T05:00Z (30)  each 2 charges: EUR 0.50; total 60 charges, EUR 15.00",
		"INF run finished",
	} {
		if !strings.Contains(screen, want) {
			t.Errorf("screen lacks %q", want)
		}
	}
	if strings.Contains(screen, "hour rated") || strings.Contains(screen, "rating hours") {
		t.Errorf("per-item lines or the bar left on the screen")
	}
	if !strings.Contains(term.Raw(), "rating hours") {
		t.Errorf("no bar was drawn")
	}
	report := strings.Index(screen, "billing 01JTERMINAL000000000000000 dry run")
	if report < 0 || report > strings.Index(screen, "INF run finished") || report < strings.Index(screen, "INF rating caught up") {
		t.Errorf("report not between the job's lines and the run's end")
	}
	if t.Failed() {
		t.Logf("screen:\n%s", screen)
	}
}
