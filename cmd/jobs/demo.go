package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cronkit/cronkit/fixtures"
	"github.com/cronkit/cronkit/lib/mail/mailsink"
	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/orchestrator/fakecloudstack"
	"github.com/cronkit/cronkit/lib/payment/fakestripe"
	"github.com/cronkit/cronkit/lib/run"
)

// demoCommand shows cronkit on a believable small cloud: it loads the fixture world
// into an empty database, starts the fake Stripe, fake CloudStack and an SMTP sink on
// loopback, and runs the jobs as child processes, exactly as cron would, printing
// each command and its report. make demo provides the throwaway MariaDB.
func demoCommand() *command {
	return &command{
		name:    "demo",
		summary: "load the demo world into an empty database and run every job (dry run, then for real) against fakes on loopback",
		setup: func(e *env, fs *flag.FlagSet) commandFunc {
			var db dbFlags
			db.register(fs)
			roDSN := fs.String("ro-dsn", "", "a SELECT-only DSN for the dry runs (default: --db-dsn)")
			keep := fs.Bool("keep", false, "after the story, keep the fakes running and print the environment that points jobs at them, until Ctrl-C (make sandbox)")
			return func(ctx context.Context, _ string, _ []string) error {
				return e.demo(ctx, db, *roDSN, *keep)
			}
		},
	}
}

// demoDays is how far in the past the demo world starts: the simulated days of the
// story end today.
const demoDays = 18

// demoStep is one command the demo runs and the exit codes that are the story (a
// dry run that finds problems exits 3, and that is what it should do).
type demoStep struct {
	title string
	args  []string
	dsn   string // overrides the DSN (the SELECT-only one for dry runs)
	ok    []int
	// do, instead of a command, is something outside cronkit (a customer adding a
	// card, a click on unsubscribe) that the story needs.
	do func(context.Context) error
	// quiet runs the command with error-level logs (unless CRONKIT_LOG_LEVEL says
	// otherwise): an expected exit 3 logs its counts as a warning the report shows.
	quiet bool
	// clip is how many lines of a long report to show from its head and its tail
	// (default 30 and 8).
	clip [2]int
	// check, when set, looks at the world after the command (the claim the step's
	// title makes) and says what is not so.
	check func(code int) error
}

func (e *env) demo(ctx context.Context, dbo dbFlags, roDSN string, keep bool) error {
	db, err := dbo.openUnchecked(ctx, false)
	if err != nil {
		return err
	}
	defer db.Close()
	if roDSN == "" {
		roDSN = dbo.dsn
	}
	e.section("cronkit migrate")
	if err := mysql.Migrate(ctx, db, "up", e.stdout); err != nil {
		return err
	}
	// The world is placed in the past and the jobs are stepped through it with --now,
	// never ahead of the clock: a real run refuses a future --now.
	now := e.now().UTC().Truncate(time.Hour).AddDate(0, 0, -demoDays)
	world := fixtures.Demo(now)
	e.section("loading the demo world")
	start := time.Now()
	if err := world.Load(ctx, db); err != nil {
		return err
	}
	var usage int64
	_ = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM usage_records").Scan(&usage)
	fmt.Fprintf(e.stdout, "%d accounts, %d usage rows, late payer %d, decliner %d, miner %d (%s)\n",
		len(world.Accounts), usage, fixtures.LatePayerID, fixtures.DeclinerID, fixtures.MinerID, time.Since(start).Round(time.Millisecond))

	// The fake Stripe keeps the story's clock: what it stamps (a PaymentIntent's
	// created time) is the simulated day the step runs on, as each job's --now is, so
	// reconcile finds billing's charges on the day billing made them. (The fake
	// CloudStack keeps real time: its usage server already answers collect's windows.)
	clock := &demoClock{}
	clock.set(now)
	stripe := fakestripe.New(fixtures.StripeKey)
	stripe.Now = clock.now
	if err := stripe.LoadFixtures(jsonReader(world.Stripe())); err != nil {
		return err
	}
	stripeURL, stopStripe, err := stripe.Start("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer stopStripe()
	cs := fakecloudstack.New()
	if err := cs.LoadFixtures(jsonReader(world.CloudStack())); err != nil {
		return err
	}
	csURL, stopCS, err := cs.Start("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer stopCS()
	sink, err := mailsink.Start("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer sink.Close()
	dir, err := os.MkdirTemp("", "cronkit-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	domains := filepath.Join(dir, "disposable_email_blocklist.conf")
	if err := os.WriteFile(domains, []byte(strings.Join(fixtures.DisposableDomains, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	products := filepath.Join(dir, "products.toml")
	if err := os.WriteFile(products, []byte(fixtures.Products), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "fake Stripe %s, fake CloudStack %s, SMTP sink %s\n", stripeURL, csURL, sink.Addr())

	// The reports tell the story; logs (one line per event) only from warnings up,
	// unless CRONKIT_LOG_LEVEL says otherwise.
	if e.getenv("CRONKIT_LOG_LEVEL") == "" {
		fmt.Fprintln(e.stdout, "(child logs at warn level; CRONKIT_LOG_LEVEL=info make demo shows every event)")
	}
	own := []string{
		"CRONKIT_DB_DSN=" + dbo.dsn,
		"CRONKIT_STRIPE_URL=" + stripeURL,
		"CRONKIT_STRIPE_KEY=" + fixtures.StripeKey,
		"CRONKIT_CLOUDSTACK_URL=" + csURL,
		"CRONKIT_CLOUDSTACK_API_KEY=" + fixtures.CloudStackAPIKey,
		"CRONKIT_CLOUDSTACK_SECRET_KEY=" + fixtures.CloudStackSecretKey,
		fmt.Sprintf("CRONKIT_SMTP_HOST=%s", "127.0.0.1"),
		fmt.Sprintf("CRONKIT_SMTP_PORT=%d", sink.Port()),
		"CRONKIT_SMTP_TLS=none",
		"CRONKIT_MAIL_FROM=billing@cronkit.example",
		"CRONKIT_DISPOSABLE_DOMAINS=" + domains,
		// billing collects the last hours of usage from the fake CloudStack first.
		"CRONKIT_PRODUCTS=" + products,
	}
	childEnv := append(os.Environ(), own...)
	if e.getenv("CRONKIT_LOG_LEVEL") == "" {
		childEnv = append(childEnv, "CRONKIT_LOG_LEVEL=warn")
	}
	drip := &dripDemo{e: e, db: db, sink: sink, dir: dir}
	if childEnv, err = drip.start(ctx, childEnv); err != nil {
		return err
	}
	own = append(own, childEnv[len(childEnv)-len(dripEnvNames()):]...)
	defer drip.stop()
	day := func(d int) string { return now.AddDate(0, 0, d).Format(time.RFC3339) }
	late := fmt.Sprint(fixtures.LatePayerID)
	steps := []demoStep{
		{title: "every schedule in crontab/ parses and names real commands", args: []string{"crontab", "check", "--dir", "crontab", "--next", "1"}, ok: []int{0}},
		{title: "billing, dry run with a SELECT-only database user: what would be rated, invoiced, charged", args: []string{"billing", "--dry-run", "--now", day(0)}, dsn: roDSN, ok: []int{0, 3}},
		{title: fmt.Sprintf("billing for real: collect the last %dh of usage from CloudStack, rate every closed hour, close last month, charge (one card declines)", fixtures.CollectedHours), args: []string{"billing", "--now", day(0)}, ok: []int{0, 3}},
		{title: "billing again: nothing is billed or charged twice", args: []string{"billing", "--now", day(0)}, ok: []int{0, 3}},
		{title: "abuse, dry run: the transitions it would make and the facts behind them", args: []string{"abuse", "--dry-run", "--now", day(0)}, dsn: roDSN, ok: []int{0, 3}},
		{title: "abuse for real: the late payer is reminded, the miner flagged and suspended", args: []string{"abuse", "--now", day(0)}, ok: []int{0, 3}},
		{title: "abuse, 11 days later (the world was placed in the past; --now steps through it): the late payer is warned", args: []string{"abuse", "--now", day(11)}, ok: []int{0, 3}},
		{title: fmt.Sprintf("abuse, %d days later (today): the late payer is suspended", demoDays), args: []string{"abuse", "--now", day(demoDays)}, ok: []int{0, 3}},
		{title: "what happened to the late payer?", args: []string{"abuse", "show", late}, ok: []int{0}},
		{title: "what happened to the miner?", args: []string{"abuse", "show", fmt.Sprint(fixtures.MinerID)}, ok: []int{0}},
	}
	steps = append(steps, dripSteps(drip, func(d int) time.Time { return now.AddDate(0, 0, d) }, roDSN)...)
	rec := &reconcileDemo{e: e, db: db, world: world, start: now, clock: clock, stripe: stripe, stripeURL: stripeURL, cs: cs, csURL: csURL}
	steps = append(steps, rec.steps(roDSN)...)
	steps = append(steps, demoStep{title: "the runs, as recorded in job_runs", args: []string{"history", "--limit", "30"}, ok: []int{0}})
	var failed []string
	for _, s := range steps {
		if s.do != nil {
			if err := s.do(ctx); err != nil {
				failed = append(failed, err.Error())
			}
			continue
		}
		if t, ok := stepNow(s.args); ok {
			clock.set(t)
		}
		if find(s.args[0]) == nil {
			failed = append(failed, fmt.Sprintf("cronkit %s: no such command in this build", s.args[0]))
			continue
		}
		env := childEnv
		if s.dsn != "" {
			env = append(append([]string{}, env...), "CRONKIT_DB_DSN="+s.dsn)
		}
		if s.quiet && e.getenv("CRONKIT_LOG_LEVEL") == "" {
			env = append(append([]string{}, env...), "CRONKIT_LOG_LEVEL=error")
		}
		code := e.demoRun(ctx, s, env)
		if s.check != nil {
			if err := s.check(code); err != nil {
				failed = append(failed, err.Error())
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !contains(s.ok, code) {
			failed = append(failed, fmt.Sprintf("cronkit %s exited %d", strings.Join(s.args, " "), code))
		}
	}
	e.section("mail sent through SMTP (captured by the sink)")
	for _, m := range sink.Messages() {
		fmt.Fprintf(e.stdout, "%-32s %s%s\n", strings.Join(m.To, ","), m.Header.Get("Subject"), demoUnsubscribeFor(m))
	}
	if len(sink.Messages()) == 0 {
		fmt.Fprintln(e.stdout, "(none)")
	}
	succeeded, declined := 0, 0
	for _, a := range world.Accounts {
		if a.Customer != "" {
			s, f := stripe.ChargeCount(a.Customer)
			succeeded, declined = succeeded+s, declined+f
		}
	}
	c := cs.Counters()
	e.section("what the fakes saw")
	fmt.Fprintf(e.stdout, "Stripe: %d PaymentIntents (%d succeeded, %d declined)\nCloudStack: %d stops, %d disables, %d starts, %d enables, %d destroys\n",
		stripe.PaymentIntentCount(), succeeded, declined, c.Stops, c.Disables, c.Starts, c.Enables, c.Destroys)
	if len(failed) > 0 {
		return fmt.Errorf("%d step(s) did not go as expected: %s", len(failed), strings.Join(failed, "; "))
	}
	e.section("demo complete")
	if !keep {
		return nil
	}
	// From here on the fake Stripe keeps real time too: what a person does in the
	// sandbox happens now.
	clock.set(time.Time{})
	return e.keepSandbox(ctx, own, dir)
}

// demoClock is the story's simulated instant, which the fakes read; the zero time
// means the real clock.
type demoClock struct{ ns atomic.Int64 }

func (c *demoClock) set(t time.Time) {
	if t.IsZero() {
		c.ns.Store(0)
		return
	}
	c.ns.Store(t.UnixNano())
}

func (c *demoClock) now() time.Time {
	if n := c.ns.Load(); n != 0 {
		return time.Unix(0, n).UTC()
	}
	return time.Now()
}

// stepNow is the --now a step's command runs at, if it has one.
func stepNow(args []string) (time.Time, bool) {
	for i, a := range args {
		if a == "--now" && i+1 < len(args) {
			t, err := time.Parse(time.RFC3339, args[i+1])
			return t, err == nil
		}
	}
	return time.Time{}, false
}

func (e *env) demoRun(ctx context.Context, s demoStep, env []string) int {
	e.section(s.title)
	fmt.Fprintf(e.stdout, "$ cronkit %s\n", strings.Join(s.args, " "))
	cmd := exec.CommandContext(ctx, e.self, s.args...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, e.stderr
	err := cmd.Run()
	head, tail := 30, 8
	if s.clip != [2]int{} {
		head, tail = s.clip[0], s.clip[1]
	}
	writeClipped(e.stdout, out.String(), head, tail)
	code := cmd.ProcessState.ExitCode()
	if err != nil && code < 0 {
		fmt.Fprintf(e.stderr, "cronkit demo: %v\n", err)
		return run.ExitFailed
	}
	fmt.Fprintf(e.stdout, "(exit %d)\n", code)
	return code
}

// writeClipped prints a report, eliding the middle of a long one (a first billing
// run rates every hour since the start of last month: a line per hour).
func writeClipped(w io.Writer, s string, head, tail int) {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) <= head+tail+1 {
		fmt.Fprint(w, s)
		return
	}
	fmt.Fprint(w, strings.Join(lines[:head], ""))
	fmt.Fprintf(w, "  ... %d more lines (run the command yourself for the whole report) ...\n", len(lines)-head-tail)
	fmt.Fprint(w, strings.Join(lines[len(lines)-tail:], ""))
}

func (e *env) section(title string) {
	fmt.Fprintf(e.stdout, "\n==> %s\n", title)
}

func jsonReader(v any) io.Reader {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // fixture types always marshal
	}
	return bytes.NewReader(b)
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
