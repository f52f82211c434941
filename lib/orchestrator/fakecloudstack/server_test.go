package fakecloudstack

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

type env struct {
	t   *testing.T
	s   *Server
	api string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	s := New()
	s.AddCredential("KEY", "SECRET")
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &env{t: t, s: s, api: srv.URL + "/client/api"}
}

// do runs command with params "k", "v", ... and returns status and the inner object
// of the "<command>response" wrapper.
func (e *env) do(command string, kv ...string) (int, map[string]any) {
	e.t.Helper()
	p := url.Values{"command": {command}}
	for i := 0; i+1 < len(kv); i += 2 {
		p.Set(kv[i], kv[i+1])
	}
	status, body := signedGet(e.t, e.api, "KEY", "SECRET", p)
	inner, ok := body[strings.ToLower(command)+"response"].(map[string]any)
	if !ok {
		e.t.Fatalf("%s: body %v lacks %sresponse", command, body, strings.ToLower(command))
	}
	return status, inner
}

func (e *env) mustAccount(a Account) Account {
	e.t.Helper()
	got, err := e.s.AddAccount(a)
	if err != nil {
		e.t.Fatal(err)
	}
	return got
}

func (e *env) mustVM(v VM) VM {
	e.t.Helper()
	got, err := e.s.AddVM(v)
	if err != nil {
		e.t.Fatal(err)
	}
	return got
}

func ids(list any) []string {
	var out []string
	items, _ := list.([]any)
	for _, it := range items {
		out = append(out, it.(map[string]any)["id"].(string))
	}
	return out
}

func TestListVirtualMachinesPagingAndFilters(t *testing.T) {
	e := newEnv(t)
	a := e.mustAccount(Account{ID: "acct-a", Name: "alice"})
	b := e.mustAccount(Account{ID: "acct-b", Name: "bob"})
	var want []string
	for i := range 12 {
		owner := a.ID
		if i%3 == 0 {
			owner = b.ID
		}
		state := "Running"
		if i%4 == 0 {
			state = "Stopped"
		}
		v := e.mustVM(VM{ID: fmt.Sprintf("vm-%02d", 12-i), AccountID: owner, State: state}) // ids not in insertion order
		want = append(want, v.ID)
	}

	var got []string
	for page := 1; ; page++ {
		status, inner := e.do("listVirtualMachines", "page", fmt.Sprint(page), "pagesize", "5")
		if status != 200 {
			t.Fatalf("page %d: status %d %v", page, status, inner)
		}
		if inner["count"] != float64(12) {
			t.Fatalf("page %d: count %v, want 12", page, inner["count"])
		}
		if _, ok := inner["virtualmachine"]; !ok {
			break
		}
		got = append(got, ids(inner["virtualmachine"])...)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("pages = %v, want insertion order %v", got, want)
	}

	_, inner := e.do("listVirtualMachines", "state", "stopped")
	if got := ids(inner["virtualmachine"]); strings.Join(got, ",") != "vm-12,vm-08,vm-04" || inner["count"] != float64(3) {
		t.Errorf("state=stopped: %v (count %v), want vm-12,vm-08,vm-04", got, inner["count"])
	}
	_, inner = e.do("listVirtualMachines", "account", "BOB", "domainid", RootDomainID)
	if got := ids(inner["virtualmachine"]); strings.Join(got, ",") != "vm-12,vm-09,vm-06,vm-03" {
		t.Errorf("account=bob: %v", got)
	}
	_, inner = e.do("listVirtualMachines", "id", "vm-05")
	if got := ids(inner["virtualmachine"]); strings.Join(got, ",") != "vm-05" {
		t.Errorf("id=vm-05: %v", got)
	}
	if status, inner := e.do("listVirtualMachines", "state", "Destroyed"); status != 200 || len(inner) != 0 {
		t.Errorf("empty result: status %d inner %v, want 200 and {} as CloudStack sends", status, inner)
	}
	if status, inner := e.do("listVirtualMachines", "id", "nope"); status != 431 || !strings.Contains(inner["errortext"].(string), "entity does not exist") {
		t.Errorf("unknown id: status %d %v, want 431 entity does not exist", status, inner)
	}
	if status, _ := e.do("listVirtualMachines", "account", "carol"); status != 431 {
		t.Errorf("unknown account: status %d, want 431", status)
	}
	if status, inner := e.do("listVirtualMachines", "page", "1", "pagesize", "501"); status != 431 || inner["errorcode"] != float64(431) {
		t.Errorf("pagesize 501: status %d %v, want 431", status, inner)
	}
}

func TestListWithoutPagesizeIsCappedAt500(t *testing.T) {
	e := newEnv(t)
	a := e.mustAccount(Account{Name: "big"})
	for range 501 {
		e.mustVM(VM{AccountID: a.ID})
	}
	_, inner := e.do("listVirtualMachines")
	if n := len(inner["virtualmachine"].([]any)); n != MaxPageSize || inner["count"] != float64(501) {
		t.Errorf("got %d items, count %v; want %d items and count 501", n, inner["count"], MaxPageSize)
	}
	_, inner = e.do("listVirtualMachines", "pagesize", "-1")
	if n := len(inner["virtualmachine"].([]any)); n != 501 {
		t.Errorf("pagesize=-1: %d items, want 501", n)
	}
}

func TestAsyncJobLifecycle(t *testing.T) {
	e := newEnv(t)
	a := e.mustAccount(Account{Name: "alice"})
	v := e.mustVM(VM{AccountID: a.ID})
	e.s.SetAsyncCompletion(2, 0)

	status, inner := e.do("stopVirtualMachine", "id", v.ID)
	if status != 200 || inner["id"] != v.ID || inner["jobid"] == "" {
		t.Fatalf("stop: %d %v", status, inner)
	}
	jobID := inner["jobid"].(string)
	if got, _ := e.s.VM(v.ID); got.State != "Stopping" {
		t.Errorf("state while job pending = %s, want Stopping", got.State)
	}
	for poll := 1; poll <= 2; poll++ {
		_, job := e.do("queryAsyncJobResult", "jobid", jobID)
		if job["jobstatus"] != float64(0) || job["jobresult"] != nil {
			t.Fatalf("poll %d: %v, want pending without result", poll, job)
		}
	}
	_, job := e.do("queryAsyncJobResult", "jobid", jobID)
	if job["jobstatus"] != float64(1) || job["jobinstanceid"] != v.ID || job["cmd"] != cmdStopVM {
		t.Fatalf("poll 3: %v, want done", job)
	}
	vm := job["jobresult"].(map[string]any)["virtualmachine"].(map[string]any)
	if vm["state"] != "Stopped" || vm["id"] != v.ID {
		t.Errorf("job result vm = %v", vm)
	}
	if got, _ := e.s.VM(v.ID); got.State != "Stopped" {
		t.Errorf("state = %s, want Stopped", got.State)
	}
	if c := e.s.Counters(); c.Stops != 1 || c.AsyncJobs != 1 {
		t.Errorf("counters = %+v", c)
	}
	if status, _ := e.do("queryAsyncJobResult", "jobid", "no-such-job"); status != 431 {
		t.Errorf("unknown job: status %d, want 431", status)
	}
}

func TestAsyncCompletionByDelay(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	e := newEnv(t)
	e.s.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	a := e.mustAccount(Account{Name: "alice"})
	v := e.mustVM(VM{AccountID: a.ID, State: "Stopped"})
	e.s.SetAsyncCompletion(0, 30*time.Second)

	_, inner := e.do("startVirtualMachine", "id", v.ID)
	jobID := inner["jobid"].(string)
	if _, job := e.do("queryAsyncJobResult", "jobid", jobID); job["jobstatus"] != float64(0) {
		t.Fatalf("before the delay: %v", job)
	}
	mu.Lock()
	now = now.Add(30 * time.Second)
	mu.Unlock()
	_, job := e.do("queryAsyncJobResult", "jobid", jobID)
	if job["jobstatus"] != float64(1) || job["completed"] != "2026-01-01T00:00:30+0000" || job["created"] != "2026-01-01T00:00:00+0000" {
		t.Fatalf("after the delay: %v", job)
	}
	if got, _ := e.s.VM(v.ID); got.State != "Running" {
		t.Errorf("state = %s, want Running", got.State)
	}
}

func TestFaultInjection(t *testing.T) {
	e := newEnv(t)
	a := e.mustAccount(Account{Name: "alice"})
	v := e.mustVM(VM{AccountID: a.ID})

	e.s.FailNext("stopvirtualmachine", 1, 530)
	status, inner := e.do("stopVirtualMachine", "id", v.ID)
	if status != 530 || inner["errorcode"] != float64(530) || inner["errortext"] == "" {
		t.Fatalf("injected: %d %v, want 530 error shape", status, inner)
	}
	if got, _ := e.s.VM(v.ID); got.State != "Running" || e.s.Counters().AsyncJobs != 0 {
		t.Errorf("after injected failure: state %s, counters %+v; want nothing done", got.State, e.s.Counters())
	}

	e.s.FailAsyncNext("stopVirtualMachine", 1)
	_, inner = e.do("stopVirtualMachine", "id", v.ID)
	_, job := e.do("queryAsyncJobResult", "jobid", inner["jobid"].(string))
	res, _ := job["jobresult"].(map[string]any)
	if job["jobstatus"] != float64(2) || job["jobresultcode"] != float64(530) || res["errorcode"] != float64(530) || res["errortext"] == "" {
		t.Fatalf("async failure: %v", job)
	}
	if got, _ := e.s.VM(v.ID); got.State != "Running" || e.s.Counters().Stops != 0 {
		t.Errorf("after failed job: state %s, stops %d; want Running, 0", got.State, e.s.Counters().Stops)
	}

	// Both injections are used up: the next stop works.
	_, inner = e.do("stopVirtualMachine", "id", v.ID)
	if _, job := e.do("queryAsyncJobResult", "jobid", inner["jobid"].(string)); job["jobstatus"] != float64(1) {
		t.Errorf("third stop: %v", job)
	}
	if got := e.s.Calls("stopVirtualMachine"); got != 3 {
		t.Errorf("Calls = %d, want 3", got)
	}
}

func TestLatencyDropsAbandonedRequests(t *testing.T) {
	e := newEnv(t)
	a := e.mustAccount(Account{Name: "alice"})
	v := e.mustVM(VM{AccountID: a.ID})
	e.s.SetLatency("stopVirtualMachine", time.Minute)

	p := url.Values{"command": {"stopVirtualMachine"}, "id": {v.ID}, "apikey": {"KEY"}, "response": {"json"}}
	p.Set("signature", Sign(p, "SECRET"))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.api+"?"+p.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("request with a 50ms deadline against 1m latency succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("gave up after %s", d)
	}
	// The handler notices the client left and returns without acting; give it a
	// moment to do so (acting would take a minute).
	time.Sleep(50 * time.Millisecond)
	if got, _ := e.s.VM(v.ID); got.State != "Running" || e.s.Counters().AsyncJobs != 0 || e.s.Calls("stopVirtualMachine") != 0 {
		t.Errorf("state %s, counters %+v, calls %d; want untouched", got.State, e.s.Counters(), e.s.Calls("stopVirtualMachine"))
	}
}

func TestAccountsDisableEnable(t *testing.T) {
	e := newEnv(t)
	a := e.mustAccount(Account{Name: "miner"})
	other := e.mustAccount(Account{Name: "other"})
	v1 := e.mustVM(VM{AccountID: a.ID})
	v2 := e.mustVM(VM{AccountID: a.ID, State: "Stopped"})
	v3 := e.mustVM(VM{AccountID: other.ID})

	if status, _ := e.do("disableAccount", "id", a.ID); status != 431 {
		t.Errorf("disableAccount without lock: status %d, want 431", status)
	}
	_, inner := e.do("disableAccount", "id", a.ID, "lock", "false")
	_, job := e.do("queryAsyncJobResult", "jobid", inner["jobid"].(string))
	acct := job["jobresult"].(map[string]any)["account"].(map[string]any)
	if job["jobstatus"] != float64(1) || acct["state"] != "disabled" || job["jobinstancetype"] != "Account" {
		t.Fatalf("disable job: %v", job)
	}
	for id, want := range map[string]string{v1.ID: "Stopped", v2.ID: "Stopped", v3.ID: "Running"} {
		if got, _ := e.s.VM(id); got.State != want {
			t.Errorf("vm %s: %s, want %s", id, got.State, want)
		}
	}
	// CloudStack will not start a disabled account's VM.
	_, inner = e.do("startVirtualMachine", "id", v1.ID)
	if _, job := e.do("queryAsyncJobResult", "jobid", inner["jobid"].(string)); job["jobstatus"] != float64(2) || job["jobresultcode"] != float64(531) {
		t.Errorf("start of disabled account's vm: %v, want failed job 531", job)
	}

	status, inner := e.do("enableAccount", "account", "MINER", "domainid", RootDomainID)
	if status != 200 || inner["account"].(map[string]any)["state"] != "enabled" {
		t.Fatalf("enable by name: %d %v", status, inner)
	}
	_, inner = e.do("disableAccount", "id", other.ID, "lock", "true")
	e.do("queryAsyncJobResult", "jobid", inner["jobid"].(string))
	if got, _ := e.s.Account(other.ID); got.State != "locked" {
		t.Errorf("lock=true: state %s, want locked", got.State)
	}
	if got, _ := e.s.VM(v3.ID); got.State != "Running" {
		t.Errorf("locking stopped a vm: %s", got.State)
	}
	if c := e.s.Counters(); c.Disables != 2 || c.Enables != 1 || c.Stops != 0 {
		t.Errorf("counters = %+v", c)
	}

	_, inner = e.do("listAccounts", "state", "locked")
	if got := ids(inner["account"]); len(got) != 1 || got[0] != other.ID {
		t.Errorf("listAccounts state=locked: %v", got)
	}
	_, inner = e.do("listAccounts", "id", a.ID)
	if got := inner["account"].([]any)[0].(map[string]any); got["vmtotal"] != float64(2) || got["vmrunning"] != float64(0) || got["name"] != "miner" {
		t.Errorf("listAccounts id: %v", got)
	}
}

func TestDestroyAndExpunge(t *testing.T) {
	e := newEnv(t)
	a := e.mustAccount(Account{Name: "alice"})
	v1 := e.mustVM(VM{AccountID: a.ID})
	v2 := e.mustVM(VM{AccountID: a.ID})

	_, inner := e.do("destroyVirtualMachine", "id", v1.ID)
	e.do("queryAsyncJobResult", "jobid", inner["jobid"].(string))
	if got, _ := e.s.VM(v1.ID); got.State != "Destroyed" {
		t.Errorf("destroy: %s, want Destroyed", got.State)
	}
	_, inner = e.do("destroyVirtualMachine", "id", v2.ID, "expunge", "true")
	_, job := e.do("queryAsyncJobResult", "jobid", inner["jobid"].(string))
	if vm := job["jobresult"].(map[string]any)["virtualmachine"].(map[string]any); vm["state"] != "Expunging" {
		t.Errorf("expunge result: %v", vm)
	}
	if _, ok := e.s.VM(v2.ID); ok {
		t.Error("expunged vm still stored")
	}
	if _, inner := e.do("listVirtualMachines"); strings.Join(ids(inner["virtualmachine"]), ",") != v1.ID {
		t.Errorf("list after expunge: %v", ids(inner["virtualmachine"]))
	}
	if c := e.s.Counters(); c.Destroys != 2 || c.Expunges != 1 {
		t.Errorf("counters = %+v", c)
	}
}

func TestMetricsCPU(t *testing.T) {
	e := newEnv(t)
	a := e.mustAccount(Account{Name: "alice"})
	v := e.mustVM(VM{AccountID: a.ID, CPUNumber: 2, CPUSpeed: 2000, Memory: 2048})
	if err := e.s.SetCPU(v.ID, 95.3); err != nil {
		t.Fatal(err)
	}
	if err := e.s.SetCPU("nope", 1); err == nil {
		t.Error("SetCPU of unknown vm succeeded")
	}
	_, inner := e.do("listVirtualMachinesMetrics", "account", "alice")
	vm := inner["virtualmachine"].([]any)[0].(map[string]any)
	if vm["cpuused"] != "95.3%" || vm["cputotal"] != "4.00 Ghz" || vm["memorytotal"] != "2.00 GB" {
		t.Errorf("metrics vm = %v", vm)
	}
	for pct, want := range map[float64]string{10: "10%", 55.555: "55.56%", 0: "0%", 100: "100%"} {
		if got := formatPercent(pct); got != want {
			t.Errorf("formatPercent(%v) = %q, want %q", pct, got, want)
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	e := newEnv(t)
	if status, inner := e.do("scaleVirtualMachine"); status != 432 || inner["errorcode"] != float64(432) {
		t.Errorf("unimplemented command: %d %v, want 432", status, inner)
	}
}

func TestLoadFixtures(t *testing.T) {
	s := New()
	doc := `{"credentials":[{"apikey":"K","secretkey":"S"}],
	  "accounts":[{"id":"a1","name":"acme","state":"enabled"},{"id":"a2","name":"miner","state":"locked"}],
	  "vms":[{"id":"v1","name":"web-1","accountid":"a1","state":"Running","created":"2026-01-05T10:00:00Z","cpuused":97.5},
	         {"id":"v2","name":"db-1","accountid":"a2","state":"Stopped"}]}`
	if err := s.LoadFixtures(strings.NewReader(doc)); err != nil {
		t.Fatal(err)
	}
	v, ok := s.VM("v1")
	if !ok || v.CPUUsed != 97.5 || v.Name != "web-1" || !v.Created.Equal(time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("v1 = %+v", v)
	}
	if a, ok := s.Account("a2"); !ok || a.State != "locked" || a.DomainID != RootDomainID {
		t.Errorf("a2 = %+v", a)
	}
	if s.secrets["K"] != "S" {
		t.Error("credential not loaded")
	}

	for name, bad := range map[string]string{
		"unknown field":       `{"accounts":[{"id":"x","name":"x","colour":"red"}]}`,
		"vm of unknown owner": `{"vms":[{"id":"v9","accountid":"ghost"}]}`,
		"bad state":           `{"accounts":[{"id":"y","name":"y","state":"frozen"}]}`,
		"empty secret":        `{"credentials":[{"apikey":"K2"}]}`,
		"duplicate id":        `{"accounts":[{"id":"a1","name":"again"}]}`,
	} {
		if err := s.LoadFixtures(strings.NewReader(bad)); err == nil {
			t.Errorf("%s: LoadFixtures succeeded", name)
		}
	}
}

func TestStartLoopbackOnly(t *testing.T) {
	s := New()
	if _, _, err := s.Start("0.0.0.0:0"); err == nil {
		t.Fatal("Start on 0.0.0.0 succeeded; the fake must bind loopback only")
	}
	s.AddCredential("KEY", "SECRET")
	u, stop, err := s.Start("")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if !strings.HasPrefix(u, "http://127.0.0.1:") || !strings.HasSuffix(u, "/client/api") {
		t.Fatalf("url %q", u)
	}
	status, body := signedGet(t, u, "KEY", "SECRET", url.Values{"command": {"listAccounts"}})
	if status != 200 || body["listaccountsresponse"] == nil {
		t.Errorf("request to started server: %d %v", status, body)
	}
	stop()
	stop() // idempotent
	if resp, err := http.Get(u); err == nil {
		resp.Body.Close()
		t.Error("server still answering after stop")
	}
}

func TestConcurrentRequests(t *testing.T) {
	e := newEnv(t)
	a := e.mustAccount(Account{Name: "alice"})
	var vms []VM
	for range 20 {
		vms = append(vms, e.mustVM(VM{AccountID: a.ID}))
	}
	var wg sync.WaitGroup
	for _, v := range vms {
		wg.Go(func() {
			p := url.Values{"command": {"stopVirtualMachine"}, "id": {v.ID}, "apikey": {"KEY"}, "response": {"json"}}
			p.Set("signature", Sign(p, "SECRET"))
			resp, err := http.Get(e.api + "?" + p.Encode())
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			_ = e.s.SetCPU(v.ID, 50)
		})
	}
	wg.Wait()
	if c := e.s.Counters(); c.AsyncJobs != 20 {
		t.Errorf("AsyncJobs = %d, want 20", c.AsyncJobs)
	}
}
