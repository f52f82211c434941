package main

// The fault suite (issue 11): every job and billing phase, run by the built binary
// through toxiproxy, against each of its dependencies under each fault. For every
// case it checks
//   - the exit code by the README's rule: a fault that stops the run is 1 (MySQL
//     lost; any dependency down at start or mid-run, once the run needed it: the job
//     stops calling it), a fault confined to items is 3 (one API error: the rest of
//     the run completes), and 0 only when nothing was skipped (the state after the
//     faulted run is already the undisturbed run's);
//   - after a slow fault, job_runs holds the run's final state (not 'running');
//   - every stderr line is the run's JSON log with its run id, and a failed run has
//     a warning or error line that names the dependency;
//   - no secret in anything captured (stdout, stderr, job_runs);
//   - after the fault is removed, at most two more runs reach exactly the state of
//     an undisturbed run (the tables that matter, row by row, ids normalised).
//
// CRONKIT_CHAOS=full runs the whole matrix (make chaos); otherwise a representative
// subset runs, and -short skips it. CRONKIT_CHAOS_TABLE=FILE writes the job x fault
// table there.

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	zlog "github.com/rs/zerolog/log"

	"github.com/cronkit/cronkit/lib/mail/mailsink"
	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

// chaosWorld is one job's world, fresh for each case: its environment (pointing at
// the real upstreams), the upstreams to proxy, its state, and its secrets.
type chaosWorld struct {
	env      map[string]string
	upstream map[string]string // dependency -> host:port
	db       *mysqltest.DB
	state    func(t *testing.T) string
	secrets  []string
	// failOne makes the dependency answer the next call with an API error (a
	// Stripe 500, a CloudStack errorcode): a fault confined to one item.
	failOne map[string]func()
}

// chaosJob is a job or billing phase under test.
type chaosJob struct {
	name string
	args []string
	deps []string // besides mysql
	// prepare runs undisturbed steps before the one under test (rate before close).
	prepare [][]string
	setup   func(t *testing.T) *chaosWorld
}

// chaosFault is one fault: when it applies (start, or mid-run once the link carried
// half an undisturbed run's bytes) and what it does.
type chaosFault struct {
	name  string
	mid   bool
	apply func(t *testing.T, l *chaosLink)
	// stops is true when the fault, on MySQL, must stop the run (exit 1).
	stops bool
	only  string // a dependency this fault is for ("mysql"), or "" for all
	slow  bool   // the fault slows the dependency down (it may end in the run's timeout)
	// item is an API error on one call (chaosWorld.failOne), not a network fault:
	// it must give 3, the rest of the run done. deps are the dependencies it applies to.
	item bool
	deps []string
}

// appliesTo reports whether f applies to dependency dep.
func (f chaosFault) appliesTo(dep string) bool {
	switch {
	case f.only != "":
		return f.only == dep
	case f.deps != nil:
		return slices.Contains(f.deps, dep)
	}
	return true
}

var chaosFaults = []chaosFault{
	{name: "latency 2s", slow: true, apply: func(t *testing.T, l *chaosLink) {
		l.toxic(t, "latency", "downstream", map[string]int64{"latency": 2000})
	}},
	{name: "down at start", stops: true, apply: func(t *testing.T, l *chaosLink) { l.down() }},
	{name: "reset mid-run", mid: true, apply: func(t *testing.T, l *chaosLink) {
		l.toxic(t, "reset_peer", "upstream", map[string]int64{"timeout": 0})
		l.toxic(t, "reset_peer", "downstream", map[string]int64{"timeout": 0})
		time.Sleep(500 * time.Millisecond)
		l.p.Toxics.ResetToxics(t.Context())
	}},
	{name: "down mid-run", mid: true, stops: true, apply: func(t *testing.T, l *chaosLink) { l.down() }},
	{name: "restart mid-run", mid: true, stops: true, only: "mysql", apply: func(t *testing.T, l *chaosLink) {
		l.down()
		time.Sleep(time.Second)
		l.up(t)
	}},
	{name: "slow close", slow: true, apply: func(t *testing.T, l *chaosLink) {
		l.toxic(t, "slow_close", "downstream", map[string]int64{"delay": 2000})
	}},
	{name: "bandwidth 32KB/s", slow: true, apply: func(t *testing.T, l *chaosLink) {
		l.toxic(t, "bandwidth", "downstream", map[string]int64{"rate": 32})
	}},
	{name: "one API error", item: true, deps: []string{"stripe", "cloudstack"}},
}

// chaosTimeout bounds every faulted run: a slow dependency ends in a timeout (1).
const chaosTimeout = "10s"

// chaosPingSecret is a healthcheck URL path every run pings: it is a secret too.
const chaosPingSecret = "ping-chaos-5ecret-uuid"

// chaosSMTPUser and chaosSMTPPassword log drip and abuse in to the SMTP sink: the
// password is a secret the suite looks for too.
const (
	chaosSMTPUser     = "cronkit-relay"
	chaosSMTPPassword = "smtp-chaos-5ecret-pw"
)

// smtpAuth makes sink require a login and env give it.
func smtpAuth(sink *mailsink.Sink, env map[string]string) map[string]string {
	sink.RequireAuth(chaosSMTPUser, chaosSMTPPassword)
	env["CRONKIT_SMTP_USERNAME"] = chaosSMTPUser
	env["CRONKIT_SMTP_PASSWORD"] = chaosSMTPPassword
	return env
}

func chaosJobs() []chaosJob {
	billing := func(t *testing.T) *chaosWorld {
		db := mysqltest.New(t)
		seedBilling(t, db.DB)
		fake := startBillingFake(t, 0)
		return &chaosWorld{
			env: envMap(billingEnv(db, fake)), db: db,
			upstream: map[string]string{"mysql": hostPort(db.DSN), "stripe": hostPort(fake.URL)},
			state:    func(t *testing.T) string { return billingState(t, db.DB, fake) },
			secrets:  []string{testStripeKey},
			failOne:  map[string]func(){"stripe": func() { fake.FailNext(1, http.StatusInternalServerError) }},
		}
	}
	return []chaosJob{
		{name: "billing collect", args: []string{"billing", "collect"}, deps: []string{"cloudstack"},
			setup: func(t *testing.T) *chaosWorld {
				db := mysqltest.New(t)
				_, env := collectFake(t, db, 6, 1)
				return &chaosWorld{env: env, db: db,
					upstream: map[string]string{"mysql": hostPort(db.DSN), "cloudstack": hostPort(env["CRONKIT_CLOUDSTACK_URL"])},
					state:    func(t *testing.T) string { return collectState(t, db.DB) },
					secrets:  []string{"collect-key", "collect-secret"},
				}
			}},
		{name: "billing rate", args: []string{"billing", "rate"}, setup: billing},
		{name: "billing close", args: []string{"billing", "close"}, prepare: [][]string{{"billing", "rate"}}, setup: billing},
		{name: "billing charge", args: []string{"billing", "charge"}, deps: []string{"stripe"},
			prepare: [][]string{{"billing", "rate"}, {"billing", "close"}}, setup: billing},
		{name: "abuse", args: []string{"abuse", "--now", abuseNow(21)}, deps: []string{"cloudstack", "smtp"},
			prepare: [][]string{{"abuse", "--now", abuseNow(3)}, {"abuse", "--now", abuseNow(14)}},
			setup: func(t *testing.T) *chaosWorld {
				w := newAbuseWorld(t)
				return &chaosWorld{env: smtpAuth(w.sink, w.env(w.db.DSN)), db: w.db,
					upstream: map[string]string{"mysql": hostPort(w.db.DSN), "cloudstack": hostPort(w.url), "smtp": w.sink.Addr()},
					state:    func(t *testing.T) string { return abuseChaosState(t, w) },
					secrets:  []string{abuseAPIKey, abuseSecretKey, chaosSMTPPassword},
					failOne:  map[string]func(){"cloudstack": func() { w.fake.FailNext("stopVirtualMachine", 1, 530) }},
				}
			}},
		{name: "drip", args: []string{"drip", "--now", dripT0.Format(time.RFC3339), "--since", "2026-03-02"}, deps: []string{"smtp"},
			setup: func(t *testing.T) *chaosWorld {
				w := newDripWorld(t, 12, "UTC", "Europe/Paris", "Africa/Lagos")
				return &chaosWorld{env: smtpAuth(w.sink, w.env(w.db.DSN)), db: w.db,
					upstream: map[string]string{"mysql": hostPort(w.db.DSN), "smtp": w.sink.Addr()},
					state:    func(t *testing.T) string { return dripChaosState(t, w) },
					secrets:  []string{dripSecret, chaosSMTPPassword},
				}
			}},
		{name: "reconcile --fix", args: []string{"reconcile", "payments", "--fix"}, deps: []string{"stripe"},
			setup: func(t *testing.T) *chaosWorld {
				w := newReconcileWorld(t, 4, 0)
				return &chaosWorld{env: w.env(), db: w.db,
					upstream: map[string]string{"mysql": hostPort(w.db.DSN), "stripe": hostPort(w.url)},
					state:    w.state,
					secrets:  []string{reconcileKey},
				}
			}},
	}
}

// chaosSubset is what CI runs: each fault once, each job at least once, each
// dependency at least once.
var chaosSubset = map[string]bool{
	"billing collect/cloudstack/down at start": true,
	"billing rate/mysql/restart mid-run":       true,
	"billing close/mysql/reset mid-run":        true,
	"billing charge/stripe/reset mid-run":      true,
	"abuse/smtp/down mid-run":                  true,
	"abuse/cloudstack/latency 2s":              true,
	"drip/mysql/down mid-run":                  true,
	"reconcile --fix/stripe/down at start":     true,
	"reconcile --fix/mysql/slow close":         true,
	"drip/smtp/bandwidth 32KB/s":               true,
	"billing charge/stripe/down at start":      true,
	"abuse/cloudstack/down mid-run":            true,
	"billing charge/stripe/one API error":      true,
	"abuse/cloudstack/one API error":           true,
}

// chaosResult is one row of the table.
type chaosResult struct {
	job, dep, fault string
	code            int
	landed          bool // the mid-run fault hit while the run was still using the link
	converged       bool
	reruns          int
	seconds         float64
}

func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("fault suite: make chaos")
	}
	mysqltest.AdminDSN(t)
	full := os.Getenv("CRONKIT_CHAOS") == "full"
	// toxiproxy's bandwidth toxic logs through zerolog's global logger; the jobs
	// never use it.
	zlog.Logger = zerolog.Nop()
	bin := buildJobs(t)
	ping := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(ping.Close)
	pingURL := ping.URL + "/" + chaosPingSecret

	var mu sync.Mutex
	var results []chaosResult
	// The table once every case has finished (the cases run in parallel).
	t.Cleanup(func() {
		table := chaosTable(results)
		t.Logf("fault matrix:\n%s", table)
		if path := os.Getenv("CRONKIT_CHAOS_TABLE"); path != "" {
			if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
				t.Error(err)
			}
		}
		checkFailureModesReadme(t, results)
	})
	for _, job := range chaosJobs() {
		t.Run(job.name, func(t *testing.T) {
			t.Parallel()
			// The undisturbed run, through idle proxies: its state is the target, the
			// length of its log times the mid-run faults.
			w := job.setup(t)
			chaosLinks(t, w)
			w.env["CRONKIT_PING_URL"] = pingURL
			for _, p := range job.prepare {
				if code, out := chaosRun(t, bin, w.env, p); code != 0 && code != 3 {
					t.Fatalf("prepare %v: exit %d\n%s", p, code, out)
				}
			}
			cmd := exec.Command(bin, job.args...)
			cmd.Env = envList(w.env)
			var stderr syncBuffer
			cmd.Stderr = &stderr
			_ = cmd.Run()
			baseline := cmd.ProcessState.ExitCode()
			if baseline != 0 && baseline != 3 {
				t.Fatalf("undisturbed run: exit %d\n%s", baseline, stderr.String())
			}
			checkRunLog(t, stderr.String(), "", false, false)
			want := w.state(t)
			// Mid-run faults land once the faulted run has logged half the lines the
			// undisturbed one did: in the middle of its items.
			lines := strings.Count(stderr.String(), "\n")
			for _, dep := range append([]string{"mysql"}, job.deps...) {
				for _, f := range chaosFaults {
					if !f.appliesTo(dep) {
						continue
					}
					key := job.name + "/" + dep + "/" + f.name
					if !full && !chaosSubset[key] {
						continue
					}
					t.Run(dep+"/"+f.name, func(t *testing.T) {
						t.Parallel()
						r := chaosCase(t, bin, job, dep, f, want, baseline, lines, pingURL)
						mu.Lock()
						results = append(results, r)
						mu.Unlock()
					})
				}
			}
		})
	}
}

// chaosLinks puts a proxy in front of each of w's upstreams and points w's
// environment at the proxies.
func chaosLinks(t *testing.T, w *chaosWorld) map[string]*chaosLink {
	t.Helper()
	n := newChaosNet()
	links := map[string]*chaosLink{}
	for dep, up := range w.upstream {
		l := n.link(t, dep, up)
		l.rewriteEnv(w.env, up)
		links[dep] = l
	}
	return links
}

// chaosCase runs one job under one fault on one dependency, then without it.
func chaosCase(t *testing.T, bin string, job chaosJob, dep string, f chaosFault, want string, baseline int, lines int, pingURL string) chaosResult {
	start := time.Now()
	w := job.setup(t)
	if f.item && w.failOne[dep] == nil {
		t.Skipf("%s: no API error to inject into %s (it stops on any error: a network fault covers it)", job.name, dep)
	}
	links := chaosLinks(t, w)
	w.env["CRONKIT_PING_URL"] = pingURL
	for _, p := range job.prepare {
		if code, out := chaosRun(t, bin, w.env, p); code != 0 && code != 3 {
			t.Fatalf("prepare %v: exit %d\n%s", p, code, out)
		}
	}
	l := links[dep]
	var captured bytes.Buffer
	res := chaosResult{job: job.name, dep: dep, fault: f.name, landed: true}

	// The faulted run.
	cmd := exec.Command(bin, append(job.args, "--timeout", chaosTimeout)...)
	cmd.Env = envList(w.env)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	switch {
	case f.item:
		w.failOne[dep]()
	case !f.mid:
		f.apply(t, l)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	applied := make(chan struct{})
	go func() {
		defer close(applied)
		if !f.mid {
			return
		}
		if !waitLines(&stderr, max(2, lines/2), done, 60*time.Second) {
			res.landed = false
			return
		}
		// A fault that came after the run had ended did not land.
		select {
		case <-done:
			res.landed = false
		default:
		}
		f.apply(t, l)
	}()
	_ = cmd.Wait()
	close(done)
	<-applied
	res.code = cmd.ProcessState.ExitCode()
	errOut := stderr.String()
	captured.WriteString(stdout.String() + errOut)
	stateAfterFault := w.state(t)
	if os.Getenv("CRONKIT_CHAOS_VERBOSE") != "" {
		t.Logf("faulted run's stderr:\n%s", errOut)
	}

	// The rule: 0 (or the undisturbed run's 3) only when nothing was skipped.
	switch {
	case res.code == 0 && stateAfterFault != want:
		t.Errorf("exit 0 but the run skipped work:\n%s", diffLines(want, stateAfterFault))
	case res.code != 0 && res.code != 1 && res.code != 3:
		t.Errorf("exit %d, want 0, 1 or 3\n%s", res.code, errOut)
	case f.stops && res.landed && res.code != 1 && stateAfterFault != want:
		t.Errorf("%s lost: exit %d, want 1 (the run stops when a dependency it needs is down)\n%s", dep, res.code, errOut)
	case f.item && res.code != 3:
		t.Errorf("one API error from %s: exit %d, want 3 (an item's problem, the rest done)\n%s", dep, res.code, errOut)
	}
	if f.slow {
		checkRunRecorded(t, w.db.DB, errOut, res.code)
	}
	checkRunLog(t, errOut, dep, f.slow, res.code != baseline || stateAfterFault != want)

	// The fault removed: the next runs converge to the undisturbed end state.
	l.clear(t)
	got := stateAfterFault
	for res.reruns = 0; res.reruns < 2 && got != want; {
		res.reruns++
		code, out := chaosRun(t, bin, w.env, append(job.args, "--lock-wait", "20s"))
		captured.WriteString(out)
		if code != 0 && code != 3 {
			t.Errorf("re-run %d without the fault: exit %d\n%s", res.reruns, code, out)
		}
		got = w.state(t)
	}
	res.converged = got == want
	if !res.converged {
		t.Errorf("after the fault and %d re-runs, state differs from an undisturbed run:\n%s", res.reruns, diffLines(want, got))
	}
	captured.WriteString(jobRunsText(t, w.db.DB))
	_, pw, _ := strings.Cut(w.db.DSN, ":")
	pw, _, _ = strings.Cut(pw, "@")
	assertNoSecret(t, "captured output and job_runs", captured.String(), append([]string{pw, chaosPingSecret}, w.secrets...)...)
	res.seconds = time.Since(start).Seconds()
	t.Logf("%s/%s/%s: exit %d, landed %v, converged %v after %d re-runs, %.1fs", job.name, dep, f.name, res.code, res.landed, res.converged, res.reruns, res.seconds)
	return res
}

// waitLines waits until w holds n lines, or done is closed, or bound passed; it
// reports whether the lines came.
func waitLines(w *syncBuffer, n int, done <-chan struct{}, bound time.Duration) bool {
	deadline := time.Now().Add(bound)
	for time.Now().Before(deadline) {
		if strings.Count(w.String(), "\n") >= n {
			return true
		}
		select {
		case <-done:
			return false
		case <-time.After(time.Millisecond):
		}
	}
	return false
}

// chaosRun runs the binary to its end: exit code and everything it printed.
func chaosRun(t *testing.T, bin string, env map[string]string, args []string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = envList(env)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	_ = cmd.Run()
	return cmd.ProcessState.ExitCode(), out.String()
}

// checkRunLog requires every stderr line to be the run's JSON log line, all with one
// run id, and, when the fault had an effect, a warning or error naming dep (or, for
// a slow dependency, the run's timeout: the run cannot tell which one was slow).
func checkRunLog(t *testing.T, stderr, dep string, slow, effect bool) {
	t.Helper()
	runID := ""
	named := false
	for _, line := range strings.Split(strings.TrimRight(stderr, "\n"), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("stderr line is not the run's JSON log: %q", line)
			continue
		}
		id, _ := m["run_id"].(string)
		if id == "" || (runID != "" && id != runID) {
			t.Errorf("stderr line without the run's id %q: %q", runID, line)
		}
		if runID == "" {
			runID = id
		}
		if lvl := m["level"]; (lvl == "warn" || lvl == "error") && (namesDependency(line, dep) || slow && strings.Contains(line, "timeout")) {
			named = true
		}
	}
	if effect && !named {
		t.Errorf("no warning or error line names %s:\n%s", dep, stderr)
	}
}

// logRunID finds the run's id in its JSON log.
var logRunID = regexp.MustCompile(`"run_id":"([0-9A-Z]+)"`)

// checkRunRecorded requires the faulted run's job_runs row to hold its final state
// and exit code: a slow MySQL must not leave it 'running'. A run that could not
// start has no row.
func checkRunRecorded(t *testing.T, db *sql.DB, stderr string, code int) {
	t.Helper()
	m := logRunID.FindStringSubmatch(stderr)
	if m == nil {
		t.Errorf("no run id in the faulted run's log:\n%s", stderr)
		return
	}
	var status string
	var exit sql.NullInt64
	err := db.QueryRow(`SELECT status, exit_code FROM job_runs WHERE id = ?`, m[1]).Scan(&status, &exit)
	switch {
	case errors.Is(err, sql.ErrNoRows) && strings.Contains(stderr, "run could not start"):
	case err != nil:
		t.Errorf("job_runs row of run %s: %v", m[1], err)
	case status == "running" || !exit.Valid || int(exit.Int64) != code:
		t.Errorf("job_runs row of run %s: status %s, exit %v; want its final state, exit %d", m[1], status, exit, code)
	}
}

// namesDependency: how a log line says which dependency failed.
func namesDependency(line, dep string) bool {
	l := strings.ToLower(line)
	words := map[string][]string{
		"mysql":      {"mysql", "database", "lock lost"},
		"stripe":     {"stripe"},
		"cloudstack": {"cloudstack", "orchestrator"},
		"smtp":       {"smtp"},
	}[dep]
	for _, w := range words {
		if strings.Contains(l, w) {
			return true
		}
	}
	return false
}

func jobRunsText(t *testing.T, db *sql.DB) string {
	t.Helper()
	rows, err := db.Query(`SELECT CONCAT_WS(' ', id, job, status, COALESCE(exit_code, '-'), args, COALESCE(error, '-'), COALESCE(counts, '-')) FROM job_runs`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		b.WriteString(s + "\n")
	}
	return b.String()
}

func chaosTable(results []chaosResult) string {
	order := map[string]int{}
	for i, f := range chaosFaults {
		order[f.name] = i
	}
	sort.SliceStable(results, func(i, j int) bool {
		a, b := results[i], results[j]
		if a.job+"/"+a.dep != b.job+"/"+b.dep {
			return a.job+"/"+a.dep < b.job+"/"+b.dep
		}
		return order[a.fault] < order[b.fault]
	})
	var b strings.Builder
	fmt.Fprintf(&b, "%-17s %-11s %-18s %4s %6s %9s %6s %7s\n", "job", "dependency", "fault", "exit", "landed", "converged", "reruns", "seconds")
	for _, r := range results {
		yes := map[bool]string{true: "yes", false: "NO"}
		fmt.Fprintf(&b, "%-17s %-11s %-18s %4d %6s %9s %6d %7.1f\n", r.job, r.dep, r.fault, r.code, yes[r.landed], yes[r.converged], r.reruns, r.seconds)
	}
	return b.String()
}

// caseRef names an abuse case by what it is about, not by its AUTO_INCREMENT id.
var caseRef = regexp.MustCompile(`case:(\d+)`)

// abuseChaosState is abuse's world, normalised: cases, transitions, actions and
// notices by (account, machine), what the orchestrator did, and what was received.
func abuseChaosState(t *testing.T, w *abuseWorld) string {
	t.Helper()
	names := map[string]string{}
	for _, s := range w.list(t, `SELECT CONCAT(id, ' ', account_id, '/', machine) FROM abuse_cases`) {
		id, name, _ := strings.Cut(s, " ")
		names[id] = name
	}
	norm := func(lines []string) string {
		for i, l := range lines {
			l = caseRef.ReplaceAllStringFunc(l, func(m string) string { return "case:" + names[strings.TrimPrefix(m, "case:")] })
			if id, rest, ok := strings.Cut(l, " "); ok && names[id] != "" {
				l = names[id] + " " + rest
			}
			lines[i] = l
		}
		sort.Strings(lines)
		return strings.Join(lines, "\n")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "== cases\n%s\n", norm(w.list(t, `SELECT CONCAT(id, ' ', state, ' v', version, ' ', COALESCE(closed_at, '-')) FROM abuse_cases`)))
	fmt.Fprintf(&b, "== transitions\n%s\n", norm(w.list(t, `SELECT CONCAT(case_id, ' v', case_version, ' ', from_state, '->', to_state, ' ', event, ' ', at) FROM abuse_transitions`)))
	fmt.Fprintf(&b, "== actions\n%s\n", norm(w.list(t, `SELECT CONCAT(a.case_id, ' v', t.case_version, ' ', a.seq, ' ', a.action, ' ', a.target, ' ', a.status, ' ', a.outcome)
FROM abuse_actions a JOIN abuse_transitions t ON t.id = a.transition_id`)))
	fmt.Fprintf(&b, "== outbox\n%s\n", norm(w.list(t, `SELECT CONCAT(dedupe_key, ' ', recipient, ' ', status) FROM mail_outbox`)))
	c := w.fake.Counters()
	fmt.Fprintf(&b, "== orchestrator stops %d starts %d disables %d enables %d destroys %d\n", c.Stops, c.Starts, c.Disables, c.Enables, c.Destroys)
	for _, id := range []string{"vm-42a", "vm-42b", "vm-42c", "vm-77a", "vm-77b", "vm-78a"} {
		v, _ := w.fake.VM(id)
		fmt.Fprintf(&b, "%s %s\n", id, v.State)
	}
	b.WriteString(receivedText(w.sink.Messages(), "X-Cronkit-Case"))
	return b.String()
}

// dripChaosState is drip's world: the outbox, the funnel's transitions and what the
// relay received.
func dripChaosState(t *testing.T, w *dripWorld) string {
	t.Helper()
	var b strings.Builder
	list := func(title, q string) {
		rows, err := w.db.Query(q)
		if err != nil {
			t.Fatalf("%s: %v", title, err)
		}
		defer rows.Close()
		var lines []string
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, s)
		}
		sort.Strings(lines)
		fmt.Fprintf(&b, "== %s (%d)\n%s\n", title, len(lines), strings.Join(lines, "\n"))
	}
	list("outbox", `SELECT CONCAT(dedupe_key, ' ', recipient, ' ', status) FROM mail_outbox`)
	list("transitions", `SELECT CONCAT(account_id, ' ', machine, ' v', case_version, ' ', from_state, '->', to_state, ' ', event) FROM case_transitions`)
	b.WriteString(receivedText(w.sink.Messages(), "X-Cronkit-Drip"))
	return b.String()
}

// receivedText counts what the relay received per recipient and header value: a
// message received twice shows as x2.
func receivedText(msgs []mailsink.Received, header string) string {
	per := map[string]int{}
	for _, m := range msgs {
		per[strings.Join(m.To, ",")+" "+m.Header.Get(header)]++
	}
	var lines []string
	for k, n := range per {
		lines = append(lines, fmt.Sprintf("%s x%d", k, n))
	}
	sort.Strings(lines)
	return fmt.Sprintf("== received (%d)\n%s\n", len(msgs), strings.Join(lines, "\n"))
}

// checkFailureModesReadme holds the README's "Failure modes" table to what the suite
// saw: every (dependency, fault) that ran has a row, and the row's exit codes include
// every code observed.
func checkFailureModesReadme(t *testing.T, results []chaosResult) {
	t.Helper()
	rows, err := failureModes("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		codes, ok := rows[r.dep+"/"+r.fault]
		if !ok {
			t.Errorf("README's Failure modes table has no row for %s / %s", r.dep, r.fault)
			continue
		}
		if !codes[r.code] {
			t.Errorf("README's Failure modes row %s / %s does not list exit %d (seen for %s)", r.dep, r.fault, r.code, r.job)
		}
	}
}

var exitCodeCell = regexp.MustCompile(`\b(0|1|3|75)\b`)

// failureModes reads the README's "Failure modes" table: dependency/fault -> the
// exit codes its Exit column names.
func failureModes(path string) (map[string]map[int]bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	_, section, ok := strings.Cut(string(b), "\n### Failure modes\n")
	if !ok {
		return nil, fmt.Errorf("%s: no \"### Failure modes\" section", path)
	}
	if i := strings.Index(section, "\n#"); i >= 0 {
		section = section[:i]
	}
	rows := map[string]map[int]bool{}
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		if len(cells) < 5 || strings.HasPrefix(strings.TrimSpace(cells[0]), "-") || strings.TrimSpace(cells[0]) == "Dependency" {
			continue
		}
		codes := map[int]bool{}
		for _, m := range exitCodeCell.FindAllString(cells[3], -1) {
			var c int
			fmt.Sscan(m, &c)
			codes[c] = true
		}
		for _, dep := range strings.Split(cells[0], ",") {
			rows[strings.Trim(strings.TrimSpace(dep), "`")+"/"+strings.TrimSpace(cells[1])] = codes
		}
	}
	return rows, nil
}

// The README's table has a row, with exit codes, for every dependency and fault the
// suite runs (checked without a database; TestChaos checks the codes it observes).
func TestFailureModesTableCoversTheSuite(t *testing.T) {
	rows, err := failureModes("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, job := range chaosJobs() {
		for _, dep := range append([]string{"mysql"}, job.deps...) {
			for _, f := range chaosFaults {
				if !f.appliesTo(dep) {
					continue
				}
				if codes := rows[dep+"/"+f.name]; len(codes) == 0 {
					t.Errorf("README's Failure modes table: no row (or no exit code) for %s / %s", dep, f.name)
				}
			}
		}
	}
}
