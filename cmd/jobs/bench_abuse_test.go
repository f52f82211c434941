package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/jobs/abuse"
	"github.com/cronkit/cronkit/lib/mail/mailsink"
	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/orchestrator/fakecloudstack"
)

// BenchmarkAbuseRun is `cronkit abuse` over 1 million accounts of which 1,000 need
// action (952 overdue invoices to remind, 48 miners to flag and suspend), beside 200
// fresh, honest trial signups the free-credit pass must read but leave alone. The
// baseline is the bare candidate queries (abuse.Job.Candidates) on the same server: a
// run's cost must follow the candidates, not the million accounts. The run that
// follows, with 1,000 open cases and nothing to change (every 15 minutes, most of the
// day), is held to idleTarget times the candidate queries plus the orchestrator
// listing a run makes (ListingCalls and the VM listing). It prints ratios, never
// asserts timings (make bench). CRONKIT_BENCH_ACCOUNTS shrinks the population.
func BenchmarkAbuseRun(b *testing.B) {
	if os.Getenv("CRONKIT_BENCH") != "1" {
		b.Skip("set CRONKIT_BENCH=1 (make bench)")
	}
	population := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("CRONKIT_BENCH_ACCOUNTS")); err == nil && v >= 10_000 {
		population = v
	}
	const overdue, miners, fresh = 952, 48, 200
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	ctx := context.Background()
	db := mysqltest.New(b)

	setup := time.Now()
	sqlExec := func(q string, args ...any) {
		b.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	// The population, generated in the server: a year or more of customers with a
	// verified card, a paid invoice each, and an open one not yet due for one in ten.
	seq := fmt.Sprintf("seq_1_to_%d", population)
	sqlExec(`INSERT INTO accounts (id, email, currency, created_at, payment_method_verified)
SELECT seq, CONCAT('user', seq, '@example.com'), 'EUR', ? - INTERVAL (60 + seq MOD 1000) DAY, 1 FROM `+seq, now)
	sqlExec(`INSERT INTO invoices (account_id, period_start, currency, subtotal, total_minor, amount_paid_minor, status, created_at, opened_at, due_at, paid_at)
SELECT seq, '2026-10-01', 'EUR', 10, 1000, 1000, 'paid', ?, ?, ?, ? FROM `+seq, now.AddDate(0, 0, -19), now.AddDate(0, 0, -19), now.AddDate(0, 0, -5), now.AddDate(0, 0, -6))
	sqlExec(`INSERT INTO invoices (account_id, period_start, currency, subtotal, total_minor, status, created_at, opened_at, due_at)
SELECT seq, '2026-11-01', 'EUR', 10, 1000, 'open', ?, ?, ? FROM `+seq+` WHERE seq MOD 10 = 0`, now, now, now.AddDate(0, 0, 5))
	// The actionable: overdue invoices four days late, spread over the id range.
	stride := population / overdue
	sqlExec(`INSERT INTO invoices (account_id, period_start, currency, subtotal, total_minor, status, created_at, opened_at, due_at)
SELECT seq * ?, '2026-09-01', 'EUR', 50, 5000, 'open', ?, ?, ? FROM seq_1_to_`+strconv.Itoa(overdue), stride, now, now, now.AddDate(0, 0, -4))

	fake := fakecloudstack.New()
	fake.AddCredential(abuseAPIKey, abuseSecretKey)
	srv := httptest.NewServer(fake.Handler())
	defer srv.Close()
	signup := func(id int64, email, ip string, created time.Time, cpu float64, vms int) {
		cs := fmt.Sprintf("cs-%d", id)
		if _, err := fake.AddAccount(fakecloudstack.Account{ID: cs, Name: cs}); err != nil {
			b.Fatal(err)
		}
		for v := 0; v < vms; v++ {
			if _, err := fake.AddVM(fakecloudstack.VM{ID: fmt.Sprintf("%s-vm%d", cs, v), AccountID: cs, CPUUsed: cpu, Created: created.Add(time.Hour)}); err != nil {
				b.Fatal(err)
			}
		}
		sqlExec(`INSERT INTO accounts (id, email, currency, created_at, signup_ip, cloudstack_account_id) VALUES (?, ?, 'EUR', ?, ?, ?)`,
			id, email, created, ip, cs)
		sqlExec(`INSERT INTO credits (account_id, amount, currency, reason, granted_at) VALUES (?, 50, 'EUR', 'trial', ?)`, id, created)
	}
	base := int64(population) + 1_000_000
	for i := 0; i < miners; i++ { // three signups per IP on a disposable domain: score 60
		signup(base+int64(i), fmt.Sprintf("m%d@mailinator.com", i), fmt.Sprintf("198.51.100.%d", i/3), now.Add(-10*time.Hour), 99, 2)
	}
	for i := 0; i < fresh; i++ {
		signup(base+10_000+int64(i), fmt.Sprintf("founder%d@startup%d.example", i, i), fmt.Sprintf("203.0.%d.%d", i/250, i%250),
			now.Add(-48*time.Hour), 5, 1)
	}
	if _, err := db.ExecContext(ctx, `ANALYZE TABLE accounts, invoices, credits, cases`); err != nil {
		b.Fatal(err)
	}
	b.Logf("setup: %d accounts in %s", population+miners+fresh, time.Since(setup).Round(time.Second))

	// Baseline: the candidate queries alone, best of three.
	job := &abuse.Job{DB: db.DB, Policy: abuse.DefaultPolicy(), Now: func() time.Time { return now }}
	var baseline time.Duration
	var nDunning, nFree int
	for i := 0; i < 3; i++ {
		start := time.Now()
		d, f, err := job.Candidates(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if el := time.Since(start); i == 0 || el < baseline {
			baseline = el
		}
		nDunning, nFree = len(d), len(f)
	}
	// The orchestrator half of the baseline: what a run reads of CloudStack at least
	// (the totals, then one listing of every VM), best of three.
	client, err := orchestrator.New(orchestrator.Config{APIURL: srv.URL + "/client/api", APIKey: abuseAPIKey, SecretKey: abuseSecretKey})
	if err != nil {
		b.Fatal(err)
	}
	var listing time.Duration
	for i := 0; i < 3; i++ {
		start := time.Now()
		if _, err := client.ListingCalls(ctx); err != nil {
			b.Fatal(err)
		}
		if _, err := client.VMMetrics(ctx, ""); err != nil {
			b.Fatal(err)
		}
		if el := time.Since(start); i == 0 || el < listing {
			listing = el
		}
	}
	start := time.Now()
	var total int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM accounts IGNORE INDEX (accounts_created, accounts_signup_ip, accounts_stripe) WHERE email LIKE '%@%'`).Scan(&total); err != nil {
		b.Fatal(err)
	}
	scan := time.Since(start)

	sink, err := mailsink.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	bin := filepath.Join(b.TempDir(), "jobs")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build jobs: %v\n%s", err, out)
	}
	env := []string{
		"CRONKIT_DB_DSN=" + db.DSN, "CRONKIT_CLOUDSTACK_URL=" + srv.URL + "/client/api",
		"CRONKIT_CLOUDSTACK_API_KEY=" + abuseAPIKey, "CRONKIT_CLOUDSTACK_SECRET_KEY=" + abuseSecretKey,
		"CRONKIT_SMTP_HOST=127.0.0.1", "CRONKIT_SMTP_PORT=" + strconv.Itoa(sink.Port()), "CRONKIT_SMTP_TLS=none",
		"CRONKIT_MAIL_FROM=billing@cloud.example", "CRONKIT_LOG_LEVEL=warn",
	}
	runJobs := func(args ...string) (time.Duration, string) {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		var out syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		err := cmd.Run()
		el := time.Since(start)
		if err != nil {
			b.Fatalf("cronkit %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		return el, out.String()
	}
	// The orchestrator's own rate limit is off (--rate 0): it would measure the limit.
	args := []string{"abuse", "--now", now.Format(time.RFC3339), "--rate", "0", "--concurrency", "8", "--output", "json"}
	b.ResetTimer()
	acting, report := runJobs(args...)
	// The acting run delivers at most 500 mails (abuse.Config.DeliverLimit); the next
	// one delivers the rest. Only the run after that has nothing to do.
	drain, _ := runJobs(args...)
	idle, idleReport := runJobs(args...)
	b.StopTimer()
	// What any run costs before it reads anything: process start, connection, lock
	// and job_runs bookkeeping (one quiet account: no candidate, no orchestrator call).
	fixed, _ := runJobs(append(args, "--account", "1")...)
	if !strings.Contains(idleReport, `"actions": []`) || !strings.Contains(idleReport, `"mail_sent": 0,`) {
		b.Fatalf("the idle run was not idle:\n%s", idleReport)
	}

	var cases, suspended int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*), SUM(state = 'suspended') FROM cases`).Scan(&cases, &suspended); err != nil {
		b.Fatal(err)
	}
	if cases != overdue+miners || suspended != miners {
		b.Fatalf("the run did not act on the 1,000: %d cases, %d suspended\n%s", cases, suspended, report)
	}
	ratio := float64(acting) / float64(baseline)
	idleRatio := float64(idle) / float64(baseline+listing)
	b.ReportMetric(ratio, "x-baseline")
	b.ReportMetric(idleRatio, "x-idle-baseline")
	b.ReportMetric(float64(acting-idle)/float64(overdue+miners)/1e6, "ms/actionable")
	verdict := "within"
	if idleRatio > idleTarget {
		verdict = "OVER"
	}
	fmt.Printf("abuse over %d accounts, %d actionable (%d dunning + %d free-credit candidates):\n"+
		"  candidate queries %s (full scan of accounts: %s); orchestrator totals and VM listing %s\n"+
		"  run acting on 1,000: %s = %.0fx the candidate queries (%.2f ms per actionable account over the idle run)\n"+
		"  the next run, delivering the mail over the acting run's limit: %s\n"+
		"  run with nothing to do, %d open cases: %s = %.1fx the candidate queries plus the listing (target %dx: %s); %.0fx the candidate queries alone\n"+
		"  a run's fixed cost (process start, connection, lock, job_runs; a run on one quiet account): %s\n"+
		"  %d mails delivered, orchestrator %+v\n",
		total, overdue+miners, nDunning, nFree, baseline.Round(time.Microsecond), scan.Round(time.Millisecond),
		listing.Round(time.Microsecond), acting.Round(time.Millisecond), ratio, float64(acting-idle)/float64(overdue+miners)/1e6,
		drain.Round(time.Millisecond), cases, idle.Round(time.Millisecond), idleRatio, idleTarget, verdict,
		float64(idle)/float64(baseline), fixed.Round(time.Millisecond), len(sink.Messages()), fake.Counters())
}

// idleTarget bounds a run with nothing to do, in multiples of its unavoidable reads
// (the candidate queries and the orchestrator listing), process start included.
const idleTarget = 10
