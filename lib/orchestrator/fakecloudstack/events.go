package fakecloudstack

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// The event log (listEvents) and the inventory of volumes and public IP addresses
// (listVolumes, listPublicIpAddresses), all from the fake's own history: every state
// change the usage server sees is also logged as CloudStack logs it, so the events,
// the inventory and the usage records tell one story.
//
//   - a VM added logs VM.CREATE at its creation time (one deployed with
//     deployVirtualMachine: Scheduled when accepted, Completed when its job ends); a VM reaching Running logs
//     VM.START, reaching Stopped from a running state VM.STOP (also when
//     disableAccount stops it), Destroyed VM.DESTROY, and an expunge VM.EXPUNGE;
//   - a volume logs VOLUME.CREATE at its creation and VOLUME.DELETE when deleted
//     (Volume.Deleted, or DeleteVolume); an IP address NET.IPASSIGN when allocated and
//     NET.IPRELEASE when released (PublicIP.Released, or ReleasePublicIP);
//   - the async VM commands also log a Scheduled event when accepted and, when their
//     job fails, a Completed event at level ERROR, as CloudStack does.
//
// Events are listed newest first (created, then the order they were logged,
// descending), filtered by startdate/enddate (both included), type, level,
// resourceid and resourcetype, and paged.

// fakeEvent is one entry of the event log.
type fakeEvent struct {
	id, typ, state, level    string
	at                       time.Time
	resourceID, resourceType string
	resourceName, accountID  string
	description, parentID    string
	seq                      int
}

// Resource types as CloudStack names them in events.
const (
	resourceVM     = "VirtualMachine"
	resourceVolume = "Volume"
	resourceIP     = "IpAddress"
)

// vmCommandEvents are the event types of the async VM commands.
var vmCommandEvents = map[string]string{
	"deployVirtualMachine":  "VM.CREATE",
	"stopVirtualMachine":    "VM.STOP",
	"startVirtualMachine":   "VM.START",
	"destroyVirtualMachine": "VM.DESTROY",
}

// stamp is the instant a change happens: the request being handled, else the clock,
// to the second as CloudStack stores it. Callers hold s.mu.
func (s *Server) stamp() time.Time {
	at := s.at
	if at.IsZero() {
		at = s.now()
	}
	return at.UTC().Truncate(time.Second)
}

// logEvent appends an event and returns it. Callers hold s.mu.
func (s *Server) logEvent(typ, state, level string, at time.Time, resourceType, resourceID, resourceName, accountID, description string) *fakeEvent {
	e := &fakeEvent{
		id: s.newID(), typ: typ, state: state, level: level, at: at.UTC().Truncate(time.Second),
		resourceID: resourceID, resourceType: resourceType, resourceName: resourceName,
		accountID: accountID, description: description, seq: len(s.events),
	}
	s.events = append(s.events, e)
	return e
}

// logVMState logs the event a VM state change means, if any. Callers hold s.mu.
func (s *Server) logVMState(v *VM, from, to string, at time.Time) {
	done := func(typ, what string) {
		s.logEvent(typ, "Completed", "INFO", at, resourceVM, v.ID, v.Name, v.AccountID,
			fmt.Sprintf("Successfully completed %s Vm. Vm Id: %s", what, v.ID))
	}
	switch {
	case to == "Running" && from != "Running":
		done("VM.START", "starting")
	case to == "Stopped" && (from == "Running" || from == "Stopping" || from == "Starting"):
		done("VM.STOP", "stopping")
	case to == "Destroyed" && from != "Destroyed":
		done("VM.DESTROY", "destroying")
	case to == "Expunged":
		if from != "Destroyed" {
			done("VM.DESTROY", "destroying")
		}
		done("VM.EXPUNGE", "expunging")
	}
}

// DeleteVolume deletes a volume now (by the server's clock): it leaves listVolumes,
// its usage ends and VOLUME.DELETE is logged.
func (s *Server) DeleteVolume(id string) error {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.usage.volumes {
		if v.ID != id {
			continue
		}
		if !v.Deleted.IsZero() {
			return fmt.Errorf("fakecloudstack: delete volume %s: already deleted", id)
		}
		v.Deleted = now.UTC().Truncate(time.Second)
		s.logEvent("VOLUME.DELETE", "Completed", "INFO", v.Deleted, resourceVolume, v.ID, v.Name, v.AccountID,
			"Successfully completed deleting Volume. Volume Id: "+v.ID)
		s.usage.version++
		return nil
	}
	return fmt.Errorf("fakecloudstack: delete volume %s: %w", id, ErrNotFound)
}

// ReleasePublicIP releases an address now (by the server's clock): it leaves
// listPublicIpAddresses, its usage ends and NET.IPRELEASE is logged.
func (s *Server) ReleasePublicIP(id string) error {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ip := range s.usage.ips {
		if ip.ID != id {
			continue
		}
		if !ip.Released.IsZero() {
			return fmt.Errorf("fakecloudstack: release ip %s: already released", id)
		}
		ip.Released = now.UTC().Truncate(time.Second)
		s.logEvent("NET.IPRELEASE", "Completed", "INFO", ip.Released, resourceIP, ip.ID, ip.Address, ip.AccountID,
			"Successfully completed releasing IP address. Ip Id: "+ip.ID)
		s.usage.version++
		return nil
	}
	return fmt.Errorf("fakecloudstack: release ip %s: %w", id, ErrNotFound)
}

// live reports whether something that began at from and ends at to (zero: not yet)
// exists at now.
func live(from, to, now time.Time) bool {
	return !from.After(now) && (to.IsZero() || to.After(now))
}

func (s *Server) listEvents(command string, p params, now time.Time) reply {
	var from, to time.Time
	if v := p["startdate"]; v != "" {
		t, ok := parseUsageParam(v, false)
		if !ok {
			return apiError(command, 431, "Unable to parse date "+v+", please use the format yyyy-MM-dd or yyyy-MM-dd HH:mm:ss")
		}
		from = t
	}
	if v := p["enddate"]; v != "" {
		t, ok := parseUsageParam(v, true)
		if !ok {
			return apiError(command, 431, "Unable to parse date "+v+", please use the format yyyy-MM-dd or yyyy-MM-dd HH:mm:ss")
		}
		to = t
	}
	var match []*fakeEvent
	for _, e := range s.events {
		if e.at.After(now) ||
			(!from.IsZero() && e.at.Before(from)) || (!to.IsZero() && e.at.After(to)) ||
			(p["type"] != "" && !strings.EqualFold(e.typ, p["type"])) ||
			(p["level"] != "" && !strings.EqualFold(e.level, p["level"])) ||
			(p["resourceid"] != "" && e.resourceID != p["resourceid"]) ||
			(p["resourcetype"] != "" && !strings.EqualFold(e.resourceType, p["resourcetype"])) {
			continue
		}
		match = append(match, e)
	}
	slices.SortFunc(match, func(a, b *fakeEvent) int {
		if c := b.at.Compare(a.at); c != 0 {
			return c
		}
		return b.seq - a.seq
	})
	return pagedList(command, p, match, "event", func(e *fakeEvent) map[string]any {
		m := map[string]any{
			"id":           e.id,
			"username":     "admin",
			"type":         e.typ,
			"level":        e.level,
			"description":  e.description,
			"resourceid":   e.resourceID,
			"resourcetype": e.resourceType,
			"resourcename": e.resourceName,
			"created":      e.at.Format(timeLayout),
			"state":        e.state,
			"parentid":     e.parentID,
			"archived":     false,
		}
		if a, ok := s.accounts[e.accountID]; ok {
			m["account"], m["domainid"], m["domain"], m["domainpath"] = a.Name, a.DomainID, a.Domain, "/"
		}
		return m
	})
}

func (s *Server) listVolumes(command string, p params, now time.Time) reply {
	var match []*Volume
	found := false
	for _, v := range s.usage.volumes {
		if p["id"] != "" && v.ID == p["id"] {
			found = true
		}
		if !live(v.Created, v.Deleted, now) ||
			(p["id"] != "" && v.ID != p["id"]) ||
			(p["virtualmachineid"] != "" && v.VMID != p["virtualmachineid"]) ||
			(p["type"] != "" && !strings.EqualFold(volumeType(v), p["type"])) {
			continue
		}
		match = append(match, v)
	}
	if p["id"] != "" && !found {
		return notFound(command, "id", p["id"])
	}
	return pagedList(command, p, match, "volume", func(v *Volume) map[string]any {
		state := "Allocated"
		m := map[string]any{
			"id":               v.ID,
			"name":             v.Name,
			"type":             volumeType(v),
			"size":             v.SizeBytes,
			"virtualsize":      v.SizeBytes,
			"created":          v.Created.Format(timeLayout),
			"diskofferingid":   v.DiskOfferingID,
			"zoneid":           v.ZoneID,
			"provisioningtype": "thin",
			"storagetype":      "shared",
			"hypervisor":       "Simulator",
			"destroyed":        false,
			"isextractable":    true,
			"displayvolume":    true,
			"tags":             []any{},
		}
		if vm, ok := s.vms[v.VMID]; ok {
			state = "Ready"
			m["virtualmachineid"], m["vmname"], m["vmdisplayname"], m["vmstate"] = vm.ID, vm.Name, vm.DisplayName, vm.State
		}
		m["state"] = state
		if a, ok := s.accounts[v.AccountID]; ok {
			m["account"], m["domainid"], m["domain"], m["domainpath"] = a.Name, a.DomainID, a.Domain, "/"
		}
		return m
	})
}

func volumeType(v *Volume) string {
	if v.Type != "" {
		return v.Type
	}
	return "DATADISK"
}

func (s *Server) listPublicIPs(command string, p params, now time.Time) reply {
	// The fake keeps no free addresses: allocatedonly=false lists the same.
	var match []*PublicIP
	for _, ip := range s.usage.ips {
		if !live(ip.Allocated, ip.Released, now) ||
			(p["id"] != "" && ip.ID != p["id"]) ||
			(p["ipaddress"] != "" && ip.Address != p["ipaddress"]) {
			continue
		}
		match = append(match, ip)
	}
	return pagedList(command, p, match, "publicipaddress", func(ip *PublicIP) map[string]any {
		m := map[string]any{
			"id":                ip.ID,
			"ipaddress":         ip.Address,
			"allocated":         ip.Allocated.Format(timeLayout),
			"zoneid":            ip.ZoneID,
			"issourcenat":       ip.SourceNAT,
			"isstaticnat":       false,
			"issystem":          false,
			"forvirtualnetwork": true,
			"isportable":        false,
			"fordisplay":        true,
			"hasrules":          false,
			"forsystemvms":      false,
			"state":             "Allocated",
			"tags":              []any{},
		}
		if a, ok := s.accounts[ip.AccountID]; ok {
			m["account"], m["domainid"], m["domain"], m["domainpath"] = a.Name, a.DomainID, a.Domain, "/"
		}
		return m
	})
}
