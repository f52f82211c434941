package mail

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// SuppressionKind is why an address is on the suppression list, which decides what it
// blocks: an unsubscribe is a "no" to marketing only (the customer still gets their
// invoices and suspension notices), while a hard bounce or a complaint says the address
// must not be mailed at all: a dead mailbox or a spam report hurts the sending domain
// whatever the message.
type SuppressionKind string

// The kinds, as `cronkit drip suppress --reason` names them.
const (
	// SuppressUnsubscribe: the recipient unsubscribed (one-click, the page, or a
	// mailto request processed by ops). Blocks Marketing.
	SuppressUnsubscribe SuppressionKind = "unsubscribe"
	// SuppressBounce: a hard bounce, recorded by Deliver on a permanent rejection of
	// the recipient or by ops from the relay's bounce reports. Blocks every category.
	SuppressBounce SuppressionKind = "bounce"
	// SuppressComplaint: the recipient reported a message as spam (a feedback loop).
	// Blocks every category.
	SuppressComplaint SuppressionKind = "complaint"
)

// ParseSuppressionKind reads a --reason value.
func ParseSuppressionKind(s string) (SuppressionKind, error) {
	switch k := SuppressionKind(s); k {
	case SuppressUnsubscribe, SuppressBounce, SuppressComplaint:
		return k, nil
	}
	return "", fmt.Errorf("suppression kind %q: want %s, %s or %s", s, SuppressBounce, SuppressComplaint, SuppressUnsubscribe)
}

// Blocks reports whether a suppression of kind k keeps mail of category c from the
// address.
func (k SuppressionKind) Blocks(c Category) bool {
	switch k {
	case SuppressBounce, SuppressComplaint:
		return true
	case SuppressUnsubscribe:
		return c.orDefault() == Marketing
	}
	return true // an unknown kind (a newer binary's) blocks: never mail by mistake
}

// Suppression is one row of the suppression list. An address may have several, one
// per kind (unsubscribed, then bounced): lifting one leaves the others.
type Suppression struct {
	// Email is the normalized address (NormalizeAddress).
	Email string
	Kind  SuppressionKind
	// Reason is free text for people: "one-click unsubscribe", the relay's 550 reply,
	// "FBL report from Yahoo". At most maxReasonLength characters are kept.
	Reason    string
	CreatedAt time.Time
}

const maxReasonLength = 255

// SQL of the suppression list. Kinds are literals, values parameters.
const (
	suppressSQL = `INSERT INTO mail_suppressions (email, kind, reason, created_at) VALUES (?, ?, ?, ?)
ON DUPLICATE KEY UPDATE email = email`
	// The first suppression that blocks the category, for the report.
	suppressedMarketingSQL = `SELECT kind, reason, created_at FROM mail_suppressions
WHERE email = ? ORDER BY created_at, kind LIMIT 1`
	suppressedTransactionalSQL = `SELECT kind, reason, created_at FROM mail_suppressions
WHERE email = ? AND kind IN ('bounce', 'complaint') ORDER BY created_at, kind LIMIT 1`
	suppressionsSQL = `SELECT email, kind, reason, created_at FROM mail_suppressions
WHERE email = ? ORDER BY created_at, kind`
	listSuppressionsSQL = `SELECT email, kind, reason, created_at FROM mail_suppressions
WHERE email > ? ORDER BY email, kind LIMIT ?`
	listSuppressionsOfKindSQL = `SELECT email, kind, reason, created_at FROM mail_suppressions
WHERE email > ? AND kind = ? ORDER BY email, kind LIMIT ?`
	liftSQL        = `DELETE FROM mail_suppressions WHERE email = ? AND kind = ?`
	liftAllKindSQL = `DELETE FROM mail_suppressions WHERE email = ?`
)

// execer and queryer are what *sql.DB and *sql.Tx share, so one method serves a
// caller's transaction or none.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (o *Outbox) conn(tx *sql.Tx) execer {
	if tx != nil {
		return tx
	}
	return o.DB
}

// Suppress adds email to the suppression list with kind, inside tx (nil: on its own),
// so a caller can record an unsubscribe in the transaction that also ends the
// recipient's campaign. Queued messages the kind blocks are not sent: Deliver checks
// at claim time. Suppressing an address again with the same kind keeps the first
// reason and time (added is false); another kind adds a row. A reason longer than 255
// characters is cut.
func (o *Outbox) Suppress(ctx context.Context, tx *sql.Tx, email string, kind SuppressionKind, reason string) (added bool, err error) {
	addr, err := NormalizeAddress(email)
	if err != nil {
		return false, fmt.Errorf("suppress: %w", err)
	}
	if _, err := ParseSuppressionKind(string(kind)); err != nil {
		return false, fmt.Errorf("suppress %s: %w", addr, err)
	}
	res, err := o.conn(tx).ExecContext(ctx, suppressSQL, addr, string(kind), cut(reason, maxReasonLength), o.now())
	if err != nil {
		return false, fmt.Errorf("suppress %s (%s): %w", addr, kind, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("suppress %s (%s): rows affected: %w", addr, kind, err)
	}
	return n == 1, nil
}

// IsSuppressed reports whether mail of category c may not go to email, so a job can
// skip building a message nobody will receive (and say so in its dry run).
func (o *Outbox) IsSuppressed(ctx context.Context, email string, c Category) (bool, error) {
	addr, err := NormalizeAddress(email)
	if err != nil {
		return false, fmt.Errorf("is suppressed: %w", err)
	}
	s, err := o.suppressedFor(ctx, o.DB, addr, c)
	if err != nil {
		return false, fmt.Errorf("is suppressed %s: %w", addr, err)
	}
	return s != nil, nil
}

// suppressedFor returns the first suppression of addr (normalized) that blocks c, or
// nil.
func (o *Outbox) suppressedFor(ctx context.Context, q execer, addr string, c Category) (*Suppression, error) {
	query := suppressedTransactionalSQL
	if c.orDefault() == Marketing {
		query = suppressedMarketingSQL
	}
	s := Suppression{Email: addr}
	err := q.QueryRowContext(ctx, query, addr).Scan(&s.Kind, &s.Reason, &s.CreatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("suppression list: %w", err)
	}
	s.CreatedAt = s.CreatedAt.UTC()
	return &s, nil
}

// Suppressions lists email's suppressions, oldest first, inside tx (nil: on its own):
// a campaign reads them as facts (unsubscribed; bounced or complained: exit) in the
// transaction that queues its next step, and `cronkit drip suppress --list EMAIL` shows
// them.
func (o *Outbox) Suppressions(ctx context.Context, tx *sql.Tx, email string) ([]Suppression, error) {
	addr, err := NormalizeAddress(email)
	if err != nil {
		return nil, fmt.Errorf("suppressions: %w", err)
	}
	rows, err := o.conn(tx).QueryContext(ctx, suppressionsSQL, addr)
	if err != nil {
		return nil, fmt.Errorf("suppressions of %s: %w", addr, err)
	}
	out, err := scanSuppressions(rows)
	if err != nil {
		return nil, fmt.Errorf("suppressions of %s: %w", addr, err)
	}
	return out, nil
}

// SuppressionQuery pages through the suppression list for ops.
type SuppressionQuery struct {
	// Kind keeps one kind; empty lists all.
	Kind SuppressionKind
	// After is the Email of the last row of the previous page ("" for the first).
	After string
	// Limit is the most rows a page holds; zero means 1000, and less than 3 means 3
	// (an address has at most one row per kind, and a page holds all of an address's).
	Limit int
}

// ListSuppressions lists the suppression list in address order, a page at a time, so
// ops can list a list of any size in bounded memory. A page never splits an address's
// rows, so it may hold fewer than Limit rows before the end: the list is over at the
// first empty page.
func (o *Outbox) ListSuppressions(ctx context.Context, q SuppressionQuery) ([]Suppression, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = 1000
	}
	limit = max(limit, 3)
	var rows *sql.Rows
	var err error
	if q.Kind == "" {
		rows, err = o.DB.QueryContext(ctx, listSuppressionsSQL, q.After, limit)
	} else {
		if _, err := ParseSuppressionKind(string(q.Kind)); err != nil {
			return nil, fmt.Errorf("list suppressions: %w", err)
		}
		rows, err = o.DB.QueryContext(ctx, listSuppressionsOfKindSQL, q.After, string(q.Kind), limit)
	}
	if err != nil {
		return nil, fmt.Errorf("list suppressions: %w", err)
	}
	out, err := scanSuppressions(rows)
	if err != nil {
		return nil, fmt.Errorf("list suppressions: %w", err)
	}
	if len(out) == limit && out[0].Email != out[len(out)-1].Email {
		// The last address may have more rows on the next page: leave it all to that
		// page, which starts after the address before it.
		last := out[len(out)-1].Email
		for len(out) > 0 && out[len(out)-1].Email == last {
			out = out[:len(out)-1]
		}
	}
	return out, nil
}

func scanSuppressions(rows *sql.Rows) ([]Suppression, error) {
	defer rows.Close()
	var out []Suppression
	for rows.Next() {
		var s Suppression
		if err := rows.Scan(&s.Email, &s.Kind, &s.Reason, &s.CreatedAt); err != nil {
			return nil, err
		}
		s.CreatedAt = s.CreatedAt.UTC()
		out = append(out, s)
	}
	return out, rows.Err()
}

// Lift removes email's suppression of kind (empty: every kind) inside tx (nil: on its
// own), for an address suppressed by mistake or a customer who asked to hear from us
// again, and returns how many rows went. Messages already ended 'suppressed' stay so:
// their moment has passed, and the job decides whether to queue anew.
func (o *Outbox) Lift(ctx context.Context, tx *sql.Tx, email string, kind SuppressionKind) (int, error) {
	addr, err := NormalizeAddress(email)
	if err != nil {
		return 0, fmt.Errorf("lift suppression: %w", err)
	}
	var res sql.Result
	if kind == "" {
		res, err = o.conn(tx).ExecContext(ctx, liftAllKindSQL, addr)
	} else {
		if _, err := ParseSuppressionKind(string(kind)); err != nil {
			return 0, fmt.Errorf("lift suppression of %s: %w", addr, err)
		}
		res, err = o.conn(tx).ExecContext(ctx, liftSQL, addr, string(kind))
	}
	if err != nil {
		return 0, fmt.Errorf("lift suppression of %s: %w", addr, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("lift suppression of %s: rows affected: %w", addr, err)
	}
	return int(n), nil
}

// cut keeps at most n characters of s.
func cut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n])
}
