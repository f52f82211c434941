package billing

import (
	"context"
	"fmt"
	"go/build"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
	"github.com/cronkit/cronkit/lib/payment"
)

// stripeMock starts Stripe's stripe-mock (CRONKIT_STRIPE_MOCK, PATH or $GOPATH/bin)
// on a free loopback port and returns its base URL; without it the test is skipped,
// or fails under CRONKIT_INTEGRATION=1. (lib/payment has the same helper in a test
// file, which other packages cannot import.)
func stripeMock(t *testing.T) string {
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
		mysqltest.Need(t, "stripe-mock (go install github.com/stripe/stripe-mock@v0.203.0, or set CRONKIT_STRIPE_MOCK)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	var out strings.Builder
	cmd := exec.Command(bin, "-http-addr", addr)
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
	_, err := os.Stat(p)
	return err == nil
}

// Stripe's own mock checks every request against Stripe's OpenAPI description: an
// unknown or malformed parameter is a 400, which the job would report as refused.
func TestChargeThroughStripeMock(t *testing.T) {
	url := stripeMock(t)
	db := newDB(t)
	account(t, db.DB, 1, "USD", "cus_123")
	opened := april.Add(20 * time.Minute)
	id := openInvoice(t, db.DB, 1, "USD", 4321, opened)
	client := payment.New(payment.Config{APIKey: "sk_test_123", BaseURL: url})
	var lookups int
	pay := &paymentsMock{
		// stripe-mock's customer fixture has no default card; give it one after a
		// real lookup, so that the PaymentIntent request is made and checked.
		GetCustomerFn: func(ctx context.Context, id string) (payment.Customer, error) {
			lookups++
			c, err := client.GetCustomer(ctx, id)
			if err != nil {
				return c, err
			}
			c.DefaultPaymentMethod = "pm_card_visa"
			return c, nil
		},
		ChargeFn: client.Charge,
	}
	rep, err := (&Job{DB: db.DB, Payments: pay, Now: at(opened)}).Charge(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 || lookups != 1 {
		t.Fatalf("stripe-mock refused our requests (%d lookups):\n%s", lookups, problems(rep))
	}
	// stripe-mock answers with its fixture PaymentIntent, status
	// requires_payment_method: a decline without a code, so a soft decline.
	p := payments(t, db.DB, id)
	if p != fmt.Sprintf("1 cronkit-invoice-%d-attempt-1 4321 soft_declined - 1\n", id) {
		t.Fatalf("payments: %q\n%+v", p, rep.Actions)
	}
	if got := invoiceStateOf(t, db.DB, id); got.collection != "retrying" || got.attempts != 1 {
		t.Fatalf("invoice: %+v", got)
	}
}
