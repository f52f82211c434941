package crontab

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/robfig/cron/v3"
	"github.com/rs/zerolog"
)

// ErrStopTimeout is returned by Scheduler.Run when running children outlive
// StopTimeout after the context is cancelled.
var ErrStopTimeout = errors.New("children still running after stop timeout")

// Scheduler runs entries in-process, for containers that have no cron (`jobs
// schedule --crontab FILE`): each run is a child process started by Start, and an
// entry never overlaps itself (a tick that finds the previous run still going is
// skipped and logged, like cron.SkipIfStillRunning).
//
// Timing is robfig/cron's, on the wall clock; tests use short schedules (any
// cron.Schedule works, not only parsed specs) and a fake Start.
type Scheduler struct {
	Entries []Entry
	// Start spawns one run of e and returns a function that waits for it to end
	// (an *exec.ExitError carries its exit code). The binary provides it, so this
	// package does not know the binary's path or environment. Its context is not
	// cancelled when Run's is: children get SIGTERM from the binary's process-group
	// handling; it is cancelled only when StopTimeout expires.
	Start func(ctx context.Context, e Entry) (wait func() error, err error)
	// Location is the zone of the scheduler's clock; entries with a zone keep theirs.
	// Nil means UTC.
	Location *time.Location
	// StopTimeout bounds the wait for running children after the context is
	// cancelled; 0 waits as long as they run.
	StopTimeout time.Duration
	// Now measures run durations; nil means time.Now.
	Now func() time.Time
}

func (s *Scheduler) now() time.Time {
	clock := s.Now
	if clock == nil {
		clock = time.Now
	}
	return clock()
}

// Run schedules the entries until ctx is cancelled, then stops starting runs and
// waits for the running ones (up to StopTimeout). It logs through zerolog.Ctx(ctx):
// one line per start, finish (with duration and exit code) and skipped tick. A clean
// stop returns nil.
func (s *Scheduler) Run(ctx context.Context) error {
	if len(s.Entries) == 0 {
		return errors.New("schedule: no entries")
	}
	if s.Start == nil {
		return errors.New("schedule: no Start function")
	}
	log := zerolog.Ctx(ctx)
	loc := s.Location
	if loc == nil {
		loc = time.UTC
	}

	// Children outlive Run's context (the binary signals them), keeping its values.
	childCtx, killChildren := context.WithCancel(context.WithoutCancel(ctx))
	defer killChildren()

	c := cron.New(cron.WithLocation(loc), cron.WithLogger(cronLogger{log}))
	var jobs []*entryJob
	for i := range s.Entries {
		e := s.Entries[i]
		sched, err := e.schedule()
		if err != nil {
			return fmt.Errorf("schedule %s:%d: %w", e.Source, e.Line, err)
		}
		if e.Name == "" {
			e.Name = e.Job()
		}
		j := &entryJob{s: s, e: e, ctx: ctx, childCtx: childCtx}
		jobs = append(jobs, j)
		c.Schedule(sched, j)
	}
	log.Info().Int("entries", len(s.Entries)).Str("tz", loc.String()).Msg("scheduler started")
	c.Start()

	<-ctx.Done()
	stopped := c.Stop() // no new ticks; done once every running tick has returned
	log.Info().Msg("scheduler stopping: waiting for running jobs")
	var timeout <-chan time.Time
	if s.StopTimeout > 0 {
		t := time.NewTimer(s.StopTimeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-stopped.Done():
		for _, j := range jobs {
			j.mu.Lock()
			if j.skipped > 0 {
				log.Warn().Str("entry", j.e.Name).Int("skipped", j.skipped).Msg("starts skipped while the previous run was still going")
			}
			j.mu.Unlock()
		}
		log.Info().Msg("scheduler stopped")
		return nil
	case <-timeout:
		killChildren()
		log.Error().Dur("stop_timeout", s.StopTimeout).Msg("scheduler stop timed out: children still running")
		return fmt.Errorf("schedule: %w (%s)", ErrStopTimeout, s.StopTimeout)
	}
}

// entryJob is one entry's cron.Job: it runs a child and waits for it, unless the
// previous child is still running.
type entryJob struct {
	s        *Scheduler
	e        Entry
	ctx      context.Context // Run's: cancelled means no new runs
	childCtx context.Context

	mu      sync.Mutex
	running bool
	since   time.Time // start of the running child
	skipped int       // ticks skipped because the previous run was still going
}

// claim marks the entry running and returns its start; false (with the running
// child's start and the entry's skipped ticks so far, this one counted) when it
// already is.
func (j *entryJob) claim() (bool, time.Time, int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.running {
		j.skipped++
		return false, j.since, j.skipped
	}
	j.running, j.since = true, j.s.now()
	return true, j.since, j.skipped
}

func (j *entryJob) release() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.running = false
}

func (j *entryJob) Run() {
	log := zerolog.Ctx(j.ctx).With().Str("entry", j.e.Name).Strs("args", j.e.Args).Logger()
	if j.ctx.Err() != nil {
		return // stopping: a tick that raced the cancellation starts nothing
	}
	ok, start, skipped := j.claim()
	if !ok {
		// An overrun is counted, so the operator sees how often the interval is
		// too short for the job (and the stop line sums them up).
		log.Warn().Time("running_since", start).Int("skipped", skipped).Msg("skipped: previous run still running")
		return
	}
	defer j.release()

	ctx := log.WithContext(j.childCtx)
	wait, err := j.s.Start(ctx, j.e)
	if err != nil {
		log.Error().Err(err).Msg("job start failed")
		return
	}
	log.Info().Msg("job started")
	err = wait()
	code := ExitCode(err)
	ev := log.Info()
	switch {
	case code == 75:
		ev = log.Warn() // lock held elsewhere: someone else is doing the work
	case err != nil:
		ev = log.Error().Err(err)
	}
	ev.Dur("duration", j.s.now().Sub(start)).Int("exit_code", code).Msg("job finished")
}

// ExitCode returns a finished child's exit code: 0 for nil, the status of an
// *exec.ExitError (128+signal when a signal killed it, as shells report), and -1 for
// any other error (the child never ran, or its status is unknown).
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return -1
	}
	if code := ee.ExitCode(); code >= 0 {
		return code
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return -1
}

// cronLogger sends robfig/cron's own messages to the run's zerolog logger: its
// routine chatter (wake, schedule) at debug level.
type cronLogger struct{ log *zerolog.Logger }

var _ cron.Logger = cronLogger{}

func (l cronLogger) Info(msg string, keysAndValues ...any) {
	l.log.Debug().Fields(keysAndValues).Msg("cron: " + msg)
}

func (l cronLogger) Error(err error, msg string, keysAndValues ...any) {
	l.log.Error().Err(err).Fields(keysAndValues).Msg("cron: " + msg)
}
