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

	byAddress := map[string][]*signup{}
	for _, s := range out {
		if s.address != "" {
			byAddress[s.address] = append(byAddress[s.address], s)
		}
	}
	query, fargs := j.factsQuery(ids, out, byAddress, now, o.stopOnly)
	rows, err = q.QueryContext(ctx, query, fargs...)
	if err != nil {
		return nil, fmt.Errorf("drip facts: %w", err)
	}
	if err := scanRows(rows, func(rows *sql.Rows) error { return j.scanFact(rows, out, byAddress) }); err != nil {
		return nil, fmt.Errorf("drip facts: %w", err)
	}
	for _, s := range out {
		slices.Sort(s.openCases)
		slices.Sort(s.suppressions)
	}
	return out, nil
}

// factsQuery assembles the facts' branches (all, or those Stop needs) into one
// UNION ALL, with its arguments in order.
func (j *Job) factsQuery(ids []int64, out map[int64]*signup, byAddress map[string][]*signup, now time.Time, stopOnly bool) (string, []any) {
	accounts := idArgs(ids)
	addresses := make([]any, 0, len(byAddress))
	for a := range byAddress {
		addresses = append(addresses, a)
	}
	var keys []any
	var branches []string
	var args []any
	add := func(branch string, a ...any) {
		branches = append(branches, branch)
		args = append(args, a...)
	}
	add(factPaid, accounts...)
	add(factEnforcement, accounts...)
	add(factCase, append([]any{j.Funnel.MachineName()}, accounts...)...)
	if len(addresses) > 0 {
		add(factSuppression, addresses...)
	}
	if !stopOnly {
		add(factTrial, append([]any{now, now}, accounts...)...)
		for _, id := range ids {
			if out[id] == nil {
				continue
			}
			for _, st := range j.Funnel.Steps {
				keys = append(keys, j.Funnel.messageKey(id, st.Name))
			}
		}
		add(factMessage, keys...)
		if len(addresses) > 0 {
			add(factMarketing, append(append([]any(nil), addresses...), now.Add(-marketingLookback))...)
		}
	}
	r := strings.NewReplacer("{accounts}", inList(len(accounts)), "{addresses}", inList(len(addresses)), "{keys}", inList(len(keys)))
	return r.Replace(strings.Join(branches, "\nUNION ALL\n")), args
}

// scanFact reads one row of the facts query into its account.
func (j *Job) scanFact(rows *sql.Rows, out map[int64]*signup, byAddress map[string][]*signup) error {
	var kind string
	var account, n1, n2 sql.NullInt64
	var s1, s2 sql.NullString
	var t1, t2, t3 sql.NullTime
	if err := rows.Scan(&kind, &account, &s1, &s2, &t1, &t2, &t3, &n1, &n2); err != nil {
		return err
	}
	s := out[account.Int64]
	switch kind {
	case "paid":
		if s != nil {
			s.paidInvoice = true
		}
	case "enforcement":
		if s != nil {
			s.openCases = append(s.openCases, s1.String)
		}
	case "case":
		if s == nil || (s.c != nil && s.c.ID > n1.Int64) {
			return nil // the latest case decides
		}
		c := &Case{ID: n1.Int64, AccountID: account.Int64, Machine: j.Funnel.MachineName(), State: s1.String,
			Version: int(n2.Int64), OpenedAt: t1.Time.UTC(), StateSince: t2.Time.UTC()}
		if t3.Valid {
			closed := t3.Time.UTC()
			c.ClosedAt = &closed
		}
		s.c = c
	case "suppression":
		for _, s := range byAddress[s1.String] {
			s.suppressions = append(s.suppressions, s2.String)
		}
	case "trial":
		if s == nil {
			return nil
		}
		if t1.Valid && t1.Time.After(s.trialExpires) {
			s.trialExpires = t1.Time.UTC()
		}
		if text, ok := creditText(s2.String, s1.String); ok {
			s.trialLeft = append(s.trialLeft, text)
			slices.Sort(s.trialLeft)
		}
	case "message":
		id, step, ok := j.Funnel.parseKey(s1.String)
		s := out[id]
		if !ok || s == nil {
			return nil
		}
		switch s2.String {
		case "queued", "sending":
			s.pending, s.pendingAt = step, t1.Time.UTC()
		case "sent":
			if t2.Valid && t2.Time.After(s.lastSent) {
				s.lastSent = t2.Time.UTC()
			}
		}
	case "marketing":
		for _, s := range byAddress[s1.String] {
			s.marketing = append(s.marketing, t1.Time.UTC())
		}
	default:
		return fmt.Errorf("unknown fact %q", kind)
	}
	return nil
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
