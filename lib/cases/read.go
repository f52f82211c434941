package cases

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// caseColumns is a case row with its count of pending actions (case_actions_case).
const caseColumns = `c.id, c.account_id, c.machine, c.state, c.version, c.opened_at, c.state_since, c.closed_at,
  c.approved_at, COALESCE(c.approved_by, ''), c.evidence,
  (SELECT COUNT(*) FROM case_actions x WHERE x.case_id = c.id AND x.status = 'pending')`

const (
	// queryOpenCases takes the machine, then the IN list of accounts.
	queryOpenCases = `SELECT ` + caseColumns + ` FROM cases c WHERE c.machine = ? AND c.open_account_id IN (%s)`
	queryLockOpen  = `SELECT ` + caseColumns + ` FROM cases c
WHERE c.machine = ? AND c.open_account_id = ? FOR UPDATE`
	queryLockAccount = `SELECT id FROM accounts WHERE id = ? FOR UPDATE`
	// queryCase takes the IN list of the store's machines, then the id.
	queryCase     = `SELECT ` + caseColumns + ` FROM cases c WHERE c.machine IN (%s) AND c.id = ?`
	queryCaseLock = queryCase + ` FOR UPDATE`
	// queryCasesOf takes the IN list of the store's machines, then the account.
	queryCasesOf = `SELECT ` + caseColumns + ` FROM cases c WHERE c.machine IN (%s) AND c.account_id = ? ORDER BY c.id DESC`
)

func scanCase(sc interface{ Scan(...any) error }) (*Case, error) {
	var c Case
	var closed, approved sql.NullTime
	var evidence []byte
	if err := sc.Scan(&c.ID, &c.AccountID, &c.Machine, &c.State, &c.Version, &c.OpenedAt, &c.StateSince, &closed,
		&approved, &c.ApprovedBy, &evidence, &c.PendingActions); err != nil {
		return nil, err
	}
	c.OpenedAt, c.StateSince = c.OpenedAt.UTC(), c.StateSince.UTC()
	if closed.Valid {
		t := closed.Time.UTC()
		c.ClosedAt = &t
	}
	if approved.Valid {
		t := approved.Time.UTC()
		c.ApprovedAt = &t
	}
	c.Evidence = json.RawMessage(evidence)
	return &c, nil
}

func scanCases(rows *sql.Rows, what string) ([]*Case, error) {
	defer rows.Close()
	var out []*Case
	for rows.Next() {
		c, err := scanCase(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// OpenCases returns the open cases of machine for accounts, by account, in one query
// (cases_one_open): a run loads its candidates' cases a chunk at a time, never one
// query per case. Keep a chunk to a few thousand accounts.
func (s *Store) OpenCases(ctx context.Context, q Querier, machine string, accounts []int64) (map[int64]*Case, error) {
	out := map[int64]*Case{}
	if len(accounts) == 0 {
		return out, nil
	}
	if _, err := s.Machine(machine); err != nil {
		return nil, err
	}
	rows, err := q.QueryContext(ctx, fmt.Sprintf(queryOpenCases, placeholders(len(accounts))),
		append([]any{machine}, int64Args(accounts)...)...)
	if err != nil {
		return nil, fmt.Errorf("open %s cases: %w", machine, err)
	}
	list, err := scanCases(rows, "open "+machine+" cases")
	if err != nil {
		return nil, err
	}
	for _, c := range list {
		out[c.AccountID] = c
	}
	return out, nil
}

// lockOpen locks and returns the open case of (machine, account), or nil. It first
// locks the account's row, so two writers opening a case for one account queue up.
func lockOpen(ctx context.Context, tx *sql.Tx, machine string, account int64) (*Case, error) {
	var id int64
	if err := tx.QueryRowContext(ctx, queryLockAccount, account).Scan(&id); err != nil {
		return nil, fmt.Errorf("lock account %d: %w", account, err)
	}
	c, err := scanCase(tx.QueryRowContext(ctx, queryLockOpen, machine, account))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lock open %s case of account %d: %w", machine, account, err)
	}
	return c, nil
}

// Case reads a case of one of the store's machines; ErrNoCase if there is none.
func (s *Store) Case(ctx context.Context, q Querier, id int64) (*Case, error) {
	return s.caseByID(ctx, q, id, false)
}

func (s *Store) caseByID(ctx context.Context, q Querier, id int64, lock bool) (*Case, error) {
	in, args := s.names()
	query := queryCase
	if lock {
		query = queryCaseLock
	}
	c, err := scanCase(q.QueryRowContext(ctx, fmt.Sprintf(query, in), append(args, id)...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("case %d: %w", id, ErrNoCase)
	}
	if err != nil {
		return nil, fmt.Errorf("read case %d: %w", id, err)
	}
	return c, nil
}

// CasesOf returns every case of the account in the store's machines, open or
// closed, newest first.
func (s *Store) CasesOf(ctx context.Context, q Querier, account int64) ([]*Case, error) {
	in, args := s.names()
	rows, err := q.QueryContext(ctx, fmt.Sprintf(queryCasesOf, in), append(args, account)...)
	if err != nil {
		return nil, fmt.Errorf("cases of account %d: %w", account, err)
	}
	return scanCases(rows, fmt.Sprintf("cases of account %d", account))
}

// Transition is one row of the audit trail.
type Transition struct {
	ID          int64           `json:"id"`
	CaseID      int64           `json:"case_id"`
	CaseVersion int             `json:"case_version"`
	From        string          `json:"from"`
	To          string          `json:"to"`
	Event       string          `json:"event"`
	Reason      string          `json:"reason"`
	Evidence    json.RawMessage `json:"evidence"`
	RunID       string          `json:"run_id,omitempty"`
	Actor       string          `json:"actor"`
	At          time.Time       `json:"at"`
}

const queryTransitions = `SELECT id, case_id, case_version, from_state, to_state, event, reason, evidence,
  COALESCE(run_id, ''), actor, at FROM case_transitions WHERE case_id = ? ORDER BY case_version`

// Transitions returns a case's audit trail, oldest first.
func (s *Store) Transitions(ctx context.Context, q Querier, caseID int64) ([]Transition, error) {
	rows, err := q.QueryContext(ctx, queryTransitions, caseID)
	if err != nil {
		return nil, fmt.Errorf("transitions of case %d: %w", caseID, err)
	}
	defer rows.Close()
	out := []Transition{}
	for rows.Next() {
		var t Transition
		var ev []byte
		if err := rows.Scan(&t.ID, &t.CaseID, &t.CaseVersion, &t.From, &t.To, &t.Event, &t.Reason, &ev, &t.RunID, &t.Actor, &t.At); err != nil {
			return nil, fmt.Errorf("transitions of case %d: %w", caseID, err)
		}
		t.Evidence, t.At = json.RawMessage(ev), t.At.UTC()
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("transitions of case %d: %w", caseID, err)
	}
	return out, nil
}

// ActionRecord is one side effect of a case and where it stands.
type ActionRecord struct {
	ID           int64      `json:"id"`
	TransitionID int64      `json:"transition_id"`
	Seq          int        `json:"seq"`
	Action       string     `json:"action"`
	Target       string     `json:"target"`
	Status       string     `json:"status"`
	Attempts     int        `json:"attempts"`
	Outcome      string     `json:"outcome,omitempty"`
	LastError    string     `json:"last_error,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	DoneAt       *time.Time `json:"done_at,omitempty"`
}

const queryActionRecords = `SELECT id, transition_id, seq, action, target, status, attempts, outcome,
  COALESCE(last_error, ''), created_at, done_at FROM case_actions WHERE case_id = ? ORDER BY transition_id, seq, id`

// ActionRecords returns a case's actions, in the order they were meant to run.
func (s *Store) ActionRecords(ctx context.Context, q Querier, caseID int64) ([]ActionRecord, error) {
	rows, err := q.QueryContext(ctx, queryActionRecords, caseID)
	if err != nil {
		return nil, fmt.Errorf("actions of case %d: %w", caseID, err)
	}
	defer rows.Close()
	out := []ActionRecord{}
	for rows.Next() {
		var a ActionRecord
		var done sql.NullTime
		if err := rows.Scan(&a.ID, &a.TransitionID, &a.Seq, &a.Action, &a.Target, &a.Status, &a.Attempts, &a.Outcome,
			&a.LastError, &a.CreatedAt, &done); err != nil {
			return nil, fmt.Errorf("actions of case %d: %w", caseID, err)
		}
		a.CreatedAt = a.CreatedAt.UTC()
		if done.Valid {
			t := done.Time.UTC()
			a.DoneAt = &t
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("actions of case %d: %w", caseID, err)
	}
	return out, nil
}
