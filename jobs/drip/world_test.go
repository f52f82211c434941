package drip

import (
	"context"
	"database/sql"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/mail/mailsink"
	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/orchestrator/fakecloudstack"
	"github.com/cronkit/cronkit/lib/run"
)

const (
	testAPIKey    = "drip-test-key"
	testSecretKey = "drip-test-secret"
	testFrom      = "Example Cloud <hello@cloud.example>"
	testSecret    = "0123456789abcdef0123456789abcdef-drip-test"
	testUnsubURL  = "https://cloud.example/unsubscribe"
)

// world is the real MariaDB, the fake CloudStack behind the real SDK client and an
// SMTP sink behind the real go-mail sender, on a clock the test moves.
type world struct {
	t      *testing.T
	db     *mysqltest.DB
	fake   *fakecloudstack.Server
	orch   *orchestrator.Client
	sink   *mailsink.Sink
	sender *mail.Sender
	keys   *mail.UnsubscribeKeys
	tmpl   *mail.Templates
	now    time.Time
	runs   int
}

func newWorld(t *testing.T, now time.Time) *world {
	t.Helper()
	w := &world{t: t, db: mysqltest.New(t), fake: fakecloudstack.New(), now: now}
	w.fake.AddCredential(testAPIKey, testSecretKey)
	srv := httptest.NewServer(w.fake.Handler())
	t.Cleanup(srv.Close)
	var err error
	w.orch, err = orchestrator.New(orchestrator.Config{APIURL: srv.URL + "/client/api", APIKey: testAPIKey, SecretKey: testSecretKey,
		Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if w.sink, err = mailsink.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.sink.Close() })
	w.sender, err = mail.NewSender(mail.SMTPConfig{Host: "127.0.0.1", Port: w.sink.Port(), TLS: "none", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w.sender.Now = func() time.Time { return w.now }
	if w.keys, err = mail.NewUnsubscribeKeys(testSecret); err != nil {
		t.Fatal(err)
	}
	if w.tmpl, err = Templates(); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *world) job() *Job {
	return &Job{DB: w.db.DB, Orchestrator: w.orch, Sender: w.sender, Funnel: DefaultFunnel(), Templates: w.tmpl,
		Links: mail.UnsubscribeLinks{BaseURL: testUnsubURL, Mailto: "unsubscribe@cloud.example", Keys: w.keys},
		Config: Config{MailFrom: testFrom, ConsoleURL: "https://console.cloud.example/", DocsURL: "https://docs.cloud.example/start",
			BillingURL: "https://console.cloud.example/billing", SupportEmail: "support@cloud.example", Since: w.start()},
		Now: func() time.Time { return w.now }}
}

// start is the funnel's start in every test: the first instant the world runs at.
func (w *world) start() time.Time { return utc("2026-03-02T00:00:00Z") }

func (w *world) ctx() context.Context {
	w.runs++
	log := zerolog.New(zerolog.NewTestWriter(w.t)).Level(zerolog.WarnLevel)
	return run.WithInfo(log.WithContext(context.Background()), run.Info{ID: "01KDRIPTESTRUN00000000000" + string(rune('A'+w.runs%26)), Job: "drip"})
}

// runJob runs j (default w.job()) at w.now.
func (w *world) runJob(j *Job) *run.Report {
	w.t.Helper()
	if j == nil {
		j = w.job()
	}
	rep, err := j.Run(w.ctx())
	if err != nil {
		w.t.Fatalf("run at %s: %v", w.now.Format(time.RFC3339), err)
	}
	return rep
}

func (w *world) exec(query string, args ...any) {
	w.t.Helper()
	if _, err := w.db.ExecContext(context.Background(), query, args...); err != nil {
		w.t.Fatalf("%s: %v", query, err)
	}
}

func (w *world) scalar(query string, args ...any) string {
	w.t.Helper()
	var s sql.NullString
	if err := w.db.QueryRowContext(context.Background(), query, args...).Scan(&s); err != nil && !errors.Is(err, sql.ErrNoRows) {
		w.t.Fatalf("%s: %v", query, err)
	}
	return s.String
}

func (w *world) list(query string, args ...any) []string {
	w.t.Helper()
	rows, err := w.db.QueryContext(context.Background(), query, args...)
	if err != nil {
		w.t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			w.t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// signup adds an account (and its CloudStack account when cs is set) created at at.
func (w *world) signup(id int64, email, name, zone, cs string, at time.Time) {
	w.t.Helper()
	var csID any
	if cs != "" {
		if _, err := w.fake.AddAccount(fakecloudstack.Account{ID: cs, Name: "acct-" + cs}); err != nil {
			w.t.Fatal(err)
		}
		csID = cs
	}
	w.exec(`INSERT INTO accounts (id, email, currency, created_at, name, time_zone, cloudstack_account_id) VALUES (?, ?, 'EUR', ?, ?, ?, ?)`,
		id, email, at, name, zone, csID)
}

func (w *world) trial(id int64, amount string, granted, expires time.Time) {
	w.exec(`INSERT INTO credits (account_id, amount, currency, reason, granted_at, expires_at) VALUES (?, ?, 'EUR', 'trial', ?, ?)`,
		id, amount, granted, expires)
}

// transitions are an account's funnel transitions, "from->to(event)".
func (w *world) transitions(id int64) string {
	return strings.Join(w.list(`SELECT CONCAT(from_state, '->', to_state, '(', event, ')') FROM case_transitions
WHERE account_id = ? AND machine = 'drip:onboarding' ORDER BY id`, id), " ")
}

// received are the funnel steps the sink got for an address, in arrival order.
func (w *world) received(email string) []string {
	var out []string
	for _, m := range w.sink.Messages() {
		if len(m.To) == 1 && m.To[0] == email {
			out = append(out, m.Header.Get("X-Cronkit-Drip"))
		}
	}
	return out
}

func hasAct(rep *run.Report, kind, subject, detailPart string) bool {
	for _, a := range rep.Actions {
		if a.Kind == kind && a.Subject == subject && strings.Contains(a.Detail, detailPart) {
			return true
		}
	}
	return false
}
