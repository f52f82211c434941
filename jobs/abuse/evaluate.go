package abuse

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/run"
)

// chunkSize bounds the accounts whose facts are read in one query.
const chunkSize = 500

// maxSteps bounds the events one account goes through in one run (resolve then
// re-open, flag then suspend).
const maxSteps = 4

func chunks[T any](ids []T, n int) [][]T {
	var out [][]T
	for len(ids) > n {
		out = append(out, ids[:n])
		ids = ids[n:]
	}
	if len(ids) > 0 {
		out = append(out, ids)
	}
	return out
}

// dunning decides every dunning candidate and applies the events.
func (r *runState) dunning(ctx context.Context) error {
	p := r.j.Policy.Dunning
	ids, err := dunningCandidates(ctx, r.j.DB, r.now, p, r.j.Config.Account)
	if err != nil {
		return err
	}
	r.count("dunning_candidates", int64(len(ids)))
	progress := run.ProgressFrom(ctx)
	done := int64(0)
	for _, chunk := range chunks(ids, chunkSize) {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		facts, err := dunningFacts(ctx, r.j.DB, chunk)
		if err != nil {
			return err
		}
		open, err := r.store.OpenCases(ctx, r.j.DB, Dunning, chunk)
		if err != nil {
			return err
		}
		for _, id := range chunk {
			f := facts[id]
			if f == nil {
				r.problem("data", accountSubject(id), "invoices or a case for an account that does not exist",
					run.Int("account_id", id), run.Str("machine", Dunning))
				continue
			}
			r.evaluate(ctx, Dunning, id, open[id], r.dunningEval(*f))
			done++
			progress.Step("dunning", done, int64(len(ids)))
		}
	}
	return nil
}

// dunningEval decides on facts: the plan uses f, and inside the transaction the
// facts are read again through q (a payment landed meanwhile is honoured).
func (r *runState) dunningEval(planned DunningFacts) evaluator {
	p := r.j.Policy
	latest := planned // the freshest facts seen: a re-read inside a transaction replaces them
	return func(ctx context.Context, q querier, c *Case, fresh bool) (evaluation, error) {
		if fresh {
			m, err := dunningFacts(ctx, q, []int64{planned.AccountID})
			if err != nil {
				return evaluation{}, err
			}
			if m[planned.AccountID] == nil {
				return evaluation{}, fmt.Errorf("account %d vanished", planned.AccountID)
			}
			latest = *m[planned.AccountID]
		}
		f := latest
		d := DecideDunning(c, f, r.now, p.Dunning)
		return evaluation{Decision: d, subject: dunningSubject(f, r.now, p)}, nil
	}
}

// dunningSubject is who the notices go to and what they say.
func dunningSubject(f DunningFacts, now time.Time, p Policy) subject {
	v := viewDunning(f, now)
	n := noticeData{Name: f.Name, Email: f.Email, AccountID: f.AccountID, Invoices: v.count,
		BillingURL: p.Mail.BillingURL, SupportEmail: p.Mail.SupportEmail, Amount: v.amountText(), DaysLate: max(v.days, 0)}
	if v.oldest != nil {
		n.OldestInvoice = v.oldest.ID
		n.DueDate = v.oldest.DueAt.In(v.loc).Format("2 January 2006")
		suspendOn := v.oldest.DueAt.In(v.loc).AddDate(0, 0, p.Dunning.Suspension.AfterDays)
		if notice := now.Add(p.Dunning.MinNotice.Duration).In(v.loc); suspendOn.Before(notice) {
			suspendOn = notice
		}
		n.SuspendOn = suspendOn.Format("2 January 2006")
	}
	return subject{email: f.Email, cloudstack: f.CloudStackAccountID, notice: n}
}

// freeCredit reads the orchestrator for the free-credit candidates, records a CPU
// sample of each, decides and applies the events. The database is read a chunk at a
// time; the orchestrator once for all candidates (readVMs), so a run never lists the
// cloud twice.
func (r *runState) freeCredit(ctx context.Context) error {
	p := r.j.Policy.FreeCredit
	ids, err := freeCreditCandidates(ctx, r.j.DB, r.now, p, r.j.Config.Account)
	if err != nil {
		return err
	}
	r.count("free_credit_candidates", int64(len(ids)))
	items := make([]*candidate, 0, len(ids))
	for _, chunk := range chunks(ids, chunkSize) {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		facts, err := freeCreditFacts(ctx, r.j.DB, chunk, r.now, p)
		if err != nil {
			return err
		}
		open, err := r.store.OpenCases(ctx, r.j.DB, FreeCredit, chunk)
		if err != nil {
			return err
		}
		for _, id := range chunk {
			items = append(items, &candidate{id: id, f: facts[id], c: open[id]})
		}
	}
	// The orchestrator is read only where a decision needs it: accounts with no
	// case yet (signals) or a flagged one (its evidence), and an orchestrator
	// account.
	var need []*candidate
	for _, it := range items {
		if it.f != nil && it.f.CloudStackAccountID != "" && (it.c == nil || it.c.State == StateFlagged) {
			need = append(need, it)
		}
	}
	r.readVMs(ctx, need)

	progress := run.ProgressFrom(ctx)
	done := int64(0)
	for _, chunk := range chunks(items, chunkSize) {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		samples := map[int64]CPUSample{}
		for _, it := range chunk {
			if it.f == nil || !it.read || it.err != nil {
				continue
			}
			it.f.VMs = it.vms
			s := sampleOf(it.vms, r.now, p.CPU)
			it.f.CPUSamples = mergeSample(it.f.CPUSamples, s)
			samples[it.id] = s
		}
		if !r.dry && len(samples) > 0 {
			if err := recordSamples(ctx, r.j.DB, samples); err != nil {
				return err
			}
			r.count("cpu_samples", int64(len(samples)))
		}
		for _, it := range chunk {
			if it.f == nil {
				r.problem("data", accountSubject(it.id), "a free-credit case for an account that does not exist",
					run.Int("account_id", it.id), run.Str("machine", FreeCredit))
				continue
			}
			if it.err != nil {
				r.problem("orchestrator", accountSubject(it.id),
					fmt.Sprintf("read VMs of %s: %v (not evaluated)", it.f.CloudStackAccountID, it.err),
					run.Int("account_id", it.id), run.Str("machine", FreeCredit))
				continue
			}
			it.f.DisposableDomain = r.j.Disposable.Match(it.f.Email)
			r.evaluate(ctx, FreeCredit, it.id, it.c, r.freeCreditEval(*it.f))
			done++
			progress.Step("free credit", done, int64(len(ids)))
		}
	}
	return nil
}

// candidate is one free-credit candidate on its way through a run: its facts, its
// open case, and this run's reading of its VMs.
type candidate struct {
	id   int64
	f    *FreeCreditFacts
	c    *Case
	read bool
	vms  []VMFact
	err  error
}

// readVMs reads the VMs of the candidates that need them, in as few orchestrator
// calls as the API allows: one paged listing of every VM (listVirtualMachinesMetrics
// with listall) when it takes fewer calls than reading them account by account (two
// calls each), else account by account with bounded concurrency. A listing that fails
// leaves every candidate unread (not evaluated this run); account by account, only the
// one that failed.
func (r *runState) readVMs(ctx context.Context, need []*candidate) {
	if len(need) == 0 {
		return
	}
	r.count("orchestrator_reads", int64(len(need)))
	for _, it := range need {
		it.read = true
	}
	log := zerolog.Ctx(ctx)
	// The totals cost two calls and a listing at least two: below three accounts
	// (six calls), asking cannot pay off.
	if len(need) >= 3 {
		calls, err := r.orch.ListingCalls(ctx)
		switch {
		case err != nil:
			log.Warn().Err(err).Msg("orchestrator totals: reading VMs account by account")
		case calls <= 2*len(need):
			log.Debug().Int("calls", calls).Int("accounts", len(need)).Msg("reading VMs in one listing")
			all, err := r.orch.VMMetrics(ctx, "")
			byAccount := map[string][]orchestrator.VM{}
			for _, v := range all {
				byAccount[v.AccountID] = append(byAccount[v.AccountID], v)
			}
			for _, it := range need {
				it.vms, it.err = vmFacts(byAccount[it.f.CloudStackAccountID]), err
				if err != nil {
					it.err = fmt.Errorf("list every VM: %w", err)
				}
			}
			return
		}
	}
	forEach(ctx, r.concurrency(), need, func(ctx context.Context, it *candidate) {
		vms, err := r.orch.VMMetrics(ctx, it.f.CloudStackAccountID)
		if errors.Is(err, orchestrator.ErrNotFound) {
			vms, err = nil, nil
		}
		it.vms, it.err = vmFacts(vms), err
	})
}

// vmFacts is the orchestrator's reading as the decision sees it.
func vmFacts(vms []orchestrator.VM) []VMFact {
	var out []VMFact
	for _, v := range vms {
		out = append(out, VMFact{ID: v.ID, Name: v.Name, State: v.State, Created: v.Created.UTC(), CPUPercent: v.CPUUsedPercent})
	}
	return out
}

// sampleOf summarises this run's reading of an account's VMs.
func sampleOf(vms []VMFact, now time.Time, p CPUSignal) CPUSample {
	s := CPUSample{At: now}
	total := 0.0
	for _, v := range vms {
		if v.State != orchestrator.VMRunning {
			continue
		}
		s.Running++
		total += v.CPUPercent
		if v.CPUPercent >= p.HotPercent {
			s.Hot++
		}
	}
	if s.Running > 0 {
		s.AvgCPU = total / float64(s.Running)
	}
	return s
}

// mergeSample adds s to samples unless one at the same instant is there (a rerun).
func mergeSample(samples []CPUSample, s CPUSample) []CPUSample {
	for _, x := range samples {
		if x.At.Equal(s.At) {
			return samples
		}
	}
	return append(samples, s)
}

// freeCreditEval decides on facts; fresh re-reads the database half (payment method,
// tags, credit, samples) and keeps this run's orchestrator reading.
func (r *runState) freeCreditEval(planned FreeCreditFacts) evaluator {
	p := r.j.Policy
	latest := planned
	return func(ctx context.Context, q querier, c *Case, fresh bool) (evaluation, error) {
		if fresh {
			m, err := freeCreditFacts(ctx, q, []int64{planned.AccountID}, r.now, p.FreeCredit)
			if err != nil {
				return evaluation{}, err
			}
			if m[planned.AccountID] == nil {
				return evaluation{}, fmt.Errorf("account %d vanished", planned.AccountID)
			}
			f := *m[planned.AccountID]
			f.VMs, f.DisposableDomain = planned.VMs, planned.DisposableDomain
			for _, s := range planned.CPUSamples {
				f.CPUSamples = mergeSample(f.CPUSamples, s)
			}
			latest = f
		}
		f := latest
		d := DecideFreeCredit(c, f, r.now, p.FreeCredit)
		n := noticeData{Name: f.Name, Email: f.Email, AccountID: f.AccountID,
			BillingURL: p.Mail.BillingURL, SupportEmail: p.Mail.SupportEmail}
		return evaluation{Decision: d, subject: subject{email: f.Email, cloudstack: f.CloudStackAccountID, notice: n}}, nil
	}
}

// evaluate decides one account and applies events until the decision is "nothing",
// so a payment resolves a suspension and a fresh case for a younger invoice opens in
// the same run, and a flagged account is suspended at once.
func (r *runState) evaluate(ctx context.Context, machine string, account int64, c *Case, eval evaluator) {
	log := zerolog.Ctx(ctx).With().Int64("account_id", account).Str("machine", machine).Logger()
	ctx = log.WithContext(ctx)
	for step := 0; step < maxSteps; step++ {
		ev, err := eval(ctx, r.j.DB, c, false)
		if err != nil {
			r.problem("data", accountSubject(account), err.Error(), run.Int("account_id", account), run.Str("machine", machine))
			return
		}
		if ev.Event == "" {
			if ev.Reason != "" {
				log.Debug().Str("reason", ev.Reason).Msg("no transition")
			}
			return
		}
		res, err := r.apply(ctx, transitionReq{machine: machine, account: account, expect: c, event: ev.Event,
			eval: eval, actor: ActorJob, runID: r.runID})
		switch {
		case err != nil:
			fields := []run.Field{run.Int("account_id", account)}
			if c != nil {
				fields = append(fields, run.Int("case_id", c.ID), run.Str("state", c.State))
			}
			r.problem("transition", accountSubject(account), fmt.Sprintf("%s %s: %v", machine, ev.Event, err),
				append(fields, run.Str("machine", machine), run.Str("event", ev.Event))...)
			log.Error().Err(err).Str("event", ev.Event).Msg("transition failed")
			return
		case res.conflict:
			r.count("conflicts", 1)
			log.Warn().Str("event", ev.Event).Msg("case changed meanwhile: not acted, the next run decides again")
			return
		case res.event == "":
			r.count("decisions_changed", 1)
			log.Info().Str("planned", ev.Event).Msg("facts changed before acting: nothing to do")
			return
		}
		if res.event != ev.Event {
			r.count("decisions_changed", 1)
		}
		c = res.c
		if !IsOpen(machine, c.State) {
			c = nil
		}
	}
}
