package mail

import (
	"bytes"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"sort"
	"strings"
	texttemplate "text/template"
)

// ErrUnknownTemplate is returned by Render for a name the template set does not hold,
// so a job can tell a typo from a data error.
var ErrUnknownTemplate = errors.New("unknown mail template")

// Template file suffixes: a message named N is N.subject.tmpl, N.txt.tmpl and
// N.html.tmpl side by side.
const (
	subjectSuffix = ".subject.tmpl"
	textSuffix    = ".txt.tmpl"
	htmlSuffix    = ".html.tmpl"
)

// Templates is a job's set of email templates, parsed once when the job starts so a
// broken template fails the run before any state changes, not halfway through.
// Subject and text use text/template; HTML uses html/template, so data is escaped for
// its context. A key missing from the data is an error, never "<no value>".
type Templates struct {
	names   []string
	subject map[string]*texttemplate.Template
	text    map[string]*texttemplate.Template
	html    map[string]*htmltemplate.Template
}

// NewTemplates parses every *.tmpl at the root of fsys (jobs pass
// fs.Sub(embedded, "templates")). Each name needs all three files; a missing part, a
// file with another suffix or a parse error fails construction.
func NewTemplates(fsys fs.FS) (*Templates, error) {
	files, err := fs.Glob(fsys, "*.tmpl")
	if err != nil {
		return nil, fmt.Errorf("mail templates: %w", err)
	}
	t := &Templates{
		subject: map[string]*texttemplate.Template{},
		text:    map[string]*texttemplate.Template{},
		html:    map[string]*htmltemplate.Template{},
	}
	parts := map[string]bool{}
	for _, file := range files {
		src, err := fs.ReadFile(fsys, file)
		if err != nil {
			return nil, fmt.Errorf("mail template %s: %w", file, err)
		}
		var name string
		switch {
		case strings.HasSuffix(file, subjectSuffix):
			name = strings.TrimSuffix(file, subjectSuffix)
			t.subject[name], err = texttemplate.New(file).Option("missingkey=error").Parse(string(src))
		case strings.HasSuffix(file, textSuffix):
			name = strings.TrimSuffix(file, textSuffix)
			t.text[name], err = texttemplate.New(file).Option("missingkey=error").Parse(string(src))
		case strings.HasSuffix(file, htmlSuffix):
			name = strings.TrimSuffix(file, htmlSuffix)
			t.html[name], err = htmltemplate.New(file).Option("missingkey=error").Parse(string(src))
		default:
			return nil, fmt.Errorf("mail template %s: want NAME%s, NAME%s or NAME%s", file, subjectSuffix, textSuffix, htmlSuffix)
		}
		if err != nil {
			return nil, fmt.Errorf("mail template %s: %w", file, err)
		}
		parts[name] = true
	}
	if len(parts) == 0 {
		return nil, errors.New("mail templates: no *.tmpl files")
	}
	for name := range parts {
		t.names = append(t.names, name)
	}
	sort.Strings(t.names)
	for _, name := range t.names {
		missing := ""
		switch {
		case t.subject[name] == nil:
			missing = subjectSuffix
		case t.text[name] == nil:
			missing = textSuffix
		case t.html[name] == nil:
			missing = htmlSuffix
		}
		if missing != "" {
			return nil, fmt.Errorf("mail template %s: missing %s%s", name, name, missing)
		}
	}
	return t, nil
}

// Names lists the template names in sorted order, for a job to check at start that
// every step it may send has a template.
func (t *Templates) Names() []string {
	return append([]string(nil), t.names...)
}

// Render executes the three templates of name with data. The subject is trimmed and
// must fit on one line. Render is safe for concurrent use.
func (t *Templates) Render(name string, data any) (subject, text, html string, err error) {
	st, ok := t.subject[name]
	if !ok {
		return "", "", "", fmt.Errorf("render %q: %w", name, ErrUnknownTemplate)
	}
	var b bytes.Buffer
	if err := st.Execute(&b, data); err != nil {
		return "", "", "", fmt.Errorf("render %s subject: %w", name, err)
	}
	subject = strings.TrimSpace(b.String())
	if subject == "" || strings.ContainsAny(subject, "\r\n") {
		return "", "", "", fmt.Errorf("render %s subject: %w: empty or more than one line", name, ErrInvalidMessage)
	}
	b.Reset()
	if err := t.text[name].Execute(&b, data); err != nil {
		return "", "", "", fmt.Errorf("render %s text: %w", name, err)
	}
	text = b.String()
	b.Reset()
	if err := t.html[name].Execute(&b, data); err != nil {
		return "", "", "", fmt.Errorf("render %s html: %w", name, err)
	}
	return subject, text, b.String(), nil
}
