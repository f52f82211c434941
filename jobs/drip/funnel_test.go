package drip

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
	"time"
	_ "time/tzdata" // zones without the host's zoneinfo

	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/run"
)

func TestDefaultFunnel(t *testing.T) {
	f := DefaultFunnel()
	if f.Name != "onboarding" || f.Goal != GoalPaymentMethodVerified || f.SendWindow.String() != "09:00-18:00" ||
		f.DailyCap != 1 || f.fallback != time.UTC || f.days != [7]bool{true, true, true, true, true, true, true} {
		t.Fatalf("funnel %+v", f)
	}
	var got []string
	for _, s := range f.Steps {
		got = append(got, s.Name+" "+s.From+" "+s.After.String()+" unless "+strings.Join(s.Unless, ","))
	}
	want := []string{
		"welcome signup 0d unless ",
		"first_vm signup 2d unless has_vm",
		"tips signup 5d unless ",
		"trial_ending trial_expiry -3d unless payment_method_verified",
		"last_call signup 13d unless ",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("steps:\n%s", strings.Join(got, "\n"))
	}
	tmpl, err := Templates()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.CheckTemplates(tmpl); err != nil {
		t.Fatal(err)
	}
	if f.MachineName() != "drip:onboarding" {
		t.Fatalf("machine %q", f.MachineName())
	}
}

// funnelFile is a valid funnel with one step, to break one key at a time.
const funnelFile = `
[funnel]
name               = "trial"
goal               = "paid_invoice"
send_window        = "08:30-20:00"
weekdays           = ["mon","tue","wed","thu","fri"]
daily_cap          = 2
fallback_time_zone = "Europe/Paris"

[[step]]
name     = "hello"
template = "welcome"
from     = "signup"
after    = "1h"

[[step]]
name     = "nudge"
template = "first_vm"
from     = "previous"
after    = "3d"
unless   = ["has_vm", "trial_credit_left"]
`

func TestParseFunnelReplacesTheDefault(t *testing.T) {
	f, err := ParseFunnel("my.toml", []byte(funnelFile))
	if err != nil {
		t.Fatal(err)
	}
	if f.Source != "my.toml" || f.Name != "trial" || f.Goal != GoalPaidInvoice || f.SendWindow != (Window{Open: 8*60 + 30, Close: 20 * 60}) ||
		f.DailyCap != 2 || f.fallback.String() != "Europe/Paris" || len(f.Steps) != 2 {
		t.Fatalf("funnel %+v", f)
	}
	if f.days != [7]bool{false, true, true, true, true, true, false} {
		t.Fatalf("weekdays %v", f.days)
	}
	if f.Steps[0].After != (Delay{Exact: time.Hour}) || f.Steps[1].After != (Delay{Days: 3}) || f.Steps[1].From != FromPrevious {
		t.Fatalf("steps %+v", f.Steps)
	}
}

func TestFunnelErrorsNameFileStepAndKey(t *testing.T) {
	swap := func(old, new string) string {
		if !strings.Contains(funnelFile, old) {
			panic("no " + old)
		}
		return strings.Replace(funnelFile, old, new, 1)
	}
	for _, tc := range []struct{ file, want string }{
		{swap(`daily_cap          = 2`, "daily_cap = 2\ncolour = \"red\""), "funnel my.toml: unknown key funnel.colour"},
		{swap(`unless   = ["has_vm", "trial_credit_left"]`, `unles = ["has_vm"]`), "funnel my.toml: step 2 (nudge): unknown key unles"},
		{funnelFile + "\n[extra]\nx = 1\n", "funnel my.toml: unknown key extra"},
		{swap(`"has_vm", "trial_credit_left"`, `"has_vm", "is_rich"`), `funnel my.toml: step 2 (nudge): unless: unknown fact "is_rich"`},
		{swap(`"has_vm", "trial_credit_left"`, `"has_vm", "has_vm"`), `step 2 (nudge): unless: "has_vm" twice`},
		{swap(`after    = "3d"`, `after    = "3 days"`), `"3 days": want whole days`},
		{swap(`after    = "3d"`, `after    = "2.5d"`), `"2.5d": want whole days`},
		{swap(`after    = "3d"`, `after    = 3`), `step.after`},
		{swap(`after    = "3d"`, `after    = "-1d"`), `step 2 (nudge): after: -1d is before previous; only trial_expiry`},
		{swap(`after    = "1h"`, `after    = "-1h"`), `step 1 (hello): after: -1h0m0s is before signup`},
		{swap(`from     = "previous"`, `from     = "trial_end"`), `step 2 (nudge): from: want signup, previous or trial_expiry, got "trial_end"`},
		{swap(`from     = "previous"`, ``), `step 2 (nudge): from: want signup`},
		{swap(`name     = "nudge"`, `name     = "hello"`), `step 2 (hello): name: "hello" names two steps`},
		{swap(`name     = "nudge"`, `name     = "converted"`), `step 2 (converted): name: "converted" is a state of every funnel`},
		{swap(`name     = "nudge"`, `name     = "Nudge!"`), `step 2 (Nudge!): name: want 1 to 32`},
		{swap(`name     = "nudge"`, ``), `step 2: name: want 1 to 32`},
		{swap(`template = "first_vm"`, `template = "../../etc/passwd"`), `step 2 (nudge): template: want a template name`},
		{swap(`send_window        = "08:30-20:00"`, `send_window = "20:00-08:30"`), `funnel my.toml: toml: line 5 (last key "funnel.send_window"): "20:00-08:30": want "HH:MM-HH:MM"`},
		{swap(`send_window        = "08:30-20:00"`, `send_window = "9-18"`), `funnel.send_window`},
		{swap(`send_window        = "08:30-20:00"`, `send_window = "09:00-24:01"`), `funnel.send_window`},
		{swap(`send_window        = "08:30-20:00"`, ``), `funnel.send_window: missing`},
		{swap(`["mon","tue","wed","thu","fri"]`, `["mon","Tue"]`), `funnel.weekdays: "Tue" is not one of sun, mon`},
		{swap(`["mon","tue","wed","thu","fri"]`, `["mon","mon"]`), `funnel.weekdays: "mon" twice`},
		{swap(`["mon","tue","wed","thu","fri"]`, `[]`), `funnel.weekdays: name at least one day`},
		{swap(`daily_cap          = 2`, `daily_cap = 0`), `funnel.daily_cap: must be at least 1, got 0`},
		{swap(`"Europe/Paris"`, `"Mars/Olympus"`), `funnel.fallback_time_zone: time zone "Mars/Olympus"`},
		{swap(`"Europe/Paris"`, `"Local"`), `funnel.fallback_time_zone: want an IANA time zone`},
		{swap(`goal               = "paid_invoice"`, `goal = "signup"`), `funnel.goal: want payment_method_verified or paid_invoice, got "signup"`},
		{swap(`name               = "trial"`, `name = ""`), `funnel.name: want 1 to 32`},
		{funnelFile[:strings.Index(funnelFile, "[[step]]")], "funnel my.toml: no [[step]]"},
		{"[funnel\n", "funnel my.toml: toml:"},
	} {
		_, err := ParseFunnel("my.toml", []byte(tc.file))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
			continue
		}
		if !errors.Is(err, run.ErrUsage) {
			t.Errorf("%v is not a usage error (exit 2)", err)
		}
	}
}

func TestDelay(t *testing.T) {
	paris, _ := time.LoadLocation("Europe/Paris")
	for _, tc := range []struct {
		in   string
		want Delay
		ok   bool
	}{
		{"2d", Delay{Days: 2}, true}, {"-3d", Delay{Days: -3}, true}, {"0d", Delay{}, true}, {"36h", Delay{Exact: 36 * time.Hour}, true},
		{"-90m", Delay{Exact: -90 * time.Minute}, true}, {"0", Delay{}, true},
		{"2.5d", Delay{}, false}, {"d", Delay{}, false}, {"2d12h", Delay{}, false}, {"two days", Delay{}, false}, {"", Delay{}, false},
	} {
		var d Delay
		err := d.UnmarshalText([]byte(tc.in))
		if (err == nil) != tc.ok || d != tc.want {
			t.Errorf("%q: %+v, %v", tc.in, d, err)
		}
	}
	// Days are calendar days in the recipient's zone; durations are elapsed time.
	// Paris springs forward on 2026-03-29: two days after Friday 10:30 CET is Sunday
	// 10:30 CEST, 47 hours later.
	signup := utc("2026-03-27T09:30:00Z")
	if got := (Delay{Days: 2}).from(signup, paris); !got.Equal(utc("2026-03-29T08:30:00Z")) {
		t.Errorf("2d across spring DST: %s", got)
	}
	if got := (Delay{Exact: 48 * time.Hour}).from(signup, paris); !got.Equal(utc("2026-03-29T09:30:00Z")) {
		t.Errorf("48h across spring DST: %s", got)
	}
	if got := (Delay{Days: -3}).from(utc("2026-10-27T11:00:00Z"), paris); !got.Equal(utc("2026-10-24T10:00:00Z")) {
		t.Errorf("-3d across autumn DST: %s (want 12:00 CEST, 73h before 12:00 CET)", got)
	}
}

func TestLocationFallsBackAndCaches(t *testing.T) {
	f, err := ParseFunnel("my.toml", []byte(funnelFile)) // fallback Europe/Paris
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		want     string
		fallback bool
	}{
		{"America/New_York", "America/New_York", false}, {"UTC", "UTC", false},
		{"", "Europe/Paris", true}, {"Mars/Olympus", "Europe/Paris", true}, {"Local", "Europe/Paris", true},
		{"europe/paris", "Europe/Paris", true}, // case matters on Linux zoneinfo, and to tzdata
		{"America/New_York", "America/New_York", false},
	} {
		loc, fb := f.Location(tc.name)
		if loc.String() != tc.want || fb != tc.fallback {
			t.Errorf("Location(%q) = %s, %v", tc.name, loc, fb)
		}
	}
	if len(f.zones.m) != 6 {
		t.Errorf("cache holds %d zones, want 6", len(f.zones.m))
	}
}

// templatesWith returns the embedded templates with some files replaced or removed
// (an empty content removes the file).
func templatesWith(t *testing.T, files map[string]string) *mail.Templates {
	t.Helper()
	m := fstest.MapFS{}
	err := fs.WalkDir(TemplateFiles(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(TemplateFiles(), path)
		m[path] = &fstest.MapFile{Data: b}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if content == "" {
			delete(m, name)
			continue
		}
		m[name] = &fstest.MapFile{Data: []byte(content)}
	}
	tmpl, err := mail.NewTemplates(m)
	if err != nil {
		t.Fatal(err)
	}
	return tmpl
}

func TestCheckTemplates(t *testing.T) {
	f := DefaultFunnel()
	noLink := "<p>Hi {{.Name}}</p>"
	for _, tc := range []struct {
		files map[string]string
		want  string
	}{
		{map[string]string{"tips.subject.tmpl": "", "tips.txt.tmpl": "", "tips.html.tmpl": ""},
			"funnel funnel.toml (shipped): step 3 (tips): template: no tips.{subject,txt,html}.tmpl among the templates"},
		{map[string]string{"first_vm.txt.tmpl": "Hi {{.FirstName}}"},
			`step 2 (first_vm): template: first_vm does not render with sample data: render first_vm text`},
		{map[string]string{"last_call.html.tmpl": noLink},
			`step 5 (last_call): template: last_call: every funnel message needs a visible unsubscribe link`},
		{map[string]string{"welcome.txt.tmpl": "Hi. Unsubscribe: {{if .Name}}{{.UnsubscribeURL}}{{end}}"},
			`step 1 (welcome): template: welcome: every funnel message needs a visible unsubscribe link`},
		{map[string]string{"trial_ending.subject.tmpl": "Trial ends {{.TrialEndsOn}}{{if not .TrialEndsOn}}{{.X}}{{end}}"},
			`step 4 (trial_ending): template: trial_ending does not render with sample data`},
	} {
		err := f.CheckTemplates(templatesWith(t, tc.files))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
			continue
		}
		if !errors.Is(err, run.ErrUsage) {
			t.Errorf("%v is not a usage error", err)
		}
	}
	// A rebranded template that keeps the link passes.
	if err := f.CheckTemplates(templatesWith(t, map[string]string{
		"tips.html.tmpl": `<p>Hello from Acme.</p><a href="{{.UnsubscribeURL}}">Unsubscribe</a>`,
	})); err != nil {
		t.Fatal(err)
	}
}

func TestEveryShippedTemplateRendersTheLinksItNeeds(t *testing.T) {
	tmpl, err := Templates()
	if err != nil {
		t.Fatal(err)
	}
	full := SampleMessages()[0]
	for _, s := range DefaultFunnel().Steps {
		subject, text, html, err := tmpl.Render(s.Template, full)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(text+html+subject, "<no value>") || !strings.Contains(html, `<a href="https://cloud.example/unsubscribe/SAMPLE-TOKEN">`) {
			t.Errorf("%s: %s\n%s", s.Name, text, html)
		}
		// Every message gives a way to reach a person.
		if !strings.Contains(text, full.SupportEmail) || !strings.Contains(html, "mailto:"+full.SupportEmail) {
			t.Errorf("%s: no support address", s.Name)
		}
	}
	subject, _, _, _ := tmpl.Render("trial_ending", full)
	if subject != "Your trial credit ends on Monday 9 March" {
		t.Errorf("trial_ending subject %q", subject)
	}
	subject, _, _, _ = tmpl.Render("trial_ending", SampleMessages()[1])
	if subject != "Your trial credit ends soon" {
		t.Errorf("trial_ending subject without a date %q", subject)
	}
}
