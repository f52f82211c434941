// Package stripemock runs Stripe's own stripe-mock for integration tests: it is
// stateless, but it validates request shapes against Stripe's OpenAPI spec, which our
// fake Stripe cannot prove about itself.
package stripemock

import (
	"go/build"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Start starts Stripe's stripe-mock (found through CRONKIT_STRIPE_MOCK, PATH or
// $GOPATH/bin) on a free loopback port and returns its base URL. Without it the test
// is skipped, or fails under CRONKIT_INTEGRATION=1.
func Start(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("CRONKIT_STRIPE_MOCK")
	if bin == "" {
		if p, err := exec.LookPath("stripe-mock"); err == nil {
			bin = p
		} else if p := filepath.Join(build.Default.GOPATH, "bin", "stripe-mock"); fileExists(p) {
			bin = p
		}
	}
	if bin == "" {
		msg := "stripe-mock not found (go install github.com/stripe/stripe-mock@v0.203.0, or set CRONKIT_STRIPE_MOCK)"
		if os.Getenv("CRONKIT_INTEGRATION") == "1" {
			t.Fatal("CRONKIT_INTEGRATION=1 but " + msg)
		}
		t.Skip(msg)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // stripe-mock binds it next; a race with another process is unlikely

	var out strings.Builder
	// Without -https-addr stripe-mock also listens for HTTPS on :12112, on every
	// interface: two test packages then collide, and nothing may bind beyond loopback.
	cmd := exec.Command(bin, "-http-addr", addr, "-https-addr", "127.0.0.1:")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			_ = c.Close()
			return "http://" + addr
		}
		select {
		case <-exited:
			t.Fatalf("stripe-mock exited before listening:\n%s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("stripe-mock did not listen on %s:\n%s", addr, out.String())
		}
	}
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
