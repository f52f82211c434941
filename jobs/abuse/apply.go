package abuse

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/mysql"
)

// ActorJob is the actor recorded for the transitions a run makes; operators are
// recorded as "operator:<name>".
const ActorJob = "cronkit"

// evaluator decides for one account: with fresh it re-reads the facts through q (the
// transaction about to act) instead of using the plan's.
type evaluator func(ctx context.Context, q querier, c *Case, fresh bool) (evaluation, error)

// evaluation is a decision plus who it concerns.
type evaluation struct {
	Decision
	subject subject
}

// subject is where the side effects of a transition go: the recipient of its notice
// and the orchestrator account.
type subject struct {
	email      string
	cloudstack string
	notice     noticeData
}

// noticeData is what the notice templates may use; every field is always set, so a
// template can never hit a missing key.
type noticeData struct {
	Name          string
	Email         string
	AccountID     int64
	CaseID        int64
	Amount        string
	Invoices      int
	OldestInvoice int64
	DueDate       string
	DaysLate      int
	SuspendOn     string
	BillingURL    string
	SupportEmail  string
}

// transitionReq asks for one transition.
type transitionReq struct {
	machine string
	account int64
	// caseID names the case (operator commands); 0 means the open case of (machine,
	// account), which must still be expect (nil: none), or the plan is stale.
	caseID int64
	expect *Case
	event  string
	eval   evaluator
	actor  string
	runID  string
	// before runs first in the transaction (not in a dry run): an operator's exclude
	// tags the account in the same commit as the transition.
	before func(ctx context.Context, tx *sql.Tx) error
}

// applied is what apply did.
type applied struct {
	c        *Case
	from, to string
	event    string // "" when the fresh decision was to do nothing
	reason   string
	conflict bool
}

// notice is a rendered mail and its outbox key.
type notice struct {
	Key  string       `json:"key"`
	Step string       `json:"step"`
	Msg  mail.Message `json:"message"`
}

// effects are the side effects of one transition.
type effects struct {
	actions       []*action
	mail          *notice
	accountStatus string // accounts.status to set ("" none)
	cancelPending bool   // cancel the case's pending actions (a suspension not needed any more)
	note          string // appended to the transition's reason
}

func caseLabel(machine string, id int64) string {
	if id == 0 {
		return machine + " case new"
	}
	return fmt.Sprintf("%s case %d", machine, id)
}

// apply applies one event. In a real run it is one transaction: lock the case (or
// the account, for a new case), check the plan is not stale, re-read the facts and
// decide again (a different decision wins; "nothing" means nothing), fire the event
// on the machine and, in its leave_state callback, write the case, the transition,
// the actions and any immediate notice. In a dry run the same steps read through the
// pool and only report.
func (r *runState) apply(ctx context.Context, req transitionReq) (applied, error) {
	if r.dry {
		var res applied
		out, err := r.applyIn(ctx, r.j.DB, nil, req, &res)
		if err != nil {
			return applied{}, err
		}
		for _, f := range out {
			f()
		}
		return res, nil
	}
	var res applied
	var out []func()
	err := mysql.InTx(ctx, r.j.DB, nil, func(tx *sql.Tx) error {
		res = applied{}
		var err error
		out, err = r.applyIn(ctx, tx, tx, req, &res)
		return err
	})
	if errors.Is(err, errConflict) {
		return applied{conflict: true}, nil
	}
	if err != nil {
		return applied{}, err
	}
	for _, f := range out {
		f()
	}
	return res, nil
}

// applyIn is apply's body; tx is nil in a dry run. It returns the report lines to
// emit once the transaction has committed.
func (r *runState) applyIn(ctx context.Context, q querier, tx *sql.Tx, req transitionReq, res *applied) ([]func(), error) {
	var cur *Case
	var err error
	switch {
	case req.caseID != 0:
		cur, err = caseByID(ctx, q, req.caseID, tx != nil)
	case tx != nil:
		cur, err = lockOpenCase(ctx, tx, req.machine, req.account)
	default:
		// A dry run writes nothing, so the case it plans on is the one it simulated.
		cur = req.expect
	}
	if err != nil {
		return nil, err
	}
	if req.caseID == 0 && !sameCase(cur, req.expect) {
		res.conflict = true
		return nil, nil
	}
	if req.before != nil && tx != nil {
		if err := req.before(ctx, tx); err != nil {
			return nil, err
		}
	}
	ev, err := req.eval(ctx, q, cur, true)
	if err != nil {
		return nil, err
	}
	if ev.Event == "" {
		res.reason = ev.Reason
		return nil, nil
	}
	state := StateGood
	if cur != nil {
		state = cur.State
	}
	var out []func()
	_, err = fire(ctx, req.machine, state, ev.Event, func(ctx context.Context, from, to string) error {
		var perr error
		out, perr = r.persist(ctx, q, tx, cur, req, ev, from, to, res)
		return perr
	})
	return out, err
}

// sameCase reports whether the case found is the one the plan was made from.
func sameCase(found, expected *Case) bool {
	if found == nil || expected == nil {
		return found == nil && expected == nil
	}
	return found.ID == expected.ID && found.Version == expected.Version && found.State == expected.State
}

// persist writes one transition: the case row (insert, or update guarded by its
// version), the transition row, its actions and any immediate notice. It runs as the
// machine's leave_state callback, so an error here cancels the transition.
func (r *runState) persist(ctx context.Context, q querier, tx *sql.Tx, cur *Case, req transitionReq, ev evaluation,
	from, to string, res *applied) ([]func(), error) {
	now := r.now
	evidence, err := json.Marshal(ev.Evidence)
	if err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	var c Case
	if cur != nil {
		c = *cur
		c.Version = cur.Version + 1
	} else {
		c = Case{AccountID: req.account, Machine: req.machine, Version: 1, OpenedAt: now}
	}
	c.State, c.StateSince, c.Evidence = to, now, evidence
	if !IsOpen(req.machine, to) {
		c.ClosedAt = &now
	}
	if ev.Event == EventApprove || ev.Event == EventConfirm {
		c.ApprovedAt, c.ApprovedBy = &now, req.actor
	}
	if tx != nil {
		if cur == nil {
			rs, err := tx.ExecContext(ctx, `INSERT INTO abuse_cases
  (account_id, machine, state, version, opened_at, state_since, closed_at, evidence, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, c.AccountID, c.Machine, c.State, c.Version, c.OpenedAt, c.StateSince, c.ClosedAt, string(evidence), now)
			if mysql.IsDuplicate(err) {
				return nil, errConflict
			}
			if err != nil {
				return nil, fmt.Errorf("open case: %w", err)
			}
			if c.ID, err = rs.LastInsertId(); err != nil {
				return nil, fmt.Errorf("open case: %w", err)
			}
		} else {
			rs, err := tx.ExecContext(ctx, `UPDATE abuse_cases SET state = ?, version = ?, state_since = ?, closed_at = ?,
  approved_at = ?, approved_by = ?, evidence = ?, updated_at = ?
WHERE id = ? AND version = ?`, c.State, c.Version, c.StateSince, c.ClosedAt, c.ApprovedAt, nullString(c.ApprovedBy),
				string(evidence), now, c.ID, cur.Version)
			if err != nil {
				return nil, fmt.Errorf("update case %d: %w", c.ID, err)
			}
			if n, err := rs.RowsAffected(); err != nil || n != 1 {
				return nil, errConflict
			}
		}
	}
	ev.subject.notice.CaseID = c.ID
	eff, err := r.effects(ctx, q, &c, req, ev, from, to)
	if err != nil {
		return nil, err
	}
	reason := ev.Reason + eff.note
	if len(reason) > 2000 {
		reason = reason[:1997] + "..."
	}
	label := caseLabel(req.machine, c.ID)
	subj := accountSubject(req.account)
	var out []func()
	out = append(out, func() {
		r.act("transition", subj, fmt.Sprintf("%s: %s -> %s (%s): %s", label, from, to, ev.Event, reason))
		r.count("transitions", 1)
		zerolog.Ctx(ctx).Info().Int64("case_id", c.ID).Str("from", from).Str("to", to).Str("event", ev.Event).
			Str("actor", req.actor).Str("reason", reason).Msg("transition")
	})
	var tid int64
	if tx != nil {
		rs, err := tx.ExecContext(ctx, `INSERT INTO abuse_transitions
  (case_id, case_version, account_id, machine, from_state, to_state, event, reason, evidence, run_id, actor, at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, c.ID, c.Version, c.AccountID, c.Machine, from, to, ev.Event, reason,
			string(evidence), nullString(req.runID), req.actor, now)
		if mysql.IsDuplicate(err) {
			return nil, errConflict
		}
		if err != nil {
			return nil, fmt.Errorf("record transition of case %d: %w", c.ID, err)
		}
		if tid, err = rs.LastInsertId(); err != nil {
			return nil, fmt.Errorf("record transition of case %d: %w", c.ID, err)
		}
		if eff.cancelPending {
			if _, err := tx.ExecContext(ctx, `UPDATE abuse_actions SET status = 'cancelled', updated_at = ?, outcome = ?
WHERE case_id = ? AND status = 'pending'`, now, "cancelled by "+ev.Event, c.ID); err != nil {
				return nil, fmt.Errorf("cancel actions of case %d: %w", c.ID, err)
			}
		}
		for _, a := range eff.actions {
			a.CaseID, a.TransitionID = c.ID, tid
			if err := insertAction(ctx, tx, a, now); err != nil {
				return nil, err
			}
		}
		if eff.accountStatus != "" {
			if err := setAccountStatus(ctx, tx, c.AccountID, eff.accountStatus); err != nil {
				return nil, err
			}
		}
		if n := eff.mail; n != nil {
			queued, err := r.j.Outbox.Enqueue(ctx, tx, n.Key, n.Msg)
			if err != nil {
				return nil, err
			}
			out = append(out, func() { r.mailed(subj, n, queued) })
		}
	} else {
		r.mu.Lock()
		for _, a := range eff.actions {
			a.CaseID = c.ID
			r.planned = append(r.planned, a)
		}
		if eff.cancelPending && c.ID != 0 {
			if r.cancelled == nil {
				r.cancelled = map[int64]bool{}
			}
			r.cancelled[c.ID] = true
		}
		r.mu.Unlock()
		if n := eff.mail; n != nil {
			out = append(out, func() { r.mailed(subj, n, true) })
		}
	}
	res.c, res.from, res.to, res.event, res.reason = &c, from, to, ev.Event, reason
	return out, nil
}

// mailed reports a notice queued (or planned).
func (r *runState) mailed(subj string, n *notice, queued bool) {
	detail := fmt.Sprintf("%s notice to %s (%s)", n.Step, n.Msg.To, n.Key)
	if !queued {
		detail += ": already queued before"
	}
	r.act("mail", subj, detail)
	if queued {
		r.count("mail_queued", 1)
	}
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// setAccountStatus mirrors the enforcement state in accounts.status (read by
// reconcile and the console): suspended, active again, or terminated.
func setAccountStatus(ctx context.Context, tx *sql.Tx, account int64, status string) error {
	var query string
	switch status {
	case "suspended":
		query = `UPDATE accounts SET status = 'suspended' WHERE id = ? AND status = 'active'`
	case "active":
		query = `UPDATE accounts SET status = 'active' WHERE id = ? AND status = 'suspended'`
	case "terminated":
		query = `UPDATE accounts SET status = 'terminated' WHERE id = ?`
	default:
		return fmt.Errorf("account status %q", status)
	}
	if _, err := tx.ExecContext(ctx, query, account); err != nil {
		return fmt.Errorf("set account %d %s: %w", account, status, err)
	}
	return nil
}

// effects decides the side effects of a transition (pure but for two reads: the
// other machine's hold on the account, and what cronkit stopped on it).
func (r *runState) effects(ctx context.Context, q querier, c *Case, req transitionReq, ev evaluation, from, to string) (effects, error) {
	var eff effects
	s := ev.subject
	cs := s.cloudstack
	newAction := func(seq int, name, target string) *action {
		return &action{AccountID: c.AccountID, Machine: c.Machine, Seq: seq, Action: name, Target: target}
	}
	withNotice := func(step string) error {
		n, err := r.notice(ctx, c, step, s)
		if err != nil || n == nil {
			return err
		}
		hasCalls := false
		for _, a := range eff.actions {
			hasCalls = hasCalls || a.Action != actNotify
		}
		if !hasCalls {
			eff.mail = n
			return nil
		}
		payload, err := json.Marshal(n)
		if err != nil {
			return fmt.Errorf("notice payload: %w", err)
		}
		a := newAction(9, actNotify, n.Msg.To)
		a.Payload = payload
		eff.actions = append(eff.actions, a)
		return nil
	}
	switch {
	case ev.Event == EventRemind:
		return eff, withNotice(noticeReminder)
	case ev.Event == EventWarn:
		return eff, withNotice(noticeWarning)
	case ev.Event == EventSuspend:
		eff.accountStatus = "suspended"
		if cs == "" {
			eff.note = "; no orchestrator account: nothing to stop"
		} else {
			eff.actions = append(eff.actions, newAction(1, actStopVMs, cs), newAction(3, actDisableAccount, cs))
		}
		step := noticeSuspension
		if c.Machine == FreeCredit {
			step = noticeTrialSuspension
		}
		return eff, withNotice(step)
	case ev.Event == EventTerminate:
		eff.accountStatus = "terminated"
		if cs != "" {
			eff.actions = append(eff.actions, newAction(1, actDestroyVMs, cs), newAction(3, actDisableAccount, cs))
		}
		return eff, nil
	case !IsOpen(c.Machine, to):
		eff.cancelPending = true
		if !holdsSuspension(c.Machine, from) {
			return eff, nil
		}
		other, err := otherHold(ctx, q, c.Machine, c.AccountID)
		if err != nil {
			return eff, err
		}
		if other != nil {
			eff.note = fmt.Sprintf("; account stays suspended: %s case %d is %s", other.Machine, other.ID, other.State)
			return eff, nil
		}
		eff.accountStatus = "active"
		enable, starts, err := undoList(ctx, q, c.AccountID)
		if err != nil {
			return eff, err
		}
		// A suspension cancelled before it was carried out or announced (its notice
		// still waits behind its actions) is lifted without a word: the customer
		// never heard of it, and nothing was stopped.
		var unannounced int
		if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM abuse_actions WHERE case_id = ? AND action = 'notify' AND status = 'pending'`,
			c.ID).Scan(&unannounced); err != nil {
			return eff, fmt.Errorf("notices of case %d: %w", c.ID, err)
		}
		if unannounced > 0 && len(enable) == 0 && len(starts) == 0 {
			eff.note = "; the suspension had not been carried out: nothing to lift"
			return eff, nil
		}
		for _, target := range enable {
			eff.actions = append(eff.actions, newAction(1, actEnableAccount, target))
		}
		for _, vm := range starts {
			eff.actions = append(eff.actions, newAction(2, actStartVM, vm))
		}
		step := noticeLifted
		if c.Machine == FreeCredit {
			step = noticeTrialLifted
		}
		return eff, withNotice(step)
	}
	return eff, nil
}

// undoList returns what lifting a suspension must restore on an account: the
// orchestrator accounts cronkit disabled and the VMs it stopped, each possibly (an
// attempt was made) and not re-enabled or started since. It covers every case of the
// account, so a VM stopped by one machine is restarted when the last hold is lifted.
func undoList(ctx context.Context, q querier, account int64) (enable, start []string, err error) {
	rows, err := q.QueryContext(ctx, `SELECT action, target, MAX(id) FROM abuse_actions
WHERE account_id = ? AND attempts > 0 AND action IN ('stop_vm', 'start_vm', 'disable_account', 'enable_account')
GROUP BY action, target`, account)
	if err != nil {
		return nil, nil, fmt.Errorf("actions on account %d: %w", account, err)
	}
	defer rows.Close()
	last := map[string]int64{}
	for rows.Next() {
		var act, target string
		var id int64
		if err := rows.Scan(&act, &target, &id); err != nil {
			return nil, nil, fmt.Errorf("actions on account %d: %w", account, err)
		}
		last[act+"\x00"+target] = id
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("actions on account %d: %w", account, err)
	}
	for key, id := range last {
		act, target, _ := strings.Cut(key, "\x00")
		switch act {
		case actDisableAccount:
			if last[actEnableAccount+"\x00"+target] < id {
				enable = append(enable, target)
			}
		case actStopVM:
			if last[actStartVM+"\x00"+target] < id {
				start = append(start, target)
			}
		}
	}
	sort.Strings(enable)
	sort.Strings(start)
	return enable, start, nil
}

// notice renders a notice for case c. An address mail cannot be sent to is a problem
// in the report, not a reason to hold the transition: nil is returned.
func (r *runState) notice(ctx context.Context, c *Case, step string, s subject) (*notice, error) {
	subj, text, html, err := r.tmpl.Render(step, s.notice)
	if err != nil {
		return nil, fmt.Errorf("render %s notice: %w", step, err)
	}
	id := "new"
	if c.ID != 0 {
		id = fmt.Sprint(c.ID)
	}
	n := &notice{Key: fmt.Sprintf("abuse:%s:case:%s:%s", c.Machine, id, step), Step: step, Msg: mail.Message{
		From: r.j.Config.MailFrom, To: s.email, Subject: subj, Text: text, HTML: html,
		Headers: map[string]string{"X-Cronkit-Case": fmt.Sprintf("%s/%s", c.Machine, id)},
	}}
	if err := n.Msg.Validate(); err != nil {
		r.problem("mail", accountSubject(c.AccountID), fmt.Sprintf("%s notice not sent: %v", step, err))
		zerolog.Ctx(ctx).Warn().Err(err).Str("step", step).Msg("notice cannot be sent")
		return nil, nil
	}
	return n, nil
}
