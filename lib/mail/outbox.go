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
// (a too-long subject fails instead of being truncated).
const enqueueSQL = `INSERT INTO mail_outbox
  (dedupe_key, sender, recipient, subject, body_text, body_html, headers,
   list_unsubscribe_url, list_unsubscribe_mailto, message_id,
   status, attempts, next_attempt_at, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?)
ON DUPLICATE KEY UPDATE id = id`

// Enqueue queues msg under key (for example "dunning:case:42:reminded") inside tx, so
// the message commits or rolls back with the state change that caused it. A key that
// is already queued, sent or failed is left alone and queued is false. With a nil tx
// the message is written on its own.
//
// A message without MessageID gets a random one now (on From's domain), stored with
// the row so ops can find it in the relay's logs.
func (o *Outbox) Enqueue(ctx context.Context, tx *sql.Tx, key string, msg Message) (queued bool, err error) {
	if key == "" || utf8.RuneCountInString(key) > maxKeyLength {
		return false, fmt.Errorf("enqueue mail %q: key must be 1 to %d characters", key, maxKeyLength)
	}
	if err := msg.Validate(); err != nil {
		return false, fmt.Errorf("enqueue mail %s: %w", key, err)
	}
	if msg.MessageID == "" && msg.From != "" {
		if msg.MessageID, err = newMessageID(msg.From); err != nil {
			return false, fmt.Errorf("enqueue mail %s: %w", key, err)
		}
	}
	var headers sql.NullString
	if len(msg.Headers) > 0 {
		b, err := json.Marshal(msg.Headers) // keys sorted by encoding/json
		if err != nil {
			return false, fmt.Errorf("enqueue mail %s: headers: %w", key, err)
		}
		headers = sql.NullString{String: string(b), Valid: true}
	}
	var exec interface {
		ExecContext(context.Context, string, ...any) (sql.Result, error)
	} = o.DB
	if tx != nil {
		exec = tx
	}
	now := o.now()
	res, err := exec.ExecContext(ctx, enqueueSQL, key, msg.From, msg.To, msg.Subject, msg.Text, msg.HTML,
		headers, msg.ListUnsubscribeURL, msg.ListUnsubscribeMailto, msg.MessageID, now, now)
	if err != nil {
		return false, fmt.Errorf("enqueue mail %s: %w", key, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("enqueue mail %s: rows affected: %w", key, err)
	}
	return n == 1, nil
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
	// OutcomeFailed: rejected for good (5xx, invalid) or out of attempts.
	OutcomeFailed Outcome = "failed"
	// OutcomeSuppressed: the recipient is on the suppression list; nothing was sent.
	OutcomeSuppressed Outcome = "suppressed"
	// OutcomeUnknown: the connection broke after the message was handed over; it may
	// have been delivered, so it stays in 'sending' for an operator.
	OutcomeUnknown Outcome = "unknown"
)

// DeliveryItem is one message Deliver handled.
type DeliveryItem struct {
	ID       int64
	Key      string
	To       string
	Outcome  Outcome
	Attempts int
	Error    string
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
	Unknown    int
	Items      []DeliveryItem
	Stuck      []StuckMessage
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
	case OutcomeUnknown:
		r.Unknown++
	}
	r.Items = append(r.Items, it)
}

// Deliver sends up to limit due messages (limit <= 0 means DefaultDeliverLimit),
// oldest first. Each message is claimed in its own short transaction (queued ->
// sending) before it is sent, so concurrent Delivers never send one message twice,
// then marked sent, requeued with a backoff, failed, or suppressed. Item-level
// failures are in the report; the error is for what stops the run (database down,
// SMTP relay unavailable, context cancelled), and the report holds what was done until
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
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return rep, fmt.Errorf("deliver mail: %w", err)
		}
		it, err := o.deliverOne(ctx, sender, id)
		if it != nil {
			rep.add(*it)
		}
		if err != nil {
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

func (o *Outbox) dueIDs(ctx context.Context, limit int) ([]int64, error) {
	rows, err := o.DB.QueryContext(ctx,
		`SELECT id FROM mail_outbox WHERE status = 'queued' AND next_attempt_at <= ? ORDER BY id LIMIT ?`,
		o.now(), limit)
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

// Every UPDATE of one row says FORCE INDEX (PRIMARY). Its WHERE also names status and
// next_attempt_at, so on a table with fresh statistics the optimizer may scan the
// (status, next_attempt_at) index instead, taking next-key locks on every due row:
// two concurrent deliverers then deadlock (seen on MariaDB 10.11 in
// TestOutboxDBConcurrentDeliverSendsEachOnce). Through the primary key, a claim locks
// exactly its row.

// claimed is a row this process owns after claim.
type claimed struct {
	key        string
	msg        Message
	attempts   int
	suppressed bool
	headersErr error
}

// claim moves row id from queued to sending and reads it, or marks it suppressed, in
// one transaction. It returns nil when another deliverer got there first.
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
	res, err := tx.ExecContext(ctx,
		`UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'sending', attempts = attempts + 1, claimed_at = ?
WHERE id = ? AND status = 'queued' AND next_attempt_at <= ?`, now, id, now)
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
	var c claimed
	var headers sql.NullString
	err = tx.QueryRowContext(ctx, `SELECT dedupe_key, sender, recipient, subject, body_text, body_html, headers,
  list_unsubscribe_url, list_unsubscribe_mailto, message_id, attempts
FROM mail_outbox WHERE id = ?`, id).Scan(&c.key, &c.msg.From, &c.msg.To, &c.msg.Subject, &c.msg.Text,
		&c.msg.HTML, &headers, &c.msg.ListUnsubscribeURL, &c.msg.ListUnsubscribeMailto, &c.msg.MessageID, &c.attempts)
	if err != nil {
		return nil, fmt.Errorf("claim mail %d: read: %w", id, err)
	}
	if headers.Valid && headers.String != "" {
		if jerr := json.Unmarshal([]byte(headers.String), &c.msg.Headers); jerr != nil {
			c.headersErr = fmt.Errorf("%w: stored headers: %v", ErrInvalidMessage, jerr)
		}
	}
	if addr, aerr := c.msg.recipientAddress(); aerr == nil {
		var reason string
		serr := tx.QueryRowContext(ctx, `SELECT reason FROM mail_suppressions WHERE email = ?`, addr).Scan(&reason)
		switch {
		case serr == nil:
			c.suppressed = true
			if _, err = tx.ExecContext(ctx,
				`UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'suppressed', last_error = ? WHERE id = ?`,
				truncate("suppressed: "+reason), id); err != nil {
				return nil, fmt.Errorf("claim mail %d: mark suppressed: %w", id, err)
			}
		case errors.Is(serr, sql.ErrNoRows):
		default:
			err = serr
			return nil, fmt.Errorf("claim mail %d: suppression list: %w", id, err)
		}
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
	log := zerolog.Ctx(ctx).With().Int64("outbox_id", id).Str("dedupe_key", c.key).
		Str("message_id", c.msg.MessageID).Int("attempt", c.attempts).Logger()
	it := &DeliveryItem{ID: id, Key: c.key, To: c.msg.To, Attempts: c.attempts}
	if c.suppressed {
		it.Outcome = OutcomeSuppressed
		log.Info().Msg("mail not sent: recipient suppressed")
		return it, nil
	}

	sendErr := c.headersErr
	if sendErr == nil {
		sendErr = sender.Send(ctx, c.msg)
	}

	// The message is sent (or not) whatever happens to ctx now: record it even if the
	// run is being cancelled, or it would look stuck.
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markTimeout)
	defer cancel()
	now := o.now()
	var q string
	var args []any
	switch {
	case sendErr == nil:
		it.Outcome = OutcomeSent
		q, args = `UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'sent', sent_at = ?, last_error = NULL WHERE id = ? AND status = 'sending'`,
			[]any{now, id}
	case errors.Is(sendErr, ErrRelayUnavailable):
		// Not the message's fault: give the attempt back, keep it due, stop the batch.
		it.Outcome, it.Error, it.Attempts = OutcomeRequeued, sendErr.Error(), c.attempts-1
		q, args = `UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'queued', attempts = attempts - 1, last_error = ? WHERE id = ? AND status = 'sending'`,
			[]any{truncate(it.Error), id}
	case errors.Is(sendErr, ErrDeliveryUnknown):
		it.Outcome, it.Error = OutcomeUnknown, sendErr.Error()
		q, args = `UPDATE mail_outbox FORCE INDEX (PRIMARY) SET last_error = ? WHERE id = ? AND status = 'sending'`,
			[]any{truncate(it.Error), id}
	case IsPermanent(sendErr) || c.attempts >= o.maxAttempts():
		it.Outcome, it.Error = OutcomeFailed, sendErr.Error()
		q, args = `UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'failed', last_error = ? WHERE id = ? AND status = 'sending'`,
			[]any{truncate(it.Error), id}
	default:
		it.Outcome, it.Error = OutcomeRequeued, sendErr.Error()
		q, args = `UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'queued', next_attempt_at = ?, last_error = ? WHERE id = ? AND status = 'sending'`,
			[]any{now.Add(o.backoff(c.attempts)), truncate(it.Error), id}
	}
	res, err := o.DB.ExecContext(mctx, q, args...)
	if err == nil {
		var n int64
		if n, err = res.RowsAffected(); err == nil && n != 1 {
			log.Warn().Str("outcome", string(it.Outcome)).Msg("mail outbox row left 'sending' meanwhile (requeued by an operator?)")
		}
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
			log.Error().Str("error", it.Error).Msg("smtp relay unavailable: delivery stopped, mail stays queued")
			return it, fmt.Errorf("deliver mail: %w", sendErr)
		}
		log.Warn().Str("error", it.Error).Msg("mail send failed, will retry")
	case OutcomeFailed:
		log.Error().Str("error", it.Error).Msg("mail send failed for good")
	case OutcomeUnknown:
		log.Error().Str("error", it.Error).Msg("mail may or may not have been delivered; left for an operator")
	}
	return it, nil
}

func (o *Outbox) stuck(ctx context.Context) ([]StuckMessage, error) {
	rows, err := o.DB.QueryContext(ctx, `SELECT id, dedupe_key, recipient, message_id, attempts, claimed_at, last_error
FROM mail_outbox WHERE status = 'sending' AND claimed_at <= ? ORDER BY id LIMIT 1000`,
		o.now().Add(-o.stuckAfter()))
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

// Requeue puts a stuck ('sending') or failed message back in the queue, due now. It is
// for an operator who has checked that the message was not delivered (for a stuck
// one) or fixed the cause (for a failed one): requeueing a delivered message sends it
// twice.
func (o *Outbox) Requeue(ctx context.Context, id int64) error {
	res, err := o.DB.ExecContext(ctx, `UPDATE mail_outbox FORCE INDEX (PRIMARY) SET status = 'queued', next_attempt_at = ?, claimed_at = NULL
WHERE id = ? AND status IN ('sending', 'failed')`, o.now(), id)
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

// Suppress adds email to the suppression list (unsubscribed, hard bounce, complaint).
// Queued messages to it are not sent. Suppressing an address twice keeps the first
// reason and time.
func (o *Outbox) Suppress(ctx context.Context, email, reason string) error {
	addr, err := Message{To: email}.recipientAddress()
	if err != nil {
		return fmt.Errorf("suppress: %w", err)
	}
	if _, err := o.DB.ExecContext(ctx, `INSERT INTO mail_suppressions (email, reason, created_at) VALUES (?, ?, ?)
ON DUPLICATE KEY UPDATE email = email`, addr, reason, o.now()); err != nil {
		return fmt.Errorf("suppress %s: %w", addr, err)
	}
	return nil
}

// IsSuppressed reports whether email is on the suppression list, so a job can skip
// building a message nobody will receive (and say so in its dry run).
func (o *Outbox) IsSuppressed(ctx context.Context, email string) (bool, error) {
	addr, err := Message{To: email}.recipientAddress()
	if err != nil {
		return false, fmt.Errorf("is suppressed: %w", err)
	}
	var n int
	if err := o.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM mail_suppressions WHERE email = ?`, addr).Scan(&n); err != nil {
		return false, fmt.Errorf("is suppressed %s: %w", addr, err)
	}
	return n > 0, nil
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
