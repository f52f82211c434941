package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cronkit/cronkit/jobs/abuse"
	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/run"
)

// abuseCommand is `jobs abuse`: the enforcement run (every 15 minutes from cron), and
// the ops surface around its two state machines.
func abuseCommand() *command {
	return &command{
		name:    "abuse",
		summary: "dunning and free-credit abuse state machines (show ACCOUNT, clear|approve|confirm|exclude CASE --reason, graph)",
		verbs:   []string{"show", "clear", "approve", "confirm", "exclude", "graph"},
		setup: func(e *env, fs *flag.FlagSet) func(context.Context, string, []string) int {
			var o jobOptions
			o.register(fs, 12*time.Minute)
			var f abuseFlags
			f.register(fs)
			return func(ctx context.Context, verb string, args []string) int {
				switch verb {
				case "graph":
					return abuseGraph(e, &f)
				case "show":
					return abuseShow(ctx, e, &o, &f, args[0])
				case abuse.OpClear, abuse.OpApprove, abuse.OpConfirm, abuse.OpExclude:
					return abuseOperate(ctx, e, &o, &f, verb, args[0])
				}
				j, err := f.job(e, &o)
				if err != nil {
					fmt.Fprintf(e.stderr, "jobs abuse: %v\n", err)
					return run.ExitUsage
				}
				return e.runJob(ctx, "abuse", &o, func(ctx context.Context, db *sql.DB) (*run.Report, error) {
					j.DB = db
					if o.dryRun {
						j.Outbox = refusingOutbox{}
					} else {
						j.Outbox = &mail.Outbox{DB: db, Now: j.Now}
					}
					return j.Run(ctx)
				})
			}
		},
		checkArgs: func(verb string, args []string) error {
			switch verb {
			case "", "graph":
				return noArgs(verb, args)
			}
			what := "CASE"
			if verb == "show" {
				what = "ACCOUNT"
			}
			if len(args) != 1 {
				return fmt.Errorf("%s takes one %s id", verb, what)
			}
			if id, err := strconv.ParseInt(args[0], 10, 64); err != nil || id <= 0 {
				return fmt.Errorf("%s id %q: want a positive integer", strings.ToLower(what), args[0])
			}
			return nil
		},
	}
}

// abuseFlags are abuse's own flags, as given.
type abuseFlags struct {
	policy       string
	disposable   string
	csURL        string
	csKey        string
	csSecret     string
	csTimeout    time.Duration
	smtpHost     string
	smtpPort     int
	smtpUser     string
	smtpPassword string
	smtpTLS      string
	mailFrom     string
	now          string
	concurrency  int
	rate         float64
	expunge      bool
	reason       string
	format       string
	machine      string
}

func (f *abuseFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.policy, "policy", "", "policy file (TOML), layered on the shipped defaults")
	fs.StringVar(&f.disposable, "disposable-domains", "", "disposable email domain list, one domain a line (default: the built-in snapshot of "+
		abuse.DisposableDomainsSnapshot+"; for a fresher one download "+abuse.DisposableDomainsSource+" and name it here)")
	fs.StringVar(&f.csURL, "cloudstack-url", "", "CloudStack API endpoint, e.g. https://cloud.example.com/client/api")
	fs.StringVar(&f.csKey, "cloudstack-api-key", "", "CloudStack API key")
	fs.StringVar(&f.csSecret, "cloudstack-secret-key", "", "CloudStack secret key")
	fs.DurationVar(&f.csTimeout, "cloudstack-timeout", 60*time.Second, "bound on each CloudStack request")
	fs.StringVar(&f.smtpHost, "smtp-host", "", "SMTP relay host; empty leaves notices queued in the outbox")
	fs.IntVar(&f.smtpPort, "smtp-port", 0, "SMTP relay port (default by --smtp-tls: 587, 465 for tls, 25 for none)")
	fs.StringVar(&f.smtpUser, "smtp-username", "", "SMTP user (AUTH)")
	fs.StringVar(&f.smtpPassword, "smtp-password", "", "SMTP password")
	fs.StringVar(&f.smtpTLS, "smtp-tls", "", "SMTP TLS: empty (STARTTLS when offered), starttls, tls or none")
	fs.StringVar(&f.mailFrom, "mail-from", "", "From address of the notices, e.g. \"Billing <billing@example.com>\"")
	fs.StringVar(&f.now, "now", "", "evaluate as of this time (RFC 3339, or YYYY-MM-DD for midnight UTC): what-if dry runs, simulated days")
	fs.IntVar(&f.concurrency, "concurrency", 4, "orchestrator calls in flight at most")
	fs.Float64Var(&f.rate, "rate", 10, "orchestrator calls per second at most (0: no limit)")
	fs.BoolVar(&f.expunge, "expunge", false, "terminations expunge VMs at once instead of leaving them to CloudStack's expunge delay")
	fs.StringVar(&f.reason, "reason", "", "why (clear, approve, confirm, exclude): kept in the audit trail")
	fs.StringVar(&f.format, "format", "mermaid", "graph format: mermaid or dot")
	fs.StringVar(&f.machine, "machine", "", "graph one machine: dunning or free_credit (default both)")
}

// clock is --now, or the process clock.
func (f *abuseFlags) clock(e *env) (func() time.Time, error) {
	if f.now == "" {
		return e.now, nil
	}
	t, err := time.Parse(time.RFC3339, f.now)
	if err != nil {
		if t, err = time.Parse("2006-01-02", f.now); err != nil {
			return nil, run.Usagef("--now %q: want an RFC 3339 time (2026-11-25T10:00:00Z) or a date (2026-11-25)", f.now)
		}
	}
	t = t.UTC()
	return func() time.Time { return t }, nil
}

// loadPolicy reads --policy, layered on the shipped defaults.
func (f *abuseFlags) loadPolicy() (abuse.Policy, error) {
	var data []byte
	if f.policy != "" {
		var err error
		if data, err = os.ReadFile(f.policy); err != nil {
			return abuse.Policy{}, run.Usagef("--policy: %v", err)
		}
	}
	return abuse.ParsePolicy(data)
}

// loadList reads the disposable-domain list while the policy's disposable_email
// signal is on. A missing list is a configuration error (exit 2), not a silently
// weaker policy: turn the signal off in the policy to run without one.
func (f *abuseFlags) loadList(p abuse.Policy) (*abuse.DomainList, error) {
	if p.FreeCredit.DisposableEmail.Weight == 0 {
		return nil, nil
	}
	if f.disposable == "" {
		return abuse.BuiltinDomainList()
	}
	file, err := os.Open(f.disposable)
	if err != nil {
		return nil, run.Usagef("--disposable-domains: %v (the disposable_email signal needs the list; "+
			"set [free_credit.disposable_email] weight = 0 in the policy to run without it)", err)
	}
	defer file.Close()
	list, err := abuse.ParseDomainList(file)
	if err != nil {
		return nil, run.Usagef("--disposable-domains %s: %v", f.disposable, err)
	}
	return list, nil
}

// job checks every flag and builds the run's job (without its database).
func (f *abuseFlags) job(e *env, o *jobOptions) (*abuse.Job, error) {
	if f.reason != "" {
		return nil, run.Usagef("--reason is for the operator commands (clear, approve, confirm, exclude), not for a run")
	}
	if f.machine != "" {
		return nil, run.Usagef("--machine is for jobs abuse graph, not for a run")
	}
	if f.concurrency < 1 {
		return nil, run.Usagef("--concurrency must be at least 1")
	}
	if f.rate < 0 {
		return nil, run.Usagef("--rate must not be negative")
	}
	clock, err := f.clock(e)
	if err != nil {
		return nil, err
	}
	p, err := f.loadPolicy()
	if err != nil {
		return nil, err
	}
	list, err := f.loadList(p)
	if err != nil {
		return nil, err
	}
	if f.csURL == "" || f.csKey == "" || f.csSecret == "" {
		return nil, run.Usagef("no orchestrator: set --cloudstack-url, --cloudstack-api-key and --cloudstack-secret-key")
	}
	if f.csTimeout <= 0 {
		return nil, run.Usagef("--cloudstack-timeout must be positive")
	}
	client, err := orchestrator.New(orchestrator.Config{APIURL: f.csURL, APIKey: f.csKey, SecretKey: f.csSecret,
		Timeout: f.csTimeout, ReadOnly: o.dryRun, HTTPClient: &http.Client{Timeout: f.csTimeout}})
	if err != nil {
		return nil, run.Usagef("%v", err)
	}
	var orch abuse.Orchestrator = client
	if o.dryRun {
		orch = refusingOrchestrator{client}
	}
	if f.mailFrom == "" {
		return nil, run.Usagef("no sender address for notices: set --mail-from")
	}
	var sender mail.MessageSender
	if f.smtpHost != "" && !o.dryRun {
		s, err := mail.NewSender(mail.SMTPConfig{Host: f.smtpHost, Port: f.smtpPort, Username: f.smtpUser,
			Password: f.smtpPassword, TLS: f.smtpTLS, From: f.mailFrom})
		if err != nil {
			return nil, run.Usagef("%v", err)
		}
		sender = s
	}
	return &abuse.Job{Orchestrator: orch, Sender: sender, Policy: p, Disposable: list, Now: clock,
		Config: abuse.Config{DryRun: o.dryRun, Account: o.account, Concurrency: f.concurrency, Rate: f.rate,
			MailFrom: f.mailFrom, Expunge: f.expunge}}, nil
}

// abuseOperator names the person behind an operator command.
func abuseOperator(e *env) string {
	for _, k := range []string{"CRONKIT_OPERATOR", "SUDO_USER", "USER"} {
		if v := strings.TrimSpace(e.getenv(k)); v != "" {
			return v
		}
	}
	return ""
}

// abuseOperate runs clear, approve, confirm or exclude on a case. It is not a run (no
// lock, no job_runs row): the transition row is its record, with the operator as
// actor.
func abuseOperate(ctx context.Context, e *env, o *jobOptions, f *abuseFlags, op, arg string) int {
	fail := func(code int, err error) int {
		fmt.Fprintf(e.stderr, "jobs abuse %s: %v\n", op, err)
		return code
	}
	if o.dryRun {
		return fail(run.ExitUsage, errors.New("operator commands have no dry run; look first with jobs abuse show ACCOUNT"))
	}
	if o.output != "text" && o.output != "json" {
		return fail(run.ExitUsage, fmt.Errorf("--output %q: want text or json", o.output))
	}
	if strings.TrimSpace(f.reason) == "" {
		return fail(run.ExitUsage, errors.New("--reason is required: say why, it is kept in the audit trail"))
	}
	actor := abuseOperator(e)
	if actor == "" {
		return fail(run.ExitUsage, errors.New("no operator name: set CRONKIT_OPERATOR"))
	}
	if f.mailFrom == "" {
		return fail(run.ExitUsage, errors.New("no sender address for notices: set --mail-from"))
	}
	clock, err := f.clock(e)
	if err != nil {
		return fail(run.ExitUsage, err)
	}
	p, err := f.loadPolicy()
	if err != nil {
		return fail(run.ExitUsage, err)
	}
	db, err := o.db.open(ctx, false)
	if errors.Is(err, run.ErrUsage) {
		return fail(run.ExitUsage, err)
	}
	if err != nil {
		return fail(run.ExitFailed, err)
	}
	defer db.Close()
	id, _ := strconv.ParseInt(arg, 10, 64) // checked by checkArgs
	j := &abuse.Job{DB: db, Outbox: &mail.Outbox{DB: db, Now: clock}, Policy: p, Now: clock,
		Config: abuse.Config{MailFrom: f.mailFrom}}
	res, err := j.Operate(ctx, op, id, actor, f.reason)
	if errors.Is(err, run.ErrUsage) {
		return fail(run.ExitUsage, err)
	}
	if err != nil {
		return fail(run.ExitFailed, err)
	}
	if o.output == "json" {
		return abuseJSON(e, res)
	}
	c := res.Case
	if res.Event == "" {
		fmt.Fprintf(e.stdout, "case %d (%s, account %d) is %s: nothing to change; account tagged %s\n",
			c.ID, c.Machine, c.AccountID, c.State, res.Tagged)
		return run.ExitOK
	}
	fmt.Fprintf(e.stdout, "case %d (%s, account %d): %s -> %s (%s) by operator:%s\n", c.ID, c.Machine, c.AccountID,
		res.From, res.To, res.Event, actor)
	if res.Tagged != "" {
		fmt.Fprintf(e.stdout, "account %d tagged %s\n", c.AccountID, res.Tagged)
	}
	if res.PendingActions > 0 {
		fmt.Fprintf(e.stdout, "%d action(s) queued; the next run performs them, or now: jobs abuse --account %d\n",
			res.PendingActions, c.AccountID)
	}
	return run.ExitOK
}

// abuseShow prints an account's cases, evidence, transitions and actions.
func abuseShow(ctx context.Context, e *env, o *jobOptions, f *abuseFlags, arg string) int {
	if o.output != "text" && o.output != "json" {
		fmt.Fprintf(e.stderr, "jobs abuse show: --output %q: want text or json\n", o.output)
		return run.ExitUsage
	}
	db, err := o.db.open(ctx, true)
	if errors.Is(err, run.ErrUsage) {
		fmt.Fprintf(e.stderr, "jobs abuse show: %v\n", err)
		return run.ExitUsage
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "jobs abuse show: %v\n", err)
		return run.ExitFailed
	}
	defer db.Close()
	id, _ := strconv.ParseInt(arg, 10, 64) // checked by checkArgs
	h, err := (&abuse.Job{DB: db}).Show(ctx, id)
	if err != nil {
		fmt.Fprintf(e.stderr, "jobs abuse show: %v\n", err)
		if errors.Is(err, run.ErrUsage) {
			return run.ExitUsage
		}
		return run.ExitFailed
	}
	if o.output == "json" {
		return abuseJSON(e, h)
	}
	if err := h.WriteText(e.stdout); err != nil {
		return run.ExitFailed
	}
	return run.ExitOK
}

// abuseGraph draws the machines from their definitions.
func abuseGraph(e *env, f *abuseFlags) int {
	out, err := abuse.Graph(f.machine, f.format)
	if err != nil {
		fmt.Fprintf(e.stderr, "jobs abuse graph: %v\n", err)
		return run.ExitUsage
	}
	fmt.Fprint(e.stdout, out)
	return run.ExitOK
}

func abuseJSON(e *env, v any) int {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(e.stderr, "jobs abuse: %v\n", err)
		return run.ExitFailed
	}
	_, _ = e.stdout.Write(b.Bytes())
	return run.ExitOK
}

// refusingOrchestrator stands in for CloudStack's mutating calls in a dry run: reads
// go through, every change fails instead of happening. (The client is also built
// ReadOnly, so a change is refused twice over.)
type refusingOrchestrator struct{ abuse.Orchestrator }

var errDryRunOrchestrator = errors.New("dry run: the orchestrator is not changed")

func (refusingOrchestrator) StopVM(context.Context, string) error  { return errDryRunOrchestrator }
func (refusingOrchestrator) StartVM(context.Context, string) error { return errDryRunOrchestrator }
func (refusingOrchestrator) DestroyVM(context.Context, string, bool) error {
	return errDryRunOrchestrator
}
func (refusingOrchestrator) DisableAccount(context.Context, string) error {
	return errDryRunOrchestrator
}
func (refusingOrchestrator) EnableAccount(context.Context, string) error {
	return errDryRunOrchestrator
}

// refusingOutbox stands in for the mail outbox in a dry run.
type refusingOutbox struct{}

var errDryRunMail = errors.New("dry run: no mail is queued or sent")

func (refusingOutbox) Enqueue(context.Context, *sql.Tx, string, mail.Message) (bool, error) {
	return false, errDryRunMail
}

func (refusingOutbox) Deliver(context.Context, mail.MessageSender, int) (mail.DeliveryReport, error) {
	return mail.DeliveryReport{}, errDryRunMail
}
