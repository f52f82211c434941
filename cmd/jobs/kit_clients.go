package main

// Client groups of the job kit: Stripe, CloudStack, SMTP and the mail sender. Each
// registers its flags, checks them, and builds the real client or, in a dry run, the
// refusing stand-in that lives beside the client in lib/.

import (
	"context"
	"database/sql"
	"flag"
	"net/http"
	"time"

	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/payment"
	"github.com/cronkit/cronkit/lib/run"
)

// stripeFlags is the payment provider group.
type stripeFlags struct {
	key     string
	url     string
	timeout time.Duration
}

func (g *stripeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&g.key, "stripe-key", "", "Stripe secret API key (sk_...)")
	fs.StringVar(&g.url, "stripe-url", "", "Stripe API base URL; empty is Stripe's own (set it for a fake or stripe-mock)")
	fs.DurationVar(&g.timeout, "stripe-timeout", 30*time.Second, "bound on each Stripe request")
}

// payments is what the group builds: the Stripe client, or its dry-run stand-in.
type payments interface {
	Charge(context.Context, payment.ChargeRequest) (payment.ChargeResult, error)
	GetCustomer(context.Context, string) (payment.Customer, error)
}

// client builds the provider. need says why a real run needs the key (empty: the
// command can run without Stripe, and the stand-in refuses every call). A dry run
// never needs a key; with one, its reads go to Stripe and its writes are refused.
func (g *stripeFlags) client(dryRun bool, need string) (payments, error) {
	if g.timeout <= 0 {
		return nil, run.Usagef("--stripe-timeout must be positive")
	}
	if g.key == "" {
		if need != "" && !dryRun {
			return nil, run.Usagef("%s needs --stripe-key (or CRONKIT_STRIPE_KEY)", need)
		}
		return payment.NewDryRun(nil), nil
	}
	c := payment.New(payment.Config{APIKey: g.key, BaseURL: g.url, HTTPClient: &http.Client{Timeout: g.timeout}})
	if dryRun {
		return payment.NewDryRun(c), nil
	}
	return c, nil
}

// cloudstackFlags is the orchestrator group.
type cloudstackFlags struct {
	url     string
	key     string
	secret  string
	timeout time.Duration
}

func (g *cloudstackFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&g.url, "cloudstack-url", "", "CloudStack API endpoint, e.g. https://cloud.example.com/client/api")
	fs.StringVar(&g.key, "cloudstack-api-key", "", "CloudStack API key")
	fs.StringVar(&g.secret, "cloudstack-secret-key", "", "CloudStack secret key")
	fs.DurationVar(&g.timeout, "cloudstack-timeout", 60*time.Second, "bound on each CloudStack request")
}

// orchestratorClient is what the group builds: the client, or its dry-run stand-in,
// whose reads go to CloudStack and whose changes are refused.
type orchestratorClient interface {
	orchestrator.Reader
	StopVM(ctx context.Context, id string) error
	StartVM(ctx context.Context, id string) error
	DestroyVM(ctx context.Context, id string, expunge bool) error
	DisableAccount(ctx context.Context, accountID string) error
	EnableAccount(ctx context.Context, accountID string) error
}

// client builds the orchestrator; all three settings are required.
func (g *cloudstackFlags) client(dryRun bool) (orchestratorClient, error) {
	for _, f := range []struct{ name, v string }{
		{"cloudstack-url", g.url}, {"cloudstack-api-key", g.key}, {"cloudstack-secret-key", g.secret},
	} {
		if f.v == "" {
			return nil, run.Usagef("no orchestrator: set --%s (or %s); CloudStack needs --cloudstack-url, --cloudstack-api-key and --cloudstack-secret-key", f.name, envName(f.name))
		}
	}
	if g.timeout <= 0 {
		return nil, run.Usagef("--cloudstack-timeout must be positive")
	}
	c, err := orchestrator.New(orchestrator.Config{APIURL: g.url, APIKey: g.key, SecretKey: g.secret,
		Timeout: g.timeout, ReadOnly: dryRun, HTTPClient: &http.Client{Timeout: g.timeout}})
	if err != nil {
		return nil, run.Usagef("--cloudstack-url: %v", err)
	}
	if dryRun {
		return orchestrator.NewDryRun(c), nil
	}
	return c, nil
}

// mailFlags is the SMTP relay and sender group.
type mailFlags struct {
	host     string
	port     int
	user     string
	password string
	tls      string
	from     string
}

func (g *mailFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&g.host, "smtp-host", "", "SMTP relay host; empty leaves messages queued in the outbox")
	fs.IntVar(&g.port, "smtp-port", 0, "SMTP relay port (default by --smtp-tls: 587, 465 for tls, 25 for none)")
	fs.StringVar(&g.user, "smtp-username", "", "SMTP user (AUTH)")
	fs.StringVar(&g.password, "smtp-password", "", "SMTP password")
	fs.StringVar(&g.tls, "smtp-tls", "", "SMTP TLS: empty (STARTTLS when offered), starttls, tls or none")
	fs.StringVar(&g.from, "mail-from", "", "From address of the messages, e.g. \"Billing <billing@example.com>\"")
}

// sender checks the group and builds the SMTP sender: nil when no relay is set (mail
// stays queued) or in a dry run (nothing is sent, so no sender address is needed).
func (g *mailFlags) sender(dryRun bool) (mail.MessageSender, string, error) {
	if dryRun {
		return nil, g.from, nil
	}
	if g.from == "" {
		return nil, "", run.Usagef("no sender address: set --mail-from (or CRONKIT_MAIL_FROM)")
	}
	if g.host == "" {
		return nil, g.from, nil
	}
	s, err := mail.NewSender(mail.SMTPConfig{Host: g.host, Port: g.port, Username: g.user,
		Password: g.password, TLS: g.tls, From: g.from})
	if err != nil {
		return nil, "", run.Usagef("--smtp-host: %v", err)
	}
	return s, g.from, nil
}

// mailbox is what the group builds for a job's outbox: the MySQL outbox, or in a dry
// run its stand-in, which refuses to queue or deliver.
type mailbox interface {
	Enqueue(ctx context.Context, tx *sql.Tx, key string, msg mail.Message) (bool, error)
	Deliver(ctx context.Context, sender mail.MessageSender, limit int) (mail.DeliveryReport, error)
}

// outbox builds the job's outbox on db, with the job's clock, scoped to the job's keys
// (keyPrefix, e.g. "abuse:") so its delivery sends only its own mail.
func (g *mailFlags) outbox(db *sql.DB, now func() time.Time, dryRun bool, keyPrefix string) mailbox {
	o := &mail.Outbox{DB: db, Now: now, KeyPrefix: keyPrefix}
	if dryRun {
		return mail.NewDryRunOutbox(o)
	}
	return o
}
