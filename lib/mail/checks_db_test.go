package mail_test

// What drip needs from the Outbox, against the real MariaDB and SMTP (mailsink): each
// job delivers only its own keys, suppressions apply by category at enqueue and at
// claim, BeforeSend cancels in the claim's transaction, a message waits for its
// not-before time, a hard bounce suppresses the address for every category, and the
// frequency cap's count and the ops list read what is there.

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mail"
)

// marketingTo is a funnel step to recipient i.
func marketingTo(i int) mail.Message {
	m := marketingMessage()
	m.To = fmt.Sprintf("user%03d@customer.example", i)
	m.MessageID = ""
	return m
}

func (f *dbFixture) outboxFor(prefix string) *mail.Outbox {
	return &mail.Outbox{DB: f.db, Now: f.clock.Now, KeyPrefix: prefix}
}

func TestOutboxDBEachJobDeliversItsOwnMail(t *testing.T) {
	f := newDBFixture(t)
	ctx := context.Background()
	abuse, drip := f.outboxFor("abuse:"), f.outboxFor("drip:")
	for i, key := range []string{"abuse:dunning:case:1:reminder", "drip:onboarding:account:2:welcome", "abuse:dunning:case:3:warning"} {
		msg := messageTo(i)
		if strings.HasPrefix(key, "drip:") {
			msg = marketingTo(i)
		}
		o := abuse
		if strings.HasPrefix(key, "drip:") {
			o = drip
		}
		if queued, err := o.Enqueue(ctx, nil, key, msg); err != nil || !queued {
			t.Fatalf("Enqueue(%s) = %v, %v", key, queued, err)
		}
	}
	// Keys LIKE would confuse if the prefix were not escaped: _ matches any character.
	if _, err := f.outboxFor("abuse_").Enqueue(ctx, nil, "abuse_x:1", messageTo(9)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.outboxFor("").Enqueue(ctx, nil, "abuseXx:2", messageTo(8)); err != nil {
		t.Fatal(err)
	}
	rep, err := abuse.Deliver(ctx, f.sender, 100)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sent != 2 || rep.Items[0].Key != "abuse:dunning:case:1:reminder" || rep.Items[1].Key != "abuse:dunning:case:3:warning" {
		t.Fatalf("abuse's run = %+v, want its two notices only", rep)
	}
	if r := f.row(t, "drip:onboarding:account:2:welcome"); r.status != "queued" {
		t.Errorf("drip's step after abuse's run: %+v, want still queued", r)
	}
	rep, err = drip.Deliver(ctx, f.sender, 100)
	if err != nil || rep.Sent != 1 || rep.Items[0].Key != "drip:onboarding:account:2:welcome" || rep.Items[0].Category != mail.Marketing {
		t.Fatalf("drip's run = %+v, %v; want its step only, marketing", rep, err)
	}
	if r := f.row(t, "abuse_x:1"); r.status != "queued" {
		t.Errorf("abuse_x:1 = %+v, want untouched by both", r)
	}
	rep, err = f.outboxFor("abuse_").Deliver(ctx, f.sender, 100)
	if err != nil || rep.Sent != 1 || rep.Items[0].Key != "abuse_x:1" {
		t.Fatalf("the abuse_ outbox's run = %+v, %v; want abuse_x:1 only, not abuseXx:2", rep, err)
	}

	// Stuck reports and requeues are scoped the same way.
	if _, err := f.db.Exec(`UPDATE mail_outbox SET status = 'sending', claimed_at = ? WHERE dedupe_key IN
  ('abuse:dunning:case:1:reminder', 'drip:onboarding:account:2:welcome')`, fixedNow); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Hour)
	rep, err = drip.Deliver(ctx, f.sender, 100)
	if err != nil || len(rep.Stuck) != 1 || rep.Stuck[0].Key != "drip:onboarding:account:2:welcome" {
		t.Fatalf("drip's stuck report = %+v, %v; want its own message only", rep.Stuck, err)
	}
	abuseStuck := f.row(t, "abuse:dunning:case:1:reminder")
	if err := drip.Requeue(ctx, abuseStuck.id); err == nil {
		t.Errorf("drip requeued abuse's message")
	}
	if err := abuse.Requeue(ctx, abuseStuck.id); err != nil {
		t.Errorf("abuse's Requeue of its own stuck message: %v", err)
	}
}

func TestOutboxDBSuppressionByCategory(t *testing.T) {
	f := newDBFixture(t)
	ctx := context.Background()
	o := f.outbox
	unsub, bounced, complained := "user001@customer.example", "user002@customer.example", "user003@customer.example"
	for addr, kind := range map[string]mail.SuppressionKind{unsub: mail.SuppressUnsubscribe, bounced: mail.SuppressBounce, complained: mail.SuppressComplaint} {
		if _, err := o.Suppress(ctx, nil, addr, kind, "test"); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 4; i++ {
		for _, c := range []mail.Category{mail.Marketing, mail.Transactional} {
			msg := messageTo(i)
			if c == mail.Marketing {
				msg = marketingTo(i)
			}
			key := fmt.Sprintf("%s:%d", c, i)
			res, err := o.EnqueueAt(ctx, nil, key, msg, time.Time{})
			if err != nil || !res.New {
				t.Fatalf("EnqueueAt(%s) = %+v, %v", key, res, err)
			}
			blocked := c == mail.Marketing && i <= 3 || i == 2 || i == 3
			if got := res.Suppressed != nil; got != blocked {
				t.Errorf("%s: suppressed at enqueue = %v (%+v), want %v", key, got, res.Suppressed, blocked)
			}
		}
	}
	rep := f.deliver(t)
	var sent []string
	for _, it := range rep.Items {
		if it.Outcome == mail.OutcomeSent {
			sent = append(sent, it.Key)
		}
	}
	// The unsubscribed user still gets their transactional mail; user004 gets both.
	if want := []string{"transactional:1", "marketing:4", "transactional:4"}; strings.Join(sent, " ") != strings.Join(want, " ") {
		t.Errorf("sent %q, want %q", sent, want)
	}
	if r := f.row(t, "marketing:1"); r.status != "suppressed" || r.lastError.String != "suppressed: unsubscribe: test" {
		t.Errorf("marketing to the unsubscribed: %+v", r)
	}
	if r := f.row(t, "transactional:3"); r.status != "suppressed" || r.lastError.String != "suppressed: complaint: test" {
		t.Errorf("transactional to the complainer: %+v", r)
	}

	// Unsubscribed after the step was queued: the claim catches it.
	f.enqueue(t, "marketing:5", marketingTo(5))
	f.enqueue(t, "transactional:5", messageTo(5))
	if _, err := o.Suppress(ctx, nil, "User005@Customer.example", mail.SuppressUnsubscribe, "one-click"); err != nil {
		t.Fatal(err)
	}
	rep = f.deliver(t)
	if rep.Suppressed != 1 || rep.Sent != 1 || f.row(t, "marketing:5").status != "suppressed" || f.row(t, "transactional:5").status != "sent" {
		t.Errorf("after a late unsubscribe: %+v, want the marketing step suppressed and the notice sent", rep)
	}

	// The unsubscribed user then hard-bounces: now nothing goes, and lifting one kind
	// leaves the other.
	if _, err := o.Suppress(ctx, nil, unsub, mail.SuppressBounce, "550 from the relay's report"); err != nil {
		t.Fatal(err)
	}
	supp, err := o.Suppressions(ctx, nil, unsub)
	if err != nil || len(supp) != 2 || supp[0].Kind != mail.SuppressUnsubscribe || supp[1].Kind != mail.SuppressBounce {
		t.Fatalf("Suppressions = %+v, %v; want unsubscribe then bounce", supp, err)
	}
	if ok, _ := o.IsSuppressed(ctx, unsub, mail.Transactional); !ok {
		t.Errorf("a bounced address may still get transactional mail")
	}
	if n, err := o.Lift(ctx, nil, unsub, mail.SuppressBounce); err != nil || n != 1 {
		t.Errorf("Lift(bounce) = %d, %v", n, err)
	}
	if ok, _ := o.IsSuppressed(ctx, unsub, mail.Transactional); ok {
		t.Errorf("after lifting the bounce, transactional mail is still blocked")
	}
	if ok, _ := o.IsSuppressed(ctx, unsub, mail.Marketing); !ok {
		t.Errorf("lifting the bounce lifted the unsubscribe too")
	}
	if n, err := o.Lift(ctx, nil, unsub, ""); err != nil || n != 1 {
		t.Errorf("Lift(all) = %d, %v", n, err)
	}
	if ok, _ := o.IsSuppressed(ctx, unsub, mail.Marketing); ok {
		t.Errorf("after lifting everything, marketing is still blocked")
	}
}

func TestOutboxDBListSuppressionsPages(t *testing.T) {
	f := newDBFixture(t)
	ctx := context.Background()
	want := map[string]int{}
	for i := range 7 {
		addr := fmt.Sprintf("u%02d@x.example", i)
		kinds := []mail.SuppressionKind{mail.SuppressBounce}
		if i%2 == 0 {
			kinds = append(kinds, mail.SuppressUnsubscribe, mail.SuppressComplaint)
		}
		for _, k := range kinds {
			if _, err := f.outbox.Suppress(ctx, nil, addr, k, ""); err != nil {
				t.Fatal(err)
			}
			want[addr+" "+string(k)]++
		}
	}
	got := map[string]int{}
	q := mail.SuppressionQuery{Limit: 4}
	pages := 0
	for {
		page, err := f.outbox.ListSuppressions(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if pages++; pages > 20 {
			t.Fatal("ListSuppressions does not end")
		}
		for _, s := range page {
			got[s.Email+" "+string(s.Kind)]++
		}
		q.After = page[len(page)-1].Email
	}
	if len(got) != len(want) {
		t.Errorf("listed %d rows, want %d: %v", len(got), len(want), got)
	}
	for k, n := range got {
		if n != 1 || want[k] != 1 {
			t.Errorf("%s listed %d times", k, n)
		}
	}
	bounces, err := f.outbox.ListSuppressions(ctx, mail.SuppressionQuery{Kind: mail.SuppressComplaint})
	if err != nil || len(bounces) != 4 {
		t.Errorf("complaints = %+v, %v; want 4", bounces, err)
	}
}

func TestOutboxDBBeforeSendCancelsWithFreshFacts(t *testing.T) {
	f := newDBFixture(t)
	ctx := context.Background()
	if _, err := f.db.Exec(`INSERT INTO accounts (id, email, currency, created_at) VALUES (1, 'user001@customer.example', 'EUR', ?),
  (2, 'user002@customer.example', 'EUR', ?)`, fixedNow, fixedNow); err != nil {
		t.Fatal(err)
	}
	drip := f.outboxFor("drip:")
	var seenStatus []string
	drip.BeforeSend = func(ctx context.Context, tx *sql.Tx, m mail.QueuedMessage) (bool, string, error) {
		var account int64
		if _, err := fmt.Sscanf(m.Key, "drip:onboarding:account:%d:", &account); err != nil {
			return true, "unreadable key", nil
		}
		var status string
		if err := tx.QueryRowContext(ctx, `SELECT status FROM mail_outbox WHERE id = ?`, m.ID).Scan(&status); err != nil {
			return false, "", err
		}
		seenStatus = append(seenStatus, status)
		var verified bool
		if err := tx.QueryRowContext(ctx, `SELECT payment_method_verified FROM accounts WHERE id = ? FOR UPDATE`, account).Scan(&verified); err != nil {
			return false, "", err
		}
		if verified {
			return true, "goal reached: payment_method_verified", nil
		}
		return false, "", nil
	}
	for i := 1; i <= 2; i++ {
		if _, err := drip.EnqueueAt(ctx, nil, fmt.Sprintf("drip:onboarding:account:%d:first_vm", i), marketingTo(i), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	// Account 1 converts after its step was queued and before delivery.
	if _, err := f.db.Exec(`UPDATE accounts SET payment_method_verified = 1 WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	rep, err := drip.Deliver(ctx, f.sender, 10)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Cancelled != 1 || rep.Sent != 1 || rep.Items[0].Outcome != mail.OutcomeCancelled ||
		rep.Items[0].Reason != "cancelled: goal reached: payment_method_verified" {
		t.Fatalf("report = %+v, want account 1's step cancelled, account 2's sent", rep)
	}
	if strings.Join(seenStatus, " ") != "sending sending" {
		t.Errorf("BeforeSend saw the rows as %q, want them claimed (sending) in its transaction", seenStatus)
	}
	r := f.row(t, "drip:onboarding:account:1:first_vm")
	if r.status != "cancelled" || r.lastError.String != "cancelled: goal reached: payment_method_verified" || r.sentAt.Valid {
		t.Errorf("row = %+v, want cancelled with the reason", r)
	}
	if msgs := f.sink.Messages(); len(msgs) != 1 || msgs[0].To[0] != "user002@customer.example" {
		t.Errorf("sink got %d messages, want only account 2's", len(msgs))
	}
	// A cancelled message is final: not due again, not stuck, not requeueable.
	f.clock.Advance(24 * time.Hour)
	if rep := f.deliver(t); len(rep.Items) != 0 || len(rep.Stuck) != 0 {
		t.Errorf("later run: %+v, want nothing", rep)
	}
	if err := drip.Requeue(ctx, r.id); err == nil {
		t.Errorf("Requeue of a cancelled message succeeded")
	}
}

func TestOutboxDBBeforeSendErrorLeavesMessageQueued(t *testing.T) {
	f := newDBFixture(t)
	ctx := context.Background()
	drip := f.outboxFor("drip:")
	drip.BeforeSend = func(ctx context.Context, tx *sql.Tx, _ mail.QueuedMessage) (bool, string, error) {
		_, err := tx.ExecContext(ctx, `SELECT * FROM no_such_table`)
		return false, "", err
	}
	f.enqueue(t, "drip:onboarding:account:1:welcome", marketingTo(1))
	if _, err := drip.Deliver(ctx, f.sender, 10); err == nil || !strings.Contains(err.Error(), "before send") {
		t.Fatalf("Deliver err = %v, want the check's error", err)
	}
	if r := f.row(t, "drip:onboarding:account:1:welcome"); r.status != "queued" || r.attempts != 0 || r.claimedAt.Valid {
		t.Errorf("row = %+v, want queued as before, no attempt spent", r)
	}
	if n := len(f.sink.Messages()); n != 0 {
		t.Errorf("sink got %d messages", n)
	}
}

func TestOutboxDBNotBefore(t *testing.T) {
	f := newDBFixture(t)
	ctx := context.Background()
	sendAt := fixedNow.Add(3 * time.Hour)
	if _, err := f.outbox.EnqueueAt(ctx, nil, "drip:onboarding:account:1:welcome", marketingTo(1), sendAt.In(time.FixedZone("X", -5*3600))); err != nil {
		t.Fatal(err)
	}
	if r := f.row(t, "drip:onboarding:account:1:welcome"); !r.next.Equal(sendAt) {
		t.Errorf("next_attempt_at = %v, want %v", r.next, sendAt)
	}
	f.clock.Advance(3*time.Hour - time.Second)
	if rep := f.deliver(t); len(rep.Items) != 0 {
		t.Errorf("before its time: %+v", rep)
	}
	f.clock.Advance(time.Second)
	if rep := f.deliver(t); rep.Sent != 1 {
		t.Errorf("at its time: %+v, want sent", rep)
	}
}

func TestOutboxDBHardBounceBlocksEveryCategory(t *testing.T) {
	f := newDBFixture(t)
	ctx := context.Background()
	f.enqueue(t, "drip:onboarding:account:1:welcome", marketingTo(1))
	f.sink.FailNextWith(1, 550, "5.1.1 <user001@customer.example>: no such user")
	rep := f.deliver(t)
	if rep.Failed != 1 || rep.Bounced != 1 {
		t.Fatalf("report = %+v, want one failed, bounced", rep)
	}
	// The next invoice notice to that address is not even queued.
	res, err := f.outbox.EnqueueAt(ctx, nil, "abuse:dunning:case:1:reminder", messageTo(1), time.Time{})
	if err != nil || res.Suppressed == nil || res.Suppressed.Kind != mail.SuppressBounce || res.Queued() {
		t.Fatalf("EnqueueAt after the bounce = %+v, %v; want suppressed as a bounce", res, err)
	}
	if r := f.row(t, "abuse:dunning:case:1:reminder"); r.status != "suppressed" || !strings.Contains(r.lastError.String, "5.1.1") {
		t.Errorf("notice row = %+v, want suppressed, naming the bounce", r)
	}

	// A policy refusal (our relay's configuration) fails the message, not the address.
	f.enqueue(t, "drip:onboarding:account:2:welcome", marketingTo(2))
	f.sink.FailNextWith(1, 550, "5.7.1 relaying denied")
	if rep := f.deliver(t); rep.Failed != 1 || rep.Bounced != 0 {
		t.Errorf("policy refusal: %+v, want failed without a bounce", rep)
	}
	if ok, _ := f.outbox.IsSuppressed(ctx, "user002@customer.example", mail.Transactional); ok {
		t.Errorf("a policy refusal suppressed the recipient")
	}
}

func TestOutboxDBMarketingTimes(t *testing.T) {
	f := newDBFixture(t)
	ctx := context.Background()
	ada := "Ada <User001@customer.example>"
	msg := marketingTo(1)
	msg.To = ada
	put := func(key string, at time.Time) {
		t.Helper()
		if _, err := f.outboxFor("").EnqueueAt(ctx, nil, key, msg, at); err != nil {
			t.Fatal(err)
		}
	}
	put("drip:a:1:sent", time.Time{}) // due now, sent below at fixedNow+1m
	put("drip:a:1:later", fixedNow.Add(5*time.Hour))
	put("drip:a:1:cancelled", time.Time{})
	put("drip:a:1:tomorrow", fixedNow.Add(30*time.Hour))
	f.enqueue(t, "abuse:x:1:notice", messageTo(1)) // transactional: not counted
	f.clock.Advance(time.Minute)
	o := f.outboxFor("drip:a:1:s")
	if rep, err := o.Deliver(ctx, f.sender, 10); err != nil || rep.Sent != 1 {
		t.Fatalf("Deliver = %+v, %v", rep, err)
	}
	if _, err := f.db.Exec(`UPDATE mail_outbox SET status = 'cancelled' WHERE dedupe_key = 'drip:a:1:cancelled'`); err != nil {
		t.Fatal(err)
	}
	day := fixedNow.Truncate(24 * time.Hour)
	got, err := f.outbox.MarketingTimes(ctx, nil, "user001@customer.example", day, day.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Time{fixedNow.Add(time.Minute), fixedNow.Add(5 * time.Hour)}
	if len(got) != len(want) || !got[0].Equal(want[0]) || !got[1].Equal(want[1]) {
		t.Errorf("MarketingTimes = %v, want %v (sent, then queued; not cancelled, not transactional, not tomorrow)", got, want)
	}
}
