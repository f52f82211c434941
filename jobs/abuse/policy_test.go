package abuse

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/run"
)

func TestDefaultPolicy(t *testing.T) {
	p := DefaultPolicy()
	d := p.Dunning
	if d.Reminder.AfterDays != 3 || d.Warning.AfterDays != 14 || d.Suspension.AfterDays != 21 || d.Termination.AfterDays != 60 {
		t.Fatalf("days %d/%d/%d/%d", d.Reminder.AfterDays, d.Warning.AfterDays, d.Suspension.AfterDays, d.Termination.AfterDays)
	}
	if d.MinNotice.Duration != 72*time.Hour || d.Retention.Duration != 30*24*time.Hour {
		t.Fatalf("notice %s retention %s", d.MinNotice, d.Retention)
	}
	if d.Suspension.threshold("EUR") != 500 || d.Reminder.threshold("USD") != 100 || d.Reminder.threshold("CHF") != 0 {
		t.Fatalf("thresholds %v %v", d.Suspension.minBalance, d.Reminder.minBalance)
	}
	if !d.Suspension.WaitWhileRetrying || d.Reminder.WaitWhileRetrying {
		t.Fatal("retry waiting defaults changed")
	}
	if len(d.ExcludeTags) != 1 || d.ExcludeTags[0] != TagNeverSuspend {
		t.Fatalf("exclude tags %v", d.ExcludeTags)
	}
	if p.FreeCredit.OpenScore != 60 || p.FreeCredit.CPU.Sustained.Duration != 3*time.Hour {
		t.Fatalf("free credit %+v", p.FreeCredit)
	}
}

func TestPolicyFileIsLayeredOnDefaults(t *testing.T) {
	p, err := ParsePolicy([]byte(`
[dunning.reminder]
after_days = 5
[dunning.suspension.min_balance]
JPY = "500"
[free_credit]
open_score = 90
`))
	if err != nil {
		t.Fatal(err)
	}
	if p.Dunning.Reminder.AfterDays != 5 || p.Dunning.Warning.AfterDays != 14 {
		t.Fatalf("layering: %d %d", p.Dunning.Reminder.AfterDays, p.Dunning.Warning.AfterDays)
	}
	if p.Dunning.Suspension.threshold("JPY") != 500 || p.Dunning.Suspension.threshold("EUR") != 500 {
		t.Fatalf("thresholds %v", p.Dunning.Suspension.minBalance)
	}
	if p.FreeCredit.OpenScore != 90 || p.FreeCredit.CPU.Weight != 50 {
		t.Fatalf("free credit %+v", p.FreeCredit)
	}
}

func TestPolicyErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"[dunning.remindr]\nafter_days = 1\n", "unknown key dunning.remindr"},
		{"[dunning.warning]\nafter_days = 2\n", "dunning.warning.after_days: must be at least dunning.reminder.after_days (3), got 2"},
		{"[dunning.termination]\nafter_days = 21\n", "dunning.termination.after_days: must be after"},
		{"[dunning.suspension.min_balance]\nEUR = \"5.001\"\n", "dunning.suspension.min_balance.EUR: \"5.001\" has more than 2 decimals"},
		{"[dunning.suspension.min_balance]\nEUR = \"-1\"\n", "dunning.suspension.min_balance.EUR"},
		{"[dunning.suspension.min_balance]\neur = \"1\"\n", "dunning.suspension.min_balance.eur: not an ISO 4217"},
		{"[dunning]\nmin_notice = \"soon\"\n", "duration \"soon\""},
		{"[dunning.reminder]\nafter_days = \"three\"\n", "dunning.reminder.after_days"},
		{"[free_credit.cpu]\nhot_share = 1.5\n", "free_credit.cpu.hot_share"},
		{"[free_credit.ip_velocity]\ncount = 1\n", "free_credit.ip_velocity.count: must be at least 2"},
		{"[free_credit.disposable_email]\nweight = -1\n", "free_credit.disposable_email.weight"},
		{"[mail]\nbilling_url = \"nope\"\n", "mail.billing_url"},
		{"not toml", "policy:"},
	} {
		_, err := ParsePolicy([]byte(tc.file))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.file, err, tc.want)
			continue
		}
		if !errors.Is(err, run.ErrUsage) {
			t.Errorf("%q: %v is not a usage error (exit 2)", tc.file, err)
		}
	}
}

func TestMoney(t *testing.T) {
	for _, tc := range []struct {
		s, cur string
		want   int64
		ok     bool
	}{
		{"5", "EUR", 500, true}, {"5.5", "EUR", 550, true}, {"5.00", "EUR", 500, true}, {"0.01", "USD", 1, true},
		{"500", "JPY", 500, true}, {"1.5", "JPY", 0, false}, {"1.234", "KWD", 1234, true}, {"1.230", "EUR", 123, true},
		{"1,5", "EUR", 0, false}, {"", "EUR", 0, false}, {".5", "EUR", 0, false},
	} {
		got, err := parseMinor(tc.s, tc.cur)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseMinor(%q, %s) = %d, %v", tc.s, tc.cur, got, err)
		}
	}
	for _, tc := range []struct {
		minor int64
		cur   string
		want  string
	}{{12050, "EUR", "EUR 120.50"}, {5, "EUR", "EUR 0.05"}, {500, "JPY", "JPY 500"}, {1234, "KWD", "KWD 1.234"}} {
		if got := formatMinor(tc.minor, tc.cur); got != tc.want {
			t.Errorf("formatMinor(%d, %s) = %q, want %q", tc.minor, tc.cur, got, tc.want)
		}
	}
}

func TestDurationText(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{{3 * time.Hour, "3h"}, {90 * time.Minute, "1h30m"}, {72 * time.Hour, "3d"}, {45 * time.Second, "45s"}, {0, "0s"}, {time.Hour + time.Second, "1h0m1s"}} {
		if got := (Duration{tc.d}).String(); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.d, got, tc.want)
		}
	}
}
