package crontab

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// ErrCheckFailed is returned by CheckReport.Err when a schedule has problems, so the
// binary can exit non-zero and CI can fail on a broken crontab.
var ErrCheckFailed = errors.New("crontab check found problems")

// CheckResult is what Check found about one entry.
type CheckResult struct {
	Entry    Entry
	Next     []time.Time // the next runs, in the entry's zone
	Problems []string    // empty when the entry is OK
}

// CheckReport is the outcome of Check: one result per entry, sorted by source and line.
type CheckReport struct {
	Now     time.Time
	Results []CheckResult
}

// Problems counts the entries with at least one problem.
func (r CheckReport) Problems() int {
	n := 0
	for _, res := range r.Results {
		if len(res.Problems) > 0 {
			n++
		}
	}
	return n
}

// Err is nil when every entry is OK, else an error wrapping ErrCheckFailed.
func (r CheckReport) Err() error {
	if n := r.Problems(); n > 0 {
		return fmt.Errorf("%w: %d of %d schedules", ErrCheckFailed, n, len(r.Results))
	}
	return nil
}

// Check verifies entries the way `cronkit crontab check` reports them: the arguments
// pass validate (the binary parses them with its real flag sets; nil skips that), the
// schedule has next runs (n of them, from now, are listed), a --timeout is given and is
// shorter than the gap between runs (else a hung or slow run meets the next one),
// Kubernetes CronJobs are concurrencyPolicy Forbid, and one job scheduled in several
// formats has the same schedule and zone in all of them (compared as parsed
// schedules, so */15 and 0-59/15 agree). Problems are in the report; the error is only
// for a bad call.
func Check(entries []Entry, validate func(args []string) error, now time.Time, n int) (CheckReport, error) {
	if n < 0 {
		return CheckReport{}, fmt.Errorf("crontab check: %d next runs asked, want 0 or more", n)
	}
	sorted := slices.Clone(entries)
	sortEntries(sorted)
	rep := CheckReport{Now: now, Results: make([]CheckResult, len(sorted))}
	for i, e := range sorted {
		rep.Results[i] = checkEntry(e, validate, now, n)
	}
	checkConsistency(rep.Results)
	return rep, nil
}

// gapRuns is how many runs Check looks at to find the shortest gap between two.
const gapRuns = 48

func checkEntry(e Entry, validate func([]string) error, now time.Time, n int) CheckResult {
	res := CheckResult{Entry: e}
	problem := func(format string, args ...any) {
		res.Problems = append(res.Problems, fmt.Sprintf(format, args...))
	}
	if len(e.Args) == 0 {
		problem("no arguments: which job does it run?")
	} else if validate != nil {
		if err := validate(e.Args); err != nil {
			problem("arguments: %v", err)
		}
	}

	var gap time.Duration
	if sched, err := e.schedule(); err != nil {
		problem("%v", err)
	} else {
		runs := nextRuns(sched, now, max(n, gapRuns), e.location())
		if len(runs) == 0 {
			problem("schedule %q never runs", e.Spec)
		}
		res.Next = runs[:min(n, len(runs))]
		for i := 1; i < len(runs); i++ {
			if d := runs[i].Sub(runs[i-1]); gap == 0 || d < gap {
				gap = d
			}
		}
	}

	switch v, ok := timeoutArg(e.Args); {
	case !ok:
		problem("no --timeout: a hung run would hold the job's lock past its next start")
	default:
		d, err := time.ParseDuration(v)
		if err == nil && gap > 0 && d >= gap {
			problem("--timeout %s is not shorter than the %s between runs", v, gap)
		}
	}

	if e.Format == FormatKubernetes && !e.ConcurrencyForbid {
		problem("concurrencyPolicy is not Forbid: a slow run and the next one would run together")
	}
	return res
}

// nextRuns returns up to n run times after now, in loc; fewer when the schedule stops
// (robfig/cron gives up after five years without a match).
func nextRuns(s cron.Schedule, now time.Time, n int, loc *time.Location) []time.Time {
	var runs []time.Time
	t := now
	for len(runs) < n {
		t = s.Next(t)
		if t.IsZero() {
			break
		}
		runs = append(runs, t.In(loc))
	}
	return runs
}

// timeoutArg finds the value of --timeout (Go's flag package also takes -timeout).
func timeoutArg(args []string) (string, bool) {
	for i, a := range args {
		switch {
		case a == "--":
			return "", false
		case a == "--timeout" || a == "-timeout":
			if i+1 < len(args) {
				return args[i+1], true
			}
			return "", true
		case strings.HasPrefix(a, "--timeout="), strings.HasPrefix(a, "-timeout="):
			_, v, _ := strings.Cut(a, "=")
			return v, true
		}
	}
	return "", false
}

// checkConsistency adds a problem to every entry of a job whose schedules differ
// between formats: the cron.d file, the timers and the CronJobs are alternatives for
// the same deployment, and drifting apart silently changes when money moves.
func checkConsistency(results []CheckResult) {
	byJob := map[string][]int{}
	for i, r := range results {
		if r.Entry.Job() == "" {
			continue
		}
		if _, err := r.Entry.schedule(); err != nil {
			continue
		}
		byJob[r.Entry.Job()] = append(byJob[r.Entry.Job()], i)
	}
	jobs := make([]string, 0, len(byJob))
	for job := range byJob {
		jobs = append(jobs, job)
	}
	slices.Sort(jobs)
	for _, job := range jobs {
		keys := map[string][]string{}  // format -> schedule keys
		descr := map[string][]string{} // format -> what people read
		for _, i := range byJob[job] {
			e := results[i].Entry
			keys[e.Format] = append(keys[e.Format], scheduleKey(e))
			descr[e.Format] = append(descr[e.Format], fmt.Sprintf("%s (%s) at %s:%d", e.Spec, e.location(), e.Source, e.Line))
		}
		if len(keys) < 2 {
			continue
		}
		formats := make([]string, 0, len(keys))
		for f := range keys {
			slices.Sort(keys[f])
			formats = append(formats, f)
		}
		slices.Sort(formats)
		same := true
		for _, f := range formats[1:] {
			same = same && slices.Equal(keys[f], keys[formats[0]])
		}
		if same {
			continue
		}
		var parts []string
		for _, f := range formats {
			parts = append(parts, f+": "+strings.Join(descr[f], ", "))
		}
		msg := fmt.Sprintf("job %q is scheduled differently across formats: %s", job, strings.Join(parts, "; "))
		for _, i := range byJob[job] {
			results[i].Problems = append(results[i].Problems, msg)
		}
	}
}

// scheduleKey identifies when an entry runs, independent of how its spec is spelt.
func scheduleKey(e Entry) string {
	sched, _ := e.schedule()
	switch s := sched.(type) {
	case *cron.SpecSchedule:
		return fmt.Sprintf("spec %x %x %x %x %x %x %s", s.Second, s.Minute, s.Hour, s.Dom, s.Month, s.Dow, zoneKey(e.location()))
	case cron.ConstantDelaySchedule:
		return "every " + s.Delay.String()
	default:
		return "spec " + e.Spec + " " + zoneKey(e.location())
	}
}

// zoneKey names a zone so that the many spellings of UTC compare equal
// (CRON_TZ=UTC in cron.d, timeZone: Etc/UTC in Kubernetes).
func zoneKey(loc *time.Location) string {
	switch name := loc.String(); name {
	case "UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu",
		"GMT", "Etc/GMT", "Etc/GMT0", "GMT0", "Etc/GMT+0", "Etc/GMT-0", "GMT+0", "GMT-0",
		"Etc/Greenwich", "Greenwich":
		return "UTC"
	default:
		return name
	}
}

// WriteText prints one block per entry (where, format, spec, zone, user, arguments,
// next runs in RFC 3339 in the entry's zone, then OK or its problems) and a summary.
func (r CheckReport) WriteText(w io.Writer) error {
	var b bytes.Buffer
	for _, res := range r.Results {
		e := res.Entry
		fmt.Fprintf(&b, "%s:%d  %s  %s\n", e.Source, e.Line, e.Format, e.Name)
		fmt.Fprintf(&b, "  spec:  %s\n", e.Spec)
		fmt.Fprintf(&b, "  tz:    %s\n", e.location())
		if e.User != "" {
			fmt.Fprintf(&b, "  user:  %s\n", e.User)
		}
		fmt.Fprintf(&b, "  args:  %s\n", quoteArgs(e.Args))
		for i, t := range res.Next {
			label := "  next:  "
			if i > 0 {
				label = "         "
			}
			fmt.Fprintf(&b, "%s%s\n", label, t.Format(time.RFC3339))
		}
		if len(res.Problems) == 0 {
			b.WriteString("  OK\n\n")
			continue
		}
		for _, p := range res.Problems {
			fmt.Fprintf(&b, "  ERROR: %s\n", p)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "%d schedules checked at %s: %d with problems\n", len(r.Results), r.Now.UTC().Format(time.RFC3339), r.Problems())
	_, err := w.Write(b.Bytes())
	return err
}

// quoteArgs joins args for display, quoting the ones a shell would split.
func quoteArgs(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'\\") {
			a = strconv.Quote(a)
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}
