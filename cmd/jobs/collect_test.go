package main

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
	"github.com/cronkit/cronkit/lib/orchestrator/fakecloudstack"
)

// collectNow is when the collect tests run: the usage server has processed March 2nd
// up to 13:00.
const collectNow = "2025-03-02T13:05:00Z"

const collectProducts = `
[[product]]
usage_type = 1
product    = "instance.small"
quantity   = "hours"

[[product]]
usage_type = 6
product    = "volume.gb"
quantity   = "gib_hours"

[[product]]
usage_type = 3
product    = "ip.public"
quantity   = "hours"

[[ignore]]
usage_type = 2
`

// collectFake starts a fake CloudStack on loopback with accounts cs-1..cs-n (ours
// 1..n, unless unknown) each running one VM since March 1st with a volume and an IP,
// and returns the env that points `cronkit billing collect` at it.
func collectFake(t testing.TB, db *mysqltest.DB, n int, unknown int) (*fakecloudstack.Server, map[string]string) {
	t.Helper()
	fake := fakecloudstack.New()
	fake.AddCredential("collect-key", "collect-secret")
	now, _ := time.Parse(time.RFC3339, collectNow)
	fake.Now = func() time.Time { return now }
	since := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	for i := 1; i <= n+unknown; i++ {
		cs := fmt.Sprintf("cs-%d", i)
		if _, err := fake.AddAccount(fakecloudstack.Account{ID: cs, Name: fmt.Sprintf("customer%d", i)}); err != nil {
			t.Fatal(err)
		}
		if _, err := fake.AddVM(fakecloudstack.VM{ID: fmt.Sprintf("vm-%d", i), AccountID: cs, Created: since.Add(time.Duration(i) * time.Minute)}); err != nil {
			t.Fatal(err)
		}
		if _, err := fake.AddVolume(fakecloudstack.Volume{ID: fmt.Sprintf("vol-%d", i), AccountID: cs, SizeBytes: int64(i) << 30, Created: since}); err != nil {
			t.Fatal(err)
		}
		if _, err := fake.AddPublicIP(fakecloudstack.PublicIP{ID: fmt.Sprintf("ip-%d", i), AccountID: cs, Allocated: since}); err != nil {
			t.Fatal(err)
		}
		if i <= n {
			if _, err := db.Exec(`INSERT INTO accounts (id, email, currency, created_at, cloudstack_account_id) VALUES (?, ?, 'USD', '2025-01-01', ?)`,
				i, fmt.Sprintf("c%d@example.com", i), cs); err != nil {
				t.Fatal(err)
			}
		}
	}
	api, stop, err := fake.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	products := filepath.Join(t.TempDir(), "products.toml")
	if err := os.WriteFile(products, []byte(collectProducts), 0o600); err != nil {
		t.Fatal(err)
	}
	return fake, map[string]string{
		"CRONKIT_DB_DSN": db.DSN, "CRONKIT_CLOUDSTACK_URL": api, "CRONKIT_CLOUDSTACK_API_KEY": "collect-key",
		"CRONKIT_CLOUDSTACK_SECRET_KEY": "collect-secret", "CRONKIT_PRODUCTS": products, "CRONKIT_NOW": collectNow,
		"CRONKIT_LOG_FORMAT": "json",
	}
}

func TestBillingCollectUsageErrorsExit2(t *testing.T) {
	db := mysqltest.New(t)
	_, env := collectFake(t, db, 1, 0)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[[product]]\nusage_type = 1\nproduct = \"x\"\nquantity = \"days\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noCS := map[string]string{"CRONKIT_DB_DSN": db.DSN, "CRONKIT_PRODUCTS": env["CRONKIT_PRODUCTS"]}
	noProducts := map[string]string{}
	for k, v := range env {
		if k != "CRONKIT_PRODUCTS" {
			noProducts[k] = v
		}
	}
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{env, []string{"billing", "collect", "--products", bad}, "--products " + bad + ": invalid product mapping: product 1 (x): quantity \"days\""},
		{env, []string{"billing", "collect", "--products", filepath.Join(dir, "missing.toml")}, "--products: open"},
		{noCS, []string{"billing", "collect"}, "--products turns collect on: no orchestrator: set --cloudstack-url"},
		{noCS, []string{"billing", "rate"}, "--products turns collect on"},
		{noProducts, []string{"billing", "collect"}, "'cronkit billing collect' needs --products"},
		{env, []string{"billing", "collect", "--account", "3"}, "--account does not apply"},
		{env, []string{"billing", "collect", "--collect-lookback", "0s"}, "--collect-lookback must be positive"},
		{env, []string{"billing", "collect", "--collect-page-size", "501"}, "--collect-page-size must be between 1 and 500"},
	} {
		code, out, errOut := jobs(t, tc.env, tc.args...)
		if code != 2 || out != "" || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: code %d, stdout %q, stderr %q; want 2 and %q", tc.args, code, out, errOut, tc.want)
		}
	}
	if n := countRows(t, db.DB, "job_runs"); n != 0 {
		t.Fatalf("usage errors wrote %d job_runs rows", n)
	}
}

func TestBillingCollectDryRunThenRunThenReRun(t *testing.T) {
	db := mysqltest.New(t)
	_, env := collectFake(t, db, 2, 1)

	ro := map[string]string{}
	for k, v := range env {
		ro[k] = v
	}
	ro["CRONKIT_DB_DSN"] = db.SelectOnlyUser(t)
	code, plan, errOut := jobs(t, ro, "billing", "collect", "--dry-run")
	if code != 3 {
		t.Fatalf("dry run: exit %d (want 3: cs-3 is no account of ours)\n%s\n%s", code, plan, errOut)
	}
	for _, want := range []string{
		"dry run (nothing was changed)",
		"usage hour 2025-03-02T12:00Z 6 new, 0 changed: instance.small 2 +2.000000, ip.public 2 +2.000000, volume.gb 2 +3.000000",
		"usage hour 2025-03-01T00:00Z 6 new, 0 changed: instance.small 2 +1.950000, ip.public 2 +2.000000, volume.gb 2 +3.000000",
		"collect day 2025-03-02",
		"unknown_account cloudstack account cs-3",
		"coverage usage complete to 2025-03-02T13:00Z",
	} {
		if !strings.Contains(squash(plan), want) {
			t.Errorf("plan lacks %q:\n%s", want, plan)
		}
	}
	for _, table := range []string{"usage_records", "cloudstack_usage", "usage_collect_state", "job_runs"} {
		if n := countRows(t, db.DB, table); n != 0 {
			t.Fatalf("dry run wrote %d rows into %s", n, table)
		}
	}

	code, out, errOut := jobs(t, env, "billing", "collect")
	if code != 3 || !strings.Contains(squash(out), "usage hour 2025-03-02T12:00Z 6 new") {
		t.Fatalf("run: exit %d\n%s\n%s", code, out, errOut)
	}
	// March 1st 00:00 to March 2nd 12:00: 37 hours x 2 accounts x 3 products.
	if n := countRows(t, db.DB, "usage_records"); n != 37*2*3 {
		t.Fatalf("usage_records %d, want %d", n, 37*2*3)
	}
	code, out, _ = jobs(t, env, "billing", "collect", "--output", "json")
	if code != 3 || strings.Contains(out, `"kind": "usage"`) || !strings.Contains(out, `"records_unchanged": 444`) {
		t.Fatalf("re-run wrote something or re-read less: exit %d\n%s", code, out)
	}
}

// collectState is the canonical content of collect's tables.
func collectState(t *testing.T, db *sql.DB) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		`SELECT CONCAT_WS(' ', resource_id, product, hour, account_id, quantity) FROM usage_records`,
		`SELECT CONCAT_WS(' ', HEX(identity), usage_id, usage_type, offering_id, start_date, end_date, cs_account_id, raw_usage, size,
  status, COALESCE(problem, '-'), COALESCE(account_id, '-'), COALESCE(product, '-'), COALESCE(hour, '-'), COALESCE(quantity, '-'), duplicates)
FROM cloudstack_usage`,
		`SELECT CONCAT_WS(' ', name, coverage, read_to) FROM usage_collect_state`,
	} {
		rows, err := db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, s)
		}
		rows.Close()
		sort.Strings(lines)
		fmt.Fprintf(&b, "== %d\n%s\n", len(lines), strings.Join(lines, "\n"))
	}
	return b.String()
}

func envList(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}

// TestBillingCollectSIGKILLMatchesOneCleanRun kills `cronkit billing collect` at random
// points, runs it again to completion, and requires usage_records, the raw table and
// the coverage to be exactly what one uninterrupted run writes.
func TestBillingCollectSIGKILLMatchesOneCleanRun(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level crash test")
	}
	bin := buildJobs(t)
	const accounts = 60
	// 20 seeded points, stratified over a clean run (issue 11); fewer for a quick look.
	seeds := 20
	if s := os.Getenv("CRONKIT_COLLECT_KILL_SEEDS"); s != "" {
		var err error
		if seeds, err = strconv.Atoi(s); err != nil {
			t.Fatalf("CRONKIT_COLLECT_KILL_SEEDS: %v", err)
		}
	}
	world := func() map[string]string {
		db := mysqltest.New(t)
		fake, env := collectFake(t, db, accounts, 2)
		fake.DuplicateUsageHour(time.Date(2025, 3, 2, 3, 0, 0, 0, time.UTC))
		fake.SetLatency("listUsageRecords", 15*time.Millisecond)
		env["CRONKIT_COLLECT_PAGE_SIZE"] = "50"
		return env
	}
	run := func(env map[string]string) (int, string) {
		cmd := exec.Command(bin, "billing", "collect")
		cmd.Env = append(envList(env), "CRONKIT_LOCK_WAIT=20s")
		out, _ := cmd.CombinedOutput()
		return cmd.ProcessState.ExitCode(), string(out)
	}
	dbOf := func(env map[string]string) *sql.DB {
		db, err := sql.Open("mysql", env["CRONKIT_DB_DSN"])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}

	clean := world()
	start := time.Now()
	if code, out := run(clean); code != 3 {
		t.Fatalf("clean run: exit %d\n%.3000s", code, out)
	}
	cleanDur := time.Since(start)
	want := collectState(t, dbOf(clean))
	t.Logf("clean run: %s", cleanDur.Round(time.Millisecond))

	for i := range seeds {
		t.Run(fmt.Sprintf("seed%d", i+1), func(t *testing.T) {
			env := world()
			rng := rand.New(rand.NewPCG(uint64(i+1), 0xc011ec7))
			delay := time.Duration((float64(i) + rng.Float64()) / float64(seeds) * float64(cleanDur))
			cmd := exec.Command(bin, "billing", "collect")
			cmd.Env = envList(env)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(delay)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			db := dbOf(env)
			var raw int
			if err := db.QueryRow(`SELECT COUNT(*) FROM cloudstack_usage`).Scan(&raw); err != nil {
				t.Fatal(err)
			}
			if code, out := run(env); code != 3 {
				t.Fatalf("re-run after a kill at %s (%d raw rows): exit %d\n%.3000s", delay, raw, code, out)
			}
			if got := collectState(t, db); got != want {
				t.Fatalf("kill at %s (%d raw rows): state after the re-run differs from one clean run:\n%.4000s", delay, raw, diffLines(want, got))
			}
			t.Logf("kill at %s: %d raw rows written before", delay, raw)
		})
	}
}
