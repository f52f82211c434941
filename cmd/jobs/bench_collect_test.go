package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/orchestrator/fakecloudstack"
)

// collectBenchWorld is a fake CloudStack whose usage server has `hours` hours of
// records for `accounts` accounts, each with a running VM, a volume and an IP: four
// records an account an hour (running and allocated VM time, volume, IP).
func collectBenchWorld(b *testing.B, accounts, hours int) (*mysqltest.DB, map[string]string, string, time.Time) {
	b.Helper()
	db := mysqltest.New(b)
	fake := fakecloudstack.New()
	fake.AddCredential("bench-key", "bench-secret")
	since := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	now := since.Add(time.Duration(hours)*time.Hour + 5*time.Minute)
	fake.Now = func() time.Time { return now }
	for i := 1; i <= accounts; i++ {
		cs := fmt.Sprintf("cs-%d", i)
		if _, err := fake.AddAccount(fakecloudstack.Account{ID: cs, Name: fmt.Sprintf("c%d", i)}); err != nil {
			b.Fatal(err)
		}
		if _, err := fake.AddVM(fakecloudstack.VM{ID: fmt.Sprintf("vm-%d", i), AccountID: cs, Created: since}); err != nil {
			b.Fatal(err)
		}
		if _, err := fake.AddVolume(fakecloudstack.Volume{ID: fmt.Sprintf("vol-%d", i), AccountID: cs, SizeBytes: int64(i%100+1) << 30, Created: since}); err != nil {
			b.Fatal(err)
		}
		if _, err := fake.AddPublicIP(fakecloudstack.PublicIP{ID: fmt.Sprintf("ip-%d", i), AccountID: cs, Allocated: since}); err != nil {
			b.Fatal(err)
		}
	}
	benchExec(b, db.DB, fmt.Sprintf(`INSERT INTO accounts (id, email, currency, created_at, cloudstack_account_id)
SELECT seq, CONCAT('c', seq, '@example.com'), 'USD', '2024-12-01', CONCAT('cs-', seq) FROM seq_1_to_%d`, accounts))
	api, stop, err := fake.Start("")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(stop)
	products := filepath.Join(b.TempDir(), "products.toml")
	if err := os.WriteFile(products, []byte(collectProducts), 0o600); err != nil {
		b.Fatal(err)
	}
	env := map[string]string{
		"CRONKIT_DB_DSN": db.DSN, "CRONKIT_CLOUDSTACK_URL": api, "CRONKIT_CLOUDSTACK_API_KEY": "bench-key",
		"CRONKIT_CLOUDSTACK_SECRET_KEY": "bench-secret", "CRONKIT_PRODUCTS": products,
		"CRONKIT_NOW": now.Format(time.RFC3339), "CRONKIT_LOG_FORMAT": "json", "CRONKIT_TIMEOUT": "0",
		// Read everything the usage server has.
		"CRONKIT_COLLECT_LOOKBACK": fmt.Sprintf("%dh", hours+24),
	}
	return db, env, api, now
}

// readOnly reads the same day windows and pages collect reads, decoding every
// record, and writes nothing: the floor collect is measured against.
func readOnly(b *testing.B, api string, now time.Time, hours int) (time.Duration, int) {
	b.Helper()
	c, err := orchestrator.New(orchestrator.Config{APIURL: api, APIKey: "bench-key", SecretKey: "bench-secret", Timeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	n := 0
	first := now.Add(-time.Duration(hours+24) * time.Hour).Truncate(24 * time.Hour)
	for day := first; !day.After(now); day = day.Add(24 * time.Hour) {
		end := day.Add(24*time.Hour - time.Second)
		if end.After(now) {
			end = now
		}
		for pg, err := range c.UsagePages(context.Background(), orchestrator.ListUsage{Start: day, End: end}) {
			if err != nil {
				b.Fatal(err)
			}
			n += len(pg.Records)
		}
	}
	return time.Since(start), n
}

// BenchmarkBillingCollect collects N usage records served by the fake CloudStack into
// usage_records with `cronkit billing collect`, against reading the same pages without
// writing (the target is <= 2x), at two sizes whose peak RSS shows memory does not
// grow with N. N grows with the number of hours (days of history), the accounts stay
// the same: collect holds one page in flight and, for its duplicate check, the
// identities of one day's records. CRONKIT_BENCH_COLLECT_ACCOUNTS and
// CRONKIT_BENCH_COLLECT_HOURS (the smaller size; the larger is four times it) shrink it.
func BenchmarkBillingCollect(b *testing.B) {
	needBench(b)
	accounts, hours := 250, 100 // 100,000 records, then 400,000
	if v, err := strconv.Atoi(os.Getenv("CRONKIT_BENCH_COLLECT_ACCOUNTS")); err == nil && v > 0 {
		accounts = v
	}
	if v, err := strconv.Atoi(os.Getenv("CRONKIT_BENCH_COLLECT_HOURS")); err == nil && v > 0 {
		hours = v
	}
	bin := benchBinary(b)
	b.ResetTimer()
	for _, h := range []int{hours, 4 * hours} {
		b.StopTimer()
		db, env, api, now := collectBenchWorld(b, accounts, h)
		readT, n := readOnly(b, api, now, h)
		benchSettle(b, db.DB) // the previous size's writes flushed and purged
		b.StartTimer()
		elapsed, rss, code, out := runMeasured(b, bin, envList(env), "billing", "collect", "--output", "json")
		b.StopTimer()
		if code != 0 {
			b.Fatalf("cronkit billing collect: exit %d\n%.3000s", code, out)
		}
		var rows, raw int
		if err := db.QueryRow(`SELECT (SELECT COUNT(*) FROM usage_records), (SELECT COUNT(*) FROM cloudstack_usage)`).Scan(&rows, &raw); err != nil {
			b.Fatal(err)
		}
		if raw != n || rows != n*3/4 {
			b.Fatalf("collected %d raw records and %d usage rows; the fake served %d records (want %d usage rows: allocated time is ignored)", raw, rows, n, n*3/4)
		}
		per := func(d time.Duration) time.Duration { return time.Duration(float64(d) / float64(n) * 100_000) }
		ratio := elapsed.Seconds() / readT.Seconds()
		b.ReportMetric(ratio, fmt.Sprintf("x-read-%dk", n/1000))
		b.ReportMetric(float64(rss)/1024, fmt.Sprintf("MiB-peak-rss-%dk", n/1000))
		fmt.Printf("billing collect: %d records (%d accounts x %d hours): cronkit %s (%s per 100k), read only %s (%s per 100k): %.2fx (target <= 2x); peak RSS %.1f MiB\n",
			n, accounts, h, elapsed.Round(time.Millisecond), per(elapsed).Round(time.Millisecond),
			readT.Round(time.Millisecond), per(readT).Round(time.Millisecond), ratio, float64(rss)/1024)
	}
}
