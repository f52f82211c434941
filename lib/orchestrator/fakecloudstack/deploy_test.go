package fakecloudstack

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"
)

// deployEnv is a fake with one account, a settable clock, and cloudstack-go clients
// on it: sync answers the command only (id and job id), async polls the job as
// cronkit's client does.
func deployEnv(t *testing.T) (e *env, setNow func(time.Time), sync_, async *cloudstack.CloudStackClient) {
	t.Helper()
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	e = newEnv(t)
	e.s.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e.mustAccount(Account{ID: "acct-a", Name: "alice"})
	setNow = func(t time.Time) { mu.Lock(); defer mu.Unlock(); now = t }
	return e, setNow, cloudstack.NewClient(e.api, "KEY", "SECRET", false), cloudstack.NewAsyncClient(e.api, "KEY", "SECRET", false)
}

func deployParams(cs *cloudstack.CloudStackClient, name string) *cloudstack.DeployVirtualMachineParams {
	p := cs.VirtualMachine.NewDeployVirtualMachineParams("offering-small", "tpl-debian", "zone-1")
	p.SetAccount("alice")
	p.SetDomainid(RootDomainID)
	p.SetName(name)
	return p
}

// eventsOf lists a resource's events through cloudstack-go's EventService, oldest
// first: "TYPE State LEVEL HH:MM:SS".
func eventsOf(t *testing.T, cs *cloudstack.CloudStackClient, id string) []string {
	t.Helper()
	p := cs.Event.NewListEventsParams()
	p.SetResourceid(id)
	r, err := cs.Event.ListEvents(p)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := len(r.Events) - 1; i >= 0; i-- {
		ev := r.Events[i]
		out = append(out, ev.Type+" "+ev.State+" "+ev.Level+" "+ev.Created[11:19])
	}
	return out
}

// deployVirtualMachine through cloudstack-go: the answer is the VM's id and a job id;
// the VM is listed at once, Starting; the job, when it completes, gives the running
// VM, and the event log tells the same story (VM.CREATE scheduled at the request,
// completed with VM.START when the job ran).
func TestDeployVirtualMachineAsyncJob(t *testing.T) {
	e, setNow, cs, _ := deployEnv(t)
	e.s.SetAsyncCompletion(0, 30*time.Second)
	r, err := cs.VirtualMachine.DeployVirtualMachine(deployParams(cs, "web-2"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Id == "" || r.JobID == "" {
		t.Fatalf("deploy answered id %q, job %q", r.Id, r.JobID)
	}
	list := func() *cloudstack.VirtualMachine {
		t.Helper()
		p := cs.VirtualMachine.NewListVirtualMachinesParams()
		p.SetId(r.Id)
		l, err := cs.VirtualMachine.ListVirtualMachines(p)
		if err != nil || l.Count != 1 {
			t.Fatalf("list %s: %v, %+v", r.Id, err, l)
		}
		return l.VirtualMachines[0]
	}
	if vm := list(); vm.State != "Starting" || vm.Name != "web-2" || vm.Account != "alice" || vm.Templateid != "tpl-debian" ||
		vm.Serviceofferingid != "offering-small" || vm.Zoneid != "zone-1" || vm.Created != "2026-03-02T09:00:00+0000" {
		t.Errorf("while deploying: %+v", vm)
	}
	q, err := cs.Asyncjob.QueryAsyncJobResult(cs.Asyncjob.NewQueryAsyncJobResultParams(r.JobID))
	if err != nil || q.Jobstatus != 0 {
		t.Fatalf("job before its delay: %v %+v", err, q)
	}
	setNow(time.Date(2026, 3, 2, 9, 0, 30, 0, time.UTC))
	q, err = cs.Asyncjob.QueryAsyncJobResult(cs.Asyncjob.NewQueryAsyncJobResultParams(r.JobID))
	if err != nil || q.Jobstatus != 1 || q.Cmd != cmdDeployVM || q.Jobinstanceid != r.Id || q.Jobinstancetype != "VirtualMachine" {
		t.Fatalf("job after its delay: %v %+v", err, q)
	}
	if !strings.Contains(string(q.Jobresult), `"state":"Running"`) || !strings.Contains(string(q.Jobresult), r.Id) {
		t.Errorf("job result %s", q.Jobresult)
	}
	if vm := list(); vm.State != "Running" || vm.Hostid == "" {
		t.Errorf("deployed: %+v", vm)
	}
	want := []string{"VM.CREATE Scheduled INFO 09:00:00", "VM.CREATE Completed INFO 09:00:30", "VM.START Completed INFO 09:00:30"}
	if got := eventsOf(t, cs, r.Id); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("events %q, want %q", got, want)
	}
	if c := e.s.Counters(); c.Deploys != 1 || c.AsyncJobs != 1 {
		t.Errorf("counters %+v", c)
	}
}

// The async client (as cronkit's orchestrator client uses cloudstack-go) gets the
// running VM back in one call; startvm=false leaves it Stopped with no VM.START; a
// failed job leaves it in Error with an ERROR event; bad requests and a wrong
// signature are refused as CloudStack refuses them.
func TestDeployVirtualMachineThroughTheAsyncClient(t *testing.T) {
	e, _, _, cs := deployEnv(t)
	vm, err := cs.VirtualMachine.DeployVirtualMachine(deployParams(cs, "web-3"))
	if err != nil {
		t.Fatal(err)
	}
	if vm.State != "Running" || vm.Name != "web-3" || vm.Account != "alice" || vm.Id == "" {
		t.Errorf("deployed: %+v", vm)
	}
	p := cs.VirtualMachine.NewListVirtualMachinesParams()
	p.SetAccount("alice")
	p.SetDomainid(RootDomainID)
	if l, err := cs.VirtualMachine.ListVirtualMachines(p); err != nil || l.Count != 1 || l.VirtualMachines[0].Id != vm.Id {
		t.Errorf("alice's VMs: %v %+v", err, l)
	}

	stopped := deployParams(cs, "web-4")
	stopped.SetStartvm(false)
	vm4, err := cs.VirtualMachine.DeployVirtualMachine(stopped)
	if err != nil || vm4.State != "Stopped" {
		t.Fatalf("startvm=false: %v %+v", err, vm4)
	}
	if got := eventsOf(t, cs, vm4.Id); len(got) != 2 || !strings.HasPrefix(got[1], "VM.CREATE Completed INFO") {
		t.Errorf("startvm=false events %q", got)
	}

	e.s.FailAsyncNext("deployVirtualMachine", 1)
	if _, err := cs.VirtualMachine.DeployVirtualMachine(deployParams(cs, "web-5")); err == nil || !strings.Contains(err.Error(), "insufficient capacity") {
		t.Errorf("failed job: %v", err)
	}
	var failed VM
	for _, id := range e.s.vmOrder {
		if v, _ := e.s.VM(id); v.Name == "web-5" {
			failed = v
		}
	}
	if failed.State != "Error" {
		t.Errorf("after the failed job: %+v", failed)
	}
	if got := eventsOf(t, cs, failed.ID); len(got) != 2 || !strings.HasPrefix(got[1], "VM.CREATE Completed ERROR") {
		t.Errorf("failed deploy events %q", got)
	}
	if c := e.s.Counters(); c.Deploys != 2 || c.AsyncJobs != 3 {
		t.Errorf("counters %+v", c)
	}

	for _, tc := range []struct {
		p    *cloudstack.DeployVirtualMachineParams
		want string
	}{
		{cs.VirtualMachine.NewDeployVirtualMachineParams("offering-small", "", "zone-1"), "templateid"},
		{deployParams(cs, "web-3"), "already exists"},
		{func() *cloudstack.DeployVirtualMachineParams {
			p := deployParams(cs, "x")
			p.SetAccount("mallory")
			return p
		}(), "Unable to find account mallory"},
	} {
		if _, err := cs.VirtualMachine.DeployVirtualMachine(tc.p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error with %q, got %v", tc.want, err)
		}
	}
	bad := cloudstack.NewAsyncClient(e.api, "KEY", "WRONG", false)
	if _, err := bad.VirtualMachine.DeployVirtualMachine(deployParams(bad, "web-6")); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong secret: %v", err)
	}
	if c := e.s.Counters(); c.AuthFailures != 1 || c.Deploys != 2 || len(e.s.vmOrder) != 3 {
		t.Errorf("refused requests changed something: %+v, %d VMs", c, len(e.s.vmOrder))
	}
}
