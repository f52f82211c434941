package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dripState is what a drip run leaves that must not depend on a crash: the outbox
// (one row per account and step; a message a kill left claimed, 'sending', counts as
// sent: it is reported to an operator, never re-sent blind), the funnel's cases and
// their transitions.
func dripState(t *testing.T, w *dripWorld) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		`SELECT CONCAT_WS(' ', dedupe_key, recipient, IF(status = 'sending', 'sent', status)) FROM mail_outbox ORDER BY dedupe_key`,
		`SELECT CONCAT_WS(' ', account_id, machine, state, version) FROM cases ORDER BY account_id, machine`,
		`SELECT CONCAT_WS(' ', account_id, machine, case_version, from_state, to_state, event) FROM case_transitions ORDER BY account_id, machine, case_version`,
	} {
		rows, err := w.db.Query(q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			b.WriteString(s + "\n")
		}
		rows.Close()
	}
	return b.String()
}

// TestDripSIGKILLAtSeededPointsMatchesOneCleanRun kills `cronkit drip` (queueing and
// delivering through a slowed relay) at 20 seeded points stratified over a clean
// run, re-runs it twice, and requires the outbox, cases and transitions of one clean
// run, no message received twice, and every message a kill left claimed reported
// (exit 3) rather than sent again.
func TestDripSIGKILLAtSeededPointsMatchesOneCleanRun(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level crash test")
	}
	const n = 30
	seeds := 20
	if s := os.Getenv("CRONKIT_DRIP_KILL_SEEDS"); s != "" {
		var err error
		if seeds, err = strconv.Atoi(s); err != nil {
			t.Fatalf("CRONKIT_DRIP_KILL_SEEDS: %v", err)
		}
	}
	bin := buildJobs(t)
	now := dripT0.Format(time.RFC3339)
	// Past lib/mail's 15 minutes, so a message a kill left claimed is reported.
	later := dripT0.Add(20 * time.Minute).Format(time.RFC3339)
	envOf := func(w *dripWorld) []string {
		env := w.env(w.db.DSN)
		env["CRONKIT_SMTP_PORT"] = strconv.Itoa(slowProxy(t, w.sink.Addr(), 10*time.Millisecond))
		env["CRONKIT_LOG_FORMAT"] = "json"
		var out []string
		for k, v := range env {
			out = append(out, k+"="+v)
		}
		return out
	}
	drip := func(env []string, at string) (int, string) {
		cmd := exec.Command(bin, "drip", "--now", at, "--since", "2026-03-02", "--lock-wait", "20s")
		cmd.Env = env
		out, _ := cmd.CombinedOutput()
		return cmd.ProcessState.ExitCode(), string(out)
	}

	clean := newDripWorld(t, n, "UTC", "Europe/Paris", "Africa/Lagos")
	cleanEnv := envOf(clean)
	start := time.Now()
	if code, out := drip(cleanEnv, now); code != 0 {
		t.Fatalf("clean run: exit %d\n%s", code, out)
	}
	cleanDur := time.Since(start)
	if code, out := drip(cleanEnv, later); code != 0 {
		t.Fatalf("clean re-run: exit %d\n%s", code, out)
	}
	want := dripState(t, clean)
	if strings.Count(want, " sent\n") != n {
		t.Fatalf("the clean run did not send %d welcomes:\n%s", n, want)
	}
	t.Logf("clean run: %s", cleanDur.Round(time.Millisecond))

	stuck := 0
	for i := range seeds {
		seed := uint64(i + 1)
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			w := newDripWorld(t, n, "UTC", "Europe/Paris", "Africa/Lagos")
			env := envOf(w)
			rng := rand.New(rand.NewPCG(seed, 0xd21b))
			delay := time.Duration((float64(i) + rng.Float64()) / float64(seeds) * float64(cleanDur))
			cmd := exec.Command(bin, "drip", "--now", now, "--since", "2026-03-02")
			cmd.Env = env
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(delay)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			queued := w.count(t, `SELECT COUNT(*) FROM mail_outbox`)
			sentBefore := len(w.sink.Messages())

			code, out := drip(env, now)
			if code != 0 && code != 3 {
				t.Fatalf("re-run after a kill at %s: exit %d\n%s", delay, code, out)
			}
			code, out = drip(env, later)
			sending := w.count(t, `SELECT COUNT(*) FROM mail_outbox WHERE status = 'sending'`)
			switch {
			case sending > 0 && (code != 3 || strings.Count(out, "may or may not have been delivered") < sending):
				t.Fatalf("%d messages left claimed by the kill are not reported (exit %d):\n%s", sending, code, out)
			case sending == 0 && code != 0:
				t.Fatalf("second re-run: exit %d\n%s", code, out)
			}
			stuck += sending
			if got := dripState(t, w); got != want {
				t.Fatalf("kill at %s (%d queued, %d received): state after re-runs differs from one clean run:\n%s",
					delay, queued, sentBefore, diffLines(want, got))
			}
			received := map[string]int{}
			for _, m := range w.sink.Messages() {
				received[m.To[0]+" "+m.Header.Get("X-Cronkit-Drip")]++
			}
			for k, c := range received {
				if c > 1 {
					t.Errorf("received %d times: %s", c, k)
				}
			}
			if len(received) < n-sending || len(received) > n {
				t.Errorf("%d distinct messages received, want %d less at most the %d left claimed", len(received), n, sending)
			}
			t.Logf("kill at %s: %d queued and %d received before it; %d left claimed", delay.Round(time.Millisecond), queued, sentBefore, sending)
		})
	}
	t.Logf("%d seeds, %d messages left claimed in all (reported, not re-sent)", seeds, stuck)
}
