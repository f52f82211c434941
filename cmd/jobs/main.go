// Command jobs runs cronkit's back-office jobs: billing, abuse enforcement and their
// tools. main only wires the process to run; everything else is testable through run.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	// The recipients' zones (drip's send windows) must not depend on the host's
	// zoneinfo: a distroless image has none.
	_ "time/tzdata"

	// CA roots for TLS to Stripe, CloudStack and SMTP where the host has none (the
	// image's empty base): used only when no system roots are found, so a Debian
	// host's /etc/ssl and SSL_CERT_FILE still decide there.
	_ "golang.org/x/crypto/x509roots/fallback"

	"github.com/cronkit/cronkit/lib/run"
)

// The build's identity, set at link time by the Makefile from git:
// -ldflags "-X main.version=... -X main.commit=... -X main.commitTime=...".
var (
	version    = "dev"
	commit     = "unknown"
	commitTime = ""
)

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		cancel(fmt.Errorf("%w: %s", run.ErrInterrupted, s))
		// A second signal means "now": work in flight is abandoned, the database
		// rolls back whatever transaction was open.
		<-sigs
		os.Exit(run.ExitInterrupted)
	}()
	os.Exit(runMain(ctx, linkArgs(os.Args), os.Getenv, os.Stdout, os.Stderr))
}
