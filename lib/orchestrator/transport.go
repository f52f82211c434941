package orchestrator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/apache/cloudstack-go/v2/cloudstack"
)

// APIError is CloudStack refusing a command, or an async job ending in failure, with
// CloudStack's own code and text, so callers can tell a bad signature (401) from a bad
// parameter (431) or a server-side failure (530).
type APIError struct {
	Command     string // CloudStack command, e.g. stopVirtualMachine
	HTTPStatus  int    // 0 for a failed async job
	ErrorCode   int    // CloudStack errorcode
	CSErrorCode int    // CloudStack cserrorcode (exception class), when given
	ErrorText   string
	JobID       string // set when an async job failed
}

func (e *APIError) Error() string {
	if e.JobID != "" {
		return fmt.Sprintf("cloudstack %s job %s failed: error %d: %s", e.Command, e.JobID, e.ErrorCode, e.ErrorText)
	}
	return fmt.Sprintf("cloudstack %s: error %d: %s", e.Command, e.ErrorCode, e.ErrorText)
}

// Is makes errors.Is(err, ErrNotFound) true for CloudStack's ways of saying an id names
// nothing: 431 "... or entity does not exist ..." and "Unable to find ...".
func (e *APIError) Is(target error) bool {
	if target != ErrNotFound || e.ErrorCode != 431 {
		return false
	}
	t := strings.ToLower(e.ErrorText)
	return strings.Contains(t, "entity does not exist") || strings.Contains(t, "unable to find")
}

// callTransport is the HTTP transport of one SDK call: it binds requests to the call's
// context (cloudstack-go has none), waits on the shared rate limiter, and keeps the
// CloudStack error of the last non-200 answer, which the SDK reduces to a string.
type callTransport struct {
	ctx     context.Context
	c       *Client
	lastErr *APIError
}

func (t *callTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.lastErr = nil
	if err := t.c.limiter.Wait(t.ctx); err != nil {
		return nil, err
	}
	// Keep the http.Client's deadline (req's context) and add the call's
	// cancellation.
	ctx, cancel := context.WithCancel(req.Context())
	defer cancel()
	stop := context.AfterFunc(t.ctx, cancel)
	defer stop()
	resp, err := t.c.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		if cerr := t.ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, err
	}
	// Read the body here, while the contexts are live: the answers are small.
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close() // the body is fully read; nothing to report
	if err != nil {
		if cerr := t.ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if resp.StatusCode != http.StatusOK {
		t.lastErr = parseAPIError(resp.StatusCode, body)
	}
	return resp, nil
}

// parseAPIError reads CloudStack's error shape:
// {"<command>response":{"errorcode":431,"cserrorcode":4350,"errortext":"..."}}.
func parseAPIError(status int, body []byte) *APIError {
	e := &APIError{HTTPStatus: status, ErrorCode: status}
	var outer map[string]json.RawMessage
	if json.Unmarshal(body, &outer) == nil {
		for _, raw := range outer {
			var inner struct {
				ErrorCode   int    `json:"errorcode"`
				CSErrorCode int    `json:"cserrorcode"`
				ErrorText   string `json:"errortext"`
			}
			if json.Unmarshal(raw, &inner) == nil && (inner.ErrorCode != 0 || inner.ErrorText != "") {
				if inner.ErrorCode != 0 {
					e.ErrorCode = inner.ErrorCode
				}
				e.CSErrorCode, e.ErrorText = inner.CSErrorCode, inner.ErrorText
				return e
			}
		}
	}
	e.ErrorText = fmt.Sprintf("HTTP %d with no CloudStack error body", status)
	return e
}

// call runs fn with an SDK client bound to ctx and turns its error into one callers
// can inspect: the captured *APIError when CloudStack answered with an error, the
// context's error when ctx ended, and never a URL (the SDK's GET URLs carry the API
// key and signature, and *url.Error prints them).
func (c *Client) call(ctx context.Context, command string, fn func(cs *cloudstack.CloudStackClient) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := &callTransport{ctx: ctx, c: c}
	hc := &http.Client{Transport: t, Timeout: c.timeout, Jar: c.jar}
	cs := cloudstack.NewClient(c.cfg.APIURL, c.cfg.APIKey, c.cfg.SecretKey, true, cloudstack.WithHTTPClient(hc))
	err := fn(cs)
	if err == nil {
		return nil
	}
	if t.lastErr != nil {
		e := *t.lastErr
		e.Command = command
		// A server (or proxy) may quote the request back in its error text.
		e.ErrorText = c.scrub(e.ErrorText)
		return &e
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// The request error stays in the chain (run.IsUnreachable looks for it: an EOF
		// inside a request is a connection closed before any answer), its URL scrubbed.
		return &requestError{
			msg: fmt.Sprintf("cloudstack %s: %s request: %v", command, ue.Op, ue.Err),
			ue:  &url.Error{Op: ue.Op, URL: c.scrub(ue.URL), Err: ue.Err},
		}
	}
	if msg := err.Error(); c.scrub(msg) != msg {
		return fmt.Errorf("cloudstack %s: %s", command, c.scrub(msg))
	}
	return fmt.Errorf("cloudstack %s: %w", command, err)
}

// requestError is a request that got no answer (dial, reset, timeout). Its text
// never carries the URL; the scrubbed *url.Error underneath is for errors.As.
type requestError struct {
	msg string
	ue  *url.Error
}

func (e *requestError) Error() string { return e.msg }
func (e *requestError) Unwrap() error { return e.ue }

// signedParam matches the credentials of a signed request URL, in any case.
var signedParam = regexp.MustCompile(`(?i)((?:apikey|signature)=)[^&\s"']+`)

// scrub removes the API key, the secret and request signatures (a signature with a
// future expires is a usable credential) from text headed for errors and logs.
func (c *Client) scrub(s string) string {
	s = signedParam.ReplaceAllString(s, "${1}***")
	for _, secret := range []string{c.cfg.APIKey, c.cfg.SecretKey} {
		if secret == "" {
			continue
		}
		s = strings.ReplaceAll(s, secret, "***")
		if q := url.QueryEscape(secret); q != secret {
			s = strings.ReplaceAll(s, q, "***")
		}
	}
	return s
}
