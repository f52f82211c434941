package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
	"github.com/cronkit/cronkit/lib/payment"
	"github.com/cronkit/cronkit/lib/payment/fakestripe"
)

// reconcileBenchDay is the window the benchmark judges.
var reconcileBenchDay = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

// reconcileBenchWorld is n paid invoices, each with its payment here and its
// PaymentIntent at the fake Stripe, spread over one day: everything agrees, so the
// run's work is all reading, staging and matching.
func reconcileBenchWorld(b *testing.B, n int) (*mysqltest.DB, string) {
	b.Helper()
	db := mysqltest.New(b)
	start := time.Now()
	// Created evenly over the day, the PaymentIntent a second after the attempt.
	created := fmt.Sprintf("'2026-03-02' + INTERVAL (seq * 86000 DIV %d) SECOND", n)
	benchExec(b, db.DB, fmt.Sprintf(`INSERT INTO invoices (id, account_id, period_start, currency, subtotal, total_minor,
  amount_paid_minor, status, created_at, opened_at, due_at, paid_at, attempt_count, collection)
SELECT seq, seq, '2026-02-01', IF(seq MOD 4 = 0, 'USD', 'EUR'), 0, 1000 + seq MOD 5000, 1000 + seq MOD 5000, 'paid',
  '2026-03-01', '2026-03-01', '2026-03-01', %s, 1, 'succeeded' FROM seq_1_to_%d`, created, n))
	benchExec(b, db.DB, fmt.Sprintf(`INSERT INTO payments (invoice_id, account_id, attempt, idempotency_key, amount_minor, currency,
  status, provider_payment_id, created_at, updated_at)
SELECT seq, seq, 1, CONCAT('cronkit-invoice-', seq, '-attempt-1'), 1000 + seq MOD 5000, IF(seq MOD 4 = 0, 'USD', 'EUR'),
  'succeeded', CONCAT('pi_b', LPAD(seq, 9, '0')), %s, %s FROM seq_1_to_%d`, created, created, n))
	benchExec(b, db.DB, `ANALYZE TABLE invoices, payments`)

	fake := fakestripe.New(reconcileKey)
	for i := 1; i <= n; i++ {
		cur := "eur"
		if i%4 == 0 {
			cur = "usd"
		}
		at := reconcileBenchDay.Add(time.Duration(int64(i)*86000/int64(n))*time.Second + time.Second)
		if _, err := fake.AddPaymentIntent(fakestripe.PaymentIntent{ID: fmt.Sprintf("pi_b%09d", i), Amount: int64(1000 + i%5000),
			Currency: cur, Created: at, Metadata: map[string]string{"invoice_id": strconv.Itoa(i), "attempt": "1",
				"account_id": strconv.Itoa(i)}}); err != nil {
			b.Fatal(err)
		}
	}
	url, stop, err := fake.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(stop)
	b.Logf("world of %d payments in %s", n, time.Since(start).Round(time.Second))
	return db, url
}

// readAndStage is the floor the run is measured against: list the window's
// PaymentIntents from Stripe, stage them in batches of 500 into a temporary table
// like the run's, and read the window's payments with their invoices. No matching,
// no findings.
func readAndStage(b *testing.B, db *sql.DB, url string) (time.Duration, int) {
	b.Helper()
	ctx := context.Background()
	c := payment.New(payment.Config{APIKey: reconcileKey, BaseURL: url})
	start := time.Now()
	conn, err := db.Conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `CREATE TEMPORARY TABLE bench_stage (
  invoice_id BIGINT NOT NULL, kind TINYINT NOT NULL, attempt INT NOT NULL,
  object_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, intent_id VARCHAR(255) NOT NULL,
  account_id BIGINT NOT NULL, customer VARCHAR(255) NOT NULL, amount BIGINT NOT NULL, received BIGINT NOT NULL,
  currency CHAR(3) NOT NULL, status VARCHAR(32) NOT NULL, code VARCHAR(64) NOT NULL, error_code VARCHAR(64) NOT NULL,
  payment_method VARCHAR(255) NOT NULL, created BIGINT NOT NULL, due BIGINT NOT NULL, in_window TINYINT NOT NULL,
  PRIMARY KEY (invoice_id, kind, attempt, object_id)) ENGINE=InnoDB`); err != nil {
		b.Fatal(err)
	}
	var args []any
	rows := 0
	flush := func() {
		if len(args) == 0 {
			return
		}
		q := "INSERT INTO bench_stage VALUES " + strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?), ", len(args)/17), ", ")
		if _, err := conn.ExecContext(ctx, q, args...); err != nil {
			b.Fatal(err)
		}
		args = args[:0]
	}
	n := 0
	for pi, err := range c.ListPaymentIntents(ctx, payment.ListParams{CreatedFrom: reconcileBenchDay, CreatedTo: reconcileBenchDay.AddDate(0, 0, 1)}) {
		if err != nil {
			b.Fatal(err)
		}
		inv, _ := strconv.ParseInt(pi.Metadata["invoice_id"], 10, 64)
		args = append(args, inv, 1, 1, pi.ID, pi.ID, inv, pi.Customer, pi.AmountMinor, pi.AmountReceived, strings.ToUpper(pi.Currency),
			pi.Status, pi.DeclineCode, pi.ErrorCode, pi.PaymentMethod, pi.Created.Unix(), 0, 1)
		n++
		if len(args) == 500*17 {
			flush()
		}
	}
	flush()
	r, err := db.QueryContext(ctx, `SELECT p.id, p.invoice_id, p.account_id, p.attempt, p.amount_minor, p.currency, p.status,
  COALESCE(p.provider_payment_id, ''), COALESCE(p.decline_code, ''), p.created_at,
  i.id, i.account_id, i.currency, i.total_minor, i.amount_paid_minor, i.status, i.attempt_count, i.collection
FROM payments p LEFT JOIN invoices i ON i.id = p.invoice_id
WHERE p.created_at >= ? AND p.created_at < ? ORDER BY p.invoice_id, p.attempt`, reconcileBenchDay, reconcileBenchDay.AddDate(0, 0, 1))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	for r.Next() {
		var id, inv, acct, amount, iid, iacct, total, paid, attempts sql.NullInt64
		var attempt int
		var cur, status, pi, decline, icur, istatus, coll sql.NullString
		var at time.Time
		if err := r.Scan(&id, &inv, &acct, &attempt, &amount, &cur, &status, &pi, &decline, &at, &iid, &iacct, &icur, &total, &paid, &istatus, &attempts, &coll); err != nil {
			b.Fatal(err)
		}
		rows++
	}
	if err := r.Err(); err != nil {
		b.Fatal(err)
	}
	if rows != n {
		b.Fatalf("read %d payments and %d PaymentIntents", rows, n)
	}
	return time.Since(start), n
}

// BenchmarkReconcilePayments reconciles N payments (default one million) with
// `cronkit reconcile payments`, against reading and staging both sides without matching
// them (the target is <= 1.5x), at N/4 and N, whose peak RSS shows memory does not
// grow with N (target <= 128 MiB). CRONKIT_BENCH_RECONCILE_N shrinks it.
func BenchmarkReconcilePayments(b *testing.B) {
	needBench(b)
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("CRONKIT_BENCH_RECONCILE_N")); err == nil && v > 0 {
		n = v
	}
	bin := benchBinary(b)
	b.ResetTimer()
	for _, size := range []int{n / 4, n} {
		b.StopTimer()
		db, url := reconcileBenchWorld(b, size)
		floor, listed := readAndStage(b, db.DB, url)
		env := []string{"CRONKIT_DB_DSN=" + db.DSN, "CRONKIT_STRIPE_KEY=" + reconcileKey, "CRONKIT_STRIPE_URL=" + url,
			"CRONKIT_LOG_FORMAT=json", "CRONKIT_TIMEOUT=0", "CRONKIT_NOW=2026-03-03T03:00:00Z"}
		b.StartTimer()
		elapsed, rss, code, out := runMeasuredHWM(b, bin, env, "reconcile", "payments", "--output", "json")
		b.StopTimer()
		if code != 0 {
			b.Fatalf("cronkit reconcile payments: exit %d\n%.3000s", code, out)
		}
		// The report and the log lines share the output: the report is the value with
		// counts.
		var rep struct {
			Counts   map[string]int64 `json:"counts"`
			Problems *[]any           `json:"problems"`
		}
		dec := json.NewDecoder(strings.NewReader(out))
		for rep.Problems == nil {
			if err := dec.Decode(&rep); err != nil {
				b.Fatalf("report: %v\n%.2000s", err, out)
			}
		}
		if rep.Counts["stripe_payment_intents"] != int64(size) || rep.Counts["local_payments"] != int64(size) || listed != size {
			b.Fatalf("matched %d PaymentIntents and %d payments, want %d: %v", rep.Counts["stripe_payment_intents"], rep.Counts["local_payments"], size, rep.Counts)
		}
		ratio := elapsed.Seconds() / floor.Seconds()
		b.ReportMetric(ratio, fmt.Sprintf("x-read-and-stage-%dk", size/1000))
		b.ReportMetric(float64(rss)/1024, fmt.Sprintf("MiB-peak-rss-%dk", size/1000))
		fmt.Printf("reconcile payments: %d payments: cronkit %s, reading and staging both sides %s: %.2fx (target <= 1.5x); peak RSS %.1f MiB (target <= 128 MiB)\n",
			size, elapsed.Round(time.Millisecond), floor.Round(time.Millisecond), ratio, float64(rss)/1024)
	}
}

// runMeasuredHWM runs the binary and returns its wall time and peak RSS in KiB, read
// from /proc/<pid>/status (VmHWM) while it runs. The rusage figure runMeasured reports
// counts, on Linux, the parent's resident pages too (the child shares the parent's
// memory until exec, and exec records that high-water mark): with the fake Stripe's
// million PaymentIntents in this process, it would measure the fake, not the job.
// VmHWM is the peak of the job's own memory since exec; polled every 20 ms, the last
// reading misses at most the growth of its final 20 ms.
func runMeasuredHWM(b *testing.B, bin string, env []string, args ...string) (time.Duration, int64, int, string) {
	b.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	var peak int64
	go func() {
		defer close(done)
		status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
		for {
			data, err := os.ReadFile(status)
			if err != nil {
				return // exited
			}
			for _, line := range strings.Split(string(data), "\n") {
				if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
					if kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64); err == nil {
						peak = max(peak, kb)
					}
				}
			}
			if strings.Contains(string(data), "State:\tZ") {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	_ = cmd.Wait()
	elapsed := time.Since(start)
	<-done
	return elapsed, peak, cmd.ProcessState.ExitCode(), out.String()
}
