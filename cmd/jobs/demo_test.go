package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cronkit/cronkit/fixtures"
	"github.com/cronkit/cronkit/jobs/reconcile"
	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

// TestDemoKeepReconcileChapterAndSandbox runs `cronkit demo --keep` as make sandbox
// does: the whole story, whose reconcile chapter checks its own claims (the demo
// fails unless each planted class is found exactly once, --fix pays the lost
// invoice and abuse closes that customer's dunning case); then, against the world
// it keeps, reads the findings through the printed environment, makes a payment
// through the fake Stripe's API and watches reconcile find it, and stops it with
// SIGINT.
func TestDemoKeepReconcileChapterAndSandbox(t *testing.T) {
	if testing.Short() {
		t.Skip("the whole demo: minutes")
	}
	db := mysqltest.New(t)
	ro := db.SelectOnlyUser(t)
	bin := buildJobs(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "demo", "--keep", "--db-dsn", db.DSN, "--ro-dsn", ro)
	cmd.Dir = root // the demo checks crontab/
	cmd.Env = append(os.Environ(), "CRONKIT_LOG_FORMAT=json")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	var transcript syncBuffer
	env := map[string]string{}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		closed := false
		for sc.Scan() {
			line := sc.Text()
			_, _ = transcript.Write([]byte(line + "\n"))
			if k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "="); ok && strings.HasPrefix(line, "export CRONKIT_") {
				env[k] = strings.Trim(v, "'")
			}
			if line == "sandbox ready" && !closed {
				closed = true
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, out)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	select {
	case <-ready:
	case err := <-exited:
		t.Fatalf("demo exited before the sandbox was ready (%v) after %s\n%s\nstderr:\n%.4000s", err, time.Since(start), transcript.String(), stderr.String())
	case <-time.After(20 * time.Minute):
		t.Fatalf("no sandbox after 20 minutes\n%s", transcript.String())
	}
	t.Logf("demo to sandbox ready: %s", time.Since(start).Round(time.Second))
	story := transcript.String()
	for _, want := range []string{"==> demo complete", "==> reconcile: a leak of every kind", "$ cronkit reconcile payments --from"} {
		if !strings.Contains(story, want) {
			t.Errorf("the demo's output lacks %q", want)
		}
	}
	for _, k := range []string{"CRONKIT_DB_DSN", "CRONKIT_STRIPE_URL", "CRONKIT_STRIPE_KEY", "CRONKIT_CLOUDSTACK_URL",
		"CRONKIT_CLOUDSTACK_API_KEY", "CRONKIT_CLOUDSTACK_SECRET_KEY", "CRONKIT_SMTP_PORT"} {
		if env[k] == "" {
			t.Fatalf("no %s among the printed lines:\n%s", k, story)
		}
	}
	env["CRONKIT_LOG_FORMAT"] = "json"

	// The chapter's findings, read through the printed environment.
	code, listing, errOut := jobs(t, env, "reconcile", "findings", "--output", "json")
	var list []map[string]any
	if err := json.Unmarshal([]byte(listing), &list); code != 0 || err != nil {
		t.Fatalf("findings: %d %v\n%s\n%s", code, err, listing, errOut)
	}
	byClass := map[string][]map[string]any{}
	for _, f := range list {
		byClass[f["class"].(string)] = append(byClass[f["class"].(string)], f)
	}
	for _, c := range reconcileDemoClasses() {
		if len(byClass[c]) != 1 {
			t.Errorf("%s: %d findings, want 1", c, len(byClass[c]))
		}
	}
	if fs := byClass[reconcile.ClassPaidNotRecorded]; len(fs) == 1 {
		f := fs[0]
		if f["state"] != reconcile.StateFixed || f["account_id"] != float64(fixtures.DeclinerID) {
			t.Errorf("the lost payment's finding: %v", f)
		}
		var status string
		if err := db.QueryRow(`SELECT status FROM invoices WHERE id = ?`, f["invoice_id"]).Scan(&status); err != nil || status != "paid" {
			t.Errorf("invoice %v: %q %v, want paid", f["invoice_id"], status, err)
		}
	}
	var state string
	var closed bool
	if err := db.QueryRow(`SELECT state, closed_at IS NOT NULL FROM cases WHERE account_id = ? AND machine = 'dunning' ORDER BY id DESC LIMIT 1`,
		fixtures.DeclinerID).Scan(&state, &closed); err != nil || !closed {
		t.Errorf("the decliner's dunning case: %q closed %v (%v)", state, closed, err)
	}

	// A person pays an invoice that does not exist through the live fake Stripe (as
	// with curl), and reconcile finds it.
	form := url.Values{"amount": {"1500"}, "currency": {"eur"}, "customer": {"cus_demo1100"}, "payment_method": {"pm_card_visa"},
		"payment_method_types[]": {"card"}, "confirm": {"true"}, "metadata[invoice_id]": {"424242"}, "metadata[attempt]": {"1"}, "metadata[account_id]": {"1100"}}
	req, _ := http.NewRequest(http.MethodPost, env["CRONKIT_STRIPE_URL"]+"/v1/payment_intents", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+env["CRONKIT_STRIPE_KEY"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"succeeded"`) {
		t.Fatalf("create a PaymentIntent: %s\n%s", resp.Status, body)
	}
	today := time.Now().UTC().Truncate(24 * time.Hour)
	code, rep, errOut := jobs(t, env, "reconcile", "payments", "--grace", "0", "--from", today.Format(time.RFC3339),
		"--to", time.Now().UTC().Add(time.Minute).Format(time.RFC3339), "--output", "json")
	var after struct {
		Problems []map[string]any `json:"problems"`
	}
	if err := json.Unmarshal([]byte(rep), &after); err != nil || code != 3 {
		t.Fatalf("reconcile after the curl: %d %v\n%.3000s\n%s", code, err, rep, errOut)
	}
	found := false
	for _, p := range after.Problems {
		found = found || (p["class"] == reconcile.ClassUnknownPayment && p["invoice_id"] == float64(424242) && p["state"] == reconcile.StateOpen)
	}
	if !found {
		t.Errorf("reconcile did not find the PaymentIntent made with curl:\n%.3000s", rep)
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("after SIGINT: %v (want exit 0)\n%.2000s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the sandbox did not stop within 30 s of SIGINT")
	}
	if !strings.Contains(transcript.String(), "sandbox: stopping the fakes") {
		t.Errorf("no clean stop in the output:\n%s", lastLines(transcript.String(), 10))
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
