package cases_test

import (
	"context"
	"database/sql"
	"errors"
	"regexp"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"

	"github.com/cronkit/cronkit/lib/cases"
)

// Drive's control flow, exactly: an action is attempted before its call; a
// confirmation whose transactional part fails is rolled back whole (no follow-up, no
// "done"), its error kept on the action, and the case's later actions wait.
func TestDriveRollsBackAFailedConfirmationAndStopsTheCase(t *testing.T) {
	db, mock, err := sqlmock.New()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	s := &cases.Store{DB: db, Machines: []*cases.Machine{funnel()}, Now: func() time.Time { return now }}
	cols := []string{"id", "case_id", "transition_id", "account_id", "machine", "seq", "action", "target", "payload", "attempts"}

	mock.ExpectQuery(regexp.QuoteMeta(`FROM case_actions a
WHERE a.status = 'pending' AND a.machine IN (?)`)).WithArgs("test_funnel").
		WillReturnRows(sqlmock.NewRows(cols).
			AddRow(5, 1, 2, 42, "test_funnel", 1, "send", "welcome:42", "", 0).
			AddRow(6, 1, 2, 42, "test_funnel", 9, "log", "x", "", 0))
	next := regexp.QuoteMeta(`WHERE a.case_id = ? AND a.status = 'pending' ORDER BY a.seq, a.id LIMIT 1`)
	mock.ExpectQuery(next).WithArgs(int64(1)).
		WillReturnRows(sqlmock.NewRows(cols).AddRow(5, 1, 2, 42, "test_funnel", 1, "send", "welcome:42", "", 0))
	mock.ExpectExec(regexp.QuoteMeta(`UPDATE case_actions SET attempts = attempts + 1, updated_at = ?
WHERE id = ? AND status = 'pending'`)).WithArgs(now, int64(5)).WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectBegin()
	mock.ExpectExec(`INSERT INTO outbox`).WillReturnError(errors.New("outbox is full"))
	mock.ExpectRollback()
	mock.ExpectExec(regexp.QuoteMeta(`UPDATE case_actions SET last_error = ?, updated_at = ? WHERE id = ?`)).
		WithArgs("outbox is full", now, int64(5)).WillReturnResult(sqlmock.NewResult(0, 1))

	var failed []int64
	err = s.Drive(context.Background(), cases.DriveOptions{
		Perform: func(ctx context.Context, a *cases.Action) (cases.Outcome, error) {
			if ok, err := s.Attempt(ctx, a); err != nil || !ok {
				return cases.Outcome{}, errors.New("attempt refused")
			}
			return cases.Outcome{Detail: "queued", Then: []*cases.Action{{Seq: 2, Name: "follow", Target: "y"}},
				InTx: func(ctx context.Context, tx *sql.Tx) error {
					_, err := tx.ExecContext(ctx, `INSERT INTO outbox VALUES (1)`)
					return err
				}}, nil
		},
		Failed: func(_ context.Context, caseID int64, a *cases.Action, err error) { failed = append(failed, a.ID) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(failed) != 1 || failed[0] != 5 {
		t.Fatalf("failed %v", failed)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}
