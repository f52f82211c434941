package abuse

import (
	"context"
	"strings"
	"testing"

	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

func TestTransitionsAreAppendOnlyInTheDatabase(t *testing.T) {
	db := mysqltest.New(t)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `INSERT INTO abuse_transitions
  (case_id, case_version, account_id, machine, from_state, to_state, event, reason, evidence, run_id, actor, at)
VALUES (1, 1, 42, 'dunning', 'good', 'reminded', 'remind', 'r', '{}', NULL, 'cronkit', NOW(6))`); err != nil {
		t.Fatal(err)
	}
	_, err := db.ExecContext(ctx, `UPDATE abuse_transitions SET to_state = 'resolved'`)
	if err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Fatalf("update: %v", err)
	}
	_, err = db.ExecContext(ctx, `DELETE FROM abuse_transitions`)
	if err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Fatalf("delete: %v", err)
	}
	var n int
	var to string
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*), MAX(to_state) FROM abuse_transitions`).Scan(&n, &to); err != nil || n != 1 || to != "reminded" {
		t.Fatalf("rows %d %q %v", n, to, err)
	}
	// A version is recorded once.
	_, err = db.ExecContext(ctx, `INSERT INTO abuse_transitions
  (case_id, case_version, account_id, machine, from_state, to_state, event, reason, evidence, actor, at)
VALUES (1, 1, 42, 'dunning', 'good', 'reminded', 'remind', 'again', '{}', 'cronkit', NOW(6))`)
	if !mysql.IsDuplicate(err) {
		t.Fatalf("second transition for one version: %v", err)
	}
}

func TestOneOpenCasePerAccountAndMachine(t *testing.T) {
	db := mysqltest.New(t)
	ctx := context.Background()
	insert := func(machine, state string, closed bool) error {
		closedAt := "NULL"
		if closed {
			closedAt = "NOW(6)"
		}
		_, err := db.ExecContext(ctx, `INSERT INTO abuse_cases (account_id, machine, state, version, opened_at, state_since, closed_at, evidence, updated_at)
VALUES (42, ?, ?, 1, NOW(6), NOW(6), `+closedAt+`, '{}', NOW(6))`, machine, state)
		return err
	}
	if err := insert(Dunning, StateReminded, false); err != nil {
		t.Fatal(err)
	}
	if err := insert(Dunning, StateWarned, false); !mysql.IsDuplicate(err) {
		t.Fatalf("second open dunning case: %v", err)
	}
	if err := insert(FreeCredit, StateFlagged, false); err != nil {
		t.Fatalf("the other machine may have its own: %v", err)
	}
	if err := insert(Dunning, StateResolved, true); err != nil {
		t.Fatalf("closed cases are not limited: %v", err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE abuse_cases SET state = 'resolved', closed_at = NOW(6) WHERE machine = 'dunning' AND closed_at IS NULL`); err != nil {
		t.Fatal(err)
	}
	if err := insert(Dunning, StateReminded, false); err != nil {
		t.Fatalf("a new case once the old one closed: %v", err)
	}
}
