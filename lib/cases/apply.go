package cases

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/looplab/fsm"

	"github.com/cronkit/cronkit/lib/mysql"
)

// Request asks for one transition.
type Request struct {
	Machine   string
	AccountID int64
	// CaseID names the case (an operator's command acts on a case by id, in any
	// state). 0 means the open case of (Machine, AccountID), which must still be
	// Expect (nil: none open), or the plan is stale and Apply returns ErrConflict.
	CaseID int64
	Expect *Case
	// Actor is who decided: the job's name for a run, "operator:<name>" for a person.
	Actor string
	// RunID is the run's id (job_runs.id); empty for an operator command.
	RunID string
	// Before runs first in the transaction (not in a dry run), e.g. to tag the
	// account in the same commit as the transition.
	Before func(ctx context.Context, tx *sql.Tx) error
	// Decide decides again on facts read through q (the transaction, or the pool in
	// a dry run) for c, the case as locked (nil: none open). A different event than
	// planned wins; "" means nothing is done.
	Decide func(ctx context.Context, q Querier, c *Case) (Decision, error)
	// Effects, if set, is called once the case row is written, inside the
	// transaction: it records the transition's side effects (Change.Act), may write
	// the job's own tables through Change.Tx, and its error cancels the transition.
	Effects func(ctx context.Context, ch *Change) error
}

// Change is a transition being written, as Request.Effects sees it.
type Change struct {
	// Tx is the transition's transaction; nil in a dry run, where nothing is written.
	Tx *sql.Tx
	// Q reads inside the transaction (or through the pool in a dry run).
	Q Querier
	// Case is the case as the transition leaves it: ID 0 for a case a dry run
	// would open.
	Case     *Case
	From, To string
	Decision Decision

	actions []*Action
	cancel  bool
	note    string
	after   []func()
}

// Act records an action as pending in the transition's transaction: the intent. Seq
// orders a case's actions; a later seq waits for every earlier one to be confirmed.
// (transition, name, target) is unique, so recording it twice keeps one.
func (ch *Change) Act(seq int, name, target string, payload []byte) *Action {
	a := &Action{Seq: seq, Name: name, Target: target, Payload: payload}
	ch.actions = append(ch.actions, a)
	return a
}

// Actions returns the actions recorded so far.
func (ch *Change) Actions() []*Action { return ch.actions }

// CancelPending cancels the case's actions still pending from earlier transitions
// (a suspension no longer wanted), before this transition's own are recorded.
func (ch *Change) CancelPending() { ch.cancel = true }

// Note appends to the transition's recorded reason.
func (ch *Change) Note(s string) { ch.note += s }

// AfterCommit runs fn once the transaction has committed (at once in a dry run): the
// place to report what the transaction did, never on a rollback.
func (ch *Change) AfterCommit(fn func()) { ch.after = append(ch.after, fn) }

// Result is what Apply did.
type Result struct {
	// Case is the case after the transition (nil when nothing was done).
	Case *Case
	From string
	To   string
	// Event is the event fired; "" when the fresh decision was to do nothing, with
	// its Reason.
	Event  string
	Reason string
	// TransitionID is the audit row's id (0 in a dry run).
	TransitionID int64
	// Actions are the actions recorded (planned, with ID 0, in a dry run).
	Actions []*Action
	// Cancelled is set when the case's earlier pending actions were cancelled.
	Cancelled bool
}

// reasonMax is case_transitions.reason's size.
const reasonMax = 2000

// Apply applies one event. In a real run it is one transaction (rerun on a deadlock):
// lock the case (or the account, for a new case), check the plan is not stale, run
// Before, decide again on fresh facts, fire the event on the machine and, in its
// leave_state callback, write the case (insert, or update guarded by its version),
// run Effects, and append the transition and its actions. In a dry run the same steps
// read through the pool, and nothing is written.
//
// A stale plan or a lost race returns ErrConflict and changes nothing.
func (s *Store) Apply(ctx context.Context, req Request) (Result, error) {
	m, err := s.Machine(req.Machine)
	if err != nil {
		return Result{}, err
	}
	if req.Actor == "" || req.Decide == nil {
		return Result{}, errors.New("cases: a transition needs an actor and a decision")
	}
	var res Result
	var after []func()
	if s.DryRun {
		if after, err = s.applyIn(ctx, m, s.DB, nil, req, &res); err != nil {
			return Result{}, err
		}
	} else {
		err = mysql.InTx(ctx, s.DB, nil, func(tx *sql.Tx) error {
			res = Result{}
			var err error
			after, err = s.applyIn(ctx, m, tx, tx, req, &res)
			return err
		})
		if err != nil {
			return Result{}, err
		}
	}
	for _, f := range after {
		f()
	}
	return res, nil
}

// applyIn is Apply's body; tx is nil in a dry run.
func (s *Store) applyIn(ctx context.Context, m *Machine, q Querier, tx *sql.Tx, req Request, res *Result) ([]func(), error) {
	var cur *Case
	var err error
	switch {
	case req.CaseID != 0:
		cur, err = s.caseByID(ctx, q, req.CaseID, tx != nil)
	case tx != nil:
		cur, err = lockOpen(ctx, tx, m.Name, req.AccountID)
	default:
		// A dry run writes nothing, so the case it plans on is the one it simulated.
		cur = req.Expect
	}
	if err != nil {
		return nil, err
	}
	if req.CaseID == 0 && !sameCase(cur, req.Expect) {
		return nil, ErrConflict
	}
	if req.Before != nil && tx != nil {
		if err := req.Before(ctx, tx); err != nil {
			return nil, err
		}
	}
	d, err := req.Decide(ctx, q, cur)
	if err != nil {
		return nil, err
	}
	if d.Event == "" {
		res.Reason = d.Reason
		return nil, nil
	}
	state := m.Initial
	if cur != nil {
		state = cur.State
	}
	var after []func()
	f := m.FSM(state, fsm.Callbacks{
		"leave_state": func(ctx context.Context, e *fsm.Event) {
			var err error
			if after, err = s.write(ctx, m, q, tx, cur, req, d, e.Src, e.Dst, res); err != nil {
				e.Cancel(err)
			}
		},
	})
	if err := f.Event(ctx, d.Event); err != nil {
		var cancelled fsm.CanceledError
		if errors.As(err, &cancelled) && cancelled.Err != nil {
			return nil, cancelled.Err
		}
		return nil, fmt.Errorf("%s case in %s: %w", m.Name, state, err)
	}
	return after, nil
}

// sameCase reports whether the case found is the one the plan was made from.
func sameCase(found, expected *Case) bool {
	if found == nil || expected == nil {
		return found == nil && expected == nil
	}
	return found.ID == expected.ID && found.Version == expected.Version && found.State == expected.State
}

const (
	execOpenCase = `INSERT INTO cases
  (account_id, machine, state, version, opened_at, state_since, closed_at, evidence, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`
	execUpdateCase = `UPDATE cases SET state = ?, version = ?, state_since = ?, closed_at = ?,
  approved_at = ?, approved_by = ?, evidence = ?, updated_at = ?
WHERE id = ? AND version = ?`
	execTransition = `INSERT INTO case_transitions
  (case_id, case_version, account_id, machine, from_state, to_state, event, reason, evidence, run_id, actor, at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	execCancelPending = `UPDATE case_actions SET status = 'cancelled', updated_at = ?, outcome = ?
WHERE case_id = ? AND status = 'pending'`
)

// write records one transition: the case row, the job's effects, the transition row,
// the cancellation of earlier pending actions and the new ones. It runs as the
// machine's leave_state callback, so an error here cancels the transition.
func (s *Store) write(ctx context.Context, m *Machine, q Querier, tx *sql.Tx, cur *Case, req Request, d Decision,
	from, to string, res *Result) ([]func(), error) {
	now := s.now()
	evidence, err := json.Marshal(d.Evidence)
	if err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	var c Case
	if cur != nil {
		c = *cur
		c.Version = cur.Version + 1
	} else {
		c = Case{AccountID: req.AccountID, Machine: m.Name, Version: 1, OpenedAt: now}
	}
	c.State, c.StateSince, c.Evidence = to, now, evidence
	if !m.IsOpen(to) {
		c.ClosedAt = &now
	}
	if d.SignOff {
		c.ApprovedAt, c.ApprovedBy = &now, req.Actor
	}
	if tx != nil {
		if cur == nil {
			rs, err := tx.ExecContext(ctx, execOpenCase, c.AccountID, c.Machine, c.State, c.Version, c.OpenedAt, c.StateSince,
				c.ClosedAt, string(evidence), now)
			if mysql.IsDuplicate(err) {
				return nil, ErrConflict
			}
			if err != nil {
				return nil, fmt.Errorf("open %s case of account %d: %w", m.Name, c.AccountID, err)
			}
			if c.ID, err = rs.LastInsertId(); err != nil {
				return nil, fmt.Errorf("open %s case of account %d: %w", m.Name, c.AccountID, err)
			}
		} else {
			rs, err := tx.ExecContext(ctx, execUpdateCase, c.State, c.Version, c.StateSince, c.ClosedAt, c.ApprovedAt,
				nullString(c.ApprovedBy), string(evidence), now, c.ID, cur.Version)
			if err != nil {
				return nil, fmt.Errorf("update case %d: %w", c.ID, err)
			}
			if n, err := rs.RowsAffected(); err != nil || n != 1 {
				return nil, ErrConflict
			}
		}
	}
	ch := &Change{Tx: tx, Q: q, Case: &c, From: from, To: to, Decision: d}
	if req.Effects != nil {
		if err := req.Effects(ctx, ch); err != nil {
			return nil, err
		}
	}
	reason := d.Reason + ch.note
	if len(reason) > reasonMax {
		reason = reason[:reasonMax-3] + "..."
	}
	var tid int64
	if tx != nil {
		rs, err := tx.ExecContext(ctx, execTransition, c.ID, c.Version, c.AccountID, c.Machine, from, to, d.Event, reason,
			string(evidence), nullString(req.RunID), req.Actor, now)
		if mysql.IsDuplicate(err) {
			return nil, ErrConflict
		}
		if err != nil {
			return nil, fmt.Errorf("record transition of case %d: %w", c.ID, err)
		}
		if tid, err = rs.LastInsertId(); err != nil {
			return nil, fmt.Errorf("record transition of case %d: %w", c.ID, err)
		}
		if ch.cancel {
			if _, err := tx.ExecContext(ctx, execCancelPending, now, "cancelled by "+d.Event, c.ID); err != nil {
				return nil, fmt.Errorf("cancel actions of case %d: %w", c.ID, err)
			}
		}
	}
	for _, a := range ch.actions {
		a.CaseID, a.TransitionID, a.AccountID, a.Machine = c.ID, tid, c.AccountID, c.Machine
		if tx != nil {
			if err := insertAction(ctx, tx, a, now); err != nil {
				return nil, err
			}
		}
	}
	*res = Result{Case: &c, From: from, To: to, Event: d.Event, Reason: reason, TransitionID: tid,
		Actions: ch.actions, Cancelled: ch.cancel}
	return ch.after, nil
}
