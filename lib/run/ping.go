package run

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Pinger reports a run to a healthchecks.io-style endpoint: /start when the run
// begins, the bare URL on success, /<exit code> on failure, each with ?rid=<run id>
// so the service can pair start and end. A ping never fails the job: the endpoint
// being down is logged and forgotten.
type Pinger struct {
	URL    string
	Client *http.Client
	// Retries after the first attempt (default 2), spaced by Backoff (default 1s).
	Retries int
	Backoff time.Duration
}

// Start pings URL/start.
func (p *Pinger) Start(ctx context.Context, rid string) { p.ping(ctx, "/start", rid, nil) }

// Finish pings URL on exit code 0, URL/<code> otherwise, with body (a summary of the
// report, truncated to 10 kB) as the ping's log.
func (p *Pinger) Finish(ctx context.Context, rid string, code int, body []byte) {
	suffix := ""
	if code != 0 {
		suffix = fmt.Sprintf("/%d", code)
	}
	if len(body) > 10000 {
		body = body[:10000]
	}
	p.ping(ctx, suffix, rid, body)
}

func (p *Pinger) ping(ctx context.Context, suffix, rid string, body []byte) {
	if p == nil || p.URL == "" {
		return
	}
	log := zerolog.Ctx(ctx)
	u, err := url.Parse(strings.TrimRight(p.URL, "/") + suffix)
	if err != nil {
		log.Warn().Str("ping", suffix).Msg("ping URL is invalid")
		return
	}
	q := u.Query()
	q.Set("rid", rid)
	u.RawQuery = q.Encode()
	client := p.Client
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	retries, backoff := p.Retries, p.Backoff
	if retries == 0 {
		retries = 2
	}
	if backoff == 0 {
		backoff = time.Second
	}
	// Pings outlive the run's context: a cancelled run must still report its end.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Duration(retries+1)*(backoff+5*time.Second))
	defer cancel()
	var lastErr error
	for attempt := 0; attempt <= retries; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(backoff):
			case <-pctx.Done():
				return
			}
		}
		req, err := http.NewRequestWithContext(pctx, http.MethodPost, u.String(), bytes.NewReader(body))
		if err != nil {
			lastErr = err
			break
		}
		req.Header.Set("Content-Type", "text/plain; charset=utf-8")
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				if resp.StatusCode >= 400 {
					log.Warn().Int("status", resp.StatusCode).Str("ping", suffix).Msg("ping rejected")
				}
				return
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		lastErr = err
	}
	// The URL's path holds the check's secret UUID: log the host only.
	log.Warn().Str("ping", suffix).Str("host", u.Host).Str("error", redactURL(lastErr, u)).Msg("ping failed")
}

func redactURL(err error, u *url.URL) string {
	if err == nil {
		return ""
	}
	return strings.ReplaceAll(err.Error(), u.String(), u.Scheme+"://"+u.Host+"/…")
}
