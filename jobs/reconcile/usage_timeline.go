package reconcile

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cronkit/cronkit/lib/orchestrator"
)

// The pure part of the usage check: from a resource's inventory row and its events,
// a timeline of what it may have been doing when, and the hour accounting that
// compares it with what was metered. Nothing here reads a clock or a database.

// resourceKind is what a resource is, and so which usage types meter it.
type resourceKind uint8

const (
	kindVM resourceKind = iota + 1
	kindVolume
	kindIP
)

func (k resourceKind) String() string {
	switch k {
	case kindVM:
		return "vm"
	case kindVolume:
		return "volume"
	case kindIP:
		return "ip"
	}
	return "unknown"
}

// kindOfUsage is the kind a usage type meters; 0 for the types the check does not
// follow (and for a usage_records row, whose type is not known).
func kindOfUsage(usageType int) resourceKind {
	switch usageType {
	case orchestrator.UsageRunningVM, orchestrator.UsageAllocatedVM:
		return kindVM
	case orchestrator.UsageVolume:
		return kindVolume
	case orchestrator.UsageIPAddress:
		return kindIP
	}
	return 0
}

// state is a set of what a resource may have been doing: a segment whose events and
// inventory agree has one, an ambiguous one several (a VM created with or without
// starting it), a contradictory one all of them.
type state uint8

const (
	stAbsent    state = 1 << iota // not created yet
	stAllocated                   // exists, not running: a stopped VM, a volume, an address
	stRunning                     // a running VM (allocated too, for allocated-time usage)
	stRemoved                     // destroyed, expunged, deleted, released
	stAny       = stAbsent | stAllocated | stRunning | stRemoved
)

// transition is what an event says of the state just before and just after it.
type transition struct {
	kind      resourceKind
	pre, post state
	// order breaks ties between events of one second, in the order they happen.
	order uint8
}

// transitions are the event types the check follows.
var transitions = map[string]transition{
	orchestrator.EventVMCreate:     {kindVM, stAbsent, stAllocated | stRunning, 0},
	orchestrator.EventVMStart:      {kindVM, stAllocated, stRunning, 1},
	orchestrator.EventVMStop:       {kindVM, stRunning, stAllocated, 2},
	orchestrator.EventVMDestroy:    {kindVM, stAllocated | stRunning, stRemoved, 3},
	orchestrator.EventVMExpunge:    {kindVM, stAllocated | stRunning | stRemoved, stRemoved, 4},
	orchestrator.EventVolumeCreate: {kindVolume, stAbsent, stAllocated, 0},
	orchestrator.EventVolumeDelete: {kindVolume, stAllocated, stRemoved, 3},
	// An address released can be assigned again, to anyone.
	orchestrator.EventIPAssign:  {kindIP, stAbsent | stRemoved, stAllocated, 0},
	orchestrator.EventIPRelease: {kindIP, stAllocated, stRemoved, 3},
}

// createEvent is the event that starts a kind's life, for a resource whose creation
// the event log lacks but the inventory dates.
var createEvent = map[resourceKind]string{
	kindVM: orchestrator.EventVMCreate, kindVolume: orchestrator.EventVolumeCreate, kindIP: orchestrator.EventIPAssign,
}

// inventoryState is what the inventory's state says now. listed is false for a
// resource the inventory no longer holds.
func inventoryState(k resourceKind, listed bool, s string) state {
	if !listed {
		if k == kindIP { // released, or not assigned again yet
			return stRemoved | stAbsent
		}
		return stRemoved
	}
	switch k {
	case kindVM:
		switch s {
		case orchestrator.VMRunning, "Migrating":
			return stRunning
		case orchestrator.VMStopped, "Error", "Shutdown":
			return stAllocated
		case "Starting", "Stopping":
			return stAllocated | stRunning
		case orchestrator.VMDestroyed, orchestrator.VMExpunging, "Expunged":
			return stRemoved
		}
		return stAny
	case kindVolume:
		switch s {
		case "Destroy", "Expunging", "Expunged":
			return stRemoved
		}
		return stAllocated
	case kindIP:
		switch s {
		case "Allocated":
			return stAllocated
		case "Allocating":
			return stAbsent | stAllocated
		case "Releasing":
			return stAllocated | stRemoved
		}
		return stRemoved | stAbsent
	}
	return stAny
}

// timedEvent is an event of a resource as the timeline reads it.
type timedEvent struct {
	at  time.Time
	typ string
}

// segment is a span [from, to) in one state set. conflict marks a span whose events
// contradict each other or the inventory: it counts as anything (never judged).
type segment struct {
	from, to time.Time
	states   state
	conflict bool
}

// timeline is what a resource may have been doing over [from, to): consecutive
// segments covering it. inv is the inventory's state (listed false when the resource
// is no longer in it) and created the inventory's creation time (zero if unknown);
// events are the resource's successful events of its kind, in any order.
//
// Each span between two events is what the earlier one leaves (post) and the later
// one needs (pre); the span after the last event is also what the inventory says
// now, and the span before the first is what the first needs. A creation the log
// lacks (an event older than the log, or a CloudStack that logs none) is taken from
// the inventory's creation time.
func timeline(k resourceKind, listed bool, inv string, created time.Time, events []timedEvent, from, to time.Time) []segment {
	out, _ := appendTimeline(nil, nil, k, listed, inv, created, events, from, to)
	return out
}

// appendTimeline is timeline writing into out[:0] with scratch for the events, so a
// merge over a million resources reuses two buffers; it returns both.
func appendTimeline(out []segment, scratch []timedEvent, k resourceKind, listed bool, inv string, created time.Time,
	events []timedEvent, from, to time.Time) ([]segment, []timedEvent) {
	out, evs := out[:0], scratch[:0]
	hasCreate := false
	for _, e := range events {
		if t, ok := transitions[e.typ]; ok && t.kind == k {
			evs = append(evs, e)
			if e.typ == createEvent[k] {
				hasCreate = true
			}
		}
	}
	if listed && !hasCreate && !created.IsZero() && created.After(from) {
		evs = append(evs, timedEvent{at: created, typ: createEvent[k]})
	}
	if len(evs) > 1 {
		slices.SortStableFunc(evs, func(a, b timedEvent) int {
			if c := a.at.Compare(b.at); c != 0 {
				return c
			}
			return int(transitions[a.typ].order) - int(transitions[b.typ].order)
		})
	}
	now := inventoryState(k, listed, inv)
	add := func(s, e time.Time, st state) {
		if s.Before(from) {
			s = from
		}
		if e.After(to) {
			e = to
		}
		if !e.After(s) {
			return
		}
		seg := segment{from: s, to: e, states: st}
		if st == 0 {
			seg.states, seg.conflict = stAny, true
		}
		if n := len(out); n > 0 && out[n-1].to.Equal(seg.from) && out[n-1].states == seg.states && out[n-1].conflict == seg.conflict {
			out[n-1].to = seg.to
			return
		}
		out = append(out, seg)
	}
	if len(evs) == 0 {
		add(from, to, now)
		return out, evs
	}
	add(from, evs[0].at, transitions[evs[0].typ].pre)
	for i := 1; i < len(evs); i++ {
		add(evs[i-1].at, evs[i].at, transitions[evs[i-1].typ].post&transitions[evs[i].typ].pre)
	}
	last := evs[len(evs)-1]
	add(last.at, to, transitions[last.typ].post&now)
	return out, evs
}

// seconds is how long within [from, to) the timeline is in a segment for which keep
// holds.
func seconds(tl []segment, from, to time.Time, keep func(segment) bool) int64 {
	var n time.Duration
	for _, s := range tl {
		a, b := s.from, s.to
		if a.Before(from) {
			a = from
		}
		if b.After(to) {
			b = to
		}
		if b.After(a) && keep(s) {
			n += b.Sub(a)
		}
	}
	return int64(n / time.Second)
}

// knownIn reports a segment that is surely in st (st alone, no conflict).
func knownIn(st state) func(segment) bool {
	return func(s segment) bool { return !s.conflict && s.states == st }
}

// mayBe reports a segment that may be in any of st (a conflict may be anything).
func mayBe(st state) func(segment) bool {
	return func(s segment) bool { return s.states&st != 0 }
}

// aliveFor is the state a usage type meters: running time for RUNNING_VM, any
// existing time for the others.
func aliveFor(usageType int) state {
	if usageType == orchestrator.UsageRunningVM {
		return stRunning
	}
	if usageType == orchestrator.UsageAllocatedVM {
		return stAllocated | stRunning
	}
	return stAllocated
}

// billedState is the state that must be metered: a VM's running time (billing rates
// RUNNING_VM), a volume's or an address's existence.
func billedState(k resourceKind) state {
	if k == kindVM {
		return stRunning
	}
	return stAllocated
}

// meters reports whether a usage record of usageType (0: a usage_records row,
// whose type is not known) counts as metering kind k's billed state.
func meters(k resourceKind, usageType int) bool {
	switch k {
	case kindVM:
		return usageType == orchestrator.UsageRunningVM || usageType == 0
	case kindVolume:
		return usageType == orchestrator.UsageVolume || usageType == 0
	case kindIP:
		return usageType == orchestrator.UsageIPAddress || usageType == 0
	}
	return false
}

// removedAt is when the timeline first enters a span that is surely removed after
// having been alive, or the zero time.
func removedAt(tl []segment) time.Time {
	for _, s := range tl {
		if !s.conflict && s.states == stRemoved {
			return s.from
		}
	}
	return time.Time{}
}

// microHours reads CloudStack's rawusage ("0.666667", "24", "1.5") as millionths of
// an hour, exactly (no float): false when it is not a non-negative decimal.
func microHours(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" && frac == "" {
		return 0, false
	}
	if len(frac) > 6 {
		// Beyond CloudStack's six decimals: round half up at the sixth.
		up := frac[6] >= '5'
		for _, c := range frac[6:] {
			if c < '0' || c > '9' {
				return 0, false
			}
		}
		frac = frac[:6]
		v, ok := microHours(whole + "." + frac)
		if ok && up {
			v++
		}
		return v, ok
	}
	w := int64(0)
	if whole != "" {
		n, err := strconv.ParseInt(whole, 10, 64)
		if err != nil || n < 0 || whole[0] == '+' || whole[0] == '-' {
			return 0, false
		}
		w = n
	}
	f := int64(0)
	if frac != "" {
		n, err := strconv.ParseInt(frac+strings.Repeat("0", 6-len(frac)), 10, 64)
		if err != nil || frac[0] == '+' || frac[0] == '-' {
			return 0, false
		}
		f = n
	}
	return w*1_000_000 + f, true
}

// formatMicroHours writes millionths of an hour as CloudStack writes hours.
func formatMicroHours(v int64) string {
	s := strconv.FormatInt(v/1_000_000, 10)
	if f := v % 1_000_000; f != 0 {
		s += "." + strings.TrimRight(strconv.FormatInt(1_000_000+f, 10)[1:], "0")
	}
	return s
}

// microHoursOf is a duration in millionths of an hour, rounded down.
func microHoursOf(seconds int64) int64 { return seconds * 1_000_000 / 3600 }

// span is a metering record's time [from, to).
type span struct{ from, to time.Time }

// excess finds, among records of one resource and usage type, the groups of
// overlapping records that carry more hours than the time they span (a record of an
// hour with more than 1, a daily one with more than 24, an hourly and a daily record
// both counting the same hours). It returns, per such group, the indexes of its
// records, the hours they carry and the hours they span. Each record's own rounding
// (a millionth of an hour) is allowed.
func excess(spans []span, hours []int64) (groups [][]int, carried, spanned []int64) {
	idx := make([]int, len(spans))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return spans[a].from.Compare(spans[b].from) })
	for i := 0; i < len(idx); {
		g := []int{idx[i]}
		start, end := spans[idx[i]].from, spans[idx[i]].to
		sum := hours[idx[i]]
		j := i + 1
		for ; j < len(idx) && spans[idx[j]].from.Before(end); j++ {
			g = append(g, idx[j])
			sum += hours[idx[j]]
			if spans[idx[j]].to.After(end) {
				end = spans[idx[j]].to
			}
		}
		width := microHoursOf(int64(end.Sub(start) / time.Second))
		if sum > width+int64(len(g)) {
			groups, carried, spanned = append(groups, g), append(carried, sum), append(spanned, width)
		}
		i = j
	}
	return groups, carried, spanned
}

// hourRange is a run of consecutive hours [from, to), for evidence.
type hourRange struct{ from, to time.Time }

// ranges folds sorted hour starts into runs of consecutive hours.
func ranges(hours []time.Time) []hourRange {
	var out []hourRange
	for _, h := range hours {
		if n := len(out); n > 0 && out[n-1].to.Equal(h) {
			out[n-1].to = h.Add(time.Hour)
			continue
		}
		out = append(out, hourRange{h, h.Add(time.Hour)})
	}
	return out
}

func (r hourRange) String() string {
	return r.from.UTC().Format("2006-01-02T15:04Z") + ".." + r.to.UTC().Format("2006-01-02T15:04Z")
}
