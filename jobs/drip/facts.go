package drip

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cronkit/cronkit/lib/cases"
	"github.com/cronkit/cronkit/lib/mail"
)

// querier is what *sql.DB and *sql.Tx share: facts are read the same way for the
// plan (the pool, read-only in a dry run) and right before acting (the transaction).
type querier = cases.Querier

// signup is one account as the funnel sees it: the account, its facts, its latest
// case and its funnel messages. Read in bulk for a chunk of candidates, and again for
// one account inside the transaction that moves it.
type signup struct {
	id        int64
	email     string // as in accounts.email
	address   string // normalized (lib/mail), "" when the address is unusable
	name      string
	timeZone  string
	status    string
	createdAt time.Time
	csAccount string

	pmVerified   bool
	paidInvoice  bool
	trialExpires time.Time
	trialLeft    []string // "EUR 42.00" per currency with credit left
	openCases    []string
	suppressions []string // kinds, sorted

	// c is the latest case of the funnel's machine, open or closed (nil: none).
	c *Case
	// Funnel messages: the step in flight (queued or sending) and when it may go,
	// and when the latest was delivered.
	pending   string
	pendingAt time.Time
	lastSent  time.Time
	// marketing are the recipient's marketing send times from 48 hours ago on.
	marketing []time.Time

	// hasVM comes from the orchestrator (or usage); vmRead says it was read.
	hasVM  bool
	vmRead bool
	vmErr  error
}

// facts are the decision's facts.
func (s *signup) facts() Facts {
	f := Facts{
		HasVM:                 s.hasVM,
		PaymentMethodVerified: s.pmVerified,
		PaidInvoice:           s.paidInvoice,
		TrialCreditLeft:       len(s.trialLeft) > 0,
		AccountStatus:         s.status,
		OpenCases:             s.openCases,
	}
	// One suppression names the exit: a complaint, then a bounce, then an unsubscribe.
	for _, k := range []string{SuppressedComplaint, SuppressedBounce, SuppressedUnsubscribe} {
		if slices.Contains(s.suppressions, k) {
			f.Suppression = k
			break
		}
	}
	f.Unsubscribed = slices.Contains(s.suppressions, SuppressedUnsubscribe)
	if s.address == "" && f.Suppression == "" {
		// An address no relay can take is a bounce waiting to happen.
		f.Suppression = SuppressedBounce
	}
	return f
}

// input is the decision's input.
func (s *signup) input() Input {
	return Input{Case: s.c, Facts: s.facts(), SignupAt: s.createdAt, TrialExpiresAt: s.trialExpires,
		TimeZone: s.timeZone, LastSentAt: s.lastSent, Pending: s.pending, Marketing: s.marketing}
}

// messageKey is a funnel message's outbox key, one per (funnel, account, step):
// "drip:onboarding:42:first_vm". It never holds the run id, so a rerun or a second
// run finds the step already queued.
func (f *Funnel) messageKey(account int64, step string) string {
	return f.keyPrefix() + strconv.FormatInt(account, 10) + ":" + step
}

// keyPrefix scopes the outbox to this funnel's messages: its delivery sends them and
// never another job's (or funnel's), whose claim-time check it does not have.
func (f *Funnel) keyPrefix() string { return "drip:" + f.Name + ":" }

// parseKey reads the account and step of one of this funnel's keys.
func (f *Funnel) parseKey(key string) (int64, string, bool) {
	rest, ok := strings.CutPrefix(key, f.keyPrefix())
	if !ok {
		return 0, "", false
	}
	acct, step, ok := strings.Cut(rest, ":")
	id, err := strconv.ParseInt(acct, 10, 64)
	if !ok || err != nil || id <= 0 {
		return 0, "", false
	}
	return id, step, true
}

// inList returns "?, ?, ?" for n values (n >= 1).
func inList(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

func idArgs(ids []int64) []any {
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	return args
}

// marketingLookback is how far back the daily cap looks: a local day can start 26
// hours before a UTC instant (UTC+14), so two days cover it.
const marketingLookback = 48 * time.Hour

// loadOptions say what loadSignups reads beyond the account.
type loadOptions struct {
	// stopOnly reads only what Funnel.Stop needs (the claim-time check).
	stopOnly bool
	// lock takes a shared lock on the account row (one account only).
	lock bool
}

// loadSignups reads the facts of accounts in a fixed number of queries, whatever the
// number of accounts (keep it to a chunk). Accounts that do not exist are missing.
func (j *Job) loadSignups(ctx context.Context, q querier, ids []int64, now time.Time, o loadOptions) (map[int64]*signup, error) {
	out := map[int64]*signup{}
	if len(ids) == 0 {
		return out, nil
	}
	in, args := inList(len(ids)), idArgs(ids)
	query, qargs := fmt.Sprintf(queryAccounts, in), args
	if o.lock {
		if len(ids) != 1 {
			return nil, fmt.Errorf("drip facts: a locked read is for one account, got %d", len(ids))
		}
		query = queryAccountShared
	}
	rows, err := q.QueryContext(ctx, query, qargs...)
	if err != nil {
		return nil, fmt.Errorf("drip facts: accounts: %w", err)
	}
	err = scanRows(rows, func(rows *sql.Rows) error {
		s := &signup{}
		if err := rows.Scan(&s.id, &s.email, &s.name, &s.timeZone, &s.status, &s.createdAt, &s.pmVerified, &s.csAccount); err != nil {
			return err
		}
		s.createdAt = s.createdAt.UTC()
		s.address, _ = mail.NormalizeAddress(s.email)
		out[s.id] = s
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("drip facts: accounts: %w", err)
	}
	if len(out) == 0 {
		return out, nil
	}

	rows, err = q.QueryContext(ctx, fmt.Sprintf(queryPaidInvoice, in), args...)
	if err != nil {
		return nil, fmt.Errorf("drip facts: paid invoices: %w", err)
	}
	if err := scanRows(rows, func(rows *sql.Rows) error {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return err
		}
		if s := out[id]; s != nil {
			s.paidInvoice = true
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("drip facts: paid invoices: %w", err)
	}

	rows, err = q.QueryContext(ctx, fmt.Sprintf(queryOpenEnforcement, in), args...)
	if err != nil {
		return nil, fmt.Errorf("drip facts: open cases: %w", err)
	}
	if err := scanRows(rows, func(rows *sql.Rows) error {
		var id int64
		var machine string
		if err := rows.Scan(&id, &machine); err != nil {
			return err
		}
		if s := out[id]; s != nil {
			s.openCases = append(s.openCases, machine)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("drip facts: open cases: %w", err)
	}

	rows, err = q.QueryContext(ctx, fmt.Sprintf(queryFunnelCases, in), append([]any{j.Funnel.MachineName()}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("drip facts: funnel cases: %w", err)
	}
	if err := scanRows(rows, func(rows *sql.Rows) error {
		c := &Case{Machine: j.Funnel.MachineName()}
		var closed sql.NullTime
		if err := rows.Scan(&c.ID, &c.AccountID, &c.State, &c.Version, &c.OpenedAt, &c.StateSince, &closed); err != nil {
			return err
		}
		c.OpenedAt, c.StateSince = c.OpenedAt.UTC(), c.StateSince.UTC()
		if closed.Valid {
			t := closed.Time.UTC()
			c.ClosedAt = &t
		}
		if s := out[c.AccountID]; s != nil {
			s.c = c // ordered by id: the latest wins
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("drip facts: funnel cases: %w", err)
	}

	byAddress := map[string][]*signup{}
	for _, s := range out {
		if s.address != "" {
			byAddress[s.address] = append(byAddress[s.address], s)
		}
	}
	addresses := make([]any, 0, len(byAddress))
	for a := range byAddress {
		addresses = append(addresses, a)
	}
	if len(addresses) > 0 {
		rows, err = q.QueryContext(ctx, fmt.Sprintf(querySuppressions, inList(len(addresses))), addresses...)
		if err != nil {
			return nil, fmt.Errorf("drip facts: suppressions: %w", err)
		}
		if err := scanRows(rows, func(rows *sql.Rows) error {
			var email, kind string
			if err := rows.Scan(&email, &kind); err != nil {
				return err
			}
			for _, s := range byAddress[email] {
				s.suppressions = append(s.suppressions, kind)
			}
			return nil
		}); err != nil {
			return nil, fmt.Errorf("drip facts: suppressions: %w", err)
		}
	}
	if o.stopOnly {
		return out, nil
	}

	rows, err = q.QueryContext(ctx, fmt.Sprintf(queryTrialCredit, in), append([]any{now, now}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("drip facts: trial credit: %w", err)
	}
	if err := scanRows(rows, func(rows *sql.Rows) error {
		var id int64
		var currency, left string
		var expires sql.NullTime
		if err := rows.Scan(&id, &currency, &expires, &left); err != nil {
			return err
		}
		s := out[id]
		if s == nil {
			return nil
		}
		if expires.Valid && expires.Time.After(s.trialExpires) {
			s.trialExpires = expires.Time.UTC()
		}
		if text, ok := creditText(left, currency); ok {
			s.trialLeft = append(s.trialLeft, text)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("drip facts: trial credit: %w", err)
	}

	keys := make([]any, 0, len(out)*len(j.Funnel.Steps))
	for _, id := range ids {
		if out[id] == nil {
			continue
		}
		for _, st := range j.Funnel.Steps {
			keys = append(keys, j.Funnel.messageKey(id, st.Name))
		}
	}
	rows, err = q.QueryContext(ctx, fmt.Sprintf(queryFunnelMessages, inList(len(keys))), keys...)
	if err != nil {
		return nil, fmt.Errorf("drip facts: funnel messages: %w", err)
	}
	if err := scanRows(rows, func(rows *sql.Rows) error {
		var key, status string
		var next time.Time
		var sent sql.NullTime
		if err := rows.Scan(&key, &status, &next, &sent); err != nil {
			return err
		}
		id, step, ok := j.Funnel.parseKey(key)
		s := out[id]
		if !ok || s == nil {
			return nil
		}
		switch status {
		case "queued", "sending":
			s.pending, s.pendingAt = step, next.UTC()
		case "sent":
			if sent.Valid && sent.Time.After(s.lastSent) {
				s.lastSent = sent.Time.UTC()
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("drip facts: funnel messages: %w", err)
	}

	if len(addresses) > 0 {
		rows, err = q.QueryContext(ctx, fmt.Sprintf(queryMarketingTimes, inList(len(addresses))),
			append(addresses, now.Add(-marketingLookback))...)
		if err != nil {
			return nil, fmt.Errorf("drip facts: marketing mail: %w", err)
		}
		if err := scanRows(rows, func(rows *sql.Rows) error {
			var addr string
			var t time.Time
			if err := rows.Scan(&addr, &t); err != nil {
				return err
			}
			for _, s := range byAddress[addr] {
				s.marketing = append(s.marketing, t.UTC())
			}
			return nil
		}); err != nil {
			return nil, fmt.Errorf("drip facts: marketing mail: %w", err)
		}
	}
	return out, nil
}

// scanRows calls fn on each row and closes rows.
func scanRows(rows *sql.Rows, fn func(*sql.Rows) error) error {
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// creditText writes what is left of a credit for people, "EUR 42.50": the DECIMAL as
// the database computed it, cut (never rounded up) to two decimals. ok is false when
// nothing is left.
func creditText(decimal, currency string) (string, bool) {
	d := strings.TrimSpace(decimal)
	if d == "" || strings.HasPrefix(d, "-") {
		return "", false
	}
	whole, frac, _ := strings.Cut(d, ".")
	frac = (frac + "00")[:2]
	if strings.Trim(whole, "0") == "" && strings.Trim(frac, "0") == "" && strings.Trim(strings.TrimPrefix(d, whole+"."), "0") == "" {
		return "", false
	}
	if whole == "" {
		whole = "0"
	}
	return currency + " " + whole + "." + frac, true
}
