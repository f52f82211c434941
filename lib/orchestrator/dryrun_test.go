package orchestrator_test

import (
	"context"
	"errors"
	"iter"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/internal/standintest"
	"github.com/cronkit/cronkit/lib/orchestrator"
)

// clientMethods is every exported method of *orchestrator.Client and whether a dry
// run may call it. A method added to the client fails TestDryRunCoversClient until it
// is classified here (and DryRun has it).
var clientMethods = standintest.Methods{
	"ListAccounts":   standintest.Reads,
	"VMs":            standintest.Reads,
	"VMMetrics":      standintest.Reads,
	"ListingCalls":   standintest.Reads,
	"UsagePages":     standintest.Reads,
	"UsageCoverage":  standintest.Reads,
	"Events":         standintest.Reads,
	"Volumes":        standintest.Reads,
	"PublicIPs":      standintest.Reads,
	"StopVM":         standintest.Mutates,
	"StartVM":        standintest.Mutates,
	"DestroyVM":      standintest.Mutates,
	"DisableAccount": standintest.Mutates,
	"EnableAccount":  standintest.Mutates,
}

func TestDryRunCoversClient(t *testing.T) {
	standintest.CheckCoverage(t, (*orchestrator.Client)(nil), (*orchestrator.DryRun)(nil),
		reflect.TypeFor[orchestrator.Reader](), clientMethods)
}

// recordingReader is an orchestrator.Reader that records each call and answers
// canned values.
type recordingReader struct {
	calls []string
	err   error
}

func (r *recordingReader) ListAccounts(context.Context) ([]orchestrator.Account, error) {
	r.calls = append(r.calls, "ListAccounts")
	return []orchestrator.Account{{ID: "acc-1"}}, r.err
}

func (r *recordingReader) VMs(_ context.Context, f orchestrator.ListVMs) iter.Seq2[orchestrator.VM, error] {
	r.calls = append(r.calls, "VMs")
	return func(yield func(orchestrator.VM, error) bool) {
		yield(orchestrator.VM{ID: "vm-of-" + f.Account}, r.err)
	}
}

func (r *recordingReader) VMMetrics(_ context.Context, accountID string) ([]orchestrator.VM, error) {
	r.calls = append(r.calls, "VMMetrics")
	return []orchestrator.VM{{ID: "vm-of-" + accountID}}, r.err
}

func (r *recordingReader) ListingCalls(context.Context) (int, error) {
	r.calls = append(r.calls, "ListingCalls")
	return 2, r.err
}

func (r *recordingReader) UsagePages(_ context.Context, f orchestrator.ListUsage) iter.Seq2[orchestrator.UsagePage, error] {
	r.calls = append(r.calls, "UsagePages")
	return func(yield func(orchestrator.UsagePage, error) bool) {
		yield(orchestrator.UsagePage{Number: 1, Records: []orchestrator.UsageRecord{{UsageID: "usage-from-" + f.Start.Format("2006-01-02")}}}, r.err)
	}
}

func (r *recordingReader) UsageCoverage(context.Context) (time.Time, error) {
	r.calls = append(r.calls, "UsageCoverage")
	return time.Date(2025, 3, 2, 0, 0, 0, 0, time.UTC), r.err
}

func (r *recordingReader) Events(_ context.Context, f orchestrator.ListEvents) iter.Seq2[orchestrator.Event, error] {
	r.calls = append(r.calls, "Events")
	return func(yield func(orchestrator.Event, error) bool) {
		yield(orchestrator.Event{ID: "event-of-" + strings.Join(f.Types, ",")}, r.err)
	}
}

func (r *recordingReader) Volumes(context.Context) iter.Seq2[orchestrator.Volume, error] {
	r.calls = append(r.calls, "Volumes")
	return func(yield func(orchestrator.Volume, error) bool) {
		yield(orchestrator.Volume{ID: "vol-1"}, r.err)
	}
}

func (r *recordingReader) PublicIPs(context.Context) iter.Seq2[orchestrator.PublicIP, error] {
	r.calls = append(r.calls, "PublicIPs")
	return func(yield func(orchestrator.PublicIP, error) bool) {
		yield(orchestrator.PublicIP{ID: "ip-1"}, r.err)
	}
}

func TestDryRunRefusesEveryChange(t *testing.T) {
	for name, reader := range map[string]orchestrator.Reader{"with reader": &recordingReader{}, "nil reader": nil} {
		t.Run(name, func(t *testing.T) {
			standintest.CheckRefuses(t, orchestrator.NewDryRun(reader), clientMethods, orchestrator.ErrDryRun)
			if r, ok := reader.(*recordingReader); ok && len(r.calls) > 0 {
				t.Errorf("a refused change reached the reader: %q", r.calls)
			}
		})
	}
}

func TestDryRunRefusalSaysWhat(t *testing.T) {
	err := orchestrator.NewDryRun(nil).DestroyVM(context.Background(), "vm-7", true)
	if want := "destroy vm vm-7 (expunge true): dry run: the orchestrator is not changed"; err == nil || err.Error() != want {
		t.Errorf("DestroyVM error = %v, want %q", err, want)
	}
}

func TestDryRunReadsDelegate(t *testing.T) {
	ctx := context.Background()
	errReader := errors.New("reader's error")
	r := &recordingReader{err: errReader}
	d := orchestrator.NewDryRun(r)

	accounts, err := d.ListAccounts(ctx)
	if len(accounts) != 1 || accounts[0].ID != "acc-1" || !errors.Is(err, errReader) {
		t.Errorf("ListAccounts = %+v, %v; want the reader's acc-1, %v", accounts, err, errReader)
	}
	n := 0
	for vm, err := range d.VMs(ctx, orchestrator.ListVMs{Account: "alice"}) {
		n++
		if vm.ID != "vm-of-alice" || !errors.Is(err, errReader) {
			t.Errorf("VMs yielded %q, %v; want vm-of-alice, %v", vm.ID, err, errReader)
		}
	}
	if n != 1 {
		t.Errorf("VMs yielded %d times, want the reader's one", n)
	}
	vms, err := d.VMMetrics(ctx, "acc-1")
	if len(vms) != 1 || vms[0].ID != "vm-of-acc-1" || !errors.Is(err, errReader) {
		t.Errorf("VMMetrics = %+v, %v; want the reader's vm-of-acc-1, %v", vms, err, errReader)
	}

	if n, err := d.ListingCalls(ctx); n != 2 || !errors.Is(err, errReader) {
		t.Errorf("ListingCalls = %d, %v; want the reader's 2, %v", n, err, errReader)
	}

	n = 0
	for pg, err := range d.UsagePages(ctx, orchestrator.ListUsage{Start: time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)}) {
		n++
		if len(pg.Records) != 1 || pg.Records[0].UsageID != "usage-from-2025-03-01" || !errors.Is(err, errReader) {
			t.Errorf("UsagePages yielded %+v, %v; want the reader's page, %v", pg, err, errReader)
		}
	}
	if n != 1 {
		t.Errorf("UsagePages yielded %d times, want the reader's one", n)
	}
	if cov, err := d.UsageCoverage(ctx); !cov.Equal(time.Date(2025, 3, 2, 0, 0, 0, 0, time.UTC)) || !errors.Is(err, errReader) {
		t.Errorf("UsageCoverage = %v, %v; want the reader's 2025-03-02, %v", cov, err, errReader)
	}

	n = 0
	for ev, err := range d.Events(ctx, orchestrator.ListEvents{Types: []string{orchestrator.EventVMStart}}) {
		n++
		if ev.ID != "event-of-VM.START" || !errors.Is(err, errReader) {
			t.Errorf("Events yielded %+v, %v; want the reader's event, %v", ev, err, errReader)
		}
	}
	for v, err := range d.Volumes(ctx) {
		n++
		if v.ID != "vol-1" || !errors.Is(err, errReader) {
			t.Errorf("Volumes yielded %+v, %v; want the reader's vol-1, %v", v, err, errReader)
		}
	}
	for ip, err := range d.PublicIPs(ctx) {
		n++
		if ip.ID != "ip-1" || !errors.Is(err, errReader) {
			t.Errorf("PublicIPs yielded %+v, %v; want the reader's ip-1, %v", ip, err, errReader)
		}
	}
	if n != 3 {
		t.Errorf("Events, Volumes and PublicIPs yielded %d items, want the reader's three", n)
	}

	slices.Sort(r.calls)
	if want := standintest.ReadNames(clientMethods); !slices.Equal(r.calls, want) {
		t.Errorf("reader saw %q, want each read once: %q", r.calls, want)
	}
}

func TestDryRunWithoutReaderRefusesReads(t *testing.T) {
	ctx := context.Background()
	d := orchestrator.NewDryRun(nil)
	if _, err := d.ListAccounts(ctx); !errors.Is(err, orchestrator.ErrDryRun) {
		t.Errorf("ListAccounts without reader: %v, want ErrDryRun", err)
	}
	if _, err := d.VMMetrics(ctx, "acc-1"); !errors.Is(err, orchestrator.ErrDryRun) {
		t.Errorf("VMMetrics without reader: %v, want ErrDryRun", err)
	}
	if _, err := d.ListingCalls(ctx); !errors.Is(err, orchestrator.ErrDryRun) {
		t.Errorf("ListingCalls without reader: %v, want ErrDryRun", err)
	}

	if _, err := d.UsageCoverage(ctx); !errors.Is(err, orchestrator.ErrDryRun) {
		t.Errorf("UsageCoverage without reader: %v, want ErrDryRun", err)
	}
	for _, err := range d.UsagePages(ctx, orchestrator.ListUsage{}) {
		if !errors.Is(err, orchestrator.ErrDryRun) {
			t.Errorf("UsagePages without reader yielded %v, want ErrDryRun", err)
		}
	}
	refused := 0
	for _, err := range d.Events(ctx, orchestrator.ListEvents{}) {
		refused++
		if !errors.Is(err, orchestrator.ErrDryRun) {
			t.Errorf("Events without reader yielded %v, want ErrDryRun", err)
		}
	}
	for _, err := range d.Volumes(ctx) {
		refused++
		if !errors.Is(err, orchestrator.ErrDryRun) {
			t.Errorf("Volumes without reader yielded %v, want ErrDryRun", err)
		}
	}
	for _, err := range d.PublicIPs(ctx) {
		refused++
		if !errors.Is(err, orchestrator.ErrDryRun) {
			t.Errorf("PublicIPs without reader yielded %v, want ErrDryRun", err)
		}
	}
	if refused != 3 {
		t.Errorf("Events, Volumes and PublicIPs without reader yielded %d errors, want one each", refused)
	}
	n := 0
	for _, err := range d.VMs(ctx, orchestrator.ListVMs{}) {
		n++
		if !errors.Is(err, orchestrator.ErrDryRun) {
			t.Errorf("VMs without reader yielded %v, want ErrDryRun", err)
		}
	}
	if n != 1 {
		t.Errorf("VMs without reader yielded %d times, want once", n)
	}
}
