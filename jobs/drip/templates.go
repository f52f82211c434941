package drip

import (
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/run"
)

//go:embed templates/*.tmpl
var templateFiles embed.FS

// TemplateFiles returns the funnel templates embedded in the binary, NAME.subject.tmpl,
// NAME.txt.tmpl and NAME.html.tmpl per message, for a --templates DIR to override.
func TemplateFiles() fs.FS {
	sub, err := fs.Sub(templateFiles, "templates")
	if err != nil {
		panic(fmt.Sprintf("drip: embedded templates: %v", err)) // a fixed, valid path
	}
	return sub
}

// Templates returns the embedded funnel templates, parsed.
func Templates() (*mail.Templates, error) { return mail.NewTemplates(TemplateFiles()) }

// MessageData is what funnel templates may use. Every field is always set (to "" when
// unknown), so a template never hits a missing key; optional ones are tested with
// {{if}}. UnsubscribeURL is required: every funnel message shows it in its body.
type MessageData struct {
	// Name is the account's name, "" when it has none.
	Name      string
	Email     string
	AccountID int64
	// TrialEndsOn is the trial credit's expiry as a date in the recipient's zone
	// (LocalDate), "" without a trial.
	TrialEndsOn string
	// TrialCredit is the credit left, "EUR 42.00", "" when unknown.
	TrialCredit    string
	ConsoleURL     string
	DocsURL        string
	BillingURL     string
	SupportEmail   string
	UnsubscribeURL string
}

// LocalDate writes a date as the recipient reads it, in their zone: "Monday 9 March".
func LocalDate(t time.Time, loc *time.Location) string { return t.In(loc).Format("Monday 2 January") }

// SampleMessages are the data every template must render with at start: one with
// every field set, one with the optional fields empty.
func SampleMessages() []MessageData {
	full := MessageData{
		Name: "Ada Lovelace", Email: "ada@example.com", AccountID: 42,
		TrialEndsOn: "Monday 9 March", TrialCredit: "EUR 42.00",
		ConsoleURL: "https://console.cloud.example/", DocsURL: "https://docs.cloud.example/getting-started",
		BillingURL: "https://console.cloud.example/billing", SupportEmail: "support@cloud.example",
		UnsubscribeURL: "https://cloud.example/unsubscribe/SAMPLE-TOKEN",
	}
	bare := full
	bare.Name, bare.TrialEndsOn, bare.TrialCredit = "", "", ""
	return []MessageData{full, bare}
}

// CheckTemplates checks, at start and before anything is sent, that every step's
// template is in t, renders with the sample data and shows the unsubscribe link in
// both bodies. Its errors are usage errors (exit 2) naming the file, the step and
// the key.
func (f *Funnel) CheckTemplates(t *mail.Templates) error {
	names := t.Names()
	for i, s := range f.Steps {
		fail := func(format string, args ...any) error {
			return run.Usagef("funnel %s: %s: template: %s", f.Source, stepLabel(i, s.Name), fmt.Sprintf(format, args...))
		}
		if !slices.Contains(names, s.Template) {
			return fail("no %s.{subject,txt,html}.tmpl among the templates", s.Template)
		}
		for _, data := range SampleMessages() {
			_, text, html, err := t.Render(s.Template, data)
			if err != nil {
				return fail("%s does not render with sample data: %v", s.Template, err)
			}
			if !strings.Contains(text, data.UnsubscribeURL) || !strings.Contains(html, `href="`+data.UnsubscribeURL+`"`) {
				return fail("%s: every funnel message needs a visible unsubscribe link ({{.UnsubscribeURL}}) in its text and HTML bodies", s.Template)
			}
		}
	}
	return nil
}
