package abuse

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cronkit/cronkit/lib/cases"
)

// querier is what both *sql.DB and *sql.Tx offer: facts are read the same way in a
// plan (the pool, read-only in a dry run) and right before acting (the transaction).
type querier = cases.Querier

// inList returns "?, ?, ?" for n values and the ids as arguments.
func inList(ids []int64) (string, []any) {
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	return strings.TrimSuffix(strings.Repeat("?, ", len(ids)), ", "), args
}

// candidateSlack widens the SQL cut-off for candidates: a calendar day in a zone with
// DST can be 23 hours, so an invoice can reach its day count an hour early in UTC.
// The decision, counting in the account's zone, is exact; SQL only must not miss one.
const candidateSlack = 2 * time.Hour

// dunningCandidates returns the accounts to evaluate for late payment: unpaid
// invoices due before the first threshold, or an open case. Both halves are index
// ranges (invoices_status_due, cases_one_open): nothing is scanned in Go.
func dunningCandidates(ctx context.Context, q querier, now time.Time, p DunningPolicy, account int64) ([]int64, error) {
	cutoff := now.Add(-time.Duration(p.Reminder.AfterDays)*24*time.Hour + candidateSlack)
	query := `SELECT account_id FROM invoices
WHERE status = 'open' AND due_at <= ? AND total_minor > amount_paid_minor` + accountFilter("account_id", account) + `
UNION
SELECT account_id FROM cases WHERE machine = ? AND open_account_id IS NOT NULL` + accountFilter("account_id", account) + `
ORDER BY 1`
	args := []any{cutoff, Dunning}
	if account != 0 {
		args = []any{cutoff, account, Dunning, account}
	}
	return queryIDs(ctx, q, "dunning candidates", query, args...)
}

// freeCreditCandidates returns the accounts to evaluate for free-credit abuse: recent
// signups, active, with unexpired credit, no verified payment method and no
// free-credit case ever (a person cleared it, or it is open: the open ones come from
// the second half). accounts_created bounds the first half to the signup window.
func freeCreditCandidates(ctx context.Context, q querier, now time.Time, p FreeCreditPolicy, account int64) ([]int64, error) {
	query := `SELECT a.id FROM accounts a
WHERE a.created_at >= ? AND a.created_at <= ? AND a.payment_method_verified = 0 AND a.status = 'active'` + accountFilter("a.id", account) + `
  AND EXISTS (SELECT 1 FROM credits c WHERE c.account_id = a.id AND c.granted_at <= ? AND (c.expires_at IS NULL OR c.expires_at > ?))
  AND NOT EXISTS (SELECT 1 FROM cases k WHERE k.account_id = a.id AND k.machine = ?)
UNION
SELECT account_id FROM cases WHERE machine = ? AND open_account_id IS NOT NULL` + accountFilter("account_id", account) + `
ORDER BY 1`
	args := []any{now.Add(-p.SignupWindow.Duration), now}
	if account != 0 {
		args = append(args, account)
	}
	args = append(args, now, now, FreeCredit, FreeCredit)
	if account != 0 {
		args = append(args, account)
	}
	return queryIDs(ctx, q, "free-credit candidates", query, args...)
}

// accountFilter is the --account restriction: a fixed fragment, never a value.
func accountFilter(column string, account int64) string {
	if account == 0 {
		return ""
	}
	return " AND " + column + " = ?"
}

func queryIDs(ctx context.Context, q querier, what, query string, args ...any) ([]int64, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return ids, nil
}

// tagsOf returns the accounts' tags, by account, sorted.
func tagsOf(ctx context.Context, q querier, accounts []int64) (map[int64][]string, error) {
	out := map[int64][]string{}
	if len(accounts) == 0 {
		return out, nil
	}
	in, args := inList(accounts)
	rows, err := q.QueryContext(ctx, `SELECT account_id, tag FROM account_tags WHERE account_id IN (`+in+`) ORDER BY account_id, tag`, args...)
	if err != nil {
		return nil, fmt.Errorf("account tags: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var tag string
		if err := rows.Scan(&id, &tag); err != nil {
			return nil, fmt.Errorf("account tags: %w", err)
		}
		out[id] = append(out[id], tag)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("account tags: %w", err)
	}
	return out, nil
}

// dunningFacts reads the dunning facts of accounts. Accounts that do not exist are
// missing from the result.
func dunningFacts(ctx context.Context, q querier, accounts []int64) (map[int64]*DunningFacts, error) {
	out := map[int64]*DunningFacts{}
	if len(accounts) == 0 {
		return out, nil
	}
	in, args := inList(accounts)
	rows, err := q.QueryContext(ctx, `SELECT id, email, name, time_zone, status, COALESCE(cloudstack_account_id, '')
FROM accounts WHERE id IN (`+in+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("dunning facts: accounts: %w", err)
	}
	for rows.Next() {
		f := &DunningFacts{}
		if err := rows.Scan(&f.AccountID, &f.Email, &f.Name, &f.TimeZone, &f.AccountStatus, &f.CloudStackAccountID); err != nil {
			rows.Close()
			return nil, fmt.Errorf("dunning facts: accounts: %w", err)
		}
		out[f.AccountID] = f
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("dunning facts: accounts: %w", err)
	}
	// Retrying: a card retry is scheduled, or an attempt's outcome is not known yet
	// (a pending payment: the answer was lost, billing or reconcile settles it). The
	// customer may have paid.
	rows, err = q.QueryContext(ctx, `SELECT account_id, id, currency, total_minor, amount_paid_minor, due_at,
  collection = 'retrying' OR EXISTS (SELECT 1 FROM payments p WHERE p.invoice_id = invoices.id AND p.status = 'pending')
FROM invoices WHERE account_id IN (`+in+`) AND status = 'open' AND total_minor > amount_paid_minor AND due_at IS NOT NULL
ORDER BY account_id, due_at, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("dunning facts: invoices: %w", err)
	}
	for rows.Next() {
		var acct int64
		var inv UnpaidInvoice
		if err := rows.Scan(&acct, &inv.ID, &inv.Currency, &inv.TotalMinor, &inv.PaidMinor, &inv.DueAt, &inv.Retrying); err != nil {
			rows.Close()
			return nil, fmt.Errorf("dunning facts: invoices: %w", err)
		}
		inv.DueAt = inv.DueAt.UTC()
		if f := out[acct]; f != nil {
			f.Unpaid = append(f.Unpaid, inv)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("dunning facts: invoices: %w", err)
	}
	tags, err := tagsOf(ctx, q, accounts)
	if err != nil {
		return nil, err
	}
	for id, f := range out {
		f.Tags = tags[id]
	}
	return out, nil
}

// freeCreditFacts reads the database half of the free-credit facts (the orchestrator
// half is added by the caller): the account, its tags, credit, CPU samples since
// samplesFrom and the other signups from its IP.
func freeCreditFacts(ctx context.Context, q querier, accounts []int64, now time.Time, p FreeCreditPolicy) (map[int64]*FreeCreditFacts, error) {
	out := map[int64]*FreeCreditFacts{}
	if len(accounts) == 0 {
		return out, nil
	}
	in, args := inList(accounts)
	rows, err := q.QueryContext(ctx, `SELECT a.id, a.email, a.name, a.created_at, COALESCE(a.signup_ip, ''), a.payment_method_verified,
  COALESCE(a.cloudstack_account_id, ''),
  EXISTS (SELECT 1 FROM credits c WHERE c.account_id = a.id AND c.granted_at <= ? AND (c.expires_at IS NULL OR c.expires_at > ?))
FROM accounts a WHERE a.id IN (`+in+`)`, append([]any{now, now}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("free-credit facts: accounts: %w", err)
	}
	for rows.Next() {
		f := &FreeCreditFacts{}
		if err := rows.Scan(&f.AccountID, &f.Email, &f.Name, &f.CreatedAt, &f.SignupIP, &f.PaymentMethodVerified,
			&f.CloudStackAccountID, &f.HasFreeCredit); err != nil {
			rows.Close()
			return nil, fmt.Errorf("free-credit facts: accounts: %w", err)
		}
		f.CreatedAt = f.CreatedAt.UTC()
		out[f.AccountID] = f
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("free-credit facts: accounts: %w", err)
	}
	tags, err := tagsOf(ctx, q, accounts)
	if err != nil {
		return nil, err
	}
	for id, f := range out {
		f.Tags = tags[id]
	}

	// Only the samples that can belong to a streak reaching back `sustained`.
	from := now.Add(-p.CPU.Sustained.Duration - p.CPU.MaxGap.Duration)
	rows, err = q.QueryContext(ctx, `SELECT account_id, sampled_at, vms_running, vms_hot, avg_cpu FROM abuse_cpu_samples
WHERE account_id IN (`+in+`) AND sampled_at >= ? AND sampled_at <= ? ORDER BY account_id, sampled_at`,
		append(args, from, now)...)
	if err != nil {
		return nil, fmt.Errorf("free-credit facts: cpu samples: %w", err)
	}
	for rows.Next() {
		var acct int64
		var s CPUSample
		if err := rows.Scan(&acct, &s.At, &s.Running, &s.Hot, &s.AvgCPU); err != nil {
			rows.Close()
			return nil, fmt.Errorf("free-credit facts: cpu samples: %w", err)
		}
		s.At = s.At.UTC()
		if f := out[acct]; f != nil {
			f.CPUSamples = append(f.CPUSamples, s)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("free-credit facts: cpu samples: %w", err)
	}

	// Signups from the same IP around each account's own signup (accounts_signup_ip).
	within := int64(p.IPVelocity.Within.Duration / time.Second)
	rows, err = q.QueryContext(ctx, `SELECT a.id, COUNT(*), SUBSTRING_INDEX(GROUP_CONCAT(b.id ORDER BY b.id SEPARATOR ','), ',', 10)
FROM accounts a JOIN accounts b ON b.signup_ip = a.signup_ip AND b.id <> a.id
  AND b.created_at BETWEEN a.created_at - INTERVAL ? SECOND AND a.created_at + INTERVAL ? SECOND
WHERE a.id IN (`+in+`) AND a.signup_ip IS NOT NULL AND a.signup_ip <> ''
GROUP BY a.id`, append([]any{within, within}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("free-credit facts: signups per ip: %w", err)
	}
	for rows.Next() {
		var acct int64
		var n int
		var list string
		if err := rows.Scan(&acct, &n, &list); err != nil {
			rows.Close()
			return nil, fmt.Errorf("free-credit facts: signups per ip: %w", err)
		}
		if f := out[acct]; f != nil {
			f.IPSignupsTotal = n
			for _, s := range strings.Split(list, ",") {
				if id, err := strconv.ParseInt(s, 10, 64); err == nil {
					f.IPSignups = append(f.IPSignups, id)
				}
			}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("free-credit facts: signups per ip: %w", err)
	}
	return out, nil
}

// recordSamples stores this run's CPU readings of accounts in one statement; a rerun
// at the same instant keeps the first.
func recordSamples(ctx context.Context, q querier, samples map[int64]CPUSample) error {
	if len(samples) == 0 {
		return nil
	}
	ids := make([]int64, 0, len(samples))
	for id := range samples {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	args := make([]any, 0, 5*len(ids))
	for _, id := range ids {
		s := samples[id]
		args = append(args, id, s.At, s.Running, s.Hot, fmt.Sprintf("%.2f", s.AvgCPU))
	}
	values := strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?), ", len(ids)), ", ")
	if _, err := q.ExecContext(ctx, `INSERT INTO abuse_cpu_samples (account_id, sampled_at, vms_running, vms_hot, avg_cpu)
VALUES `+values+` ON DUPLICATE KEY UPDATE account_id = account_id`, args...); err != nil {
		return fmt.Errorf("record cpu samples of %d accounts: %w", len(ids), err)
	}
	return nil
}

// pruneSamples deletes samples older than before, in bounded batches.
func pruneSamples(ctx context.Context, q querier, before time.Time) (int64, error) {
	res, err := q.ExecContext(ctx, `DELETE FROM abuse_cpu_samples WHERE sampled_at < ? LIMIT 10000`, before)
	if err != nil {
		return 0, fmt.Errorf("prune cpu samples: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}
