package mail_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/cronkit/cronkit/lib/mail"
)

type reminderData struct {
	Name     string
	Invoice  string
	Amount   string
	DaysLate int
	PayURL   string
}

func testTemplates(t *testing.T) *mail.Templates {
	t.Helper()
	tpl, err := mail.NewTemplates(os.DirFS("testdata/templates"))
	if err != nil {
		t.Fatalf("NewTemplates: %v", err)
	}
	return tpl
}

func TestRender(t *testing.T) {
	tpl := testTemplates(t)
	if got := tpl.Names(); !reflect.DeepEqual(got, []string{"reminder"}) {
		t.Fatalf("Names() = %v", got)
	}
	subject, text, html, err := tpl.Render("reminder", reminderData{
		Name: "Ada", Invoice: "INV-2025-0042", Amount: "EUR 12.30", DaysLate: 14,
		PayURL: "https://billing.example.com/pay?i=42&t=x",
	})
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	if want := "Invoice INV-2025-0042 is 14 days overdue"; subject != want {
		t.Errorf("subject = %q, want %q", subject, want)
	}
	wantText := "Hello Ada,\n\ninvoice INV-2025-0042 (EUR 12.30) is 14 days overdue.\nPay it here: https://billing.example.com/pay?i=42&t=x\n"
	if text != wantText {
		t.Errorf("text = %q, want %q", text, wantText)
	}
	wantHTML := "<p>Hello Ada,</p>\n<p>invoice INV-2025-0042 (EUR 12.30) is 14 days overdue.</p>\n" +
		"<p><a href=\"https://billing.example.com/pay?i=42&amp;t=x\">Pay it here</a></p>\n"
	if html != wantHTML {
		t.Errorf("html = %q, want %q", html, wantHTML)
	}
}

func TestRenderEscapesHTMLButNotText(t *testing.T) {
	tpl := testTemplates(t)
	_, text, html, err := tpl.Render("reminder", reminderData{
		Name: `<script>alert("x")</script>`, Invoice: "1", Amount: "1", DaysLate: 1,
		PayURL: `javascript:alert(1)`,
	})
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	if strings.Contains(html, "<script>") {
		t.Errorf("html contains an unescaped script tag: %q", html)
	}
	if !strings.Contains(html, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") {
		t.Errorf("html does not contain the escaped name: %q", html)
	}
	if strings.Contains(html, "javascript:") {
		t.Errorf("html kept a javascript: URL in href: %q", html)
	}
	// Plain text is not HTML: escaping it would show entities to the reader.
	if !strings.Contains(text, `Hello <script>alert("x")</script>,`) {
		t.Errorf("text = %q, want the name verbatim", text)
	}
}

func TestRenderErrors(t *testing.T) {
	tpl := testTemplates(t)
	// A map lacks keys silently unless missingkey=error is in force.
	_, _, _, err := tpl.Render("reminder", map[string]any{"Invoice": "1", "DaysLate": 3})
	if err == nil || !strings.Contains(err.Error(), "map has no entry for key") {
		t.Errorf("missing key: err = %v, want a missing key error", err)
	}
	_, _, _, err = tpl.Render("reminder", struct{ Invoice string }{"1"})
	if err == nil {
		t.Errorf("missing struct field: want an error")
	}
	_, _, _, err = tpl.Render("welcome", nil)
	if !errors.Is(err, mail.ErrUnknownTemplate) {
		t.Errorf("unknown template: err = %v, want ErrUnknownTemplate", err)
	}
}

func TestRenderRejectsMultiLineSubject(t *testing.T) {
	tpl, err := mail.NewTemplates(fstest.MapFS{
		"x.subject.tmpl": {Data: []byte("Hello {{.}}\n")}, // editors end files with a newline
		"x.txt.tmpl":     {Data: []byte("t")},
		"x.html.tmpl":    {Data: []byte("h")},
	})
	if err != nil {
		t.Fatalf("NewTemplates: %v", err)
	}
	subject, _, _, err := tpl.Render("x", "Ada")
	if err != nil || subject != "Hello Ada" {
		t.Errorf("trailing newline: subject %q, err %v; want %q", subject, err, "Hello Ada")
	}
	if _, _, _, err := tpl.Render("x", "Ada\r\nBcc: victim@example.com"); !errors.Is(err, mail.ErrInvalidMessage) {
		t.Errorf("header injection through the subject: err = %v, want ErrInvalidMessage", err)
	}
}

func TestNewTemplatesErrors(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	tests := []struct {
		name string
		fsys fstest.MapFS
		want string
	}{
		{"empty", fstest.MapFS{}, "no *.tmpl files"},
		{"missing html", fstest.MapFS{
			"a.subject.tmpl": file("s"), "a.txt.tmpl": file("t"),
		}, "missing a.html.tmpl"},
		{"missing subject", fstest.MapFS{
			"a.txt.tmpl": file("t"), "a.html.tmpl": file("h"),
		}, "missing a.subject.tmpl"},
		{"unknown suffix", fstest.MapFS{
			"a.subject.tmpl": file("s"), "a.text.tmpl": file("t"), "a.html.tmpl": file("h"),
		}, "a.text.tmpl: want NAME"},
		{"bad text syntax", fstest.MapFS{
			"a.subject.tmpl": file("s"), "a.txt.tmpl": file("{{.X"), "a.html.tmpl": file("h"),
		}, "mail template a.txt.tmpl"},
		{"bad html syntax", fstest.MapFS{
			"a.subject.tmpl": file("s"), "a.txt.tmpl": file("t"), "a.html.tmpl": file("{{if}}"),
		}, "mail template a.html.tmpl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := mail.NewTemplates(tt.fsys)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// writeDir writes files into a fresh directory, as a provider's --templates DIR.
func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, src := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestTemplateDirOverridesEmbeddedParts(t *testing.T) {
	dir := writeDir(t, map[string]string{
		// Only the HTML of reminder is rebranded; subject and text stay embedded.
		"reminder.html.tmpl": `<p style="color:#c00">ACME: {{.Invoice}} is late</p>`,
		// A template the job does not embed (a --funnel step of the provider's own).
		"winback.subject.tmpl": "We miss you, {{.Name}}",
		"winback.txt.tmpl":     "Come back, {{.Name}}.",
		"winback.html.tmpl":    "<p>Come back, {{.Name}}.</p>",
		"README.md":            "not a template: ignored",
	})
	tpl, err := mail.NewTemplates(os.DirFS("testdata/templates"), mail.TemplateDir(dir))
	if err != nil {
		t.Fatalf("NewTemplates: %v", err)
	}
	if got := tpl.Names(); !reflect.DeepEqual(got, []string{"reminder", "winback"}) {
		t.Errorf("Names() = %v", got)
	}
	subject, text, html, err := tpl.Render("reminder", reminderData{Name: "Ada", Invoice: "INV-1", Amount: "1", DaysLate: 2, PayURL: "https://x.example"})
	if err != nil {
		t.Fatal(err)
	}
	if subject != "Invoice INV-1 is 2 days overdue" || !strings.HasPrefix(text, "Hello Ada,") {
		t.Errorf("subject %q, text %q: want the embedded ones", subject, text)
	}
	if html != `<p style="color:#c00">ACME: INV-1 is late</p>` {
		t.Errorf("html = %q, want the override", html)
	}
	if subject, _, _, err := tpl.Render("winback", reminderData{Name: "Ada"}); err != nil || subject != "We miss you, Ada" {
		t.Errorf("added template: %q, %v", subject, err)
	}
	want := []string{filepath.Join(dir, "reminder.html.tmpl"), filepath.Join(dir, "winback.html.tmpl"),
		filepath.Join(dir, "winback.subject.tmpl"), filepath.Join(dir, "winback.txt.tmpl")}
	if got := tpl.Overrides(); !reflect.DeepEqual(got, want) {
		t.Errorf("Overrides() = %q, want %q", got, want)
	}
}

func TestTemplateLayersLaterWins(t *testing.T) {
	base := fstest.MapFS{
		"a.subject.tmpl": {Data: []byte("base")}, "a.txt.tmpl": {Data: []byte("t")}, "a.html.tmpl": {Data: []byte("h")},
	}
	tpl, err := mail.NewTemplates(base,
		mail.TemplateLayer{Name: "one", FS: fstest.MapFS{"a.subject.tmpl": {Data: []byte("one")}}},
		mail.TemplateDir(""), // no --templates: no layer
		mail.TemplateLayer{Name: "two", FS: fstest.MapFS{"a.subject.tmpl": {Data: []byte("two")}}})
	if err != nil {
		t.Fatal(err)
	}
	if subject, _, _, _ := tpl.Render("a", nil); subject != "two" {
		t.Errorf("subject = %q, want the last layer's", subject)
	}
}

func TestTemplateDirErrorsNameTheFile(t *testing.T) {
	embedded := os.DirFS("testdata/templates")
	bad := writeDir(t, map[string]string{"reminder.txt.tmpl": "Hello {{.Name}\n"})
	_, err := mail.NewTemplates(embedded, mail.TemplateDir(bad))
	if want := "mail template " + filepath.Join(bad, "reminder.txt.tmpl") + ": "; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("unparsable override: err = %v, want it to start %q", err, want)
	}
	badHTML := writeDir(t, map[string]string{"reminder.html.tmpl": "<a href={{if}}>"})
	if _, err := mail.NewTemplates(embedded, mail.TemplateDir(badHTML)); err == nil || !strings.Contains(err.Error(), filepath.Join(badHTML, "reminder.html.tmpl")) {
		t.Errorf("unparsable HTML override: err = %v", err)
	}
	suffix := writeDir(t, map[string]string{"reminder.text.tmpl": "x"})
	if _, err := mail.NewTemplates(embedded, mail.TemplateDir(suffix)); err == nil || !strings.Contains(err.Error(), filepath.Join(suffix, "reminder.text.tmpl")) {
		t.Errorf("wrong suffix: err = %v", err)
	}
	partial := writeDir(t, map[string]string{"welcome.txt.tmpl": "x"})
	if _, err := mail.NewTemplates(embedded, mail.TemplateDir(partial)); err == nil || !strings.Contains(err.Error(), "missing welcome.subject.tmpl") {
		t.Errorf("a new template with one part: err = %v", err)
	}
	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := mail.NewTemplates(embedded, mail.TemplateDir(missing)); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("a --templates that does not exist: err = %v, want it named", err)
	}
	// The embedded templates' own errors keep their plain file names.
	if _, err := mail.NewTemplates(fstest.MapFS{"a.txt.tmpl": {Data: []byte("{{")}}); err == nil || !strings.HasPrefix(err.Error(), "mail template a.txt.tmpl: ") {
		t.Errorf("embedded error: %v", err)
	}
}
