package reconcile

import (
	"context"
	"iter"
	"regexp"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"
	gomysql "github.com/go-sql-driver/mysql"

	"github.com/cronkit/cronkit/lib/payment"
	"github.com/cronkit/cronkit/lib/run"
)

// The SQL control flow, exactly: what is retried, what rolls back, what is skipped.

var mockNow = time.Date(2026, 3, 3, 3, 0, 0, 0, time.UTC)

func newMock(t *testing.T) (*Store, sqlmock.Sqlmock) {
	t.Helper()
	db, mock, err := sqlmock.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &Store{DB: db, Now: func() time.Time { return mockNow }}, mock
}

// A deadlock on a batch of findings reruns the batch's transaction from the start,
// and counts what it opened once.
func TestAddRetriesADeadlockedBatch(t *testing.T) {
	s, mock := newMock(t)
	ctx := runCtx("RUN1")
	rec, err := s.Begin(ctx, paymentsScope(dayOf(0), dayOf(1)))
	if err != nil {
		t.Fatal(err)
	}
	f := lostPayment(mockNow)
	lookup := regexp.QuoteMeta(`SELECT id, state, fingerprint FROM reconcile_findings WHERE fingerprint IN (?) FOR UPDATE`)
	mock.ExpectBegin()
	mock.ExpectQuery(lookup).WithArgs(f.Fingerprint).WillReturnRows(sqlmock.NewRows([]string{"id", "state", "fingerprint"}))
	mock.ExpectExec(`INSERT INTO reconcile_findings`).WillReturnError(&gomysql.MySQLError{Number: 1213, Message: "Deadlock found"})
	mock.ExpectRollback()
	mock.ExpectBegin()
	mock.ExpectQuery(lookup).WithArgs(f.Fingerprint).WillReturnRows(sqlmock.NewRows([]string{"id", "state", "fingerprint"}))
	mock.ExpectExec(`INSERT INTO reconcile_findings`).WillReturnResult(sqlmock.NewResult(9, 1))
	mock.ExpectExec(`INSERT INTO reconcile_finding_events`).
		WithArgs(int64(9), nil, StateOpen, "opened", ActorJob, "RUN1", f.Detail, nil, mockNow).WillReturnResult(sqlmock.NewResult(1, 1))
	mock.ExpectCommit()
	if err := rec.Add(ctx, f); err != nil {
		t.Fatal(err)
	}
	if rec.sum.Opened != 1 {
		t.Errorf("opened %d, want 1", rec.sum.Opened)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}

// A finding seen by this run (or moved on by a person) between the page read and its
// lock is not resolved; the others are, each with its event, in one transaction.
func TestFinishResolvesOnlyWhatIsStillUnseen(t *testing.T) {
	s, mock := newMock(t)
	ctx := runCtx("RUN2")
	scope := Scope{Check: "payments", Classes: []string{ClassDisputed}, From: dayOf(0), To: dayOf(1), Rechecked: []int64{30}}
	rec, err := s.Begin(ctx, scope)
	if err != nil {
		t.Fatal(err)
	}
	page := regexp.QuoteMeta(`SELECT id, state FROM reconcile_findings
WHERE class IN (?) AND state IN ('open', 'acknowledged') AND last_run_id <> ?
  AND ((window_from >= ? AND window_to <= ?) OR id IN (?)) AND id > ?`)
	lock := regexp.QuoteMeta(sqlLockFinding)
	mock.ExpectQuery(page).WithArgs(ClassDisputed, "RUN2", dayOf(0), dayOf(1), int64(30), int64(0), batch).
		WillReturnRows(sqlmock.NewRows([]string{"id", "state"}).AddRow(10, "open").AddRow(20, "open").AddRow(30, "acknowledged"))
	mock.ExpectBegin()
	mock.ExpectQuery(lock).WithArgs(int64(10)).WillReturnRows(sqlmock.NewRows([]string{"state", "last_run_id"}).AddRow("open", "RUN1"))
	mock.ExpectExec(regexp.QuoteMeta(sqlResolveFinding)).WithArgs(mockNow, mockNow, "RUN2", int64(10)).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectExec(`INSERT INTO reconcile_finding_events`).WithArgs(int64(10), StateOpen, StateResolved, "resolved", ActorJob, "RUN2",
		sqlmock.AnyArg(), nil, mockNow).WillReturnResult(sqlmock.NewResult(1, 1))
	// 20 was seen by this run after the page was read; 30 was fixed meanwhile.
	mock.ExpectQuery(lock).WithArgs(int64(20)).WillReturnRows(sqlmock.NewRows([]string{"state", "last_run_id"}).AddRow("open", "RUN2"))
	mock.ExpectQuery(lock).WithArgs(int64(30)).WillReturnRows(sqlmock.NewRows([]string{"state", "last_run_id"}).AddRow("fixed", "RUN1"))
	mock.ExpectCommit()
	mock.ExpectQuery(page).WithArgs(ClassDisputed, "RUN2", dayOf(0), dayOf(1), int64(30), int64(30), batch).
		WillReturnRows(sqlmock.NewRows([]string{"id", "state"}))
	sum, err := rec.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Resolved != 1 {
		t.Errorf("resolved %d, want 1", sum.Resolved)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}

// stubStripe answers GetPaymentIntent from a map; the lists are empty.
type stubStripe struct {
	intents map[string]payment.PaymentIntent
}

func (s *stubStripe) ListPaymentIntents(context.Context, payment.ListParams) iter.Seq2[payment.PaymentIntent, error] {
	return func(func(payment.PaymentIntent, error) bool) {}
}

func (s *stubStripe) GetPaymentIntent(_ context.Context, id string) (payment.PaymentIntent, error) {
	pi, ok := s.intents[id]
	if !ok {
		return pi, payment.ErrNotFound
	}
	return pi, nil
}

func (s *stubStripe) SearchPaymentIntents(context.Context, map[string]string) iter.Seq2[payment.PaymentIntent, error] {
	return func(func(payment.PaymentIntent, error) bool) {}
}

func (s *stubStripe) ListRefunds(context.Context, payment.RefundListParams) iter.Seq2[payment.Refund, error] {
	return func(func(payment.Refund, error) bool) {}
}

func (s *stubStripe) ListDisputes(context.Context, payment.RefundListParams) iter.Seq2[payment.Dispute, error] {
	return func(func(payment.Dispute, error) bool) {}
}

var _ Stripe = (*stubStripe)(nil)

func lostFix() fix {
	p := pi("pi_1", 1, 500, "succeeded", 3)
	return fix{kind: fixRecordPayment, class: ClassPaidNotRecorded, fingerprint: Fingerprint(ClassPaidNotRecorded, "pi_1"),
		invoice: 7, intent: &p}
}

func fixerOn(t *testing.T, s *Store, stripe Stripe) (*fixer, *run.Report) {
	t.Helper()
	rep := run.NewReport("reconcile")
	env := &CheckEnv{DB: s.DB, Store: s, Report: rep, Now: mockNow, Grace: time.Hour, Fix: true, BillingLockWait: time.Second}
	return &fixer{env: env, stripe: stripe, rep: rep}, rep
}

func expectFindingIDs(mock sqlmock.Sqlmock, fx fix, id int64) {
	mock.ExpectQuery(regexp.QuoteMeta(`SELECT id, state, fingerprint FROM reconcile_findings WHERE fingerprint IN (?)`)).
		WithArgs(fx.fingerprint).WillReturnRows(sqlmock.NewRows([]string{"id", "state", "fingerprint"}).AddRow(id, "open", fx.fingerprint))
}

func expectBillingLock(mock sqlmock.Sqlmock, got int) {
	mock.ExpectQuery(regexp.QuoteMeta(`SELECT DATABASE()`)).WillReturnRows(sqlmock.NewRows([]string{"db"}).AddRow("cronkit"))
	mock.ExpectQuery(regexp.QuoteMeta(`SELECT GET_LOCK(?, ?)`)).WithArgs("cronkit.cronkit.billing", int64(1)).
		WillReturnRows(sqlmock.NewRows([]string{"got"}).AddRow(got))
}

// An invoice that was paid meanwhile rolls the repair back before anything is
// written, and the finding stays open (reported as skipped).
func TestRecordPaymentRollsBackWhenTheInvoiceMovedOn(t *testing.T) {
	s, mock := newMock(t)
	fx := lostFix()
	f, rep := fixerOn(t, s, &stubStripe{intents: map[string]payment.PaymentIntent{"pi_1": {ID: "pi_1", AmountMinor: 500,
		AmountReceived: 500, Currency: "eur", Status: "succeeded", Created: jFrom.Add(3 * time.Hour),
		Metadata: map[string]string{"invoice_id": "7", "attempt": "1"}}}})
	expectFindingIDs(mock, fx, 5)
	expectBillingLock(mock, 1)
	mock.ExpectBegin()
	mock.ExpectQuery(regexp.QuoteMeta(sqlLockInvoice)).WithArgs(int64(7)).
		WillReturnRows(sqlmock.NewRows([]string{"account_id", "currency", "total_minor", "amount_paid_minor", "status", "attempt_count"}).
			AddRow(42, "EUR", 500, 500, "paid", 1))
	mock.ExpectQuery(regexp.QuoteMeta(sqlLockInvoicePayments)).WithArgs(int64(7)).
		WillReturnRows(sqlmock.NewRows([]string{"id", "attempt", "status", "pi"}).AddRow(1, 1, "succeeded", "pi_1"))
	mock.ExpectRollback()
	mock.ExpectExec(regexp.QuoteMeta(`DO RELEASE_LOCK(?)`)).WithArgs("cronkit.cronkit.billing").WillReturnResult(sqlmock.NewResult(0, 0))
	if err := f.apply(runCtx("RUN3"), []fix{fx}); err != nil {
		t.Fatal(err)
	}
	if len(rep.Actions) != 1 || rep.Actions[0].Kind != "fix_skipped" || rep.Actions[0].Detail !=
		"record pi_1 (EUR 5.00) as the payment of invoice 7 and mark it paid: invoice 7 is paid now" {
		t.Errorf("report: %+v", rep.Actions)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}

// Billing running (its lock held) defers the repairs to the next run: nothing is
// asked of Stripe or written.
func TestRepairsWaitForBilling(t *testing.T) {
	s, mock := newMock(t)
	fx := lostFix()
	f, rep := fixerOn(t, s, &stubStripe{})
	expectFindingIDs(mock, fx, 5)
	expectBillingLock(mock, 0)
	if err := f.apply(runCtx("RUN4"), []fix{fx}); err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || rep.Problems[0].Kind != "fix_deferred" || rep.Problems[0].Subject != "finding 5" {
		t.Errorf("report: %+v", rep.Problems)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}

// A repair whose finding a person resolved meanwhile (MarkFixed finds it no longer
// open) rolls back the whole repair.
func TestSettleRollsBackWhenTheFindingIsNoLongerOpen(t *testing.T) {
	s, mock := newMock(t)
	l := pay(3, 1, 500, "pending", "", -30)
	fx := fix{kind: fixSettleAttempt, class: ClassPaymentUnsettled, fingerprint: Fingerprint(ClassPaymentUnsettled, "payment", "3"),
		invoice: 7, local: &l, outcome: "failed", code: "not_at_provider"}
	f, rep := fixerOn(t, s, &stubStripe{})
	expectFindingIDs(mock, fx, 6)
	expectBillingLock(mock, 1)
	mock.ExpectBegin()
	mock.ExpectQuery(regexp.QuoteMeta(`SELECT status FROM invoices WHERE id = ? FOR UPDATE`)).WithArgs(int64(7)).
		WillReturnRows(sqlmock.NewRows([]string{"status"}).AddRow("open"))
	mock.ExpectQuery(regexp.QuoteMeta(sqlLockPayment)).WithArgs(int64(3)).WillReturnRows(sqlmock.NewRows([]string{"status"}).AddRow("pending"))
	mock.ExpectExec(regexp.QuoteMeta(sqlSettleAttempt)).WithArgs("failed", nil, "not_at_provider", mockNow, int64(3)).
		WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectExec(regexp.QuoteMeta(sqlSettleInvoice)).WithArgs("failed", "not_at_provider", int64(7)).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectQuery(regexp.QuoteMeta(sqlLockFinding)).WithArgs(int64(6)).
		WillReturnRows(sqlmock.NewRows([]string{"state", "last_run_id"}).AddRow("resolved", "RUN1"))
	mock.ExpectRollback()
	mock.ExpectExec(regexp.QuoteMeta(`DO RELEASE_LOCK(?)`)).WillReturnResult(sqlmock.NewResult(0, 0))
	if err := f.apply(runCtx("RUN5"), []fix{fx}); err != nil {
		t.Fatal(err)
	}
	if len(rep.Actions) != 1 || rep.Actions[0].Kind != "fix_skipped" {
		t.Errorf("report: %+v", rep.Actions)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}
