package main

import (
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

// BenchmarkBillingRate rates 10 million usage rows (100k accounts, 2 products, 50
// hours) with `jobs billing rate`, against one bare INSERT ... SELECT ... GROUP BY
// with the same price join on the same server. CRONKIT_BENCH_ACCOUNTS and
// CRONKIT_BENCH_HOURS shrink it.
func BenchmarkBillingRate(b *testing.B) {
	needBench(b)
	accounts, hours := 100_000, 50
	if v, err := strconv.Atoi(os.Getenv("CRONKIT_BENCH_ACCOUNTS")); err == nil && v > 0 {
		accounts = v
	}
	if v, err := strconv.Atoi(os.Getenv("CRONKIT_BENCH_HOURS")); err == nil && v > 0 {
		hours = v
	}
	rows := accounts * 2 * hours
	bin := benchBinary(b)
	db := mysqltest.New(b)

	// The world, generated in SQL with MariaDB's Sequence engine: a quarter of the
	// accounts in EUR, a price change half-way through.
	start := time.Now()
	benchExec(b, db.DB, fmt.Sprintf(`INSERT INTO accounts (id, email, currency, created_at)
SELECT seq, CONCAT('a', seq, '@example.com'), IF(seq MOD 4 = 0, 'EUR', 'USD'), '2025-01-01' FROM seq_1_to_%d`, accounts))
	change := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(hours/2) * time.Hour)
	benchExec(b, db.DB, `INSERT INTO prices (product, currency, unit_price, valid_from, valid_to) VALUES
  ('instance.small', 'USD', 0.0125, '2025-01-01', ?), ('instance.small', 'USD', 0.0150, ?, NULL),
  ('instance.small', 'EUR', 0.0115, '2025-01-01', NULL),
  ('volume.gb', 'USD', 0.000137, '2025-01-01', NULL), ('volume.gb', 'EUR', 0.000125, '2025-01-01', NULL)`, change, change)
	for h := 0; h < hours; h += 5 {
		for _, p := range []struct{ product, resource, qty string }{
			{"instance.small", "vm-", "1"},
			{"volume.gb", "vol-", "20 + (a.seq MOD 500) / 7"},
		} {
			benchExec(b, db.DB, fmt.Sprintf(`INSERT INTO usage_records (account_id, resource_id, product, hour, quantity)
SELECT a.seq, CONCAT('%s', a.seq), '%s', '2025-03-01' + INTERVAL h.seq HOUR, %s
FROM seq_1_to_%d a JOIN seq_%d_to_%d h`, p.resource, p.product, p.qty, accounts, h, min(h+4, hours-1)))
		}
	}
	// Recorded long ago, as after normal operation: no late-usage rescans.
	benchExec(b, db.DB, `UPDATE usage_records SET recorded_at = '2025-03-01'`)
	benchExec(b, db.DB, `ANALYZE TABLE usage_records, accounts, prices`)
	b.Logf("loaded %d usage rows in %s", rows, time.Since(start).Round(time.Second))

	// Warm the buffer pool the same way for both contenders.
	var n int64
	if err := db.QueryRow(`SELECT COUNT(*) FROM usage_records FORCE INDEX (usage_hour)`).Scan(&n); err != nil || n != int64(rows) {
		b.Fatalf("usage rows %d, want %d: %v", n, rows, err)
	}

	// Baseline: the same aggregation, price join and insert, as one bare statement,
	// into a table with the same indexes. Grouped in usage_hour's order over the join,
	// so that nothing is materialised: the fastest form we found.
	benchExec(b, db.DB, `CREATE TABLE charges_baseline LIKE charges`)
	base := benchExec(b, db.DB, `INSERT INTO charges_baseline (account_id, product, hour, quantity, unit_price, amount, currency, status, rated_at)
SELECT u.account_id, u.product, u.hour, SUM(u.quantity), p.unit_price, ROUND(SUM(u.quantity) * p.unit_price, 6), a.currency, 'rated', NOW(6)
FROM usage_records u
JOIN accounts a ON a.id = u.account_id
JOIN prices p ON p.product = u.product AND p.currency = a.currency AND p.valid_from <= u.hour
  AND (p.valid_to IS NULL OR p.valid_to > u.hour)
GROUP BY u.hour, u.account_id, u.product`)

	b.ResetTimer()
	now := time.Date(2025, 3, 1, 0, 20, 0, 0, time.UTC).Add(time.Duration(hours) * time.Hour)
	env := []string{"CRONKIT_DB_DSN=" + db.DSN, "CRONKIT_LOG_FORMAT=json", "CRONKIT_TIMEOUT=0"}
	elapsed, rss, code, out := runMeasured(b, bin, env, "billing", "rate", "--now", now.Format(time.RFC3339), "--output", "json")
	b.StopTimer()
	if code != 0 {
		b.Fatalf("jobs billing rate: exit %d\n%.2000s", code, out)
	}
	var got, want string
	if err := db.QueryRow(`SELECT CONCAT(COUNT(*), ' ', SUM(amount)) FROM charges`).Scan(&got); err != nil {
		b.Fatal(err)
	}
	if err := db.QueryRow(`SELECT CONCAT(COUNT(*), ' ', SUM(amount)) FROM charges_baseline`).Scan(&want); err != nil {
		b.Fatal(err)
	}
	if got != want {
		b.Fatalf("jobs rated %s, the baseline %s", got, want)
	}
	ratio := elapsed.Seconds() / base.Seconds()
	b.ReportMetric(ratio, "x-baseline")
	b.ReportMetric(float64(rss)/1024, "MiB-peak-rss")
	fmt.Printf("billing rate: %d usage rows, %d accounts: jobs %s, bare INSERT ... SELECT %s: %.2fx the baseline (target <= 1.3x); peak RSS %.1f MiB (target < 64 MiB)\n",
		rows, accounts, elapsed.Round(time.Millisecond), base.Round(time.Millisecond), ratio, float64(rss)/1024)
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
