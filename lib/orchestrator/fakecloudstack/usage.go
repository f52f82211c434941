package fakecloudstack

import (
	"fmt"
	"math/big"
	"strings"
	"time"
)

// The usage server: listUsageRecords answers from the fake's own state. Every VM's
// running and allocated time, every volume and every public IP address becomes one
// record per hour (usage.stats.job.aggregation.range = 60, usage.timezone = GMT),
// for the hours the usage server has processed. Records are listed in CloudStack's
// order (the usage table's id: period by period, resources in the order they were
// added), paged, and filtered as CloudStack filters them: a record is listed when
// both its start and its end date lie within [startdate, enddate].
//
// Tests can make the usage server misbehave as real ones do: list an hour's records
// twice (DuplicateUsageHour, the duplicates a stuck usage job leaves), write a
// resource's records late (DelayUsage), write dates the way older versions do
// (SetUsageQuotedT), or add any record (AddUsageRecord).

// Usage types the fake writes (CloudStack's UsageTypes).
const (
	usageRunningVM   = 1
	usageAllocatedVM = 2
	usageIPAddress   = 3
	usageVolume      = 6
)

// oldTimeLayout is how CloudStack versions before 4.18.1 wrote usage dates: the
// SimpleDateFormat pattern's quoted T leaked into the output.
const oldTimeLayout = "2006-01-02'T'15:04:05-07:00"

// Volume is a data volume as the fake stores it, for volume usage (type 6).
type Volume struct {
	ID        string `json:"id"`
	Name      string `json:"name,omitempty"`
	AccountID string `json:"accountid"`
	VMID      string `json:"virtualmachineid,omitempty"`
	// Type is ROOT or DATADISK (the default).
	Type string `json:"type,omitempty"`
	// SizeBytes is the volume's size; usage reports it as "size".
	SizeBytes      int64     `json:"size"`
	DiskOfferingID string    `json:"diskofferingid,omitempty"`
	ZoneID         string    `json:"zoneid,omitempty"`
	Created        time.Time `json:"created"`
	// Deleted, when set, ends the volume's usage.
	Deleted time.Time `json:"deleted,omitzero"`
}

// PublicIP is an allocated public IP address, for IP usage (type 3).
type PublicIP struct {
	ID        string    `json:"id"`
	Address   string    `json:"ipaddress"`
	AccountID string    `json:"accountid"`
	ZoneID    string    `json:"zoneid,omitempty"`
	SourceNAT bool      `json:"issourcenat,omitempty"`
	Allocated time.Time `json:"allocated"`
	Released  time.Time `json:"released,omitzero"`
}

// UsageRecord is a record added by hand with AddUsageRecord, in the terms of
// listUsageRecords: a daily record, a correction, an unknown usage type...
type UsageRecord struct {
	AccountID  string
	UsageID    string
	UsageType  int
	OfferingID string
	Start, End time.Time
	// RawUsage is written as given, e.g. "24" or "0.5".
	RawUsage    string
	Size        int64
	VMID        string
	Description string
}

// stateChange is a VM entering a state at an instant.
type stateChange struct {
	at    time.Time
	state string
}

// vmUsage is what the usage server remembers of a VM: it outlives the VM's expunge.
type vmUsage struct {
	id, name, accountID, offeringID, zoneID string
	cpus, speed, memory                     int
	changes                                 []stateChange
}

// usageServer is the fake's usage server state. Callers hold s.mu.
type usageServer struct {
	vms        []*vmUsage
	vmIndex    map[string]*vmUsage
	volumes    []*Volume
	ips        []*PublicIP
	extra      []UsageRecord
	processed  time.Time // zero: every hour that has ended
	quotedT    bool
	duplicated map[time.Time]bool
	delayed    map[string]time.Time
	version    int
	cache      *usageListing
}

func newUsageServer() usageServer {
	return usageServer{vmIndex: map[string]*vmUsage{}, duplicated: map[time.Time]bool{}, delayed: map[string]time.Time{}}
}

// usageRef is one listed record: an hour and a resource (or an added record).
type usageRef struct {
	hour  time.Time
	kind  int8 // usage type; 0 for an added record
	index int32
}

// usageListing is the records of one window, kept while nothing changes so that
// paging through a large window does not rebuild it for every page.
type usageListing struct {
	from, to, processed, now time.Time
	version                  int
	refs                     []usageRef
}

// trackVM starts the usage history of a VM just added. Callers hold s.mu.
func (s *Server) trackVM(v *VM) {
	u := &vmUsage{id: v.ID, name: v.Name, accountID: v.AccountID, offeringID: v.ServiceOfferingID, zoneID: v.ZoneID,
		cpus: v.CPUNumber, speed: v.CPUSpeed, memory: v.Memory,
		changes: []stateChange{{at: v.Created, state: v.State}}}
	s.usage.vms = append(s.usage.vms, u)
	s.usage.vmIndex[v.ID] = u
	s.usage.version++
}

// setState changes a VM's state, stamps the change for the usage server and logs
// the event it means.
// Callers hold s.mu.
func (s *Server) setState(v *VM, state string) {
	from := v.State
	v.State = state
	at := s.stamp()
	if u := s.usage.vmIndex[v.ID]; u != nil {
		u.changes = append(u.changes, stateChange{at: at, state: state})
		s.usage.version++
	}
	s.logVMState(v, from, state, at)
}

// AddVolume adds a volume owned by an existing account; its usage starts at Created
// (default: the server's clock).
func (s *Server) AddVolume(v Volume) (Volume, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.accounts[v.AccountID]; !ok {
		return Volume{}, fmt.Errorf("fakecloudstack: add volume %q: account %q: %w", v.ID, v.AccountID, ErrNotFound)
	}
	if v.ID == "" {
		v.ID = s.newID()
	}
	if v.Name == "" {
		v.Name = "DATA-" + v.ID
	}
	if v.SizeBytes <= 0 {
		v.SizeBytes = 20 << 30
	}
	if v.DiskOfferingID == "" {
		v.DiskOfferingID = "0f1c5e1a-0000-4000-8000-0000000d15c0"
	}
	if v.Created.IsZero() {
		v.Created = now
	}
	v.Created = v.Created.UTC().Truncate(time.Second)
	if !v.Deleted.IsZero() {
		v.Deleted = v.Deleted.UTC().Truncate(time.Second)
	}
	stored := v
	s.usage.volumes = append(s.usage.volumes, &stored)
	s.usage.version++
	s.logEvent("VOLUME.CREATE", "Completed", "INFO", v.Created, resourceVolume, v.ID, v.Name, v.AccountID,
		"Successfully completed creating Volume. Volume Id: "+v.ID)
	if !v.Deleted.IsZero() {
		s.logEvent("VOLUME.DELETE", "Completed", "INFO", v.Deleted, resourceVolume, v.ID, v.Name, v.AccountID,
			"Successfully completed deleting Volume. Volume Id: "+v.ID)
	}
	return v, nil
}

// AddPublicIP allocates a public IP address to an existing account.
func (s *Server) AddPublicIP(ip PublicIP) (PublicIP, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.accounts[ip.AccountID]; !ok {
		return PublicIP{}, fmt.Errorf("fakecloudstack: add ip %q: account %q: %w", ip.ID, ip.AccountID, ErrNotFound)
	}
	if ip.ID == "" {
		ip.ID = s.newID()
	}
	if ip.Address == "" {
		ip.Address = fmt.Sprintf("198.51.100.%d", len(s.usage.ips)%250+1)
	}
	if ip.Allocated.IsZero() {
		ip.Allocated = now
	}
	ip.Allocated = ip.Allocated.UTC().Truncate(time.Second)
	if !ip.Released.IsZero() {
		ip.Released = ip.Released.UTC().Truncate(time.Second)
	}
	stored := ip
	s.usage.ips = append(s.usage.ips, &stored)
	s.usage.version++
	s.logEvent("NET.IPASSIGN", "Completed", "INFO", ip.Allocated, resourceIP, ip.ID, ip.Address, ip.AccountID,
		"Successfully completed assigning IP address. Ip Id: "+ip.ID)
	if !ip.Released.IsZero() {
		s.logEvent("NET.IPRELEASE", "Completed", "INFO", ip.Released, resourceIP, ip.ID, ip.Address, ip.AccountID,
			"Successfully completed releasing IP address. Ip Id: "+ip.ID)
	}
	return ip, nil
}

// AddUsageRecord adds a record as the usage server would list it after the records
// of the hours it computes. A record with the same identity (usage id, type,
// offering, start, end, account) as an earlier added one replaces it: a corrected
// record.
func (s *Server) AddUsageRecord(r UsageRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.accounts[r.AccountID]; !ok {
		return fmt.Errorf("fakecloudstack: add usage record: account %q: %w", r.AccountID, ErrNotFound)
	}
	r.Start, r.End = r.Start.UTC(), r.End.UTC()
	for i, e := range s.usage.extra {
		if e.AccountID == r.AccountID && e.UsageID == r.UsageID && e.UsageType == r.UsageType &&
			e.OfferingID == r.OfferingID && e.Start.Equal(r.Start) && e.End.Equal(r.End) {
			s.usage.extra[i] = r
			s.usage.version++
			return nil
		}
	}
	s.usage.extra = append(s.usage.extra, r)
	s.usage.version++
	return nil
}

// SetUsageProcessed says how far the usage server has got: records exist for the
// hours that end at or before t, and listUsageServerMetrics reports t as its last
// successful job. The zero time (the default) means every hour that has ended by the
// server's clock.
func (s *Server) SetUsageProcessed(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.usage.processed = t.UTC()
	s.usage.version++
}

// SetUsageQuotedT makes dates come out as older CloudStack versions wrote them:
// "2025-05-11'T'00:59:59+00:00".
func (s *Server) SetUsageQuotedT(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.usage.quotedT = on
	s.usage.version++
}

// DuplicateUsageHour lists every record of the hour starting at h twice, the second
// copies after everything else, as a usage job re-run after getting stuck does.
func (s *Server) DuplicateUsageHour(h time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.usage.duplicated[h.UTC().Truncate(time.Hour)] = true
	s.usage.version++
}

// DelayUsage withholds the records of one resource (VM, volume or IP id) until the
// server's clock reaches until: they then appear late, after later hours of other
// resources were already listed.
func (s *Server) DelayUsage(resourceID string, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.usage.delayed[resourceID] = until.UTC()
	s.usage.version++
}

// processedThrough is where the usage server has got at now. Callers hold s.mu.
func (s *Server) processedThrough(now time.Time) time.Time {
	if !s.usage.processed.IsZero() {
		return s.usage.processed
	}
	return now.UTC().Truncate(time.Hour)
}

// parseUsageParam reads listUsageRecords' dates: "yyyy-MM-dd" or "yyyy-MM-dd
// HH:mm:ss"; a bare end date means the end of that day.
func parseUsageParam(v string, end bool) (time.Time, bool) {
	if t, err := time.Parse("2006-01-02 15:04:05", v); err == nil {
		return t, true
	}
	if t, err := time.Parse("2006-01-02", v); err == nil {
		if end {
			t = t.Add(24*time.Hour - time.Second)
		}
		return t, true
	}
	return time.Time{}, false
}

func (s *Server) listUsageRecords(command string, p params, now time.Time) reply {
	for _, name := range []string{"startdate", "enddate"} {
		if p[name] == "" {
			return missingParam(command, name)
		}
	}
	from, ok1 := parseUsageParam(p["startdate"], false)
	to, ok2 := parseUsageParam(p["enddate"], true)
	if !ok1 || !ok2 {
		return apiError(command, 431, "Unable to parse date, please use the format yyyy-MM-dd or yyyy-MM-dd HH:mm:ss")
	}
	l := s.usageListing(from, to, now)
	lo, hi, bad := page(command, p, len(l.refs))
	if bad != nil {
		return *bad
	}
	inner := map[string]any{"count": len(l.refs)}
	if hi > lo {
		list := make([]map[string]any, 0, hi-lo)
		for _, ref := range l.refs[lo:hi] {
			list = append(list, s.renderUsage(ref))
		}
		inner["usagerecord"] = list
	}
	return ok(command, inner)
}

// usageListing returns the records of [from, to] at now, from the cache while
// nothing changed. Callers hold s.mu.
func (s *Server) usageListing(from, to, now time.Time) *usageListing {
	processed := s.processedThrough(now)
	// Only a delay that expires inside the cached span can change the listing with
	// the clock; keep it simple and key the cache on now when delays exist.
	keyNow := time.Time{}
	if len(s.usage.delayed) > 0 {
		keyNow = now
	}
	if c := s.usage.cache; c != nil && c.from.Equal(from) && c.to.Equal(to) && c.processed.Equal(processed) &&
		c.now.Equal(keyNow) && c.version == s.usage.version {
		return c
	}
	l := &usageListing{from: from, to: to, processed: processed, now: keyNow, version: s.usage.version}
	visible := func(id string) bool {
		until, ok := s.usage.delayed[id]
		return !ok || !now.Before(until)
	}
	var dups []usageRef
	first := from.Truncate(time.Hour)
	if first.Before(from) {
		first = first.Add(time.Hour)
	}
	for h := first; !h.Add(time.Hour-time.Second).After(to) && !h.Add(time.Hour).After(processed); h = h.Add(time.Hour) {
		start := len(l.refs)
		for i, u := range s.usage.vms {
			if !visible(u.id) {
				continue
			}
			run, alloc := u.seconds(h)
			if run > 0 {
				l.refs = append(l.refs, usageRef{hour: h, kind: usageRunningVM, index: int32(i)})
			}
			if alloc > 0 {
				l.refs = append(l.refs, usageRef{hour: h, kind: usageAllocatedVM, index: int32(i)})
			}
		}
		for i, v := range s.usage.volumes {
			if visible(v.ID) && overlap(v.Created, v.Deleted, h) > 0 {
				l.refs = append(l.refs, usageRef{hour: h, kind: usageVolume, index: int32(i)})
			}
		}
		for i, ip := range s.usage.ips {
			if visible(ip.ID) && overlap(ip.Allocated, ip.Released, h) > 0 {
				l.refs = append(l.refs, usageRef{hour: h, kind: usageIPAddress, index: int32(i)})
			}
		}
		if s.usage.duplicated[h] {
			dups = append(dups, l.refs[start:]...)
		}
	}
	for i, r := range s.usage.extra {
		if !r.Start.Before(from) && !r.End.After(to) && !r.End.After(processed) && visible(r.UsageID) {
			l.refs = append(l.refs, usageRef{kind: 0, index: int32(i)})
		}
	}
	l.refs = append(l.refs, dups...)
	s.usage.cache = l
	return l
}

// seconds returns how long, within the hour starting at h, the VM was running and
// allocated (created and not destroyed).
func (u *vmUsage) seconds(h time.Time) (running, allocated int64) {
	end := h.Add(time.Hour)
	for i, c := range u.changes {
		from := c.at
		to := end
		if i+1 < len(u.changes) {
			to = u.changes[i+1].at
		}
		if from.Before(h) {
			from = h
		}
		if to.After(end) {
			to = end
		}
		if !to.After(from) {
			continue
		}
		d := int64(to.Sub(from) / time.Second)
		switch c.state {
		case "Running", "Stopping":
			running += d
			allocated += d
		case "Starting", "Stopped":
			allocated += d
		}
	}
	return running, allocated
}

// overlap returns the seconds of the hour starting at h within [from, to); a zero to
// means still going.
func overlap(from, to, h time.Time) int64 {
	end := h.Add(time.Hour)
	if from.Before(h) {
		from = h
	}
	if !to.IsZero() && to.Before(end) {
		end = to
	}
	if !end.After(from) {
		return 0
	}
	return int64(end.Sub(from) / time.Second)
}

// hoursOf writes seconds as hours the way CloudStack does (DecimalFormat
// "#.######"): 3600 -> "1", 1800 -> "0.5", 1 -> "0.000278".
func hoursOf(seconds int64) string {
	return strings.TrimRight(strings.TrimRight(new(big.Rat).SetFrac64(seconds, 3600).FloatString(6), "0"), ".")
}

func (s *Server) usageDate(t time.Time) string {
	if s.usage.quotedT {
		return t.UTC().Format(oldTimeLayout)
	}
	return t.UTC().Format(timeLayout)
}

// renderUsage writes a record with the field names of CloudStack's
// UsageRecordResponse. Callers hold s.mu.
func (s *Server) renderUsage(ref usageRef) map[string]any {
	var (
		acctID, usageID, offering, vmID, name, desc, raw string
		usageType                                        int
		size                                             int64
		start, end                                       time.Time
		extra                                            = map[string]any{}
	)
	if ref.kind == 0 {
		r := s.usage.extra[ref.index]
		acctID, usageID, offering, vmID, desc, raw = r.AccountID, r.UsageID, r.OfferingID, r.VMID, r.Description, r.RawUsage
		usageType, size, start, end = r.UsageType, r.Size, r.Start, r.End
		if desc == "" {
			desc = fmt.Sprintf("usage type %d of %s", usageType, usageID)
		}
	} else {
		start, end = ref.hour, ref.hour.Add(time.Hour-time.Second)
		usageType = int(ref.kind)
		switch ref.kind {
		case usageRunningVM, usageAllocatedVM:
			u := s.usage.vms[ref.index]
			run, alloc := u.seconds(ref.hour)
			secs, what := run, "running time"
			if ref.kind == usageAllocatedVM {
				secs, what = alloc, "allocated time"
			}
			acctID, usageID, offering, vmID, name, raw = u.accountID, u.id, u.offeringID, u.id, u.name, hoursOf(secs)
			desc = fmt.Sprintf("%s %s (ServiceOffering: %s) (Template: %s)", u.name, what, u.offeringID, simTemplateID)
			extra["cpunumber"], extra["cpuspeed"], extra["memory"] = u.cpus, u.speed, u.memory
			extra["templateid"], extra["type"], extra["zoneid"] = simTemplateID, "Simulator", u.zoneID
		case usageVolume:
			v := s.usage.volumes[ref.index]
			acctID, usageID, offering, vmID, name = v.AccountID, v.ID, v.DiskOfferingID, v.VMID, v.Name
			raw, size = hoursOf(overlap(v.Created, v.Deleted, ref.hour)), v.SizeBytes
			desc = fmt.Sprintf("Volume Id: %s usage time (DiskOffering: %s)", v.ID, v.DiskOfferingID)
			extra["zoneid"] = v.ZoneID
		case usageIPAddress:
			ip := s.usage.ips[ref.index]
			acctID, usageID = ip.AccountID, ip.ID
			raw = hoursOf(overlap(ip.Allocated, ip.Released, ref.hour))
			desc = fmt.Sprintf("IPAddress: %s", ip.Address)
			extra["issourcenat"], extra["issystem"], extra["zoneid"] = ip.SourceNAT, false, ip.ZoneID
		}
	}
	m := map[string]any{
		"accountid":   acctID,
		"usageid":     usageID,
		"usagetype":   usageType,
		"description": desc,
		"rawusage":    raw,
		"usage":       raw + " Hrs",
		"startdate":   s.usageDate(start),
		"enddate":     s.usageDate(end),
		"tags":        []any{},
	}
	if a, ok := s.accounts[acctID]; ok {
		m["account"], m["domainid"], m["domain"], m["domainpath"] = a.Name, a.DomainID, a.Domain, "/"
	}
	if offering != "" {
		m["offeringid"] = offering
	}
	if vmID != "" {
		m["virtualmachineid"] = vmID
	}
	if name != "" {
		m["name"] = name
	}
	if size != 0 {
		m["size"] = size
	}
	for k, v := range extra {
		if v != "" {
			m[k] = v
		}
	}
	return m
}

// simTemplateID is the template every fake VM runs.
const simTemplateID = "0f1c5e1a-0000-4000-8000-0000000071e0"

// listUsageServerMetrics answers as CloudStack's MetricsServiceImpl does: one object
// named usageMetrics, whose lastsuccessfuljob is the end of the last period
// processed.
func (s *Server) listUsageServerMetrics(command string, now time.Time) reply {
	return ok(command, map[string]any{"usageMetrics": map[string]any{
		"collectiontime":    now.UTC().Format(timeLayout),
		"hostname":          "usage.fakecloudstack",
		"lastheartbeat":     now.UTC().Format(timeLayout),
		"lastsuccessfuljob": s.processedThrough(now).Format(timeLayout),
		"state":             "Up",
	}})
}
