package abuse

import (
	"bytes"
	_ "embed"
	"fmt"
	"net/mail"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/cronkit/cronkit/lib/run"
)

// defaultPolicy is the policy shipped in the binary; a --policy file is layered on it.
//
//go:embed policy.toml
var defaultPolicy []byte

// DefaultPolicyTOML returns the shipped policy file, so ops can start their own from it
// and the README can quote it.
func DefaultPolicyTOML() []byte { return bytes.Clone(defaultPolicy) }

// Policy is every threshold the abuse job decides by. Decisions read nothing else, so a
// policy and the facts explain each transition.
type Policy struct {
	Dunning    DunningPolicy    `toml:"dunning"`
	FreeCredit FreeCreditPolicy `toml:"free_credit"`
	Mail       MailPolicy       `toml:"mail"`
}

// DunningPolicy configures the late-payment machine, in the spirit of Kill Bill's
// overdue states: each level has its own conditions, and an account reaches a level
// only when that level's conditions and those of every level below hold.
type DunningPolicy struct {
	ExcludeTags []string `toml:"exclude_tags"`
	// MinNotice is how long a warning must precede a suspension: an account first seen
	// 30 days late is warned, not suspended on the spot.
	MinNotice Duration `toml:"min_notice"`
	// Retention is the wait between a person's approval and the destruction of VMs.
	Retention   Duration `toml:"retention"`
	Reminder    Level    `toml:"reminder"`
	Warning     Level    `toml:"warning"`
	Suspension  Level    `toml:"suspension"`
	Termination Level    `toml:"termination"`
}

// Level is the condition of one dunning level (reminder, warning...).
type Level struct {
	// AfterDays is the number of calendar days (in the account's time zone) since the
	// due date of the oldest unpaid invoice.
	AfterDays int `toml:"after_days"`
	// MinUnpaidInvoices is the number of unpaid invoices needed.
	MinUnpaidInvoices int `toml:"min_unpaid_invoices"`
	// MinBalance is the unpaid balance needed, per currency, as a decimal string in
	// the major unit. A currency not listed needs any unpaid amount.
	MinBalance map[string]string `toml:"min_balance"`
	// WaitWhileRetrying holds the level while billing still retries the card of an
	// unpaid invoice (invoices.collection = 'retrying') or an attempt's outcome is
	// unknown (a pending payment).
	WaitWhileRetrying bool `toml:"wait_while_retrying"`

	minBalance map[string]int64 // MinBalance in minor units, set by validate
}

// FreeCreditPolicy configures the free-credit abuse machine: weighted signals add up
// to a score, and a case opens at OpenScore.
type FreeCreditPolicy struct {
	// SignupWindow bounds the accounts examined to those that signed up this recently.
	SignupWindow Duration `toml:"signup_window"`
	OpenScore    int      `toml:"open_score"`
	// Retention is the wait between a person's confirmation and the destruction of
	// VMs.
	Retention       Duration        `toml:"retention"`
	ExcludeTags     []string        `toml:"exclude_tags"`
	CPU             CPUSignal       `toml:"cpu"`
	FastInstances   CountSignal     `toml:"fast_instances"`
	DisposableEmail DisposableEmail `toml:"disposable_email"`
	IPVelocity      CountSignal     `toml:"ip_velocity"`
}

// CPUSignal fires when most running VMs of the account have been near 100 % CPU in
// every sample for at least Sustained.
type CPUSignal struct {
	Weight     int      `toml:"weight"`
	HotPercent float64  `toml:"hot_percent"`
	HotShare   float64  `toml:"hot_share"`
	Sustained  Duration `toml:"sustained"`
	MinSamples int      `toml:"min_samples"`
	// MaxGap breaks a streak: samples further apart than this were not observed
	// continuously.
	MaxGap Duration `toml:"max_gap"`
}

// CountSignal fires when Count things happened Within a window (instances after
// signup, signups from one IP).
type CountSignal struct {
	Weight int      `toml:"weight"`
	Count  int      `toml:"count"`
	Within Duration `toml:"within"`
}

// DisposableEmail fires when the signup email's domain is a disposable one.
type DisposableEmail struct {
	Weight int `toml:"weight"`
}

// MailPolicy is what the notices link to.
type MailPolicy struct {
	BillingURL   string `toml:"billing_url"`
	SupportEmail string `toml:"support_email"`
}

// Duration is a policy duration: a Go duration ("72h") or whole days ("30d").
type Duration struct{ time.Duration }

// UnmarshalText reads "30d" or anything time.ParseDuration accepts.
func (d *Duration) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return fmt.Errorf("duration %q: want a whole number of days (\"30d\") or a Go duration (\"72h\")", s)
		}
		d.Duration = time.Duration(n) * 24 * time.Hour
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: want a whole number of days (\"30d\") or a Go duration (\"72h\")", s)
	}
	d.Duration = v
	return nil
}

// MarshalText writes whole days as "Nd", anything else as a Go duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

func (d Duration) String() string {
	if d.Duration != 0 && d.Duration%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d.Duration/(24*time.Hour))
	}
	return shortDuration(d.Duration)
}

// shortDuration writes 3h rather than 3h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// DefaultPolicy returns the shipped policy, validated.
func DefaultPolicy() Policy {
	p, err := ParsePolicy(nil)
	if err != nil {
		panic(fmt.Sprintf("abuse: shipped policy is invalid: %v", err)) // caught by TestDefaultPolicy
	}
	return p
}

// ParsePolicy layers a TOML policy (nil: none) on the shipped defaults and validates
// the result. Errors are usage errors (exit 2) that name the offending key.
func ParsePolicy(data []byte) (Policy, error) {
	var p Policy
	if _, err := toml.Decode(string(defaultPolicy), &p); err != nil {
		return Policy{}, fmt.Errorf("abuse: shipped policy: %w", err)
	}
	if data != nil {
		md, err := toml.Decode(string(data), &p)
		if err != nil {
			return Policy{}, run.Usagef("policy: %v", err)
		}
		if un := md.Undecoded(); len(un) > 0 {
			keys := make([]string, len(un))
			for i, k := range un {
				keys[i] = k.String()
			}
			sort.Strings(keys)
			return Policy{}, run.Usagef("policy: unknown key %s", strings.Join(keys, ", "))
		}
	}
	if err := p.validate(); err != nil {
		return Policy{}, run.Usagef("policy %v", err)
	}
	return p, nil
}

var currencyCode = regexp.MustCompile(`^[A-Z]{3}$`)

// validate checks every key and fills the parsed forms. Its errors start with the key.
func (p *Policy) validate() error {
	d := &p.Dunning
	if err := checkTags("dunning.exclude_tags", d.ExcludeTags); err != nil {
		return err
	}
	if d.MinNotice.Duration < 0 {
		return fmt.Errorf("dunning.min_notice: must not be negative, got %s", d.MinNotice)
	}
	if d.Retention.Duration < 0 {
		return fmt.Errorf("dunning.retention: must not be negative, got %s", d.Retention)
	}
	levels := []struct {
		name string
		l    *Level
	}{{"reminder", &d.Reminder}, {"warning", &d.Warning}, {"suspension", &d.Suspension}, {"termination", &d.Termination}}
	prev := -1
	prevName := ""
	for _, lv := range levels {
		key := "dunning." + lv.name
		if lv.l.AfterDays < 0 {
			return fmt.Errorf("%s.after_days: must not be negative, got %d", key, lv.l.AfterDays)
		}
		if lv.l.AfterDays < prev {
			return fmt.Errorf("%s.after_days: must be at least dunning.%s.after_days (%d), got %d", key, prevName, prev, lv.l.AfterDays)
		}
		prev, prevName = lv.l.AfterDays, lv.name
		if lv.l.MinUnpaidInvoices < 1 {
			return fmt.Errorf("%s.min_unpaid_invoices: must be at least 1, got %d", key, lv.l.MinUnpaidInvoices)
		}
		lv.l.minBalance = map[string]int64{}
		for cur, v := range lv.l.MinBalance {
			if !currencyCode.MatchString(cur) {
				return fmt.Errorf("%s.min_balance.%s: not an ISO 4217 currency code (three capital letters)", key, cur)
			}
			minor, err := parseMinor(v, cur)
			if err != nil {
				return fmt.Errorf("%s.min_balance.%s: %v", key, cur, err)
			}
			lv.l.minBalance[cur] = minor
		}
	}
	if d.Termination.AfterDays <= d.Suspension.AfterDays {
		return fmt.Errorf("dunning.termination.after_days: must be after dunning.suspension.after_days (%d), got %d", d.Suspension.AfterDays, d.Termination.AfterDays)
	}

	f := &p.FreeCredit
	if f.SignupWindow.Duration <= 0 {
		return fmt.Errorf("free_credit.signup_window: must be positive, got %s", f.SignupWindow)
	}
	if f.OpenScore <= 0 {
		return fmt.Errorf("free_credit.open_score: must be positive, got %d", f.OpenScore)
	}
	if f.Retention.Duration < 0 {
		return fmt.Errorf("free_credit.retention: must not be negative, got %s", f.Retention)
	}
	if err := checkTags("free_credit.exclude_tags", f.ExcludeTags); err != nil {
		return err
	}
	for _, w := range []struct {
		key    string
		weight int
	}{{"cpu", f.CPU.Weight}, {"fast_instances", f.FastInstances.Weight},
		{"disposable_email", f.DisposableEmail.Weight}, {"ip_velocity", f.IPVelocity.Weight}} {
		if w.weight < 0 {
			return fmt.Errorf("free_credit.%s.weight: must not be negative, got %d", w.key, w.weight)
		}
	}
	c := f.CPU
	switch {
	case c.HotPercent <= 0 || c.HotPercent > 100:
		return fmt.Errorf("free_credit.cpu.hot_percent: must be in (0, 100], got %g", c.HotPercent)
	case c.HotShare <= 0 || c.HotShare > 1:
		return fmt.Errorf("free_credit.cpu.hot_share: must be in (0, 1], got %g", c.HotShare)
	case c.Sustained.Duration < 0:
		return fmt.Errorf("free_credit.cpu.sustained: must not be negative, got %s", c.Sustained)
	case c.MinSamples < 1:
		return fmt.Errorf("free_credit.cpu.min_samples: must be at least 1, got %d", c.MinSamples)
	case c.MaxGap.Duration <= 0:
		return fmt.Errorf("free_credit.cpu.max_gap: must be positive, got %s", c.MaxGap)
	}
	for _, s := range []struct {
		key string
		sig CountSignal
		min int
	}{{"fast_instances", f.FastInstances, 1}, {"ip_velocity", f.IPVelocity, 2}} {
		if s.sig.Count < s.min {
			return fmt.Errorf("free_credit.%s.count: must be at least %d, got %d", s.key, s.min, s.sig.Count)
		}
		if s.sig.Within.Duration <= 0 {
			return fmt.Errorf("free_credit.%s.within: must be positive, got %s", s.key, s.sig.Within)
		}
	}

	if u, err := url.Parse(p.Mail.BillingURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("mail.billing_url: want an http(s) URL, got %q", p.Mail.BillingURL)
	}
	if p.Mail.SupportEmail != "" {
		if _, err := mail.ParseAddress(p.Mail.SupportEmail); err != nil {
			return fmt.Errorf("mail.support_email: %q is not an email address", p.Mail.SupportEmail)
		}
	}
	return nil
}

func checkTags(key string, tags []string) error {
	for _, t := range tags {
		if strings.TrimSpace(t) == "" || len(t) > 64 {
			return fmt.Errorf("%s: tags must be 1 to 64 characters, got %q", key, t)
		}
	}
	return nil
}

// threshold is the level's minimum balance in currency's minor units.
func (l Level) threshold(currency string) int64 { return l.minBalance[currency] }

// minorDigits is ISO 4217's exponent: 0 for yen-like currencies, 3 for dinar-like
// ones, 2 for the rest. Only the exceptions are listed.
func minorDigits(currency string) int {
	switch currency {
	case "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF":
		return 0
	case "BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND":
		return 3
	}
	return 2
}

// parseMinor reads a non-negative decimal string ("5", "5.5", "5.00") as minor units
// of currency; more decimals than the currency has (other than zeros) is an error.
func parseMinor(s, currency string) (int64, error) {
	digits := minorDigits(currency)
	whole, frac, _ := strings.Cut(strings.TrimSpace(s), ".")
	frac = strings.TrimRight(frac, "0")
	if whole == "" || strings.Trim(whole, "0123456789") != "" || strings.Trim(frac, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a non-negative decimal amount", s)
	}
	if len(frac) > digits {
		return 0, fmt.Errorf("%q has more than %d decimals for %s", s, digits, currency)
	}
	frac += strings.Repeat("0", digits-len(frac))
	v, err := strconv.ParseInt(whole+frac, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return v, nil
}

// formatMinor writes minor units as "EUR 12.50".
func formatMinor(minor int64, currency string) string {
	digits := minorDigits(currency)
	sign := ""
	if minor < 0 {
		sign, minor = "-", -minor
	}
	s := strconv.FormatInt(minor, 10)
	if digits == 0 {
		return currency + " " + sign + s
	}
	for len(s) <= digits {
		s = "0" + s
	}
	return currency + " " + sign + s[:len(s)-digits] + "." + s[len(s)-digits:]
}
