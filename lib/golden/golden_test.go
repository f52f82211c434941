package golden

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recorder is a testing.TB that keeps what Check reports instead of failing the test.
type recorder struct {
	testing.TB
	errs  []string
	fatal bool
}

func (r *recorder) Helper() {}

func (r *recorder) Logf(string, ...any) {}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// Fatalf records and returns; Check returns right after every Fatalf, as the real one
// would stop it there.
func (r *recorder) Fatalf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
	r.fatal = true
}

// inTemp runs the test from an empty directory, as if it were a package's.
func inTemp(t *testing.T) {
	t.Chdir(t.TempDir())
}

func TestCheckCompares(t *testing.T) {
	inTemp(t)
	t.Setenv(EnvUpdate, "")
	if err := os.MkdirAll("testdata", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", "a.golden"), []byte("same\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	r := &recorder{TB: t}
	Check(r, "a.golden", []byte("same\n"))
	if len(r.errs) != 0 {
		t.Errorf("equal output reported %q", r.errs)
	}

	r = &recorder{TB: t}
	Check(r, "a.golden", []byte("other\n"))
	if len(r.errs) != 1 || r.fatal || !strings.Contains(r.errs[0], "CRONKIT_UPDATE_GOLDEN=1 go test rewrites it") ||
		!strings.Contains(r.errs[0], "other") {
		t.Errorf("different output reported %q (fatal %v), want one error naming the command and showing the output", r.errs, r.fatal)
	}

	r = &recorder{TB: t}
	Check(r, "missing.golden", []byte("x"))
	if !r.fatal || len(r.errs) != 1 || !strings.Contains(r.errs[0], "CRONKIT_UPDATE_GOLDEN=1 go test writes it") {
		t.Errorf("missing file reported %q (fatal %v)", r.errs, r.fatal)
	}
	if _, err := os.Stat(filepath.Join("testdata", "missing.golden")); err == nil {
		t.Error("a missing golden file was created without CRONKIT_UPDATE_GOLDEN=1")
	}
}

func TestCheckRewritesUnderTheVariable(t *testing.T) {
	inTemp(t)
	t.Setenv(EnvUpdate, "1")
	for _, content := range []string{"first\n", "second\n"} {
		r := &recorder{TB: t}
		Check(r, "sub/b.golden", []byte(content))
		if len(r.errs) != 0 {
			t.Fatalf("update reported %q", r.errs)
		}
		got, err := os.ReadFile(filepath.Join("testdata", "sub", "b.golden"))
		if err != nil || string(got) != content {
			t.Fatalf("file holds %q (%v), want %q", got, err, content)
		}
	}
	// Only "1" turns it on.
	t.Setenv(EnvUpdate, "true")
	r := &recorder{TB: t}
	Check(r, "sub/b.golden", []byte("third\n"))
	if len(r.errs) != 1 {
		t.Errorf("%s=true rewrote the file instead of comparing: %q", EnvUpdate, r.errs)
	}
}
