package reconcile

import (
	"context"
	"fmt"
	"iter"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
	"github.com/cronkit/cronkit/lib/orchestrator"
)

// The usage check at scale: N resources (half VMs, 30 % volumes, 20 % addresses, ten
// to an account) listed by a synthetic orchestrator in no key order, 5 % of the VMs
// stopped and started in the window (two events each), metered by a daily usage
// server (one record a resource and usage type: N x 1.5 raw records and N
// usage_records rows). One VM in 10,000 has lost its usage, and 10 records meter
// resources nobody has.
//
// Each phase runs in a child process (this test binary again) so its peak RSS is its
// own: "base" stages the orchestrator's side and reads the metering side (the two
// reads the check cannot avoid), "full" is UsageCheck.Run; each twice, the faster
// counting. The claim: full <= 1.5 x base, RSS flat in N. "files" is the check on a
// READ ONLY session (a dry run), which stages in sorted temporary files.

// benchWorld is the synthetic cloud's size.
type benchWorld struct{ n, vms, volumes, ips, accounts int }

func newBenchWorld(n int) benchWorld {
	w := benchWorld{n: n, vms: n / 2, volumes: n * 3 / 10}
	w.ips = n - w.vms - w.volumes
	w.accounts = max(1, n/10)
	return w
}

func (w benchWorld) account(i int) string { return fmt.Sprintf("cs-%07d", i%w.accounts+1) }

// permute visits 1..n in a scattered order (a multiplicative step coprime with n),
// as CloudStack's listings are in no key order.
func permute(n int, yield func(int) bool) {
	step := 7_919
	for step%n == 0 || gcd(step, n) != 1 {
		step++
	}
	for k := 0; k < n; k++ {
		if !yield((k*step)%n + 1) {
			return
		}
	}
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// benchOrchestrator generates the inventory and events on the fly: no memory per
// resource.
type benchOrchestrator struct{ w benchWorld }

func (o benchOrchestrator) ListAccounts(context.Context) ([]orchestrator.Account, error) {
	out := make([]orchestrator.Account, o.w.accounts)
	for i := range out {
		out[i] = orchestrator.Account{ID: o.w.account(i), Name: fmt.Sprintf("a%d", i), State: orchestrator.AccountEnabled}
	}
	return out, nil
}

func (o benchOrchestrator) VMs(_ context.Context, _ orchestrator.ListVMs) iter.Seq2[orchestrator.VM, error] {
	return func(yield func(orchestrator.VM, error) bool) {
		permute(o.w.vms, func(i int) bool {
			return yield(orchestrator.VM{ID: fmt.Sprintf("vm-%07d", i), AccountID: o.w.account(i), State: orchestrator.VMRunning,
				Created: day.Add(-48 * time.Hour)}, nil)
		})
	}
}

func (o benchOrchestrator) Volumes(context.Context) iter.Seq2[orchestrator.Volume, error] {
	return func(yield func(orchestrator.Volume, error) bool) {
		permute(o.w.volumes, func(i int) bool {
			return yield(orchestrator.Volume{ID: fmt.Sprintf("vol-%07d", i), AccountID: o.w.account(i), State: "Ready",
				Created: day.Add(-48 * time.Hour)}, nil)
		})
	}
}

func (o benchOrchestrator) PublicIPs(context.Context) iter.Seq2[orchestrator.PublicIP, error] {
	return func(yield func(orchestrator.PublicIP, error) bool) {
		permute(o.w.ips, func(i int) bool {
			return yield(orchestrator.PublicIP{ID: fmt.Sprintf("ip-%07d", i), AccountID: o.w.account(i), State: "Allocated",
				Allocated: day.Add(-48 * time.Hour)}, nil)
		})
	}
}

// Events: every 20th VM stopped at 10:00 and started 30 s later, newest first.
func (o benchOrchestrator) Events(_ context.Context, f orchestrator.ListEvents) iter.Seq2[orchestrator.Event, error] {
	return func(yield func(orchestrator.Event, error) bool) {
		for _, typ := range f.Types {
			at := day.Add(10 * time.Hour)
			switch typ {
			case orchestrator.EventVMStop:
			case orchestrator.EventVMStart:
				at = at.Add(30 * time.Second)
			default:
				continue
			}
			for i := o.w.vms - o.w.vms%20; i > 0; i -= 20 {
				if !yield(orchestrator.Event{ID: fmt.Sprintf("ev-%s-%d", typ, i), Type: typ, State: orchestrator.EventStateCompleted,
					Level: "INFO", Created: at, ResourceID: fmt.Sprintf("vm-%07d", i), AccountID: o.w.account(i)}, nil) {
					return
				}
			}
		}
	}
}

// seed writes the metering side and our accounts with SQL (MariaDB's sequence
// engine), every 10,000th VM unmetered and 10 ghost records.
func (w benchWorld) seed(b *testing.B, db *mysqltest.DB) {
	b.Helper()
	ctx := context.Background()
	exec := func(q string, args ...any) {
		b.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	exec(fmt.Sprintf(`INSERT INTO accounts (id, email, currency, created_at, cloudstack_account_id)
SELECT seq, CONCAT('a', seq, '@example.com'), 'EUR', '2025-01-01', CONCAT('cs-', LPAD(seq, 7, '0')) FROM seq_1_to_%d`, w.accounts))
	start, end := day, day.Add(24*time.Hour-time.Second)
	raw := func(prefix string, usageType, n int, status, product, where string) {
		b.Helper()
		exec(fmt.Sprintf(`INSERT INTO cloudstack_usage (identity, usage_id, usage_type, offering_id, start_date, end_date,
  cs_account_id, content_hash, raw_usage, status, account_id, product, hour, quantity, first_seen_at, changed_at)
SELECT UNHEX(SHA2(CONCAT('%[1]s', seq, '/', %[2]d), 256)), CONCAT('%[1]s', LPAD(seq, 7, '0')), %[2]d, '', ?, ?,
  CONCAT('cs-', LPAD(seq %% %[3]d + 1, 7, '0')), UNHEX(SHA2('24', 256)), '24', '%[4]s', seq %% %[3]d + 1, %[5]s, ?, %[6]s, ?, ?
FROM seq_1_to_%[7]d WHERE %[8]s`, prefix, usageType, w.accounts, status, product, map[bool]string{true: "NULL", false: "24"}[status == "ignored"], n, where),
			start, end, start, end, end)
	}
	raw("vm-", 1, w.vms, "collected", "'instance.small'", "seq % 10000 <> 0")
	raw("vm-", 2, w.vms, "ignored", "NULL", "seq % 10000 <> 0")
	raw("vol-", 6, w.volumes, "collected", "'volume.gb'", "1")
	raw("ip-", 3, w.ips, "collected", "'ip.public'", "1")
	raw("ghost-", 1, 10, "collected", "'instance.small'", "1")
	exec(`INSERT INTO usage_records (account_id, resource_id, product, hour, quantity)
SELECT account_id, usage_id, product, hour, quantity FROM cloudstack_usage WHERE status = 'collected'`)
	exec(`INSERT INTO usage_collect_state (name, coverage, read_to, updated_at) VALUES ('cloudstack', ?, ?, ?)`, end, end, end)
	exec(`ANALYZE TABLE cloudstack_usage, usage_records, accounts`)
}

// BenchmarkUsageCheck runs the usage check on CRONKIT_BENCH_USAGE_N resources (1M by
// default) and a quarter of them, each phase in a child process.
func BenchmarkUsageCheck(b *testing.B) {
	if os.Getenv("CRONKIT_BENCH") != "1" {
		b.Skip("set CRONKIT_BENCH=1 (make bench)")
	}
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("CRONKIT_BENCH_USAGE_N")); err == nil && v > 0 {
		n = v
	}
	for _, size := range []int{n / 4, n} {
		b.StopTimer()
		w := newBenchWorld(size)
		db := mysqltest.New(b)
		w.seed(b, db)
		// The machine is shared and noisy: each phase runs twice, alternating, and
		// the faster run of each counts.
		var (
			baseT, fullT     time.Duration
			baseRSS, fullRSS int64
			baseOut, fullOut string
		)
		for round := 0; round < 2; round++ {
			t, rss, out := benchChild(b, db.DSN, size, "base")
			if round == 0 || t < baseT {
				baseT, baseOut = t, out
			}
			baseRSS = max(baseRSS, rss)
			b.StartTimer()
			t, rss, out = benchChild(b, db.DSN, size, "full")
			b.StopTimer()
			if round == 0 || t < fullT {
				fullT, fullOut = t, out
			}
			fullRSS = max(fullRSS, rss)
		}
		// The dry run's way: a READ ONLY session stages in files.
		filesT, filesRSS, filesOut := benchChild(b, db.DSN, size, "files")
		wantFindings := fmt.Sprintf("findings running_not_metered=%d metered_not_found=10", w.vms/10000)
		for _, out := range []string{fullOut, filesOut} {
			if !strings.Contains(out, wantFindings) {
				b.Fatalf("want %q in\n%s", wantFindings, out)
			}
		}
		ratio := fullT.Seconds() / baseT.Seconds()
		b.ReportMetric(ratio, fmt.Sprintf("x-base-%dk", size/1000))
		b.ReportMetric(float64(fullRSS)/1024, fmt.Sprintf("MiB-peak-rss-%dk", size/1000))
		fmt.Printf("reconcile usage: %d resources: check %s (peak RSS %.1f MiB), stage+read %s (peak RSS %.1f MiB): %.2fx (target <= 1.5x)\n  base: %s  full: %s\n",
			size, fullT.Round(time.Millisecond), float64(fullRSS)/1024, baseT.Round(time.Millisecond), float64(baseRSS)/1024, ratio,
			strings.TrimSpace(baseOut), strings.TrimSpace(fullOut))
		fmt.Printf("  staged in files (READ ONLY session): %s (%.2fx), peak RSS %.1f MiB\n",
			filesT.Round(time.Millisecond), filesT.Seconds()/baseT.Seconds(), float64(filesRSS)/1024)
	}
}

// benchChild runs one phase in a child process and returns its wall time, peak RSS
// (KiB) and output.
func benchChild(b *testing.B, dsn string, n int, phase string) (time.Duration, int64, string) {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestUsageBenchChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "CRONKIT_BENCH_CHILD="+phase, "CRONKIT_BENCH_CHILD_DSN="+dsn,
		"CRONKIT_BENCH_CHILD_N="+strconv.Itoa(n), "GOGC=100")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	elapsed := time.Since(start)
	if err != nil {
		b.Fatalf("%s child: %v\n%s", phase, err, out)
	}
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "phase ") {
			lines = append(lines, l)
		}
	}
	return elapsed, rss, strings.Join(lines, "\n")
}

// TestUsageBenchChild is BenchmarkUsageCheck's child process; it is skipped
// otherwise.
func TestUsageBenchChild(t *testing.T) {
	phase := os.Getenv("CRONKIT_BENCH_CHILD")
	if phase == "" {
		t.Skip("run by BenchmarkUsageCheck")
	}
	n, _ := strconv.Atoi(os.Getenv("CRONKIT_BENCH_CHILD_N"))
	ctx := context.Background()
	db, err := mysql.Open(ctx, os.Getenv("CRONKIT_BENCH_CHILD_DSN"), mysql.Options{ReadOnly: phase == "files"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if path := os.Getenv("CRONKIT_BENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path + "." + phase)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	w := newBenchWorld(n)
	u := &UsageCheck{DB: db, Orchestrator: benchOrchestrator{w}, Now: func() time.Time { return day.Add(30 * time.Hour) }}
	switch phase {
	case "full", "files":
		u.TempDir = t.TempDir()
		found := map[string]int{}
		stats, err := u.Run(ctx, time.Time{}, time.Time{}, func(f Finding) error { found[f.Class]++; return nil })
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("phase %s (staged in %s): %d resources, %d metering rows, %d events; findings running_not_metered=%d metered_not_found=%d (%d classes)\n",
			phase, stats.Staging, stats.Resources, stats.MeteringRows, stats.Events, found[ClassRunningNotMetered], found[ClassMeteredNotFound], len(found))
	case "base":
		staged, metered, err := stageAndRead(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("phase base: %d rows staged, %d metering rows read\n", staged, metered)
	default:
		t.Fatalf("unknown phase %q", phase)
	}
}

// stageAndRead is the floor the check is measured against: the orchestrator's side
// staged and the metering side read, both as the check does them, with no merge.
func stageAndRead(ctx context.Context, u *UsageCheck) (staged, metered int64, err error) {
	r, err := u.newRun(time.Time{}, time.Time{}, func(Finding) error { return nil })
	if err != nil {
		return 0, 0, err
	}
	if err := r.loadSuspended(ctx); err != nil {
		return 0, 0, err
	}
	if err := r.loadCoverage(ctx); err != nil {
		return 0, 0, err
	}
	sink, err := r.openStage(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer sink.close()
	meter := r.readMetering(ctx)
	defer meter.stop()
	if err := r.stage(ctx, sink); err != nil {
		return 0, 0, err
	}
	if err := sink.finish(ctx); err != nil {
		return 0, 0, err
	}
	for b := range meter.ch {
		if b.err != nil {
			return 0, 0, b.err
		}
		metered += int64(len(b.rows))
	}
	return r.stats.VMs + r.stats.Volumes + r.stats.IPs + r.stats.Events, metered, nil
}
