package crontab

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ParseSystemd reads every *.timer at the top of fsys with the .service it starts
// (Unit=, or the timer's own name): one Entry per OnCalendar= line, its spec converted
// to 5-field cron, its zone from OnCalendar's zone suffix (UTC without one, the zone
// cronkit's hosts run in), its arguments from the service's ExecStart=. source names
// the directory in Entry.Source and errors (fsys is usually os.DirFS(source)).
//
// Only calendar timers whose OnCalendar has a cron equivalent are accepted; monotonic
// timers (OnBootSec=...), seconds, years and weekday-plus-day combinations are
// refused with an error saying so. systemd never starts a unit that is still active,
// so the entries are ConcurrencyForbid.
func ParseSystemd(fsys fs.FS, source string) ([]Entry, error) {
	timers, err := fs.Glob(fsys, "*.timer")
	if err != nil {
		return nil, &ParseError{Source: source, Err: err}
	}
	slices.Sort(timers)
	var entries []Entry
	var errs []error
	for _, name := range timers {
		es, err := parseTimer(fsys, source, name)
		entries = append(entries, es...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return entries, errors.Join(errs...)
}

func parseTimer(fsys fs.FS, dir, name string) ([]Entry, error) {
	src := filepath.Join(dir, name)
	timer, err := readUnit(fsys, name, src)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, key := range []string{"OnActiveSec", "OnBootSec", "OnStartupSec", "OnUnitActiveSec", "OnUnitInactiveSec"} {
		for _, v := range timer.values("Timer", key) {
			errs = append(errs, lineErr(src, v.line, "%s= is a monotonic timer with no cron equivalent; use OnCalendar=", key))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...) // it would fire at times no check can show
	}
	cals := timer.values("Timer", "OnCalendar")
	if len(cals) == 0 {
		errs = append(errs, lineErr(src, 0, "no OnCalendar= in [Timer]"))
	}

	svcName := strings.TrimSuffix(name, ".timer") + ".service"
	svcLine := 0
	if u, ok := timer.last("Timer", "Unit"); ok {
		svcName, svcLine = u.value, u.line
	}
	args, user, err := parseService(fsys, dir, svcName)
	if err != nil {
		var pe *ParseError
		if !errors.As(err, &pe) {
			err = lineErr(src, svcLine, "service %s: %v", svcName, err)
		}
		return nil, errors.Join(append(errs, err)...)
	}

	var entries []Entry
	for _, cal := range cals {
		spec, loc, err := calendarToCron(cal.value)
		if err != nil {
			errs = append(errs, lineErr(src, cal.line, "OnCalendar=%s: %v", cal.value, err))
			continue
		}
		sched, err := parseSpec(spec, loc)
		if err != nil {
			errs = append(errs, lineErr(src, cal.line, "OnCalendar=%s: %v", cal.value, err))
			continue
		}
		entries = append(entries, Entry{
			Source: src, Line: cal.line, Format: FormatSystemd,
			Name: strings.TrimSuffix(name, ".timer"), Spec: spec, Location: loc, Schedule: sched,
			Args: args, User: user, ConcurrencyForbid: true,
		})
	}
	return entries, errors.Join(errs...)
}

// parseService returns the jobs arguments of a oneshot service's single ExecStart=.
func parseService(fsys fs.FS, dir, name string) (args []string, user string, err error) {
	src := filepath.Join(dir, name)
	svc, err := readUnit(fsys, name, src)
	if err != nil {
		return nil, "", err
	}
	execs := svc.values("Service", "ExecStart")
	switch len(execs) {
	case 0:
		return nil, "", lineErr(src, 0, "no ExecStart= in [Service]")
	case 1:
	default:
		return nil, "", lineErr(src, execs[1].line, "several ExecStart= lines: one run of jobs per service")
	}
	ex := execs[0]
	if strings.IndexAny(ex.value, "@-:+!") == 0 {
		return nil, "", lineErr(src, ex.line, "ExecStart= prefix %q is not supported: jobs' exit code must reach systemd as is", ex.value[0])
	}
	cmd, err := expandSpecifiers(ex.value)
	if err != nil {
		return nil, "", lineErr(src, ex.line, "ExecStart=: %v", err)
	}
	words, err := splitWords(cmd, false)
	if err == nil {
		args, err = commandArgs(words)
	}
	if err != nil {
		return nil, "", lineErr(src, ex.line, "ExecStart=: %v", err)
	}
	if u, ok := svc.last("Service", "User"); ok {
		user = u.value
	}
	return args, user, nil
}

// expandSpecifiers resolves %% and refuses other specifiers and $VAR substitution,
// whose values come from the host and not from the file.
func expandSpecifiers(s string) (string, error) {
	if strings.Contains(s, "$") {
		return "", fmt.Errorf("environment variable substitution is not supported")
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 >= len(s) || s[i+1] != '%' {
			return "", fmt.Errorf("specifiers like %%n are not supported (write %%%% for %%)")
		}
		b.WriteByte('%')
		i++
	}
	return b.String(), nil
}

type unitValue struct {
	value string
	line  int
}

// unitFile is a parsed systemd unit: section -> key -> assignments in file order.
type unitFile map[string]map[string][]unitValue

// values returns a list setting's values; an empty assignment resets the list, as
// systemd does.
func (u unitFile) values(section, key string) []unitValue {
	var out []unitValue
	for _, v := range u[section][key] {
		if v.value == "" {
			out = out[:0]
			continue
		}
		out = append(out, v)
	}
	return out
}

// last returns a single-valued setting: the last assignment wins.
func (u unitFile) last(section, key string) (unitValue, bool) {
	vs := u[section][key]
	if len(vs) == 0 || vs[len(vs)-1].value == "" {
		return unitValue{}, false
	}
	return vs[len(vs)-1], true
}

func readUnit(fsys fs.FS, name, src string) (unitFile, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, &ParseError{Source: src, Err: err}
	}
	defer f.Close()
	return parseUnit(f, src)
}

// parseUnit reads the unit file syntax: [Section], Key=Value, # and ; comments,
// backslash continuation lines.
func parseUnit(r io.Reader, src string) (unitFile, error) {
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(r)
	var cont strings.Builder
	contLine := 0
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if cont.Len() == 0 && (line == "" || line[0] == '#' || line[0] == ';') {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			if cont.Len() == 0 {
				contLine = n
			}
			cont.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		at := n
		if cont.Len() > 0 {
			cont.WriteString(line)
			line, at = cont.String(), contLine
			cont.Reset()
		}
		if strings.HasPrefix(line, "[") {
			if !strings.HasSuffix(line, "]") {
				return nil, lineErr(src, at, "bad section header %q", line)
			}
			section = line[1 : len(line)-1]
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			return nil, lineErr(src, at, "not a Key=Value line in a [Section]: %q", line)
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if u[section] == nil {
			u[section] = map[string][]unitValue{}
		}
		u[section][key] = append(u[section][key], unitValue{value: value, line: at})
	}
	if err := sc.Err(); err != nil {
		return nil, &ParseError{Source: src, Err: fmt.Errorf("read: %w", err)}
	}
	return u, nil
}

// calendarShorthand converts systemd's named calendar events (systemd.time(7)).
func calendarShorthand(s string) (string, bool) {
	switch strings.ToLower(s) {
	case "minutely":
		return "* * * * *", true
	case "hourly":
		return "0 * * * *", true
	case "daily":
		return "0 0 * * *", true
	case "weekly": // systemd's weeks start on Monday, cron's @weekly is Sunday
		return "0 0 * * 1", true
	case "monthly":
		return "0 0 1 * *", true
	case "yearly", "annually":
		return "0 0 1 1 *", true
	case "quarterly":
		return "0 0 1 1,4,7,10 *", true
	case "semiannually":
		return "0 0 1 1,7 *", true
	}
	return "", false
}

// calendarToCron converts a systemd calendar event, `[weekdays] [[*-]month-day]
// [hour:minute[:00]] [zone]` or a shorthand, to a 5-field cron spec and its zone.
func calendarToCron(expr string) (string, *time.Location, error) {
	tokens := strings.Fields(expr)
	if len(tokens) == 0 {
		return "", nil, fmt.Errorf("empty calendar event")
	}
	loc := time.UTC
	if len(tokens) > 1 {
		if l, err := loadLocation(tokens[len(tokens)-1]); err == nil {
			loc, tokens = l, tokens[:len(tokens)-1]
		}
	}
	if len(tokens) == 1 {
		if spec, ok := calendarShorthand(tokens[0]); ok {
			return spec, loc, nil
		}
	}

	dow, month, dom, hour, minute := "*", "*", "*", "0", "0"
	i := 0
	var err error
	if i < len(tokens) && isLetter(tokens[i][0]) {
		if dow, err = convertWeekdays(tokens[i]); err != nil {
			return "", nil, err
		}
		i++
	}
	if i < len(tokens) && strings.Contains(tokens[i], "-") && !strings.Contains(tokens[i], ":") {
		if month, dom, err = convertDate(tokens[i]); err != nil {
			return "", nil, err
		}
		i++
	}
	if i < len(tokens) && strings.Contains(tokens[i], ":") {
		if hour, minute, err = convertTime(tokens[i]); err != nil {
			return "", nil, err
		}
		i++
	}
	if i < len(tokens) {
		return "", nil, fmt.Errorf("unsupported part %q (supported: weekdays, *-month-day, hour:minute[:00], a zone, or a shorthand like hourly)", tokens[i])
	}
	if dow != "*" && dom != "*" {
		return "", nil, fmt.Errorf("weekday and day of month together mean both in systemd but either in cron")
	}
	return strings.Join([]string{minute, hour, dom, month, dow}, " "), loc, nil
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// convertDate converts `[*-]month-day`; a year other than * has no cron equivalent.
func convertDate(s string) (month, dom string, err error) {
	parts := strings.Split(s, "-")
	switch len(parts) {
	case 2:
	case 3:
		if parts[0] != "*" {
			return "", "", fmt.Errorf("year %q: cron has no year, use *", parts[0])
		}
		parts = parts[1:]
	default:
		return "", "", fmt.Errorf("date %q: want *-month-day", s)
	}
	if strings.Contains(parts[1], "~") {
		return "", "", fmt.Errorf("date %q: ~ (days from the end of the month) has no cron equivalent", s)
	}
	if month, err = convertComponent(parts[0], 1, 12); err != nil {
		return "", "", fmt.Errorf("month: %w", err)
	}
	if dom, err = convertComponent(parts[1], 1, 31); err != nil {
		return "", "", fmt.Errorf("day: %w", err)
	}
	return month, dom, nil
}

// convertTime converts `hour:minute[:second]`; seconds must be 0 (cron counts minutes).
func convertTime(s string) (hour, minute string, err error) {
	parts := strings.Split(s, ":")
	if len(parts) != 2 && len(parts) != 3 {
		return "", "", fmt.Errorf("time %q: want hour:minute[:second]", s)
	}
	if len(parts) == 3 {
		if sec, err := strconv.ParseFloat(parts[2], 64); err != nil || sec != 0 {
			return "", "", fmt.Errorf("seconds %q: cron runs on whole minutes, use 00", parts[2])
		}
	}
	if hour, err = convertComponent(parts[0], 0, 23); err != nil {
		return "", "", fmt.Errorf("hour: %w", err)
	}
	if minute, err = convertComponent(parts[1], 0, 59); err != nil {
		return "", "", fmt.Errorf("minute: %w", err)
	}
	return hour, minute, nil
}

// convertComponent converts one systemd calendar component (`*`, `5`, `1,2`, `8..17`,
// `0/15`, `8..17/2`) to cron syntax.
func convertComponent(s string, lo, hi int) (string, error) {
	var out []string
	for _, item := range strings.Split(s, ",") {
		rng, step, hasStep := strings.Cut(item, "/")
		if hasStep {
			n, err := strconv.Atoi(step)
			if err != nil || n < 1 {
				return "", fmt.Errorf("bad repetition %q", item)
			}
			step = "/" + strconv.Itoa(n)
		}
		if rng == "*" {
			out = append(out, "*"+step)
			continue
		}
		a, b, isRange := strings.Cut(rng, "..")
		from, err := componentValue(a, lo, hi)
		if err != nil {
			return "", err
		}
		switch {
		case isRange:
			to, err := componentValue(b, lo, hi)
			if err != nil {
				return "", err
			}
			if to < from {
				return "", fmt.Errorf("range %q runs backwards", rng)
			}
			out = append(out, fmt.Sprintf("%d-%d%s", from, to, step))
		case hasStep && from == lo:
			out = append(out, "*"+step) // 0/15 is every 15 from the start: */15
		case hasStep:
			out = append(out, fmt.Sprintf("%d-%d%s", from, hi, step))
		default:
			out = append(out, strconv.Itoa(from))
		}
	}
	return strings.Join(out, ","), nil
}

func componentValue(s string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("unsupported value %q", s)
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("value %d out of range %d-%d", n, lo, hi)
	}
	return n, nil
}

// convertWeekdays converts `Mon`, `Mon,Wed`, `Mon..Fri` (systemd orders Mon..Sun) to
// a cron day-of-week list (0 = Sunday).
func convertWeekdays(s string) (string, error) {
	var days [7]bool // index 0 = Monday, systemd's order
	for _, item := range strings.Split(s, ",") {
		a, b, isRange := strings.Cut(item, "..")
		from, err := weekday(a)
		if err != nil {
			return "", err
		}
		to := from
		if isRange {
			if to, err = weekday(b); err != nil {
				return "", err
			}
			if to < from {
				return "", fmt.Errorf("weekday range %q runs backwards (weeks run Mon..Sun)", item)
			}
		}
		for d := from; d <= to; d++ {
			days[d] = true
		}
	}
	// To cron numbering (Sunday 0), then compress runs: 1,2,3,4,5 -> 1-5.
	var nums []int
	for d, on := range days {
		if on {
			nums = append(nums, (d+1)%7)
		}
	}
	if len(nums) == 7 {
		return "*", nil
	}
	slices.Sort(nums)
	var parts []string
	for i := 0; i < len(nums); {
		j := i
		for j+1 < len(nums) && nums[j+1] == nums[j]+1 {
			j++
		}
		if j-i >= 2 {
			parts = append(parts, fmt.Sprintf("%d-%d", nums[i], nums[j]))
		} else {
			for k := i; k <= j; k++ {
				parts = append(parts, strconv.Itoa(nums[k]))
			}
		}
		i = j + 1
	}
	return strings.Join(parts, ","), nil
}

// weekday returns a weekday's index from Monday (0) to Sunday (6).
func weekday(s string) (int, error) {
	names := []string{"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}
	l := strings.ToLower(s)
	for i, n := range names {
		if l == n || l == n[:3] {
			return i, nil
		}
	}
	return 0, fmt.Errorf("unknown weekday %q", s)
}
