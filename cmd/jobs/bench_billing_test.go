package main

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

// The billing benchmarks print ratios against baselines measured in the same run on
// the same server (make bench); they never assert timings.

func needBench(b *testing.B) {
	b.Helper()
	if os.Getenv("CRONKIT_BENCH") != "1" {
		b.Skip("set CRONKIT_BENCH=1 (make bench)")
	}
}

// benchBinary builds jobs as `make build` does (static, stripped): the binary cron
// runs is the one measured.
func benchBinary(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "jobs")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build jobs: %v\n%s", err, out)
	}
	return bin
}

// runMeasured runs the binary and returns its wall time and peak RSS in KiB.
func runMeasured(b *testing.B, bin string, env []string, args ...string) (time.Duration, int64, int, string) {
	b.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	_ = cmd.Run()
	elapsed := time.Since(start)
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss // KiB on Linux
	}
	return elapsed, rss, cmd.ProcessState.ExitCode(), out.String()
}

// serverCPU is the CPU time (user + system) the local MariaDB has used so far, when
// scripts/mariadb runs it here (CRONKIT_MARIADB_DIR names its pid file). On a
// shared machine a statement's wall time depends on the neighbours, its CPU time
// much less: the benchmarks print both ratios.
func serverCPU() (time.Duration, bool) {
	pid, err := os.ReadFile(filepath.Join(os.Getenv("CRONKIT_MARIADB_DIR"), "mysqld.pid"))
	if err != nil || os.Getenv("CRONKIT_MARIADB_DIR") == "" {
		return 0, false
	}
	stat, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/stat")
	if err != nil {
		return 0, false
	}
	// Fields after the command's closing parenthesis: utime and stime are the 12th
	// and 13th, in clock ticks (USER_HZ, 100 on Linux).
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(u+s) * 10 * time.Millisecond, true
}

// measured is one timed piece of work: wall time and, when known, CPU time (the
// server's plus the job process's).
type measured struct {
	wall, cpu time.Duration
	cpuKnown  bool
}

// measure times work; jobCPU is the CPU the work spent outside the server.
func measure(work func() (jobCPU time.Duration)) measured {
	c0, ok0 := serverCPU()
	start := time.Now()
	job := work()
	m := measured{wall: time.Since(start)}
	if c1, ok1 := serverCPU(); ok0 && ok1 {
		m.cpu, m.cpuKnown = c1-c0+job, true
	}
	return m
}

// ratios prints "wall 1.23x, CPU 1.10x" of m against floor.
func (m measured) ratios(floor measured) string {
	s := fmt.Sprintf("wall %.2fx", m.wall.Seconds()/floor.wall.Seconds())
	if m.cpuKnown && floor.cpuKnown && floor.cpu > 0 {
		s += fmt.Sprintf(", CPU %.2fx (%s vs %s)", m.cpu.Seconds()/floor.cpu.Seconds(), m.cpu.Round(time.Millisecond), floor.cpu.Round(time.Millisecond))
	}
	return s
}

// runJob runs the binary under measure and fails the benchmark unless it exits 0.
func runJob(b *testing.B, bin string, env []string, args ...string) (measured, string) {
	b.Helper()
	var out syncBuffer
	var code int
	m := measure(func() time.Duration {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = &out, &out
		_ = cmd.Run()
		code = cmd.ProcessState.ExitCode()
		return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	})
	if code != 0 {
		b.Fatalf("jobs %v: exit %d\n%.2000s", args, code, out.String())
	}
	return m, out.String()
}

func benchExec(b *testing.B, db *sql.DB, q string, args ...any) time.Duration {
	b.Helper()
	start := time.Now()
	if _, err := db.Exec(q, args...); err != nil {
		b.Fatalf("%s: %v", q, err)
	}
	return time.Since(start)
}

// benchEnvInt reads a size knob: CRONKIT_BENCH_<name> shrinks a benchmark while
// iterating on a shared machine.
func benchEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv("CRONKIT_BENCH_" + name)); err == nil && v > 0 {
		return v
	}
	return def
}

// benchStart is the first hour of every billing benchmark's usage.
var benchStart = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)

// benchWorld generates, in SQL with MariaDB's Sequence engine, accounts (a quarter
// in EUR), prices (USD instance.small changes half-way through) and usage: every
// account uses both products every hour of [benchStart, +hours), from resources
// named prefix+"vm-"/"vol-", recorded long ago (as after normal operation, with no
// late-usage rescans) unless fresh.
func benchWorld(b *testing.B, db *sql.DB, accounts, hours int) {
	b.Helper()
	benchExec(b, db, fmt.Sprintf(`INSERT INTO accounts (id, email, currency, created_at)
SELECT seq, CONCAT('a', seq, '@example.com'), IF(seq MOD 4 = 0, 'EUR', 'USD'), '2025-01-01' FROM seq_1_to_%d`, accounts))
	change := benchStart.Add(time.Duration(hours/2) * time.Hour)
	benchExec(b, db, `INSERT INTO prices (product, currency, unit_price, valid_from, valid_to) VALUES
  ('instance.small', 'USD', 0.0125, '2025-01-01', ?), ('instance.small', 'USD', 0.0150, ?, NULL),
  ('instance.small', 'EUR', 0.0115, '2025-01-01', NULL),
  ('volume.gb', 'USD', 0.000137, '2025-01-01', NULL), ('volume.gb', 'EUR', 0.000125, '2025-01-01', NULL)`, change, change)
	benchUsage(b, db, accounts, hours, "")
	benchExec(b, db, `UPDATE usage_records SET recorded_at = '2025-03-01'`)
}

// benchUsage inserts one row per account, product and hour, in statements of about
// a million rows.
func benchUsage(b *testing.B, db *sql.DB, accounts, hours int, prefix string) {
	b.Helper()
	step := max(1, 500_000/accounts)
	for h := 0; h < hours; h += step {
		for _, p := range []struct{ product, resource, qty string }{
			{"instance.small", "vm-", "1"},
			{"volume.gb", "vol-", "20 + (a.seq MOD 500) / 7"},
		} {
			benchExec(b, db, fmt.Sprintf(`INSERT INTO usage_records (account_id, resource_id, product, hour, quantity)
SELECT a.seq, CONCAT('%s%s', a.seq), '%s', ? + INTERVAL h.seq HOUR, %s
FROM seq_1_to_%d a JOIN seq_%d_to_%d h`, prefix, p.resource, p.product, p.qty, accounts, h, min(h+step, hours)-1), benchStart)
		}
	}
}

// benchSettle waits until the server has flushed the pages and purged the undo that
// earlier work left (loading the world, the previous run, the previous floor), so
// that each measured item, cronkit's run or the floor's read or write, starts from
// the same quiet server. Otherwise the item measured first after a big write pays
// for its background flushing and purge: a run right after the world's load took
// twice the CPU of the next one.
func benchSettle(b *testing.B, db *sql.DB) {
	b.Helper()
	var pct float64
	if err := db.QueryRow(`SELECT @@GLOBAL.innodb_max_dirty_pages_pct`).Scan(&pct); err != nil {
		b.Fatal(err)
	}
	benchExec(b, db, `SET GLOBAL innodb_max_dirty_pages_pct = 0`) // flush everything now
	defer benchExec(b, db, `SET GLOBAL innodb_max_dirty_pages_pct = ?`, pct)
	start := time.Now()
	for {
		var dirty, history int64
		if err := db.QueryRow(`SELECT
  (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'INNODB_BUFFER_POOL_PAGES_DIRTY'),
  (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'INNODB_HISTORY_LIST_LENGTH')`).Scan(&dirty, &history); err != nil {
			b.Fatal(err)
		}
		if dirty < 100 && history < 100 {
			return
		}
		if time.Since(start) > 3*time.Minute {
			b.Logf("server still busy after %s: %d dirty pages, history list %d", time.Since(start).Round(time.Second), dirty, history)
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// benchFloor is the least any rating of the same usage can cost on this server:
// the read (the index-only GROUP BY every rating statement starts from) plus the
// write (copying the finished charges into a table with the same indexes). It runs
// after the job, on the job's own charges.
func benchFloor(b *testing.B, db *sql.DB) (read, write measured) {
	b.Helper()
	benchExec(b, db, `DROP TABLE IF EXISTS charges_floor`)
	benchExec(b, db, `CREATE TABLE charges_floor LIKE charges`)
	benchSettle(b, db)
	read = measure(func() time.Duration {
		var groups int64
		if err := db.QueryRow(`SELECT COUNT(*) FROM (SELECT hour, account_id, product, SUM(quantity), MIN(quantity)
FROM usage_records GROUP BY hour, account_id, product) g`).Scan(&groups); err != nil {
			b.Fatal(err)
		}
		return 0
	})
	benchSettle(b, db)
	write = measure(func() time.Duration {
		benchExec(b, db, `INSERT INTO charges_floor SELECT * FROM charges`)
		return 0
	})
	return read, write
}

func (m measured) plus(o measured) measured {
	return measured{wall: m.wall + o.wall, cpu: m.cpu + o.cpu, cpuKnown: m.cpuKnown && o.cpuKnown}
}

// benchRateEnv runs `cronkit billing rate` at now, logs as JSON, without a timeout.
func benchRateEnv(db string) []string {
	return []string{"CRONKIT_DB_DSN=" + db, "CRONKIT_LOG_FORMAT=json", "CRONKIT_TIMEOUT=0"}
}

func benchCharges(b *testing.B, db *sql.DB, table string) string {
	b.Helper()
	var got string
	if err := db.QueryRow(`SELECT CONCAT(COUNT(*), ' ', COALESCE(SUM(amount), 0), ' ', COALESCE(SUM(quantity), 0)) FROM ` + table).Scan(&got); err != nil {
		b.Fatal(err)
	}
	return got
}

// benchRepeat is how often the floor benchmarks rate from scratch and measure the
// floor again (CRONKIT_BENCH_REPEAT, default 1): on a shared machine one pair says
// little, the median of three much more.
func benchRepeat() int { return benchEnvInt("REPEAT", 1) }

// rateAgainstFloor rates the usage in db from scratch, repeat times, each time
// followed by the floor, and returns the run and the floor with the median wall
// ratio, and their ratios as text.
func rateAgainstFloor(b *testing.B, db *sql.DB, bin, dsn string, now time.Time) (job, read, write measured, text string) {
	b.Helper()
	type pair struct{ job, read, write measured }
	var pairs []pair
	for i := range benchRepeat() {
		if i > 0 {
			benchExec(b, db, `TRUNCATE charges`)
			benchExec(b, db, `DELETE FROM billing_state`)
		}
		benchSettle(b, db)
		b.StartTimer()
		m, _ := runJob(b, bin, benchRateEnv(dsn), "billing", "rate", "--now", now.Format(time.RFC3339), "--output", "json")
		b.StopTimer()
		r, w := benchFloor(b, db)
		pairs = append(pairs, pair{m, r, w})
	}
	slices.SortFunc(pairs, func(x, y pair) int {
		return cmp.Compare(x.job.wall.Seconds()/(x.read.wall+x.write.wall).Seconds(), y.job.wall.Seconds()/(y.read.wall+y.write.wall).Seconds())
	})
	var runs []string
	for _, p := range pairs {
		runs = append(runs, p.job.ratios(p.read.plus(p.write)))
	}
	med := pairs[len(pairs)/2]
	text = runs[len(runs)/2]
	if len(runs) > 1 {
		text = "median " + text + "; runs: " + strings.Join(runs, "; ")
	}
	return med.job, med.read, med.write, text
}

// BenchmarkBillingRate rates 10 million usage rows (100k accounts, 2 products, 50
// hours) with `cronkit billing rate`, against the floor (read + write, benchFloor)
// and, as before, one bare INSERT ... SELECT ... GROUP BY with the same price join
// on the same server. CRONKIT_BENCH_ACCOUNTS and CRONKIT_BENCH_HOURS shrink it.
func BenchmarkBillingRate(b *testing.B) {
	needBench(b)
	accounts, hours := benchEnvInt("ACCOUNTS", 100_000), benchEnvInt("HOURS", 50)
	rows := accounts * 2 * hours
	bin := benchBinary(b)
	db := mysqltest.New(b)
	start := time.Now()
	benchWorld(b, db.DB, accounts, hours)
	benchExec(b, db.DB, `ANALYZE TABLE usage_records, accounts, prices`)
	b.Logf("loaded %d usage rows in %s", rows, time.Since(start).Round(time.Second))

	// Warm the buffer pool the same way for both contenders.
	var n int64
	if err := db.QueryRow(`SELECT COUNT(*) FROM usage_records FORCE INDEX (usage_hour)`).Scan(&n); err != nil || n != int64(rows) {
		b.Fatalf("usage rows %d, want %d: %v", n, rows, err)
	}

	// The bare statement: the same aggregation, price join and insert, into a table
	// with the same indexes. Grouped in usage_hour's order over the join, so that
	// nothing is materialised: the fastest form we found.
	benchExec(b, db.DB, `CREATE TABLE charges_baseline LIKE charges`)
	benchSettle(b, db.DB)
	base := benchExec(b, db.DB, `INSERT INTO charges_baseline (account_id, product, hour, quantity, unit_price, amount, currency, status, rated_at)
SELECT u.account_id, u.product, u.hour, SUM(u.quantity), p.unit_price, ROUND(SUM(u.quantity) * p.unit_price, 6), a.currency, 'rated', NOW(6)
FROM usage_records u
JOIN accounts a ON a.id = u.account_id
JOIN prices p ON p.product = u.product AND p.currency = a.currency AND p.valid_from <= u.hour
  AND (p.valid_to IS NULL OR p.valid_to > u.hour)
GROUP BY u.hour, u.account_id, u.product`)

	b.ResetTimer()
	b.StopTimer()
	now := benchStart.Add(time.Duration(hours)*time.Hour + 20*time.Minute)
	job, read, write, text := rateAgainstFloor(b, db.DB, bin, db.DSN, now)
	if got, want := benchCharges(b, db.DB, "charges"), benchCharges(b, db.DB, "charges_baseline"); got != want {
		b.Fatalf("jobs rated %s, the baseline %s", got, want)
	}
	floor := read.plus(write)
	b.ReportMetric(job.wall.Seconds()/floor.wall.Seconds(), "x-floor")
	b.ReportMetric(job.wall.Seconds()/base.Seconds(), "x-baseline")
	fmt.Printf("billing rate: %d usage rows, %d accounts: cronkit %s; floor %s (read %s + write %s): %s (target <= 1.3x); bare INSERT ... SELECT %s: %.2fx\n",
		rows, accounts, job.wall.Round(time.Millisecond), floor.wall.Round(time.Millisecond), read.wall.Round(time.Millisecond),
		write.wall.Round(time.Millisecond), text, base.Round(time.Millisecond), job.wall.Seconds()/base.Seconds())
}

// BenchmarkBillingCatchUp rates 1,440 hours of 1,000 usage rows each (500 accounts,
// 2 products: two months of outage, or a first install with history) with `cronkit
// billing rate`, against the floor (read + write, benchFloor). CRONKIT_BENCH_
// CATCHUP_HOURS and CRONKIT_BENCH_CATCHUP_ACCOUNTS shrink it.
func BenchmarkBillingCatchUp(b *testing.B) {
	needBench(b)
	accounts, hours := benchEnvInt("CATCHUP_ACCOUNTS", 500), benchEnvInt("CATCHUP_HOURS", 1440)
	rows := accounts * 2 * hours
	bin := benchBinary(b)
	db := mysqltest.New(b)
	start := time.Now()
	benchWorld(b, db.DB, accounts, hours)
	benchExec(b, db.DB, `ANALYZE TABLE usage_records, accounts, prices`)
	b.Logf("loaded %d usage rows in %s", rows, time.Since(start).Round(time.Second))
	var n int64
	if err := db.QueryRow(`SELECT COUNT(*) FROM usage_records FORCE INDEX (usage_hour)`).Scan(&n); err != nil || n != int64(rows) {
		b.Fatalf("usage rows %d, want %d: %v", n, rows, err)
	}

	b.ResetTimer()
	b.StopTimer()
	now := benchStart.Add(time.Duration(hours)*time.Hour + 20*time.Minute)
	job, read, write, text := rateAgainstFloor(b, db.DB, bin, db.DSN, now)
	var charges int64
	if err := db.QueryRow(`SELECT COUNT(*) FROM charges WHERE status = 'rated'`).Scan(&charges); err != nil || charges != int64(rows) {
		b.Fatalf("rated charges %d, want %d: %v", charges, rows, err)
	}
	floor := read.plus(write)
	b.ReportMetric(job.wall.Seconds()/floor.wall.Seconds(), "x-floor")
	fmt.Printf("billing catch-up: %d hours x %d usage rows: cronkit %s; floor %s (read %s + write %s): %s (target <= 1.3x)\n",
		hours, accounts*2, job.wall.Round(time.Millisecond), floor.wall.Round(time.Millisecond), read.wall.Round(time.Millisecond),
		write.wall.Round(time.Millisecond), text)
}

// BenchmarkBillingImportThenRate loads 1 million usage rows into hours already
// rated (a second resource for each of 1,000 accounts' two products over 500
// hours: an import, a replay, collect catching up), with fresh recorded_at, then
// runs `cronkit billing rate` twice. The first run re-rates every key the load
// touched, against re-rating those keys with one bare INSERT ... SELECT ... ON
// DUPLICATE KEY UPDATE into a copy of the charges; the second has nothing to do,
// against `cronkit noop`. CRONKIT_BENCH_IMPORT_ACCOUNTS and CRONKIT_BENCH_IMPORT_HOURS
// shrink it.
func BenchmarkBillingImportThenRate(b *testing.B) {
	needBench(b)
	accounts, hours := benchEnvInt("IMPORT_ACCOUNTS", 1_000), benchEnvInt("IMPORT_HOURS", 500)
	rows := accounts * 2 * hours
	bin := benchBinary(b)
	db := mysqltest.New(b)
	env := benchRateEnv(db.DSN)
	now := benchStart.Add(time.Duration(hours)*time.Hour + 20*time.Minute)
	rate := func() measured {
		m, _ := runJob(b, bin, env, "billing", "rate", "--now", now.Format(time.RFC3339), "--output", "json")
		return m
	}
	benchWorld(b, db.DB, accounts, hours)
	rate() // everything rated, as before the import
	rate() // and the late scan's mark past the world

	start := time.Now()
	var since time.Time
	if err := db.QueryRow(`SELECT NOW(6)`).Scan(&since); err != nil {
		b.Fatal(err)
	}
	benchUsage(b, db.DB, accounts, hours, "import-")
	benchExec(b, db.DB, `ANALYZE TABLE usage_records, charges, accounts, prices`)
	b.Logf("imported %d usage rows into %d rated hours in %s", rows, hours, time.Since(start).Round(time.Second))
	var n int64
	if err := db.QueryRow(`SELECT COUNT(*) FROM usage_records FORCE INDEX (usage_hour)`).Scan(&n); err != nil || n != int64(2*rows) {
		b.Fatalf("usage rows %d, want %d: %v", n, 2*rows, err)
	}
	// The charges and the mark as the import left them, to start each repetition.
	benchExec(b, db.DB, `CREATE TABLE charges_before LIKE charges`)
	benchExec(b, db.DB, `INSERT INTO charges_before SELECT * FROM charges`)
	var mark time.Time
	if err := db.QueryRow(`SELECT late_scan_from FROM billing_state WHERE name = 'rating'`).Scan(&mark); err != nil {
		b.Fatal(err)
	}

	// The bare statement: the keys the import touched, recomputed over all their
	// usage with the same price join, written into a copy of the charges (%[1]s).
	// Three forms; the fastest is the baseline.
	const upsert = `
ON DUPLICATE KEY UPDATE quantity = VALUES(quantity), unit_price = VALUES(unit_price), amount = VALUES(amount),
  rated_at = VALUES(rated_at)`
	const latestKeys = `SELECT u.account_id, u.product, u.hour, SUM(u.quantity) AS q, p.unit_price,
  ROUND(SUM(u.quantity) * p.unit_price, 6) AS amount, a.currency
FROM usage_records u
JOIN accounts a ON a.id = u.account_id
JOIN prices p ON p.product = u.product AND p.currency = a.currency AND p.valid_from <= u.hour
  AND (p.valid_to IS NULL OR p.valid_to > u.hour)
WHERE u.hour IN (SELECT DISTINCT hour FROM usage_records WHERE recorded_at >= @since)
GROUP BY u.hour, u.account_id, u.product
HAVING MAX(u.recorded_at) >= @since`
	bare := []struct{ form, stmt string }{
		{"upsert of the hours' keys by their latest record", `INSERT INTO %[1]s (account_id, product, hour, quantity, unit_price, amount, currency, status, rated_at)
SELECT k.account_id, k.product, k.hour, k.q, k.unit_price, k.amount, k.currency, 'rated', NOW(6) FROM (` + latestKeys + `) k` + upsert},
		{"update of the hours' keys by their latest record", `UPDATE %[1]s c JOIN (` + latestKeys + `) k
  ON c.account_id = k.account_id AND c.product = k.product AND c.hour = k.hour
SET c.quantity = k.q, c.unit_price = k.unit_price, c.amount = k.amount, c.rated_at = NOW(6)`},
		{"upsert of distinct keys joined to their usage", `INSERT INTO %[1]s (account_id, product, hour, quantity, unit_price, amount, currency, status, rated_at)
SELECT u.account_id, u.product, u.hour, SUM(u.quantity), p.unit_price,
  ROUND(SUM(u.quantity) * p.unit_price, 6), a.currency, 'rated', NOW(6)
FROM (SELECT DISTINCT hour, account_id, product FROM usage_records WHERE recorded_at >= @since) k
JOIN usage_records u ON u.hour = k.hour AND u.account_id = k.account_id AND u.product = k.product
JOIN accounts a ON a.id = u.account_id
JOIN prices p ON p.product = u.product AND p.currency = a.currency AND p.valid_from <= u.hour
  AND (p.valid_to IS NULL OR p.valid_to > u.hour)
GROUP BY u.hour, u.account_id, u.product` + upsert},
	}
	conn, err := db.Conn(context.Background()) // @since lives in one session
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), `SET @since = ?`, since); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	b.StopTimer()
	type round struct {
		first, base, second measured
		form                string
	}
	var rounds []round
	for i := range benchRepeat() {
		var r round
		for j, f := range bare {
			table := fmt.Sprintf("charges_rerate%d", j)
			benchExec(b, db.DB, `DROP TABLE IF EXISTS `+table)
			benchExec(b, db.DB, `CREATE TABLE `+table+` LIKE charges`)
			benchExec(b, db.DB, `INSERT INTO `+table+` SELECT * FROM charges_before`)
			benchSettle(b, db.DB)
			m := measure(func() time.Duration {
				if _, err := conn.ExecContext(context.Background(), fmt.Sprintf(f.stmt, table)); err != nil {
					b.Fatalf("bare re-rate, %s: %v", f.form, err)
				}
				return 0
			})
			b.Logf("round %d: bare re-rate, %s: %s", i+1, f.form, m.wall.Round(time.Millisecond))
			if r.form == "" || m.wall < r.base.wall {
				r.base, r.form = m, f.form
			}
		}
		if i > 0 { // back to the import's state
			benchExec(b, db.DB, `TRUNCATE charges`)
			benchExec(b, db.DB, `INSERT INTO charges SELECT * FROM charges_before`)
			benchExec(b, db.DB, `UPDATE billing_state SET late_scan_from = ? WHERE name = 'rating'`, mark)
		}
		benchSettle(b, db.DB)
		time.Sleep(200 * time.Millisecond) // see below: as cron, not back to back
		b.StartTimer()
		r.first = rate()
		r.second = rate()
		b.StopTimer()
		for j := range bare {
			if got, want := benchCharges(b, db.DB, "charges"), benchCharges(b, db.DB, fmt.Sprintf("charges_rerate%d", j)); got != want {
				b.Fatalf("jobs rated %s, the baseline %s", got, want)
			}
		}
		rounds = append(rounds, r)
	}
	slices.SortFunc(rounds, func(x, y round) int {
		return cmp.Compare(x.first.wall.Seconds()/x.base.wall.Seconds(), y.first.wall.Seconds()/y.base.wall.Seconds())
	})
	med := rounds[len(rounds)/2]
	var runs []string
	for _, r := range rounds {
		runs = append(runs, r.first.ratios(r.base))
	}
	// Idle runs and `cronkit noop`, for medians. Cron runs an hour apart; back to
	// back, each run would find INNODB_TRX just read by the previous one and wait
	// for InnoDB to refresh it (0.1 s).
	idle := []time.Duration{med.second.wall}
	for range 4 {
		time.Sleep(200 * time.Millisecond)
		idle = append(idle, rate().wall)
	}
	var noop []time.Duration
	for range 5 {
		time.Sleep(200 * time.Millisecond)
		m, _ := runJob(b, bin, env, "noop")
		noop = append(noop, m.wall)
	}
	slices.Sort(idle)
	slices.Sort(noop)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(med.first.wall.Seconds()/med.base.wall.Seconds(), "x-bare-rerate")
	b.ReportMetric(ms(med.second.wall)/ms(noop[2]), "x-noop")
	fmt.Printf("billing import then rate: %d usage rows into %d rated hours: first run %s, bare re-rate (%s) %s: %s (target <= 1.5x)%s; second run %.1f ms (idle median %.1f ms), cronkit noop median %.1f ms: %.2fx (target <= 2x)\n",
		rows, hours, med.first.wall.Round(time.Millisecond), med.form, med.base.wall.Round(time.Millisecond), med.first.ratios(med.base),
		map[bool]string{true: "; runs: " + strings.Join(runs, "; "), false: ""}[len(runs) > 1],
		ms(med.second.wall), ms(idle[2]), ms(noop[2]), ms(med.second.wall)/ms(noop[2]))
}

// BenchmarkBillingNothingToDo times `cronkit billing` when everything is rated, closed
// and charged (connect, lock, record the run, exit), against `cronkit version`: the
// cost of starting the process at all.
func BenchmarkBillingNothingToDo(b *testing.B) {
	needBench(b)
	const runs = 20
	bin := benchBinary(b)
	db := mysqltest.New(b)
	seedBilling(b, db.DB)
	benchExec(b, db.DB, `UPDATE usage_records SET recorded_at = '2025-03-01'`)
	env := []string{"CRONKIT_DB_DSN=" + db.DSN, "CRONKIT_STRIPE_KEY=" + testStripeKey,
		// Nothing is left to charge, so the provider is never called.
		"CRONKIT_STRIPE_URL=http://127.0.0.1:9", "CRONKIT_LOG_FORMAT=json", "CRONKIT_NOW=" + billingNow}
	// Settle: rate, close; the charges fail to reach the provider and stay pending
	// for the replay, so mark them done as a provider answer would.
	if _, _, code, out := runMeasured(b, bin, env, "billing"); code != 3 && code != 0 {
		b.Fatalf("settling run: exit %d\n%s", code, out)
	}
	benchExec(b, db.DB, `UPDATE payments SET status = 'succeeded', provider_payment_id = 'pi_bench'`)
	benchExec(b, db.DB, `UPDATE invoices SET status = 'paid', collection = 'succeeded'`)
	if _, _, code, out := runMeasured(b, bin, env, "billing"); code != 0 {
		b.Fatalf("second run is not clean: exit %d\n%s", code, out)
	}

	measure := func(args ...string) (time.Duration, int64) {
		var times []time.Duration
		var maxRSS int64
		for range runs {
			d, rss, code, out := runMeasured(b, bin, env, args...)
			if code != 0 {
				b.Fatalf("%v: exit %d\n%s", args, code, out)
			}
			times = append(times, d)
			maxRSS = max(maxRSS, rss)
		}
		slices.Sort(times)
		return times[len(times)/2], maxRSS
	}
	b.ResetTimer()
	baseT, baseRSS := measure("version")
	jobT, jobRSS := measure("billing")
	b.StopTimer()
	var rows int
	if err := db.QueryRow(`SELECT COUNT(*) FROM job_runs`).Scan(&rows); err != nil || rows != runs+2 {
		b.Fatalf("job_runs %d, want %d: %v", rows, runs+2, err)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(jobT), "ms-median")
	b.ReportMetric(float64(jobRSS)/1024, "MiB-max-rss")
	b.ReportMetric(ms(jobT)/ms(baseT), "x-baseline")
	fmt.Printf("billing nothing to do: median %.1f ms, max RSS %.1f MiB (target < 30 ms, < 20 MiB); cronkit version: median %.1f ms, max RSS %.1f MiB; %.1fx\n",
		ms(jobT), float64(jobRSS)/1024, ms(baseT), float64(baseRSS)/1024, ms(jobT)/ms(baseT))
}
