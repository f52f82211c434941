// Package crontab reads the schedules of cronkit's `jobs` binary in every form ops
// deploy them (a cron.d file or user crontab, systemd timers, Kubernetes CronJobs),
// checks them (`cronkit crontab check`), and runs them in-process for containers that
// have no cron (`cronkit schedule`).
//
// Every form is reduced to the same Entry: a 5-field cron spec in a time zone, parsed
// with robfig/cron (the parser Kubernetes uses too), and the arguments given to `jobs`.
// That common shape is what lets one check compare the three forms with each other.
package crontab

import (
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// The formats an Entry can come from; CheckReport shows them and the cross-format
// consistency check groups by them.
const (
	FormatCronD      = "cron.d"     // /etc/cron.d file: 5 fields, user, command
	FormatCrontab    = "crontab"    // a user's crontab: 5 fields, command
	FormatSystemd    = "systemd"    // a .timer (OnCalendar) and its .service (ExecStart)
	FormatKubernetes = "kubernetes" // a batch/v1 CronJob
)

// BinaryName is the base name every scheduled command must run (/usr/bin/cronkit, or
// one of its LinkPrefix links): a schedule that runs anything else is not a cronkit
// job and cannot be checked against its subcommands.
const BinaryName = "cronkit"

// LinkPrefix starts the names of the single-purpose links the package installs:
// cronkit-billing --timeout 50m runs `cronkit billing --timeout 50m`.
const LinkPrefix = BinaryName + "-"

// legacyBinaryName is the name `make build` gave the binary before it was packaged;
// schedules written for it still check.
const legacyBinaryName = "jobs"

// Entry is one scheduled run of the jobs binary, whatever file it came from.
type Entry struct {
	Source string // file the entry was read from
	Line   int    // line of the schedule in Source (1-based)
	Format string // FormatCronD, FormatCrontab, FormatSystemd or FormatKubernetes
	// Name identifies the entry in logs: the timer or CronJob name, or the job for
	// crontab lines (which have no name).
	Name string
	// Spec is the 5-field cron spec (or @descriptor); systemd's OnCalendar is
	// converted to it.
	Spec string
	// Location is the zone Spec is read in (CRON_TZ, OnCalendar's zone, timeZone).
	Location *time.Location
	// Schedule is Spec parsed in Location by robfig/cron.
	Schedule cron.Schedule
	// Args are the `jobs` arguments after the binary, e.g. [billing --timeout 50m].
	Args []string
	// User runs the command: the cron.d user field, the service's User=, or the
	// CronJob's runAsUser; empty when the format has none.
	User string
	// ConcurrencyForbid reports that the scheduler itself never starts a run while
	// the previous one is still going (systemd units, CronJobs with Forbid). Cron does
	// not: there the job's MySQL lock is the only guard (exit 75).
	ConcurrencyForbid bool
}

// Job is the job this entry runs, for grouping the same job across formats: the
// subcommand, plus its phase when the second argument is one (not a flag).
func (e Entry) Job() string {
	switch {
	case len(e.Args) == 0:
		return ""
	case len(e.Args) > 1 && !strings.HasPrefix(e.Args[1], "-"):
		return e.Args[0] + " " + e.Args[1]
	default:
		return e.Args[0]
	}
}

// location is the entry's zone, UTC when unset (cronkit's hosts run in UTC).
func (e Entry) location() *time.Location {
	if e.Location == nil {
		return time.UTC
	}
	return e.Location
}

// schedule returns the parsed schedule, parsing Spec when the entry was built by
// hand without one.
func (e Entry) schedule() (cron.Schedule, error) {
	if e.Schedule != nil {
		return e.Schedule, nil
	}
	return parseSpec(e.Spec, e.location())
}

// ParseError is a problem at one line of one schedule file; its text is
// "file:line: message", so editors and CI annotate the right line.
type ParseError struct {
	Source string
	Line   int // 0 when the problem is the whole file
	Err    error
}

func (e *ParseError) Error() string {
	if e.Line <= 0 {
		return fmt.Sprintf("%s: %v", e.Source, e.Err)
	}
	return fmt.Sprintf("%s:%d: %v", e.Source, e.Line, e.Err)
}

func (e *ParseError) Unwrap() error { return e.Err }

func lineErr(source string, line int, format string, args ...any) error {
	return &ParseError{Source: source, Line: line, Err: fmt.Errorf(format, args...)}
}

// specParser accepts what cron.d and Kubernetes accept: five fields or a descriptor
// (@hourly, @every 15m...). Seconds are not allowed: no deployed form has them.
func specParser() cron.Parser {
	return cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
}

// parseSpec parses spec in loc. A zone prefix inside the spec is refused: the zone
// comes from the format's own setting, so there is one place to look for it.
func parseSpec(spec string, loc *time.Location) (cron.Schedule, error) {
	spec = strings.TrimSpace(spec)
	if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
		return nil, fmt.Errorf("schedule %q: set the time zone outside the spec", spec)
	}
	if spec == "@reboot" {
		return nil, fmt.Errorf("schedule @reboot: runs at boot only, a cronkit job needs a schedule")
	}
	sched, err := specParser().Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("schedule %q: %w", spec, err)
	}
	if s, ok := sched.(*cron.SpecSchedule); ok {
		s.Location = loc
	}
	return sched, nil
}

// binaryArgs reports whether words run the cronkit binary and returns the arguments
// it sees: a link's job comes first (cronkit-billing --x is billing --x).
func binaryArgs(words []string) ([]string, bool) {
	if len(words) == 0 {
		return nil, false
	}
	name := path.Base(words[0])
	if name == BinaryName || name == legacyBinaryName {
		return append([]string(nil), words[1:]...), true
	}
	if job, ok := strings.CutPrefix(name, LinkPrefix); ok && job != "" {
		return append([]string{job}, words[1:]...), true
	}
	return nil, false
}

// commandArgs checks that words run the cronkit binary and returns its arguments.
func commandArgs(words []string) ([]string, error) {
	if len(words) == 0 {
		return nil, fmt.Errorf("missing command")
	}
	args, ok := binaryArgs(words)
	if !ok {
		return nil, fmt.Errorf("command %q is not the %s binary", words[0], BinaryName)
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("command %q has no subcommand", words[0])
	}
	// "cronkit /usr/bin/cronkit billing" in a user crontab: the first word was meant
	// as cron.d's user field, which a user crontab does not have.
	if strings.Contains(args[0], "/") {
		if _, ok := binaryArgs(args); ok {
			return nil, fmt.Errorf("%q before the command looks like a cron.d user field, which a user crontab has not", words[0])
		}
	}
	return args, nil
}
