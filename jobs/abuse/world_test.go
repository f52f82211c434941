package abuse

import (
	"context"
	"database/sql"
	"errors"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/mail/mailsink"
	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/orchestrator/fakecloudstack"
	"github.com/cronkit/cronkit/lib/run"
)

const (
	testAPIKey    = "abuse-test-key"
	testSecretKey = "abuse-test-secret"
	testFrom      = "Billing <billing@cloud.example>"
)

// world is the real MariaDB, the fake CloudStack behind the real SDK client, and an
// SMTP sink behind the real go-mail sender: what the job talks to in production,
// minus the network.
type world struct {
	t      *testing.T
	db     *mysqltest.DB
	fake   *fakecloudstack.Server
	orch   *orchestrator.Client
	apiURL string
	sink   *mailsink.Sink
	outbox *mail.Outbox
	sender *mail.Sender
	list   *DomainList
	now    time.Time
	runs   int
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, db: mysqltest.New(t), fake: fakecloudstack.New(), now: utc("2026-10-01T00:00:00Z")}
	w.fake.AddCredential(testAPIKey, testSecretKey)
	srv := httptest.NewServer(w.fake.Handler())
	t.Cleanup(srv.Close)
	w.apiURL = srv.URL + "/client/api"
	var err error
	if w.orch, err = newClient(w, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	w.sink, err = mailsink.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.sink.Close() })
	w.sender, err = mail.NewSender(mail.SMTPConfig{Host: "127.0.0.1", Port: w.sink.Port(), TLS: "none", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w.outbox = &mail.Outbox{DB: w.db.DB, Now: func() time.Time { return w.now }}
	if w.list, err = BuiltinDomainList(); err != nil {
		t.Fatal(err)
	}
	return w
}

func newClient(w *world, timeout time.Duration) (*orchestrator.Client, error) {
	return orchestrator.New(orchestrator.Config{APIURL: w.apiURL, APIKey: testAPIKey, SecretKey: testSecretKey,
		AsyncPoll: 2 * time.Millisecond, AsyncTimeout: 5 * time.Second, Timeout: timeout})
}

func (w *world) job() *Job {
	return &Job{DB: w.db.DB, Orchestrator: w.orch, Outbox: w.outbox, Sender: w.sender, Policy: DefaultPolicy(),
		Disposable: w.list, Config: Config{MailFrom: testFrom, Concurrency: 3, Rate: 1000},
		Now: func() time.Time { return w.now }}
}

func (w *world) ctx() context.Context {
	w.runs++
	log := zerolog.New(zerolog.NewTestWriter(w.t)).Level(zerolog.WarnLevel)
	ctx := log.WithContext(context.Background())
	return run.WithInfo(ctx, run.Info{ID: "01KTESTRUN" + strings.Repeat("0", 14) + string(rune('A'+w.runs%26)), Job: "abuse"})
}

// runJob runs j (default: w.job()) at w.now and returns its report.
func (w *world) runJob(j *Job) *run.Report {
	w.t.Helper()
	if j == nil {
		j = w.job()
	}
	rep, err := j.Run(w.ctx())
	if err != nil {
		w.t.Fatalf("run at %s: %v", w.now, err)
	}
	return rep
}

func (w *world) exec(query string, args ...any) {
	w.t.Helper()
	if _, err := w.db.ExecContext(context.Background(), query, args...); err != nil {
		w.t.Fatalf("%s: %v", query, err)
	}
}

func (w *world) account(id int64, email, cs string, created time.Time, edit ...func(*fakecloudstack.Account)) {
	w.t.Helper()
	var csID any
	if cs != "" {
		a := fakecloudstack.Account{ID: cs, Name: "acct-" + cs}
		for _, e := range edit {
			e(&a)
		}
		if _, err := w.fake.AddAccount(a); err != nil {
			w.t.Fatal(err)
		}
		csID = cs
	}
	w.exec(`INSERT INTO accounts (id, email, currency, created_at, name, cloudstack_account_id) VALUES (?, ?, 'EUR', ?, ?, ?)`,
		id, email, created, "Customer "+email, csID)
}

func (w *world) vm(cs, id, state string, cpu float64, created time.Time) {
	w.t.Helper()
	if _, err := w.fake.AddVM(fakecloudstack.VM{ID: id, Name: id, AccountID: cs, State: state, CPUUsed: cpu, Created: created}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) invoice(id, account int64, due time.Time, total, paid int64) {
	w.exec(`INSERT INTO invoices (id, account_id, period_start, currency, subtotal, total_minor, amount_paid_minor, status,
  created_at, opened_at, due_at) VALUES (?, ?, ?, 'EUR', ?, ?, ?, 'open', ?, ?, ?)`,
		id, account, due.AddDate(0, -1, 0).Format("2006-01-02"), float64(total)/100, total, paid, due, due, due)
}

func (w *world) pay(invoice, amount int64) {
	w.exec(`UPDATE invoices SET amount_paid_minor = amount_paid_minor + ?,
  status = IF(amount_paid_minor >= total_minor, 'paid', status) WHERE id = ?`, amount, invoice)
}

// cases returns "machine:state" of the account's cases, oldest first.
func (w *world) cases(account int64) []string {
	w.t.Helper()
	rows, err := w.db.QueryContext(context.Background(), `SELECT machine, state FROM cases WHERE account_id = ? ORDER BY id`, account)
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var m, s string
		if err := rows.Scan(&m, &s); err != nil {
			w.t.Fatal(err)
		}
		out = append(out, m+":"+s)
	}
	return out
}

// transitions returns "from->to(event)" of the account, in order.
func (w *world) transitions(account int64) []string {
	w.t.Helper()
	rows, err := w.db.QueryContext(context.Background(), `SELECT from_state, to_state, event FROM case_transitions WHERE account_id = ? ORDER BY id`, account)
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var f, to, ev string
		if err := rows.Scan(&f, &to, &ev); err != nil {
			w.t.Fatal(err)
		}
		out = append(out, f+"->"+to+"("+ev+")")
	}
	return out
}

func (w *world) scalar(query string, args ...any) string {
	w.t.Helper()
	var s sql.NullString
	if err := w.db.QueryRowContext(context.Background(), query, args...).Scan(&s); err != nil {
		w.t.Fatalf("%s: %v", query, err)
	}
	return s.String
}

// mails returns the subjects received by the sink, per X-Cronkit-Case header, sorted.
func (w *world) mails() []string {
	var out []string
	for _, m := range w.sink.Messages() {
		out = append(out, m.Header.Get("X-Cronkit-Case")+" "+m.Header.Get("Subject")+" -> "+strings.Join(m.To, ","))
	}
	sort.Strings(out)
	return out
}

func (w *world) vmState(id string) string {
	v, ok := w.fake.VM(id)
	if !ok {
		return "gone"
	}
	return v.State
}

func (w *world) accountState(cs string) string {
	a, ok := w.fake.Account(cs)
	if !ok {
		return "gone"
	}
	return a.State
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func hasAct(rep *run.Report, kind, detailPart string) bool {
	for _, a := range rep.Actions {
		if a.Kind == kind && strings.Contains(a.Detail, detailPart) {
			return true
		}
	}
	return false
}

func openReadOnly(dsn string) (*sql.DB, error) {
	return mysql.Open(context.Background(), dsn, mysql.Options{ReadOnly: true})
}

// refusingOutbox fails every call: a dry run must not reach the outbox.
type refusingOutbox struct{}

var _ Outbox = refusingOutbox{}

func (refusingOutbox) Enqueue(context.Context, *sql.Tx, string, mail.Message) (bool, error) {
	return false, errors.New("dry run: enqueue refused")
}

func (refusingOutbox) Deliver(context.Context, mail.MessageSender, int) (mail.DeliveryReport, error) {
	return mail.DeliveryReport{}, errors.New("dry run: deliver refused")
}
