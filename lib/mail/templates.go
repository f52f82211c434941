package mail

import (
	"bytes"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"os"
	"path"
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
	layered []string
}

// TemplateLayer is a directory of templates laid over a job's embedded ones, so a
// provider can rebrand without a rebuild (`--templates DIR`): a file in it replaces the
// embedded file of the same name, one part at a time (a new reminder.html.tmpl alone
// keeps the embedded subject and text), and a name the job does not embed adds a
// template. Name is how errors call the layer: its path.
type TemplateLayer struct {
	Name string
	FS   fs.FS
}

// TemplateDir is the layer of directory dir on disk; "" is no layer, so a job can pass
// its --templates flag as it comes.
func TemplateDir(dir string) TemplateLayer {
	if dir == "" {
		return TemplateLayer{}
	}
	return TemplateLayer{Name: dir, FS: os.DirFS(dir)}
}

// NewTemplates parses every *.tmpl at the root of fsys (jobs pass
// fs.Sub(embedded, "templates")), then of each layer in turn, later ones replacing
// earlier files of the same name. Each name needs all three files; a missing part, a
// file with another suffix or a parse error fails construction, and the error names
// the file and the layer it came from. A layer whose directory cannot be read fails
// too: a mistyped --templates must not quietly send the embedded templates.
func NewTemplates(fsys fs.FS, layers ...TemplateLayer) (*Templates, error) {
	t := &Templates{
		subject: map[string]*texttemplate.Template{},
		text:    map[string]*texttemplate.Template{},
		html:    map[string]*htmltemplate.Template{},
	}
	parts := map[string]bool{}
	if err := t.parseLayer(TemplateLayer{FS: fsys}, parts); err != nil {
		return nil, err
	}
	for _, l := range layers {
		if l.FS == nil {
			continue
		}
		if _, err := fs.ReadDir(l.FS, "."); err != nil {
			return nil, fmt.Errorf("mail templates %s: %w", l.Name, err)
		}
		if err := t.parseLayer(l, parts); err != nil {
			return nil, err
		}
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

// parseLayer parses the *.tmpl files at the root of l over what t holds.
func (t *Templates) parseLayer(l TemplateLayer, parts map[string]bool) error {
	files, err := fs.Glob(l.FS, "*.tmpl")
	if err != nil {
		return fmt.Errorf("mail templates %s: %w", l.Name, err)
	}
	for _, file := range files {
		where := file
		if l.Name != "" {
			where = path.Join(l.Name, file)
		}
		src, err := fs.ReadFile(l.FS, file)
		if err != nil {
			return fmt.Errorf("mail template %s: %w", where, err)
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
			return fmt.Errorf("mail template %s: want NAME%s, NAME%s or NAME%s", where, subjectSuffix, textSuffix, htmlSuffix)
		}
		if err != nil {
			return fmt.Errorf("mail template %s: %w", where, err)
		}
		if l.Name != "" {
			t.layered = append(t.layered, where)
		}
		parts[name] = true
	}
	return nil
}

// Overrides lists the files that came from layers (layer path/file), in the order
// they were read, for a job to log at start which templates a provider replaced.
func (t *Templates) Overrides() []string {
	return append([]string(nil), t.layered...)
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
