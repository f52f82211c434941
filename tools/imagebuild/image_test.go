package main

import (
	"archive/tar"
	"debug/buildinfo"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func testOptions() options {
	return options{version: "9.9.9", revision: "abc123", source: "https://example.com/cronkit", arch: "amd64",
		uid: 65532, created: time.Date(2026, 11, 30, 8, 15, 23, 0, time.UTC)}
}

// checkConfig is what every cronkit image must say: a numeric non-root user,
// cronkit as the entrypoint, the OCI labels, and the commit's time.
func checkConfig(t *testing.T, img v1.Image, version string, created time.Time) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	user, _, _ := strings.Cut(cf.Config.User, ":")
	if user == "" || user == "0" || user == "root" || strings.Trim(user, "0123456789") != "" {
		t.Errorf("user %q: want a numeric non-root uid", cf.Config.User)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/usr/bin/cronkit"}) {
		t.Errorf("entrypoint %q", cf.Config.Entrypoint)
	}
	for _, k := range []string{"org.opencontainers.image.source", "org.opencontainers.image.revision"} {
		if cf.Config.Labels[k] == "" {
			t.Errorf("no label %s", k)
		}
	}
	if got := cf.Config.Labels["org.opencontainers.image.version"]; got != version {
		t.Errorf("version label %q, want %q", got, version)
	}
	if !cf.Created.Time.Equal(created) {
		t.Errorf("created %v, want %v", cf.Created.Time, created)
	}
	for _, h := range cf.History {
		if !h.Created.Time.Equal(created) {
			t.Errorf("history created %v, want %v", h.Created.Time, created)
		}
	}
}

func TestImageIsReproducibleAndConfigured(t *testing.T) {
	o := testOptions()
	bin := []byte("\x7fELF not really")
	a, err := image(o, bin)
	if err != nil {
		t.Fatal(err)
	}
	b, err := image(o, bin)
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Errorf("two builds: digests %s and %s", da, db)
	}
	checkConfig(t, a, "9.9.9", o.created)
	o.created = o.created.Add(time.Second)
	c, err := image(o, bin)
	if err != nil {
		t.Fatal(err)
	}
	if dc, _ := c.Digest(); dc == da {
		t.Error("a different SOURCE_DATE_EPOCH gave the same digest: the time is not in the image")
	}
	if err := build(options{binary: "x", tag: "x:1", out: "x", version: "1", revision: "r", uid: 0}); err == nil {
		t.Error("--uid 0 accepted")
	}
}

// extract unpacks the image's layers into dir, returning the paths it wrote.
func extract(t *testing.T, img v1.Image, dir string) []string {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, h.Name)
			p := filepath.Join(dir, filepath.FromSlash(h.Name))
			switch h.Typeflag {
			case tar.TypeDir:
				if err := os.MkdirAll(p, os.FileMode(h.Mode).Perm()); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, os.FileMode(h.Mode).Perm()|os.ModeSticky*os.FileMode(h.Mode>>9&1)); err != nil {
					t.Fatal(err)
				}
			case tar.TypeReg:
				f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm())
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.Copy(f, tr); err != nil {
					t.Fatal(err)
				}
				f.Close()
			default:
				t.Fatalf("layer entry %s: type %c", h.Name, h.Typeflag)
			}
		}
		rc.Close()
	}
	return names
}

// TestImageTarball checks the tarball `make image` wrote (scripts/checkimage sets
// CRONKIT_IMAGE_TARBALL, CRONKIT_IMAGE_VERSION and SOURCE_DATE_EPOCH): its config,
// its files, and, as root, the binary run from the extracted layer with chroot, where
// there is nothing but the binary: no zoneinfo, no CA bundle, no libc.
func TestImageTarball(t *testing.T) {
	path := os.Getenv("CRONKIT_IMAGE_TARBALL")
	if path == "" {
		t.Skip("CRONKIT_IMAGE_TARBALL unset: run scripts/checkimage (make image-check)")
	}
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Time{}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		var sec int64
		if err := json.Unmarshal([]byte(s), &sec); err != nil {
			t.Fatal(err)
		}
		created = time.Unix(sec, 0).UTC()
	}
	checkConfig(t, img, os.Getenv("CRONKIT_IMAGE_VERSION"), created)
	cf, _ := img.ConfigFile()
	userspec := cf.Config.User

	root := t.TempDir()
	names := extract(t, img, root)
	if want := []string{"tmp/", "usr/", "usr/bin/", "usr/bin/cronkit"}; !slices.Equal(names, want) {
		t.Errorf("layer holds %q, want %q", names, want)
	}
	bin := filepath.Join(root, "usr/bin/cronkit")
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var fallback bool
	for _, d := range bi.Deps {
		fallback = fallback || d.Path == "golang.org/x/crypto/x509roots/fallback"
	}
	if !fallback {
		t.Error("the binary does not embed golang.org/x/crypto/x509roots/fallback: no CA roots in the image")
	}
	for _, p := range []string{"usr/share/zoneinfo", "etc/ssl", "lib"} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			t.Errorf("%s exists in the image: the checks below would not show the binary stands alone", p)
		}
	}

	if os.Geteuid() != 0 {
		t.Skip("not root: chroot needs root; config and layer checked, the binary not run")
	}
	chroot := func(env []string, args ...string) (string, error) {
		cmd := exec.Command("chroot", append([]string{"--userspec=" + userspec, root, "/usr/bin/cronkit"}, args...)...)
		// Only what is given: not this host's SSL_CERT_FILE, SSL_CERT_DIR or CRONKIT_*.
		cmd.Env = append([]string{"PATH=/usr/bin"}, env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	out, err := chroot(nil, "version", "--output", "json")
	var v map[string]string
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || v["version"] != os.Getenv("CRONKIT_IMAGE_VERSION") || v["commit"] == "" {
		t.Errorf("chroot cronkit version: %v\n%s", err, out)
	}

	// An IANA zone with no /usr/share/zoneinfo: time/tzdata in the binary.
	tab := "CRON_TZ=Pacific/Kiritimati\n5 9 * * * cronkit /usr/bin/cronkit billing --timeout 50m\n"
	if err := os.WriteFile(filepath.Join(root, "tmp/kiritimati.cron"), []byte(tab), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = chroot(nil, "crontab", "check", "--file", "/tmp/kiritimati.cron", "--now", "2026-11-30T00:00:00Z", "--next", "1")
	if err != nil || !strings.Contains(out, "next:  2026-12-01T09:05:00+14:00") {
		t.Errorf("chroot cronkit crontab check (CRON_TZ=Pacific/Kiritimati): %v\n%s", err, out)
	}

	// TLS. No local server can hold a certificate from a public CA, so the check is
	// the two halves of how the image trusts CAs: certificates are verified (a
	// private CA is refused with only the embedded roots), and a CA given the
	// standard Go way, SSL_CERT_FILE, is trusted and the handshake completes. The
	// request is run's ping on a failed run: noop cannot reach its database
	// (127.0.0.1:1) and reports the failure to --ping-url.
	var got atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got.Add(1) }))
	defer srv.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(root, "tmp/test-ca.pem"), ca, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"noop", "--db-dsn", "u:p@tcp(127.0.0.1:1)/x?timeout=2s", "--ping-url", srv.URL + "/ping", "--log-format", "json"}
	out, _ = chroot(nil, args...)
	if n := got.Load(); n != 0 {
		t.Errorf("the test server's private CA was trusted with only the embedded roots (%d requests)\n%s", n, out)
	}
	if !strings.Contains(out, "certificate") {
		t.Errorf("without SSL_CERT_FILE: want a certificate error in the log\n%s", out)
	}
	out, _ = chroot([]string{"SSL_CERT_FILE=/tmp/test-ca.pem"}, args...)
	if got.Load() == 0 {
		t.Errorf("with SSL_CERT_FILE the ping did not reach the test server\n%s", out)
	}
	t.Logf("with SSL_CERT_FILE: %d request(s) over TLS to %s", got.Load(), srv.URL)
}
