// Package golden is the one golden-file mechanism of the repository: a test compares
// its output with a file under its package's testdata/, and
//
//	CRONKIT_UPDATE_GOLDEN=1 go test ./...
//
// rewrites every such file instead (with CRONKIT_INTEGRATION=1 and a database for the
// golden tests that need one). An environment variable, not a -update flag, because
// `go test ./...` hands a flag to every test binary and the packages that do not
// define it fail with "flag provided but not defined".
//
// Like mysqltest, it is test support: only _test.go files import it.
package golden

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// EnvUpdate names the variable that makes Check rewrite the golden files; "1" turns
// it on.
const EnvUpdate = "CRONKIT_UPDATE_GOLDEN"

// Update reports whether this test run rewrites golden files.
func Update() bool { return os.Getenv(EnvUpdate) == "1" }

// Check compares got with testdata/name, relative to the test's package directory
// (where `go test` runs it). Under CRONKIT_UPDATE_GOLDEN=1 it writes got there first
// (only when it differs, so unchanged files keep their time stamps), creating
// directories as needed; a missing file is otherwise a fatal error saying how to
// create it.
func Check(t testing.TB, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", filepath.FromSlash(name))
	want, err := os.ReadFile(path)
	if Update() && (err != nil || !bytes.Equal(got, want)) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatalf("golden %s: %v", path, err)
			return
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatalf("golden %s: %v", path, err)
		}
		t.Logf("golden %s rewritten", path)
		return
	}
	if err != nil {
		t.Fatalf("golden %s: %v (%s=1 go test writes it)", path, err, EnvUpdate)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from golden %s (%s=1 go test rewrites it)\n--- got ---\n%s\n--- want ---\n%s",
			path, EnvUpdate, got, want)
	}
}
