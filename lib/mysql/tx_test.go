package mysql

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/DATA-DOG/go-sqlmock"
	gomysql "github.com/go-sql-driver/mysql"
)

func TestInTxCommits(t *testing.T) {
	db, mock, err := sqlmock.New()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	mock.ExpectBegin()
	mock.ExpectExec("UPDATE t").WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectCommit()
	err = InTx(context.Background(), db, nil, func(tx *sql.Tx) error {
		_, err := tx.Exec("UPDATE t SET x = 1")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}

func TestInTxRollsBackOnError(t *testing.T) {
	db, mock, err := sqlmock.New()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	boom := errors.New("boom")
	mock.ExpectBegin()
	mock.ExpectExec("UPDATE t").WillReturnError(boom)
	mock.ExpectRollback()
	err = InTx(context.Background(), db, nil, func(tx *sql.Tx) error {
		_, err := tx.Exec("UPDATE t SET x = 1")
		return err
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}

func TestInTxRetriesDeadlockThenGivesUp(t *testing.T) {
	db, mock, err := sqlmock.New()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deadlock := &gomysql.MySQLError{Number: 1213, Message: "Deadlock found"}
	// Two deadlocks, then success on the third attempt.
	for i := 0; i < 2; i++ {
		mock.ExpectBegin()
		mock.ExpectExec("UPDATE t").WillReturnError(deadlock)
		mock.ExpectRollback()
	}
	mock.ExpectBegin()
	mock.ExpectExec("UPDATE t").WillReturnResult(sqlmock.NewResult(0, 1))
	mock.ExpectCommit()
	calls := 0
	err = InTx(context.Background(), db, nil, func(tx *sql.Tx) error {
		calls++
		_, err := tx.Exec("UPDATE t SET x = 1")
		return err
	})
	if err != nil || calls != 3 {
		t.Fatalf("err = %v after %d calls", err, calls)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}

	// Three deadlocks in a row: the error comes back.
	for i := 0; i < 3; i++ {
		mock.ExpectBegin()
		mock.ExpectExec("UPDATE t").WillReturnError(deadlock)
		mock.ExpectRollback()
	}
	err = InTx(context.Background(), db, nil, func(tx *sql.Tx) error {
		_, err := tx.Exec("UPDATE t SET x = 1")
		return err
	})
	if !IsRetryable(err) {
		t.Fatalf("want the deadlock back, got %v", err)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}

func TestInTxCommitFailureIsReturned(t *testing.T) {
	db, mock, err := sqlmock.New()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	mock.ExpectBegin()
	mock.ExpectCommit().WillReturnError(errors.New("connection lost"))
	err = InTx(context.Background(), db, nil, func(tx *sql.Tx) error { return nil })
	if err == nil || err.Error() != "commit: connection lost" {
		t.Fatalf("err = %v", err)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Fatal(err)
	}
}
