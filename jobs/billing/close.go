package billing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/run"
)

// Close turns each ended month's rated charges into one invoice per account: a line
// per product, free credit applied (oldest-expiring first), the total rounded once to
// the currency's minor unit, status open (or paid when credit covers it all). With
// Config.Month only that month is closed; otherwise every month before the current
// one that still has rated, un-invoiced charges. A month is closed only once all its
// hours are rated (the rating watermark has passed its last hour).
func (j *Job) Close(ctx context.Context) (*run.Report, error) {
	c := &closer{j: j, rep: run.NewReport("billing"), now: j.now(), planned: map[int64]Micros{}}
	err := c.run(ctx)
	return c.rep, err
}

type closer struct {
	j   *Job
	rep *run.Report
	now time.Time
	wm  sql.NullTime
	// planned is credit a dry run has already planned to use, per credit id, so a
	// plan that closes two months does not spend the same credit twice.
	planned map[int64]Micros
}

// farPast is below every DATETIME billing stores, for open-ended ranges.
func farPast() time.Time { return time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC) }

func (c *closer) run(ctx context.Context) error {
	current := monthStart(c.now)
	st, err := loadRatingState(ctx, c.j.DB)
	if err != nil {
		return err
	}
	c.wm = st.watermark
	if m := c.j.Config.Month; !m.IsZero() {
		m = monthStart(m)
		if !m.Before(current) {
			return run.Usagef("close --month %s: the month has not ended", m.Format("2006-01"))
		}
		_, err := c.closeMonth(ctx, m, true)
		return err
	}
	from := farPast()
	for {
		if ctx.Err() != nil {
			return fmt.Errorf("close stopped: %w", cause(ctx))
		}
		q := `SELECT MIN(hour) FROM charges WHERE invoice_id IS NULL AND status = 'rated' AND hour >= ? AND hour < ?`
		args := []any{from, current}
		if a := c.j.Config.Account; a != 0 {
			q += ` AND account_id = ?`
			args = append(args, a)
		}
		var h sql.NullTime
		if err := c.j.DB.QueryRowContext(ctx, q, args...).Scan(&h); err != nil {
			return fmt.Errorf("find months to close: %w", err)
		}
		if !h.Valid {
			return nil
		}
		m := monthStart(h.Time)
		more, err := c.closeMonth(ctx, m, false)
		if err != nil || !more {
			return err
		}
		from = m.AddDate(0, 1, 0)
	}
}

// closeMonth invoices month m for every account (or Config.Account) with rated,
// un-invoiced charges in it. It returns false when the month is not fully rated yet,
// so later months wait too.
func (c *closer) closeMonth(ctx context.Context, m time.Time, explicit bool) (bool, error) {
	end := m.AddDate(0, 1, 0)
	label := m.Format("2006-01")
	log := zerolog.Ctx(ctx).With().Str("period", label).Logger()
	if !c.wm.Valid || c.wm.Time.Before(end.Add(-time.Hour)) {
		wm := "none"
		if c.wm.Valid {
			wm = fmtHour(c.wm.Time)
		}
		if explicit {
			fields := []run.Field{run.Str("period", label)}
			if c.wm.Valid {
				fields = append(fields, run.Time("watermark", c.wm.Time))
			}
			c.rep.Problem("month_not_rated", "period "+label, "rating has reached "+wm+"; close the month once it is rated to its end",
				fields...)
		} else {
			c.rep.Count("months_waiting", 1)
			log.Info().Str("watermark", wm).Msg("month not fully rated yet; closing it later")
		}
		return false, nil
	}
	// With collect in use, the month's last usage may still be on the usage server.
	if cov, ok, err := collectCoverage(ctx, c.j.DB); err != nil {
		return false, fmt.Errorf("close %s: %w", label, err)
	} else if ok && cov.Before(end) {
		if explicit {
			c.rep.Problem("month_not_collected", "period "+label, "usage is collected to "+fmtHour(cov)+"; close the month once collect's coverage passes its end")
		} else {
			c.rep.Count("months_waiting", 1)
			log.Info().Time("coverage", cov).Msg("month's usage not fully collected yet; closing it later")
		}
		return false, nil
	}
	q := `SELECT DISTINCT account_id FROM charges WHERE invoice_id IS NULL AND status = 'rated' AND hour >= ? AND hour < ?`
	args := []any{m, end}
	if a := c.j.Config.Account; a != 0 {
		q += ` AND account_id = ?`
		args = append(args, a)
	}
	rows, err := c.j.DB.QueryContext(ctx, q+` ORDER BY account_id`, args...)
	if err != nil {
		return false, fmt.Errorf("close %s: list accounts: %w", label, err)
	}
	var accounts []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return false, fmt.Errorf("close %s: list accounts: %w", label, err)
		}
		accounts = append(accounts, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("close %s: list accounts: %w", label, err)
	}
	progress := run.ProgressFrom(ctx)
	progress.Step("closing "+label, 0, int64(len(accounts)))
	for i, acct := range accounts {
		if ctx.Err() != nil {
			return false, fmt.Errorf("close %s stopped before account %d: %w", label, acct, cause(ctx))
		}
		if err := c.closeAccount(ctx, acct, m); err != nil {
			return false, err
		}
		progress.Step("closing "+label, int64(i+1), int64(len(accounts)))
	}
	log.Info().Int("accounts", len(accounts)).Msg("month closed")
	return true, nil
}

// invoicePlan is an invoice as close computes it, before (or instead of) writing it.
type invoicePlan struct {
	account       int64
	period        time.Time
	currency      string
	lines         []usageLine
	credits       []creditUse
	subtotal      Micros
	creditApplied Micros
	totalMinor    int64
	charges       int64
}

type usageLine struct {
	product  string
	quantity string // DECIMAL sum, shown as stored
	amount   Micros
}

type creditUse struct {
	id     int64
	reason string
	amount Micros
}

// String is the report line: "USD 123.45 (subtotal 130.000000, credit 6.550000),
// open, due 2025-04-01".
func (p *invoicePlan) String(now time.Time, netDays int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (subtotal %s, credit %s, %s)", FormatMinor(p.totalMinor, p.currency), p.subtotal, p.creditApplied,
		plural(int64(len(p.lines)+len(p.credits)), "line"))
	if p.totalMinor == 0 {
		b.WriteString(", paid by credit")
	} else {
		fmt.Fprintf(&b, ", open, due %s", now.AddDate(0, 0, netDays).Format("2006-01-02"))
	}
	return b.String()
}

// fields are the report fields of the invoice: the total as amount, the subtotal and
// credit before rounding, and the state it is opened in.
func (p *invoicePlan) fields(now time.Time, netDays int) []run.Field {
	status := "open"
	if p.totalMinor == 0 {
		status = "paid"
	}
	f := []run.Field{run.Int("account_id", p.account), run.Str("period", p.period.Format("2006-01"))}
	f = append(f, run.Money("amount", minorDecimal(p.totalMinor, p.currency), p.currency)...)
	return append(f, run.Str("subtotal", p.subtotal.String()), run.Str("credit_applied", p.creditApplied.String()),
		run.Int("lines", int64(len(p.lines)+len(p.credits))), run.Str("status", status),
		run.Time("due_at", now.AddDate(0, 0, netDays)))
}

// errSkip marks an account whose invoice cannot be made; the problem is reported.
var errSkip = errors.New("invoice skipped")

// closeAccount makes account acct's invoice for month m in one transaction: the
// invoice, its lines, the credit it consumes and the charges it covers, all or none.
func (c *closer) closeAccount(ctx context.Context, acct int64, m time.Time) error {
	subject := fmt.Sprintf("account %d %s", acct, m.Format("2006-01"))
	log := zerolog.Ctx(ctx).With().Int64("account_id", acct).Str("period", m.Format("2006-01")).Logger()
	if c.j.Config.DryRun {
		p, err := c.plan(ctx, c.j.DB, acct, m, subject)
		if errors.Is(err, errSkip) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("plan invoice for %s: %w", subject, err)
		}
		for _, u := range p.credits {
			c.planned[u.id] += u.amount
		}
		c.count(p)
		c.rep.Act("invoice", subject, p.String(c.now, c.j.Config.NetDays), p.fields(c.now, c.j.Config.NetDays)...)
		return nil
	}
	var p *invoicePlan
	var id int64
	err := mysql.InTx(ctx, c.j.DB, nil, func(tx *sql.Tx) error {
		var err error
		if p, err = c.plan(ctx, tx, acct, m, subject); err != nil {
			return err
		}
		id, err = c.write(ctx, tx, p)
		return err
	})
	if errors.Is(err, errSkip) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("close invoice for %s: %w", subject, err)
	}
	c.count(p)
	c.rep.Act("invoice", subject, p.String(c.now, c.j.Config.NetDays)+fmt.Sprintf("; invoice %d", id),
		append([]run.Field{run.Int("invoice_id", id)}, p.fields(c.now, c.j.Config.NetDays)...)...)
	log.WithLevel(run.ItemLevel(ctx)).Int64("invoice_id", id).Int64("total_minor", p.totalMinor).Str("currency", p.currency).
		Str("credit_applied", p.creditApplied.String()).Msg("invoice opened")
	return nil
}

func (c *closer) count(p *invoicePlan) {
	c.rep.Count("invoices_created", 1)
	c.rep.Count("invoice_charges", p.charges)
	if p.totalMinor == 0 {
		c.rep.Count("invoices_paid_by_credit", 1)
	}
}

// plan computes the invoice from the charges and credits (SELECTs only). It returns
// errSkip, with a problem reported, when the account's month cannot be invoiced.
func (c *closer) plan(ctx context.Context, q queryer, acct int64, m time.Time, subject string) (*invoicePlan, error) {
	end := m.AddDate(0, 1, 0)
	at := func(more ...run.Field) []run.Field {
		return append([]run.Field{run.Int("account_id", acct), run.Str("period", m.Format("2006-01"))}, more...)
	}
	var existing int64
	err := q.QueryRowContext(ctx, `SELECT id FROM invoices WHERE account_id = ? AND period_start = ?`, acct, m).Scan(&existing)
	switch {
	case err == nil:
		// Rating never writes into an invoiced month, so only a hand edit gets here.
		c.rep.Problem("charges_after_close", subject,
			fmt.Sprintf("invoice %d exists for this month, yet rated charges are not on it; they were left alone", existing),
			at(run.Int("invoice_id", existing))...)
		return nil, errSkip
	case !errors.Is(err, sql.ErrNoRows):
		return nil, err
	}
	rows, err := q.QueryContext(ctx, `SELECT product, currency, SUM(quantity), SUM(amount), COUNT(*) FROM charges
WHERE account_id = ? AND hour >= ? AND hour < ? AND status = 'rated' AND invoice_id IS NULL
GROUP BY product, currency ORDER BY product, currency`, acct, m, end)
	if err != nil {
		return nil, err
	}
	p := &invoicePlan{account: acct, period: m}
	currencies := map[string]bool{}
	for rows.Next() {
		var l usageLine
		var currency, amount string
		var n int64
		if err := rows.Scan(&l.product, &currency, &l.quantity, &amount, &n); err != nil {
			rows.Close()
			return nil, err
		}
		if l.amount, err = ParseMicros(amount); err != nil {
			rows.Close()
			return nil, err
		}
		if p.subtotal, err = p.subtotal.Add(l.amount); err != nil {
			rows.Close()
			return nil, err
		}
		currencies[currency] = true
		p.currency = currency
		p.charges += n
		p.lines = append(p.lines, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(currencies) != 1 {
		c.rep.Problem("mixed_currency", subject, fmt.Sprintf("charges in %d currencies; one invoice holds one", len(currencies)),
			at(run.Int("currencies", int64(len(currencies))))...)
		return nil, errSkip
	}
	if _, err := CurrencyExponent(p.currency); err != nil {
		c.rep.Problem("unknown_currency", subject, fmt.Sprintf("%v: cannot round the invoice", err),
			at(run.Str("currency", p.currency))...)
		return nil, errSkip
	}
	if p.subtotal < 0 {
		c.rep.Problem("negative_total", subject, fmt.Sprintf("subtotal %s %s is negative; check the prices", p.currency, p.subtotal),
			at(run.Str("subtotal", p.subtotal.String()), run.Str("currency", p.currency))...)
		return nil, errSkip
	}
	if err := c.applyCredits(ctx, q, p, end); err != nil {
		return nil, err
	}
	if p.totalMinor, err = ToMinor(p.subtotal-p.creditApplied, p.currency); err != nil {
		return nil, err
	}
	return p, nil
}

// applyCredits consumes the account's credits in the invoice's currency that were
// valid at some time during the month (granted before its end, not expired before
// its start), the one expiring soonest first, then the oldest; credits that never
// expire come last. What an invoice does not use stays for the next one.
func (c *closer) applyCredits(ctx context.Context, q queryer, p *invoicePlan, end time.Time) error {
	rows, err := q.QueryContext(ctx, `SELECT c.id, c.reason,
  c.amount - COALESCE((SELECT SUM(ca.amount) FROM credit_applications ca WHERE ca.credit_id = c.id), 0)
FROM credits c
WHERE c.account_id = ? AND c.currency = ? AND c.granted_at < ? AND (c.expires_at IS NULL OR c.expires_at > ?)
ORDER BY c.expires_at IS NULL, c.expires_at, c.granted_at, c.id`, p.account, p.currency, end, p.period)
	if err != nil {
		return fmt.Errorf("credits: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var u creditUse
		var remaining string
		if err := rows.Scan(&u.id, &u.reason, &remaining); err != nil {
			return fmt.Errorf("credits: %w", err)
		}
		left, err := ParseMicros(remaining)
		if err != nil {
			return fmt.Errorf("credit %d: %w", u.id, err)
		}
		left -= c.planned[u.id]
		due := p.subtotal - p.creditApplied
		if left <= 0 || due <= 0 {
			continue
		}
		u.amount = min(left, due)
		p.creditApplied += u.amount
		p.credits = append(p.credits, u)
	}
	return rows.Err()
}

// write stores the planned invoice: draft, lines, credit, charges, then open (or
// paid, when nothing is due), inside the caller's transaction.
func (c *closer) write(ctx context.Context, tx *sql.Tx, p *invoicePlan) (int64, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO invoices (account_id, period_start, currency, subtotal, credit_applied, total_minor, status, created_at)
VALUES (?, ?, ?, ?, ?, ?, 'draft', ?)`, p.account, p.period, p.currency, p.subtotal.String(), p.creditApplied.String(), p.totalMinor, c.now)
	if err != nil {
		return 0, fmt.Errorf("insert invoice: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("insert invoice: %w", err)
	}
	for _, l := range p.lines {
		if _, err := tx.ExecContext(ctx, `INSERT INTO invoice_lines (invoice_id, kind, product, quantity, amount) VALUES (?, 'usage', ?, ?, ?)`,
			id, l.product, l.quantity, l.amount.String()); err != nil {
			return 0, fmt.Errorf("insert invoice line %s: %w", l.product, err)
		}
	}
	for _, u := range p.credits {
		if _, err := tx.ExecContext(ctx, `INSERT INTO invoice_lines (invoice_id, kind, product, quantity, amount) VALUES (?, 'credit', ?, 1, ?)`,
			id, fmt.Sprintf("credit:%d", u.id), (-u.amount).String()); err != nil {
			return 0, fmt.Errorf("insert credit line %d: %w", u.id, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO credit_applications (credit_id, invoice_id, amount) VALUES (?, ?, ?)`,
			u.id, id, u.amount.String()); err != nil {
			return 0, fmt.Errorf("apply credit %d: %w", u.id, err)
		}
	}
	res, err = tx.ExecContext(ctx, `UPDATE charges SET invoice_id = ?
WHERE account_id = ? AND hour >= ? AND hour < ? AND status = 'rated' AND invoice_id IS NULL`,
		id, p.account, p.period, p.period.AddDate(0, 1, 0))
	if err != nil {
		return 0, fmt.Errorf("attach charges: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n != p.charges {
		return 0, fmt.Errorf("attach charges: %d rows changed, planned %d (%v)", n, p.charges, err)
	}
	due := c.now.AddDate(0, 0, c.j.Config.NetDays)
	if p.totalMinor == 0 {
		_, err = tx.ExecContext(ctx, `UPDATE invoices SET status = 'paid', opened_at = ?, due_at = ?, paid_at = ?, collection = 'succeeded'
WHERE id = ? AND status = 'draft'`, c.now, due, c.now, id)
	} else {
		_, err = tx.ExecContext(ctx, `UPDATE invoices SET status = 'open', opened_at = ?, due_at = ? WHERE id = ? AND status = 'draft'`,
			c.now, due, id)
	}
	if err != nil {
		return 0, fmt.Errorf("open invoice %d: %w", id, err)
	}
	return id, nil
}
