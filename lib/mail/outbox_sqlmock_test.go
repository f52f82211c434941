package mail_test

// SQL control flow of the Outbox with go-sqlmock: the exact statements, arguments and
// order, the rollback paths. outbox_db_test.go proves the SQL right on MariaDB.

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/textproto"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"
	gomysql "github.com/go-sql-driver/mysql"

	"github.com/cronkit/cronkit/lib/mail"
)

// fakeSender is a MessageSender of function fields.
type fakeSender struct {
	send func(ctx context.Context, msg mail.Message) error
}

func (f *fakeSender) Send(ctx context.Context, msg mail.Message) error { return f.send(ctx, msg) }

var _ mail.MessageSender = (*fakeSender)(nil)

// recordingSender returns err for every message and keeps what it was asked to send.
func recordingSender(err error) (*fakeSender, *[]mail.Message) {
	var sent []mail.Message
	return &fakeSender{send: func(_ context.Context, m mail.Message) error {
		sent = append(sent, m)
		return err
	}}, &sent
}

func mockOutbox(t *testing.T) (*mail.Outbox, sqlmock.Sqlmock) {
	t.Helper()
	db, mock, err := sqlmock.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := mock.ExpectationsWereMet(); err != nil {
			t.Errorf("sql expectations: %v", err)
		}
		_ = db.Close()
	})
	return &mail.Outbox{DB: db, Now: func() time.Time { return fixedNow }}, mock
}

func q(s string) string { return regexp.QuoteMeta(s) }

// matchRegexp is a sqlmock argument matching a string pattern.
type matchRegexp string

func (m matchRegexp) Match(v driver.Value) bool {
	s, ok := v.(string)
	return ok && regexp.MustCompile(string(m)).MatchString(s)
}

// The statements, exactly as the Outbox sends them.
const (
	sqlInsert = "INSERT INTO mail_outbox\n  (dedupe_key, category, sender, recipient, recipient_address, subject, body_text, body_html, headers,\n" +
		"   list_unsubscribe_url, list_unsubscribe_mailto, message_id,\n   status, attempts, next_attempt_at, last_error, created_at)\n" +
		"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)\nON DUPLICATE KEY UPDATE id = id"
	sqlDue   = "SELECT id FROM mail_outbox\nWHERE status = 'queued' AND next_attempt_at <= ? AND dedupe_key LIKE ? ESCAPE '!' ORDER BY id LIMIT ?"
	sqlClaim = "UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'sending', attempts = attempts + 1, claimed_at = ?\nWHERE id = ? AND status = 'queued' AND next_attempt_at <= ?"
	sqlRead  = "SELECT dedupe_key, category, sender, recipient, subject, body_text, body_html, headers,\n" +
		"  list_unsubscribe_url, list_unsubscribe_mailto, message_id, attempts, created_at\nFROM mail_outbox WHERE id = ?"
	sqlSuppTrans  = "SELECT kind, reason, created_at FROM mail_suppressions\nWHERE email = ? AND kind IN ('bounce', 'complaint') ORDER BY created_at, kind LIMIT 1"
	sqlSuppMarket = "SELECT kind, reason, created_at FROM mail_suppressions\nWHERE email = ? ORDER BY created_at, kind LIMIT 1"
	sqlSuppress   = "INSERT INTO mail_suppressions (email, kind, reason, created_at) VALUES (?, ?, ?, ?)\nON DUPLICATE KEY UPDATE email = email"
	sqlMarkSupp   = "UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'suppressed', last_error = ? WHERE id = ?"
	sqlMarkCancel = "UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'cancelled', last_error = ? WHERE id = ?"
	sqlMarkSent   = "UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'sent', sent_at = ?, last_error = NULL WHERE id = ? AND status = 'sending'"
	sqlMarkFail   = "UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'failed', last_error = ? WHERE id = ? AND status = 'sending'"
	sqlRequeue    = "UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'queued', next_attempt_at = ?, last_error = ? WHERE id = ? AND status = 'sending'"
	sqlUnknown    = "UPDATE mail_outbox FORCE INDEX (PRIMARY) SET last_error = ? WHERE id = ? AND status = 'sending'"
	sqlStuck      = "SELECT id, dedupe_key, recipient, message_id, attempts, claimed_at, last_error\n" +
		"FROM mail_outbox WHERE status = 'sending' AND claimed_at <= ? AND dedupe_key LIKE ? ESCAPE '!' ORDER BY id LIMIT 1000"
)

var (
	rowColumns = []string{"dedupe_key", "category", "sender", "recipient", "subject", "body_text", "body_html", "headers",
		"list_unsubscribe_url", "list_unsubscribe_mailto", "message_id", "attempts", "created_at"}
	suppColumns = []string{"kind", "reason", "created_at"}
	queuedAt    = fixedNow.Add(-time.Hour)
)

func storedRow(m mail.Message, key string, attempts int) *sqlmock.Rows {
	return sqlmock.NewRows(rowColumns).AddRow(key, "transactional", m.From, m.To, m.Subject, m.Text, m.HTML,
		`{"X-Cronkit-Case":"42","X-Cronkit-Step":"reminded"}`, m.ListUnsubscribeURL, m.ListUnsubscribeMailto, m.MessageID, attempts, queuedAt)
}

// storedMessage is validMessage as the claim reads it back: with its category.
func storedMessage() mail.Message {
	m := validMessage()
	m.Category = mail.Transactional
	return m
}

// expectClaim expects the claim transaction of row id up to (not including) its end:
// a transactional message, so only bounces and complaints are looked up.
func expectClaim(mock sqlmock.Sqlmock, id int64, attempts int, suppressedReason string) {
	mock.ExpectBegin()
	mock.ExpectExec(q(sqlClaim)).WithArgs(fixedNow, id, fixedNow).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectQuery(q(sqlRead)).WithArgs(id).WillReturnRows(storedRow(validMessage(), "dunning:case:42:reminded", attempts))
	supp := mock.ExpectQuery(q(sqlSuppTrans)).WithArgs("ada@customer.example")
	if suppressedReason == "" {
		supp.WillReturnRows(sqlmock.NewRows(suppColumns))
		return
	}
	supp.WillReturnRows(sqlmock.NewRows(suppColumns).AddRow("bounce", suppressedReason, queuedAt))
}

func expectNoStuck(mock sqlmock.Sqlmock) {
	mock.ExpectQuery(q(sqlStuck)).WithArgs(fixedNow.Add(-mail.DefaultStuckAfter), "%").
		WillReturnRows(sqlmock.NewRows([]string{"id", "dedupe_key", "recipient", "message_id", "attempts", "claimed_at", "last_error"}))
}

func TestEnqueueSQL(t *testing.T) {
	o, mock := mockOutbox(t)
	msg := validMessage()
	noSupp := func() {
		mock.ExpectQuery(q(sqlSuppTrans)).WithArgs("ada@customer.example").WillReturnRows(sqlmock.NewRows(suppColumns))
	}
	mock.ExpectBegin()
	noSupp()
	mock.ExpectExec(q(sqlInsert)).WithArgs("dunning:case:42:reminded", "transactional", msg.From, msg.To, "ada@customer.example",
		msg.Subject, msg.Text, msg.HTML, `{"X-Cronkit-Case":"42","X-Cronkit-Step":"reminded"}`, msg.ListUnsubscribeURL,
		msg.ListUnsubscribeMailto, msg.MessageID, "queued", fixedNow, nil, fixedNow).WillReturnResult(sqlmock.NewResult(7, 1))
	msg.MessageID = "" // generated on From's domain
	noSupp()
	mock.ExpectExec(q(sqlInsert)).WithArgs("dunning:case:43:reminded", "transactional", msg.From, msg.To, "ada@customer.example",
		msg.Subject, msg.Text, msg.HTML, sqlmock.AnyArg(), msg.ListUnsubscribeURL, msg.ListUnsubscribeMailto,
		matchRegexp(`^[0-9a-f]{32}@cloud\.example$`), "queued", fixedNow, nil, fixedNow).WillReturnResult(sqlmock.NewResult(8, 1))
	// ON DUPLICATE KEY UPDATE id = id changes nothing: 0 rows affected.
	noSupp()
	mock.ExpectExec(q(sqlInsert)).WillReturnResult(sqlmock.NewResult(0, 0))
	mock.ExpectCommit()

	ctx := context.Background()
	tx, err := o.DB.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct {
		key  string
		msg  mail.Message
		want bool
	}{
		{"dunning:case:42:reminded", validMessage(), true},
		{"dunning:case:43:reminded", msg, true},
		{"dunning:case:42:reminded", validMessage(), false},
	} {
		queued, err := o.Enqueue(ctx, tx, c.key, c.msg)
		if err != nil || queued != c.want {
			t.Errorf("Enqueue #%d = %v, %v; want %v, nil", i, queued, err, c.want)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

func TestEnqueueRefusesBeforeSQL(t *testing.T) {
	o, _ := mockOutbox(t) // no statement may run
	bad := validMessage()
	bad.To = "not an address"
	if _, err := o.Enqueue(context.Background(), nil, "k", bad); !errors.Is(err, mail.ErrInvalidMessage) {
		t.Errorf("invalid message: err = %v, want ErrInvalidMessage", err)
	}
	if _, err := o.Enqueue(context.Background(), nil, "", validMessage()); err == nil {
		t.Errorf("empty key: want an error")
	}
	if _, err := o.Enqueue(context.Background(), nil, strings.Repeat("k", 192), validMessage()); err == nil {
		t.Errorf("192-character key: want an error")
	}
}

func TestEnqueueWithoutTxUsesDB(t *testing.T) {
	o, mock := mockOutbox(t)
	mock.ExpectQuery(q(sqlSuppTrans)).WithArgs("ada@customer.example").WillReturnRows(sqlmock.NewRows(suppColumns))
	mock.ExpectExec(q(sqlInsert)).WillReturnError(errors.New("connection reset"))
	_, err := o.Enqueue(context.Background(), nil, "drip:account:7:welcome", validMessage())
	if err == nil || !strings.Contains(err.Error(), "enqueue mail drip:account:7:welcome: connection reset") {
		t.Errorf("err = %v, want it wrapped with the key", err)
	}
}

func TestDeliverSendsClaimedMessage(t *testing.T) {
	o, mock := mockOutbox(t)
	mock.ExpectQuery(q(sqlDue)).WithArgs(fixedNow, "%", mail.DefaultDeliverLimit).WillReturnRows(sqlmock.NewRows([]string{"id"}).AddRow(5))
	expectClaim(mock, 5, 1, "")
	mock.ExpectCommit()
	mock.ExpectExec(q(sqlMarkSent)).WithArgs(fixedNow, 5).WillReturnResult(sqlmock.NewResult(0, 1))
	expectNoStuck(mock)

	sender, sent := recordingSender(nil)
	rep, err := o.Deliver(context.Background(), sender, 0)
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	if len(*sent) != 1 || !reflect.DeepEqual((*sent)[0], storedMessage()) {
		t.Fatalf("sent %+v, want exactly the stored message", *sent)
	}
	want := mail.DeliveryReport{Sent: 1, Items: []mail.DeliveryItem{
		{ID: 5, Key: "dunning:case:42:reminded", To: validMessage().To, Category: mail.Transactional, Outcome: mail.OutcomeSent, Attempts: 1},
	}}
	if !reflect.DeepEqual(rep, want) {
		t.Errorf("report = %+v, want %+v", rep, want)
	}
}

func TestDeliverSkipsMessageClaimedElsewhere(t *testing.T) {
	o, mock := mockOutbox(t)
	mock.ExpectQuery(q(sqlDue)).WithArgs(fixedNow, "%", 10).WillReturnRows(sqlmock.NewRows([]string{"id"}).AddRow(5))
	mock.ExpectBegin()
	mock.ExpectExec(q(sqlClaim)).WithArgs(fixedNow, 5, fixedNow).WillReturnResult(sqlmock.NewResult(0, 0))
	mock.ExpectRollback()
	expectNoStuck(mock)

	sender, sent := recordingSender(nil)
	rep, err := o.Deliver(context.Background(), sender, 10)
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	if len(*sent) != 0 || !reflect.DeepEqual(rep, mail.DeliveryReport{}) {
		t.Errorf("sent %d, report %+v; want nothing", len(*sent), rep)
	}
}

func TestDeliverSuppressed(t *testing.T) {
	o, mock := mockOutbox(t)
	mock.ExpectQuery(q(sqlDue)).WillReturnRows(sqlmock.NewRows([]string{"id"}).AddRow(5))
	expectClaim(mock, 5, 1, "550 no such user")
	mock.ExpectExec(q(sqlMarkSupp)).WithArgs("suppressed: bounce: 550 no such user", 5).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectCommit()
	expectNoStuck(mock)

	sender, sent := recordingSender(nil)
	rep, err := o.Deliver(context.Background(), sender, 10)
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	if len(*sent) != 0 || rep.Suppressed != 1 || rep.Sent != 0 || rep.Items[0].Outcome != mail.OutcomeSuppressed ||
		rep.Items[0].Reason != "suppressed: bounce: 550 no such user" {
		t.Errorf("sent %d, report %+v; want one suppressed with the reason, none sent", len(*sent), rep)
	}
}

func TestDeliverFailureOutcomes(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		attempts int
		outbox   mail.Outbox
		expect   func(sqlmock.Sqlmock, string)
		want     mail.Outcome
	}{
		{
			name: "temporary: requeued after the default backoff", err: &textproto.Error{Code: 451, Msg: "greylisted"}, attempts: 3,
			expect: func(m sqlmock.Sqlmock, e string) {
				m.ExpectExec(q(sqlRequeue)).WithArgs(fixedNow.Add(20*time.Minute), e, 5).WillReturnResult(sqlmock.NewResult(0, 1))
			},
			want: mail.OutcomeRequeued,
		},
		{
			name: "temporary: custom backoff", err: errors.New("connection reset"), attempts: 1,
			outbox: mail.Outbox{Backoff: func(n int) time.Duration { return time.Duration(n) * time.Hour }},
			expect: func(m sqlmock.Sqlmock, e string) {
				m.ExpectExec(q(sqlRequeue)).WithArgs(fixedNow.Add(time.Hour), e, 5).WillReturnResult(sqlmock.NewResult(0, 1))
			},
			want: mail.OutcomeRequeued,
		},
		{
			name: "temporary but out of attempts", err: &textproto.Error{Code: 451, Msg: "greylisted"}, attempts: mail.DefaultMaxAttempts,
			expect: func(m sqlmock.Sqlmock, e string) {
				m.ExpectExec(q(sqlMarkFail)).WithArgs(e, 5).WillReturnResult(sqlmock.NewResult(0, 1))
			},
			want: mail.OutcomeFailed,
		},
		{
			name: "permanent", err: &textproto.Error{Code: 550, Msg: "no such user"}, attempts: 1,
			expect: func(m sqlmock.Sqlmock, e string) {
				m.ExpectExec(q(sqlMarkFail)).WithArgs(e, 5).WillReturnResult(sqlmock.NewResult(0, 1))
			},
			want: mail.OutcomeFailed,
		},
		{
			name: "unknown outcome stays sending", err: mail.ErrDeliveryUnknown, attempts: 1,
			expect: func(m sqlmock.Sqlmock, e string) {
				m.ExpectExec(q(sqlUnknown)).WithArgs(e, 5).WillReturnResult(sqlmock.NewResult(0, 1))
			},
			want: mail.OutcomeUnknown,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, mock := mockOutbox(t)
			o.Backoff = tt.outbox.Backoff
			mock.ExpectQuery(q(sqlDue)).WillReturnRows(sqlmock.NewRows([]string{"id"}).AddRow(5))
			expectClaim(mock, 5, tt.attempts, "")
			mock.ExpectCommit()
			tt.expect(mock, tt.err.Error())
			expectNoStuck(mock)

			sender, sent := recordingSender(tt.err)
			rep, err := o.Deliver(context.Background(), sender, 10)
			if err != nil {
				t.Fatalf("Deliver: %v", err)
			}
			if len(*sent) != 1 {
				t.Errorf("send called %d times, want 1", len(*sent))
			}
			want := mail.DeliveryItem{ID: 5, Key: "dunning:case:42:reminded", To: validMessage().To, Category: mail.Transactional,
				Outcome: tt.want, Attempts: tt.attempts, Error: tt.err.Error()}
			if len(rep.Items) != 1 || rep.Items[0] != want || rep.Sent != 0 {
				t.Errorf("report = %+v, want one item %+v", rep, want)
			}
		})
	}
}

func TestDeliverReportsUnrecordedOutcome(t *testing.T) {
	o, mock := mockOutbox(t)
	mock.ExpectQuery(q(sqlDue)).WillReturnRows(sqlmock.NewRows([]string{"id"}).AddRow(5).AddRow(6))
	expectClaim(mock, 5, 1, "")
	mock.ExpectCommit()
	mock.ExpectExec(q(sqlMarkSent)).WithArgs(fixedNow, 5).WillReturnError(errors.New("server has gone away"))
	// Nothing more: row 6 must not be claimed once the database failed.

	sender, sent := recordingSender(nil)
	rep, err := o.Deliver(context.Background(), sender, 10)
	if err == nil || !strings.Contains(err.Error(), "record mail 5 sent") {
		t.Fatalf("Deliver err = %v, want the failed record", err)
	}
	if len(*sent) != 1 || rep.Sent != 1 {
		t.Errorf("sent %d, report %+v: the message did go out and the report must say so", len(*sent), rep)
	}
}

func TestDeliverRollsBackFailedClaim(t *testing.T) {
	o, mock := mockOutbox(t)
	mock.ExpectQuery(q(sqlDue)).WillReturnRows(sqlmock.NewRows([]string{"id"}).AddRow(5))
	mock.ExpectBegin()
	mock.ExpectExec(q(sqlClaim)).WithArgs(fixedNow, 5, fixedNow).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectQuery(q(sqlRead)).WithArgs(5).WillReturnError(errors.New("lost connection"))
	mock.ExpectRollback()

	sender, sent := recordingSender(nil)
	_, err := o.Deliver(context.Background(), sender, 10)
	if err == nil || !strings.Contains(err.Error(), "claim mail 5: read: lost connection") {
		t.Errorf("err = %v", err)
	}
	if len(*sent) != 0 {
		t.Errorf("sent %d messages after a failed claim", len(*sent))
	}
}

func TestDeliverRecordsSendEvenWhenCancelled(t *testing.T) {
	o, mock := mockOutbox(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mock.ExpectQuery(q(sqlDue)).WillReturnRows(sqlmock.NewRows([]string{"id"}).AddRow(5).AddRow(6))
	expectClaim(mock, 5, 1, "")
	mock.ExpectCommit()
	mock.ExpectExec(q(sqlMarkSent)).WithArgs(fixedNow, 5).WillReturnResult(sqlmock.NewResult(0, 1))

	// SIGTERM arrives while the message is being sent.
	sender := &fakeSender{send: func(context.Context, mail.Message) error { cancel(); return nil }}
	rep, err := o.Deliver(ctx, sender, 10)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if rep.Sent != 1 || len(rep.Items) != 1 {
		t.Errorf("report = %+v, want the one sent message and no claim of row 6", rep)
	}
}

func TestDeliverReportsStuck(t *testing.T) {
	o, mock := mockOutbox(t)
	o.StuckAfter = time.Hour
	claimedAt := fixedNow.Add(-3 * time.Hour)
	mock.ExpectQuery(q(sqlDue)).WillReturnRows(sqlmock.NewRows([]string{"id"}))
	mock.ExpectQuery(q(sqlStuck)).WithArgs(fixedNow.Add(-time.Hour), "%").WillReturnRows(
		sqlmock.NewRows([]string{"id", "dedupe_key", "recipient", "message_id", "attempts", "claimed_at", "last_error"}).
			AddRow(3, "drip:account:7:welcome", "a@b.example", "x@cloud.example", 1, claimedAt, nil))

	sender, sent := recordingSender(nil)
	rep, err := o.Deliver(context.Background(), sender, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []mail.StuckMessage{{ID: 3, Key: "drip:account:7:welcome", To: "a@b.example", MessageID: "x@cloud.example", Attempts: 1, ClaimedAt: claimedAt}}
	if !reflect.DeepEqual(rep.Stuck, want) || len(*sent) != 0 {
		t.Errorf("stuck = %+v, want %+v", rep.Stuck, want)
	}
}

func TestRequeue(t *testing.T) {
	o, mock := mockOutbox(t)
	o.KeyPrefix = "abuse:"
	const sqlOp = "UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'queued', next_attempt_at = ?, claimed_at = NULL\n" +
		"WHERE id = ? AND status IN ('sending', 'failed') AND dedupe_key LIKE ? ESCAPE '!'"
	mock.ExpectExec(q(sqlOp)).WithArgs(fixedNow, 3, "abuse:%").WillReturnResult(sqlmock.NewResult(0, 1))
	// Another job's message, or one not stuck: nothing changes.
	mock.ExpectExec(q(sqlOp)).WithArgs(fixedNow, 4, "abuse:%").WillReturnResult(sqlmock.NewResult(0, 0))
	if err := o.Requeue(context.Background(), 3); err != nil {
		t.Errorf("Requeue(3) = %v", err)
	}
	if err := o.Requeue(context.Background(), 4); !errors.Is(err, mail.ErrNotRequeueable) {
		t.Errorf("Requeue(4) = %v, want ErrNotRequeueable", err)
	}
}

func TestSuppressNormalizesAddress(t *testing.T) {
	o, mock := mockOutbox(t)
	ctx := context.Background()
	mock.ExpectExec(q(sqlSuppress)).
		WithArgs("ada@customer.example", "unsubscribe", "one-click unsubscribe", fixedNow).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectExec(q(sqlSuppress)).
		WithArgs("ada@customer.example", "unsubscribe", strings.Repeat("é", 255), fixedNow).WillReturnResult(sqlmock.NewResult(0, 0))
	// An unsubscribe blocks marketing and not transactional mail: two queries.
	mock.ExpectQuery(q(sqlSuppMarket)).WithArgs("ada@customer.example").
		WillReturnRows(sqlmock.NewRows(suppColumns).AddRow("unsubscribe", "one-click unsubscribe", fixedNow))
	mock.ExpectQuery(q(sqlSuppTrans)).WithArgs("ada@customer.example").WillReturnRows(sqlmock.NewRows(suppColumns))
	if added, err := o.Suppress(ctx, nil, "Ada <ADA@Customer.Example>", mail.SuppressUnsubscribe, "one-click unsubscribe"); err != nil || !added {
		t.Fatalf("Suppress = %v, %v", added, err)
	}
	if added, err := o.Suppress(ctx, nil, "ada@customer.example", mail.SuppressUnsubscribe, strings.Repeat("é", 300)); err != nil || added {
		t.Fatalf("second Suppress = %v, %v; want not added, the reason cut to 255 characters", added, err)
	}
	if got, err := o.IsSuppressed(ctx, "ada@CUSTOMER.example", mail.Marketing); err != nil || !got {
		t.Errorf("IsSuppressed(marketing) = %v, %v; want true", got, err)
	}
	if got, err := o.IsSuppressed(ctx, "ada@CUSTOMER.example", mail.Transactional); err != nil || got {
		t.Errorf("IsSuppressed(transactional) = %v, %v; want false", got, err)
	}
	if _, err := o.Suppress(ctx, nil, "nobody", mail.SuppressBounce, "x"); !errors.Is(err, mail.ErrInvalidMessage) {
		t.Errorf("Suppress(invalid address) = %v", err)
	}
	if _, err := o.Suppress(ctx, nil, "a@b.example", "spam", "x"); err == nil || !strings.Contains(err.Error(), `suppression kind "spam"`) {
		t.Errorf("Suppress(unknown kind) = %v", err)
	}
}

func TestDeliverStopsWhenRelayUnavailable(t *testing.T) {
	o, mock := mockOutbox(t)
	mock.ExpectQuery(q(sqlDue)).WillReturnRows(sqlmock.NewRows([]string{"id"}).AddRow(5).AddRow(6))
	expectClaim(mock, 5, 4, "")
	mock.ExpectCommit()
	relayErr := fmt.Errorf("send mail to x: %w", mail.ErrRelayUnavailable)
	// The attempt is given back and the message stays due; row 6 is not touched.
	mock.ExpectExec(q("UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'queued', attempts = attempts - 1, last_error = ? WHERE id = ? AND status = 'sending'")).
		WithArgs(relayErr.Error(), 5).WillReturnResult(sqlmock.NewResult(0, 1))

	sender, sent := recordingSender(relayErr)
	rep, err := o.Deliver(context.Background(), sender, 10)
	if !errors.Is(err, mail.ErrRelayUnavailable) {
		t.Fatalf("Deliver err = %v, want ErrRelayUnavailable", err)
	}
	if len(*sent) != 1 {
		t.Errorf("send called %d times, want 1", len(*sent))
	}
	want := []mail.DeliveryItem{{ID: 5, Key: "dunning:case:42:reminded", To: validMessage().To, Category: mail.Transactional,
		Outcome: mail.OutcomeRequeued, Attempts: 3, Error: relayErr.Error()}}
	if !reflect.DeepEqual(rep.Items, want) || rep.Requeued != 1 {
		t.Errorf("report = %+v, want %+v", rep, want)
	}
}

func TestDeliverSkipsClaimThatDeadlocked(t *testing.T) {
	o, mock := mockOutbox(t)
	mock.ExpectQuery(q(sqlDue)).WillReturnRows(sqlmock.NewRows([]string{"id"}).AddRow(5).AddRow(6))
	mock.ExpectBegin()
	mock.ExpectExec(q(sqlClaim)).WithArgs(fixedNow, 5, fixedNow).
		WillReturnError(&gomysql.MySQLError{Number: 1213, Message: "Deadlock found when trying to get lock"})
	mock.ExpectRollback()
	expectClaim(mock, 6, 1, "")
	mock.ExpectCommit()
	mock.ExpectExec(q(sqlMarkSent)).WithArgs(fixedNow, 6).WillReturnResult(sqlmock.NewResult(0, 1))
	expectNoStuck(mock)

	sender, sent := recordingSender(nil)
	rep, err := o.Deliver(context.Background(), sender, 10)
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	if len(*sent) != 1 || rep.Sent != 1 || len(rep.Items) != 1 || rep.Items[0].ID != 6 {
		t.Errorf("sent %d, report %+v; want row 5 left queued and row 6 sent", len(*sent), rep)
	}
}
