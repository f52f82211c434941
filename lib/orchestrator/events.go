package orchestrator

import (
	"context"
	"fmt"
	"iter"
	"strings"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"
)

// The event types (CloudStack's EventTypes) that say when a VM, a volume or a public
// IP address began or stopped costing money: reconcile rebuilds yesterday from them,
// since the inventory only knows today.
const (
	EventVMCreate     = "VM.CREATE"
	EventVMStart      = "VM.START"
	EventVMStop       = "VM.STOP"
	EventVMDestroy    = "VM.DESTROY"
	EventVMExpunge    = "VM.EXPUNGE"
	EventVolumeCreate = "VOLUME.CREATE"
	EventVolumeDelete = "VOLUME.DELETE"
	EventIPAssign     = "NET.IPASSIGN"
	EventIPRelease    = "NET.IPRELEASE"
)

// UsageEventTypes are the event types above, in a fixed order: what reconcile lists.
func UsageEventTypes() []string {
	return []string{EventVMCreate, EventVMStart, EventVMStop, EventVMDestroy, EventVMExpunge,
		EventVolumeCreate, EventVolumeDelete, EventIPAssign, EventIPRelease}
}

// Event states and levels. An action is logged as Scheduled (async commands), Started
// and Completed; only a Completed event of a level other than ERROR says it happened.
const (
	EventStateCompleted = "Completed"
	EventLevelError     = "ERROR"
)

// ListEvents selects events of CloudStack's event log (listEvents): those created
// within [Start, End], both included, of each of Types (one listing per type, so the
// log's other events are never transferred; no type means every event).
//
// CloudStack reads the dates in the management server's time zone: cronkit sends UTC
// and expects a management server running in UTC, as it expects of the usage server.
// An End in the past makes the listing stable: events are only ever appended with the
// current time.
type ListEvents struct {
	Start, End time.Time
	Types      []string
	// PageSize is the page size of this listing; zero means the client's.
	PageSize int
}

// Event is one entry of the event log. ResourceID (the uuid of the VM, volume or IP
// address) exists since CloudStack 4.17; an older server leaves it empty.
type Event struct {
	ID    string
	Type  string // e.g. VM.START
	State string // Created, Scheduled, Started, Completed
	Level string // INFO, WARN, ERROR
	// Created is when CloudStack logged the event, in UTC.
	Created      time.Time
	ResourceID   string
	ResourceType string // VirtualMachine, Volume, IpAddress...
	ResourceName string
	// Account is the name of the account that owns the resource acted on (not the
	// caller's); AccountID is its id, resolved through listAccounts, empty when the
	// account is gone.
	Account     string
	AccountID   string
	DomainID    string
	Description string
	ParentID    string
	// Invalid says why the event could not be decoded (an unreadable date); such an
	// event is yielded so the caller can count it, never silently lost.
	Invalid string
}

// Succeeded reports whether the event records an action that finished and did not
// fail: Completed at a level other than ERROR.
func (e Event) Succeeded() bool {
	return e.State == EventStateCompleted && !strings.EqualFold(e.Level, EventLevelError)
}

// Events streams the events f selects, one page at a time (memory is a page plus one
// id per account, to fill AccountID).
//
// Order: CloudStack lists events newest first (QueryManagerImpl sorts by created, then
// internal id, descending), type by type here. Each listing checks its pages against
// the count of its first page; a count that moved (events archived or deleted while
// read) yields ErrListChanged, and the caller reads again. After any error the
// sequence stops.
func (c *Client) Events(ctx context.Context, f ListEvents) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		ids, err := c.accountIDs(ctx, "", "")
		if err != nil {
			yield(Event{}, fmt.Errorf("list events: resolve accounts: %w", err))
			return
		}
		types := f.Types
		if len(types) == 0 {
			types = []string{""}
		}
		for _, typ := range types {
			if !c.eventsOfType(ctx, f, typ, ids, yield) {
				return
			}
		}
	}
}

// eventsOfType pages through one type's listing; false means stop (an error was
// yielded, or the consumer stopped).
func (c *Client) eventsOfType(ctx context.Context, f ListEvents, typ string, ids map[string]string, yield func(Event, error) bool) bool {
	size := f.PageSize
	if size <= 0 {
		size = c.cfg.PageSize
	}
	start, end := f.Start.UTC().Format(usageRequestLayout), f.End.UTC().Format(usageRequestLayout)
	what := fmt.Sprintf("list events %s .. %s", start, end)
	if typ != "" {
		what = fmt.Sprintf("list %s events %s .. %s", typ, start, end)
	}
	count, seen := -1, 0
	for page := 1; ; page++ {
		var r *cloudstack.ListEventsResponse
		err := c.call(ctx, "listEvents", func(cs *cloudstack.CloudStackClient) error {
			p := cs.Event.NewListEventsParams()
			p.SetListall(true)
			p.SetStartdate(start)
			p.SetEnddate(end)
			if typ != "" {
				p.SetType(typ)
			}
			p.SetPage(page)
			p.SetPagesize(size)
			var err error
			r, err = cs.Event.ListEvents(p)
			return err
		})
		if err != nil {
			yield(Event{}, fmt.Errorf("%s page %d: %w", what, page, err))
			return false
		}
		if count >= 0 && r.Count != count {
			yield(Event{}, fmt.Errorf("%s page %d: count %d, page 1 said %d: %w", what, page, r.Count, count, ErrListChanged))
			return false
		}
		if count < 0 {
			count = r.Count
		}
		for _, e := range r.Events {
			if !yield(decodeEvent(e, ids), nil) {
				return false
			}
		}
		seen += len(r.Events)
		if seen >= count {
			return true
		}
		if len(r.Events) < size {
			yield(Event{}, fmt.Errorf("%s: pages ended at %d events, the count is %d: %w", what, seen, count, ErrListChanged))
			return false
		}
	}
}

func decodeEvent(e *cloudstack.Event, ids map[string]string) Event {
	ev := Event{
		ID: e.Id, Type: e.Type, State: e.State, Level: e.Level, ResourceID: e.Resourceid,
		ResourceType: e.Resourcetype, ResourceName: e.Resourcename, Account: e.Account,
		AccountID: ids[accountKey(e.Account, e.Domainid)], DomainID: e.Domainid,
		Description: e.Description, ParentID: e.Parentid,
	}
	if ev.Created = parseTime(e.Created); ev.Created.IsZero() {
		ev.Invalid = fmt.Sprintf("created: unreadable date %q", e.Created)
	}
	return ev
}
