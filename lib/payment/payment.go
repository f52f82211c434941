// Package payment is cronkit's gateway to the payment provider, Stripe, through
// stripe-go: it charges invoices off-session with caller-chosen idempotency keys,
// classifies declines into "retry later" and "do not retry", and streams the
// provider's PaymentIntents for reconciliation.
//
// A card decline is an answer, not an error: Charge returns it as a ChargeResult.
// An error from Charge means the outcome is unknown or the request was refused; for
// ErrTemporary the caller retries later with the same idempotency key, which Stripe
// (and fakestripe) answer with the original result instead of charging twice.
package payment

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/stripe/stripe-go/v82"
)

// Sentinel errors, for the decisions callers make (errors.Is).
var (
	// ErrTemporary means the request may not have reached Stripe or its answer was
	// lost (network error, timeout, 5xx, 429, a concurrent request with the same key):
	// the charge may or may not have happened. Retry later with the SAME key.
	ErrTemporary = errors.New("payment provider temporarily unavailable")
	// ErrIdempotencyConflict means the idempotency key was already used with other
	// parameters: a bug in how keys are derived, never retried with a fresh key.
	ErrIdempotencyConflict = errors.New("idempotency key reused with different parameters")
	// ErrIdempotencyKeyRequired refuses a charge without an idempotency key: without
	// one a retry could charge twice.
	ErrIdempotencyKeyRequired = errors.New("idempotency key required")
	// ErrAuthentication means Stripe refused the API key (401/403): a configuration
	// problem that stops the run.
	ErrAuthentication = errors.New("payment provider refused the API key")
	// ErrNotFound means the customer or object does not exist at the provider.
	ErrNotFound = errors.New("not found at payment provider")
	// ErrInvalidRequest means Stripe rejected the request's parameters; retrying the
	// same request cannot succeed.
	ErrInvalidRequest = errors.New("payment provider rejected the request")
)

// Config says which Stripe to talk to and how.
type Config struct {
	// APIKey is the secret key (sk_...). It never appears in errors or logs.
	APIKey string
	// BaseURL is the API base, e.g. fakestripe's or stripe-mock's URL; empty means
	// Stripe's own (https://api.stripe.com).
	BaseURL string
	// HTTPClient carries the per-request timeout; nil means stripe-go's default
	// (80 s timeout).
	HTTPClient *http.Client
	// MaxNetworkRetries is how many times stripe-go itself retries a request that
	// failed for network reasons, 409 or 5xx, with the same idempotency key; 0 leaves
	// retrying to the caller's next run.
	MaxNetworkRetries int64
}

// Client calls Stripe. It holds no package-level state: several clients with
// different keys and URLs can live in one process.
type Client struct {
	key    string
	stripe *stripe.Client
}

// New builds a Client. stripe-go's own logging is switched off (its lines would
// carry none of the run's context); this package logs through zerolog.Ctx instead.
func New(cfg Config) *Client {
	bc := &stripe.BackendConfig{
		HTTPClient:        cfg.HTTPClient,
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
		MaxNetworkRetries: stripe.Int64(max(cfg.MaxNetworkRetries, 0)),
	}
	if cfg.BaseURL != "" {
		bc.URL = stripe.String(strings.TrimRight(cfg.BaseURL, "/"))
	}
	return &Client{
		key:    cfg.APIKey,
		stripe: stripe.NewClient(cfg.APIKey, stripe.WithBackends(stripe.NewBackendsWithConfig(bc))),
	}
}

// Error is a request Stripe refused or that did not complete; it is never a card
// decline. errors.Is matches it against the sentinel for its kind (ErrTemporary,
// ErrIdempotencyConflict, ...) and against its network cause, if any.
type Error struct {
	// Op is what was being done, e.g. "create payment intent".
	Op string
	// StatusCode is the HTTP status, 0 when no answer arrived.
	StatusCode int
	// Type, Code and Param are Stripe's error fields (invalid_request_error,
	// amount_too_small, amount...).
	Type, Code, Param string
	// Message is Stripe's message (or the network error), with the API key removed.
	Message string
	// RequestID is Stripe's Request-Id, for support tickets.
	RequestID string

	kind  error
	cause error
}

// Error reads "op: kind (stripe status type code param=... request=...): message",
// never with the API key in it.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	b.WriteString(": ")
	b.WriteString(e.kind.Error())
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, " (stripe %d", e.StatusCode)
		for _, s := range []string{e.Type, e.Code} {
			if s != "" {
				b.WriteString(" ")
				b.WriteString(s)
			}
		}
		if e.Param != "" {
			b.WriteString(" param=")
			b.WriteString(e.Param)
		}
		if e.RequestID != "" {
			b.WriteString(" request=")
			b.WriteString(e.RequestID)
		}
		b.WriteString(")")
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

// Unwrap exposes the sentinel and the network cause to errors.Is / errors.As. The
// stripe-go error itself is not exposed: its text may carry request details.
func (e *Error) Unwrap() []error {
	if e.cause != nil {
		return []error{e.kind, e.cause}
	}
	return []error{e.kind}
}

// wrapError turns what stripe-go returned into an *Error, redacting the API key.
func (c *Client) wrapError(op string, err error) error {
	var se *stripe.Error
	if errors.As(err, &se) {
		return &Error{
			Op:         op,
			StatusCode: se.HTTPStatusCode,
			Type:       string(se.Type),
			Code:       string(se.Code),
			Param:      se.Param,
			Message:    c.redact(se.Msg),
			RequestID:  se.RequestID,
			kind:       errorKind(se.HTTPStatusCode, string(se.Type), string(se.Code)),
		}
	}
	// No Stripe answer: connection refused or reset, timeout, cancelled context, or a
	// body that was not Stripe's JSON (a proxy's 502 page). The outcome is unknown.
	// The cause stays reachable (errors.Is(err, context.DeadlineExceeded)) unless its
	// text carries the key.
	var cause error
	if c.key == "" || !strings.Contains(err.Error(), c.key) {
		cause = err
	}
	return &Error{Op: op, Message: c.redact(err.Error()), kind: ErrTemporary, cause: cause}
}

// errorKind maps a Stripe error answer to the caller's decision.
func errorKind(status int, typ, code string) error {
	switch {
	case status == http.StatusConflict, status == http.StatusTooManyRequests, status >= 500:
		return ErrTemporary
	case typ == string(stripe.ErrorTypeIdempotency):
		return ErrIdempotencyConflict
	case status == http.StatusUnauthorized, status == http.StatusForbidden:
		return ErrAuthentication
	case status == http.StatusNotFound, code == "resource_missing":
		return ErrNotFound
	case status == 0:
		return ErrTemporary
	}
	return ErrInvalidRequest
}

// redact removes the API key from text that came back from the wire: some servers
// (stripe-mock among them) echo the Authorization header in their messages.
func (c *Client) redact(s string) string {
	if c.key == "" {
		return s
	}
	return strings.ReplaceAll(s, c.key, "[redacted]")
}
