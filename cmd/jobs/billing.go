package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cronkit/cronkit/jobs/billing"
	"github.com/cronkit/cronkit/lib/payment"
	"github.com/cronkit/cronkit/lib/run"
)

// billingCommand is `jobs billing [rate|close|charge|show-invoice ID]`: the phases
// alone for ops, all three in order by default (hourly from cron).
func billingCommand() *command {
	return &command{
		name:    "billing",
		summary: "rate usage hourly, close ended months into invoices, charge them (rate|close|charge|show-invoice ID)",
		verbs:   []string{"rate", "close", "charge", "show-invoice"},
		setup: func(e *env, fs *flag.FlagSet) func(context.Context, string, []string) int {
			var o jobOptions
			o.register(fs, 50*time.Minute)
			var f billingFlags
			fs.StringVar(&f.stripeKey, "stripe-key", "", "Stripe secret API key (sk_...); needed to charge")
			fs.StringVar(&f.stripeURL, "stripe-url", "", "Stripe API base URL; empty is Stripe's own (set it for a fake or stripe-mock)")
			fs.DurationVar(&f.settle, "settle-delay", billing.DefaultSettleDelay, "rate an hour only this long after it ends (late metering)")
			fs.StringVar(&f.retryDays, "retry-days", "1,3,5,7", "retry a declined invoice this many days after it opened, comma-separated")
			fs.IntVar(&f.netDays, "net-days", 0, "payment term: an invoice is due this many days after it opens")
			fs.StringVar(&f.month, "month", "", "close only this month, YYYY-MM (with the close verb)")
			fs.StringVar(&f.now, "now", "", "evaluate as of this RFC 3339 time instead of the clock (a future time only with --dry-run)")
			return func(ctx context.Context, verb string, args []string) int {
				if verb == "show-invoice" {
					return showInvoice(ctx, e, &o, args[0])
				}
				cfg, clock, err := f.config(e, verb, &o)
				if err != nil {
					fmt.Fprintf(e.stderr, "jobs billing: %v\n", err)
					return run.ExitUsage
				}
				var pay billing.Payments = refusingPayments{}
				if !o.dryRun {
					pay = payment.New(payment.Config{
						APIKey: f.stripeKey, BaseURL: f.stripeURL,
						HTTPClient: &http.Client{Timeout: 30 * time.Second},
					})
				}
				return e.runJob(ctx, "billing", &o, func(ctx context.Context, db *sql.DB) (*run.Report, error) {
					j := &billing.Job{DB: db, Payments: pay, Config: cfg, Now: clock}
					switch verb {
					case "rate":
						return j.Rate(ctx)
					case "close":
						return j.Close(ctx)
					case "charge":
						return j.Charge(ctx)
					}
					return j.Run(ctx)
				})
			}
		},
		checkArgs: func(verb string, args []string) error {
			if verb != "show-invoice" {
				return noArgs(verb, args)
			}
			if len(args) != 1 {
				return errors.New("show-invoice takes one invoice id")
			}
			if id, err := strconv.ParseInt(args[0], 10, 64); err != nil || id <= 0 {
				return fmt.Errorf("invoice id %q: want a positive integer", args[0])
			}
			return nil
		},
	}
}

// billingFlags are billing's own flags, as given.
type billingFlags struct {
	stripeKey, stripeURL string
	settle               time.Duration
	retryDays            string
	netDays              int
	month                string
	now                  string
}

// config checks the flags (all of them, before anything is opened or written) and
// builds the job's configuration and clock.
func (f *billingFlags) config(e *env, verb string, o *jobOptions) (billing.Config, func() time.Time, error) {
	cfg := billing.Config{SettleDelay: f.settle, NetDays: f.netDays, Account: o.account, DryRun: o.dryRun}
	if f.settle < 0 {
		return cfg, nil, run.Usagef("--settle-delay must not be negative")
	}
	if f.netDays < 0 {
		return cfg, nil, run.Usagef("--net-days must not be negative")
	}
	days, err := parseRetryDays(f.retryDays)
	if err != nil {
		return cfg, nil, err
	}
	for _, d := range days {
		cfg.RetrySchedule = append(cfg.RetrySchedule, time.Duration(d)*24*time.Hour)
	}
	clock := e.now
	now := e.now().UTC()
	if f.now != "" {
		t, err := time.Parse(time.RFC3339, f.now)
		if err != nil {
			return cfg, nil, run.Usagef("--now %q: want an RFC 3339 time such as 2025-03-01T00:20:00Z", f.now)
		}
		if t.After(now) && !o.dryRun {
			return cfg, nil, run.Usagef("--now %s is in the future: only a dry run may look ahead", f.now)
		}
		now = t.UTC()
		clock = func() time.Time { return now }
	}
	if f.month != "" {
		if verb != "close" {
			return cfg, nil, run.Usagef("--month is for 'jobs billing close'")
		}
		m, err := time.Parse("2006-01", f.month)
		if err != nil {
			return cfg, nil, run.Usagef("--month %q: want YYYY-MM", f.month)
		}
		if !m.Before(time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)) {
			return cfg, nil, run.Usagef("--month %s has not ended", f.month)
		}
		cfg.Month = m
	}
	if (verb == "" || verb == "charge") && !o.dryRun && f.stripeKey == "" {
		return cfg, nil, run.Usagef("charging needs --stripe-key (or CRONKIT_STRIPE_KEY); 'jobs billing rate' and 'close' do not")
	}
	return cfg, clock, nil
}

// parseRetryDays reads "1,3,5,7": whole days after opening, strictly increasing.
func parseRetryDays(s string) ([]int, error) {
	var days []int
	for _, part := range strings.Split(s, ",") {
		d, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || d <= 0 || (len(days) > 0 && d <= days[len(days)-1]) {
			return nil, run.Usagef("--retry-days %q: want increasing whole days, e.g. 1,3,5,7", s)
		}
		days = append(days, d)
	}
	return days, nil
}

// refusingPayments stands in for the provider in a dry run: the job only plans, and
// if it ever tried to charge, the call would fail instead of charging.
type refusingPayments struct{}

var errDryRunProvider = errors.New("dry run: the payment provider is not called")

func (refusingPayments) Charge(context.Context, payment.ChargeRequest) (payment.ChargeResult, error) {
	return payment.ChargeResult{}, errDryRunProvider
}

func (refusingPayments) GetCustomer(context.Context, string) (payment.Customer, error) {
	return payment.Customer{}, errDryRunProvider
}

// showInvoice prints one invoice: a read, with no lock and no job_runs row.
func showInvoice(ctx context.Context, e *env, o *jobOptions, arg string) int {
	if o.output != "text" && o.output != "json" {
		fmt.Fprintf(e.stderr, "jobs billing: --output %q: want text or json\n", o.output)
		return run.ExitUsage
	}
	id, _ := strconv.ParseInt(arg, 10, 64) // checked by checkArgs
	db, err := o.db.open(ctx, true)
	if errors.Is(err, run.ErrUsage) {
		fmt.Fprintf(e.stderr, "jobs billing: %v\n", err)
		return run.ExitUsage
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "jobs billing: %v\n", err)
		return run.ExitFailed
	}
	defer db.Close()
	inv, err := (&billing.Job{DB: db}).Invoice(ctx, id)
	if err != nil {
		fmt.Fprintf(e.stderr, "jobs billing show-invoice: %v\n", err)
		return run.ExitFailed
	}
	if o.output == "json" {
		err = inv.WriteJSON(e.stdout)
	} else {
		err = inv.WriteText(e.stdout)
	}
	if err != nil {
		return run.ExitFailed
	}
	return run.ExitOK
}
