package main

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/jobs/drip"
	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/run"
)

// dripCommand is `cronkit drip`: the onboarding funnel (every 15 minutes from cron), the
// ops surface around it, and the unsubscribe endpoint its messages link to.
func dripCommand() *command {
	return &command{
		name: "drip",
		summary: "the onboarding funnel: one email sequence per signup, stopped by the goal or an exit " +
			"(show ACCOUNT, exit ACCOUNT --reason, graph, suppress|lift EMAIL, suppressions, unsubscribe EMAIL|ACCOUNT, requeue ID, unsubscribe-server)",
		verbs: []string{"show", "exit", "graph", "suppress", "suppressions", "lift", "unsubscribe", "requeue", "unsubscribe-server"},
		setup: func(e *env, fs *flag.FlagSet) commandFunc {
			k := newJobKit(e, fs, "drip", 12*time.Minute)
			var clock clockFlags
			var cs cloudstackFlags
			var mf mailFlags
			var f dripFlags
			clock.register(fs)
			cs.register(fs)
			mf.register(fs)
			f.register(fs)
			return func(ctx context.Context, verb string, args []string) error {
				switch verb {
				case "graph":
					return dripGraph(e, &f)
				case "show":
					return dripShow(ctx, k, &clock, &f, args[0])
				case "exit", "unsubscribe", "requeue":
					return dripOperate(ctx, k, &clock, &f, verb, args[0])
				case "suppress", "suppressions", "lift":
					return dripSuppressions(ctx, k, &clock, &f, verb, args)
				case "unsubscribe-server":
					return dripServe(ctx, k, &f)
				}
				return dripRun(ctx, k, &clock, &cs, &mf, &f)
			}
		},
		checkArgs: func(verb string, args []string) error {
			switch verb {
			case "", "graph", "suppressions", "unsubscribe-server":
				return noArgs(verb, args)
			}
			what := map[string]string{"show": "ACCOUNT", "exit": "ACCOUNT", "requeue": "OUTBOX id",
				"suppress": "EMAIL", "lift": "EMAIL", "unsubscribe": "EMAIL or ACCOUNT"}[verb]
			if len(args) != 1 {
				return fmt.Errorf("%s takes one %s", verb, what)
			}
			switch verb {
			case "show", "exit", "requeue":
				if id, err := strconv.ParseInt(args[0], 10, 64); err != nil || id <= 0 {
					return fmt.Errorf("%s %q: want a positive integer id", strings.ToLower(strings.Fields(what)[0]), args[0])
				}
			case "suppress", "lift":
				if _, err := mail.NormalizeAddress(args[0]); err != nil {
					return fmt.Errorf("%s %q: not an email address", verb, args[0])
				}
			case "unsubscribe":
				if _, err := strconv.ParseInt(args[0], 10, 64); err != nil {
					if _, err := mail.NormalizeAddress(args[0]); err != nil {
						return fmt.Errorf("unsubscribe %q: want an email address or an account id", args[0])
					}
				}
			}
			return nil
		},
	}
}

// dripFlags are drip's own flags, as given.
type dripFlags struct {
	funnel    string
	templates string
	preview   string
	since     string

	unsubURL    string
	unsubSecret string
	unsubMailto string

	consoleURL   string
	docsURL      string
	billingURL   string
	supportEmail string

	recheck      time.Duration
	deliverLimit int
	concurrency  int

	reason string
	note   string
	format string

	listen  string
	tlsCert string
	tlsKey  string
	org     string
}

func (f *dripFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.funnel, "funnel", "", "funnel file (TOML) replacing the shipped one (see jobs/drip/funnel.toml)")
	fs.StringVar(&f.templates, "templates", "", "directory of templates laid over the embedded ones (NAME.subject.tmpl, NAME.txt.tmpl, NAME.html.tmpl)")
	fs.StringVar(&f.preview, "preview", "", "with --dry-run: write each message the run would queue to this directory as ACCOUNT-STEP.eml")
	fs.StringVar(&f.since, "since", "", "the funnel's start, for its first real run only (RFC 3339 or a date; default: that run's instant): "+
		"signups created before it never enter")
	fs.StringVar(&f.unsubURL, "unsubscribe-url", "", "https base URL of the unsubscribe endpoint (cronkit drip unsubscribe-server, or a web app's); the token is added as ?token=")
	fs.StringVar(&f.unsubSecret, "unsubscribe-secret", "", "HMAC secret(s) of the unsubscribe tokens, comma-separated: the first signs, all verify (rotation); "+
		"at least 32 bytes each (openssl rand -hex 32)")
	fs.StringVar(&f.unsubMailto, "unsubscribe-mailto", "", "address for mailto unsubscribes (List-Unsubscribe fallback; ops record them with cronkit drip unsubscribe)")
	fs.StringVar(&f.consoleURL, "console-url", "", "the console's URL, linked from the messages")
	fs.StringVar(&f.docsURL, "docs-url", "", "the getting-started guide's URL, linked from the messages")
	fs.StringVar(&f.billingURL, "billing-url", "", "the billing page's URL (add a payment method), linked from the messages")
	fs.StringVar(&f.supportEmail, "support-email", "", "the support address the messages give")
	fs.DurationVar(&f.recheck, "recheck", 24*time.Hour, "look at every account in the funnel at least this often (records conversions and exits between steps)")
	fs.IntVar(&f.deliverLimit, "deliver-limit", 2000, "messages one run delivers at most")
	fs.IntVar(&f.concurrency, "concurrency", 4, "orchestrator calls in flight at most")
	fs.StringVar(&f.reason, "reason", "", "exit: why (kept in the audit trail); suppress, suppressions, lift: bounce, complaint or unsubscribe")
	fs.StringVar(&f.note, "note", "", "suppress: free text kept with the suppression (the relay's reply, the report's origin)")
	fs.StringVar(&f.format, "format", "mermaid", "graph format: mermaid or dot")
	fs.StringVar(&f.listen, "listen", "", "unsubscribe-server: address to listen on, e.g. :8080 or 127.0.0.1:8080")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "unsubscribe-server: TLS certificate file (PEM); without it, serve plain HTTP behind a TLS-terminating proxy")
	fs.StringVar(&f.tlsKey, "tls-key", "", "unsubscribe-server: TLS key file (PEM)")
	fs.StringVar(&f.org, "org", "", "unsubscribe-server: the sender's name on the page (\"Example Cloud\")")
}

// funnel reads --funnel (or the shipped funnel) and the templates, and checks them
// together: any problem is a usage error (exit 2) before anything is opened.
func (f *dripFlags) load(withTemplates bool) (*drip.Funnel, *mail.Templates, error) {
	fun := drip.DefaultFunnel()
	if f.funnel != "" {
		data, err := os.ReadFile(f.funnel)
		if err != nil {
			return nil, nil, run.Usagef("--funnel: %v", err)
		}
		if fun, err = drip.ParseFunnel(f.funnel, data); err != nil {
			return nil, nil, err
		}
	}
	if !withTemplates {
		return fun, nil, nil
	}
	t, err := mail.NewTemplates(drip.TemplateFiles(), mail.TemplateDir(f.templates))
	if err != nil {
		return nil, nil, run.Usagef("--templates: %v", err)
	}
	if err := fun.CheckTemplates(t); err != nil {
		return nil, nil, err
	}
	return fun, t, nil
}

// keys reads --unsubscribe-secret.
func (f *dripFlags) keys() (*mail.UnsubscribeKeys, error) {
	if f.unsubSecret == "" {
		return nil, run.Usagef("no unsubscribe secret: set --unsubscribe-secret (or CRONKIT_UNSUBSCRIBE_SECRET_FILE)")
	}
	k, err := mail.NewUnsubscribeKeys(strings.Split(f.unsubSecret, ",")...)
	if err != nil {
		return nil, run.Usagef("--unsubscribe-secret: %v", err)
	}
	return k, nil
}

// Placeholders a dry run uses for what a real run must be given, so its plan and
// preview can be made before the funnel is configured; the report says so.
const (
	placeholderUnsubscribeURL = "https://unsubscribe.example.invalid/drip"
	placeholderSecret         = "dry-run-placeholder-secret-not-for-real-mail"
	placeholderFrom           = "cronkit drip <drip@example.invalid>"
	placeholderSite           = "https://example.invalid/"
	placeholderSupport        = "support@example.invalid"
)

// links builds the unsubscribe links; a dry run without them uses placeholders and
// names them in placeholders.
func (f *dripFlags) links(dryRun bool, placeholders *[]string) (mail.UnsubscribeLinks, error) {
	l := mail.UnsubscribeLinks{BaseURL: f.unsubURL, Mailto: f.unsubMailto}
	if l.BaseURL == "" {
		if !dryRun {
			return l, run.Usagef("no unsubscribe URL: set --unsubscribe-url (or CRONKIT_UNSUBSCRIBE_URL): every funnel message carries a one-click link (RFC 8058)")
		}
		l.BaseURL = placeholderUnsubscribeURL
		*placeholders = append(*placeholders, "--unsubscribe-url")
	}
	var err error
	if f.unsubSecret == "" && dryRun {
		l.Keys, _ = mail.NewUnsubscribeKeys(placeholderSecret)
		*placeholders = append(*placeholders, "--unsubscribe-secret")
	} else if l.Keys, err = f.keys(); err != nil {
		return l, err
	}
	if err := l.Check(); err != nil {
		switch {
		case strings.Contains(err.Error(), "mailto"):
			return l, run.Usagef("--unsubscribe-mailto: %v", err)
		default:
			return l, run.Usagef("--unsubscribe-url: %v", err)
		}
	}
	return l, nil
}

// config is drip's run configuration from the flags.
func (f *dripFlags) config(o runFlags, from string, placeholders *[]string) (drip.Config, error) {
	cfg := drip.Config{DryRun: o.dryRun, Account: o.account, MailFrom: from,
		ConsoleURL: f.consoleURL, DocsURL: f.docsURL, BillingURL: f.billingURL, SupportEmail: f.supportEmail,
		Recheck: f.recheck, DeliverLimit: f.deliverLimit, Concurrency: f.concurrency}
	switch {
	case f.recheck <= 0:
		return cfg, run.Usagef("--recheck must be positive")
	case f.deliverLimit < 1:
		return cfg, run.Usagef("--deliver-limit must be at least 1")
	case f.concurrency < 1:
		return cfg, run.Usagef("--concurrency must be at least 1")
	}
	if f.supportEmail != "" {
		if _, err := mail.NormalizeAddress(f.supportEmail); err != nil {
			return cfg, run.Usagef("--support-email %q: not an email address", f.supportEmail)
		}
	}
	if f.since != "" {
		t, err := parseNow(f.since)
		if err != nil {
			return cfg, run.Usagef("--since %q: want an RFC 3339 time or a date", f.since)
		}
		cfg.Since = t
	}
	if o.dryRun {
		for _, p := range []struct {
			flag string
			v    *string
			ph   string
		}{
			{"--mail-from", &cfg.MailFrom, placeholderFrom},
			{"--console-url", &cfg.ConsoleURL, placeholderSite},
			{"--docs-url", &cfg.DocsURL, placeholderSite},
			{"--billing-url", &cfg.BillingURL, placeholderSite},
			{"--support-email", &cfg.SupportEmail, placeholderSupport},
		} {
			if *p.v == "" {
				*p.v = p.ph
				*placeholders = append(*placeholders, p.flag)
			}
		}
	}
	return cfg, nil
}

// runOnly refuses the other verbs' flags on a run.
func (f *dripFlags) runOnly(dryRun bool) error {
	switch {
	case f.reason != "" || f.note != "":
		return run.Usagef("--reason and --note are for exit, suppress and lift, not for a run")
	case f.listen != "" || f.tlsCert != "" || f.tlsKey != "":
		return run.Usagef("--listen, --tls-cert and --tls-key are for cronkit drip unsubscribe-server")
	case f.preview != "" && !dryRun:
		return run.Usagef("--preview writes what a dry run would send: add --dry-run")
	}
	return nil
}

// dripRun is the run: every 15 minutes from cron.
func dripRun(ctx context.Context, k *jobKit, clock *clockFlags, cs *cloudstackFlags, mf *mailFlags, f *dripFlags) error {
	dry := k.run.dryRun
	if err := f.runOnly(dry); err != nil {
		return err
	}
	if err := k.validate(); err != nil {
		return err
	}
	now, err := clock.clock(k.e.now, dry)
	if err != nil {
		return err
	}
	fun, tmpl, err := f.load(true)
	if err != nil {
		return err
	}
	var placeholders []string
	links, err := f.links(dry, &placeholders)
	if err != nil {
		return err
	}
	sender, from, err := mf.sender(dry)
	if err != nil {
		return err
	}
	cfg, err := f.config(k.run, from, &placeholders)
	if err != nil {
		return err
	}
	// CloudStack is optional: without it, has_vm comes from billed usage.
	var orch drip.Orchestrator
	if cs.url != "" || cs.key != "" || cs.secret != "" {
		c, err := cs.client(dry)
		if err != nil {
			return err
		}
		orch = c
	}
	var preview func(drip.Planned, mail.Message) error
	if f.preview != "" {
		if err := os.MkdirAll(f.preview, 0o755); err != nil {
			return run.Usagef("--preview: %v", err)
		}
		preview = func(p drip.Planned, msg mail.Message) error {
			return writePreview(f.preview, p, msg)
		}
	}
	j := &drip.Job{Orchestrator: orch, Sender: sender, Funnel: fun, Templates: tmpl, Links: links,
		Preview: preview, Config: cfg, Now: now}
	if err := j.CheckConfig(); err != nil {
		return err
	}
	return k.runJob(ctx, func(ctx context.Context, db *sql.DB) (*run.Report, error) {
		j.DB = db
		rep, err := j.Run(ctx)
		if len(placeholders) > 0 && rep != nil {
			rep.Act("note", "configuration", "placeholders used for "+strings.Join(placeholders, ", ")+
				": the plan's messages and links are not the real ones; a real run needs them set")
		}
		return rep, err
	})
}

// writePreview writes one planned message as DIR/ACCOUNT-STEP.eml, dated its send time.
func writePreview(dir string, p drip.Planned, msg mail.Message) error {
	if msg.From == "" {
		msg.From = placeholderFrom
	}
	path := filepath.Join(dir, fmt.Sprintf("%d-%s.eml", p.AccountID, p.Step))
	file, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := mail.WriteMessage(file, msg, p.SendAt); err != nil {
		file.Close()
		return err
	}
	return file.Close()
}

// dripJob builds the job for the operator commands: the funnel (its machine), the
// database, the clock.
func dripJob(k *jobKit, clock *clockFlags, f *dripFlags, db *sql.DB) (*drip.Job, error) {
	fun, _, err := f.load(false)
	if err != nil {
		return nil, err
	}
	now, err := clock.clock(k.e.now, false)
	if err != nil {
		return nil, err
	}
	return &drip.Job{DB: db, Funnel: fun, Now: now}, nil
}

// dripOperate runs exit, unsubscribe or requeue. It is not a run (no lock, no
// job_runs row): the transition row is its record, with the operator as actor.
func dripOperate(ctx context.Context, k *jobKit, clock *clockFlags, f *dripFlags, verb, arg string) error {
	if k.run.dryRun {
		return run.Usagef("operator commands have no dry run; look first with cronkit drip show ACCOUNT")
	}
	if err := k.out.validate(); err != nil {
		return err
	}
	if verb == "exit" && strings.TrimSpace(f.reason) == "" {
		return run.Usagef("--reason is required: say why, it is kept in the audit trail")
	}
	if verb != "exit" && (f.reason != "" || f.note != "") {
		return run.Usagef("%s takes no --reason or --note", verb)
	}
	actor := abuseOperator(k.e)
	if actor == "" {
		return run.Usagef("no operator name: set CRONKIT_OPERATOR")
	}
	if _, err := dripJob(k, clock, f, nil); err != nil {
		return err
	}
	db, err := k.db.open(ctx, false)
	if err != nil {
		return err
	}
	defer db.Close()
	j, err := dripJob(k, clock, f, db)
	if err != nil {
		return err
	}
	w := k.e.stdout
	switch verb {
	case "requeue":
		id, _ := strconv.ParseInt(arg, 10, 64) // checked by checkArgs
		if err := j.Requeue(ctx, id); err != nil {
			if errors.Is(err, mail.ErrNotRequeueable) {
				return run.Usagef("requeue: outbox message %d is not a stuck or failed message of funnel %s", id, j.Funnel.Name)
			}
			return fmt.Errorf("requeue: %w", err)
		}
		fmt.Fprintf(w, "outbox message %d queued again; the next run delivers it\n", id)
		return nil
	case "exit":
		id, _ := strconv.ParseInt(arg, 10, 64)
		res, err := j.Exit(ctx, id, actor, f.reason)
		if err != nil {
			return opError("exit", err)
		}
		return writeResults(k, []drip.Result{res})
	}
	var results []drip.Result
	if id, err := strconv.ParseInt(arg, 10, 64); err == nil {
		res, err := j.UnsubscribeAccount(ctx, id, "operator:"+actor, "unsubscribe by an operator")
		if err != nil {
			return opError("unsubscribe", err)
		}
		results = []drip.Result{res}
	} else if results, err = j.UnsubscribeAddress(ctx, arg, "operator:"+actor, "unsubscribe by an operator"); err != nil {
		return opError("unsubscribe", err)
	}
	return writeResults(k, results)
}

func opError(verb string, err error) error {
	if errors.Is(err, drip.ErrNoAccount) {
		return run.Usagef("%s: %v", verb, err)
	}
	return fmt.Errorf("%s: %w", verb, err)
}

// writeResults prints what an operator command did.
func writeResults(k *jobKit, results []drip.Result) error {
	if k.out.format == "json" {
		return k.out.write(k.e.stdout, results)
	}
	w := k.e.stdout
	for _, r := range results {
		who := fmt.Sprintf("account %d (%s)", r.AccountID, r.Email)
		if r.AccountID == 0 {
			who = r.Email
		}
		if r.Suppressed {
			fmt.Fprintf(w, "%s: address suppressed for marketing mail (invoices and notices still go out)\n", who)
		}
		switch {
		case r.Event != "":
			fmt.Fprintf(w, "%s: case %d %s -> %s (%s)\n", who, r.Case.ID, r.From, r.To, r.Event)
		default:
			fmt.Fprintf(w, "%s: %s\n", who, r.Reason)
		}
	}
	return nil
}

// dripShow prints an account's funnel: facts, case, transitions, messages, next step.
func dripShow(ctx context.Context, k *jobKit, clock *clockFlags, f *dripFlags, arg string) error {
	if _, err := dripJob(k, clock, f, nil); err != nil {
		return err
	}
	db, err := k.read(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	j, err := dripJob(k, clock, f, db)
	if err != nil {
		return err
	}
	id, _ := strconv.ParseInt(arg, 10, 64) // checked by checkArgs
	v, err := j.Show(ctx, id)
	if err != nil {
		return opError("show", err)
	}
	return k.out.write(k.e.stdout, v)
}

// dripSuppressions is suppress, suppressions (the list) and lift: the suppression
// list for ops (bounces and complaints from the relay's reports, mailto unsubscribes).
func dripSuppressions(ctx context.Context, k *jobKit, clock *clockFlags, f *dripFlags, verb string, args []string) error {
	var kind mail.SuppressionKind
	if f.reason != "" {
		var err error
		if kind, err = mail.ParseSuppressionKind(f.reason); err != nil {
			return run.Usagef("--reason: %v", err)
		}
	}
	if verb == "suppress" && kind == "" {
		return run.Usagef("--reason is required: bounce, complaint or unsubscribe")
	}
	if verb != "suppress" && f.note != "" {
		return run.Usagef("--note is for suppress")
	}
	if err := k.out.validate(); err != nil {
		return err
	}
	readOnly := verb == "suppressions"
	if !readOnly && k.run.dryRun {
		return run.Usagef("%s has no dry run; look first with cronkit drip suppressions", verb)
	}
	now, err := clock.clock(k.e.now, false)
	if err != nil {
		return err
	}
	db, err := k.db.open(ctx, readOnly)
	if err != nil {
		return err
	}
	defer db.Close()
	o := &mail.Outbox{DB: db, Now: now}
	w := k.e.stdout
	switch verb {
	case "suppress":
		actor := abuseOperator(k.e)
		if actor == "" {
			return run.Usagef("no operator name: set CRONKIT_OPERATOR")
		}
		note := f.note
		if note == "" {
			note = "recorded by operator:" + actor
		} else {
			note += " (operator:" + actor + ")"
		}
		added, err := o.Suppress(ctx, nil, args[0], kind, note)
		if err != nil {
			return fmt.Errorf("suppress: %w", err)
		}
		if added {
			fmt.Fprintf(w, "%s suppressed (%s): %s; the funnel reads it as an exit at the account's next look\n", args[0], kind, blocks(kind))
		} else {
			fmt.Fprintf(w, "%s was already suppressed (%s)\n", args[0], kind)
		}
		return nil
	case "lift":
		n, err := o.Lift(ctx, nil, args[0], kind)
		if err != nil {
			return fmt.Errorf("lift: %w", err)
		}
		fmt.Fprintf(w, "%s: %d suppression(s) lifted; a funnel the address left stays left (re-entry never)\n", args[0], n)
		return nil
	}
	var all []mail.Suppression
	q := mail.SuppressionQuery{Kind: kind}
	for {
		page, err := o.ListSuppressions(ctx, q)
		if err != nil {
			return fmt.Errorf("suppressions: %w", err)
		}
		if len(page) == 0 {
			break
		}
		if k.out.format == "json" {
			all = append(all, page...)
		} else {
			for _, s := range page {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.Email, s.Kind, s.CreatedAt.Format(time.RFC3339), s.Reason)
			}
		}
		q.After = page[len(page)-1].Email
	}
	if k.out.format == "json" {
		if all == nil {
			all = []mail.Suppression{}
		}
		return k.out.write(w, all)
	}
	return nil
}

func blocks(k mail.SuppressionKind) string {
	if k == mail.SuppressUnsubscribe {
		return "no more marketing mail (invoices and notices still go out)"
	}
	return "no more mail of any kind"
}

// dripGraph draws the funnel's machine from its definition.
func dripGraph(e *env, f *dripFlags) error {
	fun, _, err := f.load(false)
	if err != nil {
		return err
	}
	out, err := fun.Graph(f.format)
	if err != nil {
		return run.Usagef("graph: %v", err)
	}
	_, err = fmt.Fprint(e.stdout, out)
	return err
}

// dripServe is `cronkit drip unsubscribe-server`: lib/mail's unsubscribe handler over
// HTTP (or HTTPS with --tls-cert/--tls-key), recording each unsubscribe in the
// database; SIGTERM shuts it down gracefully (requests in flight finish).
func dripServe(ctx context.Context, k *jobKit, f *dripFlags) error {
	if f.listen == "" {
		return run.Usagef("unsubscribe-server needs --listen ADDR (e.g. :8080)")
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return run.Usagef("--tls-cert and --tls-key go together")
	}
	if k.run.dryRun {
		return run.Usagef("unsubscribe-server has no dry run")
	}
	if err := validateLogFormat(k.run.logFormat); err != nil {
		return err
	}
	keys, err := f.keys()
	if err != nil {
		return err
	}
	fun, _, err := f.load(false)
	if err != nil {
		return err
	}
	var tlsConfig *tls.Config
	if f.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return run.Usagef("--tls-cert/--tls-key: %v", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return run.Usagef("--listen %s: %v", f.listen, err)
	}
	defer ln.Close()
	db, err := k.db.open(ctx, false)
	if err != nil {
		return err
	}
	defer db.Close()

	var logger zerolog.Logger
	if k.e.logFormat(k.run.logFormat) == "console" {
		logger = zerolog.New(zerolog.ConsoleWriter{Out: k.e.stderr, NoColor: !k.e.tty}).With().Timestamp().Logger()
	} else {
		logger = zerolog.New(k.e.stderr).With().Timestamp().Logger()
	}
	logger = logger.With().Str("job", "drip").Str("service", "unsubscribe").Str("host", k.e.host).
		Str("version", k.e.version).Str("funnel", fun.Name).Logger()
	j := &drip.Job{DB: db, Funnel: fun, Now: k.e.now}
	h, err := mail.NewUnsubscribeHandler(keys, j, f.org)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := db.PingContext(r.Context()); err != nil {
			http.Error(w, "database unavailable", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("/", h)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mux.ServeHTTP(w, r.WithContext(logger.WithContext(r.Context())))
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		TLSConfig:         tlsConfig,
	}
	done := make(chan error, 1)
	go func() {
		if tlsConfig != nil {
			done <- srv.ServeTLS(ln, "", "")
		} else {
			done <- srv.Serve(ln)
		}
	}()
	logger.Info().Str("listen", ln.Addr().String()).Bool("tls", tlsConfig != nil).Msg("unsubscribe server listening")
	select {
	case err := <-done:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("unsubscribe server: %w", err)
	case <-ctx.Done():
	}
	logger.Info().Msg("shutting down: finishing requests in flight")
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("unsubscribe server shutdown: %w", err)
	}
	logger.Info().Msg("stopped")
	return nil
}
