// Package abuse is account enforcement: late-payment dunning and free-credit abuse, as
// two explicit state machines (looplab/fsm) persisted in MySQL with an append-only
// audit of every transition. The case machinery (versions, the audit log, intent ->
// perform -> confirm) is lib/cases; this package brings the machines, the policy, the
// facts, the decisions and the side effects.
//
// A run reads candidates in SQL, decides with pure functions of (case, facts, now,
// policy), and applies each event in one database transaction that re-reads the
// decisive facts under a lock first (a payment that lands during the run wins). The
// transaction writes the case (optimistic concurrency on its version), the transition
// row, the side effects it requires as pending actions (intent), and any notice that
// needs no orchestrator call into the mail outbox. The actions are then performed
// against the orchestrator, whose calls check state first, and marked done
// (confirmation); a notice that announces an orchestrator change ("your account is
// suspended") is queued only once that change is confirmed. A run killed at any point
// leaves either nothing or pending actions that the next run drives to the end; no
// transition, notice or orchestrator change happens twice.
package abuse

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/cronkit/cronkit/lib/cases"
	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/run"
)

// Orchestrator is what the job needs from CloudStack; *orchestrator.Client implements
// it. Every mutating method reads the current state first and does nothing when the
// target state already holds, which is what makes re-driving an action harmless.
type Orchestrator interface {
	// VMMetrics reads one account's VMs, or every VM with accountID "".
	VMMetrics(ctx context.Context, accountID string) ([]orchestrator.VM, error)
	// ListingCalls is what reading every VM at once would cost, in API calls.
	ListingCalls(ctx context.Context) (int, error)
	StopVM(ctx context.Context, id string) error
	StartVM(ctx context.Context, id string) error
	DestroyVM(ctx context.Context, id string, expunge bool) error
	DisableAccount(ctx context.Context, accountID string) error
	EnableAccount(ctx context.Context, accountID string) error
}

// Outbox is the mail outbox; *mail.Outbox implements it. Enqueue writes inside the
// transaction that changes the state the mail announces, under a key unique per
// (case, step).
type Outbox interface {
	Enqueue(ctx context.Context, tx *sql.Tx, key string, msg mail.Message) (bool, error)
	Deliver(ctx context.Context, sender mail.MessageSender, limit int) (mail.DeliveryReport, error)
}

var (
	_ Orchestrator = (*orchestrator.Client)(nil)
	_ Outbox       = (*mail.Outbox)(nil)
)

// Config is a run's settings.
type Config struct {
	// DryRun plans instead of acting: the report lists every transition, action and
	// notice a real run would make, and nothing is written or called.
	DryRun bool
	// Account limits the run to one account id (0: all).
	Account int64
	// Concurrency bounds the orchestrator calls in flight (default 4).
	Concurrency int
	// Rate caps orchestrator calls per second (0: no cap).
	Rate float64
	// MailFrom is the From of every notice.
	MailFrom string
	// DeliverLimit bounds the mails delivered at the end of a run (default 500).
	DeliverLimit int
	// Expunge destroys terminated accounts' VMs for good instead of leaving them to
	// CloudStack's expunge delay (default false: one more chance to recover).
	Expunge bool
}

// Job is the abuse job. Build it in cmd/jobs; tests fill it with fakes.
type Job struct {
	DB           *sql.DB
	Orchestrator Orchestrator
	Outbox       Outbox
	// Sender delivers queued mail at the end of a run; nil leaves it queued for the
	// next run or another deliverer.
	Sender mail.MessageSender
	Policy Policy
	// Disposable is the disposable-email list; required while the signal's weight is
	// above zero.
	Disposable *DomainList
	Config     Config
	// Now is the clock (--now sets it to a fixed instant); nil means time.Now.
	Now func() time.Time
	// Templates are the notices' templates; nil means the embedded ones.
	Templates *mail.Templates
}

func (j *Job) now() time.Time {
	clock := j.Now
	if clock == nil {
		clock = time.Now
	}
	return clock().UTC()
}

//go:embed templates/*.tmpl
var templateFiles embed.FS

// Notices are the mails the job sends: the template name is the step.
const (
	noticeReminder        = "reminder"
	noticeWarning         = "warning"
	noticeSuspension      = "suspension"
	noticeLifted          = "lifted"
	noticeTrialSuspension = "trial_suspension"
	noticeTrialLifted     = "trial_lifted"
)

// TemplateFiles are the notice templates embedded in the binary, for a provider's
// --templates directory to be laid over.
func TemplateFiles() fs.FS {
	sub, err := fs.Sub(templateFiles, "templates")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	return sub
}

// Templates returns the notice templates embedded in the binary.
func Templates() (*mail.Templates, error) {
	return mail.NewTemplates(TemplateFiles())
}

// templates are the job's notice templates: Job.Templates (a rebranded set), or the
// embedded ones.
func (j *Job) templates() (*mail.Templates, error) {
	if j.Templates != nil {
		return j.Templates, nil
	}
	return Templates()
}

// check validates what a run (forRun) or an operator command needs; its errors are
// usage errors (exit 2).
func (j *Job) check(forRun bool) error {
	if j.DB == nil {
		return errors.New("abuse: no database")
	}
	if forRun && j.Orchestrator == nil {
		return run.Usagef("abuse: no orchestrator: set --cloudstack-url and its keys")
	}
	if j.Outbox == nil {
		return errors.New("abuse: no mail outbox")
	}
	switch {
	case j.Config.MailFrom != "":
		if err := (mail.Message{From: j.Config.MailFrom, To: "x@example.com", Subject: "x", Text: "x"}).Validate(); err != nil {
			return run.Usagef("abuse: --mail-from %q is not an email address", j.Config.MailFrom)
		}
	case !j.Config.DryRun:
		// A dry run sends nothing, so only a real run needs a sender address.
		return run.Usagef("abuse: no sender address for notices: set --mail-from")
	}
	if forRun && j.Policy.FreeCredit.DisposableEmail.Weight > 0 && j.Disposable == nil {
		return run.Usagef("abuse: the disposable_email signal is on but no domain list was loaded (--disposable-domains)")
	}
	if j.Policy.Mail.BillingURL == "" {
		return run.Usagef("abuse: policy not loaded")
	}
	return nil
}

// runState is one run: the clock fixed at its start, the case store on that clock,
// the report, and the orchestrator behind the run's rate limit.
type runState struct {
	j     *Job
	now   time.Time
	runID string
	dry   bool
	orch  Orchestrator
	// brk is orch in a run: it stops calling CloudStack once it is unreachable.
	brk   *breaker
	tmpl  *mail.Templates
	store *cases.Store

	mu  sync.Mutex
	rep *run.Report
	// planned holds, in a dry run, the actions this run's transitions would add, and
	// cancelled the cases whose pending actions they would cancel.
	planned   []*cases.Action
	cancelled map[int64]bool
}

// newRunState starts a run (or an operator command) of j at now.
func newRunState(j *Job, now time.Time, runID string, dry bool, tmpl *mail.Templates) *runState {
	r := &runState{j: j, now: now, runID: runID, dry: dry, tmpl: tmpl, rep: run.NewReport("abuse"), orch: j.Orchestrator}
	r.store = &cases.Store{DB: j.DB, Machines: machineDefs(), Now: func() time.Time { return r.now }, DryRun: dry}
	return r
}

// act reports an action with its structured fields (account_id, case_id, machine...).
func (r *runState) act(kind, subject, detail string, fields ...run.Field) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.Act(kind, subject, detail, fields...)
}

// problem reports an item-level problem with its structured fields.
func (r *runState) problem(kind, subject, detail string, fields ...run.Field) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.Problem(kind, subject, detail, fields...)
}

// caseFields are the structured fields naming a case: its account, id (omitted for a
// case a dry run would open) and machine.
func caseFields(account, caseID int64, machine string) []run.Field {
	f := []run.Field{run.Int("account_id", account)}
	if caseID != 0 {
		f = append(f, run.Int("case_id", caseID))
	}
	if machine != "" {
		f = append(f, run.Str("machine", machine))
	}
	return f
}

func (r *runState) count(name string, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.Count(name, n)
}

func (r *runState) concurrency() int {
	if r.j.Config.Concurrency > 0 {
		return r.j.Config.Concurrency
	}
	return 4
}

func accountSubject(id int64) string { return fmt.Sprintf("account %d", id) }

// Run evaluates every candidate account once and drives the side effects:
//
//  1. dunning candidates are decided and their events applied;
//  2. free-credit candidates: the orchestrator's VM metrics are read (bounded
//     concurrency, rate limit), a CPU sample recorded, and decisions applied;
//  3. pending actions are driven: those the transitions just added and those earlier
//     runs left (a crash, an orchestrator error). Deciding first means a case whose
//     facts changed since (a payment) is resolved, its pending suspension cancelled,
//     before anything would act on it; a dunning case is also re-decided on fresh
//     facts right before its actions run;
//  4. queued mail is delivered (when a Sender is configured).
//
// Item-level failures (an orchestrator error, a lost race) are problems in the report
// (exit 3); the affected case stays where it is and the next run retries.
func (j *Job) Run(ctx context.Context) (*run.Report, error) {
	rep := run.NewReport("abuse")
	if err := j.check(true); err != nil {
		return rep, err
	}
	tmpl, err := j.templates()
	if err != nil {
		return rep, err
	}
	r := newRunState(j, j.now(), run.FromContext(ctx).ID, j.Config.DryRun, tmpl)
	r.rep = rep
	if j.Orchestrator != nil {
		r.brk = &breaker{o: limitOrchestrator(j.Orchestrator, j.Config.Rate)}
		r.orch = r.brk
	}
	log := zerolog.Ctx(ctx)
	log.Info().Time("now", r.now).Int64("account", j.Config.Account).Msg("abuse run: evaluating")

	if err := r.dunning(ctx); err != nil {
		return rep, err
	}
	if err := r.freeCredit(ctx); err != nil {
		return rep, err
	}
	r.drive(ctx)
	if err := ctx.Err(); err != nil {
		return rep, context.Cause(ctx)
	}
	smtpDown := r.deliver(ctx)
	if !r.dry {
		// Samples older than any streak the policy can ask for are no use.
		keep := j.Policy.FreeCredit.CPU.Sustained.Duration + j.Policy.FreeCredit.CPU.MaxGap.Duration + 7*24*time.Hour
		n, err := pruneSamples(ctx, j.DB, r.now.Add(-keep))
		if err != nil {
			log.Warn().Err(err).Msg("prune cpu samples")
		}
		r.count("cpu_samples_pruned", n)
	}
	// A dependency that could not be reached stops the run (exit 1): what it left
	// waits, as after an interrupted run, for the next one.
	var down []error
	if r.brk != nil {
		down = append(down, r.brk.err())
	}
	return rep, errors.Join(append(down, smtpDown)...)
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

// limited puts the run's rate limit in front of every orchestrator call.
type limited struct {
	o Orchestrator
	l *rate.Limiter
}

func limitOrchestrator(o Orchestrator, perSecond float64) Orchestrator {
	if perSecond <= 0 || o == nil {
		return o
	}
	return &limited{o: o, l: rate.NewLimiter(rate.Limit(perSecond), 1)}
}

func (l *limited) VMMetrics(ctx context.Context, id string) ([]orchestrator.VM, error) {
	if err := l.l.Wait(ctx); err != nil {
		return nil, err
	}
	return l.o.VMMetrics(ctx, id)
}

func (l *limited) ListingCalls(ctx context.Context) (int, error) {
	if err := l.l.Wait(ctx); err != nil {
		return 0, err
	}
	return l.o.ListingCalls(ctx)
}

func (l *limited) StopVM(ctx context.Context, id string) error {
	if err := l.l.Wait(ctx); err != nil {
		return err
	}
	return l.o.StopVM(ctx, id)
}

func (l *limited) StartVM(ctx context.Context, id string) error {
	if err := l.l.Wait(ctx); err != nil {
		return err
	}
	return l.o.StartVM(ctx, id)
}

func (l *limited) DestroyVM(ctx context.Context, id string, expunge bool) error {
	if err := l.l.Wait(ctx); err != nil {
		return err
	}
	return l.o.DestroyVM(ctx, id, expunge)
}

func (l *limited) DisableAccount(ctx context.Context, id string) error {
	if err := l.l.Wait(ctx); err != nil {
		return err
	}
	return l.o.DisableAccount(ctx, id)
}

func (l *limited) EnableAccount(ctx context.Context, id string) error {
	if err := l.l.Wait(ctx); err != nil {
		return err
	}
	return l.o.EnableAccount(ctx, id)
}

// Candidates returns the accounts a run would evaluate, per machine: the candidate
// queries alone, chosen in SQL on indexes. The benchmark measures runs against it.
func (j *Job) Candidates(ctx context.Context) (dunning, freeCredit []int64, err error) {
	now := j.now()
	if dunning, err = dunningCandidates(ctx, j.DB, now, j.Policy.Dunning, j.Config.Account); err != nil {
		return nil, nil, err
	}
	if freeCredit, err = freeCreditCandidates(ctx, j.DB, now, j.Policy.FreeCredit, j.Config.Account); err != nil {
		return nil, nil, err
	}
	return dunning, freeCredit, nil
}
