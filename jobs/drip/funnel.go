// Package drip is the onboarding funnel: a short sequence of marketing emails per
// signup, one audited state machine per account, that stops the moment the account
// reaches the goal. This file set is the job's pure core: the funnel (TOML, validated
// at start), its machine, the decisions (pure functions of the case, the facts and
// the instant) and the plan values the report shows. The database, the outbox and
// the command wire it.
package drip

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/cronkit/cronkit/lib/run"
)

// defaultFunnel is the funnel shipped in the binary; --funnel FILE replaces it whole.
//
//go:embed funnel.toml
var defaultFunnel []byte

// DefaultFunnelName is how errors in the shipped funnel name their file.
const DefaultFunnelName = "funnel.toml (shipped)"

// DefaultFunnelTOML returns the shipped funnel file, so ops can start their own from it.
func DefaultFunnelTOML() []byte { return bytes.Clone(defaultFunnel) }

// DefaultFunnel returns the shipped funnel, validated.
func DefaultFunnel() *Funnel {
	f, err := ParseFunnel(DefaultFunnelName, defaultFunnel)
	if err != nil {
		panic(fmt.Sprintf("drip: shipped funnel is invalid: %v", err)) // caught by TestDefaultFunnel
	}
	return f
}

// Goals: what converts an account and ends its funnel.
const (
	GoalPaymentMethodVerified = "payment_method_verified"
	GoalPaidInvoice           = "paid_invoice"
)

// Anchors: what a step's delay counts from.
const (
	FromSignup = "signup"
	// FromPrevious is the actual send (delivery) of the latest step that was sent;
	// a skipped step sent nothing and moves no clock. Signup when nothing was sent.
	FromPrevious    = "previous"
	FromTrialExpiry = "trial_expiry"
)

// Facts a step's `unless` may name.
const (
	FactHasVM                 = "has_vm"
	FactPaymentMethodVerified = "payment_method_verified"
	FactPaidInvoice           = "paid_invoice"
	FactTrialCreditLeft       = "trial_credit_left"
	FactUnsubscribed          = "unsubscribed"
)

// Funnel is the validated funnel: the sequence of steps and the rules every send
// obeys (window, weekdays, cap, fallback zone). Decisions read nothing else, so the
// funnel and the facts explain each transition.
type Funnel struct {
	// Source names the file the funnel came from, for error messages.
	Source string
	// Name identifies the funnel; its machine is "drip:" + Name.
	Name string `toml:"name"`
	// Goal is GoalPaymentMethodVerified or GoalPaidInvoice.
	Goal string `toml:"goal"`
	// SendWindow is the recipient's local wall-clock time in which mail may start.
	SendWindow Window `toml:"send_window"`
	// Weekdays are the recipient's local days on which mail may start.
	Weekdays []string `toml:"weekdays"`
	// DailyCap is the most marketing messages (any campaign) one recipient gets per
	// local calendar day; a step over the cap waits for the next day, never dropped.
	DailyCap int `toml:"daily_cap"`
	// FallbackTimeZone is used for accounts whose time zone is empty or invalid.
	FallbackTimeZone string `toml:"fallback_time_zone"`
	// Steps are the messages, in the order they are sent.
	Steps []Step

	days     [7]bool // Weekdays by time.Weekday
	fallback *time.Location
	zones    *zoneCache
}

// Step is one message of the funnel.
type Step struct {
	// Name is the step's state in the machine and half its outbox key.
	Name string `toml:"name"`
	// Template names templates/<Template>.{subject,txt,html}.tmpl.
	Template string `toml:"template"`
	// From is the anchor: FromSignup, FromPrevious or FromTrialExpiry.
	From string `toml:"from"`
	// After is the delay from the anchor; negative is before it (trial_expiry only).
	After Delay `toml:"after"`
	// Unless lists facts that skip the step when any is true at its due time.
	Unless []string `toml:"unless"`
}

// Delay is a step's delay: whole days ("2d", "-3d"), counted as calendar days in the
// recipient's zone (the same wall-clock time N days later, 23 or 25 hours across a
// DST change), or a Go duration ("36h", "-90m"), counted in elapsed time.
type Delay struct {
	Days  int
	Exact time.Duration
}

// UnmarshalText reads "2d", "-3d" or anything time.ParseDuration accepts.
func (d *Delay) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err == nil {
			*d = Delay{Days: n}
			return nil
		}
	} else if v, err := time.ParseDuration(s); err == nil {
		*d = Delay{Exact: v}
		return nil
	}
	return fmt.Errorf("%q: want whole days (\"2d\", \"-3d\") or a Go duration (\"36h\")", s)
}

// MarshalText writes the delay as it is read.
func (d Delay) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

func (d Delay) String() string {
	if d.Exact == 0 {
		return fmt.Sprintf("%dd", d.Days)
	}
	return d.Exact.String()
}

// negative reports whether the delay points before its anchor.
func (d Delay) negative() bool { return d.Days < 0 || d.Exact < 0 }

// from returns anchor plus the delay, days counted in loc.
func (d Delay) from(anchor time.Time, loc *time.Location) time.Time {
	if d.Days != 0 {
		anchor = anchor.In(loc).AddDate(0, 0, d.Days)
	}
	return anchor.Add(d.Exact).UTC()
}

// Window is a daily send window in local wall-clock time, "09:00-18:00": mail may
// start at or after the opening and before the close. "00:00-24:00" is all day.
type Window struct {
	Open, Close int // minutes after local midnight
}

// UnmarshalText reads "HH:MM-HH:MM".
func (w *Window) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	open, close, ok := strings.Cut(s, "-")
	if ok {
		o, err1 := clockMinutes(open)
		c, err2 := clockMinutes(close)
		if err1 == nil && err2 == nil && o < c && o < 24*60 {
			*w = Window{Open: o, Close: c}
			return nil
		}
	}
	return fmt.Errorf("%q: want \"HH:MM-HH:MM\" in local time, opening before closing (\"09:00-18:00\")", s)
}

// MarshalText writes the window as it is read.
func (w Window) MarshalText() ([]byte, error) { return []byte(w.String()), nil }

func (w Window) String() string {
	return fmt.Sprintf("%02d:%02d-%02d:%02d", w.Open/60, w.Open%60, w.Close/60, w.Close%60)
}

var clockPattern = regexp.MustCompile(`^([01][0-9]|2[0-4]):([0-5][0-9])$`)

func clockMinutes(s string) (int, error) {
	m := clockPattern.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, errors.New("bad clock time")
	}
	h, _ := strconv.Atoi(m[1])
	mi, _ := strconv.Atoi(m[2])
	if h*60+mi > 24*60 {
		return 0, errors.New("bad clock time")
	}
	return h*60 + mi, nil
}

// weekdayNames are the accepted weekday spellings, by time.Weekday.
var weekdayNames = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// keys are the accepted keys of each table, for unknown-key errors that name the step.
var (
	topKeys    = []string{"funnel", "step"}
	funnelKeys = []string{"name", "goal", "send_window", "weekdays", "daily_cap", "fallback_time_zone"}
	stepKeys   = []string{"name", "template", "from", "after", "unless"}
	knownFacts = []string{FactHasVM, FactPaymentMethodVerified, FactPaidInvoice, FactTrialCreditLeft, FactUnsubscribed}
)

var namePattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// ParseFunnel reads and validates a funnel file; name is how errors call the file.
// Errors are usage errors (exit 2) naming the file, the step and the key. Templates
// are checked separately (CheckTemplates), once the template set is known.
func ParseFunnel(name string, data []byte) (*Funnel, error) {
	fail := func(format string, args ...any) (*Funnel, error) {
		return nil, run.Usagef("funnel %s: %s", name, fmt.Sprintf(format, args...))
	}
	var raw map[string]any
	if err := toml.Unmarshal(data, &raw); err != nil {
		return fail("%v", err)
	}
	if err := unknownKeys(raw); err != nil {
		return fail("%v", err)
	}
	var file struct {
		Funnel Funnel `toml:"funnel"`
		Step   []Step `toml:"step"`
	}
	if _, err := toml.Decode(string(data), &file); err != nil {
		return fail("%v", err)
	}
	f := &file.Funnel
	f.Source, f.Steps = name, file.Step
	if err := f.validate(); err != nil {
		return fail("%v", err)
	}
	return f, nil
}

// unknownKeys names the first key no table accepts, with its step.
func unknownKeys(raw map[string]any) error {
	for _, k := range sortedKeys(raw) {
		if !slices.Contains(topKeys, k) {
			return fmt.Errorf("unknown key %s (want [funnel] and [[step]])", k)
		}
	}
	if fun, ok := raw["funnel"].(map[string]any); ok {
		for _, k := range sortedKeys(fun) {
			if !slices.Contains(funnelKeys, k) {
				return fmt.Errorf("unknown key funnel.%s", k)
			}
		}
	}
	steps, _ := raw["step"].([]map[string]any)
	for i, s := range steps {
		for _, k := range sortedKeys(s) {
			if !slices.Contains(stepKeys, k) {
				name, _ := s["name"].(string)
				return fmt.Errorf("%s: unknown key %s", stepLabel(i, name), k)
			}
		}
	}
	return nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// stepLabel names a step in errors: "step 2 (first_vm)".
func stepLabel(i int, name string) string {
	if name == "" {
		return fmt.Sprintf("step %d", i+1)
	}
	return fmt.Sprintf("step %d (%s)", i+1, name)
}

// validate checks every key and fills the parsed forms. Its errors name the key.
func (f *Funnel) validate() error {
	if !namePattern.MatchString(f.Name) {
		return fmt.Errorf("funnel.name: want 1 to 32 of a-z, 0-9 and _, starting with a letter, got %q", f.Name)
	}
	if f.Goal != GoalPaymentMethodVerified && f.Goal != GoalPaidInvoice {
		return fmt.Errorf("funnel.goal: want %s or %s, got %q", GoalPaymentMethodVerified, GoalPaidInvoice, f.Goal)
	}
	if f.SendWindow == (Window{}) {
		return errors.New("funnel.send_window: missing (\"09:00-18:00\")")
	}
	if len(f.Weekdays) == 0 {
		return errors.New("funnel.weekdays: name at least one day ([\"mon\", ...])")
	}
	f.days = [7]bool{}
	for _, d := range f.Weekdays {
		i := slices.Index(weekdayNames, d)
		if i < 0 {
			return fmt.Errorf("funnel.weekdays: %q is not one of %s", d, strings.Join(weekdayNames, ", "))
		}
		if f.days[i] {
			return fmt.Errorf("funnel.weekdays: %q twice", d)
		}
		f.days[i] = true
	}
	if f.DailyCap < 1 {
		return fmt.Errorf("funnel.daily_cap: must be at least 1, got %d", f.DailyCap)
	}
	loc, err := loadZone(f.FallbackTimeZone)
	if err != nil {
		return fmt.Errorf("funnel.fallback_time_zone: %v", err)
	}
	f.fallback, f.zones = loc, &zoneCache{m: map[string]*time.Location{}}
	if len(f.Steps) == 0 {
		return errors.New("no [[step]]: a funnel sends at least one message")
	}
	seen := map[string]bool{}
	for i := range f.Steps {
		if err := f.Steps[i].validate(seen); err != nil {
			return fmt.Errorf("%s: %v", stepLabel(i, f.Steps[i].Name), err)
		}
	}
	return nil
}

func (s *Step) validate(seen map[string]bool) error {
	switch {
	case !namePattern.MatchString(s.Name):
		return fmt.Errorf("name: want 1 to 32 of a-z, 0-9 and _, starting with a letter, got %q", s.Name)
	case slices.Contains(reservedStates, s.Name):
		return fmt.Errorf("name: %q is a state of every funnel; choose another", s.Name)
	case seen[s.Name]:
		return fmt.Errorf("name: %q names two steps", s.Name)
	case !namePattern.MatchString(s.Template):
		return fmt.Errorf("template: want a template name (templates/NAME.subject.tmpl...), got %q", s.Template)
	}
	seen[s.Name] = true
	switch s.From {
	case FromSignup, FromPrevious:
		if s.After.negative() {
			return fmt.Errorf("after: %s is before %s; only trial_expiry takes a negative delay", s.After, s.From)
		}
	case FromTrialExpiry:
	default:
		return fmt.Errorf("from: want %s, %s or %s, got %q", FromSignup, FromPrevious, FromTrialExpiry, s.From)
	}
	for i, fact := range s.Unless {
		if !slices.Contains(knownFacts, fact) {
			return fmt.Errorf("unless: unknown fact %q (want %s)", fact, strings.Join(knownFacts, ", "))
		}
		if slices.Contains(s.Unless[:i], fact) {
			return fmt.Errorf("unless: %q twice", fact)
		}
	}
	return nil
}

// loadZone loads an IANA zone by name; "" and "Local" (the server's zone, not the
// recipient's) are refused.
func loadZone(name string) (*time.Location, error) {
	if name == "" || name == "Local" {
		return nil, fmt.Errorf("want an IANA time zone (\"Europe/Paris\", \"UTC\"), got %q", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("time zone %q: %v", name, err)
	}
	return loc, nil
}

// zoneCache keeps the zones a run loaded: time.LoadLocation reads the zone database
// on every call, and a run sees the same few zones for thousands of accounts.
type zoneCache struct {
	mu sync.Mutex
	m  map[string]*time.Location // nil value: invalid name
}

// Location returns the recipient's zone, or the fallback zone with fallback = true
// when name is empty or invalid (the job reports those accounts).
func (f *Funnel) Location(name string) (loc *time.Location, fallback bool) {
	f.zones.mu.Lock()
	defer f.zones.mu.Unlock()
	loc, ok := f.zones.m[name]
	if !ok {
		loc, _ = loadZone(name)
		f.zones.m[name] = loc
	}
	if loc == nil {
		return f.fallback, true
	}
	return loc, false
}

// Step returns the step named name and its position.
func (f *Funnel) Step(name string) (Step, int, bool) {
	for i, s := range f.Steps {
		if s.Name == name {
			return s, i, true
		}
	}
	return Step{}, -1, false
}
