// Package orchestrator is cronkit's small window onto Apache CloudStack, through
// apache/cloudstack-go: list accounts and VMs (paged, streamed), read CPU metrics, and
// stop/start/destroy VMs and disable/enable accounts idempotently, which is all the
// abuse and reconcile jobs need.
//
// Every mutating method first reads the current state and does nothing when the target
// state already holds, so a job that crashed half-way can simply run again. Async
// commands are polled with queryAsyncJobResult until they finish, bounded by
// Config.AsyncTimeout and the caller's context.
//
// cloudstack-go takes no context, so each call builds a short-lived SDK client whose
// HTTP transport carries the call's context, the rate limiter, and captures
// CloudStack's error body (the SDK flattens it into a string). The package's own fake
// server lives in orchestrator/fakecloudstack.
package orchestrator

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/time/rate"
)

// CloudStack states the jobs compare against.
const (
	VMRunning   = "Running"
	VMStopped   = "Stopped"
	VMDestroyed = "Destroyed"
	VMExpunging = "Expunging"

	AccountEnabled  = "enabled"
	AccountDisabled = "disabled"
	AccountLocked   = "locked"
)

// Defaults for zero Config fields.
const (
	DefaultTimeout      = 60 * time.Second
	DefaultAsyncPoll    = time.Second
	DefaultAsyncTimeout = 5 * time.Minute
	DefaultPageSize     = 500 // CloudStack's default.page.size, the most it returns per page
)

// Sentinel errors for decisions.
var (
	// ErrNotFound means CloudStack has no such VM or account (an empty list, or its
	// 431 "entity does not exist" answer).
	ErrNotFound = errors.New("not found")
	// ErrAsyncTimeout means an async job was still pending after Config.AsyncTimeout:
	// its outcome is unknown and it may still complete; read the state again later.
	ErrAsyncTimeout = errors.New("async job still pending")
	// ErrReadOnly is returned by a mutating method of a Config.ReadOnly client when a
	// change would be needed, so a dry run learns what it would do without doing it.
	ErrReadOnly = errors.New("read-only client: change refused")
)

// Config is how to reach CloudStack. Its String method redacts the keys.
type Config struct {
	// APIURL is the API endpoint, e.g. https://cloud.example.com/client/api.
	APIURL    string
	APIKey    string
	SecretKey string
	// HTTPClient supplies the transport (TLS, proxy) and, when Timeout is zero, the
	// per-request timeout; nil means a clone of http.DefaultTransport.
	HTTPClient *http.Client
	// Timeout bounds each HTTP request; zero means HTTPClient.Timeout, or 60s.
	Timeout time.Duration
	// AsyncPoll is the pause between queryAsyncJobResult polls; zero means 1s.
	AsyncPoll time.Duration
	// AsyncTimeout bounds the wait for one async job; zero means 5m.
	AsyncTimeout time.Duration
	// RateLimit caps requests per second across all calls of the Client (polls
	// included); zero means unlimited. Burst is the limiter's bucket (minimum 1).
	RateLimit rate.Limit
	Burst     int
	// PageSize is the page size for lists; zero means 500. CloudStack refuses pages
	// larger than its default.page.size setting.
	PageSize int
	// ReadOnly makes every mutating method return ErrReadOnly instead of changing
	// anything (after the read that decides whether a change is needed): the dry-run
	// guarantee, enforced at the edge.
	ReadOnly bool
}

// String describes the config without its keys, so it can be logged.
func (c Config) String() string {
	key, secret := "", ""
	if c.APIKey != "" {
		key = "[redacted]"
	}
	if c.SecretKey != "" {
		secret = "[redacted]"
	}
	return fmt.Sprintf("cloudstack{url=%s apikey=%s secretkey=%s timeout=%s poll=%s async_timeout=%s rate=%v burst=%d page=%d read_only=%t}",
		c.APIURL, key, secret, c.Timeout, c.AsyncPoll, c.AsyncTimeout, c.RateLimit, c.Burst, c.PageSize, c.ReadOnly)
}

// GoString keeps %#v from printing the keys.
func (c Config) GoString() string { return c.String() }

// Account is a CloudStack account. DomainID is needed with Name to address the
// account's VMs (CloudStack filters VMs by account name within a domain).
type Account struct {
	ID       string
	Name     string
	DomainID string
	State    string // enabled, disabled or locked
}

// VM is a CloudStack virtual machine as the jobs see it.
type VM struct {
	ID   string
	Name string
	// Account is the owning account's name; AccountID its id, resolved through
	// listAccounts (listVirtualMachines reports only the name and domain).
	Account   string
	AccountID string
	DomainID  string
	// State is CloudStack's: Running, Stopped, Starting, Stopping, Destroyed,
	// Expunging, Migrating, Error...
	State             string
	Created           time.Time
	ServiceOffering   string // offering name
	ServiceOfferingID string
	// CPUUsedPercent is CloudStack's "cpuused" (e.g. "95.3%") as a number; filled by
	// VMMetrics, and by VMs when CloudStack includes it.
	CPUUsedPercent float64
}

// Client talks to one CloudStack API endpoint. It is safe for concurrent use.
type Client struct {
	cfg     Config
	base    http.RoundTripper
	jar     http.CookieJar
	timeout time.Duration
	limiter *rate.Limiter
}

// New checks cfg and returns a Client; it makes no request.
func New(cfg Config) (*Client, error) {
	if cfg.APIURL == "" || cfg.APIKey == "" || cfg.SecretKey == "" {
		return nil, errors.New("orchestrator: APIURL, APIKey and SecretKey are required")
	}
	u, err := url.Parse(cfg.APIURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("orchestrator: APIURL %q is not an http(s) URL", cfg.APIURL)
	}
	if cfg.AsyncPoll <= 0 {
		cfg.AsyncPoll = DefaultAsyncPoll
	}
	if cfg.AsyncTimeout <= 0 {
		cfg.AsyncTimeout = DefaultAsyncTimeout
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = DefaultPageSize
	}
	c := &Client{cfg: cfg, timeout: cfg.Timeout}
	if hc := cfg.HTTPClient; hc != nil {
		c.base, c.jar = hc.Transport, hc.Jar
		if c.timeout <= 0 {
			c.timeout = hc.Timeout
		}
	}
	if c.base == nil {
		c.base = http.DefaultTransport.(*http.Transport).Clone()
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	limit := cfg.RateLimit
	if limit <= 0 {
		limit = rate.Inf
	}
	burst := cfg.Burst
	if burst < 1 {
		burst = 1
	}
	c.limiter = rate.NewLimiter(limit, burst)
	return c, nil
}
