// Package fakecloudstack is a stateful stand-in for the Apache CloudStack API, for
// tests and `cronkit demo`: it verifies signed requests exactly as CloudStack does, pages
// lists, runs deploy/stop/start/destroy/disable as async jobs polled with
// queryAsyncJobResult, and answers in the JSON shapes CloudStack's simulator recorded
// (lib/orchestrator/testdata/cloudstack). It covers only the commands cronkit uses,
// and deployVirtualMachine so that a person in the sandbox (make sandbox) can deploy
// a VM and watch reconcile judge it.
//
// Fault injection (FailNext, FailAsyncNext, SetLatency) lets tests drive the error and
// timeout paths, and counters (Counters, Calls) let them assert how many actions a
// client really performed.
package fakecloudstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Identifiers the fake uses for things it does not model: the ROOT domain (where
// accounts land when they name no domain) and the admin account and user that every
// API key acts as (they appear as accountid/userid in async jobs).
const (
	RootDomainID   = "0f1c5e1a-0000-4000-8000-000000000001"
	RootDomainName = "ROOT"
	AdminAccountID = "0f1c5e1a-0000-4000-8000-0000000000ad"
	AdminUserID    = "0f1c5e1a-0000-4000-8000-0000000000a5"
)

// MaxPageSize is CloudStack's default.page.size: a list without pagesize returns at
// most this many items, and a larger pagesize is refused (errorcode 431), as the real
// server does. Clients that forget to page see only the first 500.
const MaxPageSize = 500

// Account is an account as the fake stores it (and as fixtures spell it).
type Account struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	DomainID string `json:"domainid,omitempty"` // empty means RootDomainID
	Domain   string `json:"domain,omitempty"`   // domain name; empty means ROOT
	// State is "enabled" (default), "disabled" or "locked".
	State string `json:"state,omitempty"`
	// AccountType is CloudStack's: 0 user (default), 1 root admin, 2 domain admin.
	AccountType int `json:"accounttype,omitempty"`
}

// VM is a virtual machine as the fake stores it (and as fixtures spell it).
type VM struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	DisplayName string `json:"displayname,omitempty"`
	// AccountID must name an account added before the VM; the account's name and
	// domain are what listVirtualMachines reports.
	AccountID string `json:"accountid"`
	// State is CloudStack's: Running (default), Stopped, Starting, Stopping,
	// Destroyed, Expunging, Error.
	State string `json:"state,omitempty"`
	// Created defaults to the server's clock when the VM is added.
	Created             time.Time `json:"created"`
	ServiceOfferingID   string    `json:"serviceofferingid,omitempty"`
	ServiceOfferingName string    `json:"serviceofferingname,omitempty"`
	CPUNumber           int       `json:"cpunumber,omitempty"`
	CPUSpeed            int       `json:"cpuspeed,omitempty"` // MHz
	Memory              int       `json:"memory,omitempty"`   // MiB
	// CPUUsed is the CPU utilisation in percent that listVirtualMachinesMetrics
	// reports as "cpuused": "95.3%".
	CPUUsed float64 `json:"cpuused,omitempty"`
	ZoneID  string  `json:"zoneid,omitempty"`
	// TemplateID is the template a VM was deployed from (deployVirtualMachine).
	TemplateID string `json:"templateid,omitempty"`
	ZoneName   string `json:"zonename,omitempty"`
}

// Counters count what the fake actually did, so tests can tell an idempotent no-op
// from a repeated action. Actions are counted when their async job succeeds.
type Counters struct {
	AsyncJobs    int // async jobs created (any command)
	Stops        int
	Starts       int
	Destroys     int // includes expunging destroys
	Expunges     int
	Disables     int // disableAccount, lock or not
	Enables      int
	Deploys      int // deployVirtualMachine jobs that succeeded
	AuthFailures int // requests refused with 401
}

// Server is the fake CloudStack. The zero value is not usable; call New. All methods
// are safe for concurrent use.
type Server struct {
	// Now is the fake's clock: it decides whether a signatureversion=3 request has
	// expired, stamps jobs and defaults VM creation times. nil means time.Now. Set it
	// before serving requests.
	Now func() time.Time

	mu        sync.Mutex
	secrets   map[string]string // apikey -> secretkey
	accounts  map[string]*Account
	acctOrder []string // insertion order = CloudStack's internal id order
	vms       map[string]*VM
	vmOrder   []string
	jobs      map[string]*job
	pending   []*job
	seq       int
	counters  Counters
	calls     map[string]int
	failNext  map[string]*injectedFailure
	failAsync map[string]int
	latency   map[string]time.Duration

	pendingPolls int
	asyncDelay   time.Duration

	// at is the instant of the request being handled: state changes are stamped
	// with it, for the usage server.
	at     time.Time
	usage  usageServer
	events []*fakeEvent
}

type injectedFailure struct {
	remaining int
	code      int
}

// New returns an empty fake: no credentials, accounts or VMs, async jobs completing on
// their first poll.
func New() *Server {
	return &Server{
		secrets:   map[string]string{},
		accounts:  map[string]*Account{},
		vms:       map[string]*VM{},
		jobs:      map[string]*job{},
		calls:     map[string]int{},
		failNext:  map[string]*injectedFailure{},
		failAsync: map[string]int{},
		latency:   map[string]time.Duration{},
		usage:     newUsageServer(),
	}
}

func (s *Server) now() time.Time {
	clock := s.Now
	if clock == nil {
		clock = time.Now
	}
	return clock()
}

// newID returns a fresh UUID-shaped id (deterministic, so test output is stable).
// Callers hold s.mu.
func (s *Server) newID() string {
	s.seq++
	return fmt.Sprintf("0f1c5e1a-%04x-4000-8000-%012x", s.seq>>48&0xffff, s.seq&0xffffffffffff)
}

// AddCredential registers an API key and its secret; requests signed with them are
// accepted.
func (s *Server) AddCredential(apiKey, secretKey string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secrets[apiKey] = secretKey
}

// ErrNotFound is returned by the fake's setters and getters for an unknown id.
var ErrNotFound = errors.New("fakecloudstack: not found")

// AddAccount adds an account and returns it with defaults filled in (a generated ID
// when empty, ROOT domain, state enabled).
func (s *Server) AddAccount(a Account) (Account, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.Name == "" {
		return Account{}, errors.New("fakecloudstack: add account: name is required")
	}
	if a.ID == "" {
		a.ID = s.newID()
	}
	if _, dup := s.accounts[a.ID]; dup {
		return Account{}, fmt.Errorf("fakecloudstack: add account %s: duplicate id", a.ID)
	}
	if a.DomainID == "" {
		a.DomainID = RootDomainID
	}
	if a.Domain == "" {
		a.Domain = RootDomainName
	}
	switch a.State {
	case "":
		a.State = "enabled"
	case "enabled", "disabled", "locked":
	default:
		return Account{}, fmt.Errorf("fakecloudstack: add account %s: unknown state %q", a.ID, a.State)
	}
	for _, other := range s.accounts {
		if strings.EqualFold(other.Name, a.Name) && other.DomainID == a.DomainID {
			return Account{}, fmt.Errorf("fakecloudstack: add account %s: name %q already used in domain %s", a.ID, a.Name, a.DomainID)
		}
	}
	stored := a
	s.accounts[a.ID] = &stored
	s.acctOrder = append(s.acctOrder, a.ID)
	return a, nil
}

// AddVM adds a VM owned by an existing account and returns it with defaults filled in
// (a generated ID when empty, state Running, Created = now, a small offering).
func (s *Server) AddVM(v VM) (VM, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.accounts[v.AccountID]; !ok {
		return VM{}, fmt.Errorf("fakecloudstack: add vm %q: account %q: %w", v.ID, v.AccountID, ErrNotFound)
	}
	if v.ID == "" {
		v.ID = s.newID()
	}
	if _, dup := s.vms[v.ID]; dup {
		return VM{}, fmt.Errorf("fakecloudstack: add vm %s: duplicate id", v.ID)
	}
	fillVM(&v, now)
	stored := v
	s.vms[v.ID] = &stored
	s.vmOrder = append(s.vmOrder, v.ID)
	s.trackVM(&stored)
	s.logEvent("VM.CREATE", "Completed", "INFO", v.Created, resourceVM, v.ID, v.Name, v.AccountID,
		"Successfully completed deploying Vm. Vm Id: "+v.ID)
	return v, nil
}

// fillVM gives a VM the defaults AddVM and deployVirtualMachine share.
func fillVM(v *VM, now time.Time) {
	if v.Name == "" {
		v.Name = "VM-" + v.ID
	}
	if v.DisplayName == "" {
		v.DisplayName = v.Name
	}
	if v.State == "" {
		v.State = "Running"
	}
	if v.Created.IsZero() {
		v.Created = now
	}
	v.Created = v.Created.UTC().Truncate(time.Second)
	if v.ServiceOfferingName == "" {
		v.ServiceOfferingName = "Small Instance"
	}
	if v.ServiceOfferingID == "" {
		v.ServiceOfferingID = "0f1c5e1a-0000-4000-8000-00000000050f"
	}
	if v.CPUNumber == 0 {
		v.CPUNumber = 1
	}
	if v.CPUSpeed == 0 {
		v.CPUSpeed = 1000
	}
	if v.Memory == 0 {
		v.Memory = 1024
	}
	if v.ZoneID == "" {
		v.ZoneID = "0f1c5e1a-0000-4000-8000-0000000020fe"
	}
	if v.ZoneName == "" {
		v.ZoneName = "zone1"
	}
}

// SetCPU sets the CPU utilisation (percent) that metrics report for a VM, so tests can
// stage a miner at 99 % next to an idle VM.
func (s *Server) SetCPU(vmID string, pct float64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.vms[vmID]
	if !ok {
		return fmt.Errorf("fakecloudstack: set cpu of vm %s: %w", vmID, ErrNotFound)
	}
	v.CPUUsed = pct
	return nil
}

// VM returns a copy of a VM's current state, for assertions. An expunged VM is gone.
func (s *Server) VM(id string) (VM, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.vms[id]
	if !ok {
		return VM{}, false
	}
	return *v, true
}

// Account returns a copy of an account's current state, for assertions.
func (s *Server) Account(id string) (Account, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.accounts[id]
	if !ok {
		return Account{}, false
	}
	return *a, true
}

// Counters returns a snapshot of the action counters.
func (s *Server) Counters() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counters
}

// Calls returns how many authenticated requests for command (case-insensitive) the
// fake has processed, including those failed by FailNext.
func (s *Server) Calls(command string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[strings.ToLower(command)]
}

// FailNext makes the next n requests for command (case-insensitive) fail before doing
// anything, with CloudStack's error shape and HTTP status errorcode (e.g. 530 internal
// error, 431 parameter error).
func (s *Server) FailNext(command string, n int, errorcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext[strings.ToLower(command)] = &injectedFailure{remaining: n, code: errorcode}
}

// FailAsyncNext makes the async jobs of the next n requests for command fail: the
// command is accepted and returns a job id, and the job ends with jobstatus 2
// (errorcode 530), leaving the resource as it was.
func (s *Server) FailAsyncNext(command string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failAsync[strings.ToLower(command)] = n
}

// SetLatency delays every request for command by d before it is processed; a request
// whose client gives up meanwhile is dropped without effect. Zero removes the delay.
func (s *Server) SetLatency(command string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		delete(s.latency, strings.ToLower(command))
		return
	}
	s.latency[strings.ToLower(command)] = d
}

// SetAsyncCompletion sets when async jobs finish: after pendingPolls
// queryAsyncJobResult calls have answered "pending" (jobstatus 0), and no sooner than
// delay (by the server's clock) after the job was created. With pendingPolls 0 a job
// completes at the first request after its delay, of any command. The default (0, 0)
// completes a job on its first poll.
func (s *Server) SetAsyncCompletion(pendingPolls int, delay time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pendingPolls = pendingPolls
	s.asyncDelay = delay
}

// Handler returns the API as an http.Handler serving /client/api (GET and POST), for
// httptest.NewServer.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/client/api", s.serveAPI)
	return mux
}

// Start serves the API on addr, which must be a loopback address ("" or a bare port
// means 127.0.0.1 and a free port). It returns the API URL to give clients
// (http://127.0.0.1:PORT/client/api) and a stop function.
func (s *Server) Start(addr string) (string, func(), error) {
	host, port := "127.0.0.1", "0"
	if addr != "" {
		h, p, err := net.SplitHostPort(addr)
		if err != nil {
			return "", nil, fmt.Errorf("fakecloudstack: start on %q: %w", addr, err)
		}
		if h != "" && h != "localhost" {
			ip := net.ParseIP(h)
			if ip == nil || !ip.IsLoopback() {
				return "", nil, fmt.Errorf("fakecloudstack: start on %q: only loopback addresses are allowed", addr)
			}
			host = h
		}
		if p != "" {
			port = p
		}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", net.JoinHostPort(host, port))
	if err != nil {
		return "", nil, fmt.Errorf("fakecloudstack: listen on %s: %w", net.JoinHostPort(host, port), err)
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // returns http.ErrServerClosed after stop
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = srv.Close()
			<-done
		})
	}
	return "http://" + ln.Addr().String() + "/client/api", stop, nil
}
