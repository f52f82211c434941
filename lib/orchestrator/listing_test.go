package orchestrator_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/orchestrator/fakecloudstack"
)

// ListingCalls predicts, from two one-row pages, exactly the calls VMMetrics("")
// then makes: a job weighs it against reading accounts one by one.
func TestListingCallsPredictsTheListing(t *testing.T) {
	e := newEnv(t)
	c := e.client(func(cfg *orchestrator.Config) { cfg.PageSize = 2 })
	ctx := context.Background()
	calls := func() int {
		return e.fake.Calls("listAccounts") + e.fake.Calls("listVirtualMachines") + e.fake.Calls("listVirtualMachinesMetrics")
	}

	n, err := c.ListingCalls(ctx)
	if err != nil || n != 2 {
		t.Fatalf("empty cloud: %d %v, want one page of each", n, err)
	}
	if got := calls(); got != 2 {
		t.Fatalf("asking cost %d calls, want 2", got)
	}

	for i := 0; i < 3; i++ {
		a := e.account(fakecloudstack.Account{ID: fmt.Sprintf("acct-%d", i), Name: fmt.Sprintf("a%d", i)})
		for v := 0; v < 2; v++ {
			e.vm(fakecloudstack.VM{ID: fmt.Sprintf("vm-%d-%d", i, v), AccountID: a.ID})
		}
	}
	n, err = c.ListingCalls(ctx)
	if err != nil || n != 2+3 { // 3 accounts in pages of 2, 6 VMs in pages of 2
		t.Fatalf("ListingCalls = %d %v, want 5", n, err)
	}
	before := calls()
	all, err := c.VMMetrics(ctx, "")
	if err != nil || len(all) != 6 {
		t.Fatalf("VMMetrics(all): %d VMs, %v", len(all), err)
	}
	if got := calls() - before; got != n {
		t.Fatalf("the listing took %d calls, ListingCalls said %d", got, n)
	}
}
