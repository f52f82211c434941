package abuse

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"
	gomysql "github.com/go-sql-driver/mysql"
)

// The transaction's control flow, exactly: a deadlock reruns it from the start; a
// version that moved between the lock and the write (UPDATE ... WHERE version = ?
// touching 0 rows) rolls it back before any transition, action or mail is written.
func TestApplyRetriesDeadlocksAndRollsBackOnAVersionConflict(t *testing.T) {
	db, mock, err := sqlmock.New()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := utc("2026-10-22T00:00:00Z")
	warnedAt := utc("2026-10-15T00:00:00Z")
	expect := &Case{ID: 7, AccountID: 42, Machine: Dunning, State: StateWarned, Version: 3, StateSince: warnedAt}
	caseCols := []string{"id", "account_id", "machine", "state", "version", "opened_at", "state_since", "closed_at",
		"approved_at", "approved_by", "evidence", "pending"}

	lockAccount := regexp.QuoteMeta(`SELECT id FROM accounts WHERE id = ? FOR UPDATE`)
	// Attempt 1: deadlock on the first lock.
	mock.ExpectBegin()
	mock.ExpectQuery(lockAccount).WithArgs(int64(42)).WillReturnError(&gomysql.MySQLError{Number: 1213, Message: "Deadlock found"})
	mock.ExpectRollback()
	// Attempt 2: the case is as planned, the facts still say suspend, but the version
	// moved before the write.
	mock.ExpectBegin()
	mock.ExpectQuery(lockAccount).WithArgs(int64(42)).WillReturnRows(sqlmock.NewRows([]string{"id"}).AddRow(42))
	mock.ExpectQuery(`FROM cases c\s+WHERE c.machine = \? AND c.open_account_id = \? FOR UPDATE`).WithArgs(Dunning, int64(42)).
		WillReturnRows(sqlmock.NewRows(caseCols).AddRow(7, 42, Dunning, StateWarned, 3, warnedAt, warnedAt, nil, nil, "", []byte(`{}`), 0))
	mock.ExpectQuery(`SELECT id, email, name, time_zone, status`).WithArgs(int64(42)).
		WillReturnRows(sqlmock.NewRows([]string{"id", "email", "name", "time_zone", "status", "cs"}).
			AddRow(42, "late@example.com", "Late", "UTC", "active", "cs-42"))
	mock.ExpectQuery(`FROM invoices WHERE account_id IN`).WithArgs(int64(42)).
		WillReturnRows(sqlmock.NewRows([]string{"account_id", "id", "currency", "total", "paid", "due", "retrying"}).
			AddRow(42, 1001, "EUR", 12000, 0, utc("2026-10-01T00:00:00Z"), false))
	mock.ExpectQuery(`FROM account_tags`).WithArgs(int64(42)).WillReturnRows(sqlmock.NewRows([]string{"account_id", "tag"}))
	mock.ExpectExec(`UPDATE cases SET state = \?, version = \?`).
		WithArgs(StateSuspended, 4, now, nil, nil, sqlmock.AnyArg(), sqlmock.AnyArg(), now, int64(7), 3).
		WillReturnResult(sqlmock.NewResult(0, 0))
	mock.ExpectRollback()

	tmpl, err := Templates()
	if err != nil {
		t.Fatal(err)
	}
	j := &Job{DB: db, Policy: DefaultPolicy(), Config: Config{MailFrom: testFrom}, Now: func() time.Time { return now }}
	r := newRunState(j, now, "", false, tmpl)
	planned := DunningFacts{AccountID: 42, Email: "late@example.com", TimeZone: "UTC",
		Unpaid: []UnpaidInvoice{inv(1001, "2026-10-01T00:00:00Z", 12000, 0)}}
	res, err := r.apply(context.Background(), transitionReq{machine: Dunning, account: 42, expect: expect, event: EventSuspend,
		eval: r.dunningEval(planned), actor: ActorJob, runID: "01KTESTRUN00000000000000AA"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.conflict || res.c != nil {
		t.Fatalf("result %+v, want a conflict", res)
	}
	if len(r.rep.Actions) != 0 {
		t.Fatalf("a rolled-back transition was reported: %+v", r.rep.Actions)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}
