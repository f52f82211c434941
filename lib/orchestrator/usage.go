package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"strings"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"
)

// CloudStack's usage types (UsageTypes.java) that billing commonly maps.
const (
	UsageRunningVM        = 1
	UsageAllocatedVM      = 2
	UsageIPAddress        = 3
	UsageNetworkBytesSent = 4
	UsageNetworkBytesRecv = 5
	UsageVolume           = 6
	UsageTemplate         = 7
	UsageISO              = 8
	UsageSnapshot         = 9
	UsageVolumeSecondary  = 26
)

// ErrListChanged means the pages of one listing disagree with each other: the
// reported count moved between pages, or the pages ended before (or after) it. The
// usage server was writing while the pages were read, and offset paging may have
// skipped or repeated records: read the window again.
var ErrListChanged = errors.New("listing changed while its pages were read")

// ListUsage selects usage records. CloudStack returns the records that lie entirely
// within [Start, End] (both their start and their end date between the two, bounds
// included), so a window must be wide enough to hold whole records: a day holds the
// usage server's hourly and daily records when it aggregates in UTC.
type ListUsage struct {
	Start, End time.Time
	// PageSize is the page size of this listing; zero means the client's.
	PageSize int
}

// UsageRecord is one record of CloudStack's usage server (listUsageRecords), with the
// fields billing needs decoded: times in UTC, the quantity as CloudStack's decimal
// string (never a float), the size in bytes.
type UsageRecord struct {
	// The natural identity: a record is the same record when all of these agree.
	UsageID    string // the resource: VM, volume, IP address... (uuid)
	UsageType  int
	OfferingID string // service or disk offering; empty for types without one
	Start, End time.Time
	AccountID  string // CloudStack account uuid

	Account          string // account name
	DomainID         string
	ProjectID        string
	ZoneID           string
	VirtualMachineID string
	TemplateID       string
	Name             string
	Description      string
	Type             string // resource type, e.g. the hypervisor
	// RawUsage is "rawusage" exactly as CloudStack wrote it: hours for most types,
	// bytes for network types.
	RawUsage    string
	Size        int64 // bytes (volumes, snapshots, templates)
	VirtualSize int64
	CPUNumber   int64
	CPUSpeed    int64
	Memory      int64
	// Invalid says why the record could not be decoded (an unreadable date); such a
	// record is yielded so the caller can count and report it, never silently lost.
	Invalid string
}

// UsagePage is one page of a usage listing.
type UsagePage struct {
	Number int // 1-based
	// Count is the total CloudStack reported for the listing.
	Count   int
	Records []UsageRecord
}

// usageRequestLayout is how listUsageRecords takes a date and time ("yyyy-MM-dd
// HH:mm:ss"); cronkit sends UTC and expects a usage server that aggregates in UTC
// (usage.timezone GMT, CloudStack's default).
const usageRequestLayout = "2006-01-02 15:04:05"

// UsagePages reads listUsageRecords for f, one page at a time, and checks the pages
// against the count CloudStack reports: every page must report the same count, and
// the records must add up to it. On a mismatch it yields ErrListChanged (after the
// pages already yielded), so the caller reads the window again; after any error the
// sequence stops. Memory is one page.
func (c *Client) UsagePages(ctx context.Context, f ListUsage) iter.Seq2[UsagePage, error] {
	return func(yield func(UsagePage, error) bool) {
		size := f.PageSize
		if size <= 0 {
			size = c.cfg.PageSize
		}
		start, end := f.Start.UTC().Format(usageRequestLayout), f.End.UTC().Format(usageRequestLayout)
		what := fmt.Sprintf("list usage %s .. %s", start, end)
		count, seen := -1, 0
		for page := 1; ; page++ {
			var r *cloudstack.ListUsageRecordsResponse
			err := c.call(ctx, "listUsageRecords", func(cs *cloudstack.CloudStackClient) error {
				p := cs.Usage.NewListUsageRecordsParams(end, start)
				p.SetPage(page)
				p.SetPagesize(size)
				var err error
				r, err = cs.Usage.ListUsageRecords(p)
				return err
			})
			if err != nil {
				yield(UsagePage{}, fmt.Errorf("%s page %d: %w", what, page, err))
				return
			}
			if count >= 0 && r.Count != count {
				yield(UsagePage{}, fmt.Errorf("%s page %d: count %d, page 1 said %d: %w", what, page, r.Count, count, ErrListChanged))
				return
			}
			if count < 0 {
				count = r.Count
			}
			seen += len(r.UsageRecords)
			if seen > count {
				yield(UsagePage{}, fmt.Errorf("%s page %d: %d records, more than the count %d: %w", what, page, seen, count, ErrListChanged))
				return
			}
			if len(r.UsageRecords) > 0 {
				pg := UsagePage{Number: page, Count: count, Records: make([]UsageRecord, 0, len(r.UsageRecords))}
				for _, u := range r.UsageRecords {
					pg.Records = append(pg.Records, decodeUsage(u))
				}
				if !yield(pg, nil) {
					return
				}
			}
			if seen == count {
				return
			}
			if len(r.UsageRecords) < size {
				yield(UsagePage{}, fmt.Errorf("%s: pages ended at %d records, the count is %d: %w", what, seen, count, ErrListChanged))
				return
			}
		}
	}
}

func decodeUsage(u *cloudstack.UsageRecord) UsageRecord {
	r := UsageRecord{
		UsageID: u.Usageid, UsageType: u.Usagetype, OfferingID: u.Offeringid, AccountID: u.Accountid,
		Account: u.Account, DomainID: u.Domainid, ProjectID: u.Projectid, ZoneID: u.Zoneid,
		VirtualMachineID: u.Virtualmachineid, TemplateID: u.Templateid, Name: u.Name,
		Description: u.Description, Type: u.Type, RawUsage: strings.TrimSpace(u.Rawusage),
		Size: u.Size, VirtualSize: u.Virtualsize, CPUNumber: u.Cpunumber, CPUSpeed: u.Cpuspeed, Memory: u.Memory,
	}
	var err error
	if r.Start, err = ParseUsageDate(u.Startdate); err != nil {
		r.Invalid = "startdate: " + err.Error()
	} else if r.End, err = ParseUsageDate(u.Enddate); err != nil {
		r.Invalid = "enddate: " + err.Error()
	}
	return r
}

// ParseUsageDate reads a usage record's date in either of CloudStack's spellings:
// "2023-07-20T19:00:00+0000", and older versions' "2025-05-11'T'00:59:59+00:00" with
// the T quoted (a SimpleDateFormat pattern leaking into the output). RFC 3339 is
// accepted too. The result is UTC.
func ParseUsageDate(s string) (time.Time, error) {
	v := strings.Replace(strings.TrimSpace(s), "'T'", "T", 1)
	for _, layout := range []string{"2006-01-02T15:04:05-0700", "2006-01-02T15:04:05Z07:00"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("unreadable date %q", s)
}

// usageServerMetrics is listUsageServerMetrics' answer once cloudstack-go has
// unwrapped the command's response: CloudStack (MetricsServiceImpl) answers a single
// object named "usageMetrics"; a list-shaped answer ({"count":1,
// "usageservermetric":[...]}, the shape cloudstack-go's own type expects) arrives
// already unwrapped to its first element, i.e. the fields themselves.
type usageServerMetrics struct {
	LastSuccessfulJob string `json:"lastsuccessfuljob"`
	State             string `json:"state"`
	UsageMetrics      *struct {
		LastSuccessfulJob string `json:"lastsuccessfuljob"`
		State             string `json:"state"`
	} `json:"usageMetrics"`
}

// UsageCoverage returns the end of the latest period the usage server has finished:
// listUsageServerMetrics' lastsuccessfuljob (the end_millis of its last successful
// job). The zero time means the usage server reports no successful job yet. An
// error means the server could not say (a CloudStack before 4.18 has no such
// command): the caller falls back to the records it has seen.
//
// cloudstack-go's UsageService.ListUsageServerMetrics decodes a shape CloudStack does
// not send (it always returns an empty answer), so this goes through its
// CustomService with the same signing and transport.
func (c *Client) UsageCoverage(ctx context.Context) (time.Time, error) {
	var m usageServerMetrics
	err := c.call(ctx, "listUsageServerMetrics", func(cs *cloudstack.CloudStackClient) error {
		custom, ok := cs.Custom.(*cloudstack.CustomService)
		if !ok {
			return errors.New("cloudstack-go has no CustomService")
		}
		var raw json.RawMessage
		if err := custom.CustomRequest("listUsageServerMetrics", &cloudstack.CustomServiceParams{}, &raw); err != nil {
			return err
		}
		return json.Unmarshal(raw, &m)
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("usage server metrics: %w", err)
	}
	last := m.LastSuccessfulJob
	if m.UsageMetrics != nil && m.UsageMetrics.LastSuccessfulJob != "" {
		last = m.UsageMetrics.LastSuccessfulJob
	}
	if last == "" {
		return time.Time{}, errors.New("usage server metrics: no lastsuccessfuljob in the answer")
	}
	t, err := ParseUsageDate(last)
	if err != nil {
		return time.Time{}, fmt.Errorf("usage server metrics: lastsuccessfuljob: %w", err)
	}
	if t.Unix() <= 0 {
		return time.Time{}, nil // new Date(0): no successful job yet
	}
	return t, nil
}
