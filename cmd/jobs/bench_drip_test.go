package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/jobs/drip"
	"github.com/cronkit/cronkit/lib/mail/mailsink"
	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

// BenchmarkDripRun is `cronkit drip` with 50,000 signups in the funnel, 5,000 of them
// due now (tips, five days after signup), among a population of customers from
// before the funnel, at two population sizes (CRONKIT_BENCH_ACCOUNTS, default 1
// million, and a quarter of it): a run's cost must follow the accounts due, not the
// population nor the signups in the funnel. The baseline is the bare candidate query
// (drip.Job.Candidates: the range of drip_due_check) on the same server. Each size measures the dry run,
// the run that queues the 5,000 steps (no relay: queueing alone), the run that
// delivers them through an SMTP sink, and a run's fixed cost (one quiet account),
// each with its peak RSS (target <= 64 MiB). It prints, never asserts timings (make
// bench).
func BenchmarkDripRun(b *testing.B) {
	if os.Getenv("CRONKIT_BENCH") != "1" {
		b.Skip("set CRONKIT_BENCH=1 (make bench)")
	}
	population := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("CRONKIT_BENCH_ACCOUNTS")); err == nil && v >= 10_000 {
		population = v
	}
	const inFunnel, due = 50_000, 5_000
	now := time.Date(2026, 11, 16, 12, 0, 0, 0, time.UTC) // a Monday noon, UTC: inside the window
	ctx := context.Background()
	db := mysqltest.New(b)
	sqlExec := func(q string, args ...any) {
		b.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	sink, err := mailsink.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	bin := benchBinary(b)
	env := []string{
		"CRONKIT_DB_DSN=" + db.DSN, "CRONKIT_LOG_LEVEL=warn", "CRONKIT_MAIL_FROM=hello@cloud.example",
		"CRONKIT_UNSUBSCRIBE_URL=https://cloud.example/unsubscribe", "CRONKIT_UNSUBSCRIBE_SECRET=" + dripSecret,
		"CRONKIT_CONSOLE_URL=https://console.cloud.example/", "CRONKIT_DOCS_URL=https://docs.cloud.example/",
		"CRONKIT_BILLING_URL=https://console.cloud.example/billing", "CRONKIT_SUPPORT_EMAIL=support@cloud.example",
	}
	withSMTP := append(append([]string(nil), env...), "CRONKIT_SMTP_HOST=127.0.0.1",
		"CRONKIT_SMTP_PORT="+strconv.Itoa(sink.Port()), "CRONKIT_SMTP_TLS=none")
	args := []string{"drip", "--now", now.Format(time.RFC3339), "--output", "json", "--deliver-limit", strconv.Itoa(due)}
	run := func(env []string, extra ...string) (time.Duration, int64, string) {
		el, rss, code, out := runPeakRSS(b, bin, env, append(append([]string(nil), args...), extra...)...)
		if code != 0 {
			b.Fatalf("cronkit drip %v: exit %d\n%s", extra, code, out)
		}
		return el, rss, out
	}

	// seed puts the funnel in the same state at every size: 50,000 signups after
	// the funnel's start (ids above the population), at first_vm with welcome and
	// first_vm sent; one in ten signed up five days and an hour ago (tips due now),
	// the others three days ago (tips due in two days).
	seed := func() {
		for _, tb := range []string{"cases", "case_transitions", "mail_outbox", "drip_due", "drip_funnels", "job_runs"} {
			sqlExec("TRUNCATE TABLE " + tb)
		}
		sqlExec(`DELETE FROM accounts WHERE id > ?`, population)
		first := population + 1
		sqlExec(`INSERT INTO accounts (id, email, currency, created_at, name)
SELECT ? + seq, CONCAT('signup', seq, '@example.com'), 'EUR',
  IF(seq MOD 10 = 0, ? - INTERVAL 121 HOUR, ? - INTERVAL 72 HOUR), CONCAT('Signup ', seq)
FROM seq_1_to_`+strconv.Itoa(inFunnel), first-1, now, now)
		sqlExec(`INSERT INTO cases (account_id, machine, state, version, opened_at, state_since, evidence, updated_at)
SELECT id, 'drip:onboarding', 'first_vm', 2, created_at, created_at + INTERVAL 2 DAY, '{}', ? FROM accounts WHERE id >= ?`, now, first)
		sqlExec(`INSERT INTO drip_due (funnel, account_id, check_at)
SELECT 'onboarding', id, created_at + INTERVAL 5 DAY FROM accounts WHERE id >= ?`, first)
		for _, step := range []struct {
			name  string
			after int
		}{{"welcome", 0}, {"first_vm", 2}} {
			sqlExec(`INSERT INTO mail_outbox (dedupe_key, category, sender, recipient, recipient_address, subject, body_text, body_html,
  list_unsubscribe_url, status, attempts, next_attempt_at, sent_at, created_at)
SELECT CONCAT('drip:onboarding:', id, ':', ?), 'marketing', 'hello@cloud.example', email, email, 'x', 'x', '',
  'https://cloud.example/unsubscribe', 'sent', 1, created_at + INTERVAL ? DAY, created_at + INTERVAL ? DAY, created_at + INTERVAL ? DAY
FROM accounts WHERE id >= ?`, step.name, step.after, step.after, step.after, first)
		}
		sqlExec(`INSERT INTO drip_funnels (name, started_at, entered_until, created_at) VALUES ('onboarding', ?, ?, ?)`,
			now.AddDate(0, 0, -30), now, now.AddDate(0, 0, -30))
		sqlExec(`ANALYZE TABLE accounts, cases, drip_due, mail_outbox`)
	}

	type result struct {
		population                    int
		baseline, dry, queue, deliver time.Duration
		fixed                         time.Duration
		dryRSS, queueRSS, deliverRSS  int64
		fixedRSS                      int64
		sent                          int
	}
	measure := func(pop int) result {
		r := result{population: pop}
		seed()
		j := &drip.Job{DB: db.DB, Funnel: drip.DefaultFunnel(), Now: func() time.Time { return now }}
		for i := 0; i < 3; i++ {
			start := time.Now()
			ids, err := j.Candidates(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if el := time.Since(start); i == 0 || el < r.baseline {
				r.baseline = el
			}
			if len(ids) != due {
				b.Fatalf("%d due, want %d", len(ids), due)
			}
		}
		var out string
		r.dry, r.dryRSS, out = run(env, "--dry-run")
		if !strings.Contains(out, fmt.Sprintf(`"queued": %d`, due)) {
			b.Fatalf("dry run did not plan %d steps:\n%.2000s", due, out)
		}
		r.queue, r.queueRSS, out = run(env)
		if !strings.Contains(out, fmt.Sprintf(`"queued": %d`, due)) {
			b.Fatalf("run did not queue %d steps:\n%.2000s", due, out)
		}
		before := len(sink.Messages())
		r.deliver, r.deliverRSS, out = run(withSMTP)
		r.sent = len(sink.Messages()) - before
		if r.sent != due {
			b.Fatalf("delivered %d, want %d:\n%.2000s", r.sent, due, out)
		}
		r.fixed, r.fixedRSS, _ = run(env, "--account", "1")
		return r
	}

	setup := time.Now()
	small := population / 4
	sqlExec(`INSERT INTO accounts (id, email, currency, created_at, payment_method_verified)
SELECT seq, CONCAT('user', seq, '@example.com'), 'EUR', ? - INTERVAL (60 + seq MOD 1000) DAY, 1 FROM seq_1_to_`+strconv.Itoa(small), now)
	b.Logf("setup: %d accounts in %s", small, time.Since(setup).Round(time.Second))
	b.ResetTimer()
	results := []result{measure(small)}
	b.StopTimer()
	sqlExec(`INSERT INTO accounts (id, email, currency, created_at, payment_method_verified)
SELECT seq, CONCAT('user', seq, '@example.com'), 'EUR', ? - INTERVAL (60 + seq MOD 1000) DAY, 1 FROM seq_1_to_`+strconv.Itoa(population)+
		` WHERE seq > ?`, now, small)
	b.StartTimer()
	results = append(results, measure(population))
	b.StopTimer()

	mib := func(kib int64) float64 { return float64(kib) / 1024 }
	fmt.Printf("drip: %d signups in the funnel, %d due now (tips), deliver limit %d\n", inFunnel, due, due)
	maxRSS := int64(0)
	for _, r := range results {
		perDue := float64(r.queue-r.fixed) / due / 1e6
		fmt.Printf("  population %d (+%d in the funnel):\n"+
			"    bare candidate query %s; a run's fixed cost (one quiet account) %s, %.1f MiB\n"+
			"    dry run (plan, %d messages rendered) %s = %.0fx the candidate query, %.1f MiB\n"+
			"    run queueing %d steps (one transaction each, no relay) %s = %.0fx the candidate query; %.2f ms per due account; %.1f MiB\n"+
			"    next run, delivering %d messages to the SMTP sink %s, %.1f MiB\n",
			r.population, inFunnel, r.baseline.Round(time.Microsecond), r.fixed.Round(time.Millisecond), mib(r.fixedRSS),
			due, r.dry.Round(time.Millisecond), float64(r.dry)/float64(r.baseline), mib(r.dryRSS),
			due, r.queue.Round(time.Millisecond), float64(r.queue)/float64(r.baseline), perDue, mib(r.queueRSS),
			r.sent, r.deliver.Round(time.Millisecond), mib(r.deliverRSS))
		maxRSS = max(maxRSS, r.dryRSS, r.queueRSS, r.deliverRSS, r.fixedRSS)
	}
	a, z := results[0], results[1]
	verdict := "within"
	if mib(maxRSS) > 64 {
		verdict = "OVER"
	}
	fmt.Printf("  population x%.0f: queueing run x%.2f, dry run x%.2f, delivery run x%.2f; peak RSS %.1f MiB (target <= 64 MiB: %s)\n",
		float64(z.population)/float64(a.population), float64(z.queue)/float64(a.queue), float64(z.dry)/float64(a.dry),
		float64(z.deliver)/float64(a.deliver), mib(maxRSS), verdict)
	b.ReportMetric(float64(z.queue)/float64(a.queue), "x-queue-run-per-x4-population")
	b.ReportMetric(mib(maxRSS), "MiB-max-rss")
	b.ReportMetric(float64(z.queue-z.fixed)/due/1e6, "ms/due")
}

// runPeakRSS is runMeasured with a peak RSS that is the child's own. Go starts a child
// with vfork, and Linux carries the parent's high-water mark into the child's
// ru_maxrss at exec: a benchmark holding thousands of received mails would be
// measured, not the job. GNU time forks for real and reports its child's peak, so it
// is used when present (else runMeasured, which then reads high).
func runPeakRSS(b *testing.B, bin string, env []string, args ...string) (time.Duration, int64, int, string) {
	b.Helper()
	timeBin, err := exec.LookPath("/usr/bin/time")
	if err != nil {
		b.Log("no /usr/bin/time: peak RSS includes the benchmark process's")
		return runMeasured(b, bin, env, args...)
	}
	report := filepath.Join(b.TempDir(), "rss")
	el, _, code, out := runMeasured(b, timeBin, env, append([]string{"-f", "%M", "-o", report, bin}, args...)...)
	raw, err := os.ReadFile(report)
	if err != nil {
		b.Fatalf("read peak RSS: %v", err)
	}
	lines := strings.Fields(string(raw))
	kib, err := strconv.ParseInt(lines[len(lines)-1], 10, 64)
	if err != nil {
		b.Fatalf("peak RSS %q: %v", raw, err)
	}
	return el, kib, code, out
}
