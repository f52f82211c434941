package mail_test

// The Outbox against the real MariaDB (mysqltest: a throwaway database per test,
// skipped without CRONKIT_TEST_DSN unless CRONKIT_INTEGRATION=1) and real SMTP
// (mailsink), so the claim, the unique key and the suppression lookup are proven by the
// server, not by our expectations of it.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/mail/mailsink"
	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

// testClock is a clock tests move; safe for the concurrent Deliver test.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type dbFixture struct {
	db     *sql.DB
	outbox *mail.Outbox
	clock  *testClock
	sink   *mailsink.Sink
	sender *mail.Sender
}

func newDBFixture(t *testing.T) *dbFixture {
	t.Helper()
	db := mysqltest.New(t).DB
	clock := &testClock{t: fixedNow}
	sink, sender := startSink(t)
	return &dbFixture{db: db, outbox: &mail.Outbox{DB: db, Now: clock.Now}, clock: clock, sink: sink, sender: sender}
}

func (f *dbFixture) enqueue(t *testing.T, key string, msg mail.Message) {
	t.Helper()
	queued, err := f.outbox.Enqueue(context.Background(), nil, key, msg)
	if err != nil || !queued {
		t.Fatalf("Enqueue(%s) = %v, %v", key, queued, err)
	}
}

func (f *dbFixture) deliver(t *testing.T) mail.DeliveryReport {
	t.Helper()
	rep, err := f.outbox.Deliver(context.Background(), f.sender, 100)
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	return rep
}

type outboxRow struct {
	id        int64
	status    string
	attempts  int
	next      time.Time
	claimedAt sql.NullTime
	sentAt    sql.NullTime
	lastError sql.NullString
}

func (f *dbFixture) row(t *testing.T, key string) outboxRow {
	t.Helper()
	var r outboxRow
	err := f.db.QueryRow(`SELECT id, status, attempts, next_attempt_at, claimed_at, sent_at, last_error
FROM mail_outbox WHERE dedupe_key = ?`, key).Scan(&r.id, &r.status, &r.attempts, &r.next, &r.claimedAt, &r.sentAt, &r.lastError)
	if err != nil {
		t.Fatalf("read outbox row %s: %v", key, err)
	}
	return r
}

func (f *dbFixture) count(t *testing.T, where string, args ...any) int {
	t.Helper()
	var n int
	if err := f.db.QueryRow("SELECT COUNT(*) FROM mail_outbox WHERE "+where, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func messageTo(i int) mail.Message {
	m := validMessage()
	m.To = fmt.Sprintf("user%03d@customer.example", i)
	m.MessageID = ""
	return m
}

func TestOutboxDBEnqueueIsIdempotent(t *testing.T) {
	f := newDBFixture(t)
	ctx := context.Background()
	for i, want := range []bool{true, false, false} {
		tx, err := f.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		queued, err := f.outbox.Enqueue(ctx, tx, "dunning:case:42:reminded", validMessage())
		if err != nil || queued != want {
			t.Fatalf("Enqueue #%d = %v, %v; want %v", i, queued, err, want)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	// Keys are compared byte for byte: another step is another message.
	f.enqueue(t, "dunning:case:42:Reminded", validMessage())
	if n := f.count(t, "dedupe_key LIKE 'dunning:case:42:%'"); n != 2 {
		t.Fatalf("%d rows, want 2", n)
	}
	r := f.row(t, "dunning:case:42:reminded")
	if r.status != "queued" || r.attempts != 0 || !r.next.Equal(fixedNow) || r.claimedAt.Valid || r.sentAt.Valid {
		t.Errorf("new row = %+v, want queued, due %v", r, fixedNow)
	}
	var headers, messageID string
	if err := f.db.QueryRow(`SELECT headers, message_id FROM mail_outbox WHERE id = ?`, r.id).Scan(&headers, &messageID); err != nil {
		t.Fatal(err)
	}
	if headers != `{"X-Cronkit-Case":"42","X-Cronkit-Step":"reminded"}` || messageID != validMessage().MessageID {
		t.Errorf("stored headers %s, message id %s", headers, messageID)
	}
}

func TestOutboxDBEnqueueRollsBackWithCaller(t *testing.T) {
	f := newDBFixture(t)
	ctx := context.Background()
	tx, err := f.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if queued, err := f.outbox.Enqueue(ctx, tx, "dunning:case:42:warned", validMessage()); err != nil || !queued {
		t.Fatalf("Enqueue = %v, %v", queued, err)
	}
	// The state change failed after the mail was queued: nothing may remain.
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if n := f.count(t, "1 = 1"); n != 0 {
		t.Fatalf("%d rows after rollback, want 0", n)
	}
	// And the key is free again for the retried state change.
	f.enqueue(t, "dunning:case:42:warned", validMessage())
}

func TestOutboxDBDeliverSendsOnce(t *testing.T) {
	f := newDBFixture(t)
	for i := range 3 {
		f.enqueue(t, fmt.Sprintf("drip:account:%d:welcome", i), messageTo(i))
	}
	f.clock.Advance(time.Second)
	rep := f.deliver(t)
	if rep.Sent != 3 || len(rep.Items) != 3 || rep.Failed+rep.Requeued+rep.Suppressed+rep.Unknown != 0 || len(rep.Stuck) != 0 {
		t.Fatalf("report = %+v, want 3 sent", rep)
	}
	for i, it := range rep.Items {
		if it.Key != fmt.Sprintf("drip:account:%d:welcome", i) || it.Outcome != mail.OutcomeSent || it.Attempts != 1 {
			t.Errorf("item %d = %+v, want oldest first, sent on attempt 1", i, it)
		}
	}
	again := f.deliver(t)
	if again.Sent != 0 || len(again.Items) != 0 {
		t.Errorf("second Deliver = %+v, want nothing", again)
	}
	if got := len(f.sink.Messages()); got != 3 {
		t.Errorf("sink got %d messages, want 3", got)
	}
	r := f.row(t, "drip:account:0:welcome")
	if r.status != "sent" || r.attempts != 1 || !r.sentAt.Valid || !r.sentAt.Time.Equal(fixedNow.Add(time.Second)) {
		t.Errorf("row = %+v, want sent at %v", r, fixedNow.Add(time.Second))
	}
	// The Message-ID stored at Enqueue is the one that went out.
	var id string
	if err := f.db.QueryRow(`SELECT message_id FROM mail_outbox WHERE id = ?`, r.id).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if got := f.sink.Messages()[0].Header.Get("Message-Id"); got != "<"+id+">" || !strings.HasSuffix(id, "@cloud.example") {
		t.Errorf("sent Message-ID %q, stored %q", got, id)
	}
}

func TestOutboxDBConcurrentDeliverSendsEachOnce(t *testing.T) {
	f := newDBFixture(t)
	const n, workers = 40, 4
	for i := range n {
		f.enqueue(t, fmt.Sprintf("drip:account:%d:nudge", i), messageTo(i))
	}
	var wg sync.WaitGroup
	reports := make([]mail.DeliveryReport, workers)
	errs := make([]error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reports[w], errs[w] = f.outbox.Deliver(context.Background(), f.sender, 100)
		}()
	}
	wg.Wait()
	sent := 0
	for w := range workers {
		if errs[w] != nil {
			t.Errorf("worker %d: %v", w, errs[w])
		}
		sent += reports[w].Sent
		t.Logf("worker %d sent %d", w, reports[w].Sent)
	}
	if sent != n {
		t.Errorf("reports say %d sent, want %d", sent, n)
	}
	perRecipient := map[string]int{}
	for _, m := range f.sink.Messages() {
		perRecipient[m.To[0]]++
	}
	if len(perRecipient) != n {
		t.Errorf("sink got mail for %d recipients, want %d", len(perRecipient), n)
	}
	for rcpt, c := range perRecipient {
		if c != 1 {
			t.Errorf("%s got %d copies", rcpt, c)
		}
	}
	if got := f.count(t, "status = 'sent' AND attempts = 1"); got != n {
		t.Errorf("%d rows sent on attempt 1, want %d", got, n)
	}
}

func TestOutboxDBStuckMessageIsNotResent(t *testing.T) {
	f := newDBFixture(t)
	f.enqueue(t, "dunning:case:7:suspended", validMessage())
	// What a deliverer that died between its claim and its record leaves behind.
	if _, err := f.db.Exec(`UPDATE mail_outbox SET status = 'sending', attempts = 1, claimed_at = ? WHERE dedupe_key = ?`,
		fixedNow, "dunning:case:7:suspended"); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Minute) // a concurrent run could still be sending it
	if rep := f.deliver(t); len(rep.Stuck) != 0 || rep.Sent != 0 {
		t.Errorf("after 1 minute: report = %+v, want nothing yet", rep)
	}
	f.clock.Advance(time.Hour)
	rep := f.deliver(t)
	if rep.Sent != 0 || len(rep.Stuck) != 1 {
		t.Fatalf("report = %+v, want one stuck, none sent", rep)
	}
	s := rep.Stuck[0]
	if s.Key != "dunning:case:7:suspended" || s.Attempts != 1 || !s.ClaimedAt.Equal(fixedNow) || s.MessageID != validMessage().MessageID {
		t.Errorf("stuck = %+v", s)
	}
	if n := len(f.sink.Messages()); n != 0 {
		t.Fatalf("sink got %d messages: a stuck message was resent", n)
	}
	// The operator checked the relay's log: never delivered. Requeue sends it once.
	if err := f.outbox.Requeue(context.Background(), s.ID); err != nil {
		t.Fatalf("Requeue: %v", err)
	}
	if rep := f.deliver(t); rep.Sent != 1 || len(rep.Stuck) != 0 {
		t.Errorf("after requeue: report = %+v, want one sent", rep)
	}
	if err := f.outbox.Requeue(context.Background(), s.ID); err == nil {
		t.Errorf("Requeue of a sent message succeeded")
	}
	if r := f.row(t, "dunning:case:7:suspended"); r.status != "sent" || r.attempts != 2 {
		t.Errorf("row = %+v, want sent on attempt 2", r)
	}
}

func TestOutboxDBSuppressedRecipient(t *testing.T) {
	f := newDBFixture(t)
	ctx := context.Background()
	if added, err := f.outbox.Suppress(ctx, nil, "ADA@customer.example", mail.SuppressBounce, "hard bounce"); err != nil || !added {
		t.Fatalf("Suppress = %v, %v", added, err)
	}
	if added, err := f.outbox.Suppress(ctx, nil, "ada@customer.example", mail.SuppressBounce, "again"); err != nil || added {
		t.Fatalf("second Suppress = %v, %v; want kept as it was", added, err)
	}
	for addr, want := range map[string]bool{"Ada <ada@Customer.example>": true, "bob@customer.example": false} {
		got, err := f.outbox.IsSuppressed(ctx, addr, mail.Transactional)
		if err != nil || got != want {
			t.Errorf("IsSuppressed(%s) = %v, %v; want %v", addr, got, err, want)
		}
	}
	// Queued before the bounce was recorded: the claim catches it.
	f.enqueue(t, "drip:account:2:welcome", messageTo(2))
	if _, err := f.db.Exec(`INSERT INTO mail_outbox (dedupe_key, sender, recipient, subject, body_text, body_html,
  status, next_attempt_at, created_at) VALUES ('abuse:case:1:reminder', '', 'ada@customer.example', 's', 't', '', 'queued', ?, ?)`,
		fixedNow, fixedNow); err != nil {
		t.Fatal(err)
	}
	rep := f.deliver(t)
	if rep.Suppressed != 1 || rep.Sent != 1 {
		t.Fatalf("report = %+v, want one suppressed, one sent", rep)
	}
	msgs := f.sink.Messages()
	if len(msgs) != 1 || msgs[0].To[0] != "user002@customer.example" {
		t.Errorf("sink got %+v, want only user002's mail", msgs)
	}
	r := f.row(t, "abuse:case:1:reminder")
	if r.status != "suppressed" || r.lastError.String != "suppressed: bounce: hard bounce" || r.sentAt.Valid {
		t.Errorf("row = %+v, want suppressed with the first reason", r)
	}
}

func TestOutboxDBTemporaryFailureRetriesWithBackoff(t *testing.T) {
	f := newDBFixture(t)
	f.enqueue(t, "dunning:case:9:reminded", validMessage())
	f.sink.FailNext(1, 451)
	rep := f.deliver(t)
	if rep.Requeued != 1 || rep.Sent != 0 {
		t.Fatalf("report = %+v, want one requeued", rep)
	}
	r := f.row(t, "dunning:case:9:reminded")
	if r.status != "queued" || r.attempts != 1 || !r.next.Equal(fixedNow.Add(5*time.Minute)) || !strings.Contains(r.lastError.String, "451") {
		t.Errorf("row = %+v, want queued for %v with the 451 noted", r, fixedNow.Add(5*time.Minute))
	}
	f.clock.Advance(4 * time.Minute)
	if rep := f.deliver(t); len(rep.Items) != 0 {
		t.Errorf("before the backoff: report = %+v, want nothing", rep)
	}
	f.clock.Advance(time.Minute)
	if rep := f.deliver(t); rep.Sent != 1 {
		t.Errorf("after the backoff: report = %+v, want one sent", rep)
	}
	if r := f.row(t, "dunning:case:9:reminded"); r.status != "sent" || r.attempts != 2 || r.lastError.Valid {
		t.Errorf("row = %+v, want sent on attempt 2, error cleared", r)
	}
	if n := len(f.sink.Messages()); n != 1 {
		t.Errorf("sink got %d messages, want 1", n)
	}
}

func TestOutboxDBPermanentFailure(t *testing.T) {
	f := newDBFixture(t)
	f.enqueue(t, "dunning:case:9:warned", validMessage())
	f.sink.FailNext(1, 550)
	rep := f.deliver(t)
	if rep.Failed != 1 || rep.Items[0].Outcome != mail.OutcomeFailed || !rep.Items[0].Bounced || rep.Bounced != 1 {
		t.Fatalf("report = %+v, want one failed, a hard bounce", rep)
	}
	r := f.row(t, "dunning:case:9:warned")
	if r.status != "failed" || !strings.Contains(r.lastError.String, "550") {
		t.Errorf("row = %+v, want failed with the 550 noted", r)
	}
	// The relay refused the recipient at RCPT TO: no more mail of any kind to them.
	supp, err := f.outbox.Suppressions(context.Background(), nil, "ada@customer.example")
	if err != nil || len(supp) != 1 || supp[0].Kind != mail.SuppressBounce || !strings.Contains(supp[0].Reason, "dunning:case:9:warned") ||
		!strings.Contains(supp[0].Reason, "550") || !supp[0].CreatedAt.Equal(fixedNow) {
		t.Errorf("suppressions = %+v, %v; want one bounce naming the message and the 550", supp, err)
	}
	f.clock.Advance(24 * time.Hour)
	if rep := f.deliver(t); len(rep.Items) != 0 || len(rep.Stuck) != 0 {
		t.Errorf("a failed message was picked up again: %+v", rep)
	}
	if n := len(f.sink.Messages()); n != 0 {
		t.Errorf("sink got %d messages", n)
	}
}

func TestOutboxDBUnknownOutcomeIsLeftForOperator(t *testing.T) {
	f := newDBFixture(t)
	f.enqueue(t, "dunning:case:11:reminded", validMessage())
	f.sink.DropNext(1)
	rep := f.deliver(t)
	if rep.Unknown != 1 {
		t.Fatalf("report = %+v, want one unknown", rep)
	}
	if r := f.row(t, "dunning:case:11:reminded"); r.status != "sending" || !strings.Contains(r.lastError.String, "delivery outcome unknown") {
		t.Errorf("row = %+v, want left in sending with the reason", r)
	}
	f.clock.Advance(time.Hour)
	rep = f.deliver(t)
	if len(rep.Stuck) != 1 || len(rep.Items) != 0 {
		t.Errorf("report = %+v, want it reported stuck and not retried", rep)
	}
	if n := len(f.sink.Messages()); n != 1 {
		t.Errorf("sink got %d messages, want exactly the 1 it may have delivered", n)
	}
}

func TestOutboxDBRelayDownKeepsMessagesQueued(t *testing.T) {
	f := newDBFixture(t)
	f.enqueue(t, "drip:account:1:welcome", messageTo(1))
	f.enqueue(t, "drip:account:2:welcome", messageTo(2))
	down, err := mail.NewSender(mail.SMTPConfig{Host: "127.0.0.1", Port: closedPort(t), TLS: "none",
		Timeout: 2 * time.Second, From: "a@cloud.example"})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := f.outbox.Deliver(context.Background(), down, 100)
	if !errors.Is(err, mail.ErrRelayUnavailable) {
		t.Fatalf("Deliver err = %v, want ErrRelayUnavailable", err)
	}
	if rep.Requeued != 1 || len(rep.Items) != 1 {
		t.Errorf("report = %+v, want the first message requeued and the batch stopped", rep)
	}
	for _, key := range []string{"drip:account:1:welcome", "drip:account:2:welcome"} {
		if r := f.row(t, key); r.status != "queued" || r.attempts != 0 || !r.next.Equal(fixedNow) {
			t.Errorf("%s = %+v, want still queued and due, no attempt spent", key, r)
		}
	}
	// The relay is back: both go out in the next run.
	if rep := f.deliver(t); rep.Sent != 2 {
		t.Errorf("report = %+v, want 2 sent", rep)
	}
}
