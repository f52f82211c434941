package main

import (
	"context"
	"database/sql"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

func TestPruneUsageErrorsExit2AndWriteNothing(t *testing.T) {
	db := mysqltest.New(t)
	env := map[string]string{"CRONKIT_DB_DSN": db.DSN}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"prune", "--usage-retention", "x"}, `invalid value "x" for flag -usage-retention`},
		{[]string{"prune", "--outbox-retention", "-3d"}, `invalid value "-3d"`},
		{[]string{"prune", "--sample-retention", "-1h"}, "--sample-retention must not be negative"},
		{[]string{"prune", "--run-retention", "1h"}, "--run-retention 1h0m0s: want at least 24h"},
		{[]string{"prune", "--batch", "0"}, "--batch 0: want 1 to 100000 rows"},
		{[]string{"prune", "--outbox-retention", "7d"}, "--outbox-retention 168h0m0s: want at least 720h0m0s (or 0)"},
		{[]string{"prune", "--usage-retention", "2d"}, "--usage-retention 48h0m0s: want at least 720h0m0s (or 0)"},
		{[]string{"prune", "--sample-retention", "1d"}, "--sample-retention 24h0m0s: want at least 168h0m0s (or 0)"},
		{[]string{"prune", "--account", "5"}, "--account does not apply"},
		{[]string{"prune", "--now", "2999-01-01"}, "is in the future"},
	} {
		code, _, errOut := jobs(t, env, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, errOut, tc.want)
		}
	}
	if n := countRows(t, db.DB, "job_runs"); n != 0 {
		t.Fatalf("usage errors wrote %d job_runs rows", n)
	}
}

// seedPruneLoad is a month of hourly usage for 40 accounts to rate (October 2026,
// after a watermark at the end of September), and a backlog past every retention:
// raw usage of February, old CPU samples, sent mail and job runs.
func seedPruneLoad(t *testing.T, db *sql.DB, backlog int) {
	t.Helper()
	must := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	must(`INSERT INTO accounts (id, email, currency, created_at) SELECT seq, CONCAT('a', seq, '@example.com'), 'USD', '2026-01-01' FROM seq_1_to_40`)
	must(`INSERT INTO prices (product, currency, unit_price, valid_from) VALUES ('instance.small', 'USD', 0.05, '2026-01-01')`)
	must(`INSERT INTO billing_state (name, hour_watermark, updated_at) VALUES ('rating', '2026-09-30 23:00:00', '2026-10-01')`)
	must(`INSERT INTO usage_records (account_id, resource_id, product, hour, quantity, recorded_at)
SELECT a.seq, CONCAT('vm-', a.seq), 'instance.small', '2026-10-01' + INTERVAL h.seq HOUR, 1, '2026-10-01'
FROM seq_1_to_40 a, seq_0_to_743 h`)
	must(`INSERT INTO cloudstack_usage (identity, usage_id, usage_type, start_date, end_date, cs_account_id, content_hash,
  raw_usage, status, hour, quantity, first_seen_at, changed_at)
SELECT UNHEX(SHA2(CONCAT('old-', seq), 256)), CONCAT('old-', seq), 1, '2026-02-01' + INTERVAL (seq % 600) HOUR,
  '2026-02-01' + INTERVAL (seq % 600) HOUR + INTERVAL 3599 SECOND, 'cs', UNHEX(SHA2('c', 256)), '1', 'collected',
  '2026-02-01' + INTERVAL (seq % 600) HOUR, 1, '2026-02-02', '2026-02-02'
FROM seq_1_to_` + itoa(backlog))
	must(`INSERT INTO job_runs (id, job, host, version, args, started_at, finished_at, status, exit_code)
SELECT CONCAT('00OLD', LPAD(seq, 21, '0')), 'billing', 'h', 'v', '', '2026-01-01' + INTERVAL seq SECOND,
  '2026-01-01' + INTERVAL seq SECOND, 'ok', 0 FROM seq_1_to_` + itoa(backlog/4))
	must(`INSERT INTO mail_outbox (dedupe_key, recipient, subject, body_text, body_html, status, next_attempt_at, sent_at, created_at)
SELECT CONCAT('old:', seq), 'a@example.com', 's', 't', 'h', 'sent', '2026-01-01', '2026-01-01', '2026-01-01' FROM seq_1_to_` + itoa(backlog/4))
}

func itoa(n int) string { return strconv.Itoa(n) }

// sep is the character that adds a parameter to dsn.
func sep(dsn string) string {
	if strings.Contains(dsn, "?") {
		return "&"
	}
	return "?"
}

// runTimed runs the binary and says when it ended.
func runTimed(bin string, env []string, args ...string) (code int, out string, took time.Duration) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var b syncBuffer
	cmd.Stdout, cmd.Stderr = &b, &b
	start := time.Now()
	_ = cmd.Run()
	return cmd.ProcessState.ExitCode(), b.String(), time.Since(start)
}

// lockWaits is how many sessions of database schema wait for a row lock now.
// InnoDB refreshes these tables at most every 100ms, and not while they are read
// more often than that: sample them every lockSample.
func lockWaits(ctx context.Context, db *sql.DB, schema string) (int, error) {
	var n int
	err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.INNODB_LOCK_WAITS w
JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id
JOIN information_schema.PROCESSLIST p ON p.ID = r.trx_mysql_thread_id
WHERE p.DB = ?`, schema).Scan(&n)
	return n, err
}

const lockSample = 150 * time.Millisecond

// samplerSeesALockWait proves the load test's sampler can fail: one transaction
// holds a row, another waits for it, and lockWaits must see the wait.
func samplerSeesALockWait(t *testing.T, db *mysqltest.DB) {
	t.Helper()
	ctx := context.Background()
	holder, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback() //nolint:errcheck
	if _, err := holder.ExecContext(ctx, `UPDATE accounts SET name = 'held' WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() {
		conn, err := db.Conn(ctx)
		if err != nil {
			waited <- err
			return
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, `SET SESSION innodb_lock_wait_timeout = 10`); err != nil {
			waited <- err
			return
		}
		_, err = conn.ExecContext(ctx, `UPDATE accounts SET name = 'waiter' WHERE id = 1`)
		waited <- err
	}()
	seen := 0
	for deadline := time.Now().Add(5 * time.Second); seen == 0 && time.Now().Before(deadline); time.Sleep(lockSample) {
		if n, err := lockWaits(ctx, db.DB, db.Name); err == nil {
			seen = n
		}
	}
	_ = holder.Rollback()
	if err := <-waited; err != nil {
		t.Fatalf("the waiting update: %v", err)
	}
	if seen == 0 {
		t.Fatal("the lock-wait sampler did not see a wait it was shown: it proves nothing")
	}
}

// TestPruneUnderLoadDoesNotBlockBilling runs a prune of a large backlog while
// `cronkit billing rate` rates a month: billing must finish within a bound of its time
// alone, no session of the database may wait for a row lock (InnoDB's lock waits,
// sampled all through, the sampler first shown a wait to prove it sees one), no
// statement of billing's may wait a second for one (its sessions' lock wait timeout),
// the two runs must overlap, and the prune must finish its work.
func TestPruneUnderLoadDoesNotBlockBilling(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	bin := buildJobs(t)
	const backlog = 200000
	envFor := func(db *mysqltest.DB) []string {
		return []string{"CRONKIT_DB_DSN=" + db.DSN, "CRONKIT_NOW=2026-11-01T00:30:00Z", "CRONKIT_LOG_FORMAT=json"}
	}

	alone := mysqltest.New(t)
	seedPruneLoad(t, alone.DB, backlog)
	code, out, baseline := runTimed(bin, envFor(alone), "billing", "rate")
	if code != 0 {
		t.Fatalf("billing alone: exit %d\n%s", code, out)
	}
	var charges int
	if err := alone.QueryRow(`SELECT COUNT(*) FROM charges`).Scan(&charges); err != nil || charges != 40*744 {
		t.Fatalf("billing alone wrote %d charges (%v), want %d", charges, err, 40*744)
	}

	db := mysqltest.New(t)
	seedPruneLoad(t, db.DB, backlog)
	samplerSeesALockWait(t, db)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	// Lock waits, sampled on their own connection while both run.
	var waits, samples int
	var mu sync.Mutex
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for ctx.Err() == nil {
			if n, err := lockWaits(ctx, db.DB, db.Name); err == nil {
				mu.Lock()
				waits += n
				samples++
				mu.Unlock()
			}
			time.Sleep(lockSample)
		}
	}()

	pruneDone := make(chan time.Time, 1)
	var pruneCode int
	var pruneOut string
	go func() {
		pruneCode, pruneOut, _ = runTimed(bin, append(envFor(db), "CRONKIT_BATCH_PAUSE=0"), "prune")
		pruneDone <- time.Now()
	}()
	// Let the prune get going, then rate.
	deadline := time.Now().Add(20 * time.Second)
	for countRows(t, db.DB, "job_runs") == backlog/4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// Billing gives up on any row lock it waits a second for (exit 1): a batch
	// holding what billing needs fails the test even between two samples.
	impatient := envFor(db)
	impatient[0] += sep(db.DSN) + "innodb_lock_wait_timeout=1"
	billingStart := time.Now()
	code, out, took := runTimed(bin, impatient, "billing", "rate")
	if code != 0 {
		t.Fatalf("billing beside the prune: exit %d\n%s", code, out)
	}
	var pruneEnd time.Time
	select {
	case pruneEnd = <-pruneDone:
	case <-time.After(5 * time.Minute):
		t.Fatal("the prune did not finish within 5 minutes")
	}
	stop()
	sampler.Wait()

	t.Logf("billing rate alone %s, beside the prune %s; prune ended %s after billing started; %d lock-wait samples, %d waits seen",
		baseline.Round(time.Millisecond), took.Round(time.Millisecond), pruneEnd.Sub(billingStart).Round(time.Millisecond), samples, waits)
	if pruneCode != 0 {
		t.Fatalf("prune: exit %d\n%s", pruneCode, pruneOut)
	}
	if !pruneEnd.After(billingStart) {
		t.Fatalf("the prune ended before billing started: nothing was tested (grow the backlog)")
	}
	if bound := 3*baseline + 5*time.Second; took > bound {
		t.Fatalf("billing took %s beside the prune, over its bound %s (alone %s)", took, bound, baseline)
	}
	if waits != 0 {
		t.Fatalf("%d lock waits seen while billing and the prune ran: a batch held a lock billing needed", waits)
	}
	if err := db.QueryRow(`SELECT COUNT(*) FROM charges`).Scan(&charges); err != nil || charges != 40*744 {
		t.Fatalf("billing beside the prune wrote %d charges (%v)", charges, err)
	}
	for table, want := range map[string]int{"cloudstack_usage": 0, "mail_outbox": 0} {
		if n := countRows(t, db.DB, table); n != want {
			t.Errorf("%s: %d rows left after the prune, want %d", table, n, want)
		}
	}
	// Billing's own run is the only job_runs row left besides the prune's.
	var left int
	if err := db.QueryRow(`SELECT COUNT(*) FROM job_runs WHERE id LIKE '00OLD%'`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d old job runs left (%v)", left, err)
	}
}

// A dry run with a SELECT-only user counts and deletes nothing.
func TestPruneDryRunWithSelectOnlyUser(t *testing.T) {
	db := mysqltest.New(t)
	seedPruneLoad(t, db.DB, 1000)
	ro := db.SelectOnlyUser(t)
	env := map[string]string{"CRONKIT_DB_DSN": ro, "CRONKIT_NOW": "2026-11-01T00:30:00Z", "CRONKIT_LOG_FORMAT": "json"}
	code, out, errOut := jobs(t, env, "prune", "--dry-run", "--output", "json")
	if code != 0 {
		t.Fatalf("dry run: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{`"cloudstack_usage_pruned": 1000`, `"mail_outbox_pruned": 250`, `"job_runs_pruned": 250`} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run report lacks %s:\n%s", want, out)
		}
	}
	if n := countRows(t, db.DB, "cloudstack_usage"); n != 1000 {
		t.Fatalf("dry run deleted raw usage: %d left", n)
	}
}

// The prune takes its own lock, cronkit.<schema>.prune: held elsewhere, a run exits
// 75 at once and deletes nothing.
func TestPruneTakesItsOwnLock(t *testing.T) {
	db := mysqltest.New(t)
	seedPruneLoad(t, db.DB, 100)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var got int
	if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, 0)`, mysql.LockName(db.Name, "prune")).Scan(&got); err != nil || got != 1 {
		t.Fatalf("take the prune lock: %d %v", got, err)
	}
	env := map[string]string{"CRONKIT_DB_DSN": db.DSN, "CRONKIT_NOW": "2026-11-01T00:30:00Z", "CRONKIT_LOG_FORMAT": "json"}
	if code, out, errOut := jobs(t, env, "prune"); code != 75 {
		t.Fatalf("prune beside a held lock: exit %d\n%s\n%s", code, out, errOut)
	}
	if n := countRows(t, db.DB, "cloudstack_usage"); n != 100 {
		t.Fatalf("a locked-out prune deleted rows: %d left", n)
	}
	// Billing's lock is not prune's: a prune runs while billing's is held.
	if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, 0)`, mysql.LockName(db.Name, "billing")).Scan(&got); err != nil || got != 1 {
		t.Fatalf("take billing's lock: %d %v", got, err)
	}
	if _, err := conn.ExecContext(ctx, `DO RELEASE_LOCK(?)`, mysql.LockName(db.Name, "prune")); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := jobs(t, env, "prune"); code != 0 {
		t.Fatalf("prune beside billing's lock: exit %d\n%s\n%s", code, out, errOut)
	}
	if n := countRows(t, db.DB, "cloudstack_usage"); n != 0 {
		t.Fatalf("prune left %d raw rows", n)
	}
}

func TestRetentionFlagReadsDaysAndDurations(t *testing.T) {
	for in, want := range map[string]time.Duration{"180d": 180 * 24 * time.Hour, "0d": 0, "0": 0, "4320h": 4320 * time.Hour, "36h30m": 36*time.Hour + 30*time.Minute} {
		var d days
		if err := d.Set(in); err != nil || time.Duration(d) != want {
			t.Errorf("%q: %v %v, want %v", in, time.Duration(d), err, want)
		}
	}
	for _, in := range []string{"", "d", "-1d", "1.5d", "99999d", "soon", "10x"} {
		var d days
		if err := d.Set(in); err == nil || !strings.Contains(err.Error(), "want a number of days") {
			t.Errorf("%q accepted or badly refused: %v", in, err)
		}
	}
	d := days(90 * 24 * time.Hour)
	if d.String() != "90d" {
		t.Errorf("String() = %s, want 90d (the --help default)", d.String())
	}
}
