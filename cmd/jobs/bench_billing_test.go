package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
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

// benchFloor is the least any rating of the same usage can cost on this server:
// the read (the index-only GROUP BY every rating statement starts from) plus the
// write (copying the finished charges into a table with the same indexes). It runs
// after the job, on the job's own charges.
func benchFloor(b *testing.B, db *sql.DB) (read, write time.Duration) {
	b.Helper()
	var groups int64
	start := time.Now()
	if err := db.QueryRow(`SELECT COUNT(*) FROM (SELECT hour, account_id, product, SUM(quantity), MIN(quantity)
FROM usage_records GROUP BY hour, account_id, product) g`).Scan(&groups); err != nil {
		b.Fatal(err)
	}
	read = time.Since(start)
	benchExec(b, db, `CREATE TABLE charges_floor LIKE charges`)
	write = benchExec(b, db, `INSERT INTO charges_floor SELECT * FROM charges`)
	return read, write
}

// benchRateEnv runs `jobs billing rate` at now, logs as JSON, without a timeout.
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

// BenchmarkBillingRate rates 10 million usage rows (100k accounts, 2 products, 50
// hours) with `jobs billing rate`, against the floor (read + write, benchFloor)
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
	base := benchExec(b, db.DB, `INSERT INTO charges_baseline (account_id, product, hour, quantity, unit_price, amount, currency, status, rated_at)
SELECT u.account_id, u.product, u.hour, SUM(u.quantity), p.unit_price, ROUND(SUM(u.quantity) * p.unit_price, 6), a.currency, 'rated', NOW(6)
FROM usage_records u
JOIN accounts a ON a.id = u.account_id
JOIN prices p ON p.product = u.product AND p.currency = a.currency AND p.valid_from <= u.hour
  AND (p.valid_to IS NULL OR p.valid_to > u.hour)
GROUP BY u.hour, u.account_id, u.product`)

	b.ResetTimer()
	now := benchStart.Add(time.Duration(hours)*time.Hour + 20*time.Minute)
	elapsed, rss, code, out := runMeasured(b, bin, benchRateEnv(db.DSN), "billing", "rate", "--now", now.Format(time.RFC3339), "--output", "json")
	b.StopTimer()
	if code != 0 {
		b.Fatalf("jobs billing rate: exit %d\n%.2000s", code, out)
	}
	if got, want := benchCharges(b, db.DB, "charges"), benchCharges(b, db.DB, "charges_baseline"); got != want {
		b.Fatalf("jobs rated %s, the baseline %s", got, want)
	}
	read, write := benchFloor(b, db.DB)
	floor := read + write
	ratio := elapsed.Seconds() / floor.Seconds()
	b.ReportMetric(ratio, "x-floor")
	b.ReportMetric(elapsed.Seconds()/base.Seconds(), "x-baseline")
	b.ReportMetric(float64(rss)/1024, "MiB-peak-rss")
	fmt.Printf("billing rate: %d usage rows, %d accounts: jobs %s; floor %s (read %s + write %s): %.2fx the floor (target <= 1.3x); bare INSERT ... SELECT %s: %.2fx; peak RSS %.1f MiB (target < 64 MiB)\n",
		rows, accounts, elapsed.Round(time.Millisecond), floor.Round(time.Millisecond), read.Round(time.Millisecond),
		write.Round(time.Millisecond), ratio, base.Round(time.Millisecond), elapsed.Seconds()/base.Seconds(), float64(rss)/1024)
}

// BenchmarkBillingCatchUp rates 1,440 hours of 1,000 usage rows each (500 accounts,
// 2 products: two months of outage, or a first install with history) with `jobs
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
	now := benchStart.Add(time.Duration(hours)*time.Hour + 20*time.Minute)
	elapsed, rss, code, out := runMeasured(b, bin, benchRateEnv(db.DSN), "billing", "rate", "--now", now.Format(time.RFC3339), "--output", "json")
	b.StopTimer()
	if code != 0 {
		b.Fatalf("jobs billing rate: exit %d\n%.2000s", code, out)
	}
	var charges int64
	if err := db.QueryRow(`SELECT COUNT(*) FROM charges WHERE status = 'rated'`).Scan(&charges); err != nil || charges != int64(rows) {
		b.Fatalf("rated charges %d, want %d: %v", charges, rows, err)
	}
	read, write := benchFloor(b, db.DB)
	floor := read + write
	ratio := elapsed.Seconds() / floor.Seconds()
	b.ReportMetric(ratio, "x-floor")
	b.ReportMetric(float64(rss)/1024, "MiB-peak-rss")
	fmt.Printf("billing catch-up: %d hours x %d usage rows: jobs %s; floor %s (read %s + write %s): %.2fx the floor (target <= 1.3x); peak RSS %.1f MiB\n",
		hours, accounts*2, elapsed.Round(time.Millisecond), floor.Round(time.Millisecond), read.Round(time.Millisecond),
		write.Round(time.Millisecond), ratio, float64(rss)/1024)
}

// BenchmarkBillingImportThenRate loads 1 million usage rows into hours already
// rated (a second resource for each of 1,000 accounts' two products over 500
// hours: an import, a replay, collect catching up), with fresh recorded_at, then
// runs `jobs billing rate` twice. The first run re-rates every key the load
// touched, against re-rating those keys with one bare INSERT ... SELECT ... ON
// DUPLICATE KEY UPDATE into a copy of the charges; the second has nothing to do,
// against `jobs noop`. CRONKIT_BENCH_IMPORT_ACCOUNTS and CRONKIT_BENCH_IMPORT_HOURS
// shrink it.
func BenchmarkBillingImportThenRate(b *testing.B) {
	needBench(b)
	accounts, hours := benchEnvInt("IMPORT_ACCOUNTS", 1_000), benchEnvInt("IMPORT_HOURS", 500)
	rows := accounts * 2 * hours
	bin := benchBinary(b)
	db := mysqltest.New(b)
	env := benchRateEnv(db.DSN)
	now := benchStart.Add(time.Duration(hours)*time.Hour + 20*time.Minute)
	rate := func() (time.Duration, string) {
		d, _, code, out := runMeasured(b, bin, env, "billing", "rate", "--now", now.Format(time.RFC3339), "--output", "json")
		if code != 0 {
			b.Fatalf("jobs billing rate: exit %d\n%.2000s", code, out)
		}
		return d, out
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

	// The bare statement: the keys the import touched, recomputed over all their
	// usage with the same price join, upserted into a copy of the charges. Two
	// forms, each on its own copy; the faster is the baseline.
	bare := []struct{ form, query string }{
		{"hours touched, keys by their latest record", `SELECT u.account_id, u.product, u.hour, SUM(u.quantity), p.unit_price,
  ROUND(SUM(u.quantity) * p.unit_price, 6), a.currency, 'rated', NOW(6)
FROM usage_records u
JOIN accounts a ON a.id = u.account_id
JOIN prices p ON p.product = u.product AND p.currency = a.currency AND p.valid_from <= u.hour
  AND (p.valid_to IS NULL OR p.valid_to > u.hour)
WHERE u.hour IN (SELECT DISTINCT hour FROM usage_records WHERE recorded_at >= @since)
GROUP BY u.hour, u.account_id, u.product
HAVING MAX(u.recorded_at) >= @since`},
		{"distinct keys joined to their usage", `SELECT u.account_id, u.product, u.hour, SUM(u.quantity), p.unit_price,
  ROUND(SUM(u.quantity) * p.unit_price, 6), a.currency, 'rated', NOW(6)
FROM (SELECT DISTINCT hour, account_id, product FROM usage_records WHERE recorded_at >= @since) k
JOIN usage_records u ON u.hour = k.hour AND u.account_id = k.account_id AND u.product = k.product
JOIN accounts a ON a.id = u.account_id
JOIN prices p ON p.product = u.product AND p.currency = a.currency AND p.valid_from <= u.hour
  AND (p.valid_to IS NULL OR p.valid_to > u.hour)
GROUP BY u.hour, u.account_id, u.product`},
	}
	var base time.Duration
	var baseForm string
	conn, err := db.Conn(context.Background()) // @since lives in one session
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), `SET @since = ?`, since); err != nil {
		b.Fatal(err)
	}
	for i, f := range bare {
		table := fmt.Sprintf("charges_rerate%d", i)
		benchExec(b, db.DB, `CREATE TABLE `+table+` LIKE charges`)
		benchExec(b, db.DB, `INSERT INTO `+table+` SELECT * FROM charges`)
		start := time.Now()
		if _, err := conn.ExecContext(context.Background(), `INSERT INTO `+table+` (account_id, product, hour, quantity, unit_price, amount, currency, status, rated_at)
`+f.query+`
ON DUPLICATE KEY UPDATE quantity = VALUES(quantity), unit_price = VALUES(unit_price), amount = VALUES(amount),
  rated_at = VALUES(rated_at)`); err != nil {
			b.Fatalf("bare re-rate, %s: %v", f.form, err)
		}
		d := time.Since(start)
		b.Logf("bare re-rate, %s: %s", f.form, d.Round(time.Millisecond))
		if base == 0 || d < base {
			base, baseForm = d, f.form
		}
	}

	b.ResetTimer()
	first, _ := rate()
	second, _ := rate()
	b.StopTimer()
	for _, table := range []string{"charges_rerate0", "charges_rerate1"} {
		if got, want := benchCharges(b, db.DB, "charges"), benchCharges(b, db.DB, table); got != want {
			b.Fatalf("jobs rated %s, the baseline %s", got, want)
		}
	}
	// More idle runs and `jobs noop`, for medians.
	// Cron runs an hour apart; back to back, each run would find INNODB_TRX just
	// read by the previous one and wait for InnoDB to refresh it (0.1 s).
	idle := []time.Duration{second}
	for range 4 {
		time.Sleep(200 * time.Millisecond)
		d, _ := rate()
		idle = append(idle, d)
	}
	var noop []time.Duration
	for range 5 {
		time.Sleep(200 * time.Millisecond)
		d, _, code, out := runMeasured(b, bin, env, "noop")
		if code != 0 {
			b.Fatalf("jobs noop: exit %d\n%s", code, out)
		}
		noop = append(noop, d)
	}
	slices.Sort(idle)
	slices.Sort(noop)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(first.Seconds()/base.Seconds(), "x-bare-rerate")
	b.ReportMetric(ms(second)/ms(noop[2]), "x-noop")
	fmt.Printf("billing import then rate: %d usage rows into %d rated hours: first run %s, bare re-rate (%s) %s: %.2fx (target <= 1.5x); second run %.1f ms (idle median %.1f ms), jobs noop median %.1f ms: %.2fx (target <= 2x)\n",
		rows, hours, first.Round(time.Millisecond), baseForm, base.Round(time.Millisecond), first.Seconds()/base.Seconds(),
		ms(second), ms(idle[2]), ms(noop[2]), ms(second)/ms(noop[2]))
}

// BenchmarkBillingNothingToDo times `jobs billing` when everything is rated, closed
// and charged (connect, lock, record the run, exit), against `jobs version`: the
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
	fmt.Printf("billing nothing to do: median %.1f ms, max RSS %.1f MiB (target < 30 ms, < 20 MiB); jobs version: median %.1f ms, max RSS %.1f MiB; %.1fx\n",
		ms(jobT), float64(jobRSS)/1024, ms(baseT), float64(baseRSS)/1024, ms(jobT)/ms(baseT))
}
