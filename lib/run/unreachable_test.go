package run_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/payment"
	"github.com/cronkit/cronkit/lib/run"
)

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// resetServer accepts connections, reads a little, and resets them (SO_LINGER 0)
// before answering anything.
func resetServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 512)
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, _ = c.Read(buf)
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	return l.Addr().String()
}

// closeServer reads the request and closes the connection without a word (EOF).
func closeServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 4096)
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, _ = c.Read(buf)
			c.Close()
		}
	}()
	return l.Addr().String()
}

func stripeAnswer(t *testing.T, status int, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// The classifier on real errors from the real clients: what never reached the
// dependency (or got no answer at all) is unreachable; every answer is not.
func TestIsUnreachable(t *testing.T) {
	ctx := context.Background()
	get := func(url string, timeout time.Duration) error {
		c := &http.Client{Timeout: timeout}
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	stripeErr := func(base string) error {
		c := payment.New(payment.Config{APIKey: "sk_test_classifier", BaseURL: base, HTTPClient: &http.Client{Timeout: 5 * time.Second}})
		_, err := c.GetCustomer(ctx, "cus_1")
		if err == nil {
			t.Fatalf("stripe at %s: no error", base)
		}
		return err
	}
	cloudstackErr := func(base string) error {
		c, err := orchestrator.New(orchestrator.Config{APIURL: base + "/client/api", APIKey: "k", SecretKey: "s", Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.VMMetrics(ctx, "acct")
		if err == nil {
			t.Fatalf("cloudstack at %s: no error", base)
		}
		return err
	}
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(3 * time.Second):
		}
	}))
	t.Cleanup(hung.Close)
	cardError := `{"error":{"type":"card_error","code":"card_declined","decline_code":"generic_decline","message":"Your card was declined."}}`
	csError := `{"listvirtualmachinesmetricsresponse":{"errorcode":431,"cserrorcode":4350,"errortext":"Unable to find account"}}`

	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"http: dial to a closed port", get("http://"+closedAddr(t)+"/", 5*time.Second), true},
		{"http: reset before any answer", get("http://"+resetServer(t)+"/", 5*time.Second), true},
		{"http: closed before any answer", get("http://"+closeServer(t)+"/", 5*time.Second), true},
		{"http: no such host", get("http://cronkit-no-such-host.invalid/", 5*time.Second), true},
		{"raw dial refused", func() error { _, err := net.Dial("tcp", closedAddr(t)); return err }(), true},
		{"stripe: dial refused", stripeErr("http://" + closedAddr(t)), true},
		{"stripe: reset", stripeErr("http://" + resetServer(t)), true},
		{"cloudstack: dial refused", cloudstackErr("http://" + closedAddr(t)), true},
		{"cloudstack: closed before any answer", cloudstackErr("http://" + closeServer(t)), true},
		{"stripe: HTTP 500", stripeErr(stripeAnswer(t, 500, `{"error":{"type":"api_error","message":"boom"}}`)), false},
		{"stripe: card error 402", stripeErr(stripeAnswer(t, 402, cardError)), false},
		{"stripe: 404", stripeErr(stripeAnswer(t, 404, `{"error":{"type":"invalid_request_error","code":"resource_missing"}}`)), false},
		{"cloudstack: errorcode", cloudstackErr(stripeAnswer(t, 431, csError)), false},
		{"http: slow answer (client timeout awaiting headers)", get(hung.URL, 200*time.Millisecond), false},
		{"cancelled", fmt.Errorf("charge: %w", context.Canceled), false},
		{"plain error", errors.New("something else"), false},
		{"nil", nil, false},
	} {
		if got := run.IsUnreachable(tc.err); got != tc.want {
			t.Errorf("%s: IsUnreachable(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// A job that stopped calling an unreachable dependency exits 1, names it, and says
// how much it left; the cause stays reachable.
func TestUnreachableError(t *testing.T) {
	cause := fmt.Errorf("dial tcp 127.0.0.1:9: %w", errors.New("connection refused"))
	err := fmt.Errorf("charge: %w", run.Unreachable("stripe", cause, 3))
	if got := run.ExitCode(err); got != run.ExitFailed {
		t.Errorf("ExitCode = %d, want %d", got, run.ExitFailed)
	}
	if !errors.Is(err, run.ErrUnreachable) || !errors.Is(err, cause) {
		t.Errorf("errors.Is: %v", err)
	}
	if got := run.UnreachableDependency(err); got != "stripe" {
		t.Errorf("dependency %q", got)
	}
	if msg := err.Error(); !strings.Contains(msg, "stripe unreachable: ") || !strings.Contains(msg, "3 item(s) left for the next run") {
		t.Errorf("message %q", msg)
	}
	// Items that also had problems do not turn a stopped run into a partial one.
	st, err := run.Outcome(context.Background(), run.NewReport("j"), errors.Join(err, fmt.Errorf("%w", run.ErrPartial)))
	if st != run.StatusFailed || run.ExitCode(err) != run.ExitFailed {
		t.Errorf("Outcome: %s, exit %d", st, run.ExitCode(err))
	}
	if got := run.Unreachable("smtp", cause, -1).Error(); !strings.Contains(got, "what is left waits for the next run") {
		t.Errorf("unknown count: %q", got)
	}
}
