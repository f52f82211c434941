package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cronkit/cronkit/jobs/abuse"
	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/run"
)

// abuseCommand is `cronkit abuse`: the enforcement run (every 15 minutes from cron), and
// the ops surface around its two state machines.
func abuseCommand() *command {
	return &command{
		name:    "abuse",
		summary: "dunning and free-credit abuse state machines (show ACCOUNT, clear|approve|confirm|exclude CASE --reason, graph)",
		verbs:   []string{"show", "clear", "approve", "confirm", "exclude", "graph"},
		setup: func(e *env, fs *flag.FlagSet) commandFunc {
			k := newJobKit(e, fs, "abuse", 12*time.Minute)
			var clock clockFlags
			var cs cloudstackFlags
			var mf mailFlags
			var f abuseFlags
			clock.register(fs)
			cs.register(fs)
			mf.register(fs)
			f.register(fs)
			return func(ctx context.Context, verb string, args []string) error {
				switch verb {
				case "graph":
					return abuseGraph(e, &f)
				case "show":
					return abuseShow(ctx, k, args[0])
				case abuse.OpClear, abuse.OpApprove, abuse.OpConfirm, abuse.OpExclude:
					return abuseOperate(ctx, k, &clock, &mf, &f, verb, args[0])
				}
				if err := f.runOnly(); err != nil {
					return err
				}
				now, err := clock.clock(e.now, k.run.dryRun)
				if err != nil {
					return err
				}
				cfg, policy, list, err := f.config(k.run)
				if err != nil {
					return err
				}
				orch, err := cs.client(k.run.dryRun)
				if err != nil {
					return err
				}
				sender, from, err := mf.sender(k.run.dryRun)
				if err != nil {
					return err
				}
				cfg.MailFrom = from
				tmpl, err := f.loadTemplates()
				if err != nil {
					return err
				}
				return k.runJob(ctx, func(ctx context.Context, db *sql.DB) (*run.Report, error) {
					j := &abuse.Job{DB: db, Orchestrator: orch, Outbox: mf.outbox(db, now, k.run.dryRun, "abuse:"), Sender: sender,
						Policy: policy, Disposable: list, Config: cfg, Now: now, Templates: tmpl}
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
	policy      string
	disposable  string
	templates   string
	concurrency int
	rate        float64
	expunge     bool
	reason      string
	format      string
	machine     string
}

func (f *abuseFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.policy, "policy", "", "policy file (TOML), layered on the shipped defaults")
	fs.StringVar(&f.disposable, "disposable-domains", "", "disposable email domain list, one domain a line (default: the built-in snapshot of "+
		abuse.DisposableDomainsSnapshot+"; for a fresher one download "+abuse.DisposableDomainsSource+" and name it here)")
	fs.StringVar(&f.templates, "templates", "", "directory of notice templates laid over the embedded ones (NAME.subject.tmpl, NAME.txt.tmpl, NAME.html.tmpl)")
	fs.IntVar(&f.concurrency, "concurrency", 4, "orchestrator calls in flight at most")
	fs.Float64Var(&f.rate, "rate", 10, "orchestrator calls per second at most (0: no limit)")
	fs.BoolVar(&f.expunge, "expunge", false, "terminations expunge VMs at once instead of leaving them to CloudStack's expunge delay")
	fs.StringVar(&f.reason, "reason", "", "why (clear, approve, confirm, exclude): kept in the audit trail")
	fs.StringVar(&f.format, "format", "mermaid", "graph format: mermaid or dot")
	fs.StringVar(&f.machine, "machine", "", "graph one machine: dunning or free_credit (default both)")
}

// loadTemplates lays --templates over the embedded notices; a template that does not
// parse is a usage error naming the file.
func (f *abuseFlags) loadTemplates() (*mail.Templates, error) {
	if f.templates == "" {
		return nil, nil
	}
	t, err := mail.NewTemplates(abuse.TemplateFiles(), mail.TemplateDir(f.templates))
	if err != nil {
		return nil, run.Usagef("--templates: %v", err)
	}
	return t, nil
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

// runOnly refuses the operator commands' flags on a run.
func (f *abuseFlags) runOnly() error {
	if f.reason != "" {
		return run.Usagef("--reason is for the operator commands (clear, approve, confirm, exclude), not for a run")
	}
	if f.machine != "" {
		return run.Usagef("--machine is for cronkit abuse graph, not for a run")
	}
	return nil
}

// config checks abuse's own flags and reads its policy and domain list.
func (f *abuseFlags) config(o runFlags) (abuse.Config, abuse.Policy, *abuse.DomainList, error) {
	cfg := abuse.Config{DryRun: o.dryRun, Account: o.account, Concurrency: f.concurrency, Rate: f.rate, Expunge: f.expunge}
	if f.concurrency < 1 {
		return cfg, abuse.Policy{}, nil, run.Usagef("--concurrency must be at least 1")
	}
	if f.rate < 0 {
		return cfg, abuse.Policy{}, nil, run.Usagef("--rate must not be negative")
	}
	p, err := f.loadPolicy()
	if err != nil {
		return cfg, p, nil, err
	}
	list, err := f.loadList(p)
	return cfg, p, list, err
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
// actor. It has no dry run, so --now may not be in the future.
func abuseOperate(ctx context.Context, k *jobKit, clock *clockFlags, mf *mailFlags, f *abuseFlags, op, arg string) error {
	if k.run.dryRun {
		return run.Usagef("operator commands have no dry run; look first with cronkit abuse show ACCOUNT")
	}
	if err := k.out.validate(); err != nil {
		return err
	}
	if strings.TrimSpace(f.reason) == "" {
		return run.Usagef("--reason is required: say why, it is kept in the audit trail")
	}
	actor := abuseOperator(k.e)
	if actor == "" {
		return run.Usagef("no operator name: set CRONKIT_OPERATOR")
	}
	now, err := clock.clock(k.e.now, false)
	if err != nil {
		return err
	}
	// The notices an operator's decision queues are sent by the next run.
	_, from, err := mf.sender(false)
	if err != nil {
		return err
	}
	p, err := f.loadPolicy()
	if err != nil {
		return err
	}
	tmpl, err := f.loadTemplates()
	if err != nil {
		return err
	}
	db, err := k.db.open(ctx, false)
	if err != nil {
		return err
	}
	defer db.Close()
	id, _ := strconv.ParseInt(arg, 10, 64) // checked by checkArgs
	j := &abuse.Job{DB: db, Outbox: mf.outbox(db, now, false, "abuse:"), Policy: p, Now: now, Templates: tmpl,
		Config: abuse.Config{MailFrom: from}}
	res, err := j.Operate(ctx, op, id, actor, f.reason)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if k.out.format == "json" {
		return k.out.write(k.e.stdout, res)
	}
	w := k.e.stdout
	c := res.Case
	if res.Event == "" {
		fmt.Fprintf(w, "case %d (%s, account %d) is %s: nothing to change; account tagged %s\n",
			c.ID, c.Machine, c.AccountID, c.State, res.Tagged)
		return nil
	}
	fmt.Fprintf(w, "case %d (%s, account %d): %s -> %s (%s) by operator:%s\n", c.ID, c.Machine, c.AccountID,
		res.From, res.To, res.Event, actor)
	if res.Tagged != "" {
		fmt.Fprintf(w, "account %d tagged %s\n", c.AccountID, res.Tagged)
	}
	if res.PendingActions > 0 {
		fmt.Fprintf(w, "%d action(s) queued; the next run performs them, or now: cronkit abuse --account %d\n",
			res.PendingActions, c.AccountID)
	}
	return nil
}

// abuseShow prints an account's cases, evidence, transitions and actions.
func abuseShow(ctx context.Context, k *jobKit, arg string) error {
	db, err := k.read(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	id, _ := strconv.ParseInt(arg, 10, 64) // checked by checkArgs
	h, err := (&abuse.Job{DB: db}).Show(ctx, id)
	if err != nil {
		return fmt.Errorf("show: %w", err)
	}
	return k.out.write(k.e.stdout, h)
}

// abuseGraph draws the machines from their definitions.
func abuseGraph(e *env, f *abuseFlags) error {
	out, err := abuse.Graph(f.machine, f.format)
	if err != nil {
		return run.Usagef("graph: %v", err)
	}
	_, err = fmt.Fprint(e.stdout, out)
	return err
}
