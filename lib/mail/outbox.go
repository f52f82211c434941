package mail

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/mysql"
)

// ErrNotRequeueable is returned by Requeue for a message that is not stuck in
// 'sending' or 'failed' (already sent, still queued, or no such id).
var ErrNotRequeueable = errors.New("outbox message cannot be requeued")

// MessageSender is what Deliver needs from an SMTP sender; *Sender implements it and
// tests pass fakes.
type MessageSender interface {
	Send(ctx context.Context, msg Message) error
}

var _ MessageSender = (*Sender)(nil)

// Defaults for the Outbox's zero-valued fields.
const (
	DefaultMaxAttempts  = 8
	DefaultStuckAfter   = 15 * time.Minute
	DefaultDeliverLimit = 100
	maxKeyLength        = 191
	maxErrorLength      = 2000
	markTimeout         = 10 * time.Second
)

// Outbox is the mail_outbox table: jobs Enqueue messages in the transaction that
// changes the state they announce, and Deliver sends what is queued. Each message has
// a unique dedupe key per business step, so a rerun or a crash never queues a step
// twice, and delivery is at most once: a message is claimed before it is sent and is
// never sent again automatically once claimed.
//
// DB must be a pool opened by lib/mysql (parseTime, UTC); all times are stored in UTC.
type Outbox struct {
	DB *sql.DB
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxAttempts caps sending attempts on temporary failures before the message is
	// marked failed; zero means DefaultMaxAttempts.
	MaxAttempts int
	// Backoff is the wait before retrying after the given number of attempts; nil
	// means 5 minutes doubling per attempt, at most 6 hours.
	Backoff func(attempts int) time.Duration
	// StuckAfter is how long a message may stay in 'sending' before Deliver reports it
	// as stuck; a shorter wait would flag messages a concurrent run is sending right
	// now. Zero means DefaultStuckAfter.
	StuckAfter time.Duration
	// KeyPrefix scopes the outbox to one job's messages ("abuse:", "drip:"): Enqueue
	// refuses a key without it, and Deliver, its stuck report and Requeue only see
	// keys with it. Each job's run then sends its own mail and never another job's,
	// whose claim-time check (BeforeSend) it does not have. Empty means every message,
	// for an operator's tool rather than a job.
	KeyPrefix string
	// BeforeSend, when set, is asked about each message in the transaction that
	// claims it for sending (the row is locked, and the check's reads see the
	// database as of now): true cancels the message, which ends 'cancelled' with the
	// reason and is never sent. A campaign uses it to drop a step queued before the
	// recipient converted, unsubscribed or left. An error rolls the claim back (the
	// message stays queued, no attempt spent) and stops Deliver, as a database error
	// would: a check that cannot run must not let mail through. The hook must only
	// touch the database through tx.
	BeforeSend func(ctx context.Context, tx *sql.Tx, m QueuedMessage) (cancel bool, reason string, err error)
}

// QueuedMessage is a message Deliver has claimed, as BeforeSend sees it.
type QueuedMessage struct {
	ID  int64
	Key string
	// Message is the message as stored, Category included.
	Message Message
	// Attempts counts this claim.
	Attempts int
	// QueuedAt is when it was enqueued.
	QueuedAt time.Time
}

func (o *Outbox) now() time.Time {
	now := o.Now
	if now == nil {
		now = time.Now
	}
	return now().UTC()
}

func (o *Outbox) maxAttempts() int {
	if o.MaxAttempts > 0 {
		return o.MaxAttempts
	}
	return DefaultMaxAttempts
}

func (o *Outbox) backoff(attempts int) time.Duration {
	if o.Backoff != nil {
		return o.Backoff(attempts)
	}
	d := 5 * time.Minute
	for i := 1; i < attempts && d < 6*time.Hour; i++ {
		d *= 2
	}
	return min(d, 6*time.Hour)
}

func (o *Outbox) stuckAfter() time.Duration {
	if o.StuckAfter > 0 {
		return o.StuckAfter
	}
	return DefaultStuckAfter
}

// SQL for Enqueue. ON DUPLICATE KEY UPDATE id = id changes nothing, so the driver
// reports 0 affected rows for a duplicate key and 1 for a new row (true as long as the
// DSN does not set clientFoundRows). Unlike INSERT IGNORE it keeps strict mode's errors
// (a too-long subject fails instead of being truncated). The status is 'queued', or
// 'suppressed' (with the suppression in last_error) for a recipient suppressed for
// the message's category: the row records that the step happened and was not mailed.
const enqueueSQL = `INSERT INTO mail_outbox
  (dedupe_key, category, sender, recipient, recipient_address, subject, body_text, body_html, headers,
   list_unsubscribe_url, list_unsubscribe_mailto, message_id,
   status, attempts, next_attempt_at, last_error, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)
ON DUPLICATE KEY UPDATE id = id`

// Enqueued is what EnqueueAt did with a message.
type Enqueued struct {
	// New is false when the key was already in the outbox (queued, sent, failed...):
	// nothing was written.
	New bool
	// Suppressed is set when the recipient is suppressed for the message's category:
	// the row was written as 'suppressed' and will never be sent.
	Suppressed *Suppression
}

// Queued reports whether the message now waits for delivery because of this call.
func (e Enqueued) Queued() bool { return e.New && e.Suppressed == nil }

// Enqueue queues msg under key (for example "abuse:dunning:case:42:reminder") inside
// tx, due now, so the message commits or rolls back with the state change that caused
// it. queued is false when the key is already in the outbox (left alone) or the
// recipient is suppressed for msg's category (the row is written as 'suppressed');
// EnqueueAt tells the two apart. With a nil tx the message is written on its own.
func (o *Outbox) Enqueue(ctx context.Context, tx *sql.Tx, key string, msg Message) (queued bool, err error) {
	res, err := o.EnqueueAt(ctx, tx, key, msg, time.Time{})
	return res.Queued(), err
}

// EnqueueAt is Enqueue for a message that may not go before notBefore (zero: now), such
// as a campaign step held for the recipient's send window: Deliver leaves it alone
// until then. It checks the suppression list for the recipient and msg's category
// inside tx, and Deliver checks again when it claims the message.
//
// A message without MessageID gets a random one now (on From's domain), stored with
// the row so ops can find it in the relay's logs.
func (o *Outbox) EnqueueAt(ctx context.Context, tx *sql.Tx, key string, msg Message, notBefore time.Time) (Enqueued, error) {
	if key == "" || utf8.RuneCountInString(key) > maxKeyLength {
		return Enqueued{}, fmt.Errorf("enqueue mail %q: key must be 1 to %d characters", key, maxKeyLength)
	}
	if !strings.HasPrefix(key, o.KeyPrefix) {
		return Enqueued{}, fmt.Errorf("enqueue mail %s: key outside this outbox's prefix %q", key, o.KeyPrefix)
	}
	if err := msg.Validate(); err != nil {
		return Enqueued{}, fmt.Errorf("enqueue mail %s: %w", key, err)
	}
	msg.Category = msg.Category.orDefault()
	addr, err := msg.recipientAddress()
	if err != nil {
		return Enqueued{}, fmt.Errorf("enqueue mail %s: %w", key, err)
	}
	if msg.MessageID == "" && msg.From != "" {
		if msg.MessageID, err = newMessageID(msg.From); err != nil {
			return Enqueued{}, fmt.Errorf("enqueue mail %s: %w", key, err)
		}
	}
	var headers sql.NullString
	if len(msg.Headers) > 0 {
		b, err := json.Marshal(msg.Headers) // keys sorted by encoding/json
		if err != nil {
			return Enqueued{}, fmt.Errorf("enqueue mail %s: headers: %w", key, err)
		}
		headers = sql.NullString{String: string(b), Valid: true}
	}
	q := o.conn(tx)
	supp, err := o.suppressedFor(ctx, q, addr, msg.Category)
	if err != nil {
		return Enqueued{}, fmt.Errorf("enqueue mail %s: %w", key, err)
	}
	status, lastErr := "queued", sql.NullString{}
	if supp != nil {
		status, lastErr = "suppressed", sql.NullString{String: supp.describe(), Valid: true}
	}
	now := o.now()
	due := now
	if !notBefore.IsZero() {
		due = notBefore.UTC()
	}
	res, err := q.ExecContext(ctx, enqueueSQL, key, string(msg.Category), msg.From, msg.To, addr, msg.Subject,
		msg.Text, msg.HTML, headers, msg.ListUnsubscribeURL, msg.ListUnsubscribeMailto, msg.MessageID,
		status, due, lastErr, now)
	if err != nil {
		return Enqueued{}, fmt.Errorf("enqueue mail %s: %w", key, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return Enqueued{}, fmt.Errorf("enqueue mail %s: rows affected: %w", key, err)
	}
	if n != 1 {
		return Enqueued{}, nil
	}
	if supp != nil {
		zerolog.Ctx(ctx).Info().Str("dedupe_key", key).Str("category", string(msg.Category)).
			Str("suppression", string(supp.Kind)).Msg("mail not queued: recipient suppressed")
	}
	return Enqueued{New: true, Suppressed: supp}, nil
}

// describe is how a suppression reads in last_error and reports.
func (s *Suppression) describe() string {
	if s.Reason == "" {
		return "suppressed: " + string(s.Kind)
	}
	return "suppressed: " + string(s.Kind) + ": " + s.Reason
}

// newMessageID returns random@domain-of-from. Random rather than derived from the key:
// a rebuilt database reuses keys, and mailbox providers drop a message whose
// Message-ID they have already seen.
func newMessageID(from string) (string, error) {
	a, err := mail.ParseAddress(from)
	if err != nil {
		return "", fmt.Errorf("%w: from %q: %v", ErrInvalidMessage, from, err)
	}
	_, domain, _ := strings.Cut(a.Address, "@")
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("message id: %w", err)
	}
	return hex.EncodeToString(b) + "@" + domain, nil
}

// Outcome is what one Deliver did with one message.
type Outcome string

// Outcomes of a delivery attempt.
const (
	// OutcomeSent: the server accepted the message.
	OutcomeSent Outcome = "sent"
	// OutcomeRequeued: a temporary failure; retried after a backoff.
	OutcomeRequeued Outcome = "requeued"
	// OutcomeFailed: rejected for good (5xx, invalid) or out of attempts. When the
	// relay rejected the recipient itself, the item is Bounced and the address is now
	// suppressed.
	OutcomeFailed Outcome = "failed"
	// OutcomeSuppressed: the recipient is suppressed for the message's category;
	// nothing was sent.
	OutcomeSuppressed Outcome = "suppressed"
	// OutcomeCancelled: BeforeSend cancelled the message; nothing was sent.
	OutcomeCancelled Outcome = "cancelled"
	// OutcomeUnknown: the connection broke after the message was handed over; it may
	// have been delivered, so it stays in 'sending' for an operator.
	OutcomeUnknown Outcome = "unknown"
)

// DeliveryItem is one message Deliver handled.
type DeliveryItem struct {
	ID       int64
	Key      string
	To       string
	Category Category
	Outcome  Outcome
	Attempts int
	Error    string
	// Reason says why a suppressed or cancelled message was not sent.
	Reason string
	// Bounced: the relay rejected the recipient for good (a hard bounce), and the
	// address is now suppressed with SuppressBounce, for every category.
	Bounced bool
}

// StuckMessage is a message left in 'sending' longer than StuckAfter: a deliverer died
// between claiming and recording it, or the outcome was unknown. It may or may not
// have been delivered, so it is never resent automatically; an operator checks the
// relay's logs for its Message-ID and calls Requeue if it was not.
type StuckMessage struct {
	ID        int64
	Key       string
	To        string
	MessageID string
	Attempts  int
	ClaimedAt time.Time
	LastError string
}

// DeliveryReport is the result of one Deliver: counts, then the messages handled and
// the stuck ones, both in id order, so two identical runs report identically.
type DeliveryReport struct {
	Sent       int
	Requeued   int
	Failed     int
	Suppressed int
	Cancelled  int
	Unknown    int
	// Bounced counts the failed messages whose recipient was suppressed as a hard
	// bounce (they are in Failed too).
	Bounced int
	// Left counts the due messages a stopped delivery did not reach (the relay
	// unavailable: the one in hand, requeued, and those after it), all still queued.
	Left  int
	Items []DeliveryItem
	Stuck []StuckMessage
}

func (r *DeliveryReport) add(it DeliveryItem) {
	switch it.Outcome {
	case OutcomeSent:
		r.Sent++
	case OutcomeRequeued:
		r.Requeued++
	case OutcomeFailed:
		r.Failed++
	case OutcomeSuppressed:
		r.Suppressed++
	case OutcomeCancelled:
		r.Cancelled++
	case OutcomeUnknown:
		r.Unknown++
	}
	if it.Bounced {
		r.Bounced++
	}
	r.Items = append(r.Items, it)
}

// Deliver sends up to limit due messages whose keys have KeyPrefix (limit <= 0 means
// DefaultDeliverLimit), oldest first. Each message is claimed in its own short
// transaction (queued -> sending), where the suppression list and BeforeSend may stop
// it, before it is sent, so concurrent Delivers never send one message twice; then it
// is marked sent, requeued with a backoff, or failed (a rejected recipient is
// suppressed as a hard bounce in the same transaction). Item-level failures are in the
// report; the error is for what stops the run (database down, SMTP relay unavailable,
// a failed BeforeSend, context cancelled), and the report holds what was done until
// then.
func (o *Outbox) Deliver(ctx context.Context, sender MessageSender, limit int) (DeliveryReport, error) {
	var rep DeliveryReport
	if limit <= 0 {
		limit = DefaultDeliverLimit
	}
	ids, err := o.dueIDs(ctx, limit)
	if err != nil {
		return rep, err
	}
	for i, id := range ids {
		if err := ctx.Err(); err != nil {
			return rep, fmt.Errorf("deliver mail: %w", err)
		}
		it, err := o.deliverOne(ctx, sender, id)
		if it != nil {
			rep.add(*it)
		}
		if err != nil {
			if errors.Is(err, ErrRelayUnavailable) {
				rep.Left = len(ids) - i
			}
			return rep, err
		}
	}
	if rep.Stuck, err = o.stuck(ctx); err != nil {
		return rep, err
	}
	for _, s := range rep.Stuck {
		zerolog.Ctx(ctx).Warn().Int64("outbox_id", s.ID).Str("dedupe_key", s.Key).
			Str("message_id", s.MessageID).Time("claimed_at", s.ClaimedAt).
			Msg("mail stuck in sending: check the relay log, then requeue or leave it")
	}
	return rep, nil
}

// keyPattern is the LIKE pattern of KeyPrefix, with '!' as the escape character (a
// backslash would depend on the server's NO_BACKSLASH_ESCAPES mode).
func (o *Outbox) keyPattern() string {
	r := strings.NewReplacer("!", "!!", "%", "!%", "_", "!_")
	return r.Replace(o.KeyPrefix) + "%"
}

// SQL of delivery. Every UPDATE of one row says FORCE INDEX (PRIMARY). Its WHERE also
// names status and next_attempt_at, so on a table with fresh statistics the optimizer
// may scan the (status, next_attempt_at) index instead, taking next-key locks on every
// due row: two concurrent deliverers then deadlock (seen on MariaDB 10.11 in
// TestOutboxDBConcurrentDeliverSendsEachOnce). Through the primary key, a claim locks
// exactly its row.
const (
	dueSQL = `SELECT id FROM mail_outbox
WHERE status = 'queued' AND next_attempt_at <= ? AND dedupe_key LIKE ? ESCAPE '!' ORDER BY id LIMIT ?`
	claimSQL = `UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'sending', attempts = attempts + 1, claimed_at = ?
WHERE id = ? AND status = 'queued' AND next_attempt_at <= ?`
	readClaimedSQL = `SELECT dedupe_key, category, sender, recipient, subject, body_text, body_html, headers,
  list_unsubscribe_url, list_unsubscribe_mailto, message_id, attempts, created_at
FROM mail_outbox WHERE id = ?`
	markSuppressedSQL = `UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'suppressed', last_error = ? WHERE id = ?`
	markCancelledSQL  = `UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'cancelled', last_error = ? WHERE id = ?`
	markSentSQL       = `UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'sent', sent_at = ?, last_error = NULL WHERE id = ? AND status = 'sending'`
	markRelayDownSQL  = `UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'queued', attempts = attempts - 1, last_error = ? WHERE id = ? AND status = 'sending'`
	markUnknownSQL    = `UPDATE mail_outbox FORCE INDEX (PRIMARY) SET last_error = ? WHERE id = ? AND status = 'sending'`
	markFailedSQL     = `UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'failed', last_error = ? WHERE id = ? AND status = 'sending'`
	markRetrySQL      = `UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'queued', next_attempt_at = ?, last_error = ? WHERE id = ? AND status = 'sending'`
	stuckSQL          = `SELECT id, dedupe_key, recipient, message_id, attempts, claimed_at, last_error
FROM mail_outbox WHERE status = 'sending' AND claimed_at <= ? AND dedupe_key LIKE ? ESCAPE '!' ORDER BY id LIMIT 1000`
	requeueSQL = `UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'queued', next_attempt_at = ?, claimed_at = NULL
WHERE id = ? AND status IN ('sending', 'failed') AND dedupe_key LIKE ? ESCAPE '!'`
)

func (o *Outbox) dueIDs(ctx context.Context, limit int) ([]int64, error) {
	rows, err := o.DB.QueryContext(ctx, dueSQL, o.now(), o.keyPattern(), limit)
	if err != nil {
		return nil, fmt.Errorf("list due mail: %w", err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("list due mail: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list due mail: %w", err)
	}
	return ids, nil
}

// claimed is a row this process owns after claim.
type claimed struct {
	QueuedMessage
	// stopped is OutcomeSuppressed or OutcomeCancelled when the claim ended the
	// message instead, with the reason; "" when it is to be sent.
	stopped    Outcome
	reason     string
	headersErr error
}

// claim moves row id from queued to sending and reads it, in one transaction that
// also checks the suppression list and BeforeSend and may end the message suppressed
// or cancelled instead. It returns nil when another deliverer got there first.
func (o *Outbox) claim(ctx context.Context, id int64) (_ *claimed, err error) {
	tx, err := o.DB.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("claim mail %d: begin: %w", id, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	now := o.now()
	res, err := tx.ExecContext(ctx, claimSQL, now, id, now)
	if err != nil {
		return nil, fmt.Errorf("claim mail %d: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return nil, fmt.Errorf("claim mail %d: rows affected: %w", id, err)
	}
	if n != 1 {
		if err := tx.Rollback(); err != nil {
			return nil, fmt.Errorf("claim mail %d: rollback: %w", id, err)
		}
		return nil, nil
	}
	c := claimed{QueuedMessage: QueuedMessage{ID: id}}
	var headers sql.NullString
	m := &c.Message
	err = tx.QueryRowContext(ctx, readClaimedSQL, id).Scan(&c.Key, &m.Category, &m.From, &m.To, &m.Subject, &m.Text,
		&m.HTML, &headers, &m.ListUnsubscribeURL, &m.ListUnsubscribeMailto, &m.MessageID, &c.Attempts, &c.QueuedAt)
	if err != nil {
		return nil, fmt.Errorf("claim mail %d: read: %w", id, err)
	}
	c.QueuedAt = c.QueuedAt.UTC()
	if headers.Valid && headers.String != "" {
		if jerr := json.Unmarshal([]byte(headers.String), &m.Headers); jerr != nil {
			c.headersErr = fmt.Errorf("%w: stored headers: %v", ErrInvalidMessage, jerr)
		}
	}
	if addr, aerr := m.recipientAddress(); aerr == nil {
		supp, serr := o.suppressedFor(ctx, tx, addr, m.Category)
		if serr != nil {
			err = serr
			return nil, fmt.Errorf("claim mail %d: %w", id, err)
		}
		if supp != nil {
			c.stopped, c.reason = OutcomeSuppressed, supp.describe()
		}
	}
	if c.stopped == "" && o.BeforeSend != nil {
		cancel, reason, herr := o.BeforeSend(ctx, tx, c.QueuedMessage)
		if herr != nil {
			err = herr
			return nil, fmt.Errorf("claim mail %d: before send: %w", id, err)
		}
		if cancel {
			c.stopped, c.reason = OutcomeCancelled, "cancelled: "+reason
		}
	}
	switch c.stopped {
	case OutcomeSuppressed:
		_, err = tx.ExecContext(ctx, markSuppressedSQL, truncate(c.reason), id)
	case OutcomeCancelled:
		_, err = tx.ExecContext(ctx, markCancelledSQL, truncate(c.reason), id)
	}
	if err != nil {
		return nil, fmt.Errorf("claim mail %d: mark %s: %w", id, c.stopped, err)
	}
	if err = tx.Commit(); err != nil {
		return nil, fmt.Errorf("claim mail %d: commit: %w", id, err)
	}
	return &c, nil
}

// deliverOne claims, sends and records one message. It returns a nil item when the
// message was claimed by someone else.
func (o *Outbox) deliverOne(ctx context.Context, sender MessageSender, id int64) (*DeliveryItem, error) {
	c, err := o.claim(ctx, id)
	if mysql.IsRetryable(err) {
		// A deadlock or lock wait in the claim rolled it back: nothing was sent and the
		// row is still queued, so the next run (or a concurrent one) picks it up.
		zerolog.Ctx(ctx).Warn().Err(err).Int64("outbox_id", id).Msg("mail claim lost a lock conflict; left queued")
		return nil, nil
	}
	if err != nil || c == nil {
		return nil, err
	}
	log := zerolog.Ctx(ctx).With().Int64("outbox_id", id).Str("dedupe_key", c.Key).
		Str("message_id", c.Message.MessageID).Int("attempt", c.Attempts).Logger()
	it := &DeliveryItem{ID: id, Key: c.Key, To: c.Message.To, Category: c.Message.Category, Attempts: c.Attempts}
	switch c.stopped {
	case OutcomeSuppressed:
		it.Outcome, it.Reason = OutcomeSuppressed, c.reason
		log.Info().Str("reason", c.reason).Msg("mail not sent: recipient suppressed")
		return it, nil
	case OutcomeCancelled:
		it.Outcome, it.Reason = OutcomeCancelled, c.reason
		log.Info().Str("reason", c.reason).Msg("mail not sent: cancelled at claim")
		return it, nil
	}

	sendErr := c.headersErr
	if sendErr == nil {
		sendErr = sender.Send(ctx, c.Message)
	}

	// The message is sent (or not) whatever happens to ctx now: record it even if the
	// run is being cancelled, or it would look stuck.
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markTimeout)
	defer cancel()
	now := o.now()
	var q string
	var args []any
	var bounce *Suppression
	switch {
	case sendErr == nil:
		it.Outcome = OutcomeSent
		q, args = markSentSQL, []any{now, id}
	case errors.Is(sendErr, ErrRelayUnavailable):
		// Not the message's fault: give the attempt back, keep it due, stop the batch.
		it.Outcome, it.Error, it.Attempts = OutcomeRequeued, sendErr.Error(), c.Attempts-1
		q, args = markRelayDownSQL, []any{truncate(it.Error), id}
	case errors.Is(sendErr, ErrDeliveryUnknown):
		it.Outcome, it.Error = OutcomeUnknown, sendErr.Error()
		q, args = markUnknownSQL, []any{truncate(it.Error), id}
	case IsPermanent(sendErr) || c.Attempts >= o.maxAttempts():
		it.Outcome, it.Error = OutcomeFailed, sendErr.Error()
		q, args = markFailedSQL, []any{truncate(it.Error), id}
		if IsHardBounce(sendErr) {
			if addr, aerr := c.Message.recipientAddress(); aerr == nil {
				it.Bounced = true
				bounce = &Suppression{Email: addr, Kind: SuppressBounce, Reason: cut(fmt.Sprintf("outbox %d (%s): %s", id, c.Key, it.Error), maxReasonLength)}
			}
		}
	default:
		it.Outcome, it.Error = OutcomeRequeued, sendErr.Error()
		q, args = markRetrySQL, []any{now.Add(o.backoff(c.Attempts)), truncate(it.Error), id}
	}
	n, err := o.record(mctx, q, args, bounce, now)
	if err == nil && n != 1 {
		log.Warn().Str("outcome", string(it.Outcome)).Msg("mail outbox row left 'sending' meanwhile (requeued by an operator?)")
	}
	if err != nil {
		// The row stays 'sending' and will be reported stuck: never resent by itself.
		log.Error().Err(err).Str("outcome", string(it.Outcome)).Msg("mail outcome not recorded")
		return it, fmt.Errorf("record mail %d %s: %w", id, it.Outcome, err)
	}
	switch it.Outcome {
	case OutcomeSent:
		log.Info().Msg("mail sent")
	case OutcomeRequeued:
		if errors.Is(sendErr, ErrRelayUnavailable) {
			// A warning: the caller's run ends with the one error line about the relay.
			log.Warn().Str("error", it.Error).Str("dependency", "smtp").Msg("smtp relay unavailable: delivery stopped, mail stays queued")
			return it, fmt.Errorf("deliver mail: %w", sendErr)
		}
		log.Warn().Str("error", it.Error).Msg("mail send failed, will retry")
	case OutcomeFailed:
		ev := log.Error().Str("error", it.Error)
		if it.Bounced {
			ev = ev.Str("suppression", string(SuppressBounce))
		}
		ev.Msg("mail send failed for good")
	case OutcomeUnknown:
		log.Error().Str("error", it.Error).Msg("mail may or may not have been delivered; left for an operator")
	}
	return it, nil
}

// record runs the outcome's UPDATE, and with a hard bounce also suppresses the
// recipient, in one transaction: a failed message whose address was not suppressed
// would be retried by the next step of a campaign. It returns the rows the UPDATE
// changed.
func (o *Outbox) record(ctx context.Context, q string, args []any, bounce *Suppression, now time.Time) (int64, error) {
	if bounce == nil {
		res, err := o.DB.ExecContext(ctx, q, args...)
		if err != nil {
			return 0, err
		}
		return res.RowsAffected()
	}
	tx, err := o.DB.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	res, err := tx.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, suppressSQL, bounce.Email, string(bounce.Kind), bounce.Reason, now); err != nil {
		return 0, fmt.Errorf("suppress %s as a hard bounce: %w", bounce.Email, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return n, nil
}

func (o *Outbox) stuck(ctx context.Context) ([]StuckMessage, error) {
	rows, err := o.DB.QueryContext(ctx, stuckSQL, o.now().Add(-o.stuckAfter()), o.keyPattern())
	if err != nil {
		return nil, fmt.Errorf("list stuck mail: %w", err)
	}
	defer rows.Close()
	var out []StuckMessage
	for rows.Next() {
		var s StuckMessage
		var lastErr sql.NullString
		if err := rows.Scan(&s.ID, &s.Key, &s.To, &s.MessageID, &s.Attempts, &s.ClaimedAt, &lastErr); err != nil {
			return nil, fmt.Errorf("list stuck mail: %w", err)
		}
		s.ClaimedAt = s.ClaimedAt.UTC()
		s.LastError = lastErr.String
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list stuck mail: %w", err)
	}
	return out, nil
}

// Requeue puts a stuck ('sending') or failed message with KeyPrefix back in the queue,
// due now. It is for an operator who has checked that the message was not delivered
// (for a stuck one) or fixed the cause (for a failed one): requeueing a delivered
// message sends it twice. A hard bounce's suppression stays: lift it first, or the
// message ends suppressed.
func (o *Outbox) Requeue(ctx context.Context, id int64) error {
	res, err := o.DB.ExecContext(ctx, requeueSQL, o.now(), id, o.keyPattern())
	if err != nil {
		return fmt.Errorf("requeue mail %d: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("requeue mail %d: rows affected: %w", id, err)
	}
	if n != 1 {
		return fmt.Errorf("requeue mail %d: %w", id, ErrNotRequeueable)
	}
	return nil
}

// marketingTimesSQL is when each marketing message to an address went or will go:
// sent_at once sent, claimed_at while sending, next_attempt_at while queued. Failed,
// suppressed and cancelled messages reached nobody and do not count.
const marketingTimesSQL = `SELECT t FROM (
  SELECT CASE status WHEN 'sent' THEN sent_at WHEN 'sending' THEN claimed_at ELSE next_attempt_at END AS t
  FROM mail_outbox
  WHERE recipient_address = ? AND category = 'marketing' AND status IN ('queued', 'sending', 'sent')
) m WHERE t >= ? AND t < ? ORDER BY t`

// MarketingTimes lists, in order, when marketing mail to email went out or is due to
// within [from, to), inside tx (nil: on its own), whatever job queued it (KeyPrefix
// does not apply: a frequency cap is across every campaign). A campaign counts them
// per local day of the recipient to cap and defer its next step, in the transaction
// that queues it.
func (o *Outbox) MarketingTimes(ctx context.Context, tx *sql.Tx, email string, from, to time.Time) ([]time.Time, error) {
	addr, err := NormalizeAddress(email)
	if err != nil {
		return nil, fmt.Errorf("marketing times: %w", err)
	}
	rows, err := o.conn(tx).QueryContext(ctx, marketingTimesSQL, addr, from.UTC(), to.UTC())
	if err != nil {
		return nil, fmt.Errorf("marketing times of %s: %w", addr, err)
	}
	defer rows.Close()
	var out []time.Time
	for rows.Next() {
		var t time.Time
		if err := rows.Scan(&t); err != nil {
			return nil, fmt.Errorf("marketing times of %s: %w", addr, err)
		}
		out = append(out, t.UTC())
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("marketing times of %s: %w", addr, err)
	}
	return out, nil
}

// truncate keeps error text within a sane size for last_error, on a rune boundary.
func truncate(s string) string {
	if len(s) <= maxErrorLength {
		return s
	}
	cut := maxErrorLength
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
