package abuse

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/cases"
	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/run"
)

// Actions: the side effects of transitions, as lib/cases records them. The
// expansions (stop_vms, destroy_vms) read the account's VMs when they run and add one
// action per VM.
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

// actionFields are the structured fields of an action line.
func actionFields(a *cases.Action) []run.Field {
	return append(caseFields(a.AccountID, a.CaseID, a.Machine), run.Str("action", a.Name), run.Str("target", a.Target))
}

// drive performs pending actions: those this run's transitions just added and those
// earlier runs left (a crash, an orchestrator error), cases in parallel (bounded),
// each case's actions in order. The first failure stops that case (its later actions
// wait: a suspension notice is never queued before the suspension is done) and is a
// problem for the report. The next run retries. A dunning case is re-decided on fresh
// facts right before its actions run.
//
// In a dry run it reports the actions earlier runs left pending (but for cases this
// run's plan closes) and those this run's transitions planned; expansions read the
// orchestrator to list the VMs they would act on.
func (r *runState) drive(ctx context.Context) {
	if r.dry {
		r.planPending(ctx)
		return
	}
	err := r.store.Drive(ctx, cases.DriveOptions{
		Account:     r.j.Config.Account,
		Concurrency: r.concurrency(),
		Perform:     r.perform,
		BeforeCase:  r.recheck,
		Failed: func(ctx context.Context, caseID int64, a *cases.Action, err error) {
			if a == nil {
				r.problem("actions", fmt.Sprintf("case %d", caseID), err.Error(), run.Int("case_id", caseID))
				return
			}
			r.problem("orchestrator", accountSubject(a.AccountID),
				fmt.Sprintf("%s %s (%s): %v", a.Name, a.Target, caseLabel(a.Machine, a.CaseID), err), actionFields(a)...)
		},
	})
	if err != nil {
		r.problem("actions", "pending actions", err.Error())
	}
}

// planPending is drive in a dry run.
func (r *runState) planPending(ctx context.Context) {
	list, err := r.store.Pending(ctx, r.j.DB, r.j.Config.Account)
	if err != nil {
		r.problem("actions", "pending actions", err.Error())
		return
	}
	r.mu.Lock()
	var keep []*cases.Action
	for _, a := range list {
		if !r.cancelled[a.CaseID] {
			keep = append(keep, a)
		}
	}
	keep, r.planned = append(keep, r.planned...), nil
	r.mu.Unlock()
	forEach(ctx, r.concurrency(), cases.Queues(keep), func(ctx context.Context, q []*cases.Action) {
		log := zerolog.Ctx(ctx).With().Int64("case_id", q[0].CaseID).Int64("account_id", q[0].AccountID).Logger()
		// A call the breaker did not make is in the report; the run's last line says why.
		if err := r.planQueue(log.WithContext(ctx), q); err != nil && !errors.Is(err, errNotCalled) {
			log.Error().Err(err).Msg("action failed: the case waits, the next run retries")
		}
	})
}

// recheck re-decides a dunning case on fresh facts right before its side effects
// run: a payment that landed since the case was decided resolves it (cancelling its
// pending suspension and queueing the lift) instead of being acted on.
func (r *runState) recheck(ctx context.Context, a *cases.Action) {
	if a.Machine != Dunning {
		return
	}
	c, err := r.store.Case(ctx, r.j.DB, a.CaseID)
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

// planQueue reports, in a dry run, what a case's actions would do.
func (r *runState) planQueue(ctx context.Context, q []*cases.Action) error {
	for len(q) > 0 {
		a := q[0]
		q = q[1:]
		switch a.Name {
		case actStopVMs, actDestroyVMs:
			targets, child, err := r.expansion(ctx, a)
			if err != nil {
				r.problem("orchestrator", accountSubject(a.AccountID),
					fmt.Sprintf("%s %s (%s): %v", a.Name, a.Target, caseLabel(a.Machine, a.CaseID), err), actionFields(a)...)
				return err
			}
			for _, t := range targets {
				q = append(q, &cases.Action{CaseID: a.CaseID, AccountID: a.AccountID, Machine: a.Machine, Seq: a.Seq + 1, Name: child, Target: t})
			}
			sort.SliceStable(q, func(i, j int) bool { return q[i].Seq < q[j].Seq })
			r.count("orchestrator_reads", 1)
		case actNotify:
			var n notice
			if err := json.Unmarshal(a.Payload, &n); err != nil {
				return fmt.Errorf("notice payload of action %d: %w", a.ID, err)
			}
			r.mailed(a.AccountID, a.CaseID, a.Machine, &n, true)
		default:
			r.act("orchestrator", accountSubject(a.AccountID), fmt.Sprintf("%s %s (%s)", a.Name, a.Target, caseLabel(a.Machine, a.CaseID)),
				actionFields(a)...)
			r.count("orchestrator_actions", 1)
		}
	}
	return nil
}

// expansion lists the VMs an expansion acts on: running ones to stop, all but the
// destroyed ones to destroy. An account CloudStack does not know has none.
func (r *runState) expansion(ctx context.Context, a *cases.Action) ([]string, string, error) {
	vms, err := r.orch.VMMetrics(ctx, a.Target)
	if errors.Is(err, orchestrator.ErrNotFound) {
		vms, err = nil, nil
	}
	if err != nil {
		return nil, "", err
	}
	var targets []string
	child := actStopVM
	if a.Name == actDestroyVMs {
		child = actDestroyVM
	}
	for _, v := range vms {
		switch a.Name {
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

// perform carries out one action for the case store, which confirms it:
//   - a notice is queued in the outbox in the confirmation's own transaction;
//   - an expansion reads the VMs and adds one action per VM in that transaction;
//   - an orchestrator call is counted as attempted before it is made (attempts > 0
//     means "may have happened", which is what lifting a suspension undoes), then
//     confirmed; a crash in between repeats the call, which the orchestrator's state
//     check makes harmless.
func (r *runState) perform(ctx context.Context, a *cases.Action) (cases.Outcome, error) {
	switch a.Name {
	case actNotify:
		var n notice
		if err := json.Unmarshal(a.Payload, &n); err != nil {
			return cases.Outcome{}, fmt.Errorf("notice payload of action %d: %w", a.ID, err)
		}
		var queued bool
		return cases.Outcome{
			Detail: "queued " + n.Key,
			InTx: func(ctx context.Context, tx *sql.Tx) error {
				var err error
				queued, err = r.j.Outbox.Enqueue(ctx, tx, n.Key, n.Msg)
				return err
			},
			After: func() { r.mailed(a.AccountID, a.CaseID, a.Machine, &n, queued) },
		}, nil
	case actStopVMs, actDestroyVMs:
		targets, child, err := r.expansion(ctx, a)
		if err != nil {
			return cases.Outcome{}, err
		}
		r.count("orchestrator_reads", 1)
		out := cases.Outcome{Detail: fmt.Sprintf("%d VMs", len(targets))}
		for _, t := range targets {
			out.Then = append(out.Then, &cases.Action{Seq: a.Seq + 1, Name: child, Target: t})
		}
		return out, nil
	}

	if r.brk != nil {
		// CloudStack unreachable this run: the action is not even marked attempted.
		if err := r.brk.skip(); err != nil {
			return cases.Outcome{}, err
		}
	}
	ok, err := r.store.Attempt(ctx, a)
	if err != nil {
		return cases.Outcome{}, err
	}
	if !ok {
		return cases.Outcome{}, cases.ErrSettled
	}
	outcome := "done"
	switch a.Name {
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
		err = fmt.Errorf("unknown action %q", a.Name)
	}
	if errors.Is(err, orchestrator.ErrNotFound) {
		outcome, err = "not found in the orchestrator: nothing to do", nil
	}
	if err != nil {
		return cases.Outcome{}, err
	}
	return cases.Outcome{Detail: outcome, After: func() {
		r.act("orchestrator", accountSubject(a.AccountID), fmt.Sprintf("%s %s (%s)", a.Name, a.Target, caseLabel(a.Machine, a.CaseID)),
			actionFields(a)...)
		r.count("orchestrator_actions", 1)
	}}, nil
}

// deliver hands queued mail to the SMTP sender. The outbox sends each message at
// most once; a relay that is down leaves mail queued for the next run, and deliver
// returns the run's error for it (run.ErrUnreachable, exit 1).
func (r *runState) deliver(ctx context.Context) error {
	if r.dry {
		return nil
	}
	if r.j.Sender == nil {
		zerolog.Ctx(ctx).Info().Msg("no SMTP sender configured: mail stays queued in the outbox")
		return nil
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
			r.problem("mail", it.To, fmt.Sprintf("%s: %s: %s", it.Key, it.Outcome, it.Error),
				run.Str("email", it.To), run.Str("mail_key", it.Key), run.Str("outcome", string(it.Outcome)))
		}
	}
	if errors.Is(err, mail.ErrRelayUnavailable) {
		return run.Unreachable("smtp", err, dr.Left)
	}
	if err != nil {
		r.problem("mail", "delivery", err.Error())
	}
	return nil
}
