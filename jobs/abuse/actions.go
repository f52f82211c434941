package abuse

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/orchestrator"
)

// Actions: the side effects of transitions. The expansions (stop_vms, destroy_vms)
// read the account's VMs when they run and add one action per VM.
const (
	actStopVMs        = "stop_vms"
	actStopVM         = "stop_vm"
	actDisableAccount = "disable_account"
	actEnableAccount  = "enable_account"
	actStartVM        = "start_vm"
	actDestroyVMs     = "destroy_vms"
	actDestroyVM      = "destroy_vm"
	actNotify         = "notify"
)

// action is one row of abuse_actions (ID 0: planned in a dry run).
type action struct {
	ID           int64
	CaseID       int64
	TransitionID int64
	AccountID    int64
	Machine      string
	Seq          int
	Action       string
	Target       string
	Payload      []byte
	Attempts     int
}

func insertAction(ctx context.Context, q querier, a *action, now time.Time) error {
	var payload any
	if a.Payload != nil {
		payload = string(a.Payload)
	}
	_, err := q.ExecContext(ctx, `INSERT INTO abuse_actions
  (case_id, transition_id, account_id, seq, action, target, payload, status, attempts, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?) ON DUPLICATE KEY UPDATE id = id`,
		a.CaseID, a.TransitionID, a.AccountID, a.Seq, a.Action, a.Target, payload, now, now)
	if err != nil {
		return fmt.Errorf("record action %s %s of case %d: %w", a.Action, a.Target, a.CaseID, err)
	}
	return nil
}

const actionColumns = `a.id, a.case_id, a.transition_id, a.account_id, c.machine, a.seq, a.action, a.target,
  COALESCE(a.payload, ''), a.attempts`

func scanAction(sc interface{ Scan(...any) error }) (*action, error) {
	var a action
	var payload string
	if err := sc.Scan(&a.ID, &a.CaseID, &a.TransitionID, &a.AccountID, &a.Machine, &a.Seq, &a.Action, &a.Target,
		&payload, &a.Attempts); err != nil {
		return nil, err
	}
	if payload != "" {
		a.Payload = []byte(payload)
	}
	return &a, nil
}

// pendingActions lists the pending actions (of one account, or all), in the order
// they must run: by case, then seq.
func pendingActions(ctx context.Context, q querier, account int64) ([]*action, error) {
	query := `SELECT ` + actionColumns + ` FROM abuse_actions a JOIN abuse_cases c ON c.id = a.case_id
WHERE a.status = 'pending'` + accountFilter("a.account_id", account) + `
ORDER BY a.case_id, a.seq, a.id`
	var args []any
	if account != 0 {
		args = append(args, account)
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("pending actions: %w", err)
	}
	defer rows.Close()
	var out []*action
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

// nextPending returns a case's next pending action, or nil.
func nextPending(ctx context.Context, q querier, caseID int64) (*action, error) {
	a, err := scanAction(q.QueryRowContext(ctx, `SELECT `+actionColumns+` FROM abuse_actions a JOIN abuse_cases c ON c.id = a.case_id
WHERE a.case_id = ? AND a.status = 'pending' ORDER BY a.seq, a.id LIMIT 1`, caseID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("next action of case %d: %w", caseID, err)
	}
	return a, nil
}

// drive performs pending actions, cases in parallel (bounded), each case's actions
// in order; the first failure stops that case (its later actions wait: a suspension
// notice is never queued before the suspension is done) and is a problem for the
// report. The next run retries.
//
// In a dry run it reports the actions earlier runs left pending (but for cases this
// run's plan closes) and those this run's transitions planned; expansions read the
// orchestrator to list the VMs they would act on.
func (r *runState) drive(ctx context.Context) {
	list, err := pendingActions(ctx, r.j.DB, r.j.Config.Account)
	if err != nil {
		r.problem("actions", "pending actions", err.Error())
		return
	}
	var queues [][]*action
	if r.dry {
		r.mu.Lock()
		var keep []*action
		for _, a := range list {
			if !r.cancelled[a.CaseID] {
				keep = append(keep, a)
			}
		}
		keep, r.planned = append(keep, r.planned...), nil
		r.mu.Unlock()
		queues = groupByCase(keep)
	} else {
		for _, q := range groupByCase(list) {
			queues = append(queues, q[:1]) // the head only: the rest is re-read as it goes
		}
	}
	forEach(ctx, r.concurrency(), queues, func(ctx context.Context, q []*action) {
		log := zerolog.Ctx(ctx).With().Int64("case_id", q[0].CaseID).Int64("account_id", q[0].AccountID).Logger()
		ctx = log.WithContext(ctx)
		var err error
		if r.dry {
			err = r.planQueue(ctx, q)
		} else {
			r.recheck(ctx, q[0])
			err = r.runCase(ctx, q[0].CaseID)
		}
		if err != nil {
			log.Error().Err(err).Msg("action failed: the case waits, the next run retries")
		}
	})
}

// recheck re-decides a dunning case on fresh facts right before its side effects
// run: a payment that landed since the case was decided resolves it (cancelling its
// pending suspension and queueing the lift) instead of being acted on.
func (r *runState) recheck(ctx context.Context, a *action) {
	if a.Machine != Dunning {
		return
	}
	c, err := caseByID(ctx, r.j.DB, a.CaseID, false)
	if err != nil || !IsOpen(Dunning, c.State) {
		return
	}
	m, err := dunningFacts(ctx, r.j.DB, []int64{c.AccountID})
	if err != nil || m[c.AccountID] == nil {
		return // the actions' own reads will report a database that fails
	}
	if d := DecideDunning(c, *m[c.AccountID], r.now, r.j.Policy.Dunning); d.Event == EventResolve || d.Event == EventExclude {
		r.evaluate(ctx, Dunning, c.AccountID, c, r.dunningEval(*m[c.AccountID]))
	}
}

// groupByCase splits actions into per-case queues, each sorted by seq.
func groupByCase(list []*action) [][]*action {
	byCase := map[string][]*action{}
	var order []string
	for _, a := range list {
		k := fmt.Sprintf("%s/%d/%d", a.Machine, a.AccountID, a.CaseID)
		if _, ok := byCase[k]; !ok {
			order = append(order, k)
		}
		byCase[k] = append(byCase[k], a)
	}
	out := make([][]*action, 0, len(order))
	for _, k := range order {
		q := byCase[k]
		sort.SliceStable(q, func(i, j int) bool { return q[i].Seq < q[j].Seq })
		out = append(out, q)
	}
	return out
}

// runCase performs a case's pending actions in order until none is left or one fails.
func (r *runState) runCase(ctx context.Context, caseID int64) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		a, err := nextPending(ctx, r.j.DB, caseID)
		if err != nil {
			r.problem("actions", fmt.Sprintf("case %d", caseID), err.Error())
			return err
		}
		if a == nil {
			return nil
		}
		if err := r.execute(ctx, a); err != nil {
			r.problem("orchestrator", accountSubject(a.AccountID),
				fmt.Sprintf("%s %s (%s): %v", a.Action, a.Target, caseLabel(a.Machine, a.CaseID), err))
			return err
		}
	}
}

// planQueue reports, in a dry run, what a case's actions would do.
func (r *runState) planQueue(ctx context.Context, q []*action) error {
	for len(q) > 0 {
		a := q[0]
		q = q[1:]
		switch a.Action {
		case actStopVMs, actDestroyVMs:
			targets, child, err := r.expansion(ctx, a)
			if err != nil {
				r.problem("orchestrator", accountSubject(a.AccountID),
					fmt.Sprintf("%s %s (%s): %v", a.Action, a.Target, caseLabel(a.Machine, a.CaseID), err))
				return err
			}
			for _, t := range targets {
				q = append(q, &action{CaseID: a.CaseID, AccountID: a.AccountID, Machine: a.Machine, Seq: a.Seq + 1, Action: child, Target: t})
			}
			sort.SliceStable(q, func(i, j int) bool { return q[i].Seq < q[j].Seq })
			r.count("orchestrator_reads", 1)
		case actNotify:
			var n notice
			if err := json.Unmarshal(a.Payload, &n); err != nil {
				return fmt.Errorf("notice payload of action %d: %w", a.ID, err)
			}
			r.mailed(accountSubject(a.AccountID), &n, true)
		default:
			r.act("orchestrator", accountSubject(a.AccountID), fmt.Sprintf("%s %s (%s)", a.Action, a.Target, caseLabel(a.Machine, a.CaseID)))
			r.count("orchestrator_actions", 1)
		}
	}
	return nil
}

// expansion lists the VMs an expansion acts on: running ones to stop, all but the
// destroyed ones to destroy. An account CloudStack does not know has none.
func (r *runState) expansion(ctx context.Context, a *action) ([]string, string, error) {
	vms, err := r.orch.VMMetrics(ctx, a.Target)
	if errors.Is(err, orchestrator.ErrNotFound) {
		vms, err = nil, nil
	}
	if err != nil {
		return nil, "", err
	}
	var targets []string
	child := actStopVM
	if a.Action == actDestroyVMs {
		child = actDestroyVM
	}
	for _, v := range vms {
		switch a.Action {
		case actStopVMs:
			if v.State == orchestrator.VMStopped || v.State == orchestrator.VMDestroyed || v.State == orchestrator.VMExpunging || v.State == "Error" {
				continue
			}
		case actDestroyVMs:
			if v.State == orchestrator.VMDestroyed || v.State == orchestrator.VMExpunging {
				continue
			}
		}
		targets = append(targets, v.ID)
	}
	sort.Strings(targets)
	return targets, child, nil
}

// execute performs one action and confirms it. An orchestrator call is counted as
// attempted before it is made (attempts > 0 means "may have happened", which is what
// lifting a suspension undoes), then marked done; a crash in between repeats the
// call, which the orchestrator's state check makes harmless.
func (r *runState) execute(ctx context.Context, a *action) error {
	now := r.now
	subj := accountSubject(a.AccountID)
	switch a.Action {
	case actNotify:
		var n notice
		if err := json.Unmarshal(a.Payload, &n); err != nil {
			return fmt.Errorf("notice payload of action %d: %w", a.ID, err)
		}
		var queued bool
		err := mysql.InTx(ctx, r.j.DB, nil, func(tx *sql.Tx) error {
			var err error
			if queued, err = r.j.Outbox.Enqueue(ctx, tx, n.Key, n.Msg); err != nil {
				return err
			}
			return markDone(ctx, tx, a.ID, "queued "+n.Key, now)
		})
		if err != nil {
			return err
		}
		r.mailed(subj, &n, queued)
		return nil
	case actStopVMs, actDestroyVMs:
		targets, child, err := r.expansion(ctx, a)
		if err != nil {
			return err
		}
		r.count("orchestrator_reads", 1)
		return mysql.InTx(ctx, r.j.DB, nil, func(tx *sql.Tx) error {
			for _, t := range targets {
				c := &action{CaseID: a.CaseID, TransitionID: a.TransitionID, AccountID: a.AccountID, Seq: a.Seq + 1, Action: child, Target: t}
				if err := insertAction(ctx, tx, c, now); err != nil {
					return err
				}
			}
			return markDone(ctx, tx, a.ID, fmt.Sprintf("%d VMs", len(targets)), now)
		})
	}

	res, err := r.j.DB.ExecContext(ctx, `UPDATE abuse_actions SET attempts = attempts + 1, updated_at = ?
WHERE id = ? AND status = 'pending'`, now, a.ID)
	if err != nil {
		return fmt.Errorf("count attempt: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return nil // done or cancelled meanwhile
	}
	outcome := "done"
	switch a.Action {
	case actStopVM:
		err = r.orch.StopVM(ctx, a.Target)
	case actStartVM:
		err = r.orch.StartVM(ctx, a.Target)
	case actDestroyVM:
		err = r.orch.DestroyVM(ctx, a.Target, r.j.Config.Expunge)
	case actDisableAccount:
		err = r.orch.DisableAccount(ctx, a.Target)
	case actEnableAccount:
		err = r.orch.EnableAccount(ctx, a.Target)
	default:
		err = fmt.Errorf("unknown action %q", a.Action)
	}
	if errors.Is(err, orchestrator.ErrNotFound) {
		outcome, err = "not found in the orchestrator: nothing to do", nil
	}
	// The outcome is recorded even when the run is being cancelled.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err != nil {
		if _, uerr := r.j.DB.ExecContext(wctx, `UPDATE abuse_actions SET last_error = ?, updated_at = ? WHERE id = ?`,
			truncate(err.Error(), 2000), now, a.ID); uerr != nil {
			zerolog.Ctx(ctx).Error().Err(uerr).Msg("record action error")
		}
		return err
	}
	if err := markDone(wctx, r.j.DB, a.ID, outcome, now); err != nil {
		return err
	}
	r.act("orchestrator", subj, fmt.Sprintf("%s %s (%s)", a.Action, a.Target, caseLabel(a.Machine, a.CaseID)))
	r.count("orchestrator_actions", 1)
	return nil
}

func markDone(ctx context.Context, q querier, id int64, outcome string, now time.Time) error {
	if _, err := q.ExecContext(ctx, `UPDATE abuse_actions SET status = 'done', outcome = ?, last_error = NULL, updated_at = ?, done_at = ?
WHERE id = ? AND status = 'pending'`, truncate(outcome, 255), now, now, id); err != nil {
		return fmt.Errorf("confirm action %d: %w", id, err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// deliver hands queued mail to the SMTP sender. The outbox sends each message at
// most once; a relay that is down leaves mail queued for the next run.
func (r *runState) deliver(ctx context.Context) {
	if r.dry {
		return
	}
	if r.j.Sender == nil {
		zerolog.Ctx(ctx).Info().Msg("no SMTP sender configured: mail stays queued in the outbox")
		return
	}
	limit := r.j.Config.DeliverLimit
	if limit <= 0 {
		limit = 500
	}
	dr, err := r.j.Outbox.Deliver(ctx, r.j.Sender, limit)
	r.count("mail_sent", int64(dr.Sent))
	r.count("mail_requeued", int64(dr.Requeued))
	r.count("mail_suppressed", int64(dr.Suppressed))
	r.count("mail_stuck", int64(len(dr.Stuck)))
	for _, it := range dr.Items {
		switch it.Outcome {
		case mail.OutcomeFailed, mail.OutcomeUnknown:
			r.problem("mail", it.To, fmt.Sprintf("%s: %s: %s", it.Key, it.Outcome, it.Error))
		}
	}
	if err != nil {
		r.problem("mail", "delivery", err.Error())
	}
}
