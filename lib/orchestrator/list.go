package orchestrator

import (
	"context"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"
)

// ListVMs filters VMs. CloudStack filters by account name within a domain: Account
// without DomainID means the API key's own domain (ROOT for a root admin).
type ListVMs struct {
	Account  string // account name
	DomainID string
	State    string // e.g. Running; empty means every state
}

// ListAccounts returns every account the API key can see, reading all pages.
func (c *Client) ListAccounts(ctx context.Context) ([]Account, error) {
	var out []Account
	err := c.eachAccountPage(ctx, func(p *cloudstack.ListAccountsParams) {}, func(a Account) {
		out = append(out, a)
	})
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	return out, nil
}

// eachAccountPage pages through listAccounts with the filters set by filter.
func (c *Client) eachAccountPage(ctx context.Context, filter func(*cloudstack.ListAccountsParams), fn func(Account)) error {
	seen := 0
	for page := 1; ; page++ {
		var r *cloudstack.ListAccountsResponse
		err := c.call(ctx, "listAccounts", func(cs *cloudstack.CloudStackClient) error {
			p := cs.Account.NewListAccountsParams()
			p.SetListall(true)
			p.SetPage(page)
			p.SetPagesize(c.cfg.PageSize)
			filter(p)
			var err error
			r, err = cs.Account.ListAccounts(p)
			return err
		})
		if err != nil {
			return fmt.Errorf("page %d: %w", page, err)
		}
		for _, a := range r.Accounts {
			fn(Account{ID: a.Id, Name: a.Name, DomainID: a.Domainid, State: a.State})
		}
		seen += len(r.Accounts)
		if len(r.Accounts) < c.cfg.PageSize || seen >= r.Count {
			return nil
		}
	}
}

// account reads one account by id.
func (c *Client) account(ctx context.Context, id string) (Account, error) {
	var found []Account
	err := c.eachAccountPage(ctx, func(p *cloudstack.ListAccountsParams) { p.SetId(id) }, func(a Account) {
		found = append(found, a)
	})
	if err != nil {
		return Account{}, err
	}
	for _, a := range found {
		if a.ID == id {
			return a, nil
		}
	}
	return Account{}, ErrNotFound
}

// accountIDs maps "name\x00domainid" to account id, for filling VM.AccountID (CloudStack
// reports a VM's account by name and domain only). It holds one entry per account in
// scope, never per VM.
func (c *Client) accountIDs(ctx context.Context, name, domainID string) (map[string]string, error) {
	ids := map[string]string{}
	err := c.eachAccountPage(ctx, func(p *cloudstack.ListAccountsParams) {
		if name != "" {
			p.SetName(name)
		}
		if domainID != "" {
			p.SetDomainid(domainID)
		}
	}, func(a Account) {
		ids[accountKey(a.Name, a.DomainID)] = a.ID
	})
	return ids, err
}

func accountKey(name, domainID string) string {
	return strings.ToLower(name) + "\x00" + domainID
}

// VMs streams the VMs matching f, one page at a time, so memory stays bounded by the
// page size (plus one id per account in scope, to fill AccountID).
//
// Order: CloudStack returns VMs by ascending internal database id, i.e. in creation
// order (QueryManagerImpl sorts listVirtualMachines with Filter(UserVmVO, "id",
// ascending)); that is neither id (uuid) nor name order, and this method does not re-sort
// (a merge-join must sort on its own side, or key on creation). Paging is by offset,
// so a VM expunged while the pages are read can shift a later VM onto a page already
// read and be missed for this pass; new VMs only append at the end.
//
// After an error the sequence yields that error once and stops.
func (c *Client) VMs(ctx context.Context, f ListVMs) iter.Seq2[VM, error] {
	return func(yield func(VM, error) bool) {
		ids, err := c.accountIDs(ctx, f.Account, f.DomainID)
		if err != nil {
			yield(VM{}, fmt.Errorf("list vms: resolve accounts: %w", err))
			return
		}
		seen := 0
		for page := 1; ; page++ {
			var r *cloudstack.ListVirtualMachinesResponse
			err := c.call(ctx, "listVirtualMachines", func(cs *cloudstack.CloudStackClient) error {
				p := cs.VirtualMachine.NewListVirtualMachinesParams()
				p.SetListall(true)
				p.SetPage(page)
				p.SetPagesize(c.cfg.PageSize)
				if f.Account != "" {
					p.SetAccount(f.Account)
				}
				if f.DomainID != "" {
					p.SetDomainid(f.DomainID)
				}
				if f.State != "" {
					p.SetState(f.State)
				}
				var err error
				r, err = cs.VirtualMachine.ListVirtualMachines(p)
				return err
			})
			if err != nil {
				yield(VM{}, fmt.Errorf("list vms page %d: %w", page, err))
				return
			}
			for _, v := range r.VirtualMachines {
				vm := VM{
					ID: v.Id, Name: v.Name, Account: v.Account, DomainID: v.Domainid,
					AccountID: ids[accountKey(v.Account, v.Domainid)],
					State:     v.State, Created: parseTime(v.Created),
					ServiceOffering: v.Serviceofferingname, ServiceOfferingID: v.Serviceofferingid,
					CPUUsedPercent: parsePercent(v.Cpuused),
				}
				if !yield(vm, nil) {
					return
				}
			}
			seen += len(r.VirtualMachines)
			if len(r.VirtualMachines) < c.cfg.PageSize || seen >= r.Count {
				return
			}
		}
	}
}

// VMMetrics returns the VMs of one account (by id) with their CPU utilisation, from
// listVirtualMachinesMetrics; an empty accountID means every account. The result is
// in CloudStack's order (creation order) and fully in memory: it is meant for one
// account's VMs, or for an abuse scan that needs them all anyway.
func (c *Client) VMMetrics(ctx context.Context, accountID string) ([]VM, error) {
	var (
		name, domainID string
		ids            map[string]string
	)
	if accountID != "" {
		a, err := c.account(ctx, accountID)
		if err != nil {
			return nil, fmt.Errorf("vm metrics of account %s: %w", accountID, err)
		}
		name, domainID = a.Name, a.DomainID
		ids = map[string]string{accountKey(a.Name, a.DomainID): a.ID}
	} else {
		var err error
		if ids, err = c.accountIDs(ctx, "", ""); err != nil {
			return nil, fmt.Errorf("vm metrics: resolve accounts: %w", err)
		}
	}
	var out []VM
	for page := 1; ; page++ {
		var r *cloudstack.ListVirtualMachinesMetricsResponse
		err := c.call(ctx, "listVirtualMachinesMetrics", func(cs *cloudstack.CloudStackClient) error {
			p := cs.VirtualMachine.NewListVirtualMachinesMetricsParams()
			p.SetListall(true)
			p.SetPage(page)
			p.SetPagesize(c.cfg.PageSize)
			if name != "" {
				p.SetAccount(name)
				p.SetDomainid(domainID)
			}
			var err error
			r, err = cs.VirtualMachine.ListVirtualMachinesMetrics(p)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("vm metrics of account %q page %d: %w", accountID, page, err)
		}
		for _, v := range r.VirtualMachinesMetrics {
			out = append(out, VM{
				ID: v.Id, Name: v.Name, Account: v.Account, DomainID: v.Domainid,
				AccountID: ids[accountKey(v.Account, v.Domainid)],
				State:     v.State, Created: parseTime(v.Created),
				ServiceOffering: v.Serviceofferingname, ServiceOfferingID: v.Serviceofferingid,
				CPUUsedPercent: parsePercent(v.Cpuused),
			})
		}
		if len(r.VirtualMachinesMetrics) < c.cfg.PageSize || len(out) >= r.Count {
			return out, nil
		}
	}
}

// ListingCalls returns how many API calls one listing of every VM with its metrics
// (VMMetrics with no account: every page of listAccounts, then of
// listVirtualMachinesMetrics) would take now, from the two totals (two calls, a page
// of one each). A job that needs the VMs of n accounts compares it with the 2n calls
// of reading them one account at a time: in a small cloud a few hundred accounts cost
// a handful of calls, and in a large one a listing is never chosen when it costs
// more than it saves.
func (c *Client) ListingCalls(ctx context.Context) (int, error) {
	accounts, err := c.total(ctx, "listAccounts")
	if err != nil {
		return 0, fmt.Errorf("count accounts: %w", err)
	}
	vms, err := c.total(ctx, "listVirtualMachines")
	if err != nil {
		return 0, fmt.Errorf("count vms: %w", err)
	}
	pages := func(n int) int { return max(1, (n+c.cfg.PageSize-1)/c.cfg.PageSize) }
	return pages(accounts) + pages(vms), nil
}

// total asks a list command for its count only: one page of one.
func (c *Client) total(ctx context.Context, command string) (int, error) {
	var n int
	err := c.call(ctx, command, func(cs *cloudstack.CloudStackClient) error {
		switch command {
		case "listAccounts":
			p := cs.Account.NewListAccountsParams()
			p.SetListall(true)
			p.SetPage(1)
			p.SetPagesize(1)
			r, err := cs.Account.ListAccounts(p)
			if err != nil {
				return err
			}
			n = r.Count
		case "listVirtualMachines":
			p := cs.VirtualMachine.NewListVirtualMachinesParams()
			p.SetListall(true)
			p.SetPage(1)
			p.SetPagesize(1)
			r, err := cs.VirtualMachine.ListVirtualMachines(p)
			if err != nil {
				return err
			}
			n = r.Count
		default:
			return fmt.Errorf("no total for %s", command)
		}
		return nil
	})
	return n, err
}

// vm reads one VM's current state by id.
func (c *Client) vm(ctx context.Context, id string) (VM, error) {
	var r *cloudstack.ListVirtualMachinesResponse
	err := c.call(ctx, "listVirtualMachines", func(cs *cloudstack.CloudStackClient) error {
		p := cs.VirtualMachine.NewListVirtualMachinesParams()
		p.SetListall(true)
		p.SetId(id)
		var err error
		r, err = cs.VirtualMachine.ListVirtualMachines(p)
		return err
	})
	if err != nil {
		return VM{}, err
	}
	for _, v := range r.VirtualMachines {
		if v.Id == id {
			return VM{
				ID: v.Id, Name: v.Name, Account: v.Account, DomainID: v.Domainid, State: v.State,
				Created: parseTime(v.Created), ServiceOffering: v.Serviceofferingname,
				ServiceOfferingID: v.Serviceofferingid, CPUUsedPercent: parsePercent(v.Cpuused),
			}, nil
		}
	}
	return VM{}, ErrNotFound
}

// parseTime reads CloudStack's "2021-10-04T09:24:38+0000" (or RFC 3339); the zero
// time when absent or unreadable.
func parseTime(s string) time.Time {
	for _, layout := range []string{"2006-01-02T15:04:05-0700", time.RFC3339} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}

// parsePercent reads "95.3%" (or "95,3%" from a comma-decimal locale) as 95.3; zero
// when absent or unreadable.
func parsePercent(s string) float64 {
	s = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s), "%"))
	f, err := strconv.ParseFloat(strings.ReplaceAll(s, ",", "."), 64)
	if err != nil {
		return 0
	}
	return f
}
