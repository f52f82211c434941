package mail_test

// SQL control flow of what drip needs from the Outbox, with go-sqlmock: the key
// prefix that scopes delivery, suppression by category at enqueue and claim, the
// claim-time BeforeSend check, a hard bounce recorded with its suppression in one
// transaction, and the suppression list's ops queries. outbox_db_test.go and
// checks_db_test.go prove the same on MariaDB.

import (
	"context"
	"database/sql"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"

	"github.com/cronkit/cronkit/lib/mail"
)

const unsubscribeURL = "https://cloud.example/unsubscribe?token=42.onboarding.sig"

// marketingMessage is a funnel step as drip builds it: marketing, with the one-click
// URL in the headers and shown in both bodies.
func marketingMessage() mail.Message {
	return mail.Message{
		Category: mail.Marketing,
		From:     "Cloud <hello@cloud.example>",
		To:       "Ada Lovelace <ada@customer.example>",
		Subject:  "Your first VM in two minutes",
		Text:     "Start one from the console.\n\nUnsubscribe: " + unsubscribeURL + "\n",
		HTML:     `<p>Start one from the console.</p><p><a href="` + unsubscribeURL + `">Unsubscribe</a></p>`,
		Headers:  map[string]string{"X-Cronkit-Step": "first_vm"},

		ListUnsubscribeURL:    unsubscribeURL,
		ListUnsubscribeMailto: "unsubscribe@cloud.example?subject=unsubscribe%2042.onboarding.sig",
		MessageID:             "step-42@cloud.example",
	}
}

func storedMarketingRow(key string, attempts int) *sqlmock.Rows {
	m := marketingMessage()
	return sqlmock.NewRows(rowColumns).AddRow(key, "marketing", m.From, m.To, m.Subject, m.Text, m.HTML,
		`{"X-Cronkit-Step":"first_vm"}`, m.ListUnsubscribeURL, m.ListUnsubscribeMailto, m.MessageID, attempts, queuedAt)
}

// expectMarketingClaim expects the claim of row id, a marketing message, up to and
// including its suppression check (none found).
func expectMarketingClaim(mock sqlmock.Sqlmock, id int64, key string) {
	mock.ExpectBegin()
	mock.ExpectExec(q(sqlClaim)).WithArgs(fixedNow, id, fixedNow).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectQuery(q(sqlRead)).WithArgs(id).WillReturnRows(storedMarketingRow(key, 1))
	mock.ExpectQuery(q(sqlSuppMarket)).WithArgs("ada@customer.example").WillReturnRows(sqlmock.NewRows(suppColumns))
}

func TestDeliverSeesOnlyItsKeyPrefix(t *testing.T) {
	for _, tt := range []struct{ prefix, pattern string }{
		{"drip:", "drip:%"},
		{"", "%"},
		// LIKE's wildcards and the escape character itself are matched literally.
		{"a_b%c!", "a!_b!%c!!%"},
	} {
		t.Run(tt.prefix, func(t *testing.T) {
			o, mock := mockOutbox(t)
			o.KeyPrefix = tt.prefix
			mock.ExpectQuery(q(sqlDue)).WithArgs(fixedNow, tt.pattern, 10).WillReturnRows(sqlmock.NewRows([]string{"id"}))
			mock.ExpectQuery(q(sqlStuck)).WithArgs(fixedNow.Add(-mail.DefaultStuckAfter), tt.pattern).
				WillReturnRows(sqlmock.NewRows([]string{"id", "dedupe_key", "recipient", "message_id", "attempts", "claimed_at", "last_error"}))
			sender, sent := recordingSender(nil)
			if _, err := o.Deliver(context.Background(), sender, 10); err != nil || len(*sent) != 0 {
				t.Fatalf("Deliver: %v, sent %d", err, len(*sent))
			}
		})
	}
}

func TestEnqueueRefusesAnotherJobsKey(t *testing.T) {
	o, _ := mockOutbox(t) // no statement may run
	o.KeyPrefix = "drip:"
	_, err := o.Enqueue(context.Background(), nil, "abuse:dunning:case:1:reminder", validMessage())
	if err == nil || !strings.Contains(err.Error(), `outside this outbox's prefix "drip:"`) {
		t.Errorf("err = %v, want the key refused", err)
	}
}

func TestEnqueueAtWritesSuppressedRecipientAsSuppressed(t *testing.T) {
	o, mock := mockOutbox(t)
	o.KeyPrefix = "drip:"
	msg := marketingMessage()
	sendAt := time.Date(2025, 3, 15, 8, 0, 0, 0, time.FixedZone("CET", 3600))
	since := fixedNow.Add(-48 * time.Hour)
	mock.ExpectBegin()
	mock.ExpectQuery(q(sqlSuppMarket)).WithArgs("ada@customer.example").
		WillReturnRows(sqlmock.NewRows(suppColumns).AddRow("unsubscribe", "one-click", since))
	mock.ExpectExec(q(sqlInsert)).WithArgs("drip:onboarding:account:42:first_vm", "marketing", msg.From, msg.To,
		"ada@customer.example", msg.Subject, msg.Text, msg.HTML, `{"X-Cronkit-Step":"first_vm"}`, msg.ListUnsubscribeURL,
		msg.ListUnsubscribeMailto, msg.MessageID, "suppressed", sendAt.UTC(), "suppressed: unsubscribe: one-click", fixedNow).
		WillReturnResult(sqlmock.NewResult(9, 1))
	// The same step in a later run: the key is taken, nothing changes.
	mock.ExpectQuery(q(sqlSuppMarket)).WithArgs("ada@customer.example").
		WillReturnRows(sqlmock.NewRows(suppColumns).AddRow("unsubscribe", "one-click", since))
	mock.ExpectExec(q(sqlInsert)).WillReturnResult(sqlmock.NewResult(0, 0))
	mock.ExpectCommit()

	ctx := context.Background()
	tx, err := o.DB.Begin()
	if err != nil {
		t.Fatal(err)
	}
	res, err := o.EnqueueAt(ctx, tx, "drip:onboarding:account:42:first_vm", msg, sendAt)
	want := mail.Enqueued{New: true, Suppressed: &mail.Suppression{Email: "ada@customer.example",
		Kind: mail.SuppressUnsubscribe, Reason: "one-click", CreatedAt: since}}
	if err != nil || !reflect.DeepEqual(res, want) || res.Queued() {
		t.Errorf("EnqueueAt = %+v, %v; want %+v, not queued", res, err, want)
	}
	queued, err := o.Enqueue(ctx, tx, "drip:onboarding:account:42:first_vm", msg)
	if err != nil || queued {
		t.Errorf("Enqueue of a taken key = %v, %v; want false", queued, err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

func TestEnqueueRefusesMarketingWithoutUnsubscribe(t *testing.T) {
	o, _ := mockOutbox(t) // no statement may run
	msg := marketingMessage()
	msg.ListUnsubscribeURL = ""
	if _, err := o.Enqueue(context.Background(), nil, "drip:1:welcome", msg); !errors.Is(err, mail.ErrInvalidMessage) {
		t.Errorf("err = %v, want ErrInvalidMessage", err)
	}
}

func TestDeliverBeforeSendCancels(t *testing.T) {
	o, mock := mockOutbox(t)
	var seen []mail.QueuedMessage
	o.BeforeSend = func(_ context.Context, tx *sql.Tx, m mail.QueuedMessage) (bool, string, error) {
		if tx == nil {
			t.Error("BeforeSend got no transaction")
		}
		seen = append(seen, m)
		return true, "account converted", nil
	}
	mock.ExpectQuery(q(sqlDue)).WillReturnRows(sqlmock.NewRows([]string{"id"}).AddRow(5))
	expectMarketingClaim(mock, 5, "drip:onboarding:account:42:first_vm")
	mock.ExpectExec(q(sqlMarkCancel)).WithArgs("cancelled: account converted", 5).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectCommit()
	expectNoStuck(mock)

	sender, sent := recordingSender(nil)
	rep, err := o.Deliver(context.Background(), sender, 10)
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	if len(*sent) != 0 {
		t.Fatalf("sent %d messages, want none", len(*sent))
	}
	wantSeen := []mail.QueuedMessage{{ID: 5, Key: "drip:onboarding:account:42:first_vm", Message: marketingMessage(),
		Attempts: 1, QueuedAt: queuedAt}}
	if !reflect.DeepEqual(seen, wantSeen) {
		t.Errorf("BeforeSend saw %+v, want %+v", seen, wantSeen)
	}
	want := mail.DeliveryReport{Cancelled: 1, Items: []mail.DeliveryItem{{ID: 5, Key: "drip:onboarding:account:42:first_vm",
		To: marketingMessage().To, Category: mail.Marketing, Outcome: mail.OutcomeCancelled, Attempts: 1,
		Reason: "cancelled: account converted"}}}
	if !reflect.DeepEqual(rep, want) {
		t.Errorf("report = %+v, want %+v", rep, want)
	}
}

func TestDeliverBeforeSendKeepsAndSends(t *testing.T) {
	o, mock := mockOutbox(t)
	calls := 0
	o.BeforeSend = func(context.Context, *sql.Tx, mail.QueuedMessage) (bool, string, error) {
		calls++
		return false, "", nil
	}
	mock.ExpectQuery(q(sqlDue)).WillReturnRows(sqlmock.NewRows([]string{"id"}).AddRow(5))
	expectMarketingClaim(mock, 5, "drip:onboarding:account:42:first_vm")
	mock.ExpectCommit()
	mock.ExpectExec(q(sqlMarkSent)).WithArgs(fixedNow, 5).WillReturnResult(sqlmock.NewResult(0, 1))
	expectNoStuck(mock)

	sender, sent := recordingSender(nil)
	rep, err := o.Deliver(context.Background(), sender, 10)
	if err != nil || rep.Sent != 1 || len(*sent) != 1 || calls != 1 {
		t.Fatalf("Deliver = %+v, %v; sent %d, BeforeSend called %d times; want one sent after one check", rep, err, len(*sent), calls)
	}
	if !reflect.DeepEqual((*sent)[0], marketingMessage()) {
		t.Errorf("sent %+v, want the stored marketing message", (*sent)[0])
	}
}

func TestDeliverBeforeSendErrorStopsWithoutSending(t *testing.T) {
	o, mock := mockOutbox(t)
	o.BeforeSend = func(context.Context, *sql.Tx, mail.QueuedMessage) (bool, string, error) {
		return false, "", errors.New("read funnel case: connection reset")
	}
	mock.ExpectQuery(q(sqlDue)).WillReturnRows(sqlmock.NewRows([]string{"id"}).AddRow(5).AddRow(6))
	expectMarketingClaim(mock, 5, "drip:onboarding:account:42:first_vm")
	// The claim rolls back: the row is queued again, the attempt not spent. Row 6 is
	// not claimed, and no stuck report runs.
	mock.ExpectRollback()

	sender, sent := recordingSender(nil)
	rep, err := o.Deliver(context.Background(), sender, 10)
	if err == nil || !strings.Contains(err.Error(), "claim mail 5: before send: read funnel case: connection reset") {
		t.Fatalf("Deliver err = %v, want the check's error", err)
	}
	if len(*sent) != 0 || len(rep.Items) != 0 {
		t.Errorf("sent %d, report %+v; want nothing", len(*sent), rep)
	}
}

func TestDeliverSuppressedMessageSkipsBeforeSend(t *testing.T) {
	o, mock := mockOutbox(t)
	o.BeforeSend = func(context.Context, *sql.Tx, mail.QueuedMessage) (bool, string, error) {
		t.Error("BeforeSend called for a suppressed message")
		return false, "", nil
	}
	mock.ExpectQuery(q(sqlDue)).WillReturnRows(sqlmock.NewRows([]string{"id"}).AddRow(5))
	mock.ExpectBegin()
	mock.ExpectExec(q(sqlClaim)).WithArgs(fixedNow, 5, fixedNow).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectQuery(q(sqlRead)).WithArgs(5).WillReturnRows(storedMarketingRow("drip:onboarding:account:42:tips", 1))
	mock.ExpectQuery(q(sqlSuppMarket)).WithArgs("ada@customer.example").
		WillReturnRows(sqlmock.NewRows(suppColumns).AddRow("unsubscribe", "", queuedAt))
	mock.ExpectExec(q(sqlMarkSupp)).WithArgs("suppressed: unsubscribe", 5).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectCommit()
	expectNoStuck(mock)

	sender, sent := recordingSender(nil)
	rep, err := o.Deliver(context.Background(), sender, 10)
	if err != nil || rep.Suppressed != 1 || len(*sent) != 0 {
		t.Errorf("Deliver = %+v, %v; sent %d; want one suppressed, none sent", rep, err, len(*sent))
	}
}

// rejection is the error a real go-mail Sender returns when the relay answers RCPT TO
// with code and text.
func rejection(t *testing.T, code int, text string) error {
	t.Helper()
	sink, s := startSink(t)
	sink.FailNextWith(1, code, text)
	err := s.Send(context.Background(), validMessage())
	if err == nil {
		t.Fatalf("Send succeeded, want the sink's %d", code)
	}
	return err
}

func TestDeliverHardBounceSuppressesInTheSameTransaction(t *testing.T) {
	o, mock := mockOutbox(t)
	bounce := rejection(t, 550, "5.1.1 no such user")
	mock.ExpectQuery(q(sqlDue)).WillReturnRows(sqlmock.NewRows([]string{"id"}).AddRow(5))
	expectClaim(mock, 5, 1, "")
	mock.ExpectCommit()
	mock.ExpectBegin()
	mock.ExpectExec(q(sqlMarkFail)).WithArgs(bounce.Error(), 5).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectExec(q(sqlSuppress)).WithArgs("ada@customer.example", "bounce",
		matchRegexp(`^outbox 5 \(dunning:case:42:reminded\): .*5\.1\.1 no such user`), fixedNow).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectCommit()
	expectNoStuck(mock)

	sender, _ := recordingSender(bounce)
	rep, err := o.Deliver(context.Background(), sender, 10)
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	if rep.Failed != 1 || rep.Bounced != 1 || len(rep.Items) != 1 || !rep.Items[0].Bounced || rep.Items[0].Outcome != mail.OutcomeFailed {
		t.Errorf("report = %+v, want one failed, bounced", rep)
	}
}

func TestDeliverHardBounceUnrecordedStaysSending(t *testing.T) {
	o, mock := mockOutbox(t)
	bounce := rejection(t, 550, "no such user")
	mock.ExpectQuery(q(sqlDue)).WillReturnRows(sqlmock.NewRows([]string{"id"}).AddRow(5).AddRow(6))
	expectClaim(mock, 5, 1, "")
	mock.ExpectCommit()
	mock.ExpectBegin()
	mock.ExpectExec(q(sqlMarkFail)).WithArgs(bounce.Error(), 5).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectExec(q(sqlSuppress)).WillReturnError(errors.New("server has gone away"))
	// Both roll back: the row stays 'sending' for an operator, never failed without
	// its suppression. Row 6 is not claimed.
	mock.ExpectRollback()

	sender, _ := recordingSender(bounce)
	_, err := o.Deliver(context.Background(), sender, 10)
	if err == nil || !strings.Contains(err.Error(), "record mail 5 failed: suppress ada@customer.example as a hard bounce: server has gone away") {
		t.Errorf("Deliver err = %v", err)
	}
}

func TestDeliverPolicyRejectionIsNotABounce(t *testing.T) {
	o, mock := mockOutbox(t)
	policy := rejection(t, 550, "5.7.1 relaying denied")
	mock.ExpectQuery(q(sqlDue)).WillReturnRows(sqlmock.NewRows([]string{"id"}).AddRow(5))
	expectClaim(mock, 5, 1, "")
	mock.ExpectCommit()
	// Failed, and the recipient left alone: our relay's configuration is not their fault.
	mock.ExpectExec(q(sqlMarkFail)).WithArgs(policy.Error(), 5).WillReturnResult(sqlmock.NewResult(0, 1))
	expectNoStuck(mock)

	sender, _ := recordingSender(policy)
	rep, err := o.Deliver(context.Background(), sender, 10)
	if err != nil || rep.Failed != 1 || rep.Bounced != 0 {
		t.Errorf("Deliver = %+v, %v; want one failed, no bounce", rep, err)
	}
}

func TestSuppressionOpsSQL(t *testing.T) {
	o, mock := mockOutbox(t)
	ctx := context.Background()
	cols := []string{"email", "kind", "reason", "created_at"}
	const (
		sqlOne      = "SELECT email, kind, reason, created_at FROM mail_suppressions\nWHERE email = ? ORDER BY created_at, kind"
		sqlList     = "SELECT email, kind, reason, created_at FROM mail_suppressions\nWHERE email > ? ORDER BY email, kind LIMIT ?"
		sqlListKind = "SELECT email, kind, reason, created_at FROM mail_suppressions\nWHERE email > ? AND kind = ? ORDER BY email, kind LIMIT ?"
		sqlLift     = "DELETE FROM mail_suppressions WHERE email = ? AND kind = ?"
		sqlLiftAll  = "DELETE FROM mail_suppressions WHERE email = ?"
	)
	mock.ExpectQuery(q(sqlOne)).WithArgs("ada@customer.example").WillReturnRows(sqlmock.NewRows(cols).
		AddRow("ada@customer.example", "unsubscribe", "one-click", fixedNow).
		AddRow("ada@customer.example", "bounce", "550", fixedNow.Add(time.Hour)))
	// A full page ending inside an address's rows leaves that address to the next.
	mock.ExpectQuery(q(sqlList)).WithArgs("", 3).WillReturnRows(sqlmock.NewRows(cols).
		AddRow("a@x.example", "bounce", "", fixedNow).
		AddRow("b@x.example", "unsubscribe", "", fixedNow).
		AddRow("b@x.example", "bounce", "", fixedNow))
	mock.ExpectQuery(q(sqlListKind)).WithArgs("a@x.example", "complaint", 1000).WillReturnRows(sqlmock.NewRows(cols))
	mock.ExpectExec(q(sqlLift)).WithArgs("ada@customer.example", "bounce").WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectExec(q(sqlLiftAll)).WithArgs("ada@customer.example").WillReturnResult(sqlmock.NewResult(0, 2))

	got, err := o.Suppressions(ctx, nil, "Ada <ADA@customer.example>")
	if err != nil || len(got) != 2 || got[1] != (mail.Suppression{Email: "ada@customer.example", Kind: mail.SuppressBounce, Reason: "550", CreatedAt: fixedNow.Add(time.Hour)}) {
		t.Errorf("Suppressions = %+v, %v", got, err)
	}
	page, err := o.ListSuppressions(ctx, mail.SuppressionQuery{Limit: 1})
	if err != nil || len(page) != 1 || page[0].Email != "a@x.example" {
		t.Errorf("ListSuppressions page 1 = %+v, %v; want only a@ (b@ may go on)", page, err)
	}
	if page, err := o.ListSuppressions(ctx, mail.SuppressionQuery{After: "a@x.example", Kind: mail.SuppressComplaint}); err != nil || len(page) != 0 {
		t.Errorf("ListSuppressions of complaints = %+v, %v; want an empty last page", page, err)
	}
	if n, err := o.Lift(ctx, nil, "ada@customer.example", mail.SuppressBounce); err != nil || n != 1 {
		t.Errorf("Lift(bounce) = %d, %v", n, err)
	}
	if n, err := o.Lift(ctx, nil, "ADA@customer.example", ""); err != nil || n != 2 {
		t.Errorf("Lift(all) = %d, %v", n, err)
	}
	if _, err := o.Lift(ctx, nil, "ada@customer.example", "everything"); err == nil {
		t.Errorf("Lift of an unknown kind succeeded")
	}
}

func TestMarketingTimesSQL(t *testing.T) {
	o, mock := mockOutbox(t)
	o.KeyPrefix = "drip:" // does not narrow the count: the cap is across every campaign
	const sqlTimes = "SELECT t FROM (\n" +
		"  SELECT CASE status WHEN 'sent' THEN sent_at WHEN 'sending' THEN claimed_at ELSE next_attempt_at END AS t\n" +
		"  FROM mail_outbox\n" +
		"  WHERE recipient_address = ? AND category = 'marketing' AND status IN ('queued', 'sending', 'sent')\n" +
		") m WHERE t >= ? AND t < ? ORDER BY t"
	from := time.Date(2025, 3, 14, 0, 0, 0, 0, time.FixedZone("CET", 3600))
	mock.ExpectQuery(q(sqlTimes)).WithArgs("ada@customer.example", from.UTC(), from.Add(24*time.Hour).UTC()).
		WillReturnRows(sqlmock.NewRows([]string{"t"}).AddRow(fixedNow))
	got, err := o.MarketingTimes(context.Background(), nil, "Ada <ada@customer.example>", from, from.Add(24*time.Hour))
	if err != nil || len(got) != 1 || !got[0].Equal(fixedNow) {
		t.Errorf("MarketingTimes = %v, %v", got, err)
	}
}
