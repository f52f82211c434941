package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cronkit/cronkit/jobs/billing"
	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/run"
)

// billingCommand is `cronkit billing [collect|rate|close|charge|show-invoice ID]`: the
// phases alone for ops, all of them in order by default (hourly from cron); collect
// only with --products.
func billingCommand() *command {
	return &command{
		name:    "billing",
		summary: "collect usage from CloudStack (--products), rate it hourly, close ended months into invoices, charge them (collect|rate|close|charge|show-invoice ID)",
		verbs:   []string{"collect", "rate", "close", "charge", "show-invoice"},
		setup: func(e *env, fs *flag.FlagSet) commandFunc {
			k := newJobKit(e, fs, "billing", 50*time.Minute)
			var clock clockFlags
			var stripe stripeFlags
			var cs cloudstackFlags
			var f billingFlags
			clock.register(fs)
			stripe.register(fs)
			cs.register(fs)
			f.register(fs)
			return func(ctx context.Context, verb string, args []string) error {
				if verb == "show-invoice" {
					return showInvoice(ctx, k, args[0])
				}
				now, err := clock.clock(e.now, k.run.dryRun)
				if err != nil {
					return err
				}
				cfg, err := f.config(verb, now(), k.run)
				if err != nil {
					return err
				}
				need := ""
				if verb == "" || verb == "charge" {
					need = "charging ('cronkit billing rate' and 'close' do not)"
				}
				pay, err := stripe.client(k.run.dryRun, need)
				if err != nil {
					return err
				}
				var usage billing.UsageSource
				if cfg.Products, err = f.loadProducts(verb); err != nil {
					return err
				}
				if cfg.Products != nil {
					if usage, err = cs.client(k.run.dryRun); err != nil {
						return fmt.Errorf("--products turns collect on: %w", err)
					}
				}
				return k.runJob(ctx, func(ctx context.Context, db *sql.DB) (*run.Report, error) {
					j := &billing.Job{DB: db, Payments: pay, Usage: usage, Config: cfg, Now: now}
					switch verb {
					case "collect":
						return j.Collect(ctx)
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
	settle    time.Duration
	retryDays string
	netDays   int
	month     string
	products  string
	lookback  time.Duration
	pageSize  int
}

func (f *billingFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&f.settle, "settle-delay", billing.DefaultSettleDelay, "rate an hour only this long after it ends (late metering)")
	fs.StringVar(&f.retryDays, "retry-days", "1,3,5,7", "retry a declined invoice this many days after it opened, comma-separated")
	fs.IntVar(&f.netDays, "net-days", 0, "payment term: an invoice is due this many days after it opens")
	fs.StringVar(&f.month, "month", "", "close only this month, YYYY-MM (with the close verb)")
	fs.StringVar(&f.products, "products", "", "product mapping (TOML, see jobs/billing/products.example.toml): turns on collecting usage from CloudStack")
	fs.DurationVar(&f.lookback, "collect-lookback", billing.DefaultCollectLookback, "collect reads again this far behind its last read (the usage server writes late)")
	fs.IntVar(&f.pageSize, "collect-page-size", orchestrator.DefaultPageSize, "listUsageRecords page size (CloudStack's default.page.size caps it)")
}

// loadProducts reads and checks --products at start: a mapping that cannot be used
// is a usage error (exit 2) naming the file and the entry. Nil when collect is off.
func (f *billingFlags) loadProducts(verb string) (*billing.Products, error) {
	if f.products == "" {
		if verb == "collect" {
			return nil, run.Usagef("'cronkit billing collect' needs --products (or CRONKIT_PRODUCTS): the product mapping")
		}
		return nil, nil
	}
	data, err := os.ReadFile(f.products)
	if err != nil {
		return nil, run.Usagef("--products: %v", err)
	}
	p, err := billing.ParseProducts(data)
	if err != nil {
		return nil, run.Usagef("--products %s: %v", f.products, err)
	}
	return p, nil
}

// config checks billing's flags and builds the job's configuration.
func (f *billingFlags) config(verb string, now time.Time, o runFlags) (billing.Config, error) {
	cfg := billing.Config{SettleDelay: f.settle, NetDays: f.netDays, Account: o.account, DryRun: o.dryRun,
		CollectLookback: f.lookback, CollectPageSize: f.pageSize}
	if f.lookback <= 0 {
		return cfg, run.Usagef("--collect-lookback must be positive")
	}
	if f.pageSize <= 0 || f.pageSize > orchestrator.DefaultPageSize {
		return cfg, run.Usagef("--collect-page-size must be between 1 and %d", orchestrator.DefaultPageSize)
	}
	if verb == "collect" && o.account != 0 {
		return cfg, run.Usagef("'cronkit billing collect' reads every account's usage: --account does not apply")
	}
	if f.settle < 0 {
		return cfg, run.Usagef("--settle-delay must not be negative")
	}
	if f.netDays < 0 {
		return cfg, run.Usagef("--net-days must not be negative")
	}
	days, err := parseRetryDays(f.retryDays)
	if err != nil {
		return cfg, err
	}
	for _, d := range days {
		cfg.RetrySchedule = append(cfg.RetrySchedule, time.Duration(d)*24*time.Hour)
	}
	if f.month != "" {
		if verb != "close" {
			return cfg, run.Usagef("--month is for 'cronkit billing close'")
		}
		m, err := time.Parse("2006-01", f.month)
		if err != nil {
			return cfg, run.Usagef("--month %q: want YYYY-MM", f.month)
		}
		if !m.Before(time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)) {
			return cfg, run.Usagef("--month %s has not ended", f.month)
		}
		cfg.Month = m
	}
	return cfg, nil
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

// showInvoice prints one invoice: a read, with no lock and no job_runs row.
func showInvoice(ctx context.Context, k *jobKit, arg string) error {
	id, _ := strconv.ParseInt(arg, 10, 64) // checked by checkArgs
	db, err := k.read(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	inv, err := (&billing.Job{DB: db}).Invoice(ctx, id)
	if err != nil {
		return fmt.Errorf("show-invoice: %w", err)
	}
	return k.out.write(k.e.stdout, inv)
}
