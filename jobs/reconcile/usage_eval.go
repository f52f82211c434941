package reconcile

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The usage check's judgement of one resource: its timeline against its metering
// rows, and of the suspended accounts against what CloudStack still runs.

// found counts and passes on a finding.
func (r *usageRun) found(f Finding) error {
	f.Seen = r.now
	r.stats.Findings[f.Class]++
	return r.emit(f)
}

// ourAccount is our account id for a CloudStack account id (0 when none claims it),
// cached for the run in a bounded map.
func (r *usageRun) ourAccount(ctx context.Context, cs string) (int64, error) {
	if cs == "" {
		return 0, nil
	}
	if id, ok := r.owners[cs]; ok {
		return id, nil
	}
	var id sql.NullInt64
	if err := r.u.DB.QueryRowContext(ctx, selectAccountByCloudStackSQL, cs).Scan(&id); err != nil {
		return 0, fmt.Errorf("usage check: account of cloudstack account %s: %w", cs, err)
	}
	if len(r.owners) >= 10_000 {
		clear(r.owners)
	}
	r.owners[cs] = id.Int64
	return id.Int64, nil
}

func rfc(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// rowEvidence is a metering row as a finding shows it; to is exclusive.
func rowEvidence(m meterRow) map[string]any {
	e := map[string]any{
		"usage_type": m.usageType, "from": rfc(m.start), "to": rfc(m.end), "status": m.status,
		"cloudstack_account_id": m.cs, "account_id": m.account,
	}
	if m.usageType == 0 {
		e["quantity"] = m.raw
	} else {
		e["raw_usage"] = m.raw
	}
	if m.product != "" {
		e["product"] = m.product
	}
	return e
}

func rowsEvidence(rows []meterRow) []map[string]any {
	out := make([]map[string]any, 0, min(len(rows), maxEvidence))
	for i, m := range rows {
		if i == maxEvidence {
			break
		}
		out = append(out, rowEvidence(m))
	}
	return out
}

func hoursText(seconds int64) string { return formatMicroHours(microHoursOf(seconds)) + "h" }

// evaluate judges one resource id: what the orchestrator knows of it (orch, in key
// order: per kind, the inventory row then the events by time) against its metering
// rows (by start).
func (r *usageRun) evaluate(ctx context.Context, resource string, orch []orchRow, meters []meterRow) error {
	var (
		kindBuf [3]resourceKind
		kinds   = kindBuf[:0]
	)
	for _, o := range orch {
		if !slices.Contains(kinds, o.kind) {
			kinds = append(kinds, o.kind)
		}
	}
	conflict := false
	for _, k := range kinds {
		var (
			inv   *orchRow
			owner string
		)
		events, owners := r.events[:0], r.ownerBuf[:0]
		for i := range orch {
			o := &orch[i]
			if o.kind != k {
				continue
			}
			if o.event {
				events = append(events, timedEvent{at: o.at, typ: o.what})
			} else {
				inv = o
			}
			if o.cs != "" {
				if !slices.Contains(owners, o.cs) {
					owners = append(owners, o.cs)
				}
				owner = o.cs // the latest event's, unless the inventory names one
			}
		}
		r.events, r.ownerBuf = events, owners
		if inv != nil && inv.cs != "" {
			owner = inv.cs
		}
		state, created := "", time.Time{}
		if inv != nil {
			state, created = inv.what, inv.at
		}
		var tl []segment
		tl, r.evs = appendTimeline(r.segs, r.evs, k, inv != nil, state, created, events, r.spanFrom, r.spanTo)
		r.segs = tl
		for _, s := range tl {
			if s.conflict {
				conflict = true
			}
		}
		rows := r.rows[:0]
		for _, m := range meters {
			if kindOfUsage(m.usageType) == k || (m.usageType == 0 && k == kinds[0]) {
				rows = append(rows, m)
			}
		}
		r.rows = rows
		subject := subject{resource: resource, kind: k, listed: inv != nil, state: state, owner: owner, owners: owners}
		if err := r.checkRunning(ctx, subject, tl, rows); err != nil {
			return err
		}
		if err := r.checkRemoval(ctx, subject, tl, rows); err != nil {
			return err
		}
		if err := r.checkAccounts(ctx, subject, rows); err != nil {
			return err
		}
	}
	if conflict {
		r.stats.Conflicts++
	}
	var unknown []meterRow
	for _, m := range meters {
		k := kindOfUsage(m.usageType)
		if m.billable() && ((k != 0 && !slices.Contains(kinds, k)) || (m.usageType == 0 && len(kinds) == 0)) {
			unknown = append(unknown, m)
		}
	}
	if len(unknown) > 0 {
		if err := r.notFound(ctx, resource, unknown); err != nil {
			return err
		}
	}
	return r.checkHours(ctx, resource, meters)
}

// subject is the resource a check judges, as the orchestrator knows it.
type subject struct {
	resource string
	kind     resourceKind
	listed   bool   // in the inventory now
	state    string // the inventory's state
	owner    string // CloudStack account owning it now (else in its latest event)
	owners   []string
}

func (s subject) orchestratorEvidence() map[string]any {
	state := s.state
	if !s.listed {
		state = "not in the inventory"
	}
	return map[string]any{"kind": s.kind.String(), "state": state, "cloudstack_account_id": s.owner}
}

// checkRunning finds the hours of the judged window in which the resource surely
// ran (a VM) or existed (a volume, an address) and no record meters it.
func (r *usageRun) checkRunning(ctx context.Context, s subject, tl []segment, rows []meterRow) error {
	hours := int(r.judgedTo.Sub(r.from) / time.Hour)
	if hours <= 0 {
		return nil
	}
	if cap(r.covered) < hours {
		r.covered = make([]bool, hours)
	}
	cov := r.covered[:hours]
	clear(cov)
	for _, m := range rows {
		if !meters(s.kind, m.usageType) {
			continue
		}
		a, b := m.start, m.end
		if a.Before(r.from) {
			a = r.from
		}
		if b.After(r.judgedTo) {
			b = r.judgedTo
		}
		if !b.After(a) {
			continue
		}
		for i := int(a.Sub(r.from) / time.Hour); i < int((b.Sub(r.from)+time.Hour-1)/time.Hour); i++ {
			cov[i] = true
		}
	}
	need := knownIn(billedState(s.kind))
	tol := int64(r.tolerance / time.Second)
	var (
		missing []time.Time
		secs    int64
	)
	for i, ok := range cov {
		if ok {
			continue
		}
		h := r.from.Add(time.Duration(i) * time.Hour)
		if n := seconds(tl, h, h.Add(time.Hour), need); n > tol {
			missing = append(missing, h)
			secs += n
		}
	}
	if len(missing) == 0 {
		return nil
	}
	acct, err := r.ourAccount(ctx, s.owner)
	if err != nil {
		return err
	}
	var runs []string
	for i, h := range ranges(missing) {
		if i == maxEvidence {
			break
		}
		runs = append(runs, h.String())
	}
	verb := "ran"
	if s.kind != kindVM {
		verb = "was allocated"
	}
	metered := 0
	for _, m := range rows {
		if meters(s.kind, m.usageType) {
			metered++
		}
	}
	orch := s.orchestratorEvidence()
	orch["unmetered_hours"], orch["unmetered_time"] = runs, hoursText(secs)
	return r.found(Finding{
		Class: ClassRunningNotMetered, Fingerprint: fingerprint(ClassRunningNotMetered, s.resource),
		AccountID: acct, ResourceID: s.resource,
		Detail: fmt.Sprintf("%s %s %s %s in %d hour(s) with no usage: %s", s.kind, s.resource, verb, hoursText(secs),
			len(missing), strings.Join(runs, ", ")),
		Evidence: map[string]any{"orchestrator": orch, "metering": map[string]any{
			"records": metered, "judged_from": rfc(r.from), "judged_to": rfc(r.judgedTo)}},
	})
}

// checkRemoval finds billable records that carry more usage than the resource can
// have had in their span, the rest falling after its removal.
func (r *usageRun) checkRemoval(ctx context.Context, s subject, tl []segment, rows []meterRow) error {
	rem := removedAt(tl)
	if rem.IsZero() {
		return nil
	}
	tol := int64(r.tolerance / time.Second)
	var (
		bad    []meterRow
		excess int64
	)
	for _, m := range rows {
		if !m.billable() || !m.end.After(rem) {
			continue
		}
		alive := aliveFor(m.usageType)
		if m.usageType == 0 {
			alive = stAllocated | stRunning
		}
		var unknown int64
		if m.start.Before(r.spanFrom) {
			end := m.end
			if end.After(r.spanFrom) {
				end = r.spanFrom
			}
			unknown = int64(end.Sub(m.start) / time.Second)
		}
		possible := seconds(tl, m.start, m.end, mayBe(alive)) + unknown
		removed := seconds(tl, m.start, m.end, knownIn(stRemoved))
		if removed <= tol {
			continue
		}
		q, ok := int64(0), false
		if m.usageType != 0 {
			q, ok = microHours(m.raw)
		}
		switch {
		case ok && q*3600/1_000_000 > possible+tol:
			bad = append(bad, m)
			excess += q*3600/1_000_000 - possible
		case !ok && possible <= tol:
			bad = append(bad, m)
			excess += removed
		}
	}
	if len(bad) == 0 {
		return nil
	}
	acct := bad[0].account
	if acct == 0 {
		var err error
		if acct, err = r.ourAccount(ctx, s.owner); err != nil {
			return err
		}
	}
	orch := s.orchestratorEvidence()
	orch["removed_at"] = rfc(rem)
	return r.found(Finding{
		Class: ClassMeteredAfterRemoval, Fingerprint: fingerprint(ClassMeteredAfterRemoval, s.resource),
		AccountID: acct, ResourceID: s.resource,
		Detail: fmt.Sprintf("%s %s was removed at %s, yet %d record(s) meter %s after that", s.kind, s.resource, rfc(rem),
			len(bad), hoursText(excess)),
		Evidence: map[string]any{"orchestrator": orch, "metering": map[string]any{
			"records": rowsEvidence(bad), "after_removal": hoursText(excess)}},
	})
}

// checkAccounts finds billable usage metered on a CloudStack account that owned the
// resource neither now nor in any of its events, one finding per such account.
func (r *usageRun) checkAccounts(ctx context.Context, s subject, rows []meterRow) error {
	if len(s.owners) == 0 {
		return nil
	}
	var others []string
	for _, m := range rows {
		if m.billable() && m.cs != "" && !slices.Contains(s.owners, m.cs) && !slices.Contains(others, m.cs) {
			others = append(others, m.cs)
		}
	}
	slices.Sort(others)
	for _, cs := range others {
		var mine []meterRow
		for _, m := range rows {
			if m.billable() && m.cs == cs {
				mine = append(mine, m)
			}
		}
		metered := mine[0].account
		if metered == 0 {
			var err error
			if metered, err = r.ourAccount(ctx, cs); err != nil {
				return err
			}
		}
		ownerID, err := r.ourAccount(ctx, s.owner)
		if err != nil {
			return err
		}
		orch := s.orchestratorEvidence()
		orch["owners"], orch["account_id"] = slices.Clone(s.owners), ownerID
		if err := r.found(Finding{
			Class: ClassAccountMismatch, Fingerprint: fingerprint(ClassAccountMismatch, s.resource, cs, s.owner),
			AccountID: metered, ResourceID: s.resource,
			Detail: fmt.Sprintf("%s %s is metered on CloudStack account %s (account %d) but owned by %s (account %d)",
				s.kind, s.resource, cs, metered, s.owner, ownerID),
			Evidence: map[string]any{"orchestrator": orch, "metering": map[string]any{
				"cloudstack_account_id": cs, "account_id": metered, "records": rowsEvidence(mine)}},
		}); err != nil {
			return err
		}
	}
	return nil
}

// notFound reports billable usage of a resource the orchestrator does not know.
func (r *usageRun) notFound(ctx context.Context, resource string, rows []meterRow) error {
	acct := rows[0].account
	if acct == 0 {
		var err error
		if acct, err = r.ourAccount(ctx, rows[0].cs); err != nil {
			return err
		}
	}
	var types []int
	for _, m := range rows {
		if !slices.Contains(types, m.usageType) {
			types = append(types, m.usageType)
		}
	}
	slices.Sort(types)
	return r.found(Finding{
		Class: ClassMeteredNotFound, Fingerprint: fingerprint(ClassMeteredNotFound, resource),
		AccountID: acct, ResourceID: resource,
		Detail: fmt.Sprintf("%d record(s) meter %s from %s, which CloudStack neither lists nor logged an event of",
			len(rows), resource, rfc(rows[0].start)),
		Evidence: map[string]any{"orchestrator": map[string]any{"known": false},
			"metering": map[string]any{"usage_types": types, "records": rowsEvidence(rows), "count": len(rows)}},
	})
}

// checkHours finds, per usage type, billable raw records carrying more hours than
// the time they span.
func (r *usageRun) checkHours(ctx context.Context, resource string, meters []meterRow) error {
	var (
		typeBuf [4]int
		types   = typeBuf[:0]
	)
	for _, m := range meters {
		if m.usageType != 0 && m.billable() && !slices.Contains(types, m.usageType) {
			types = append(types, m.usageType)
		}
	}
	slices.Sort(types)
	for _, t := range types {
		if single(meters, t) {
			continue
		}
		var (
			rows  []meterRow
			spans []span
			hours []int64
		)
		for _, m := range meters {
			if m.usageType != t || !m.billable() {
				continue
			}
			q, ok := microHours(m.raw)
			if !ok {
				continue
			}
			rows, spans, hours = append(rows, m), append(spans, span{m.start, m.end}), append(hours, q)
		}
		groups, carried, spanned := excess(spans, hours)
		if len(groups) == 0 {
			continue
		}
		var (
			ev    []map[string]any
			worst []meterRow
			over  int64
		)
		for i, g := range groups {
			over += carried[i] - spanned[i]
			var recs []meterRow
			for _, j := range g {
				recs = append(recs, rows[j])
			}
			if i < maxEvidence {
				ev = append(ev, map[string]any{"records": rowsEvidence(recs),
					"hours": formatMicroHours(carried[i]), "span_hours": formatMicroHours(spanned[i])})
			}
			if worst == nil {
				worst = recs
			}
		}
		acct := worst[0].account
		if acct == 0 {
			var err error
			if acct, err = r.ourAccount(ctx, worst[0].cs); err != nil {
				return err
			}
		}
		if err := r.found(Finding{
			Class: ClassHoursExceedWindow, Fingerprint: fingerprint(ClassHoursExceedWindow, resource, strconv.Itoa(t)),
			AccountID: acct, ResourceID: resource,
			Detail: fmt.Sprintf("usage type %d of %s: %d group(s) of records carry %sh more than they span (first: %sh in %sh from %s)",
				t, resource, len(groups), formatMicroHours(over), formatMicroHours(carried[0]), formatMicroHours(spanned[0]), rfc(worst[0].start)),
			Evidence: map[string]any{"metering": map[string]any{"usage_type": t, "groups": ev, "excess_hours": formatMicroHours(over)}},
		}); err != nil {
			return err
		}
	}
	return nil
}

// checkSuspended reports the accounts cronkit suspended or terminated that CloudStack
// still runs VMs of, or still has enabled, once Settle has passed since their case
// got there (abuse stops and disables after committing the suspension).
func (r *usageRun) checkSuspended(_ context.Context) error {
	list := make([]*suspendedAccount, 0, len(r.suspended))
	for _, a := range r.suspended {
		list = append(list, a)
	}
	slices.SortFunc(list, func(a, b *suspendedAccount) int { return int(a.id - b.id) })
	for _, a := range list {
		if a.stateSince.Valid && a.stateSince.Time.After(r.now.Add(-r.settle)) {
			continue
		}
		enabled := a.csState == "enabled"
		if a.running == 0 && !enabled {
			continue
		}
		var what []string
		if a.running > 0 {
			what = append(what, fmt.Sprintf("runs %d VM(s)", a.running))
		}
		if enabled {
			what = append(what, "has the account enabled")
		}
		local := map[string]any{"account_id": a.id, "status": a.status}
		if a.caseID != 0 {
			local["case_id"], local["machine"], local["case_state"] = a.caseID, a.machine, a.caseState
			if a.stateSince.Valid {
				local["state_since"] = rfc(a.stateSince.Time)
			}
		}
		vms := a.runningVMs
		if vms == nil {
			vms = []string{}
		}
		if err := r.found(Finding{
			Class: ClassSuspendedButRunning, Fingerprint: fingerprint(ClassSuspendedButRunning, strconv.FormatInt(a.id, 10), a.csID),
			AccountID: a.id, ResourceID: a.csID,
			Detail: fmt.Sprintf("account %d is %s, yet CloudStack %s", a.id, a.status, strings.Join(what, " and ")),
			Evidence: map[string]any{"local": local, "orchestrator": map[string]any{
				"cloudstack_account_id": a.csID, "state": a.csState, "running_vms": a.running, "running_vm_ids": vms}},
		}); err != nil {
			return err
		}
	}
	return nil
}

// single reports the common case of checkHours with nothing to report: one billable
// record of the type, holding no more hours than its span.
func single(meters []meterRow, usageType int) bool {
	n, ok := 0, true
	for _, m := range meters {
		if m.usageType != usageType || !m.billable() {
			continue
		}
		if n++; n > 1 {
			return false
		}
		q, parsed := microHours(m.raw)
		ok = !parsed || q <= microHoursOf(int64(m.end.Sub(m.start)/time.Second))+1
	}
	return ok
}
