package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Ten simultaneous invocations of each job: exactly one runs, nine exit 75 at once.
// With --lock-wait they run one after another, and the later ones find nothing to
// do: the end state is one run's. CRONKIT_CHAOS=full (make chaos) takes every job.
func TestLoadTenAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level load test")
	}
	bin := buildJobs(t)
	full := os.Getenv("CRONKIT_CHAOS") == "full"
	for _, job := range chaosJobs() {
		// CI takes two jobs (one with external calls to make); make chaos all.
		if !full && job.name != "billing charge" && job.name != "abuse" {
			continue
		}
		t.Run(job.name, func(t *testing.T) {
			// One undisturbed run: the state the ten must end in.
			ref := job.setup(t)
			for _, p := range job.prepare {
				chaosRun(t, bin, ref.env, p)
			}
			if code, out := chaosRun(t, bin, ref.env, job.args); code != 0 && code != 3 {
				t.Fatalf("undisturbed run: exit %d\n%s", code, out)
			}
			want := ref.state(t)

			for _, wait := range []bool{false, true} {
				w := job.setup(t)
				for _, p := range job.prepare {
					chaosRun(t, bin, w.env, p)
				}
				var before int
				if err := w.db.QueryRow(`SELECT COUNT(*) FROM job_runs`).Scan(&before); err != nil {
					t.Fatal(err)
				}
				args := job.args
				if wait {
					args = append(append([]string{}, args...), "--lock-wait", "120s")
				} else {
					// A run shorter than the ten processes take to start would let a
					// late one find the lock free and run (finding nothing to do): a
					// 100 ms MySQL round trip for the first 3 s makes the first run
					// outlast the others' starts.
					l := chaosLinks(t, w)["mysql"]
					l.toxic(t, "latency", "downstream", map[string]int64{"latency": 100})
					time.AfterFunc(3*time.Second, func() { l.p.Toxics.ResetToxics(context.Background()) })
				}
				codes, took, spans := tenAtOnce(t, bin, w.env, args)
				ran, locked := 0, 0
				for i, c := range codes {
					switch {
					case c == 0 || c == 3:
						ran++
					case c == 75:
						locked++
						if took[i] > 5*time.Second {
							t.Errorf("a locked-out run took %s to exit 75", took[i])
						}
					default:
						t.Errorf("exit %d", c)
					}
				}
				if !wait && (ran != 1 || locked != 9) {
					t.Errorf("without --lock-wait: %d ran, %d exited 75; want 1 and 9 (%v)", ran, locked, codes)
				}
				if wait && ran != 10 {
					t.Errorf("with --lock-wait: %d ran; want 10 (%v)", ran, codes)
				}
				var after int
				if err := w.db.QueryRow(`SELECT COUNT(*) FROM job_runs`).Scan(&after); err != nil {
					t.Fatal(err)
				}
				if n := after - before; (!wait && n != 1) || (wait && n != 10) {
					t.Errorf("%d job_runs rows", n)
				}
				// The work, from "run started" (the lock taken) to "run finished"
				// (before it is released), never overlaps.
				sort.Slice(spans, func(i, j int) bool { return spans[i][0].Before(spans[j][0]) })
				for i := 1; i < len(spans); i++ {
					if spans[i][0].Before(spans[i-1][1]) {
						t.Errorf("runs overlap: %v and %v", spans[i-1], spans[i])
					}
				}
				if got := w.state(t); got != want {
					t.Errorf("lock-wait %v: end state differs from one run:\n%s", wait, diffLines(want, got))
				}
			}
		})
	}
}

// tenAtOnce starts ten runs together and returns their exit codes, durations, and
// the spans (seen from here) between their "run started" and "run finished" lines.
func tenAtOnce(t *testing.T, bin string, env map[string]string, args []string) ([]int, []time.Duration, [][2]time.Time) {
	t.Helper()
	codes := make([]int, 10)
	took := make([]time.Duration, 10)
	var mu sync.Mutex
	var spans [][2]time.Time
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(bin, args...)
			cmd.Env = envList(env)
			lw := &lineTimes{}
			cmd.Stderr = lw
			<-start
			t0 := time.Now()
			_ = cmd.Run()
			codes[i], took[i] = cmd.ProcessState.ExitCode(), time.Since(t0)
			if !lw.started.IsZero() {
				mu.Lock()
				spans = append(spans, [2]time.Time{lw.started, lw.finished})
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	return codes, took, spans
}

// lineTimes notes when a run's "run started" and "run finished" lines arrive.
type lineTimes struct {
	started, finished time.Time
}

func (l *lineTimes) Write(p []byte) (int, error) {
	now := time.Now()
	if bytes.Contains(p, []byte(`"message":"run started"`)) {
		l.started = now
	}
	if bytes.Contains(p, []byte(`"message":"run finished"`)) {
		l.finished = now
	}
	return len(p), nil
}

// jobRunIntervals returns the [start, end] of the job_runs rows after the first
// skip, in start order.
func jobRunIntervals(t *testing.T, db *sql.DB, skip int) [][2]time.Time {
	t.Helper()
	rows, err := db.Query(`SELECT started_at, COALESCE(finished_at, started_at) FROM job_runs ORDER BY started_at, id LIMIT 1000 OFFSET ?`, skip)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out [][2]time.Time
	for rows.Next() {
		var a, b time.Time
		if err := rows.Scan(&a, &b); err != nil {
			t.Fatal(err)
		}
		out = append(out, [2]time.Time{a, b})
	}
	return out
}

// `cronkit schedule` with a job that overruns its interval: runs never overlap, and
// each skipped start is logged and counted.
func TestScheduleOverrunSkipsAndCounts(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level scheduler test")
	}
	w := newDripWorld(t, 1, "UTC") // any migrated database will do
	bin := buildJobs(t)
	tab := filepath.Join(t.TempDir(), "crontab")
	if err := os.WriteFile(tab, []byte("@every 1s cronkit noop --hold 2500ms --timeout 10s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "schedule", "--crontab", tab, "--log-format", "json")
	cmd.Env = []string{"CRONKIT_DB_DSN=" + w.db.DSN, "CRONKIT_LOG_FORMAT=json"}
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		return strings.Count(out.String(), `"message":"job finished"`) >= 2 &&
			strings.Count(out.String(), "skipped: previous run still running") >= 2
	})
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	log := out.String()
	runs := jobRunIntervals(t, w.db.DB, 0)
	if len(runs) < 2 {
		t.Fatalf("%d runs recorded\n%s", len(runs), log)
	}
	for i := 1; i < len(runs); i++ {
		if runs[i][0].Before(runs[i-1][1]) {
			t.Fatalf("runs overlap: %v and %v", runs[i-1], runs[i])
		}
	}
	if strings.Contains(log, `"exit_code":75`) {
		t.Errorf("a child found the lock held: the scheduler started an overlapping run\n%s", log)
	}
	skips := strings.Count(log, "skipped: previous run still running")
	if !strings.Contains(log, fmt.Sprintf(`"skipped":%d`, skips)) {
		t.Errorf("the %d skipped starts are not counted (want a \"skipped\":%d field)\n%s", skips, skips, log)
	}
}
