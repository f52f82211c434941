package billing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/payment"
	"github.com/cronkit/cronkit/lib/run"
)

// idempotencyWindow is how long a payment attempt may stay pending and still be
// replayed: Stripe forgets an idempotency key after 24 hours, after which a replay
// would be a new charge. Older attempts are left for a human and reconciliation.
const idempotencyWindow = 23 * time.Hour

// chargePage bounds how many due invoices are held in memory at once.
const chargePage = 500

// IdempotencyKey is the provider idempotency key of attempt n to collect invoice id.
// It comes from the invoice and the attempt, never from the run, so every replay of
// an attempt is recognised by the provider as the same request.
func IdempotencyKey(invoiceID int64, attempt int) string {
	return fmt.Sprintf("cronkit-invoice-%d-attempt-%d", invoiceID, attempt)
}

// Charge collects open invoices: first it replays attempts left pending by an
// earlier run (same idempotency key, so the provider returns the original result
// rather than charging again), then it makes the next attempt for every open invoice
// due for one. Each attempt is written, with its key, before the provider is called.
func (j *Job) Charge(ctx context.Context) (*run.Report, error) {
	ch := &charger{j: j, rep: run.NewReport("billing"), now: j.now()}
	err := ch.run(ctx)
	return ch.rep, err
}

type charger struct {
	j   *Job
	rep *run.Report
	now time.Time
	// down is the first transport error from Stripe (run.IsUnreachable): once set,
	// Stripe is not called again this run and left counts the invoices not charged.
	down error
	left int
}

// unreachable stops calling Stripe for the rest of the run after err.
func (ch *charger) unreachable(err error) {
	if ch.down == nil {
		ch.down = err
	}
	ch.left++
}

// attempt is one try to collect an invoice, as stored in payments.
type attempt struct {
	paymentID   int64
	invoiceID   int64
	account     int64
	n           int
	key         string
	amountMinor int64
	currency    string
	customer    string
	card        string // payment method, resolved when the attempt starts
	openedAt    time.Time
	period      time.Time
	createdAt   time.Time
	replay      bool
}

func (a *attempt) subject() string { return fmt.Sprintf("invoice %d", a.invoiceID) }

// fields are the report fields of the attempt, then more (its outcome).
func (a *attempt) fields(more ...run.Field) []run.Field {
	f := []run.Field{run.Int("invoice_id", a.invoiceID), run.Int("account_id", a.account),
		run.Int("attempt", int64(a.n)), run.Str("idempotency_key", a.key)}
	f = append(f, run.Money("amount", minorDecimal(a.amountMinor, a.currency), a.currency)...)
	f = append(f, run.Int("amount_minor", a.amountMinor))
	if a.replay {
		f = append(f, run.Bool("replay", true))
	}
	return append(f, more...)
}

// plan is the part of the report line a dry run shows too.
func (a *attempt) plan() string {
	s := fmt.Sprintf("account %d %s, attempt %d, key %s", a.account, FormatMinor(a.amountMinor, a.currency), a.n, a.key)
	if a.replay {
		s += " (replay)"
	}
	return s
}

// request is the provider request for the attempt. Every field derives from the
// stored attempt, so that a replay sends exactly the parameters of the first try
// (the provider refuses a key reused with other parameters).
func (a *attempt) request() payment.ChargeRequest {
	return payment.ChargeRequest{
		Customer:      a.customer,
		PaymentMethod: a.card,
		AmountMinor:   a.amountMinor,
		Currency:      a.currency,
		Description:   fmt.Sprintf("Invoice %d, %s", a.invoiceID, a.period.Format("January 2006")),
		Metadata: map[string]string{
			"invoice_id": strconv.FormatInt(a.invoiceID, 10),
			"attempt":    strconv.Itoa(a.n),
			"account_id": strconv.FormatInt(a.account, 10),
		},
		IdempotencyKey: a.key,
	}
}

func (ch *charger) run(ctx context.Context) error {
	if !ch.j.Config.DryRun && ch.j.Payments == nil {
		// A configuration error (exit 2), on the same path as the command's own checks.
		return run.Usagef("charging needs a payment provider")
	}
	if err := ch.markNoPaymentMethod(ctx); err != nil {
		return err
	}
	if err := ch.reportProcessing(ctx); err != nil {
		return err
	}
	if err := ch.replayPending(ctx); err != nil {
		return err
	}
	if err := ch.chargeDue(ctx); err != nil {
		return err
	}
	if ch.down != nil {
		// The one error line of the run (lib/run logs it, exit 1): each invoice left
		// is as an interrupted run leaves it, a started attempt replayed by its key.
		return run.Unreachable("stripe", ch.down, ch.left)
	}
	return nil
}

// accountFilter appends the --account condition on column col.
func (ch *charger) accountFilter(q string, args []any, col string) (string, []any) {
	if a := ch.j.Config.Account; a != 0 {
		return q + " AND " + col + " = ?", append(args, a)
	}
	return q, args
}

// markNoPaymentMethod parks open invoices of accounts without a Stripe customer:
// nothing can be charged until one is set, and then they are charged again.
func (ch *charger) markNoPaymentMethod(ctx context.Context) error {
	q, args := ch.accountFilter(`SELECT i.id, i.account_id, i.currency, i.total_minor FROM invoices i
LEFT JOIN accounts a ON a.id = i.account_id
WHERE i.status = 'open' AND i.total_minor > 0 AND i.collection IN ('pending', 'retrying')
  AND (a.stripe_customer_id IS NULL OR a.stripe_customer_id = '')`, nil, "i.account_id")
	rows, err := ch.j.DB.QueryContext(ctx, q+" ORDER BY i.id", args...)
	if err != nil {
		return fmt.Errorf("find invoices without payment method: %w", err)
	}
	type inv struct {
		id, account, total int64
		currency           string
	}
	var found []inv
	for rows.Next() {
		var i inv
		if err := rows.Scan(&i.id, &i.account, &i.currency, &i.total); err != nil {
			rows.Close()
			return fmt.Errorf("find invoices without payment method: %w", err)
		}
		found = append(found, i)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("find invoices without payment method: %w", err)
	}
	for _, i := range found {
		if !ch.j.Config.DryRun {
			if _, err := ch.j.DB.ExecContext(ctx, `UPDATE invoices SET collection = 'no_payment_method'
WHERE id = ? AND collection IN ('pending', 'retrying')`, i.id); err != nil {
				return fmt.Errorf("mark invoice %d without payment method: %w", i.id, err)
			}
		}
		ch.rep.Count("invoices_no_payment_method", 1)
		fields := []run.Field{run.Int("invoice_id", i.id), run.Int("account_id", i.account)}
		fields = append(fields, run.Money("amount", minorDecimal(i.total, i.currency), i.currency)...)
		fields = append(fields, run.Int("amount_minor", i.total), run.Str("collection", "no_payment_method"))
		ch.rep.Problem("no_payment_method", fmt.Sprintf("invoice %d", i.id),
			fmt.Sprintf("account %d has no Stripe customer; %s left open until one is set", i.account, FormatMinor(i.total, i.currency)),
			fields...)
	}
	return nil
}

// reportProcessing reports attempts the provider accepted without settling: charging
// again could charge twice, so they wait for reconciliation.
func (ch *charger) reportProcessing(ctx context.Context) error {
	q, args := ch.accountFilter(`SELECT invoice_id, account_id, attempt, provider_payment_id FROM payments
WHERE status = 'pending' AND provider_payment_id IS NOT NULL`, nil, "account_id")
	rows, err := ch.j.DB.QueryContext(ctx, q+" ORDER BY id", args...)
	if err != nil {
		return fmt.Errorf("find processing payments: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var inv, acct int64
		var n int
		var pi string
		if err := rows.Scan(&inv, &acct, &n, &pi); err != nil {
			return fmt.Errorf("find processing payments: %w", err)
		}
		ch.rep.Problem("payment_processing", fmt.Sprintf("invoice %d", inv),
			fmt.Sprintf("attempt %d (%s) is still processing at the provider; not charged again", n, pi),
			run.Int("invoice_id", inv), run.Int("account_id", acct), run.Int("attempt", int64(n)),
			run.Str("status", "processing"), run.Str("payment_intent", pi))
	}
	return rows.Err()
}

// replayPending replays every attempt a previous run wrote but did not finish, with
// its own key and parameters: the provider answers with what happened the first
// time (or does it now, if the request never arrived).
func (ch *charger) replayPending(ctx context.Context) error {
	q, args := ch.accountFilter(`SELECT p.id, p.invoice_id, p.account_id, p.attempt, p.idempotency_key, p.amount_minor,
  p.currency, p.provider_customer_id, p.provider_payment_method_id, p.created_at, i.opened_at, i.period_start
FROM payments p JOIN invoices i ON i.id = p.invoice_id
WHERE p.status = 'pending' AND p.provider_payment_id IS NULL`, nil, "p.account_id")
	rows, err := ch.j.DB.QueryContext(ctx, q+" ORDER BY p.id", args...)
	if err != nil {
		return fmt.Errorf("find pending payments: %w", err)
	}
	var pending []attempt
	for rows.Next() {
		a := attempt{replay: true}
		var customer, card sql.NullString
		var opened sql.NullTime
		if err := rows.Scan(&a.paymentID, &a.invoiceID, &a.account, &a.n, &a.key, &a.amountMinor,
			&a.currency, &customer, &card, &a.createdAt, &opened, &a.period); err != nil {
			rows.Close()
			return fmt.Errorf("find pending payments: %w", err)
		}
		a.customer, a.card, a.openedAt = customer.String, card.String, opened.Time
		pending = append(pending, a)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("find pending payments: %w", err)
	}
	for i := range pending {
		a := &pending[i]
		if ctx.Err() != nil {
			return fmt.Errorf("charging stopped before invoice %d: %w", a.invoiceID, cause(ctx))
		}
		if ch.now.Sub(a.createdAt) > idempotencyWindow {
			ch.rep.Count("payments_unknown", 1)
			ch.rep.Problem("payment_unknown", a.subject(), fmt.Sprintf("%s pending since %s, beyond the provider's idempotency window: check the provider, then settle the payment row by hand",
				a.plan(), a.createdAt.UTC().Format(time.RFC3339)),
				a.fields(run.Str("status", "unknown"), run.Time("pending_since", a.createdAt))...)
			continue
		}
		if ch.down != nil {
			ch.left++
			continue
		}
		if err := ch.attempt(ctx, a); err != nil {
			return err
		}
	}
	return nil
}

// chargeDue makes the next attempt for each open invoice that is due one, a page of
// invoices at a time.
func (ch *charger) chargeDue(ctx context.Context) error {
	var after int64
	for {
		q, args := ch.accountFilter(`SELECT i.id, i.account_id, i.currency, i.total_minor, i.attempt_count, i.opened_at,
  i.period_start, a.stripe_customer_id
FROM invoices i JOIN accounts a ON a.id = i.account_id
WHERE i.status = 'open' AND i.total_minor > 0 AND i.collection IN ('pending', 'retrying', 'no_payment_method')
  AND a.stripe_customer_id IS NOT NULL AND a.stripe_customer_id <> ''
  AND (i.next_attempt_at IS NULL OR i.next_attempt_at <= ?)
  AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.invoice_id = i.id AND p.status = 'pending')
  AND i.id > ?`, []any{ch.now, after}, "i.account_id")
		rows, err := ch.j.DB.QueryContext(ctx, q+" ORDER BY i.id LIMIT "+strconv.Itoa(chargePage), args...)
		if err != nil {
			return fmt.Errorf("find invoices to charge: %w", err)
		}
		var due []attempt
		for rows.Next() {
			var a attempt
			var count int
			var opened sql.NullTime
			if err := rows.Scan(&a.invoiceID, &a.account, &a.currency, &a.amountMinor, &count, &opened, &a.period, &a.customer); err != nil {
				rows.Close()
				return fmt.Errorf("find invoices to charge: %w", err)
			}
			a.n, a.openedAt = count+1, opened.Time
			a.key = IdempotencyKey(a.invoiceID, a.n)
			due = append(due, a)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("find invoices to charge: %w", err)
		}
		for i := range due {
			a := &due[i]
			if ctx.Err() != nil {
				return fmt.Errorf("charging stopped before invoice %d: %w", a.invoiceID, cause(ctx))
			}
			if ch.j.Config.DryRun {
				ch.rep.Count("charge_attempts", 1)
				ch.rep.Act("charge", a.subject(), a.plan(), a.fields()...)
				continue
			}
			if ch.down != nil {
				ch.left++
				continue
			}
			ok, err := ch.resolveCard(ctx, a)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			ok, err = ch.j.startAttempt(ctx, a, ch.now)
			if err != nil {
				return err
			}
			if !ok {
				ch.rep.Problem("charge_skipped", a.subject(), "the invoice changed while its attempt was being written; left for the next run",
					a.fields()...)
				continue
			}
			if err := ch.attempt(ctx, a); err != nil {
				return err
			}
		}
		if len(due) < chargePage {
			return nil
		}
		after = due[len(due)-1].invoiceID
	}
}

// resolveCard finds the customer's default card for a new attempt. Nothing has been
// attempted yet, so a lookup that fails leaves the invoice for the next run (or, if
// the customer is gone at the provider, for ops); only a rejected API key stops the
// run.
func (ch *charger) resolveCard(ctx context.Context, a *attempt) (bool, error) {
	cust, err := ch.j.Payments.GetCustomer(ctx, a.customer)
	switch {
	case err == nil:
		a.card = cust.DefaultPaymentMethod
		return true, nil
	case ctx.Err() != nil:
		return false, fmt.Errorf("charging invoice %d interrupted: %w", a.invoiceID, cause(ctx))
	case errors.Is(err, payment.ErrAuthentication):
		return false, fmt.Errorf("charge invoice %d: %w", a.invoiceID, err)
	case run.IsUnreachable(err):
		// Nothing attempted: the invoice is due again next run.
		ch.unreachable(err)
		return false, nil
	case errors.Is(err, payment.ErrNotFound):
		if _, uerr := ch.j.DB.ExecContext(ctx, `UPDATE invoices SET collection = 'failed', last_decline_code = 'resource_missing',
  next_attempt_at = NULL WHERE id = ? AND status = 'open'`, a.invoiceID); uerr != nil {
			return false, fmt.Errorf("park invoice %d: %w", a.invoiceID, uerr)
		}
		ch.rep.Count("payments_failed", 1)
		ch.rep.Problem("charge_refused", a.subject(), fmt.Sprintf("%s: %v; collection set to failed for ops", a.plan(), err),
			a.fields(run.Str("status", "refused"), run.Str("decline_code", "resource_missing"), run.Str("collection", "failed"))...)
		return false, nil
	default:
		ch.rep.Problem("customer_lookup_failed", a.subject(), fmt.Sprintf("%s: %v; nothing was charged, the next run tries again", a.plan(), err),
			a.fields()...)
		// The operator's one line naming the provider (the report has the detail).
		zerolog.Ctx(ctx).Warn().Err(err).Int64("invoice_id", a.invoiceID).Str("dependency", "stripe").
			Msg("payment provider: customer lookup failed; nothing was charged, the next run tries again")
		return false, nil
	}
}

// startAttempt writes the pending payment row, with its idempotency key, and counts
// the attempt on the invoice, and commits, before anything is sent to the provider.
// It returns false if the invoice moved on meanwhile.
func (j *Job) startAttempt(ctx context.Context, a *attempt, now time.Time) (bool, error) {
	started := false
	err := mysql.InTx(ctx, j.DB, nil, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE invoices SET attempt_count = ? WHERE id = ? AND attempt_count = ? AND status = 'open'`,
			a.n, a.invoiceID, a.n-1)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return err
		}
		res, err = tx.ExecContext(ctx, `INSERT INTO payments (invoice_id, account_id, attempt, idempotency_key, amount_minor, currency,
  provider_customer_id, provider_payment_method_id, status, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)`,
			a.invoiceID, a.account, a.n, a.key, a.amountMinor, a.currency, a.customer, sql.NullString{String: a.card, Valid: a.card != ""}, now, now)
		if err != nil {
			return err
		}
		if a.paymentID, err = res.LastInsertId(); err != nil {
			return err
		}
		started = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("start attempt %d of invoice %d: %w", a.n, a.invoiceID, err)
	}
	a.createdAt = now
	return started, nil
}

// attempt calls the provider for a (already written as pending) and records the
// answer. Only a failure that stops the whole run is returned.
func (ch *charger) attempt(ctx context.Context, a *attempt) error {
	log := zerolog.Ctx(ctx).With().Int64("invoice_id", a.invoiceID).Int64("account_id", a.account).
		Int("attempt", a.n).Str("idempotency_key", a.key).Logger()
	ch.rep.Count("charge_attempts", 1)
	if ch.j.Config.DryRun {
		ch.rep.Act("charge", a.subject(), a.plan(), a.fields()...)
		return nil
	}
	res, err := ch.j.Payments.Charge(log.WithContext(ctx), a.request())
	if err != nil {
		return ch.failed(ctx, a, err, &log)
	}
	out, err := ch.j.recordOutcome(ctx, a, res, ch.now)
	if err != nil {
		return err
	}
	if res.AmountMinor != 0 && (res.AmountMinor != a.amountMinor || !sameCurrency(res.Currency, a.currency)) {
		ch.rep.Problem("amount_mismatch", a.subject(), fmt.Sprintf("asked %s, the provider answered %d %s",
			FormatMinor(a.amountMinor, a.currency), res.AmountMinor, res.Currency),
			a.fields(run.Int("provider_amount_minor", res.AmountMinor), run.Str("provider_currency", res.Currency))...)
	}
	ch.rep.Count("payments_"+out.count, 1)
	ch.rep.Act("charge", a.subject(), a.plan()+" -> "+out.detail, a.fields(out.fields...)...)
	if out.problem != "" {
		ch.rep.Problem(out.problem, a.subject(), a.plan()+": "+out.detail, a.fields(out.fields...)...)
	}
	log.WithLevel(run.ItemLevel(ctx)).Str("outcome", res.Outcome.String()).Str("payment_intent", res.PaymentIntentID).
		Str("decline_code", res.DeclineCode).Bool("replayed", res.Replayed).Msg("charge recorded")
	return nil
}

func sameCurrency(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		if a[i]|0x20 != b[i]|0x20 {
			return false
		}
	}
	return true
}

// failed handles a charge that got no answer or was refused. An unknown outcome
// leaves the attempt pending for the next run to replay with the same key; a refused
// request is recorded as failed (nothing was charged) and left to ops; a rejected API
// key stops the run.
func (ch *charger) failed(ctx context.Context, a *attempt, err error, log *zerolog.Logger) error {
	switch {
	case ctx.Err() != nil:
		// Stopped (timeout, signal) while waiting: the attempt stays pending.
		return fmt.Errorf("charging invoice %d interrupted: %w", a.invoiceID, cause(ctx))
	case errors.Is(err, payment.ErrAuthentication):
		return fmt.Errorf("charge invoice %d: %w", a.invoiceID, err)
	case run.IsUnreachable(err):
		// The attempt stays pending, exactly as an interrupted run leaves it: the next
		// run replays its key (the request may have reached Stripe before the reset).
		ch.rep.Count("payments_unknown", 1)
		ch.unreachable(err)
		return nil
	case errors.Is(err, payment.ErrTemporary):
		ch.rep.Count("payments_unknown", 1)
		ch.rep.Problem("charge_unknown", a.subject(), fmt.Sprintf("%s: %v; the next run replays the same key", a.plan(), err),
			a.fields(run.Str("status", "unknown"))...)
		log.Warn().Err(err).Str("dependency", "stripe").Msg("charge outcome unknown; will replay")
		return nil
	}
	code := "refused"
	var pe *payment.Error
	if errors.As(err, &pe) && pe.Code != "" {
		code = pe.Code
	} else if errors.Is(err, payment.ErrIdempotencyConflict) {
		code = "idempotency_conflict"
	} else if errors.Is(err, payment.ErrNotFound) {
		code = "resource_missing"
	}
	if len(code) > 64 {
		code = code[:64]
	}
	rerr := mysql.InTx(ctx, ch.j.DB, nil, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE payments SET status = 'failed', decline_code = ?, updated_at = ? WHERE id = ? AND status = 'pending'`,
			code, ch.now, a.paymentID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE invoices SET collection = 'failed', last_decline_code = ?, next_attempt_at = NULL
WHERE id = ? AND status = 'open'`, code, a.invoiceID)
		return err
	})
	if rerr != nil {
		return fmt.Errorf("record refused charge of invoice %d: %w", a.invoiceID, rerr)
	}
	ch.rep.Count("payments_failed", 1)
	refused := a.fields(run.Str("status", "refused"), run.Str("decline_code", code), run.Str("collection", "failed"))
	ch.rep.Act("charge", a.subject(), a.plan()+" -> refused ("+code+")", refused...)
	ch.rep.Problem("charge_refused", a.subject(), fmt.Sprintf("%s: %v; collection set to failed for ops", a.plan(), err), refused...)
	log.Error().Err(err).Msg("charge refused by the provider")
	return nil
}

// outcome is how a provider answer was recorded.
type outcome struct {
	count   string // suffix of the payments_* count
	detail  string
	problem string
	fields  []run.Field // status, collection, payment_intent, decline_code, next_attempt_at
}

// recordOutcome stores the provider's answer to attempt a in one transaction: the
// payment row, and the invoice's collection state. Recording the same answer twice
// (a replay after a crash) changes nothing the second time.
func (j *Job) recordOutcome(ctx context.Context, a *attempt, res payment.ChargeResult, now time.Time) (outcome, error) {
	var out outcome
	code := res.DeclineCode
	if code == "" {
		code = res.ErrorCode
	}
	pi := sql.NullString{String: res.PaymentIntentID, Valid: res.PaymentIntentID != ""}
	decline := sql.NullString{String: code, Valid: code != ""}
	var payStatus string
	var invoiceSQL string
	var invoiceArgs []any
	switch res.Outcome {
	case payment.OutcomeSucceeded:
		payStatus, decline = "succeeded", sql.NullString{}
		out = outcome{count: "succeeded", detail: "succeeded " + res.PaymentIntentID, fields: []run.Field{
			run.Str("status", "succeeded"), run.Str("collection", "succeeded"), run.Str("payment_intent", res.PaymentIntentID)}}
		invoiceSQL = `UPDATE invoices SET status = 'paid', paid_at = ?, amount_paid_minor = ?, collection = 'succeeded',
  next_attempt_at = NULL, last_decline_code = NULL WHERE id = ? AND status = 'open'`
		invoiceArgs = []any{now, a.amountMinor, a.invoiceID}
	case payment.OutcomeSoftDecline:
		payStatus = "soft_declined"
		sched := j.retrySchedule()
		if a.n <= len(sched) {
			next := a.openedAt.Add(sched[a.n-1])
			out = outcome{count: "soft_declined", detail: fmt.Sprintf("soft decline %s; next attempt %s", code, next.UTC().Format(time.RFC3339)),
				fields: []run.Field{run.Str("status", "soft_declined"), run.Str("collection", "retrying"),
					run.Str("payment_intent", res.PaymentIntentID), run.Str("decline_code", code), run.Time("next_attempt_at", next)}}
			invoiceSQL = `UPDATE invoices SET collection = 'retrying', next_attempt_at = ?, last_decline_code = ? WHERE id = ? AND status = 'open'`
			invoiceArgs = []any{next, decline, a.invoiceID}
		} else {
			out = outcome{count: "soft_declined", detail: fmt.Sprintf("soft decline %s; retries exhausted, left to dunning", code),
				fields: []run.Field{run.Str("status", "soft_declined"), run.Str("collection", "exhausted"),
					run.Str("payment_intent", res.PaymentIntentID), run.Str("decline_code", code)}}
			invoiceSQL = `UPDATE invoices SET collection = 'exhausted', next_attempt_at = NULL, last_decline_code = ? WHERE id = ? AND status = 'open'`
			invoiceArgs = []any{decline, a.invoiceID}
		}
	case payment.OutcomeHardDecline:
		payStatus = "hard_declined"
		out = outcome{count: "hard_declined", detail: fmt.Sprintf("hard decline %s; left to dunning", code),
			fields: []run.Field{run.Str("status", "hard_declined"), run.Str("collection", "hard_declined"),
				run.Str("payment_intent", res.PaymentIntentID), run.Str("decline_code", code)}}
		invoiceSQL = `UPDATE invoices SET collection = 'hard_declined', next_attempt_at = NULL, last_decline_code = ? WHERE id = ? AND status = 'open'`
		invoiceArgs = []any{decline, a.invoiceID}
	default: // OutcomePending: accepted, not settled; charging again could charge twice
		out = outcome{count: "processing", detail: fmt.Sprintf("processing %s (%s)", res.PaymentIntentID, res.Status), problem: "payment_processing",
			fields: []run.Field{run.Str("status", "processing"), run.Str("payment_intent", res.PaymentIntentID)}}
		_, err := j.DB.ExecContext(ctx, `UPDATE payments SET provider_payment_id = ?, updated_at = ? WHERE id = ? AND status = 'pending'`,
			pi, now, a.paymentID)
		if err != nil {
			return out, fmt.Errorf("record processing payment of invoice %d: %w", a.invoiceID, err)
		}
		return out, nil
	}
	err := mysql.InTx(ctx, j.DB, nil, func(tx *sql.Tx) error {
		r, err := tx.ExecContext(ctx, `UPDATE payments SET status = ?, provider_payment_id = ?, decline_code = ?, updated_at = ?
WHERE id = ? AND status = 'pending'`, payStatus, pi, decline, now, a.paymentID)
		if err != nil {
			return err
		}
		if n, err := r.RowsAffected(); err != nil || n == 0 {
			return err // already recorded: a replay of a recorded attempt changes nothing
		}
		_, err = tx.ExecContext(ctx, invoiceSQL, invoiceArgs...)
		return err
	})
	if err != nil {
		return out, fmt.Errorf("record charge of invoice %d: %w", a.invoiceID, err)
	}
	return out, nil
}
