package crontab

import (
	"errors"
	"os"
	"strings"
	"testing"
	"testing/fstest"
)

// parseErrorsNameTheFile checks that every problem of a (nested) joined parse error
// is a *ParseError naming source, or a file in the directory source.
func parseErrorsNameTheFile(t *testing.T, err error, source string) {
	t.Helper()
	if err == nil {
		return
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			parseErrorsNameTheFile(t, e, source)
		}
		return
	}
	var pe *ParseError
	if !errors.As(err, &pe) || !strings.HasPrefix(pe.Source, source) || !strings.HasPrefix(err.Error(), pe.Source+":") {
		t.Fatalf("problem does not name the file %s: %v", source, err)
	}
}

// FuzzParseCrontab: arbitrary crontab files never panic, every problem names the
// file and (for a line's problem) the line, and every entry has a parseable spec.
func FuzzParseCrontab(f *testing.F) {
	shipped, err := os.ReadFile("../../crontab/cronkit.cron")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(shipped, true)
	f.Add([]byte("5 * * * * /usr/local/bin/jobs billing --timeout 50m\n"), false)
	f.Add([]byte("CRON_TZ=Europe/Paris\n@daily cronkit jobs abuse\n"), true)
	f.Add([]byte("CRON_TZ=Nowhere/Else\n61 25 * * * cronkit jobs x; rm -rf /\n"), true)
	f.Add([]byte("*/0 * * * * jobs billing %\n"), false)
	f.Add([]byte("@every 1s jobs noop\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, system bool) {
		entries, err := ParseCrontab(strings.NewReader(string(data)), "fuzz.cron", system)
		parseErrorsNameTheFile(t, err, "fuzz.cron")
		for _, e := range entries {
			if _, err := e.schedule(); err != nil {
				t.Fatalf("entry at line %d was accepted with a spec that does not parse: %v", e.Line, err)
			}
		}
	})
}

// FuzzParseSystemd: arbitrary timer and service units never panic and every
// problem names the directory.
func FuzzParseSystemd(f *testing.F) {
	timer, err := os.ReadFile("../../crontab/systemd/cronkit-billing.timer")
	if err != nil {
		f.Fatal(err)
	}
	service, err := os.ReadFile("../../crontab/systemd/cronkit-billing.service")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(timer, service)
	f.Add([]byte("[Timer]\nOnCalendar=Mon..Fri *-*-1 00:00:00\n"), []byte("[Service]\nExecStart=/usr/local/bin/jobs abuse\n"))
	f.Add([]byte("[Timer]\nOnBootSec=5min\n"), []byte(""))
	f.Add([]byte("[Timer]\nOnCalendar=*-*-* *:00/15:30 Europe/Nowhere\n"), []byte("[Service]\nExecStart=jobs \"unterminated\n"))
	f.Add([]byte("[Timer]\nOnCalendar=hourly\nOnCalendar=daily\nUnit=other.service\n"), []byte("[Service]\nExecStart=\\\n"))
	f.Fuzz(func(t *testing.T, timer, service []byte) {
		fsys := fstest.MapFS{
			"cronkit-x.timer":   &fstest.MapFile{Data: timer},
			"cronkit-x.service": &fstest.MapFile{Data: service},
		}
		entries, err := ParseSystemd(fsys, "fuzzdir")
		parseErrorsNameTheFile(t, err, "fuzzdir")
		for _, e := range entries {
			if _, err := e.schedule(); err != nil {
				t.Fatalf("a timer was accepted with a spec that does not parse: %v", err)
			}
		}
	})
}

// FuzzParseKubernetes: arbitrary YAML never panics and every problem names the file.
func FuzzParseKubernetes(f *testing.F) {
	shipped, err := os.ReadFile("../../crontab/k8s/cronjobs.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(shipped)
	f.Add([]byte("kind: CronJob\nspec:\n  schedule: \"61 * * * *\"\n"))
	f.Add([]byte("kind: CronJob\nspec: [1, 2]\n"))
	f.Add([]byte("---\n---\nkind: CronJob\nspec:\n  timeZone: Mars/Base\n  schedule: '@hourly'\n  jobTemplate: {spec: {template: {spec: {containers: []}}}}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("\t- : :\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ParseKubernetes(strings.NewReader(string(data)), "fuzz.yaml")
		parseErrorsNameTheFile(t, err, "fuzz.yaml")
		for _, e := range entries {
			if _, err := e.schedule(); err != nil {
				t.Fatalf("a CronJob was accepted with a spec that does not parse: %v", err)
			}
		}
	})
}
