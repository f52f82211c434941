package cases

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/cronkit/cronkit/lib/mysql"
)

// Action is one side effect of a transition: a row of case_actions (ID 0 while only
// planned in a dry run). Name and Target say what to do to what; Payload carries what
// the performer needs that the target does not (a rendered message).
type Action struct {
	ID           int64
	CaseID       int64
	TransitionID int64
	AccountID    int64
	Machine      string
	Seq          int
	Name         string
	Target       string
	Payload      []byte
	// Attempts counts the times a performer started it (Attempt): above 0, it may
	// have happened.
	Attempts int
}

// Key is the action's idempotency key: the same for every retry of this action and
// different for any other, so an external system can recognise a repeat.
func (a *Action) Key() string {
	return fmt.Sprintf("cases:%d:%s:%s", a.TransitionID, a.Name, a.Target)
}

const (
	execInsertAction = `INSERT INTO case_actions
  (case_id, transition_id, account_id, machine, seq, action, target, payload, status, attempts, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?) ON DUPLICATE KEY UPDATE id = id`
	actionColumns = `a.id, a.case_id, a.transition_id, a.account_id, a.machine, a.seq, a.action, a.target,
  COALESCE(a.payload, ''), a.attempts`
	// queryPending takes the IN list of the store's machines, then maybe the account.
	queryPending = `SELECT ` + actionColumns + ` FROM case_actions a
WHERE a.status = 'pending' AND a.machine IN (%s)%s
ORDER BY a.case_id, a.seq, a.id`
	queryNextPending = `SELECT ` + actionColumns + ` FROM case_actions a
WHERE a.case_id = ? AND a.status = 'pending' ORDER BY a.seq, a.id LIMIT 1`
	execAttempt = `UPDATE case_actions SET attempts = attempts + 1, updated_at = ?
WHERE id = ? AND status = 'pending'`
	execConfirm = `UPDATE case_actions SET status = 'done', outcome = ?, last_error = NULL, updated_at = ?, done_at = ?
WHERE id = ? AND status = 'pending'`
	execFailed        = `UPDATE case_actions SET last_error = ?, updated_at = ? WHERE id = ?`
	queryPendingCount = `SELECT COUNT(*) FROM case_actions WHERE case_id = ? AND action = ? AND status = 'pending'`
	// queryAttempted takes the account, the IN list of the store's machines, then
	// the IN list of action names.
	queryAttempted = `SELECT action, target, MAX(id) FROM case_actions
WHERE account_id = ? AND machine IN (%s) AND attempts > 0 AND action IN (%s)
GROUP BY action, target ORDER BY action, target`
)

func insertAction(ctx context.Context, q Querier, a *Action, now time.Time) error {
	var payload any
	if a.Payload != nil {
		payload = string(a.Payload)
	}
	if _, err := q.ExecContext(ctx, execInsertAction, a.CaseID, a.TransitionID, a.AccountID, a.Machine, a.Seq, a.Name,
		a.Target, payload, now, now); err != nil {
		return fmt.Errorf("record action %s %s of case %d: %w", a.Name, a.Target, a.CaseID, err)
	}
	return nil
}

func scanAction(sc interface{ Scan(...any) error }) (*Action, error) {
	var a Action
	var payload string
	if err := sc.Scan(&a.ID, &a.CaseID, &a.TransitionID, &a.AccountID, &a.Machine, &a.Seq, &a.Name, &a.Target,
		&payload, &a.Attempts); err != nil {
		return nil, err
	}
	if payload != "" {
		a.Payload = []byte(payload)
	}
	return &a, nil
}

// Pending lists the pending actions of the store's machines (of one account, or all
// with account 0), in the order they must run: by case, then seq.
func (s *Store) Pending(ctx context.Context, q Querier, account int64) ([]*Action, error) {
	in, args := s.names()
	filter := ""
	if account != 0 {
		filter = " AND a.account_id = ?"
		args = append(args, account)
	}
	rows, err := q.QueryContext(ctx, fmt.Sprintf(queryPending, in, filter), args...)
	if err != nil {
		return nil, fmt.Errorf("pending actions: %w", err)
	}
	defer rows.Close()
	var out []*Action
	for rows.Next() {
		a, err := scanAction(rows)
		if err != nil {
			return nil, fmt.Errorf("pending actions: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pending actions: %w", err)
	}
	return out, nil
}

// PendingCount counts a case's pending actions of one name.
func (s *Store) PendingCount(ctx context.Context, q Querier, caseID int64, name string) (int, error) {
	var n int
	if err := q.QueryRowContext(ctx, queryPendingCount, caseID, name).Scan(&n); err != nil {
		return 0, fmt.Errorf("pending %s of case %d: %w", name, caseID, err)
	}
	return n, nil
}

// Attempted is the latest action of one name on one target that a performer started.
type Attempted struct {
	Name   string
	Target string
	// LastID is the id of the latest such action: ids grow with time, so comparing
	// two tells which came last (a stop after the last start: still stopped).
	LastID int64
}

// Attempted lists, for the account's cases in the store's machines, the latest
// started action per (name, target) among names: what the store's performers may
// have done to an account and not undone since.
func (s *Store) Attempted(ctx context.Context, q Querier, account int64, names ...string) ([]Attempted, error) {
	if len(names) == 0 {
		return nil, nil
	}
	in, args := s.names()
	args = append([]any{account}, args...)
	for _, n := range names {
		args = append(args, n)
	}
	rows, err := q.QueryContext(ctx, fmt.Sprintf(queryAttempted, in, placeholders(len(names))), args...)
	if err != nil {
		return nil, fmt.Errorf("actions on account %d: %w", account, err)
	}
	defer rows.Close()
	var out []Attempted
	for rows.Next() {
		var a Attempted
		if err := rows.Scan(&a.Name, &a.Target, &a.LastID); err != nil {
			return nil, fmt.Errorf("actions on account %d: %w", account, err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("actions on account %d: %w", account, err)
	}
	return out, nil
}

// Queues splits actions into per-case queues, cases in first-seen order, each
// sorted by seq: the unit Drive runs in order (cases run in parallel). Planned
// actions of cases a dry run would open (case id 0) are told apart by machine and
// account.
func Queues(list []*Action) [][]*Action {
	type key struct {
		machine string
		account int64
		id      int64
	}
	byCase := map[key][]*Action{}
	var order []key
	for _, a := range list {
		k := key{a.Machine, a.AccountID, a.CaseID}
		if _, ok := byCase[k]; !ok {
			order = append(order, k)
		}
		byCase[k] = append(byCase[k], a)
	}
	out := make([][]*Action, 0, len(order))
	for _, k := range order {
		q := byCase[k]
		sort.SliceStable(q, func(i, j int) bool { return q[i].Seq < q[j].Seq })
		out = append(out, q)
	}
	return out
}

// Outcome is how a performed action is confirmed: in one transaction, its outcome is
// recorded, InTx runs and Then is recorded as new pending actions of the same
// transition, so none of it can happen without the others.
type Outcome struct {
	// Detail is kept as the action's outcome ("done", "3 VMs", "queued ...").
	Detail string
	// InTx writes what must commit with the confirmation, exactly once (a mail
	// outbox row).
	InTx func(ctx context.Context, tx *sql.Tx) error
	// Then are follow-up actions (an expansion: one per VM found); only Seq, Name,
	// Target and Payload are read.
	Then []*Action
	// After runs once the confirmation has committed: the place to report it.
	After func()
}

// DriveOptions say how Drive performs.
type DriveOptions struct {
	// Account limits Drive to one account's cases (0: all).
	Account int64
	// Concurrency bounds the cases performed at once (default 1). A case's own
	// actions always run one at a time, in order.
	Concurrency int
	// Perform carries out one action; it must be idempotent (the same action may be
	// performed again after a crash) and safe for concurrent use. Before an external
	// call that cannot be taken back it calls Store.Attempt. Its error leaves the
	// action pending (its message kept as last_error) and stops the case's queue;
	// ErrSettled skips the action.
	Perform func(ctx context.Context, a *Action) (Outcome, error)
	// BeforeCase, if set, runs before a case's queue, with the case's next action: a
	// last chance to re-decide the case on fresh facts (and cancel its actions).
	BeforeCase func(ctx context.Context, next *Action)
	// Failed reports a case whose queue stopped: a (nil when the next action could
	// not be read) and the error. The next run retries.
	Failed func(ctx context.Context, caseID int64, a *Action, err error)
}

// confirmTimeout bounds the writes that record an outcome once the action happened,
// which run even when the run is being cancelled.
const confirmTimeout = 10 * time.Second

// Drive performs the pending actions of the store's machines: cases in parallel
// (bounded), each case's actions in order, each re-read from the database right
// before it runs (an earlier action or a transition may have changed the queue).
// The first failure stops that case: its later actions wait (a notice never goes out
// before the change it announces). It returns an error only when the pending actions
// cannot be listed.
func (s *Store) Drive(ctx context.Context, o DriveOptions) error {
	if s.DryRun {
		return errors.New("cases: a dry run performs nothing (plan with Pending and Queues)")
	}
	if o.Perform == nil {
		return errors.New("cases: Drive needs a performer")
	}
	list, err := s.Pending(ctx, s.DB, o.Account)
	if err != nil {
		return err
	}
	queues := Queues(list)
	forEach(ctx, o.Concurrency, queues, func(ctx context.Context, q []*Action) {
		log := zerolog.Ctx(ctx).With().Int64("case_id", q[0].CaseID).Int64("account_id", q[0].AccountID).
			Str("machine", q[0].Machine).Logger()
		ctx = log.WithContext(ctx)
		if o.BeforeCase != nil {
			o.BeforeCase(ctx, q[0])
		}
		if err := s.runCase(ctx, q[0].CaseID, o); err != nil {
			log.Error().Err(err).Msg("action failed: the case waits, the next run retries")
		}
	})
	return nil
}

// runCase performs a case's pending actions in order until none is left or one fails.
func (s *Store) runCase(ctx context.Context, caseID int64, o DriveOptions) error {
	failed := func(a *Action, err error) error {
		if o.Failed != nil {
			o.Failed(ctx, caseID, a, err)
		}
		return err
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		a, err := scanAction(s.DB.QueryRowContext(ctx, queryNextPending, caseID))
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return failed(nil, fmt.Errorf("next action of case %d: %w", caseID, err))
		}
		out, err := o.Perform(ctx, a)
		if errors.Is(err, ErrSettled) {
			continue
		}
		if err != nil {
			s.recordError(ctx, a, err)
			return failed(a, err)
		}
		if err := s.confirm(ctx, a, out); err != nil {
			s.recordError(ctx, a, err)
			return failed(a, err)
		}
		if out.After != nil {
			out.After()
		}
	}
}

// Attempt counts an attempt at a before its performer makes an external call, so an
// action that may have happened is known (Attempts > 0) even if the run dies before
// it is confirmed. It reports false when a is no longer pending: the performer then
// does nothing and returns ErrSettled.
func (s *Store) Attempt(ctx context.Context, a *Action) (bool, error) {
	res, err := s.DB.ExecContext(ctx, execAttempt, s.now(), a.ID)
	if err != nil {
		return false, fmt.Errorf("count attempt of action %d: %w", a.ID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("count attempt of action %d: %w", a.ID, err)
	}
	if n == 1 {
		a.Attempts++
	}
	return n == 1, nil
}

// confirm records a's outcome (and InTx, and its follow-ups) once it happened; the
// write is not cut short by the run's cancellation.
func (s *Store) confirm(ctx context.Context, a *Action, out Outcome) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), confirmTimeout)
	defer cancel()
	now := s.now()
	if out.InTx == nil && len(out.Then) == 0 {
		if _, err := s.DB.ExecContext(ctx, execConfirm, truncate(out.Detail, 255), now, now, a.ID); err != nil {
			return fmt.Errorf("confirm action %d: %w", a.ID, err)
		}
		return nil
	}
	return mysql.InTx(ctx, s.DB, nil, func(tx *sql.Tx) error {
		if out.InTx != nil {
			if err := out.InTx(ctx, tx); err != nil {
				return err
			}
		}
		for _, t := range out.Then {
			child := &Action{CaseID: a.CaseID, TransitionID: a.TransitionID, AccountID: a.AccountID, Machine: a.Machine,
				Seq: t.Seq, Name: t.Name, Target: t.Target, Payload: t.Payload}
			if err := insertAction(ctx, tx, child, now); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, execConfirm, truncate(out.Detail, 255), now, now, a.ID); err != nil {
			return fmt.Errorf("confirm action %d: %w", a.ID, err)
		}
		return nil
	})
}

// recordError keeps a failed action's error for ops (jobs ... show); the action
// stays pending.
func (s *Store) recordError(ctx context.Context, a *Action, cause error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), confirmTimeout)
	defer cancel()
	if _, err := s.DB.ExecContext(ctx, execFailed, truncate(cause.Error(), 2000), s.now(), a.ID); err != nil {
		zerolog.Ctx(ctx).Error().Err(err).Int64("action_id", a.ID).Msg("record action error")
	}
}

// forEach runs fn on every item with at most n in flight; it stops starting new ones
// when ctx ends.
func forEach[T any](ctx context.Context, n int, items []T, fn func(context.Context, T)) {
	var g errgroup.Group
	g.SetLimit(max(n, 1))
	for _, it := range items {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error { fn(ctx, it); return nil })
	}
	_ = g.Wait()
}
