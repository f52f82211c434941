package reconcile

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

// --fix repairs only what is safe and repeatable, and never moves money: it records
// what Stripe says happened. Each repair runs under billing's lock (so no charge or
// replay is in flight), asks Stripe again, locks the invoice and payment rows,
// re-checks them, and commits the repair together with the finding's state and its
// audit event: a crash leaves all of it or none, and a second run finds nothing left
// to do.

const (
	sqlLockInvoice = `SELECT account_id, currency, total_minor, amount_paid_minor, status, attempt_count FROM invoices
WHERE id = ? FOR UPDATE`
	sqlLockInvoicePayments = `SELECT id, attempt, status, COALESCE(provider_payment_id, '') FROM payments
WHERE invoice_id = ? ORDER BY attempt FOR UPDATE`
	sqlRecordSucceeded = `UPDATE payments SET status = 'succeeded', provider_payment_id = ?, decline_code = NULL, updated_at = ?
WHERE id = ? AND status <> 'succeeded'`
	sqlInsertSucceeded = `INSERT INTO payments (invoice_id, account_id, attempt, idempotency_key, amount_minor, currency,
  provider_customer_id, provider_payment_method_id, status, provider_payment_id, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'succeeded', ?, ?, ?)`
	sqlMarkInvoicePaid = `UPDATE invoices SET status = 'paid', paid_at = ?, amount_paid_minor = amount_paid_minor + ?,
  collection = 'succeeded', next_attempt_at = NULL, last_decline_code = NULL, attempt_count = GREATEST(attempt_count, ?)
WHERE id = ? AND status = 'open'`
	sqlLockPayment   = `SELECT status FROM payments WHERE id = ? FOR UPDATE`
	sqlSettleAttempt = `UPDATE payments SET status = ?, provider_payment_id = COALESCE(?, provider_payment_id), decline_code = ?, updated_at = ?
WHERE id = ? AND status = 'pending'`
	sqlSettleInvoice = `UPDATE invoices SET collection = ?, last_decline_code = ?, next_attempt_at = NULL
WHERE id = ? AND status = 'open'`
	sqlLockRefund   = `SELECT status FROM payment_refunds WHERE provider_refund_id = ? FOR UPDATE`
	sqlRecordRefund = `INSERT INTO payment_refunds (provider_refund_id, provider_payment_id, invoice_id, account_id, amount_minor,
  currency, status, reason, refunded_at, recorded_at, updated_at, recorded_by, run_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON DUPLICATE KEY UPDATE amount_minor = VALUES(amount_minor), currency = VALUES(currency), status = VALUES(status),
  reason = VALUES(reason), updated_at = VALUES(updated_at), run_id = VALUES(run_id)`
	sqlLockDispute   = `SELECT status FROM payment_disputes WHERE provider_dispute_id = ? FOR UPDATE`
	sqlRecordDispute = `INSERT INTO payment_disputes (provider_dispute_id, provider_payment_id, invoice_id, account_id, amount_minor,
  currency, status, reason, evidence_due_by, disputed_at, recorded_at, updated_at, recorded_by, run_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON DUPLICATE KEY UPDATE amount_minor = VALUES(amount_minor), currency = VALUES(currency), status = VALUES(status),
  reason = VALUES(reason), evidence_due_by = VALUES(evidence_due_by), updated_at = VALUES(updated_at), run_id = VALUES(run_id)`
)

// IdempotencyKey is billing's key of attempt n of an invoice (jobs/billing keeps the
// original): a payment recorded from Stripe's object takes the key billing gave it.
func idempotencyKey(invoice int64, attempt int) string {
	return fmt.Sprintf("cronkit-invoice-%d-attempt-%d", invoice, attempt)
}

// errSkip rolls a repair back: what it was to repair changed since it was judged.
type errSkip struct{ why string }

func (e errSkip) Error() string { return e.why }

type fixer struct {
	env    *CheckEnv
	stripe Stripe
	rep    *run.Report
}

// apply repairs a batch's fixable findings (in a dry run, says what it would do).
func (f *fixer) apply(ctx context.Context, fixes []fix) error {
	if f.env.DryRun {
		for _, fx := range fixes {
			f.rep.Count("would_fix_"+fx.class, 1)
			f.rep.Act("fix", fmt.Sprintf("invoice %d", fx.invoice), "would "+fx.plan(), fx.fields()...)
		}
		return nil
	}
	fps := make([]string, len(fixes))
	for i, fx := range fixes {
		fps[i] = fx.fingerprint
	}
	ids, err := f.env.Store.FindingIDs(ctx, fps)
	if err != nil {
		return err
	}
	lock, err := mysql.AcquireJobLock(ctx, f.env.DB, "billing", f.env.BillingLockWait)
	if errors.Is(err, mysql.ErrLocked) {
		for _, fx := range fixes {
			f.rep.Problem("fix_deferred", "finding "+strconv.FormatInt(ids[fx.fingerprint], 10),
				"billing is running (its lock is held): "+fx.plan()+" is left for the next --fix", fx.fields()...)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("fix: take billing's lock: %w", err)
	}
	defer func() {
		if err := lock.Release(); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("release billing's lock")
		}
	}()
	for _, fx := range fixes {
		id := ids[fx.fingerprint]
		if id == 0 {
			continue
		}
		subject := "finding " + strconv.FormatInt(id, 10)
		fields := append([]run.Field{run.Int("id", id)}, fx.fields()...)
		what, err := f.one(ctx, id, fx)
		var skip errSkip
		switch {
		case errors.As(err, &skip):
			f.rep.Count("fix_skipped", 1)
			f.rep.Act("fix_skipped", subject, fx.plan()+": "+skip.why, fields...)
		case err != nil:
			return fmt.Errorf("fix %s: %w", subject, err)
		default:
			f.rep.Count("fixed_"+fx.class, 1)
			f.rep.Act("fix", subject, what, fields...)
			zerolog.Ctx(ctx).WithLevel(run.ItemLevel(ctx)).Int64("finding_id", id).Str("class", fx.class).
				Int64("invoice_id", fx.invoice).Msg(what)
		}
	}
	return nil
}

// plan says what the fix would do, before asking anything again.
func (fx fix) plan() string {
	switch fx.kind {
	case fixRecordPayment:
		return fmt.Sprintf("record %s (%s) as the payment of invoice %d and mark it paid", fx.intent.ID,
			money(fx.intent.Received, fx.intent.Currency), fx.invoice)
	case fixSettleAttempt:
		return fmt.Sprintf("settle attempt %d of invoice %d as %s (%s)", fx.local.Attempt, fx.invoice, fx.outcome, fx.code)
	case fixRecordRefund:
		return fmt.Sprintf("record refund %s of %s (%s, %s)", fx.object.ID, fx.object.Intent, money(fx.object.Amount, fx.object.Currency), fx.object.Status)
	case fixRecordDispute:
		return fmt.Sprintf("record dispute %s of %s (%s, %s)", fx.object.ID, fx.object.Intent, money(fx.object.Amount, fx.object.Currency), fx.object.Status)
	}
	return "nothing"
}

func (fx fix) fields() []run.Field {
	out := []run.Field{run.Str("class", fx.class), run.Str("fingerprint", fx.fingerprint), run.Int("invoice_id", fx.invoice)}
	switch {
	case fx.intent != nil:
		out = append(out, run.Str("payment_intent", fx.intent.ID))
	case fx.object != nil:
		out = append(out, run.Str("resource_id", fx.object.ID), run.Str("payment_intent", fx.object.Intent))
	case fx.local != nil && fx.local.PI != "":
		out = append(out, run.Str("payment_intent", fx.local.PI))
	}
	return out
}

func (f *fixer) one(ctx context.Context, id int64, fx fix) (string, error) {
	switch fx.kind {
	case fixRecordPayment:
		return f.recordPayment(ctx, id, fx)
	case fixSettleAttempt:
		return f.settleAttempt(ctx, id, fx)
	case fixRecordRefund, fixRecordDispute:
		return f.recordObject(ctx, id, fx)
	}
	return "", errSkip{"no repair for this finding"}
}

// markFixed commits the finding's state with the repair, or rolls the repair back
// if the finding moved on meanwhile.
func (f *fixer) markFixed(ctx context.Context, tx *sql.Tx, id int64, reason string, detail any) error {
	ok, err := f.env.Store.MarkFixed(ctx, tx, id, run.FromContext(ctx).ID, reason, detail)
	if err != nil {
		return err
	}
	if !ok {
		return errSkip{"the finding is no longer open"}
	}
	return nil
}

// recordPayment records a PaymentIntent Stripe says succeeded as the invoice's
// payment and marks the invoice paid; abuse then resolves the dunning case on its
// next run, from the invoice.
func (f *fixer) recordPayment(ctx context.Context, id int64, fx fix) (string, error) {
	pi, err := f.stripe.GetPaymentIntent(ctx, fx.intent.ID)
	if err != nil {
		return "", fmt.Errorf("ask Stripe about %s again: %w", fx.intent.ID, err)
	}
	p, ok := intentRemote(pi, false)
	switch {
	case !ok || p.Invoice != fx.invoice:
		return "", errSkip{fmt.Sprintf("%s no longer names invoice %d", pi.ID, fx.invoice)}
	case p.Status != "succeeded":
		return "", errSkip{fmt.Sprintf("Stripe now says %s is %s", pi.ID, pi.Status)}
	}
	now := f.env.Now
	var what string
	err = mysql.InTx(ctx, f.env.DB, nil, func(tx *sql.Tx) error {
		var inv invoiceRow
		err := tx.QueryRowContext(ctx, sqlLockInvoice, fx.invoice).Scan(&inv.Account, &inv.Currency, &inv.Total, &inv.Paid, &inv.Status, &inv.Attempts)
		if errors.Is(err, sql.ErrNoRows) {
			return errSkip{fmt.Sprintf("invoice %d is gone", fx.invoice)}
		}
		if err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, sqlLockInvoicePayments, fx.invoice)
		if err != nil {
			return err
		}
		type row struct {
			id      int64
			attempt int
			status  string
			pi      string
		}
		var pays []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.id, &r.attempt, &r.status, &r.pi); err != nil {
				rows.Close()
				return err
			}
			pays = append(pays, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		switch {
		case inv.Status != "open":
			return errSkip{fmt.Sprintf("invoice %d is %s now", fx.invoice, inv.Status)}
		case !equalFoldASCII(inv.Currency, p.Currency) || p.Received != inv.Total-inv.Paid:
			return errSkip{fmt.Sprintf("invoice %d now owes %s, Stripe took %s", fx.invoice, money(inv.Total-inv.Paid, inv.Currency), money(p.Received, p.Currency))}
		}
		var slot *row
		for i := range pays {
			r := &pays[i]
			if r.status == "succeeded" {
				return errSkip{fmt.Sprintf("payment %d of invoice %d is recorded as succeeded now", r.id, fx.invoice)}
			}
			if r.pi == p.ID || (r.attempt == p.Attempt && r.pi == "") {
				slot = r
			} else if r.attempt == p.Attempt && slot == nil {
				return errSkip{fmt.Sprintf("attempt %d is recorded with %s", p.Attempt, r.pi)}
			}
		}
		before := map[string]any{"invoice": map[string]any{"status": inv.Status, "paid_minor": inv.Paid}}
		if slot != nil {
			before["payment"] = map[string]any{"id": slot.id, "status": slot.status, "payment_intent": slot.pi}
			if _, err := tx.ExecContext(ctx, sqlRecordSucceeded, p.ID, now, slot.id); err != nil {
				return err
			}
			what = fmt.Sprintf("recorded %s (%s) on payment %d (attempt %d, was %s); invoice %d paid", p.ID,
				money(p.Received, p.Currency), slot.id, slot.attempt, slot.status, fx.invoice)
		} else {
			if _, err := tx.ExecContext(ctx, sqlInsertSucceeded, fx.invoice, inv.Account, p.Attempt, idempotencyKey(fx.invoice, p.Attempt),
				p.Received, inv.Currency, nullStr(p.Customer), nullStr(p.PaymentMethod), p.ID, p.Created, now); err != nil {
				return err
			}
			what = fmt.Sprintf("recorded %s (%s) as attempt %d of invoice %d; invoice paid", p.ID, money(p.Received, p.Currency), p.Attempt, fx.invoice)
		}
		if _, err := tx.ExecContext(ctx, sqlMarkInvoicePaid, p.Created, p.Received, p.Attempt, fx.invoice); err != nil {
			return err
		}
		after := map[string]any{"invoice": map[string]any{"status": "paid", "paid_minor": inv.Paid + p.Received},
			"payment": map[string]any{"status": "succeeded", "payment_intent": p.ID, "attempt": p.Attempt}}
		return f.markFixed(ctx, tx, id, what, map[string]any{"before": before, "after": after, "stripe": intentEvidence(&p)})
	})
	return what, err
}

// settleAttempt records the outcome of an attempt left pending: Stripe's decline, or,
// when Stripe never received it, a failure; the invoice's collection says so, for
// dunning and for ops (who re-queue a charge by setting it back to pending). Nothing
// is charged.
func (f *fixer) settleAttempt(ctx context.Context, id int64, fx fix) (string, error) {
	l := fx.local
	var found *remote
	if l.PI != "" {
		pi, err := f.stripe.GetPaymentIntent(ctx, l.PI)
		switch {
		case errors.Is(err, payment.ErrNotFound):
		case err != nil:
			return "", fmt.Errorf("ask Stripe about %s again: %w", l.PI, err)
		default:
			if p, ok := intentRemote(pi, false); ok {
				found = &p
			}
		}
	} else {
		for pi, err := range f.stripe.SearchPaymentIntents(ctx, map[string]string{
			"invoice_id": strconv.FormatInt(l.Invoice, 10), "attempt": strconv.Itoa(l.Attempt)}) {
			if err != nil {
				return "", fmt.Errorf("search Stripe for invoice %d attempt %d: %w", l.Invoice, l.Attempt, err)
			}
			if p, ok := intentRemote(pi, false); ok {
				found = &p
				break
			}
		}
	}
	now := f.env.Now
	status, code, collection := "", "", ""
	var pi sql.NullString
	switch {
	case found == nil:
		if now.Sub(l.Created) <= BillingReplayWindow+f.env.Grace {
			return "", errSkip{"billing may still replay it"}
		}
		status, code, collection = "failed", "not_at_provider", "failed"
	case found.Status == "succeeded" || inFlight(found.Status):
		return "", errSkip{fmt.Sprintf("Stripe now says %s is %s", found.ID, found.Status)}
	default:
		pi = sql.NullString{String: found.ID, Valid: true}
		code = found.Code
		if code == "" {
			code = found.ErrorCode
		}
		if code == "" {
			code = found.Status
		}
		if payment.Classify(found.Status, found.ErrorCode, found.Code) == payment.OutcomeHardDecline {
			status, collection = "hard_declined", "hard_declined"
		} else {
			status, collection = "soft_declined", "failed"
		}
	}
	what := fmt.Sprintf("settled attempt %d of invoice %d as %s (%s); invoice collection %s", l.Attempt, l.Invoice, status, code, collection)
	err := mysql.InTx(ctx, f.env.DB, nil, func(tx *sql.Tx) error {
		var invStatus, payStatus string
		if err := tx.QueryRowContext(ctx, `SELECT status FROM invoices WHERE id = ? FOR UPDATE`, l.Invoice).Scan(&invStatus); err != nil &&
			!errors.Is(err, sql.ErrNoRows) {
			return err
		}
		err := tx.QueryRowContext(ctx, sqlLockPayment, l.ID).Scan(&payStatus)
		if errors.Is(err, sql.ErrNoRows) {
			return errSkip{fmt.Sprintf("payment %d is gone", l.ID)}
		}
		if err != nil {
			return err
		}
		if payStatus != "pending" {
			return errSkip{fmt.Sprintf("payment %d is %s now", l.ID, payStatus)}
		}
		if _, err := tx.ExecContext(ctx, sqlSettleAttempt, status, pi, code, now, l.ID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, sqlSettleInvoice, collection, code, l.Invoice); err != nil {
			return err
		}
		var stripe any
		if found != nil {
			stripe = intentEvidence(found)
		}
		return f.markFixed(ctx, tx, id, what, map[string]any{
			"before": map[string]any{"payment": map[string]any{"id": l.ID, "status": "pending"}, "invoice": map[string]any{"status": invStatus}},
			"after":  map[string]any{"payment": map[string]any{"status": status, "decline_code": code}, "invoice": map[string]any{"collection": collection}},
			"stripe": stripe})
	})
	return what, err
}

// recordObject records (or brings up to date) a refund or a dispute as Stripe has it
// now.
func (f *fixer) recordObject(ctx context.Context, id int64, fx fix) (string, error) {
	o := fx.object
	var now *remote
	p := payment.RefundListParams{PaymentIntent: o.Intent}
	if fx.kind == fixRecordRefund {
		for re, err := range f.stripe.ListRefunds(ctx, p) {
			if err != nil {
				return "", fmt.Errorf("ask Stripe about %s again: %w", o.ID, err)
			}
			if re.ID == o.ID {
				if rm, ok := refundRemote(re, false); ok {
					now = &rm
				}
				break
			}
		}
	} else {
		for d, err := range f.stripe.ListDisputes(ctx, p) {
			if err != nil {
				return "", fmt.Errorf("ask Stripe about %s again: %w", o.ID, err)
			}
			if d.ID == o.ID {
				if rm, ok := disputeRemote(d, false); ok {
					now = &rm
				}
				break
			}
		}
	}
	if now == nil {
		return "", errSkip{fmt.Sprintf("Stripe no longer lists %s", o.ID)}
	}
	runID := run.FromContext(ctx).ID
	at := f.env.Now
	var what string
	err := mysql.InTx(ctx, f.env.DB, nil, func(tx *sql.Tx) error {
		var before sql.NullString
		lockSQL := sqlLockRefund
		if fx.kind == fixRecordDispute {
			lockSQL = sqlLockDispute
		}
		if err := tx.QueryRowContext(ctx, lockSQL, o.ID).Scan(&before); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var account sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT account_id FROM invoices WHERE id = ?`, fx.invoice).Scan(&account); err != nil &&
			!errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if fx.kind == fixRecordRefund {
			if _, err := tx.ExecContext(ctx, sqlRecordRefund, now.ID, now.Intent, fx.invoice, account, now.Amount, now.Currency,
				now.Status, nullStr(now.Code), now.Created, at, at, ActorJob, runID); err != nil {
				return err
			}
			what = fmt.Sprintf("recorded refund %s of %s: %s, %s", now.ID, now.Intent, money(now.Amount, now.Currency), now.Status)
		} else {
			var due sql.NullTime
			if !now.Due.IsZero() {
				due = sql.NullTime{Time: now.Due, Valid: true}
			}
			if _, err := tx.ExecContext(ctx, sqlRecordDispute, now.ID, now.Intent, fx.invoice, account, now.Amount, now.Currency,
				now.Status, nullStr(now.Code), due, now.Created, at, at, ActorJob, runID); err != nil {
				return err
			}
			what = fmt.Sprintf("recorded dispute %s of %s: %s, %s", now.ID, now.Intent, money(now.Amount, now.Currency), now.Status)
			if !now.Due.IsZero() && (now.Status == "needs_response" || now.Status == "warning_needs_response") {
				what += "; respond by " + now.Due.UTC().Format(time.RFC3339)
			}
		}
		return f.markFixed(ctx, tx, id, what, map[string]any{"before": map[string]any{"status": before.String}, "stripe": objectEvidence(now)})
	})
	return what, err
}

func equalFoldASCII(a, b string) bool {
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
