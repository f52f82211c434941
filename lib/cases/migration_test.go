package cases_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/cronkit/cronkit/lib/cases"
	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

// The columns abuse's tables had before 00050, and the tables that hold them after.
var movedColumns = []struct {
	old, new string
	columns  string
}{
	{"abuse_cases", "cases", "id, account_id, machine, state, version, opened_at, state_since, closed_at, approved_at, " +
		"approved_by, evidence, updated_at, open_account_id"},
	{"abuse_transitions", "case_transitions", "id, case_id, case_version, account_id, machine, from_state, to_state, " +
		"event, reason, evidence, run_id, actor, at"},
	{"abuse_actions", "case_actions", "id, case_id, transition_id, account_id, seq, action, target, payload, status, " +
		"attempts, outcome, last_error, created_at, updated_at, done_at"},
}

// rowsOf renders every row of table (the given columns, by id) as text, NULL told
// apart from an empty string.
func rowsOf(t *testing.T, db *sql.DB, table, columns string) []string {
	t.Helper()
	rows, err := db.Query(`SELECT ` + columns + ` FROM ` + table + ` ORDER BY id`)
	if err != nil {
		t.Fatalf("%s: %v", table, err)
	}
	defer rows.Close()
	n := len(strings.Split(columns, ","))
	var out []string
	for rows.Next() {
		vals := make([]sql.NullString, n)
		ptrs := make([]any, n)
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		parts := make([]string, n)
		for i, v := range vals {
			parts[i] = "NULL"
			if v.Valid {
				parts[i] = fmt.Sprintf("%q", v.String)
			}
		}
		out = append(out, strings.Join(parts, "|"))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func sameRows(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d rows, want %d\ngot:\n%s\nwant:\n%s", what, len(got), len(want), strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%s row %d:\n got %s\nwant %s", what, i, got[i], want[i])
		}
	}
}

// A database at the schema before lib/cases (00042), holding abuse cases in every
// shape, migrates forward with every row and value intact, ids included; abuse's old
// table names still answer, as views; new rows continue after the old ids; and the
// migration goes down and up again without losing anything.
func TestMigrationMovesAbuseRowsIntact(t *testing.T) {
	db := mysqltest.NewEmpty(t)
	ctx := context.Background()
	p, err := goose.NewProvider(goose.DialectMySQL, db.DB, mysql.Migrations())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 42); err != nil {
		t.Fatal(err)
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`INSERT INTO accounts (id, email, currency, created_at) VALUES (42, 'late@example.com', 'EUR', '2025-01-01'),
  (77, 'x7@mailinator.com', 'EUR', '2026-10-21'), (90, 'new@example.com', 'EUR', '2026-11-01')`)
	// Ids with gaps (killed transactions use up AUTO_INCREMENT values), an old closed
	// case and an open one for 42, a free-credit case confirmed by a person.
	exec(`INSERT INTO abuse_cases (id, account_id, machine, state, version, opened_at, state_since, closed_at, approved_at, approved_by, evidence, updated_at) VALUES
  (3, 42, 'dunning', 'resolved', 4, '2026-06-04 00:00:00.000001', '2026-06-25 08:15:00.5', '2026-06-25 08:15:00.5', NULL, NULL, '{"level": "none", "days_late": -1}', '2026-06-25 08:15:00.5'),
  (7, 42, 'dunning', 'termination_approved', 6, '2026-10-04 00:00:00', '2026-12-02 09:00:00.123456', NULL, '2026-12-02 09:00:00.123456', 'operator:alice', '{"operator": "alice", "reason": "no answer, 4 notices: ünïcode"}', '2026-12-02 09:00:00.123456'),
  (9, 77, 'free_credit', 'confirmed', 3, '2026-10-21 12:00:00', '2026-10-22 10:00:00', NULL, '2026-10-22 10:00:00', 'operator:bob', '{"score": 110, "signals": [{"name": "cpu", "fired": true}]}', '2026-10-22 10:00:00')`)
	exec(`INSERT INTO abuse_transitions (id, case_id, case_version, account_id, machine, from_state, to_state, event, reason, evidence, run_id, actor, at) VALUES
  (10, 3, 1, 42, 'dunning', 'good', 'reminded', 'remind', 'invoice 900 is 3 days overdue', '{"level": "reminder"}', '01JRUNAAAAAAAAAAAAAAAAAAAA', 'cronkit', '2026-06-04 00:00:00.000001'),
  (11, 3, 2, 42, 'dunning', 'reminded', 'resolved', 'resolve', 'paid: nothing unpaid', '{"level": "none"}', '01JRUNBBBBBBBBBBBBBBBBBBBB', 'cronkit', '2026-06-25 08:15:00.5'),
  (20, 7, 1, 42, 'dunning', 'good', 'warned', 'warn', 'invoice 1001 ... (suspension level, but a warning comes first)', '{"level": "suspension"}', '01JRUNCCCCCCCCCCCCCCCCCCCC', 'cronkit', '2026-10-04 00:00:00'),
  (21, 7, 2, 42, 'dunning', 'warned', 'termination_approved', 'approve', 'approve by alice: no answer, 4 notices: ünïcode', '{"operator": "alice"}', NULL, 'operator:alice', '2026-12-02 09:00:00.123456'),
  (30, 9, 1, 77, 'free_credit', 'good', 'flagged', 'flag', 'score 110 >= 60', '{"score": 110}', '01JRUNDDDDDDDDDDDDDDDDDDDD', 'cronkit', '2026-10-21 12:00:00')`)
	exec(`INSERT INTO abuse_actions (id, case_id, transition_id, account_id, seq, action, target, payload, status, attempts, outcome, last_error, created_at, updated_at, done_at) VALUES
  (100, 7, 20, 42, 1, 'stop_vms', 'cs-42', NULL, 'done', 0, '2 VMs', NULL, '2026-10-22 00:00:00', '2026-10-22 00:00:01', '2026-10-22 00:00:01'),
  (101, 7, 20, 42, 2, 'stop_vm', 'vm-42a', NULL, 'done', 2, 'done', NULL, '2026-10-22 00:00:01', '2026-10-22 00:00:05', '2026-10-22 00:00:05'),
  (102, 7, 20, 42, 2, 'stop_vm', 'vm-42b', NULL, 'pending', 3, '', 'stopVirtualMachine: 530 internal error', '2026-10-22 00:00:01', '2026-10-22 00:15:00', NULL),
  (103, 7, 20, 42, 9, 'notify', 'late@example.com', '{"key": "abuse:dunning:case:7:suspension", "message": {"To": "late@example.com"}}', 'pending', 0, '', NULL, '2026-10-22 00:00:00', '2026-10-22 00:00:00', NULL),
  (104, 9, 30, 77, 1, 'disable_account', 'cs-77', NULL, 'cancelled', 0, 'cancelled by clear', NULL, '2026-10-21 12:00:00', '2026-10-21 13:00:00', NULL)`)
	before := map[string][]string{}
	for _, m := range movedColumns {
		before[m.old] = rowsOf(t, db.DB, m.old, m.columns)
	}

	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
	check := func(stage string) {
		t.Helper()
		for _, m := range movedColumns {
			sameRows(t, stage+": "+m.new, rowsOf(t, db.DB, m.new, m.columns), before[m.old])
			sameRows(t, stage+": view "+m.old, rowsOf(t, db.DB, m.old, m.columns), before[m.old])
		}
		got := rowsOf(t, db.DB, "case_actions a JOIN cases c ON c.id = a.case_id", "a.id, a.machine = c.machine")
		for _, r := range got {
			if !strings.HasSuffix(r, `|"1"`) {
				t.Errorf("%s: an action's machine is not its case's: %s", stage, r)
			}
		}
	}
	check("up")

	// Down to abuse's own tables (past the later jobs' migrations) and up again: still
	// everything.
	if _, err := p.DownTo(ctx, 42); err != nil {
		t.Fatal(err)
	}
	for _, m := range movedColumns {
		sameRows(t, "down: "+m.old, rowsOf(t, db.DB, m.old, m.columns), before[m.old])
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
	check("up again")

	// The store reads the moved cases; the next case and transition continue after
	// the old ids; the audit trail is still append-only.
	s := &cases.Store{DB: db.DB, Machines: []*cases.Machine{funnel()}, Now: func() time.Time { return t0 }}
	res, err := s.Apply(ctx, welcome(90))
	if err != nil {
		t.Fatal(err)
	}
	if res.Case.ID != 10 || res.TransitionID != 31 {
		t.Fatalf("new case %d, transition %d: want 10 and 31, after the moved ids", res.Case.ID, res.TransitionID)
	}
	dunning := &cases.Store{DB: db.DB, Machines: []*cases.Machine{{Name: "dunning", Initial: "good", Open: []string{"termination_approved"}}}}
	c, err := dunning.Case(ctx, db.DB, 7)
	if err != nil || c.State != "termination_approved" || c.Version != 6 || c.ApprovedBy != "operator:alice" || c.PendingActions != 2 {
		t.Fatalf("moved case 7: %+v %v", c, err)
	}
	if _, err := db.Exec(`UPDATE case_transitions SET reason = 'rewritten' WHERE id = 21`); err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Fatalf("rewriting a moved transition: %v", err)
	}
	// The old names are for reading.
	if _, err := db.Exec(`DELETE FROM abuse_transitions WHERE id = 21`); err == nil {
		t.Fatal("deleted through the compatibility view")
	}

	// Down is refused once another job's machine has cases: they would be lost.
	if _, err := p.DownTo(ctx, 42); err == nil || !strings.Contains(err.Error(), "cases of other machines exist") {
		t.Fatalf("down with another machine's cases: %v", err)
	}
}
