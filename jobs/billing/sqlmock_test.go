package billing

import (
	"database/sql"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"
	gomysql "github.com/go-sql-driver/mysql"

	"github.com/cronkit/cronkit/lib/payment"
)

// sqlmock proves the job sends the SQL it means to, in the transactions it means
// to, and rolls back; the MariaDB tests prove that SQL right.

func newMock(t *testing.T) (*sql.DB, sqlmock.Sqlmock) {
	t.Helper()
	db, mock, err := sqlmock.New(sqlmock.QueryMatcherOption(sqlmock.QueryMatcherEqual))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db, mock
}

func statsRows() *sqlmock.Rows {
	return sqlmock.NewRows([]string{"hour", "currency", "problem", "count", "sum"}).
		AddRow(hr(6), "USD", nil, 1, "0.700000").
		AddRow(hr(5), "USD", nil, 2, "1.500000").
		AddRow(hr(5), "EUR", nil, 1, "0.250000").
		AddRow(hr(5), nil, "unknown_account", 1, nil)
}

// A catch-up rates several hours in one statement and one transaction, with the
// watermark at the last of them; the ids around the INSERT say which charges it
// wrote, and the summary reads those back afterwards.
func TestRateHoursCommitsChargesWithTheWatermark(t *testing.T) {
	db, mock := newMock(t)
	from, to, now := hr(5), hr(8), hr(9)
	mock.ExpectBegin()
	expectMaxChargeID(mock, 41)
	mock.ExpectExec(insertHoursSQL()).WithArgs(now, from, from, from, to).WillReturnResult(sqlmock.NewResult(0, 5))
	expectMaxChargeID(mock, 45)
	mock.ExpectExec(setWatermarkSQL).WithArgs(hr(7), now).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectCommit()
	mock.ExpectQuery(hourStatsSQL).WithArgs(int64(41), int64(45), from, to, int64(41), from, to).WillReturnRows(statsRows())
	j := &Job{DB: db}
	w, err := j.rateHours(testCtx(), from, to, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := (ratedChunk{chunk{from, to}, 41, 45}); w != want {
		t.Fatalf("rated %+v, want %+v", w, want)
	}
	stats, err := j.summarise(testCtx(), w)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range stats {
		got = append(got, fmtHour(s.hour)+" "+s.String())
	}
	want := []string{
		"2025-03-01T05:00Z 4 charges: EUR 0.250000, USD 1.500000; unrated: unknown_account 1",
		"2025-03-01T06:00Z 1 charge: USD 0.700000",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("stats %q, want %q", got, want)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}

func TestRateHoursRollsBackWhenAStepFails(t *testing.T) {
	from, to, now := hr(5), hr(6), hr(7)
	boom := errors.New("connection lost")
	for _, tc := range []struct {
		name   string
		expect func(mock sqlmock.Sqlmock)
	}{
		{"last charge", func(mock sqlmock.Sqlmock) {
			mock.ExpectQuery(maxChargeIDSQL).WillReturnError(boom)
		}},
		{"insert", func(mock sqlmock.Sqlmock) {
			expectMaxChargeID(mock, 41)
			mock.ExpectExec(insertHoursSQL()).WithArgs(now, from, from, from, to).WillReturnError(boom)
		}},
		{"last charge inserted", func(mock sqlmock.Sqlmock) {
			expectMaxChargeID(mock, 41)
			mock.ExpectExec(insertHoursSQL()).WithArgs(now, from, from, from, to).WillReturnResult(sqlmock.NewResult(0, 4))
			mock.ExpectQuery(maxChargeIDSQL).WillReturnError(boom)
		}},
		{"watermark", func(mock sqlmock.Sqlmock) {
			expectMaxChargeID(mock, 41)
			mock.ExpectExec(insertHoursSQL()).WithArgs(now, from, from, from, to).WillReturnResult(sqlmock.NewResult(0, 4))
			expectMaxChargeID(mock, 45)
			mock.ExpectExec(setWatermarkSQL).WithArgs(from, now).WillReturnError(boom)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, mock := newMock(t)
			mock.ExpectBegin()
			tc.expect(mock)
			mock.ExpectRollback() // and no commit: nothing of the hour is kept
			_, err := (&Job{DB: db}).rateHours(testCtx(), from, to, now)
			if !errors.Is(err, boom) || !strings.Contains(err.Error(), "rate hour 2025-03-01T05:00Z") {
				t.Fatalf("err = %v", err)
			}
			if err := mock.ExpectationsWereMet(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRateHoursRetriesADeadlockFromScratch(t *testing.T) {
	db, mock := newMock(t)
	from, to, now := hr(5), hr(6), hr(7)
	deadlock := &gomysql.MySQLError{Number: 1213, Message: "Deadlock found"}
	mock.ExpectBegin()
	expectMaxChargeID(mock, 41)
	mock.ExpectExec(insertHoursSQL()).WithArgs(now, from, from, from, to).WillReturnError(deadlock)
	mock.ExpectRollback()
	mock.ExpectBegin()
	expectMaxChargeID(mock, 41)
	mock.ExpectExec(insertHoursSQL()).WithArgs(now, from, from, from, to).WillReturnResult(sqlmock.NewResult(0, 4))
	expectMaxChargeID(mock, 45)
	mock.ExpectExec(setWatermarkSQL).WithArgs(from, now).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectCommit()
	if _, err := (&Job{DB: db}).rateHours(testCtx(), from, to, now); err != nil {
		t.Fatal(err)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}

const (
	sqlStartInvoice = `UPDATE invoices SET attempt_count = ? WHERE id = ? AND attempt_count = ? AND status = 'open'`
	sqlStartPayment = `INSERT INTO payments (invoice_id, account_id, attempt, idempotency_key, amount_minor, currency,
  provider_customer_id, provider_payment_method_id, status, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)`
	sqlRecordPayment = `UPDATE payments SET status = ?, provider_payment_id = ?, decline_code = ?, updated_at = ?
WHERE id = ? AND status = 'pending'`
	sqlRecordPaid = `UPDATE invoices SET status = 'paid', paid_at = ?, amount_paid_minor = ?, collection = 'succeeded',
  next_attempt_at = NULL, last_decline_code = NULL WHERE id = ? AND status = 'open'`
	sqlRecordRetry = `UPDATE invoices SET collection = 'retrying', next_attempt_at = ?, last_decline_code = ? WHERE id = ? AND status = 'open'`
)

func testAttempt() *attempt {
	return &attempt{paymentID: 77, invoiceID: 12, account: 3, n: 2, key: IdempotencyKey(12, 2), amountMinor: 1999,
		currency: "EUR", customer: "cus_3", card: "pm_card_visa", openedAt: hr(0), period: t0.AddDate(0, -1, 0)}
}

func TestStartAttemptCommitsThePendingRowBeforeTheCall(t *testing.T) {
	db, mock := newMock(t)
	a, now := testAttempt(), hr(30)
	mock.ExpectBegin()
	mock.ExpectExec(sqlStartInvoice).WithArgs(2, int64(12), 1).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectExec(sqlStartPayment).WithArgs(int64(12), int64(3), 2, "cronkit-invoice-12-attempt-2", int64(1999), "EUR",
		"cus_3", sql.NullString{String: "pm_card_visa", Valid: true}, now, now).WillReturnResult(sqlmock.NewResult(88, 1))
	mock.ExpectCommit()
	ok, err := (&Job{DB: db}).startAttempt(testCtx(), a, now)
	if err != nil || !ok || a.paymentID != 88 {
		t.Fatalf("start: %v %v %d", ok, err, a.paymentID)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}

func TestStartAttemptRollsBackWhenThePaymentRowFails(t *testing.T) {
	db, mock := newMock(t)
	a, now := testAttempt(), hr(30)
	dup := &gomysql.MySQLError{Number: 1062, Message: "Duplicate entry"}
	mock.ExpectBegin()
	mock.ExpectExec(sqlStartInvoice).WithArgs(2, int64(12), 1).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectExec(sqlStartPayment).WillReturnError(dup)
	mock.ExpectRollback()
	ok, err := (&Job{DB: db}).startAttempt(testCtx(), a, now)
	if ok || !errors.Is(err, dup) {
		t.Fatalf("start: %v %v", ok, err)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}

func TestRecordOutcome(t *testing.T) {
	now := hr(30)
	succeeded := payment.ChargeResult{Outcome: payment.OutcomeSucceeded, PaymentIntentID: "pi_1", AmountMinor: 1999, Currency: "eur"}
	declined := payment.ChargeResult{Outcome: payment.OutcomeSoftDecline, PaymentIntentID: "pi_2", DeclineCode: "insufficient_funds"}
	pi := func(id string) sql.NullString { return sql.NullString{String: id, Valid: true} }
	boom := errors.New("server has gone away")
	for _, tc := range []struct {
		name    string
		res     payment.ChargeResult
		expect  func(mock sqlmock.Sqlmock)
		wantErr bool
	}{
		{"paid", succeeded, func(mock sqlmock.Sqlmock) {
			mock.ExpectExec(sqlRecordPayment).WithArgs("succeeded", pi("pi_1"), sql.NullString{}, now, int64(77)).
				WillReturnResult(sqlmock.NewResult(0, 1))
			mock.ExpectExec(sqlRecordPaid).WithArgs(now, int64(1999), int64(12)).WillReturnResult(sqlmock.NewResult(0, 1))
			mock.ExpectCommit()
		}, false},
		{"soft decline: next attempt on the schedule", declined, func(mock sqlmock.Sqlmock) {
			mock.ExpectExec(sqlRecordPayment).WithArgs("soft_declined", pi("pi_2"), pi("insufficient_funds"), now, int64(77)).
				WillReturnResult(sqlmock.NewResult(0, 1))
			// attempt 2 failed: attempt 3 at opened + 3 days
			mock.ExpectExec(sqlRecordRetry).WithArgs(hr(72), pi("insufficient_funds"), int64(12)).WillReturnResult(sqlmock.NewResult(0, 1))
			mock.ExpectCommit()
		}, false},
		{"replay of a recorded attempt changes nothing", succeeded, func(mock sqlmock.Sqlmock) {
			mock.ExpectExec(sqlRecordPayment).WithArgs("succeeded", pi("pi_1"), sql.NullString{}, now, int64(77)).
				WillReturnResult(sqlmock.NewResult(0, 0))
			mock.ExpectCommit()
		}, false},
		{"invoice update fails: the payment stays pending", succeeded, func(mock sqlmock.Sqlmock) {
			mock.ExpectExec(sqlRecordPayment).WithArgs("succeeded", pi("pi_1"), sql.NullString{}, now, int64(77)).
				WillReturnResult(sqlmock.NewResult(0, 1))
			mock.ExpectExec(sqlRecordPaid).WithArgs(now, int64(1999), int64(12)).WillReturnError(boom)
			mock.ExpectRollback()
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, mock := newMock(t)
			mock.ExpectBegin()
			tc.expect(mock)
			_, err := (&Job{DB: db}).recordOutcome(testCtx(), testAttempt(), tc.res, now)
			if (err != nil) != tc.wantErr || (tc.wantErr && !errors.Is(err, boom)) {
				t.Fatalf("err = %v", err)
			}
			if err := mock.ExpectationsWereMet(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCloseRollsBackTheWholeInvoice(t *testing.T) {
	db, mock := newMock(t)
	now := april.Add(20 * time.Minute)
	c := &closer{j: &Job{DB: db}, now: now, planned: map[int64]Micros{}}
	p := &invoicePlan{account: 3, period: t0, currency: "USD", subtotal: 2_000_000, creditApplied: 500_000, totalMinor: 150, charges: 2,
		lines:   []usageLine{{product: "volume.gb", quantity: "4.000000", amount: 2_000_000}},
		credits: []creditUse{{id: 9, amount: 500_000}}}
	mock.ExpectBegin()
	mock.ExpectExec(`INSERT INTO invoices (account_id, period_start, currency, subtotal, credit_applied, total_minor, status, created_at)
VALUES (?, ?, ?, ?, ?, ?, 'draft', ?)`).WithArgs(int64(3), t0, "USD", "2.000000", "0.500000", int64(150), now).WillReturnResult(sqlmock.NewResult(41, 1))
	mock.ExpectExec(`INSERT INTO invoice_lines (invoice_id, kind, product, quantity, amount) VALUES (?, 'usage', ?, ?, ?)`).
		WithArgs(int64(41), "volume.gb", "4.000000", "2.000000").WillReturnResult(sqlmock.NewResult(1, 1))
	mock.ExpectExec(`INSERT INTO invoice_lines (invoice_id, kind, product, quantity, amount) VALUES (?, 'credit', ?, 1, ?)`).
		WithArgs(int64(41), "credit:9", "-0.500000").WillReturnResult(sqlmock.NewResult(2, 1))
	mock.ExpectExec(`INSERT INTO credit_applications (credit_id, invoice_id, amount) VALUES (?, ?, ?)`).
		WithArgs(int64(9), int64(41), "0.500000").WillReturnResult(sqlmock.NewResult(0, 1))
	// Someone else attached one of the charges meanwhile: the invoice must not open.
	mock.ExpectExec(`UPDATE charges SET invoice_id = ?
WHERE account_id = ? AND hour >= ? AND hour < ? AND status = 'rated' AND invoice_id IS NULL`).
		WithArgs(int64(41), int64(3), t0, april).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectRollback()
	err := func() error {
		tx, err := db.Begin()
		if err != nil {
			return err
		}
		if _, err := c.write(testCtx(), tx, p); err != nil {
			_ = tx.Rollback()
			return err
		}
		return tx.Commit()
	}()
	if err == nil || !strings.Contains(err.Error(), "1 rows changed, planned 2") {
		t.Fatalf("err = %v", err)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}

// expectMaxChargeID is a read of the last charge id, before and after a chunk's
// INSERT: the ids hourStatsSQL reads the chunk's new charges between.
func expectMaxChargeID(mock sqlmock.Sqlmock, id int64) {
	mock.ExpectQuery(maxChargeIDSQL).WillReturnRows(sqlmock.NewRows([]string{"id"}).AddRow(id))
}
