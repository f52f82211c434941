package orchestrator

import (
	"context"
	"fmt"
	"iter"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"
)

// Volume is a CloudStack volume (root disk or data disk) as reconcile sees it: what
// the usage server meters as VOLUME usage from its creation to its deletion.
type Volume struct {
	ID   string
	Name string
	// Account is the owning account's name; AccountID its id, resolved through
	// listAccounts (listVolumes reports only the name and domain).
	Account   string
	AccountID string
	DomainID  string
	Type      string // ROOT or DATADISK
	// State is CloudStack's: Allocated, Ready, Destroy, Expunging, Expunged, Migrating...
	State          string
	VMID           string // the VM it is attached to, if any
	SizeBytes      int64
	DiskOfferingID string
	ZoneID         string
	Created        time.Time
	// Destroyed is set for a volume deleted but still recoverable.
	Destroyed bool
}

// PublicIP is a public IP address allocated to an account: what the usage server
// meters as IP_ADDRESS usage from its assignment to its release.
type PublicIP struct {
	ID      string
	Address string
	// Account is the owning account's name; AccountID its id, resolved through
	// listAccounts.
	Account   string
	AccountID string
	DomainID  string
	// State is CloudStack's: Allocating, Allocated, Releasing, Reserved, Free.
	State string
	// Allocated is when the account acquired the address.
	Allocated time.Time
	SourceNAT bool
	System    bool
	VMID      string
	ZoneID    string
}

// Volumes streams every volume the API key can see (listVolumes, listall), one page
// at a time; memory is a page plus one id per account.
//
// Order: CloudStack's, which is not id order; a merge-join sorts on its own side.
// Paging is by offset, so a volume deleted while the pages are read can shift a later
// one onto a page already read and be missed for this pass. After an error the
// sequence yields it once and stops.
func (c *Client) Volumes(ctx context.Context) iter.Seq2[Volume, error] {
	return func(yield func(Volume, error) bool) {
		ids, err := c.accountIDs(ctx, "", "")
		if err != nil {
			yield(Volume{}, fmt.Errorf("list volumes: resolve accounts: %w", err))
			return
		}
		seen := 0
		for page := 1; ; page++ {
			var r *cloudstack.ListVolumesResponse
			err := c.call(ctx, "listVolumes", func(cs *cloudstack.CloudStackClient) error {
				p := cs.Volume.NewListVolumesParams()
				p.SetListall(true)
				p.SetPage(page)
				p.SetPagesize(c.cfg.PageSize)
				var err error
				r, err = cs.Volume.ListVolumes(p)
				return err
			})
			if err != nil {
				yield(Volume{}, fmt.Errorf("list volumes page %d: %w", page, err))
				return
			}
			for _, v := range r.Volumes {
				vol := Volume{
					ID: v.Id, Name: v.Name, Account: v.Account, DomainID: v.Domainid,
					AccountID: ids[accountKey(v.Account, v.Domainid)],
					Type:      v.Type, State: v.State, VMID: v.Virtualmachineid, SizeBytes: v.Size,
					DiskOfferingID: v.Diskofferingid, ZoneID: v.Zoneid, Created: parseTime(v.Created),
					Destroyed: v.Destroyed,
				}
				if !yield(vol, nil) {
					return
				}
			}
			seen += len(r.Volumes)
			if len(r.Volumes) < c.cfg.PageSize || seen >= r.Count {
				return
			}
		}
	}
}

// PublicIPs streams every allocated public IP address the API key can see
// (listPublicIpAddresses, listall, allocatedonly), one page at a time; memory is a
// page plus one id per account. Order and paging are as for Volumes.
func (c *Client) PublicIPs(ctx context.Context) iter.Seq2[PublicIP, error] {
	return func(yield func(PublicIP, error) bool) {
		ids, err := c.accountIDs(ctx, "", "")
		if err != nil {
			yield(PublicIP{}, fmt.Errorf("list public ips: resolve accounts: %w", err))
			return
		}
		seen := 0
		for page := 1; ; page++ {
			var r *cloudstack.ListPublicIpAddressesResponse
			err := c.call(ctx, "listPublicIpAddresses", func(cs *cloudstack.CloudStackClient) error {
				p := cs.Address.NewListPublicIpAddressesParams()
				p.SetListall(true)
				p.SetAllocatedonly(true)
				p.SetPage(page)
				p.SetPagesize(c.cfg.PageSize)
				var err error
				r, err = cs.Address.ListPublicIpAddresses(p)
				return err
			})
			if err != nil {
				yield(PublicIP{}, fmt.Errorf("list public ips page %d: %w", page, err))
				return
			}
			for _, a := range r.PublicIpAddresses {
				ip := PublicIP{
					ID: a.Id, Address: a.Ipaddress, Account: a.Account, DomainID: a.Domainid,
					AccountID: ids[accountKey(a.Account, a.Domainid)],
					State:     a.State, Allocated: parseTime(a.Allocated), SourceNAT: a.Issourcenat,
					System: a.Issystem, VMID: a.Virtualmachineid, ZoneID: a.Zoneid,
				}
				if !yield(ip, nil) {
					return
				}
			}
			seen += len(r.PublicIpAddresses)
			if len(r.PublicIpAddresses) < c.cfg.PageSize || seen >= r.Count {
				return
			}
		}
	}
}
