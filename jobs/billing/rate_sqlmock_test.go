package billing

import (
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"
	gomysql "github.com/go-sql-driver/mysql"
	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/run"
)

const (
	sqlChunkProbe = `SELECT hour FROM usage_records WHERE hour >= ? AND hour < ?
ORDER BY hour LIMIT 1 OFFSET ?`
	sqlHorizonLock = `SELECT COUNT(*) FROM billing_state WHERE name = 'rating' LOCK IN SHARE MODE`
	sqlLateHours   = `SELECT DISTINCT hour FROM usage_records
WHERE recorded_at >= ? AND hour <= ? ORDER BY hour`
)

func testRater(db *sql.DB, now time.Time, st ratingState) *rater {
	log := zerolog.Nop()
	return &rater{j: &Job{DB: db}, rep: run.NewReport("billing"), now: now, log: &log, st: st, seen: map[chargeKey]bool{}}
}

func expectHorizon(mock sqlmock.Sqlmock, now time.Time, oldestTrx, longestStmt any, fresh bool) {
	mock.ExpectBegin()
	mock.ExpectQuery(sqlHorizonLock).WillReturnRows(sqlmock.NewRows([]string{"n"}).AddRow(1))
	mock.ExpectQuery(scanHorizonSQL).WillReturnRows(sqlmock.NewRows([]string{"now", "trx", "stmt", "fresh"}).
		AddRow(now, oldestTrx, longestStmt, fresh))
	mock.ExpectCommit()
}

// A stale INNODB_TRX (our own transaction missing) is read again after a pause; the
// mark is then a second before the oldest of NOW(), the oldest writing transaction
// and the oldest running statement.
func TestScanHorizonRetriesAStaleCacheAndTakesTheOldestWorkInFlight(t *testing.T) {
	db, mock := newMock(t)
	now := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	expectHorizon(mock, now, nil, nil, false)
	expectHorizon(mock, now.Add(200*time.Millisecond), now.Add(-30*time.Second), int64(45_000_000), true)
	mark, err := testRater(db, hr(3), ratingState{}).scanHorizon(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	// The statement began 45 s before the second read: 44.8 s before now.
	if want := now.Add(-44*time.Second - 800*time.Millisecond - horizonSlack); !mark.Equal(want) {
		t.Fatalf("mark %s, want %s", mark, want)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}

func TestScanHorizonWithoutProcessFallsBackToTheMargin(t *testing.T) {
	db, mock := newMock(t)
	now := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	mock.ExpectBegin()
	mock.ExpectQuery(sqlHorizonLock).WillReturnRows(sqlmock.NewRows([]string{"n"}).AddRow(1))
	mock.ExpectQuery(scanHorizonSQL).WillReturnError(&gomysql.MySQLError{Number: 1227, Message: "Access denied; you need (at least one of) the PROCESS privilege(s)"})
	mock.ExpectRollback()
	mock.ExpectQuery(`SELECT NOW(6)`).WillReturnRows(sqlmock.NewRows([]string{"now"}).AddRow(now))
	r := testRater(db, hr(3), ratingState{})
	mark, err := r.scanHorizon(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	if !mark.Equal(now.Add(-lateMargin)) {
		t.Fatalf("mark %s", mark)
	}
	if len(r.rep.Actions) != 1 || r.rep.Actions[0].Kind != "late_scan" || !strings.HasPrefix(r.rep.Actions[0].Detail, "no PROCESS privilege") {
		t.Fatalf("actions %+v", r.rep.Actions)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}

// expectChunk is chunkEnd from first, with fewer than rateChunkRows rows left
// before before and no price boundary.
func expectChunk(mock sqlmock.Sqlmock, first, before time.Time) {
	mock.ExpectQuery(sqlChunkProbe).WithArgs(first, before, rateChunkRows).WillReturnRows(sqlmock.NewRows([]string{"hour"}))
	mock.ExpectQuery(nextPriceBoundarySQL).WithArgs(first, first).WillReturnRows(sqlmock.NewRows([]string{"t"}).AddRow(nil))
}

func compareRows() *sqlmock.Rows {
	return sqlmock.NewRows([]string{"hour", "account_id", "product", "quantity", "amount", "currency", "problem",
		"exists", "old_quantity", "old_amount", "old_currency", "old_problem", "closed"})
}

// The late scan: the mark is read before anything else, the late keys of each hour
// are computed once into a temporary table, reported and written from it in one
// transaction per hour, and the mark is recorded last, so a run that dies in
// between scans the same rows again.
func TestLateScanComparesAndAppliesPerHourThenRecordsTheMark(t *testing.T) {
	now := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	since, wm := now.Add(-time.Hour), hr(8)
	st := ratingState{watermark: sql.NullTime{Time: wm, Valid: true}, lateScanFrom: sql.NullTime{Time: since, Valid: true}}
	for _, tc := range []struct {
		name             string
		diffs            *sqlmock.Rows
		updates, inserts int
	}{
		{"a late key and a new one", compareRows().AddRow(hr(2), 1, "instance.small", "3.000000", "0.045000", "USD", nil,
			true, "1.000000", "0.015000", "USD", nil, false).AddRow(hr(2), 2, "instance.small", "1.000000", "0.015000", "USD", nil,
			false, nil, nil, nil, nil, false), 1, 1},
		{"nothing differs", compareRows(), 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, mock := newMock(t)
			expectHorizon(mock, now, nil, nil, true)
			mock.ExpectQuery(sqlLateHours).WithArgs(since, wm).WillReturnRows(sqlmock.NewRows([]string{"hour"}).AddRow(hr(2)).AddRow(hr(5)))
			expectChunk(mock, hr(2), hr(9))
			mock.ExpectBegin()
			mock.ExpectExec(createDiffSQL(aggLate())).WithArgs(hr(2), hr(2), hr(2), hr(3), since).WillReturnResult(sqlmock.NewResult(0, 1))
			mock.ExpectQuery(diffCountsSQL).WillReturnRows(sqlmock.NewRows([]string{"u", "i"}).AddRow(tc.updates, tc.inserts))
			mock.ExpectQuery(diffClosedSQL).WillReturnRows(compareRows())
			mock.ExpectQuery(diffListSQL).WithArgs(int64(reportCap)).WillReturnRows(tc.diffs)
			if tc.updates > 0 {
				mock.ExpectExec(updateDiffSQL).WithArgs(hr(10)).WillReturnResult(sqlmock.NewResult(0, 1))
			}
			if tc.inserts > 0 {
				mock.ExpectExec(insertDiffSQL).WithArgs(hr(10)).WillReturnResult(sqlmock.NewResult(0, 1))
			}
			mock.ExpectExec(dropDiffSQL).WillReturnResult(sqlmock.NewResult(0, 0))
			mock.ExpectCommit()
			expectChunk(mock, hr(5), hr(9))
			mock.ExpectBegin()
			mock.ExpectExec(createDiffSQL(aggLate())).WithArgs(hr(5), hr(5), hr(5), hr(6), since).WillReturnResult(sqlmock.NewResult(0, 0))
			mock.ExpectQuery(diffCountsSQL).WillReturnRows(sqlmock.NewRows([]string{"u", "i"}).AddRow(0, 0))
			mock.ExpectQuery(diffClosedSQL).WillReturnRows(compareRows())
			mock.ExpectQuery(diffListSQL).WithArgs(int64(reportCap - tc.updates - tc.inserts)).WillReturnRows(compareRows())
			mock.ExpectExec(dropDiffSQL).WillReturnResult(sqlmock.NewResult(0, 0))
			mock.ExpectCommit()
			mock.ExpectExec(setLateScanSQL).WithArgs(now.Add(-horizonSlack), hr(10)).WillReturnResult(sqlmock.NewResult(0, 2))
			r := testRater(db, hr(10), st)
			if err := r.lateScan(testCtx()); err != nil {
				t.Fatal(err)
			}
			if tc.updates > 0 && (r.rep.Counts["charges_rerated"] != 2 || len(r.rep.Actions) != 2 ||
				r.rep.Actions[0].Subject != "account 1 instance.small 2025-03-01T02:00Z") {
				t.Fatalf("report %+v %+v", r.rep.Counts, r.rep.Actions)
			}
			if err := mock.ExpectationsWereMet(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// When the re-rating fails, the mark stays where it was.
func TestLateScanKeepsTheMarkWhenReRatingFails(t *testing.T) {
	db, mock := newMock(t)
	now := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	since, wm := now.Add(-time.Hour), hr(8)
	st := ratingState{watermark: sql.NullTime{Time: wm, Valid: true}, lateScanFrom: sql.NullTime{Time: since, Valid: true}}
	expectHorizon(mock, now, nil, nil, true)
	mock.ExpectQuery(sqlLateHours).WithArgs(since, wm).WillReturnRows(sqlmock.NewRows([]string{"hour"}).AddRow(hr(2)))
	expectChunk(mock, hr(2), hr(9))
	mock.ExpectBegin()
	mock.ExpectExec(createDiffSQL(aggLate())).WithArgs(hr(2), hr(2), hr(2), hr(3), since).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectQuery(diffCountsSQL).WillReturnRows(sqlmock.NewRows([]string{"u", "i"}).AddRow(1, 0))
	mock.ExpectQuery(diffClosedSQL).WillReturnRows(compareRows())
	mock.ExpectQuery(diffListSQL).WithArgs(int64(reportCap)).WillReturnRows(compareRows().AddRow(hr(2), 1, "instance.small",
		"3.000000", "0.045000", "USD", nil, true, "1.000000", "0.015000", "USD", nil, false))
	mock.ExpectExec(updateDiffSQL).WithArgs(hr(10)).WillReturnError(&gomysql.MySQLError{Number: 1264, Message: "Out of range value"})
	mock.ExpectRollback() // and no setLateScanSQL
	err := testRater(db, hr(10), st).lateScan(testCtx())
	if err == nil || !strings.Contains(err.Error(), "late usage scan of hour 2025-03-01T02:00Z: re-rate") {
		t.Fatalf("err = %v", err)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}

const sqlNextUsageHour = `SELECT MIN(hour) FROM usage_records WHERE hour >= ? AND hour < ?`

// A chunk is summarised after its commit, beside the next chunk's statement: when
// reading it back fails, the run fails with the chunk still rated (committed with its
// watermark) and the closing watermark not written.
func TestRateNewHoursFailsWhenTheSummaryFailsAfterTheCommit(t *testing.T) {
	db, mock := newMock(t)
	mock.MatchExpectationsInOrder(false) // the read-ahead runs beside the chunk's transaction
	now := hr(9).Add(20 * time.Minute)
	cutoff := floorHour(now.Add(-DefaultSettleDelay))
	boom := errors.New("connection lost")
	mock.ExpectQuery(sqlNextUsageHour).WithArgs(hr(5), cutoff).WillReturnRows(sqlmock.NewRows([]string{"h"}).AddRow(hr(5)))
	expectChunk(mock, hr(5), cutoff)
	mock.ExpectQuery(sqlNextUsageHour).WithArgs(cutoff, cutoff).WillReturnRows(sqlmock.NewRows([]string{"h"}).AddRow(nil))
	mock.ExpectBegin()
	expectMaxChargeID(mock, 41)
	mock.ExpectExec(insertHoursSQL()).WithArgs(now, hr(5), hr(5), hr(5), cutoff).WillReturnResult(sqlmock.NewResult(0, 4))
	expectMaxChargeID(mock, 45)
	mock.ExpectExec(setWatermarkSQL).WithArgs(cutoff.Add(-time.Hour), now).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectCommit()
	mock.ExpectQuery(hourStatsSQL).WithArgs(int64(41), int64(45), hr(5), cutoff, int64(41), hr(5), cutoff).WillReturnError(boom)
	r := testRater(db, now, ratingState{watermark: sql.NullTime{Time: hr(4), Valid: true}})
	err := r.rateNewHours(testCtx())
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "summarise rated hours 2025-03-01T05:00Z to ") {
		t.Fatalf("err = %v", err)
	}
	if err := mock.ExpectationsWereMet(); err != nil { // the commit included, no second watermark
		t.Fatal(err)
	}
}
