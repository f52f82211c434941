// Package cases is the audited state machine store the jobs share: abuse keeps its
// dunning and free-credit cases in it, drip its onboarding funnels. A job brings its
// machines (looplab/fsm definitions), its decisions and its side effects; the store
// keeps the guarantees that make those machines safe to run unattended:
//
//   - a case per (machine, account), at most one of them open, with a version for
//     optimistic concurrency: a plan made outside a transaction is acted on only if
//     the case is still what the plan saw;
//   - an append-only transition log (from, to, event, reason, evidence, actor, run
//     id, time), one row per version, which database triggers refuse to change;
//   - side effects as intent, then performance, then confirmation: a transition
//     writes its actions as pending rows in its own transaction; after the commit a
//     performer the job supplies carries each one out and the store confirms it. A
//     crash in between leaves the action pending and the next run performs it again,
//     so a performer must be idempotent (the action's Key is stable across retries).
//
// The tables (migration 00050) are shared by every job, told apart by the machine
// column: a machine's name is unique across jobs, and a Store sees only the cases of
// the machines it was given. A case belongs to an account (accounts.id): a new case
// is opened under a lock on the account's row, so two writers queue up.
//
// Reads are set-based: OpenCases loads the open cases of many accounts in one query,
// and nothing opens a transaction unless a case changes. A job's candidate query may
// read the table directly: `SELECT account_id FROM cases WHERE machine = ? AND
// open_account_id IS NOT NULL` is a range of the cases_one_open index.
//
// A run uses it in three steps (see the package example): decide each candidate on
// facts read in bulk, Apply only where an event is due (its Decide runs again inside
// the transaction on fresh facts, and its Effects record the side effects as pending
// actions), then Drive the pending actions through the job's performer. A dry run
// (Store.DryRun) goes through the same decisions and returns the plan, writing
// nothing.
package cases

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/looplab/fsm"
)

// Querier is what both *sql.DB and *sql.Tx offer: a job reads facts the same way for
// a plan (the pool, read-only in a dry run) and right before acting (the transaction).
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// ErrConflict means another writer moved the case between the plan and the write:
// nothing was done, and the next run decides again.
var ErrConflict = errors.New("case changed meanwhile")

// ErrNoCase is returned for a case id that does not exist (or belongs to a machine
// the store does not know).
var ErrNoCase = errors.New("no such case")

// ErrSettled is what a performer returns when Attempt found its action no longer
// pending (confirmed or cancelled meanwhile): nothing was done and nothing is
// recorded.
var ErrSettled = errors.New("action no longer pending")

// Machine is one state machine: its looplab/fsm definition, the state of an account
// that has no case, and which states keep a case open. The definition is the single
// source the store fires, a job's graph command draws and its tests walk.
type Machine struct {
	// Name is stored in every case, transition and action row: unique across jobs,
	// at most 64 bytes.
	Name string
	// Initial is the state of an account with no open case; a case is created by
	// the first transition out of it.
	Initial string
	// Events are the transitions, as looplab/fsm takes them.
	Events fsm.Events
	// Open lists the states in which a case is open. A transition into any other
	// state closes the case; the account may then get a new one.
	Open []string
}

// IsOpen reports whether a case in state is still open.
func (m *Machine) IsOpen(state string) bool { return slices.Contains(m.Open, state) }

// FSM returns the machine in state, with callbacks (nil for none).
func (m *Machine) FSM(state string, callbacks fsm.Callbacks) *fsm.FSM {
	return fsm.NewFSM(state, m.Events, callbacks)
}

// Can reports whether event is a transition from state.
func (m *Machine) Can(state, event string) bool { return m.FSM(state, nil).Can(event) }

// Sources lists the states event can fire from, in definition order.
func (m *Machine) Sources(event string) []string {
	var out []string
	for _, e := range m.Events {
		if e.Name == event {
			out = append(out, e.Src...)
		}
	}
	return out
}

// Case is a persisted case as decisions and operators see it.
type Case struct {
	ID         int64      `json:"id"`
	AccountID  int64      `json:"account_id"`
	Machine    string     `json:"machine"`
	State      string     `json:"state"`
	Version    int        `json:"version"`
	OpenedAt   time.Time  `json:"opened_at"`
	StateSince time.Time  `json:"state_since"`
	ClosedAt   *time.Time `json:"closed_at,omitempty"`
	ApprovedAt *time.Time `json:"approved_at,omitempty"`
	ApprovedBy string     `json:"approved_by,omitempty"`
	// Evidence is the facts behind the latest transition, as JSON.
	Evidence json.RawMessage `json:"evidence"`
	// PendingActions counts side effects of the case's transitions that are not
	// confirmed yet: a decision can refuse to advance past an unconfirmed step.
	PendingActions int `json:"pending_actions"`
}

// Decision is what a job's decision returns: the event to fire ("" for none), the
// reason in words and the evidence it rests on, both recorded with the transition.
type Decision struct {
	Event    string
	Reason   string
	Evidence any
	// SignOff marks the event as a person's approval: the case records when and by
	// whom (approved_at, approved_by = the request's actor).
	SignOff bool
}

// Store keeps the cases of its machines. Build it per run (its clock is the run's);
// it holds no state between calls and is safe for concurrent use.
type Store struct {
	DB *sql.DB
	// Machines are the machines this store works on; cases of others are invisible.
	Machines []*Machine
	// Now is the clock of every row written (--now sets it); nil means time.Now.
	Now func() time.Time
	// DryRun plans instead of writing: Apply reads through the pool and returns
	// what it would record, and Drive refuses.
	DryRun bool
}

func (s *Store) now() time.Time {
	clock := s.Now
	if clock == nil {
		clock = time.Now
	}
	return clock().UTC()
}

// Machine returns the named machine of the store.
func (s *Store) Machine(name string) (*Machine, error) {
	for _, m := range s.Machines {
		if m.Name == name {
			return m, nil
		}
	}
	return nil, fmt.Errorf("cases: unknown machine %q", name)
}

// names returns the machines' names as query arguments and their placeholders.
func (s *Store) names() (string, []any) {
	args := make([]any, len(s.Machines))
	for i, m := range s.Machines {
		args[i] = m.Name
	}
	return placeholders(len(args)), args
}

// placeholders returns "?, ?, ?" for n values (n >= 1): IN lists are built from
// placeholders only, never from values.
func placeholders(n int) string {
	if n <= 0 {
		return "NULL"
	}
	b := make([]byte, 0, 3*n)
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, '?')
	}
	return string(b)
}

func int64Args(ids []int64) []any {
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	return args
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
