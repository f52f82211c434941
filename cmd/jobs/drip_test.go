package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	netmail "net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/golden"
	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/mail/mailsink"
	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

const dripSecret = "0123456789abcdef0123456789abcdef-cmd-test"

// dripT0 is a Monday noon: every account below signed up that morning, in UTC, so
// every welcome is due and inside the send window.
var dripT0 = time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

type dripWorld struct {
	db   *mysqltest.DB
	sink *mailsink.Sink
}

// newDripWorld is MariaDB and an SMTP sink with n signups (ids 100..) from the
// morning of dripT0 in zones (default: five, one of them invalid), plus one customer
// from before the funnel (id 1).
func newDripWorld(t *testing.T, n int, zones ...string) *dripWorld {
	t.Helper()
	w := &dripWorld{db: mysqltest.New(t)}
	var err error
	if w.sink, err = mailsink.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.sink.Close() })
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := w.db.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`INSERT INTO accounts (id, email, currency, created_at, name, time_zone) VALUES (1, 'old@example.com', 'EUR', '2025-01-01', 'Old', 'UTC')`)
	if len(zones) == 0 {
		zones = []string{"UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo", "Not/AZone"}
	}
	for i := 0; i < n; i++ {
		id := 100 + i
		exec(`INSERT INTO accounts (id, email, currency, created_at, name, time_zone) VALUES (?, ?, 'EUR', ?, ?, ?)`,
			id, fmt.Sprintf("user%d@example.com", id), dripT0.Add(-time.Duration(3+i%5)*time.Hour), fmt.Sprintf("User %d", id), zones[i%len(zones)])
		if i%3 == 0 {
			exec(`INSERT INTO credits (account_id, amount, currency, reason, granted_at, expires_at) VALUES (?, 50, 'EUR', 'trial', ?, ?)`,
				id, dripT0.Add(-3*time.Hour), dripT0.AddDate(0, 0, 14))
		}
	}
	return w
}

func (w *dripWorld) env(dsn string) map[string]string {
	return map[string]string{
		"CRONKIT_DB_DSN":             dsn,
		"CRONKIT_SMTP_HOST":          "127.0.0.1",
		"CRONKIT_SMTP_PORT":          strconv.Itoa(w.sink.Port()),
		"CRONKIT_SMTP_TLS":           "none",
		"CRONKIT_MAIL_FROM":          "Example Cloud <hello@cloud.example>",
		"CRONKIT_UNSUBSCRIBE_URL":    "https://cloud.example/unsubscribe",
		"CRONKIT_UNSUBSCRIBE_SECRET": dripSecret,
		"CRONKIT_CONSOLE_URL":        "https://console.cloud.example/",
		"CRONKIT_DOCS_URL":           "https://docs.cloud.example/start",
		"CRONKIT_BILLING_URL":        "https://console.cloud.example/billing",
		"CRONKIT_SUPPORT_EMAIL":      "support@cloud.example",
		"CRONKIT_LOG_FORMAT":         "json",
		"CRONKIT_OPERATOR":           "alice",
	}
}

func (w *dripWorld) count(t *testing.T, q string, args ...any) int {
	t.Helper()
	var n int
	if err := w.db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func without(m map[string]string, keys ...string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	for _, k := range keys {
		delete(out, k)
	}
	return out
}

func TestDripUsageErrorsExit2AndWriteNothing(t *testing.T) {
	w := newDripWorld(t, 3)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	badFunnel := write("bad.toml", "[funnel]\nname = \"onboarding\"\ngoal = \"money\"\n")
	write("tmpl/welcome.txt.tmpl", "Hi {{.Nmae}}\n{{.UnsubscribeURL}}\n")
	noLink := write("nolink/welcome.txt.tmpl", "Hi {{.Name}}\n")
	env := w.env(w.db.DSN)
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{env, []string{"drip", "--funnel", badFunnel}, `funnel.goal: want payment_method_verified or paid_invoice, got "money"`},
		{env, []string{"drip", "--funnel", filepath.Join(dir, "missing.toml")}, "--funnel"},
		{env, []string{"drip", "--templates", filepath.Join(dir, "tmpl")}, `step 1 (welcome): template: welcome does not render with sample data`},
		{env, []string{"drip", "--templates", filepath.Dir(noLink)}, "needs a visible unsubscribe link"},
		{env, []string{"drip", "--templates", filepath.Join(dir, "nope")}, "--templates"},
		{without(env, "CRONKIT_UNSUBSCRIBE_URL"), []string{"drip"}, "--unsubscribe-url"},
		{without(env, "CRONKIT_UNSUBSCRIBE_SECRET"), []string{"drip"}, "--unsubscribe-secret"},
		{env, []string{"drip", "--unsubscribe-secret", "short"}, "--unsubscribe-secret: unsubscribe secret #1: 5 bytes, want at least 32"},
		{env, []string{"drip", "--unsubscribe-url", "http://cloud.example/u"}, "--unsubscribe-url"},
		{without(env, "CRONKIT_MAIL_FROM"), []string{"drip"}, "--mail-from"},
		{without(env, "CRONKIT_CONSOLE_URL", "CRONKIT_SUPPORT_EMAIL"), []string{"drip", "--now", dripT0.Format(time.RFC3339)}, "set --console-url, --support-email"},
		{env, []string{"drip", "--preview", dir}, "--preview writes what a dry run would send: add --dry-run"},
		{env, []string{"drip", "--now", "2999-01-01"}, "only a dry run"},
		{env, []string{"drip", "--since", "yesterday"}, `--since "yesterday"`},
		{env, []string{"drip", "--reason", "x"}, "--reason and --note are for exit"},
		{env, []string{"drip", "show", "x"}, `account "x"`},
		{env, []string{"drip", "exit", "100"}, "--reason is required"},
		{env, []string{"drip", "exit", "999", "--reason", "x"}, "account 999: no such account"},
		{without(env, "CRONKIT_OPERATOR"), []string{"drip", "exit", "100", "--reason", "x"}, "no operator name"},
		{env, []string{"drip", "suppress", "a@example.com"}, "--reason is required: bounce, complaint or unsubscribe"},
		{env, []string{"drip", "suppress", "a@example.com", "--reason", "spam"}, `suppression kind "spam"`},
		{env, []string{"drip", "suppress", "not-an-address", "--reason", "bounce"}, "not an email address"},
		{env, []string{"drip", "unsubscribe", "x y"}, "want an email address or an account id"},
		{env, []string{"drip", "unsubscribe-server"}, "needs --listen"},
		{env, []string{"drip", "unsubscribe-server", "--listen", "127.0.0.1:0", "--tls-cert", "x.pem"}, "--tls-cert and --tls-key go together"},
		{env, []string{"drip", "graph", "--format", "png"}, `"png"`},
	} {
		code, out, errOut := jobs(t, tc.env, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want 2 and %q (stdout %q)", tc.args, code, errOut, tc.want, out)
		}
	}
	for _, tb := range []string{"job_runs", "cases", "mail_outbox", "mail_suppressions", "drip_funnels", "drip_due"} {
		if n := countRows(t, w.db.DB, tb); n != 0 {
			t.Errorf("configuration errors wrote %d rows to %s", n, tb)
		}
	}
	if len(w.sink.Messages()) != 0 {
		t.Error("configuration errors sent mail")
	}
}

// The dry run is the plan: pinned by a golden file, made with a SELECT-only user and
// no unsubscribe secret or sender (placeholders, said so), previews written as .eml,
// nothing changed; then the real run does what it said.
func TestDripDryRunGoldenPreviewAndNothingWritten(t *testing.T) {
	w := newDripWorld(t, 5)
	env := w.env(w.db.DSN)
	// The funnel was started at dawn, before the first signup.
	if code, _, errOut := jobs(t, env, "drip", "--now", dripT0.Add(-8*time.Hour).Format(time.RFC3339), "--since", "2026-03-02"); code != 0 {
		t.Fatalf("first run: %d\n%s", code, errOut)
	}
	tables := map[string]int{}
	for _, tb := range []string{"job_runs", "cases", "case_transitions", "mail_outbox", "mail_suppressions", "drip_funnels", "drip_due"} {
		tables[tb] = countRows(t, w.db.DB, tb)
	}
	mails := len(w.sink.Messages())

	ro := without(w.env(w.db.SelectOnlyUser(t)), "CRONKIT_UNSUBSCRIBE_SECRET", "CRONKIT_MAIL_FROM", "CRONKIT_SMTP_HOST")
	preview := filepath.Join(t.TempDir(), "preview")
	code, out, errOut := jobs(t, ro, "drip", "--dry-run", "--now", dripT0.Format(time.RFC3339), "--preview", preview)
	if code != 0 {
		t.Fatalf("dry run: exit %d\n%s\n%s", code, out, errOut)
	}
	golden.Check(t, "drip_dry_run.golden", []byte(runIDPattern.ReplaceAllString(out, "<run-id>")))
	for tb, n := range tables {
		if got := countRows(t, w.db.DB, tb); got != n {
			t.Errorf("dry run changed %s: %d -> %d rows", tb, n, got)
		}
	}
	if len(w.sink.Messages()) != mails {
		t.Fatal("dry run sent mail")
	}
	files, _ := filepath.Glob(filepath.Join(preview, "*.eml"))
	sort.Strings(files)
	if len(files) != 5 || filepath.Base(files[0]) != "100-welcome.eml" {
		t.Fatalf("previews %v", files)
	}
	raw, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	m, err := netmail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click" ||
		!strings.HasPrefix(m.Header.Get("List-Unsubscribe"), "<https://cloud.example/unsubscribe?token=100.onboarding.") ||
		m.Header.Get("To") != "<user100@example.com>" || !strings.Contains(m.Header.Get("Subject"), "User 100") {
		t.Fatalf("preview headers %v", m.Header)
	}

	code, real, errOut := jobs(t, env, "drip", "--now", dripT0.Format(time.RFC3339))
	if code != 0 {
		t.Fatalf("real run: %d\n%s\n%s", code, real, errOut)
	}
	plan, did := dripQueueLines(out), dripQueueLines(real)
	if strings.Join(plan, "\n") != strings.Join(did, "\n") || len(did) != 5 {
		t.Fatalf("the real run did not do what the dry run planned:\nplan:\n%s\ndid:\n%s", strings.Join(plan, "\n"), strings.Join(did, "\n"))
	}
	if len(w.sink.Messages()) != mails+3 { // New York and Tokyo wait for their morning
		t.Fatalf("%d mails after the real run, want %d", len(w.sink.Messages()), mails+3)
	}
}

func dripQueueLines(report string) []string {
	var out []string
	for _, l := range strings.Split(report, "\n") {
		if strings.HasPrefix(l, "queue ") {
			out = append(out, strings.Join(strings.Fields(l), " "))
		}
	}
	return out
}

// SIGKILL while steps are being queued, then while they are being delivered, then a
// clean rerun: every signup's welcome is queued once, none is received twice, and a
// message a kill left claimed is reported (exit 3), never re-sent blind.
func TestDripSIGKILLWhileQueueingAndDelivering(t *testing.T) {
	const n = 40
	w := newDripWorld(t, n, "UTC", "Europe/Paris", "Africa/Lagos") // all inside the window at noon UTC
	bin := buildJobs(t)
	envList := func(m map[string]string) []string {
		var out []string
		for k, v := range m {
			out = append(out, k+"="+v)
		}
		return out
	}
	// killAfter runs jobs and SIGKILLs it once its log holds `after` lines with msg
	// (0: never); it returns the exit code and the output.
	killAfter := func(env map[string]string, msg string, after int, args ...string) (int, string) {
		cmd := exec.Command(bin, append(args, "--lock-wait", "20s")...)
		cmd.Env = envList(env)
		var out syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			if after == 0 {
				return
			}
			for {
				if strings.Count(out.String(), `"message":"`+msg+`"`) >= after {
					time.Sleep(40 * time.Millisecond) // into the next item
					_ = cmd.Process.Signal(syscall.SIGKILL)
					return
				}
				if cmd.ProcessState != nil {
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
		_ = cmd.Wait()
		<-done
		return cmd.ProcessState.ExitCode(), out.String()
	}
	now := dripT0.Format(time.RFC3339)
	noSMTP := without(w.env(w.db.DSN), "CRONKIT_SMTP_HOST")

	// Queueing: killed after 5, then after 10 more, then to the end.
	for _, after := range []int{5, 10} {
		if code, out := killAfter(noSMTP, "step queued", after, "drip", "--now", now, "--since", "2026-03-02"); code != -1 {
			t.Fatalf("not killed while queueing (exit %d):\n%s", code, out)
		}
	}
	if code, out := killAfter(noSMTP, "", 0, "drip", "--now", now, "--since", "2026-03-02"); code != 0 {
		t.Fatalf("queueing rerun: %d\n%s", code, out)
	}
	if got := w.count(t, `SELECT COUNT(*) FROM mail_outbox WHERE dedupe_key LIKE 'drip:onboarding:%:welcome'`); got != n {
		t.Fatalf("%d welcomes queued, want %d", got, n)
	}
	if got := w.count(t, `SELECT COUNT(*) FROM case_transitions WHERE machine = 'drip:onboarding'`); got != n {
		t.Fatalf("%d transitions, want %d", got, n)
	}

	// Delivering, through a relay slowed down so a kill lands inside an SMTP session:
	// killed after 3, then after 7 more "mail sent".
	env := w.env(w.db.DSN)
	env["CRONKIT_SMTP_PORT"] = strconv.Itoa(slowProxy(t, w.sink.Addr(), 15*time.Millisecond))
	for _, after := range []int{3, 7} {
		if code, out := killAfter(env, "mail sent", after, "drip", "--now", now); code != -1 {
			t.Fatalf("not killed while delivering (exit %d):\n%s", code, out)
		}
	}
	// The rerun 20 minutes later: past lib/mail's 15 minutes, a message a kill left
	// claimed is stuck and reported.
	later := dripT0.Add(20 * time.Minute).Format(time.RFC3339)
	code, out := killAfter(env, "", 0, "drip", "--now", later)
	sending := w.count(t, `SELECT COUNT(*) FROM mail_outbox WHERE status = 'sending'`)
	sent := w.count(t, `SELECT COUNT(*) FROM mail_outbox WHERE status = 'sent'`)
	t.Logf("after the kills: %d sent, %d left 'sending'", sent, sending)
	if sending > 0 {
		if code != 3 || strings.Count(out, "may or may not have been delivered") < sending {
			t.Fatalf("%d stuck messages not reported (exit %d):\n%s", sending, code, out)
		}
	} else if code != 0 {
		t.Fatalf("rerun: exit %d\n%s", code, out)
	}
	if sent+sending != n {
		t.Fatalf("%d sent + %d sending, want %d: a step was lost", sent, sending, n)
	}
	got := map[string]int{}
	for _, m := range w.sink.Messages() {
		got[m.To[0]+" "+m.Header.Get("X-Cronkit-Drip")]++
	}
	for k, c := range got {
		if c > 1 {
			t.Errorf("received %d times: %s", c, k)
		}
	}
	// A message is missing at the sink only if a kill left it claimed.
	if len(got) < sent || len(got) > sent+sending {
		t.Errorf("%d received, %d sent, %d sending", len(got), sent, sending)
	}
}

// slowProxy forwards TCP connections to target, holding each chunk the client sends
// for delay: an SMTP session then lasts long enough for a kill to land inside it.
func slowProxy(t *testing.T, target string, delay time.Duration) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer s.Close()
				go func() { _, _ = io.Copy(c, s) }()
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						time.Sleep(delay)
						if _, werr := s.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// The unsubscribe server: a one-click POST records the unsubscribe, GET /healthz
// answers, and SIGTERM stops it cleanly (exit 0).
func TestDripUnsubscribeServerOneClickAndSIGTERM(t *testing.T) {
	w := newDripWorld(t, 1, "UTC")
	bin := buildJobs(t)
	cmd := exec.Command(bin, "drip", "unsubscribe-server", "--listen", "127.0.0.1:0", "--org", "Example Cloud")
	for k, v := range w.env(w.db.DSN) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	listen := regexp.MustCompile(`"listen":"([^"]+)"`)
	waitFor(t, func() bool { return listen.MatchString(out.String()) })
	base := "http://" + listen.FindStringSubmatch(out.String())[1]

	keys, err := mail.NewUnsubscribeKeys(dripSecret)
	if err != nil {
		t.Fatal(err)
	}
	token, _ := keys.Token(100, "onboarding")
	res, err := http.Post(base+"/unsubscribe?token="+token, "application/x-www-form-urlencoded", strings.NewReader("List-Unsubscribe=One-Click"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), "You are unsubscribed") || !strings.Contains(string(body), "Example Cloud") {
		t.Fatalf("POST: %d %s", res.StatusCode, body)
	}
	if n := w.count(t, `SELECT COUNT(*) FROM mail_suppressions WHERE email = 'user100@example.com' AND kind = 'unsubscribe'`); n != 1 {
		t.Fatalf("suppressions %d\n%s", n, out.String())
	}
	if res, err := http.Get(base + "/healthz"); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", res, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(out.String(), `"message":"stopped"`) {
		t.Fatalf("after SIGTERM: exit %d\n%s", code, out.String())
	}
	if strings.Contains(out.String(), token) || strings.Contains(out.String(), dripSecret) {
		t.Fatal("the log holds the token or the secret")
	}
}

// The operator commands through the binary: suppress, list and lift; unsubscribe by
// address; exit; show.
func TestDripOperatorCommands(t *testing.T) {
	w := newDripWorld(t, 2, "UTC")
	env := w.env(w.db.DSN)
	if code, _, errOut := jobs(t, env, "drip", "--now", dripT0.Format(time.RFC3339), "--since", "2026-03-02"); code != 0 {
		t.Fatalf("run: %d %s", code, errOut)
	}
	code, out, errOut := jobs(t, env, "drip", "suppress", "User100@example.com", "--reason", "complaint", "--note", "FBL report from Yahoo")
	if code != 0 || !strings.Contains(out, "suppressed (complaint): no more mail of any kind") {
		t.Fatalf("suppress: %d %q %s", code, out, errOut)
	}
	if code, out, _ = jobs(t, env, "drip", "suppressions", "--reason", "complaint"); code != 0 ||
		!strings.Contains(out, "user100@example.com\tcomplaint\t") || !strings.Contains(out, "FBL report from Yahoo (operator:alice)") {
		t.Fatalf("suppressions: %d %q", code, out)
	}
	// The next run reads the complaint as an exit.
	if code, out, _ = jobs(t, env, "drip", "--now", dripT0.Add(time.Minute).Format(time.RFC3339), "--account", "100"); code != 3 && code != 0 {
		t.Fatalf("run after the complaint: %d %s", code, out)
	}
	code, out, _ = jobs(t, env, "drip", "show", "100")
	for _, want := range []string{"suppressed: complaint", "welcome -> exited (exit)", "the recipient complained"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	if code, out, _ = jobs(t, env, "drip", "lift", "user100@example.com", "--reason", "complaint"); code != 0 || !strings.Contains(out, "1 suppression(s) lifted") {
		t.Fatalf("lift: %d %q", code, out)
	}
	if code, out, _ = jobs(t, env, "drip", "unsubscribe", "user101@example.com"); code != 0 ||
		!strings.Contains(out, "account 101 (user101@example.com): case") || !strings.Contains(out, "welcome -> exited (exit)") {
		t.Fatalf("unsubscribe: %d %q", code, out)
	}
	if code, out, _ = jobs(t, env, "drip", "exit", "101", "--reason", "asked by phone"); code != 0 || !strings.Contains(out, "exited already") {
		t.Fatalf("exit of an exited account: %d %q", code, out)
	}
	if code, out, _ = jobs(t, env, "drip", "show", "101", "--output", "json"); code != 0 || !strings.Contains(out, `"actor": "operator:alice"`) {
		t.Fatalf("show json: %d %s", code, out)
	}
}

// The unsubscribe secret is a secret flag: read from CRONKIT_UNSUBSCRIBE_SECRET_FILE,
// redacted from the recorded command line, never logged.
func TestDripUnsubscribeSecretIsASecret(t *testing.T) {
	w := newDripWorld(t, 1, "UTC")
	secret := "SECRETMARKER-" + strings.Repeat("x", 32)
	file := filepath.Join(t.TempDir(), "unsubscribe_secret")
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	env := without(w.env(w.db.DSN), "CRONKIT_UNSUBSCRIBE_SECRET")
	env["CRONKIT_UNSUBSCRIBE_SECRET_FILE"] = file
	env["CRONKIT_LOG_LEVEL"] = "debug"
	code, out, errOut := jobs(t, env, "drip", "--now", dripT0.Format(time.RFC3339), "--since", "2026-03-02")
	if code != 0 || !strings.Contains(out, "queue") {
		t.Fatalf("run with the secret from a file: %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = jobs(t, without(env, "CRONKIT_UNSUBSCRIBE_SECRET_FILE"), "drip", "--now", dripT0.Format(time.RFC3339),
		"--unsubscribe-secret", secret)
	if code != 0 {
		t.Fatalf("run with the secret as a flag: %d\n%s\n%s", code, out, errOut)
	}
	var args string
	if err := w.db.QueryRow(`SELECT args FROM job_runs ORDER BY started_at DESC, id DESC LIMIT 1`).Scan(&args); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out+errOut+args, "SECRETMARKER") || !strings.Contains(args, "***") {
		t.Fatalf("the secret leaked: args %s\n%s\n%s", args, out, errOut)
	}
}
