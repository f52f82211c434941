package main

import (
	"encoding/json"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func TestLinkArgs(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want []string
	}{
		{[]string{"/usr/bin/cronkit-billing", "--dry-run"}, []string{"billing", "--dry-run"}},
		{[]string{"cronkit-drip", "unsubscribe-server", "--listen", ":8080"}, []string{"drip", "unsubscribe-server", "--listen", ":8080"}},
		{[]string{"./cronkit-reconcile"}, []string{"reconcile"}},
		{[]string{"/usr/bin/cronkit", "abuse", "--dry-run"}, []string{"abuse", "--dry-run"}},
		{[]string{"/usr/local/bin/jobs", "version"}, []string{"version"}},
		// Not a linked job: the name means nothing, the arguments are as given.
		{[]string{"/tmp/cronkit-version", "history"}, []string{"history"}},
		{[]string{"cronkit-nosuch", "version"}, []string{"version"}},
		{[]string{"cronkit-", "version"}, []string{"version"}},
		{[]string{"cronkit"}, []string{}},
		{nil, nil},
	} {
		if got := linkArgs(tc.argv); !slices.Equal(got, tc.want) {
			t.Errorf("linkArgs(%q) = %q, want %q", tc.argv, got, tc.want)
		}
	}
}

func TestLinkedJobsAreCommands(t *testing.T) {
	for _, j := range linkedJobs() {
		if find(j) == nil {
			t.Errorf("linked job %q is not a command", j)
		}
	}
}

// TestPackageInstallsEveryLink keeps packaging/nfpm.yaml's links in step with
// linkedJobs: a link the package lacks is a job units cannot name, and a link to a
// name the binary does not know runs it as plain cronkit with the wrong arguments.
func TestPackageInstallsEveryLink(t *testing.T) {
	b, err := os.ReadFile("../../packaging/nfpm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range regexp.MustCompile(`(?m)^\s*dst:\s*/usr/bin/cronkit-(\S+)\s*$`).FindAllStringSubmatch(string(b), -1) {
		got = append(got, m[1])
	}
	slices.Sort(got)
	if want := linkedJobs(); !slices.Equal(got, want) {
		t.Errorf("packaging/nfpm.yaml links cronkit-%q, want cronkit-%q", got, want)
	}
}

func TestVersionJSONInProcess(t *testing.T) {
	code, out, errOut := jobs(t, nil, "version", "--output", "json")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	var v map[string]string
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v: %q", err, out)
	}
	if v["version"] != "dev" || v["go"] != runtime.Version() {
		t.Errorf("version %q", out)
	}
	for _, k := range []string{"version", "commit", "commit_time", "go"} {
		if _, ok := v[k]; !ok {
			t.Errorf("no %q in %s", k, out)
		}
	}
	if code, _, _ := jobs(t, nil, "version", "--output", "xml"); code != 2 {
		t.Errorf("--output xml: exit %d, want 2", code)
	}
}

// TestBinaryUnderLinkNames builds the binary as the Makefile does (-X from git) and
// runs it under the names the package installs: the version it reports is the one
// linked in, and cronkit-<job> runs that job with the remaining arguments while any
// other name behaves as cronkit.
func TestBinaryUnderLinkNames(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "cronkit")
	ldflags := "-s -w -buildid= -X main.version=9.8.7 -X main.commit=0123abc -X main.commitTime=2026-11-30T08:15:23Z"
	build := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	link := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.Symlink("cronkit", p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	runAs := func(path string, args ...string) (int, string, string) {
		cmd := exec.Command(path, args...)
		cmd.Env = []string{"PATH=/usr/bin:/bin"} // no CRONKIT_* from the test's environment
		var o, e strings.Builder
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, o.String(), e.String()
	}

	code, out, errOut := runAs(bin, "version", "--output", "json")
	if code != 0 {
		t.Fatalf("version: exit %d, stderr %q", code, errOut)
	}
	var v buildInfo
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v: %q", err, out)
	}
	want := buildInfo{Version: "9.8.7", Commit: "0123abc", CommitTime: "2026-11-30T08:15:23Z", Go: runtime.Version()}
	if v != want {
		t.Errorf("version = %+v, want %+v", v, want)
	}

	// cronkit-billing --help is `cronkit billing --help`: billing's own flags.
	code, out, _ = runAs(link("cronkit-billing"), "--help")
	if code != 0 || !strings.Contains(out, " billing [") || !strings.Contains(out, "--timeout") {
		t.Errorf("cronkit-billing --help: exit %d, stdout %q", code, out)
	}
	// The remaining arguments reach the job's parser.
	code, _, errOut = runAs(link("cronkit-abuse"), "--bogus")
	if code != 2 || !strings.Contains(errOut, "abuse: flag provided but not defined: -bogus") {
		t.Errorf("cronkit-abuse --bogus: exit %d, stderr %q", code, errOut)
	}
	code, out, _ = runAs(link("cronkit-drip"), "unsubscribe-server", "--help")
	if code != 0 || !strings.Contains(out, "--listen") {
		t.Errorf("cronkit-drip unsubscribe-server --help: exit %d, stdout %q", code, out)
	}
	code, out, _ = runAs(link("cronkit-reconcile"), "--help")
	if code != 0 || !strings.Contains(out, " reconcile ") {
		t.Errorf("cronkit-reconcile --help: exit %d, stdout %q", code, out)
	}
	// Any other name is the plain command.
	for _, name := range []string{"jobs", "cronkit-version", "cronkit-nosuch"} {
		code, out, errOut = runAs(link(name), "version", "--output", "json")
		if code != 0 || !strings.Contains(out, `"version": "9.8.7"`) {
			t.Errorf("%s version: exit %d, stdout %q, stderr %q", name, code, out, errOut)
		}
	}
}

// TestEnvTemplateNamesEverySetting keeps packaging/env, installed as
// /etc/cronkit/env, complete: every variable of every command a host runs is named
// there, secrets only as NAME_FILE, so an operator never has to read --help to find
// a setting and never writes a secret into the file.
func TestEnvTemplateNamesEverySetting(t *testing.T) {
	b, err := os.ReadFile("../../packaging/env")
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#?(CRONKIT_[A-Z0-9_]+)=`).FindAllStringSubmatch(string(b), -1) {
		named[m[1]] = true
	}
	// Not host settings: version has none worth one, demo runs its own fakes,
	// crontab check reads files given on its command line.
	skip := map[string]bool{"version": true, "demo": true, "crontab": true}
	e := &env{getenv: func(string) string { return "" }, stdout: io.Discard, stderr: io.Discard}
	for _, c := range commands() {
		if skip[c.name] {
			continue
		}
		fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
		c.setup(e, fs)
		fs.VisitAll(func(f *flag.Flag) {
			name := envName(f.Name)
			if secretFlags[f.Name] {
				if named[name] {
					t.Errorf("packaging/env names the secret %s: want only %s_FILE", name, name)
				}
				name += "_FILE"
			}
			if !named[name] {
				t.Errorf("packaging/env does not name %s (%s --%s)", name, c.name, f.Name)
			}
		})
	}
}
