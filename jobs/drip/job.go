package drip

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/cases"
	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/run"
)

// Orchestrator is what the funnel reads from CloudStack for has_vm; *orchestrator.Client
// and its dry-run stand-in implement it. Nil on the Job means no CloudStack: has_vm
// then comes from billed usage, a day late.
type Orchestrator interface {
	// VMs streams every VM a page at a time (with AccountID resolved).
	VMs(ctx context.Context, f orchestrator.ListVMs) iter.Seq2[orchestrator.VM, error]
	// VMMetrics reads one account's VMs (by CloudStack account id).
	VMMetrics(ctx context.Context, accountID string) ([]orchestrator.VM, error)
	// ListingCalls is what one listing of every VM costs, in API calls.
	ListingCalls(ctx context.Context) (int, error)
}

var (
	_ Orchestrator = (*orchestrator.Client)(nil)
	_ Orchestrator = (*orchestrator.DryRun)(nil)
)

// Config is a run's settings.
type Config struct {
	// DryRun plans instead of acting: the report lists every message a real run would
	// queue (and Preview gets each one), and nothing is written, queued or sent.
	DryRun bool
	// Account limits the run to one account id (0: all).
	Account int64
	// MailFrom is the From of every funnel message; required for a real run.
	MailFrom string
	// ConsoleURL, DocsURL, BillingURL and SupportEmail are what the templates link to
	// (MessageData); required for a real run.
	ConsoleURL, DocsURL, BillingURL, SupportEmail string
	// Since is when the funnel goes live, for its first real run only (zero: that
	// run's instant): signups created from then on enter it, the customers already
	// there never do. Once recorded it cannot move.
	Since time.Time
	// Recheck bounds how long an account waiting for its next step goes without a
	// look, so a conversion or an exit is recorded within that time even when no
	// step is due (no mail goes out after either way: both are re-checked when a
	// step is queued and when its message is claimed). Default 24h.
	Recheck time.Duration
	// DeliverLimit bounds the messages one run delivers (default 2000).
	DeliverLimit int
	// Concurrency bounds the orchestrator reads in flight (default 4).
	Concurrency int
}

// Job is the drip job: one funnel, run every 15 minutes. Build it in cmd/jobs.
type Job struct {
	DB *sql.DB
	// Orchestrator answers has_vm; nil falls back to billed usage.
	Orchestrator Orchestrator
	// Outbox carries the delivery settings (MaxAttempts, Backoff, StuckAfter); nil
	// means lib/mail's defaults. The job sets its DB, clock, KeyPrefix (this funnel's
	// keys) and BeforeSend (the claim-time re-check of the goal and the exits) itself,
	// so no funnel message can go out without that check.
	Outbox *mail.Outbox
	// Sender delivers this funnel's due messages at the end of a run; nil leaves them
	// queued (a dry run never sends).
	Sender mail.MessageSender
	Funnel *Funnel
	// Templates are the funnel's templates (embedded, maybe layered with --templates).
	Templates *mail.Templates
	// Links builds each message's unsubscribe link (RFC 8058).
	Links mail.UnsubscribeLinks
	// Preview, when set, gets every message the run queues (or, in a dry run, would
	// queue), fully rendered: `--preview DIR` writes them as .eml files.
	Preview func(p Planned, msg mail.Message) error
	Config  Config
	// Now is the clock (--now holds it still); nil means time.Now.
	Now func() time.Time
}

func (j *Job) now() time.Time {
	clock := j.Now
	if clock == nil {
		clock = time.Now
	}
	return clock().UTC()
}

// ActorJob is the actor of the transitions a run makes.
const ActorJob = "cronkit"

// Defaults of zero Config fields.
const (
	defaultRecheck      = 24 * time.Hour
	defaultDeliverLimit = 2000
	// chunkSize bounds the accounts whose facts one set of queries reads.
	chunkSize = 500
	// enrollSlack reaches back before the enrolment watermark for signups committed
	// late with an earlier created_at (a slow signup transaction).
	enrollSlack = time.Hour
)

func (c Config) recheck() time.Duration {
	if c.Recheck > 0 {
		return c.Recheck
	}
	return defaultRecheck
}

// CheckConfig validates a run's configuration without the database, so a command
// can refuse it (exit 2) before a run starts; Run checks it again. Its errors name
// the flag.
func (j *Job) CheckConfig() error { return j.check(true, false) }

// check validates the job's configuration; its errors are usage errors (exit 2)
// naming the flag. forRun adds what only a run needs; needDB the database.
func (j *Job) check(forRun, needDB bool) error {
	if needDB && j.DB == nil {
		return errors.New("drip: no database")
	}
	if j.Funnel == nil || j.Templates == nil {
		return errors.New("drip: no funnel or templates")
	}
	if err := j.Funnel.CheckTemplates(j.Templates); err != nil {
		return err
	}
	if !forRun {
		return nil
	}
	if err := j.Links.Check(); err != nil {
		return run.Usagef("drip: unsubscribe links (--unsubscribe-url, --unsubscribe-secret, --unsubscribe-mailto): %v", err)
	}
	if j.Config.DryRun {
		return nil
	}
	if j.Config.MailFrom == "" {
		return run.Usagef("drip: no sender address: set --mail-from")
	}
	if err := (mail.Message{From: j.Config.MailFrom, To: "x@example.com", Subject: "x", Text: "x"}).Validate(); err != nil {
		return run.Usagef("drip: --mail-from %q is not an email address", j.Config.MailFrom)
	}
	var missing []string
	for _, f := range []struct{ flag, v string }{
		{"--console-url", j.Config.ConsoleURL}, {"--docs-url", j.Config.DocsURL},
		{"--billing-url", j.Config.BillingURL}, {"--support-email", j.Config.SupportEmail},
	} {
		if strings.TrimSpace(f.v) == "" {
			missing = append(missing, f.flag)
		}
	}
	if len(missing) > 0 {
		return run.Usagef("drip: the templates link to the console, docs, billing page and support address: set %s", strings.Join(missing, ", "))
	}
	return nil
}

// outbox is the funnel's outbox: only its own keys, and the claim-time check.
func (j *Job) outbox() *mail.Outbox {
	o := mail.Outbox{}
	if j.Outbox != nil {
		o = *j.Outbox
	}
	o.DB, o.Now, o.KeyPrefix, o.BeforeSend = j.DB, j.Now, j.Funnel.keyPrefix(), j.stillWanted
	return &o
}

// store is the case store on the run's clock.
func (j *Job) store(now time.Time, dry bool) *cases.Store {
	return &cases.Store{DB: j.DB, Machines: []*cases.Machine{j.Funnel.Machine()}, Now: func() time.Time { return now }, DryRun: dry}
}

// runState is one run: the clock fixed at its start, the store on that clock and the
// report.
type runState struct {
	j      *Job
	now    time.Time
	runID  string
	dry    bool
	store  *cases.Store
	usesVM bool

	mu  sync.Mutex
	rep *run.Report
	// listingCalls caches what a listing of every VM costs (0: not asked yet).
	listingCalls int
}

func (r *runState) act(kind, subject, detail string, fields ...run.Field) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.Act(kind, subject, detail, fields...)
}

func (r *runState) problem(kind, subject, detail string, fields ...run.Field) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.Problem(kind, subject, detail, fields...)
}

func (r *runState) count(name string, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.Count(name, n)
}

func accountSubject(id int64) string { return fmt.Sprintf("account %d", id) }

// Run takes the funnel one step further for every account due:
//
//  1. the funnel's start is read (recorded by its first real run), and the signups
//     created since the last run are enrolled (drip_due) in one statement;
//  2. the accounts due now (a range of drip_due_check) are read a chunk at a time,
//     their facts in a fixed number of queries per chunk, and decided; has_vm is read
//     from the orchestrator only for accounts at a step that asks for it;
//  3. where a decision fires an event, one transaction re-reads the account's facts
//     under a lock on its row, decides again, moves the case (with its evidence, run
//     id and actor) and, for a step, queues its message in the outbox under the key
//     of (funnel, account, step), with the send time after the window and the cap;
//     skips repeat until the account waits;
//  4. each account's next look is written (its next step's due time, at most Recheck
//     ahead; NULL once it left the funnel);
//  5. the funnel's due messages are delivered (when a Sender is set): each is
//     re-checked against the goal and the exits in the transaction that claims it,
//     and a message queued before the account converted or left ends cancelled; an
//     account whose message bounced or was cancelled is decided again at once.
//
// Item-level failures are problems in the report (exit 3); the account keeps its
// place and the next run retries. A dry run does all of it but write, queue or send.
func (j *Job) Run(ctx context.Context) (*run.Report, error) {
	rep := run.NewReport("drip")
	if err := j.check(true, true); err != nil {
		return rep, err
	}
	r := &runState{j: j, now: j.now(), runID: run.FromContext(ctx).ID, dry: j.Config.DryRun, rep: rep}
	r.store = j.store(r.now, r.dry)
	for _, s := range j.Funnel.Steps {
		if slices.Contains(s.Unless, FactHasVM) {
			r.usesVM = true
		}
	}
	log := zerolog.Ctx(ctx)
	log.Info().Time("now", r.now).Str("funnel", j.Funnel.Name).Int64("account", j.Config.Account).Msg("drip run: evaluating")

	from, err := r.enroll(ctx)
	if err != nil {
		return rep, err
	}
	ids, err := r.candidates(ctx, from)
	if err != nil {
		return rep, err
	}
	r.count("candidates", int64(len(ids)))
	progress := run.ProgressFrom(ctx)
	for i, chunk := range chunks(ids, chunkSize) {
		if err := ctx.Err(); err != nil {
			return rep, context.Cause(ctx)
		}
		if err := r.chunk(ctx, chunk); err != nil {
			return rep, err
		}
		progress.Step("accounts", int64(min((i+1)*chunkSize, len(ids))), int64(len(ids)))
	}
	if err := ctx.Err(); err != nil {
		return rep, context.Cause(ctx)
	}
	again, smtpDown := r.deliver(ctx)
	if len(again) > 0 {
		r.count("decided_after_delivery", int64(len(again)))
		if err := r.chunk(ctx, again); err != nil {
			return rep, err
		}
	}
	// An unreachable relay stops the run (exit 1): the mail stays queued.
	return rep, smtpDown
}

// Candidates returns the accounts a run would look at now: the run's candidate query
// alone (the range of drip_due_check), without enrolling anything. The benchmark
// measures runs against it.
func (j *Job) Candidates(ctx context.Context) ([]int64, error) {
	r := &runState{j: j, now: j.now(), rep: run.NewReport("drip")}
	return r.candidates(ctx, time.Time{})
}

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

// enroll reads (or, on the first real run, records) the funnel's start and enrols
// the signups created since the last run; it returns where a dry run's look for new
// signups starts (a real run has enrolled them already).
func (r *runState) enroll(ctx context.Context) (time.Time, error) {
	f := r.j.Funnel
	var started, until time.Time
	err := r.j.DB.QueryRowContext(ctx, queryFunnelStart, f.Name).Scan(&started, &until)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		started = r.now
		if !r.j.Config.Since.IsZero() {
			started = r.j.Config.Since.UTC()
		}
		if started.After(r.now) {
			return time.Time{}, run.Usagef("drip: --since %s is after the run's instant %s", started.Format(time.RFC3339), r.now.Format(time.RFC3339))
		}
		until = started
		if r.dry {
			r.act("note", "funnel "+f.Name, fmt.Sprintf("not started yet: a real run starts it at %s; signups from then on enter (--since sets an earlier start)",
				started.Format(time.RFC3339)), run.Str("funnel", f.Name), run.Time("started_at", started))
		} else if _, err := r.j.DB.ExecContext(ctx, execStartFunnel, f.Name, started, started, r.now); err != nil {
			return time.Time{}, fmt.Errorf("start funnel %s: %w", f.Name, err)
		} else {
			zerolog.Ctx(ctx).Info().Time("started_at", started).Str("funnel", f.Name).Msg("funnel started: signups from now on enter it")
			r.act("start", "funnel "+f.Name, "signups created from "+started.Format(time.RFC3339)+" on enter the funnel",
				run.Str("funnel", f.Name), run.Time("started_at", started))
		}
	case err != nil:
		return time.Time{}, fmt.Errorf("funnel %s start: %w", f.Name, err)
	default:
		started, until = started.UTC(), until.UTC()
		if s := r.j.Config.Since; !s.IsZero() && !s.Equal(started) {
			return time.Time{}, run.Usagef("drip: funnel %s started at %s; --since (%s) applies to the first run only and cannot move it",
				f.Name, started.Format(time.RFC3339), s.UTC().Format(time.RFC3339))
		}
	}
	from := until.Add(-enrollSlack)
	if from.Before(started) {
		from = started
	}
	if r.dry || r.now.Before(from) {
		return from, nil
	}
	var n int64
	err = mysql.InTx(ctx, r.j.DB, nil, func(tx *sql.Tx) error {
		filter, args := "", []any{f.Name, r.now, from, r.now}
		if r.j.Config.Account != 0 {
			filter, args = accountOnlyNew, append(args, r.j.Config.Account)
		}
		res, err := tx.ExecContext(ctx, fmt.Sprintf(execEnroll, filter), args...)
		if err != nil {
			return fmt.Errorf("enrol signups: %w", err)
		}
		n, _ = res.RowsAffected()
		if r.j.Config.Account != 0 {
			return nil // one account's run must not move the watermark past the others
		}
		if _, err := tx.ExecContext(ctx, execAdvanceFunnel, r.now, f.Name); err != nil {
			return fmt.Errorf("advance funnel %s: %w", f.Name, err)
		}
		return nil
	})
	if err != nil {
		return time.Time{}, err
	}
	r.count("enrolled", n)
	return from, nil
}

// candidates runs the candidate query: the accounts due now (and, in a dry run, the
// signups a real run would have enrolled).
func (r *runState) candidates(ctx context.Context, from time.Time) ([]int64, error) {
	f, acct := r.j.Funnel, r.j.Config.Account
	var query string
	var args []any
	if r.dry {
		due, new := "", ""
		args = []any{f.Name, r.now}
		if acct != 0 {
			due, args = accountOnlyDue, append(args, acct)
		}
		args = append(args, from, r.now)
		if acct != 0 {
			new, args = accountOnlyNew, append(args, acct)
		}
		args = append(args, f.Name)
		query = fmt.Sprintf(queryDueAndNew, due, new)
	} else {
		filter := ""
		args = []any{f.Name, r.now}
		if acct != 0 {
			filter, args = accountOnlyDue, append(args, acct)
		}
		query = fmt.Sprintf(queryDue, filter)
	}
	rows, err := r.j.DB.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("drip candidates: %w", err)
	}
	var ids []int64
	err = scanRows(rows, func(rows *sql.Rows) error {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return err
		}
		ids = append(ids, id)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("drip candidates: %w", err)
	}
	return ids, nil
}

// check is an account's next look: at, or NULL (done) once it left the funnel.
type check struct {
	account int64
	at      time.Time
	done    bool
}

// chunk decides a chunk of accounts and writes their next looks.
func (r *runState) chunk(ctx context.Context, ids []int64) error {
	m, err := r.j.loadSignups(ctx, r.j.DB, ids, r.now, loadOptions{})
	if err != nil {
		return err
	}
	list := make([]*signup, 0, len(ids))
	var checks []check
	for _, id := range ids {
		s := m[id]
		if s == nil {
			// In drip_due, gone from accounts: nothing to send to, ever.
			r.count("accounts_gone", 1)
			checks = append(checks, check{account: id, done: true})
			continue
		}
		list = append(list, s)
	}
	if r.usesVM {
		var need []*signup
		for _, s := range list {
			if d := r.j.Funnel.Decide(s.input(), r.now); r.asksVM(d) {
				need = append(need, s)
			}
		}
		if err := r.readVMs(ctx, need); err != nil {
			return err
		}
	}
	for _, s := range list {
		if c, ok := r.evaluate(ctx, s); ok {
			checks = append(checks, c)
		}
	}
	return r.setChecks(ctx, checks)
}

// setChecks writes the next looks in one statement (not in a dry run).
func (r *runState) setChecks(ctx context.Context, checks []check) error {
	if r.dry || len(checks) == 0 {
		return nil
	}
	args := make([]any, 0, 3*len(checks))
	for _, c := range checks {
		var at any
		if !c.done {
			at = c.at
		}
		args = append(args, r.j.Funnel.Name, c.account, at)
	}
	values := strings.TrimSuffix(strings.Repeat("(?, ?, ?), ", len(checks)), ", ")
	if _, err := r.j.DB.ExecContext(ctx, fmt.Sprintf(execSetChecks, values), args...); err != nil {
		return fmt.Errorf("record next looks of %d accounts: %w", len(checks), err)
	}
	return nil
}

// nextCheck is when a waiting account is looked at again: its next step's due time,
// or its queued message's send time (delivery happens at the end of that run), never
// more than Recheck ahead.
func (r *runState) nextCheck(s *signup, d Decision) check {
	if s.c != nil && s.c.ClosedAt != nil {
		return check{account: s.id, done: true}
	}
	at := r.now.Add(r.j.Config.recheck())
	var next time.Time
	switch {
	case s.pending != "":
		next = later(s.pendingAt, r.now)
	case !d.DueAt.IsZero():
		next = later(d.DueAt, r.now)
	}
	if !next.IsZero() && next.Before(at) {
		at = next
	}
	return check{account: s.id, at: at}
}

// asksVM reports whether d sends a step whose `unless` names has_vm: only then is
// the orchestrator asked.
func (r *runState) asksVM(d Decision) bool {
	if d.Event != EventSend {
		return false
	}
	st, _, ok := r.j.Funnel.Step(d.Step)
	return ok && slices.Contains(st.Unless, FactHasVM)
}

// maxSteps bounds the transitions of one account in one run: skips chain, a send
// stops the chain (its message is in flight), and a close ends it.
func (r *runState) maxSteps() int { return len(r.j.Funnel.Steps) + 4 }

// evaluate decides one account and applies events until it waits, returning its
// next look (ok false: leave it as it is, the next run looks again).
func (r *runState) evaluate(ctx context.Context, s *signup) (check, bool) {
	log := zerolog.Ctx(ctx).With().Int64("account_id", s.id).Logger()
	ctx = log.WithContext(ctx)
	fields := func(extra ...run.Field) []run.Field {
		f := []run.Field{run.Int("account_id", s.id)}
		if s.c != nil && s.c.ID != 0 {
			f = append(f, run.Int("case_id", s.c.ID), run.Str("state", s.c.State))
		}
		return append(f, extra...)
	}
	for step := 0; step < r.maxSteps(); step++ {
		d := r.j.Funnel.Decide(s.input(), r.now)
		if d.Problem != "" {
			r.problem("funnel", accountSubject(s.id), d.Problem+": not evaluated; `cronkit drip exit` it, or restore the step",
				fields()...)
			return check{}, false
		}
		if d.Event == "" {
			if d.Reason != "" {
				log.Debug().Str("reason", d.Reason).Msg("no transition")
			}
			return r.nextCheck(s, d), true
		}
		if r.asksVM(d) && !s.vmRead {
			// A skip led to a step that asks: read this one account now.
			if err := r.readVMs(ctx, []*signup{s}); err != nil {
				r.problem("orchestrator", accountSubject(s.id), fmt.Sprintf("has_vm: %v (not evaluated)", err), fields()...)
				return check{}, false
			}
			continue
		}
		if s.vmErr != nil {
			r.problem("orchestrator", accountSubject(s.id), fmt.Sprintf("has_vm: %v (not evaluated)", s.vmErr), fields()...)
			return check{}, false
		}
		res, err := r.apply(ctx, s, d)
		switch {
		case errors.Is(err, cases.ErrConflict):
			r.count("conflicts", 1)
			log.Warn().Str("event", d.Event).Msg("case changed meanwhile: not acted, the next run decides again")
			return check{}, false
		case err != nil:
			r.problem("transition", accountSubject(s.id), fmt.Sprintf("%s: %v", d.Event, err), fields(run.Str("event", d.Event))...)
			log.Error().Err(err).Str("event", d.Event).Msg("transition failed")
			return check{}, false
		case res.Event == "":
			r.count("decisions_changed", 1)
			log.Info().Str("planned", d.Event).Msg("facts changed before acting: nothing to do")
			return check{}, false
		}
		if res.Event != d.Event {
			r.count("decisions_changed", 1)
		}
	}
	r.problem("funnel", accountSubject(s.id), fmt.Sprintf("still moving after %d transitions in one run", r.maxSteps()), fields()...)
	return check{}, false
}

// apply fires d's event for s in one transaction (lib/cases.Apply): the facts are
// read again under a lock on the account row, the decision made again on them, and
// the case, its transition and (for a step) its message written together. s is
// updated to what the transaction saw and did.
func (r *runState) apply(ctx context.Context, s *signup, d Decision) (cases.Result, error) {
	var expect *Case
	if s.c != nil && s.c.ClosedAt == nil {
		expect = s.c
	}
	fresh, decided := s, d
	req := cases.Request{
		Machine: r.j.Funnel.MachineName(), AccountID: s.id, Expect: expect, Actor: ActorJob, RunID: r.runID,
		Decide: func(ctx context.Context, q cases.Querier, _ *cases.Case) (cases.Decision, error) {
			if !r.dry {
				m, err := r.j.loadSignups(ctx, q, []int64{s.id}, r.now, loadOptions{})
				if err != nil {
					return cases.Decision{}, err
				}
				if m[s.id] == nil {
					return cases.Decision{}, fmt.Errorf("account %d vanished", s.id)
				}
				fresh = m[s.id]
				fresh.hasVM, fresh.vmRead = s.hasVM, s.vmRead
			}
			decided = r.j.Funnel.Decide(fresh.input(), r.now)
			if decided.Problem != "" {
				return cases.Decision{}, nil
			}
			return decided.Cases(), nil
		},
		Effects: func(ctx context.Context, ch *cases.Change) error {
			return r.effects(ctx, ch, fresh, decided)
		},
	}
	res, err := r.store.Apply(ctx, req)
	if err != nil || res.Event == "" {
		return res, err
	}
	// The account as the transaction left it.
	*s = *fresh
	c := *res.Case
	s.c = &c
	if res.Event == EventSend {
		s.pending, s.pendingAt = decided.Step, decided.SendAt
		s.marketing = append(s.marketing, decided.SendAt)
	}
	return res, nil
}

// effects are a transition's writes beside the case: for a step, its message into
// the outbox (and to Preview); for a close, the account's next look set to never.
// The report lines are written once the transaction commits.
func (r *runState) effects(ctx context.Context, ch *cases.Change, s *signup, d Decision) error {
	f := r.j.Funnel
	subject := accountSubject(s.id)
	caseFields := func(extra ...run.Field) []run.Field {
		out := []run.Field{run.Int("account_id", s.id)}
		if ch.Case.ID != 0 {
			out = append(out, run.Int("case_id", ch.Case.ID))
		}
		return append(out, extra...)
	}
	switch d.Event {
	case EventSend:
		msg, err := r.j.message(s, d)
		if err != nil {
			return fmt.Errorf("message %s: %w", d.Step, err)
		}
		p := d.Planned(s.id, r.now)
		if ch.Tx != nil {
			res, err := r.j.outbox().EnqueueAt(ctx, ch.Tx, f.messageKey(s.id, d.Step), msg, d.SendAt)
			if err != nil {
				return err
			}
			switch {
			case !res.New:
				ch.Note(" (its message was already in the outbox: not queued again)")
			case res.Suppressed != nil:
				ch.Note(fmt.Sprintf(" (recipient suppressed: %s; recorded, not sent)", res.Suppressed.Kind))
			}
		}
		if r.j.Preview != nil {
			if err := r.j.Preview(p, msg); err != nil {
				return fmt.Errorf("preview %s: %w", d.Step, err)
			}
		}
		ch.AfterCommit(func() {
			zerolog.Ctx(ctx).Info().Str("step", d.Step).Time("send_at", p.SendAt).Str("time_zone", p.Location.String()).
				Msg("step queued")
			r.count("queued", 1)
			if p.ZoneFallback {
				r.count("time_zone_fallbacks", 1)
			}
			r.act("queue", subject, p.Detail(), p.Fields()...)
		})
	case EventSkip:
		ch.AfterCommit(func() {
			zerolog.Ctx(ctx).Info().Str("step", d.Step).Str("reason", d.Reason).Msg("step skipped")
			r.count("skipped", 1)
			r.act("skip", subject, d.Reason, caseFields(run.Str("step", d.Step))...)
		})
	case EventConvert, EventExit, EventComplete:
		if ch.Tx != nil {
			if err := setCheck(ctx, ch.Tx, f.Name, s.id, nil); err != nil {
				return err
			}
		}
		ch.AfterCommit(func() {
			zerolog.Ctx(ctx).Info().Str("from", ch.From).Str("to", ch.To).Str("exit", d.Exit).Str("reason", d.Reason).
				Msg("left the funnel")
			r.count(ch.To, 1)
			extra := []run.Field{run.Str("from", ch.From)}
			if d.Exit != "" {
				extra = append(extra, run.Str("exit", d.Exit))
			}
			r.act(d.Event, subject, fmt.Sprintf("%s -> %s: %s", ch.From, ch.To, d.Reason), caseFields(extra...)...)
		})
	}
	return nil
}

// setCheck sets one account's next look (nil: never) inside tx.
func setCheck(ctx context.Context, tx *sql.Tx, funnel string, account int64, at *time.Time) error {
	var v any
	if at != nil {
		v = *at
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(execSetChecks, "(?, ?, ?)"), funnel, account, v); err != nil {
		return fmt.Errorf("record next look of account %d: %w", account, err)
	}
	return nil
}

// message renders step d.Step for s: the marketing message with its one-click
// unsubscribe link in the headers and the bodies.
func (j *Job) message(s *signup, d Decision) (mail.Message, error) {
	f := j.Funnel
	step, _, ok := f.Step(d.Step)
	if !ok {
		return mail.Message{}, fmt.Errorf("no step %q in funnel %s", d.Step, f.Name)
	}
	link, err := j.Links.Link(s.id, f.Name)
	if err != nil {
		return mail.Message{}, err
	}
	data := MessageData{Name: s.name, Email: s.email, AccountID: s.id,
		TrialCredit: strings.Join(s.trialLeft, " + "),
		ConsoleURL:  j.Config.ConsoleURL, DocsURL: j.Config.DocsURL, BillingURL: j.Config.BillingURL,
		SupportEmail: j.Config.SupportEmail, UnsubscribeURL: link.URL}
	if !s.trialExpires.IsZero() {
		data.TrialEndsOn = LocalDate(s.trialExpires, d.Location)
	}
	subject, text, html, err := j.Templates.Render(step.Template, data)
	if err != nil {
		return mail.Message{}, err
	}
	return mail.Message{
		Category: mail.Marketing, From: j.Config.MailFrom, To: s.email,
		Subject: strings.TrimSpace(subject), Text: text, HTML: html,
		ListUnsubscribeURL: link.URL, ListUnsubscribeMailto: link.Mailto,
		Headers: map[string]string{"X-Cronkit-Drip": f.Name + ":" + step.Name},
	}, nil
}

// stillWanted is the outbox's claim-time check (BeforeSend) for this funnel's
// messages: in the transaction that claims the message, with a shared lock on the
// account row, the case and the goal and exits are read again; a message whose
// account converted, left or is gone is cancelled, never sent, and the account is
// looked at by the next run (which records the transition).
func (j *Job) stillWanted(ctx context.Context, tx *sql.Tx, m mail.QueuedMessage) (bool, string, error) {
	f := j.Funnel
	id, step, ok := f.parseKey(m.Key)
	if !ok {
		return true, fmt.Sprintf("key %s is not one of funnel %s's", m.Key, f.Name), nil
	}
	ss, err := j.loadSignups(ctx, tx, []int64{id}, j.now(), loadOptions{stopOnly: true, lock: true})
	if err != nil {
		return false, "", err
	}
	s := ss[id]
	switch {
	case s == nil:
		return true, fmt.Sprintf("account %d no longer exists", id), nil
	case s.c == nil:
		return true, fmt.Sprintf("account %d has no %s case", id, f.MachineName()), nil
	case s.c.ClosedAt != nil:
		return true, fmt.Sprintf("funnel case %d is %s", s.c.ID, s.c.State), nil
	}
	if ev, _, reason := f.Stop(s.facts()); ev != "" {
		now := j.now()
		if err := setCheck(ctx, tx, f.Name, id, &now); err != nil {
			return false, "", err
		}
		return true, fmt.Sprintf("%s: %s", step, reason), nil
	}
	return false, "", nil
}

// deliver sends the funnel's due messages and reports what went wrong; it returns
// the accounts to decide again now (a message bounced, was cancelled or suppressed)
// and, when the relay could not be reached, the run's error for it (exit 1).
func (r *runState) deliver(ctx context.Context) ([]int64, error) {
	if r.dry {
		return nil, nil
	}
	log := zerolog.Ctx(ctx)
	if r.j.Sender == nil {
		log.Info().Msg("no SMTP relay configured: funnel mail stays queued in the outbox")
		return nil, nil
	}
	limit := r.j.Config.DeliverLimit
	if limit <= 0 {
		limit = defaultDeliverLimit
	}
	o := r.j.outbox()
	if r.j.Config.Account != 0 {
		// A run for one account delivers only that account's messages.
		o.KeyPrefix = r.j.Funnel.messageKey(r.j.Config.Account, "")
	}
	dr, err := o.Deliver(ctx, r.j.Sender, limit)
	r.count("mail_sent", int64(dr.Sent))
	r.count("mail_requeued", int64(dr.Requeued))
	r.count("mail_cancelled", int64(dr.Cancelled))
	r.count("mail_suppressed", int64(dr.Suppressed))
	r.count("mail_failed", int64(dr.Failed))
	r.count("mail_bounced", int64(dr.Bounced))
	var again []int64
	for _, it := range dr.Items {
		id, step, _ := r.j.Funnel.parseKey(it.Key)
		fields := []run.Field{run.Int("account_id", id), run.Str("step", step), run.Int("outbox_id", it.ID),
			run.Str("mail_key", it.Key), run.Str("outcome", string(it.Outcome))}
		switch it.Outcome {
		case mail.OutcomeFailed:
			detail := fmt.Sprintf("%s: failed: %s", it.Key, it.Error)
			if it.Bounced {
				detail += " (hard bounce: address suppressed, the account leaves the funnel)"
			}
			r.problem("mail", accountSubject(id), detail, fields...)
			again = append(again, id)
		case mail.OutcomeUnknown:
			r.problem("mail", accountSubject(id), fmt.Sprintf("%s: delivery outcome unknown, left 'sending' for an operator: %s", it.Key, it.Error), fields...)
		case mail.OutcomeCancelled, mail.OutcomeSuppressed:
			r.act("cancel", accountSubject(id), fmt.Sprintf("%s not sent: %s", step, it.Reason), fields...)
			again = append(again, id)
		}
	}
	for _, st := range dr.Stuck {
		id, step, _ := r.j.Funnel.parseKey(st.Key)
		r.problem("stuck", accountSubject(id), fmt.Sprintf("%s (Message-ID %s) claimed %s and never recorded: it may or may not have been delivered; "+
			"check the relay's log, then `cronkit drip requeue %d` if it was not (the account's next step waits for it)",
			st.Key, st.MessageID, st.ClaimedAt.Format(time.RFC3339), st.ID),
			run.Int("account_id", id), run.Str("step", step), run.Int("outbox_id", st.ID), run.Str("mail_key", st.Key))
	}
	r.count("mail_stuck", int64(len(dr.Stuck)))
	var down error
	switch {
	case errors.Is(err, mail.ErrRelayUnavailable):
		down = run.Unreachable("smtp", err, dr.Left)
	case err != nil:
		r.problem("mail", "delivery", err.Error())
	}
	slices.Sort(again)
	return slices.Compact(again), down
}
