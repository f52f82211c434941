package orchestrator_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/orchestrator/fakecloudstack"
)

const (
	testKey    = "test-api-key-0123456789"
	testSecret = "test-secret-key-abcdefghij"
)

type env struct {
	t      *testing.T
	fake   *fakecloudstack.Server
	apiURL string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	fake := fakecloudstack.New()
	fake.AddCredential(testKey, testSecret)
	srv := httptest.NewServer(fake.Handler())
	t.Cleanup(srv.Close)
	return &env{t: t, fake: fake, apiURL: srv.URL + "/client/api"}
}

// client returns a Client on the fake with fast polling; edit tweaks the config.
func (e *env) client(edit ...func(*orchestrator.Config)) *orchestrator.Client {
	e.t.Helper()
	cfg := orchestrator.Config{
		APIURL: e.apiURL, APIKey: testKey, SecretKey: testSecret,
		AsyncPoll: 2 * time.Millisecond, AsyncTimeout: 5 * time.Second, Timeout: 5 * time.Second,
	}
	for _, f := range edit {
		f(&cfg)
	}
	c, err := orchestrator.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) account(a fakecloudstack.Account) fakecloudstack.Account {
	e.t.Helper()
	got, err := e.fake.AddAccount(a)
	if err != nil {
		e.t.Fatal(err)
	}
	return got
}

func (e *env) vm(v fakecloudstack.VM) fakecloudstack.VM {
	e.t.Helper()
	got, err := e.fake.AddVM(v)
	if err != nil {
		e.t.Fatal(err)
	}
	return got
}

func (e *env) state(id string) string {
	e.t.Helper()
	v, ok := e.fake.VM(id)
	if !ok {
		return "<gone>"
	}
	return v.State
}

func asAPIError(t *testing.T, err error) *orchestrator.APIError {
	t.Helper()
	var ae *orchestrator.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T) is not an *APIError", err, err)
	}
	return ae
}

func TestNewValidates(t *testing.T) {
	for name, cfg := range map[string]orchestrator.Config{
		"no url":     {APIKey: "k", SecretKey: "s"},
		"no key":     {APIURL: "http://127.0.0.1/client/api", SecretKey: "s"},
		"no secret":  {APIURL: "http://127.0.0.1/client/api", APIKey: "k"},
		"not a url":  {APIURL: "127.0.0.1/client/api", APIKey: "k", SecretKey: "s"},
		"bad scheme": {APIURL: "ftp://127.0.0.1/client/api", APIKey: "k", SecretKey: "s"},
	} {
		if _, err := orchestrator.New(cfg); err == nil {
			t.Errorf("%s: New accepted %v", name, cfg)
		}
	}
}

func TestConfigStringRedactsKeys(t *testing.T) {
	cfg := orchestrator.Config{APIURL: "http://127.0.0.1/client/api", APIKey: testKey, SecretKey: testSecret}
	for _, s := range []string{cfg.String(), fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg)} {
		if strings.Contains(s, testKey) || strings.Contains(s, testSecret) {
			t.Errorf("config printed its keys: %s", s)
		}
	}
}

func TestSignedBySDKAccepted(t *testing.T) {
	e := newEnv(t)
	e.account(fakecloudstack.Account{ID: "a1", Name: "alice"})
	got, err := e.client().ListAccounts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != "a1" || got[0].Name != "alice" || got[0].State != "enabled" || got[0].DomainID != fakecloudstack.RootDomainID {
		t.Errorf("ListAccounts = %+v", got)
	}
	if e.fake.Counters().AuthFailures != 0 {
		t.Errorf("fake rejected a request the SDK signed")
	}
}

func TestRejectedSignatures(t *testing.T) {
	e := newEnv(t)
	e.account(fakecloudstack.Account{ID: "a1", Name: "alice"})
	ctx := context.Background()

	tests := map[string]*orchestrator.Client{
		"wrong secret":    e.client(func(c *orchestrator.Config) { c.SecretKey = "not-the-secret" }),
		"unknown api key": e.client(func(c *orchestrator.Config) { c.APIKey = "unknown-key" }),
	}
	for name, c := range tests {
		_, err := c.ListAccounts(ctx)
		if err == nil {
			t.Fatalf("%s: ListAccounts succeeded", name)
		}
		ae := asAPIError(t, err)
		if ae.ErrorCode != 401 || ae.HTTPStatus != 401 || ae.Command != "listAccounts" ||
			ae.ErrorText != "unable to verify user credentials and/or request signature" {
			t.Errorf("%s: %+v", name, ae)
		}
		if strings.Contains(err.Error(), testSecret) || strings.Contains(err.Error(), "signature=") {
			t.Errorf("%s: error leaks credentials: %v", name, err)
		}
	}

	// The SDK signs with expires = now+15m; a fake clock an hour ahead sees it expired.
	e.fake.Now = func() time.Time { return time.Now().Add(time.Hour) }
	_, err := e.client().ListAccounts(ctx)
	if ae := asAPIError(t, err); ae.ErrorCode != 401 {
		t.Errorf("expired: %+v", ae)
	}
	if got := e.fake.Counters().AuthFailures; got != 3 {
		t.Errorf("AuthFailures = %d, want 3", got)
	}
}

// recorder remembers the URLs of the requests it forwards.
type recorder struct {
	mu   sync.Mutex
	urls []string
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.urls = append(r.urls, req.URL.String())
	r.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

func TestTamperedSDKRequestRejected(t *testing.T) {
	e := newEnv(t)
	e.account(fakecloudstack.Account{ID: "a1", Name: "alice"})
	e.account(fakecloudstack.Account{ID: "a2", Name: "bob"})
	rec := &recorder{}
	c := e.client(func(c *orchestrator.Config) { c.HTTPClient = &http.Client{Transport: rec} })
	if _, err := c.ListAccounts(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(rec.urls) != 1 {
		t.Fatalf("recorded %d requests, want 1", len(rec.urls))
	}
	u, err := url.Parse(rec.urls[0])
	if err != nil {
		t.Fatal(err)
	}
	replay := func(q url.Values) int {
		t.Helper()
		u.RawQuery = q.Encode()
		resp, err := http.Get(u.String())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	q := u.Query()
	if q.Get("signatureversion") != "3" || q.Get("expires") == "" {
		t.Fatalf("SDK request lacks signatureversion=3/expires: %v", q.Encode())
	}
	if got := replay(q); got != 200 {
		t.Fatalf("replaying the SDK's own request: %d, want 200", got)
	}
	q.Set("pagesize", "1")
	if got := replay(q); got != 401 {
		t.Errorf("tampered pagesize: %d, want 401", got)
	}
}

func TestListAccountsPaged(t *testing.T) {
	e := newEnv(t)
	var want []string
	for i := range 7 {
		want = append(want, e.account(fakecloudstack.Account{ID: fmt.Sprintf("acct-%d", 7-i), Name: fmt.Sprintf("user%d", i)}).ID)
	}
	got, err := e.client(func(c *orchestrator.Config) { c.PageSize = 3 }).ListAccounts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs []string
	for _, a := range got {
		gotIDs = append(gotIDs, a.ID)
	}
	if strings.Join(gotIDs, ",") != strings.Join(want, ",") {
		t.Errorf("accounts %v, want %v", gotIDs, want)
	}
	if n := e.fake.Calls("listAccounts"); n != 3 {
		t.Errorf("listAccounts calls = %d, want 3 pages", n)
	}
}

func TestVMsPagesCompleteAndInOrder(t *testing.T) {
	e := newEnv(t)
	owners := []fakecloudstack.Account{
		e.account(fakecloudstack.Account{ID: "acct-1", Name: "one"}),
		e.account(fakecloudstack.Account{ID: "acct-2", Name: "two"}),
		e.account(fakecloudstack.Account{ID: "acct-3", Name: "three"}),
	}
	created := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var want, wantStopped []string
	for i := range 1234 {
		state := "Running"
		if i%7 == 0 {
			state = "Stopped"
		}
		v := e.vm(fakecloudstack.VM{
			ID:        fmt.Sprintf("vm-%05d", (i*7919)%100000), // ids deliberately not sorted
			AccountID: owners[i%3].ID, State: state, Created: created.Add(time.Duration(i) * time.Minute),
		})
		want = append(want, v.ID)
		if state == "Stopped" {
			wantStopped = append(wantStopped, v.ID)
		}
	}
	c := e.client(func(c *orchestrator.Config) { c.PageSize = 100 })
	ctx := context.Background()

	var got []string
	for v, err := range c.VMs(ctx, orchestrator.ListVMs{}) {
		if err != nil {
			t.Fatal(err)
		}
		i := len(got)
		if wantAcct := owners[i%3]; v.AccountID != wantAcct.ID || v.Account != wantAcct.Name || v.DomainID != fakecloudstack.RootDomainID {
			t.Fatalf("vm %d %s: account %q/%q domain %q, want %q/%q", i, v.ID, v.AccountID, v.Account, v.DomainID, wantAcct.ID, wantAcct.Name)
		}
		if !v.Created.Equal(created.Add(time.Duration(i) * time.Minute)) {
			t.Fatalf("vm %d created %v", i, v.Created)
		}
		got = append(got, v.ID)
	}
	if len(got) != 1234 || strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("got %d vms (first %v), want all 1234 in creation order", len(got), got[:min(3, len(got))])
	}
	if n := e.fake.Calls("listVirtualMachines"); n != 13 {
		t.Errorf("listVirtualMachines calls = %d, want 13 pages of 100", n)
	}

	var stopped []string
	for v, err := range c.VMs(ctx, orchestrator.ListVMs{State: orchestrator.VMStopped}) {
		if err != nil {
			t.Fatal(err)
		}
		if v.State != orchestrator.VMStopped {
			t.Fatalf("state filter let through %s in state %s", v.ID, v.State)
		}
		stopped = append(stopped, v.ID)
	}
	if strings.Join(stopped, ",") != strings.Join(wantStopped, ",") {
		t.Errorf("stopped: %d vms, want %d", len(stopped), len(wantStopped))
	}

	n := 0
	for v, err := range c.VMs(ctx, orchestrator.ListVMs{Account: "two", DomainID: fakecloudstack.RootDomainID}) {
		if err != nil {
			t.Fatal(err)
		}
		if v.AccountID != "acct-2" {
			t.Fatalf("account filter let through %+v", v)
		}
		n++
	}
	if n != 411 { // i%3 == 1 for i in [0,1234)
		t.Errorf("account two: %d vms, want 411", n)
	}
}

func TestVMsStopsWhenTheConsumerDoes(t *testing.T) {
	e := newEnv(t)
	a := e.account(fakecloudstack.Account{Name: "alice"})
	for range 30 {
		e.vm(fakecloudstack.VM{AccountID: a.ID})
	}
	c := e.client(func(c *orchestrator.Config) { c.PageSize = 10 })
	n := 0
	for _, err := range c.VMs(context.Background(), orchestrator.ListVMs{}) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 5 {
			break
		}
	}
	if calls := e.fake.Calls("listVirtualMachines"); calls != 1 {
		t.Errorf("read %d pages for 5 vms, want 1", calls)
	}
}

func TestVMsYieldsErrorOnce(t *testing.T) {
	e := newEnv(t)
	a := e.account(fakecloudstack.Account{Name: "alice"})
	for range 15 {
		e.vm(fakecloudstack.VM{AccountID: a.ID})
	}
	c := e.client(func(c *orchestrator.Config) { c.PageSize = 10 })
	e.fake.FailNext("listVirtualMachines", 1, 530)
	var errs []error
	n := 0
	for _, err := range c.VMs(context.Background(), orchestrator.ListVMs{}) {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	if n != 0 || len(errs) != 1 {
		t.Fatalf("got %d vms and errors %v, want one error", n, errs)
	}
	if ae := asAPIError(t, errs[0]); ae.ErrorCode != 530 || !strings.Contains(errs[0].Error(), "page 1") {
		t.Errorf("error %v", errs[0])
	}
}

func TestVMMetrics(t *testing.T) {
	e := newEnv(t)
	miner := e.account(fakecloudstack.Account{ID: "acct-miner", Name: "miner"})
	quiet := e.account(fakecloudstack.Account{ID: "acct-quiet", Name: "quiet"})
	hot := e.vm(fakecloudstack.VM{ID: "vm-hot", AccountID: miner.ID, ServiceOfferingName: "Large"})
	warm := e.vm(fakecloudstack.VM{ID: "vm-warm", AccountID: miner.ID})
	idle := e.vm(fakecloudstack.VM{ID: "vm-idle", AccountID: quiet.ID})
	for id, pct := range map[string]float64{hot.ID: 95.3, warm.ID: 41.25, idle.ID: 0.5} {
		if err := e.fake.SetCPU(id, pct); err != nil {
			t.Fatal(err)
		}
	}
	c := e.client()
	ctx := context.Background()

	got, err := c.VMMetrics(ctx, miner.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != hot.ID || got[0].CPUUsedPercent != 95.3 || got[0].AccountID != miner.ID ||
		got[0].ServiceOffering != "Large" || got[1].ID != warm.ID || got[1].CPUUsedPercent != 41.25 {
		t.Errorf("VMMetrics(miner) = %+v", got)
	}
	all, err := c.VMMetrics(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || all[2].ID != idle.ID || all[2].CPUUsedPercent != 0.5 || all[2].AccountID != quiet.ID {
		t.Errorf("VMMetrics(all) = %+v", all)
	}
	if _, err := c.VMMetrics(ctx, "no-such-account"); !errors.Is(err, orchestrator.ErrNotFound) || !strings.Contains(err.Error(), "no-such-account") {
		t.Errorf("unknown account: %v, want ErrNotFound naming the id", err)
	}
}

func TestStopStartIdempotent(t *testing.T) {
	e := newEnv(t)
	a := e.account(fakecloudstack.Account{Name: "alice"})
	v := e.vm(fakecloudstack.VM{AccountID: a.ID})
	c := e.client()
	ctx := context.Background()

	for round := 1; round <= 2; round++ {
		if err := c.StopVM(ctx, v.ID); err != nil {
			t.Fatalf("stop round %d: %v", round, err)
		}
		if got := e.state(v.ID); got != "Stopped" {
			t.Fatalf("round %d: state %s", round, got)
		}
		if cnt := e.fake.Counters(); cnt.Stops != 1 || cnt.AsyncJobs != 1 {
			t.Errorf("after stop round %d: %+v, want one stop job in all", round, cnt)
		}
	}
	if n := e.fake.Calls("stopVirtualMachine"); n != 1 {
		t.Errorf("stopVirtualMachine calls = %d, want 1", n)
	}
	for round := 1; round <= 2; round++ {
		if err := c.StartVM(ctx, v.ID); err != nil {
			t.Fatalf("start round %d: %v", round, err)
		}
		if cnt := e.fake.Counters(); cnt.Starts != 1 || cnt.AsyncJobs != 2 {
			t.Errorf("after start round %d: %+v", round, cnt)
		}
	}
	if got := e.state(v.ID); got != "Running" {
		t.Errorf("state %s, want Running", got)
	}
}

func TestAsyncJobIsPolledUntilDone(t *testing.T) {
	e := newEnv(t)
	a := e.account(fakecloudstack.Account{Name: "alice"})
	v := e.vm(fakecloudstack.VM{AccountID: a.ID})
	e.fake.SetAsyncCompletion(3, 0)
	if err := e.client().StopVM(context.Background(), v.ID); err != nil {
		t.Fatal(err)
	}
	if n := e.fake.Calls("queryAsyncJobResult"); n != 4 {
		t.Errorf("polls = %d, want 3 pending + 1 done", n)
	}
	if got := e.state(v.ID); got != "Stopped" {
		t.Errorf("state %s", got)
	}
}

func TestDestroyIdempotent(t *testing.T) {
	e := newEnv(t)
	a := e.account(fakecloudstack.Account{Name: "alice"})
	v1 := e.vm(fakecloudstack.VM{AccountID: a.ID})
	v2 := e.vm(fakecloudstack.VM{AccountID: a.ID, State: "Stopped"})
	c := e.client()
	ctx := context.Background()

	for range 2 {
		if err := c.DestroyVM(ctx, v1.ID, false); err != nil {
			t.Fatal(err)
		}
	}
	if got, cnt := e.state(v1.ID), e.fake.Counters(); got != "Destroyed" || cnt.Destroys != 1 || cnt.AsyncJobs != 1 {
		t.Errorf("destroy twice: state %s, %+v", got, cnt)
	}
	// Expunging a destroyed VM is a change; repeating it once gone is not.
	for range 2 {
		if err := c.DestroyVM(ctx, v1.ID, true); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := c.DestroyVM(ctx, v2.ID, true); err != nil {
			t.Fatal(err)
		}
	}
	if cnt := e.fake.Counters(); cnt.Destroys != 3 || cnt.Expunges != 2 || cnt.AsyncJobs != 3 {
		t.Errorf("counters %+v, want 3 destroys (2 expunging) in 3 jobs", cnt)
	}
	if e.state(v1.ID) != "<gone>" || e.state(v2.ID) != "<gone>" {
		t.Errorf("expunged vms still there")
	}
}

func TestDisableEnableAccountIdempotent(t *testing.T) {
	e := newEnv(t)
	a := e.account(fakecloudstack.Account{ID: "acct-miner", Name: "miner"})
	v := e.vm(fakecloudstack.VM{AccountID: a.ID})
	locked := e.account(fakecloudstack.Account{ID: "acct-locked", Name: "locked", State: "locked"})
	c := e.client()
	ctx := context.Background()

	for range 2 {
		if err := c.DisableAccount(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := e.fake.Account(a.ID); got.State != "disabled" {
		t.Errorf("state %s", got.State)
	}
	if got := e.state(v.ID); got != "Stopped" {
		t.Errorf("disabling left the vm %s", got)
	}
	if err := c.DisableAccount(ctx, locked.ID); err != nil {
		t.Fatal(err)
	}
	if cnt := e.fake.Counters(); cnt.Disables != 2 || cnt.AsyncJobs != 2 {
		t.Errorf("counters %+v, want 2 disables (one per account)", cnt)
	}
	for range 2 {
		if err := c.EnableAccount(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := e.fake.Account(a.ID); got.State != "enabled" {
		t.Errorf("state %s", got.State)
	}
	if n, cnt := e.fake.Calls("enableAccount"), e.fake.Counters(); n != 1 || cnt.Enables != 1 {
		t.Errorf("enableAccount calls %d, enables %d; want 1, 1", n, cnt.Enables)
	}
}

func TestNotFound(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	ctx := context.Background()
	checks := map[string]error{
		"stop":    c.StopVM(ctx, "vm-missing"),
		"start":   c.StartVM(ctx, "vm-missing"),
		"disable": c.DisableAccount(ctx, "acct-missing"),
		"enable":  c.EnableAccount(ctx, "acct-missing"),
	}
	for op, err := range checks {
		if !errors.Is(err, orchestrator.ErrNotFound) || !strings.Contains(err.Error(), "missing") || !strings.Contains(err.Error(), op) {
			t.Errorf("%s: %v, want ErrNotFound naming the operation and id", op, err)
		}
	}
	if err := c.DestroyVM(ctx, "vm-missing", true); err != nil {
		t.Errorf("destroying a vm that is already gone: %v, want nil", err)
	}
}

func TestInjectedErrorLeavesStateUnchanged(t *testing.T) {
	e := newEnv(t)
	a := e.account(fakecloudstack.Account{Name: "alice"})
	v := e.vm(fakecloudstack.VM{AccountID: a.ID})
	c := e.client()
	ctx := context.Background()

	e.fake.FailNext("stopVirtualMachine", 1, 530)
	err := c.StopVM(ctx, v.ID)
	ae := asAPIError(t, err)
	if ae.ErrorCode != 530 || ae.Command != "stopVirtualMachine" || !strings.Contains(err.Error(), "stop vm "+v.ID) {
		t.Errorf("error %v / %+v", err, ae)
	}
	if got, cnt := e.state(v.ID), e.fake.Counters(); got != "Running" || cnt.AsyncJobs != 0 {
		t.Errorf("after error: state %s, %+v", got, cnt)
	}

	e.fake.FailAsyncNext("stopVirtualMachine", 1)
	err = c.StopVM(ctx, v.ID)
	ae = asAPIError(t, err)
	if ae.ErrorCode != 530 || ae.JobID == "" || ae.ErrorText == "" {
		t.Errorf("failed job: %+v", ae)
	}
	if got, cnt := e.state(v.ID), e.fake.Counters(); got != "Running" || cnt.Stops != 0 {
		t.Errorf("after failed job: state %s, %+v", got, cnt)
	}

	e.fake.FailNext("listVirtualMachines", 1, 431)
	if err := c.StopVM(ctx, v.ID); asAPIError(t, err).ErrorCode != 431 || errors.Is(err, orchestrator.ErrNotFound) {
		t.Errorf("431 without 'does not exist': %v", err)
	}
	if err := c.StopVM(ctx, v.ID); err != nil {
		t.Fatalf("once the faults are used up: %v", err)
	}
}

func TestLatencyHitsContextDeadline(t *testing.T) {
	e := newEnv(t)
	a := e.account(fakecloudstack.Account{Name: "alice"})
	v := e.vm(fakecloudstack.VM{AccountID: a.ID})
	e.fake.SetLatency("stopVirtualMachine", time.Minute)
	c := e.client()

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.StopVM(ctx, v.ID)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("StopVM took %s to give up", d)
	}
	if msg := err.Error(); strings.Contains(msg, testKey) || strings.Contains(msg, "signature") || !strings.Contains(msg, v.ID) {
		t.Errorf("error %q leaks the request URL or lacks the vm id", msg)
	}
	if got, cnt := e.state(v.ID), e.fake.Counters(); got != "Running" || cnt.AsyncJobs != 0 {
		t.Errorf("state %s, %+v; want untouched", got, cnt)
	}
}

func TestRequestTimeout(t *testing.T) {
	e := newEnv(t)
	e.fake.SetLatency("listAccounts", time.Minute)
	c := e.client(func(c *orchestrator.Config) { c.Timeout = 50 * time.Millisecond })
	start := time.Now()
	_, err := c.ListAccounts(context.Background())
	if err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("err %v after %s, want a timeout error quickly", err, time.Since(start))
	}
	if strings.Contains(err.Error(), testKey) {
		t.Errorf("error leaks the api key: %v", err)
	}
}

func TestAsyncTimeoutAndCancel(t *testing.T) {
	e := newEnv(t)
	a := e.account(fakecloudstack.Account{Name: "alice"})
	v := e.vm(fakecloudstack.VM{AccountID: a.ID})
	e.fake.SetAsyncCompletion(1_000_000, 0) // never done

	c := e.client(func(c *orchestrator.Config) { c.AsyncTimeout = 50 * time.Millisecond })
	if err := c.StopVM(context.Background(), v.ID); !errors.Is(err, orchestrator.ErrAsyncTimeout) {
		t.Errorf("err %v, want ErrAsyncTimeout", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := e.client().StartVM(ctx, v.ID); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		// The vm is "Stopping" (the first job is pending), so StartVM submits a job.
		t.Errorf("err %v, want context.DeadlineExceeded while polling", err)
	}
}

func TestReadOnlyRefusesChanges(t *testing.T) {
	e := newEnv(t)
	a := e.account(fakecloudstack.Account{ID: "acct-1", Name: "alice"})
	running := e.vm(fakecloudstack.VM{AccountID: a.ID})
	stopped := e.vm(fakecloudstack.VM{AccountID: a.ID, State: "Stopped"})
	c := e.client(func(c *orchestrator.Config) { c.ReadOnly = true })
	ctx := context.Background()

	if err := c.StopVM(ctx, running.ID); !errors.Is(err, orchestrator.ErrReadOnly) {
		t.Errorf("stop running vm: %v, want ErrReadOnly", err)
	}
	if err := c.StopVM(ctx, stopped.ID); err != nil {
		t.Errorf("stop stopped vm: %v, want nil (nothing to do)", err)
	}
	if err := c.DisableAccount(ctx, a.ID); !errors.Is(err, orchestrator.ErrReadOnly) {
		t.Errorf("disable: %v, want ErrReadOnly", err)
	}
	if err := c.EnableAccount(ctx, a.ID); err != nil {
		t.Errorf("enable enabled account: %v", err)
	}
	if cnt := e.fake.Counters(); cnt.AsyncJobs != 0 || e.fake.Calls("enableAccount") != 0 {
		t.Errorf("read-only client changed something: %+v", cnt)
	}
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t)
	e.account(fakecloudstack.Account{Name: "alice"})
	c := e.client(func(c *orchestrator.Config) { c.RateLimit = rate.Limit(40); c.Burst = 1 })
	start := time.Now()
	for range 5 {
		if _, err := c.ListAccounts(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// Burst 1 at 40/s: the 2nd..5th requests wait 25ms each.
	if d := time.Since(start); d < 90*time.Millisecond {
		t.Errorf("5 requests at 40/s took %s, want >= 100ms", d)
	}
}

func TestLogsChangesWithoutSecrets(t *testing.T) {
	e := newEnv(t)
	a := e.account(fakecloudstack.Account{Name: "alice"})
	v := e.vm(fakecloudstack.VM{AccountID: a.ID})
	var buf bytes.Buffer
	ctx := zerolog.New(&buf).WithContext(context.Background())
	if err := e.client().StopVM(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, v.ID) || !strings.Contains(out, `"op":"stop vm"`) || !strings.Contains(out, `"from":"Running"`) {
		t.Errorf("log %q lacks the change", out)
	}
	if strings.Contains(out, testKey) || strings.Contains(out, testSecret) {
		t.Errorf("log leaks credentials: %s", out)
	}
}

func TestConcurrentUse(t *testing.T) {
	e := newEnv(t)
	a := e.account(fakecloudstack.Account{Name: "alice"})
	var ids []string
	for range 12 {
		ids = append(ids, e.vm(fakecloudstack.VM{AccountID: a.ID}).ID)
	}
	c := e.client(func(c *orchestrator.Config) { c.RateLimit = 1000; c.Burst = 4 })
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			if err := c.StopVM(context.Background(), id); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, id := range ids {
		if got := e.state(id); got != "Stopped" {
			t.Errorf("%s: %s", id, got)
		}
	}
	if cnt := e.fake.Counters(); cnt.Stops != 12 {
		t.Errorf("stops = %d", cnt.Stops)
	}
}
