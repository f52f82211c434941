package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
	"github.com/cronkit/cronkit/lib/payment"
	"github.com/cronkit/cronkit/lib/payment/fakestripe"
)

const testStripeKey = "sk_test_cronkit_billing"

// billingNow is when the tests' billing runs happen: March 3rd, 00:20 UTC. February
// has ended and is fully rated; March has two days of charges.
const billingNow = "2025-03-03T00:20:00Z"

// billingFake is the fake Stripe on loopback; latency delays every POST's answer
// after the fake has acted on it, so that a kill can land between the provider's
// answer and our commit.
type billingFake struct {
	*fakestripe.Server
	URL string
}

func startBillingFake(t *testing.T, latency time.Duration) *billingFake {
	t.Helper()
	fake := fakestripe.New(testStripeKey)
	for _, c := range []fakestripe.Customer{
		{ID: "cus_visa", Email: "one@example.com", DefaultPaymentMethod: "pm_card_visa"},
		{ID: "cus_eur", Email: "two@example.com", DefaultPaymentMethod: "pm_card_visa"},
		{ID: "cus_soft", Email: "three@example.com", DefaultPaymentMethod: "pm_card_chargeDeclinedInsufficientFunds"},
		{ID: "cus_jpy", Email: "four@example.com", DefaultPaymentMethod: "pm_card_mastercard"},
	} {
		if _, err := fake.AddCustomer(c); err != nil {
			t.Fatal(err)
		}
	}
	h := fake.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || latency == 0 {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		time.Sleep(latency)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(func() {
		fake.Close()
		srv.Close()
	})
	return &billingFake{Server: fake, URL: srv.URL}
}

// seedBilling writes three days of usage spanning February's end for five accounts
// in three currencies (and forty on trial credit), a price change at the month
// boundary, and credits.
func seedBilling(t testing.TB, db *sql.DB) {
	t.Helper()
	must := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	accounts := []struct {
		id       int64
		currency string
		customer any
	}{{1, "USD", "cus_visa"}, {2, "EUR", "cus_eur"}, {3, "USD", "cus_soft"}, {4, "JPY", "cus_jpy"}, {5, "USD", nil}}
	for _, a := range accounts {
		must(`INSERT INTO accounts (id, email, currency, created_at, stripe_customer_id) VALUES (?, ?, ?, '2025-01-10', ?)`,
			a.id, fmt.Sprintf("a%d@example.com", a.id), a.currency, a.customer)
	}
	must(`INSERT INTO prices (product, currency, unit_price, valid_from, valid_to) VALUES
  ('instance.small', 'USD', 0.50, '2025-01-01', '2025-03-01'), ('instance.small', 'USD', 0.55, '2025-03-01', NULL),
  ('instance.small', 'EUR', 0.45, '2025-01-01', NULL), ('instance.small', 'JPY', 60, '2025-01-01', NULL),
  ('volume.gb', 'USD', 0.0002, '2025-01-01', NULL), ('volume.gb', 'EUR', 0.00018, '2025-01-01', NULL),
  ('volume.gb', 'JPY', 0.03, '2025-01-01', NULL),
  ('bandwidth.egress.gb', 'USD', 0.09, '2025-01-01', NULL), ('bandwidth.egress.gb', 'EUR', 0.08, '2025-01-01', NULL),
  ('bandwidth.egress.gb', 'JPY', 12, '2025-01-01', NULL)`)
	must(`INSERT INTO credits (account_id, amount, currency, reason, granted_at, expires_at) VALUES
  (1, 5, 'USD', 'trial', '2025-01-10', '2025-03-15'), (2, 100, 'EUR', 'goodwill', '2025-02-01', NULL)`)
	// Forty trial accounts whose invoices credit pays: closing them takes long
	// enough for the crash test to land kills inside the close phase too.
	must(`INSERT INTO accounts (id, email, currency, created_at) SELECT 100 + seq, CONCAT('t', seq, '@example.com'), 'EUR', '2025-02-01' FROM seq_1_to_40`)
	must(`INSERT INTO credits (account_id, amount, currency, reason, granted_at, expires_at)
SELECT 100 + seq, 20, 'EUR', 'trial', '2025-02-01', '2025-04-01' FROM seq_1_to_40`)
	// 72 hours from 2025-02-28 00:00, generated in SQL.
	must(`INSERT INTO usage_records (account_id, resource_id, product, hour, quantity)
SELECT a.id, CONCAT('vm-', a.id), 'instance.small', '2025-02-28' + INTERVAL s.seq HOUR, 1
FROM accounts a JOIN seq_0_to_71 s
UNION ALL SELECT a.id, CONCAT('vol-', a.id), 'volume.gb', '2025-02-28' + INTERVAL s.seq HOUR, 100 + a.id / 3
FROM accounts a JOIN seq_0_to_71 s
UNION ALL SELECT a.id, CONCAT('bw-', a.id), 'bandwidth.egress.gb', '2025-02-28' + INTERVAL s.seq HOUR, (s.seq MOD 3) * 0.333333
FROM accounts a JOIN seq_0_to_71 s`)
}

func billingEnv(db *mysqltest.DB, fake *billingFake) []string {
	return []string{
		"CRONKIT_DB_DSN=" + db.DSN, "CRONKIT_STRIPE_KEY=" + testStripeKey, "CRONKIT_STRIPE_URL=" + fake.URL,
		"CRONKIT_NOW=" + billingNow, "CRONKIT_LOG_FORMAT=json",
	}
}

func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// billingState is the canonical content of billing's tables: ids that legitimately
// differ between runs (auto-increment values a rolled-back transaction consumed)
// are replaced by natural keys, and the idempotency keys are checked against the
// run's own invoice ids and then written in natural terms.
func billingState(t *testing.T, db *sql.DB, fake *billingFake) string {
	t.Helper()
	inv := map[int64]string{}
	rows, err := db.Query(`SELECT id, account_id, DATE_FORMAT(period_start, '%Y-%m') FROM invoices`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, acct int64
		var period string
		if err := rows.Scan(&id, &acct, &period); err != nil {
			t.Fatal(err)
		}
		inv[id] = fmt.Sprintf("inv(%d,%s)", acct, period)
	}
	rows.Close()
	name := func(id sql.NullInt64) string {
		if !id.Valid {
			return "-"
		}
		return inv[id.Int64]
	}
	var b strings.Builder
	section := func(title, q string, scan func(rows *sql.Rows) string) {
		rows, err := db.Query(q)
		if err != nil {
			t.Fatalf("%s: %v", title, err)
		}
		defer rows.Close()
		var lines []string
		for rows.Next() {
			lines = append(lines, scan(rows))
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		sort.Strings(lines)
		fmt.Fprintf(&b, "== %s (%d)\n%s\n", title, len(lines), strings.Join(lines, "\n"))
	}
	str := func(v sql.NullString) string {
		if !v.Valid {
			return "NULL"
		}
		return v.String
	}
	section("charges", `SELECT account_id, product, DATE_FORMAT(hour, '%Y-%m-%dT%H'), quantity, unit_price, amount, currency, status, problem, invoice_id FROM charges`,
		func(rows *sql.Rows) string {
			var acct int64
			var product, hour, qty, status string
			var unit, amount, currency, problem sql.NullString
			var invoice sql.NullInt64
			if err := rows.Scan(&acct, &product, &hour, &qty, &unit, &amount, &currency, &status, &problem, &invoice); err != nil {
				t.Fatal(err)
			}
			return fmt.Sprintf("%d %s %s q=%s p=%s a=%s %s %s %s %s", acct, product, hour, qty, str(unit), str(amount), str(currency), status, str(problem), name(invoice))
		})
	section("invoices", `SELECT id, currency, subtotal, credit_applied, total_minor, amount_paid_minor, status, attempt_count,
  next_attempt_at, collection, last_decline_code, created_at, opened_at, due_at, paid_at FROM invoices`,
		func(rows *sql.Rows) string {
			var id sql.NullInt64
			v := make([]sql.NullString, 14)
			ptrs := []any{&id}
			for i := range v {
				ptrs = append(ptrs, &v[i])
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			parts := []string{name(id)}
			for _, s := range v {
				parts = append(parts, str(s))
			}
			return strings.Join(parts, " ")
		})
	section("invoice_lines", `SELECT invoice_id, kind, product, quantity, amount FROM invoice_lines`, func(rows *sql.Rows) string {
		var id sql.NullInt64
		var kind, product, qty, amount string
		if err := rows.Scan(&id, &kind, &product, &qty, &amount); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%s %s %s %s %s", name(id), kind, product, qty, amount)
	})
	section("credit_applications", `SELECT credit_id, invoice_id, amount FROM credit_applications`, func(rows *sql.Rows) string {
		var credit int64
		var id sql.NullInt64
		var amount string
		if err := rows.Scan(&credit, &id, &amount); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("credit %d %s %s", credit, name(id), amount)
	})
	section("payments", `SELECT invoice_id, attempt, idempotency_key, amount_minor, currency, provider_customer_id, provider_payment_method_id,
  status, provider_payment_id IS NOT NULL, decline_code, created_at, updated_at FROM payments`, func(rows *sql.Rows) string {
		var id sql.NullInt64
		var attempt int
		var key, amount, currency, status string
		var hasPI bool
		var cust, pm, decline, created, updated sql.NullString
		if err := rows.Scan(&id, &attempt, &key, &amount, &currency, &cust, &pm, &status, &hasPI, &decline, &created, &updated); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("cronkit-invoice-%d-attempt-%d", id.Int64, attempt); key != want {
			t.Errorf("payment key %q, want %q", key, want)
		}
		return fmt.Sprintf("%s attempt %d key=%s-attempt-%d %s %s %s %s %s pi=%v %s %s %s",
			name(id), attempt, name(id), attempt, amount, currency, str(cust), str(pm), status, hasPI, str(decline), str(created), str(updated))
	})
	section("billing_state", `SELECT name, hour_watermark FROM billing_state`, func(rows *sql.Rows) string {
		var n string
		var wm sql.NullString
		if err := rows.Scan(&n, &wm); err != nil {
			t.Fatal(err)
		}
		return n + " " + str(wm)
	})
	// What the provider saw: PaymentIntents per invoice and attempt.
	client := payment.New(payment.Config{APIKey: testStripeKey, BaseURL: fake.URL})
	per := map[string]int{}
	for pi, err := range client.ListPaymentIntents(context.Background(), payment.ListParams{}) {
		if err != nil {
			t.Fatal(err)
		}
		id, _ := strconv.ParseInt(pi.Metadata["invoice_id"], 10, 64)
		per[fmt.Sprintf("%s attempt %s %d %s %s", inv[id], pi.Metadata["attempt"], pi.AmountMinor, pi.Currency, pi.Status)]++
	}
	var lines []string
	for k, n := range per {
		lines = append(lines, fmt.Sprintf("%s x%d", k, n))
	}
	sort.Strings(lines)
	fmt.Fprintf(&b, "== provider payment intents (%d)\n%s\n", fake.PaymentIntentCount(), strings.Join(lines, "\n"))
	return b.String()
}

// runBilling runs the built binary to its end and returns its exit code.
func runBilling(t *testing.T, bin string, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"billing"}, args...)...)
	cmd.Env = env
	var out, errOut syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	_ = cmd.Run()
	return cmd.ProcessState.ExitCode(), out.String() + errOut.String()
}

func TestBillingFlagErrorsExit2AndWriteNothing(t *testing.T) {
	db := mysqltest.New(t)
	env := map[string]string{"CRONKIT_DB_DSN": db.DSN, "CRONKIT_STRIPE_KEY": testStripeKey}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"billing", "--retry-days", "1,x"}, `--retry-days "1,x"`},
		{[]string{"billing", "--retry-days", "3,1"}, `--retry-days "3,1"`},
		{[]string{"billing", "--retry-days", "0"}, `--retry-days "0"`},
		{[]string{"billing", "--settle-delay", "-1m"}, "--settle-delay must not be negative"},
		{[]string{"billing", "--net-days", "-1"}, "--net-days must not be negative"},
		{[]string{"billing", "close", "--month", "2025-13"}, `--month "2025-13"`},
		{[]string{"billing", "rate", "--month", "2025-01"}, "--month is for 'cronkit billing close'"},
		{[]string{"billing", "close", "--month", "2025-03", "--now", "2025-03-20T00:00:00Z"}, "--month 2025-03 has not ended"},
		{[]string{"billing", "--now", "yesterday"}, `--now "yesterday"`},
		{[]string{"billing", "--now", "2999-01-01T00:00:00Z"}, "is in the future"},
		{[]string{"billing", "show-invoice"}, "show-invoice takes one invoice id"},
		{[]string{"billing", "show-invoice", "abc"}, `invoice id "abc"`},
		{[]string{"billing", "rate", "extra"}, `unexpected argument "extra"`},
		{[]string{"billing", "--account", "-4"}, "--account must be a positive id"},
	} {
		code, out, errOut := jobs(t, env, tc.args...)
		if code != 2 || out != "" || !strings.Contains(errOut, tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("%v: code %d, stdout %q, stderr %q; want 2 and one line with %q", tc.args, code, out, errOut, tc.want)
		}
	}
	// Charging needs a key; rating does not; a dry run never does.
	noKey := map[string]string{"CRONKIT_DB_DSN": db.DSN}
	if code, _, errOut := jobs(t, noKey, "billing"); code != 2 || !strings.Contains(errOut, "--stripe-key") {
		t.Errorf("no key: %d %q", code, errOut)
	}
	if code, _, errOut := jobs(t, noKey, "billing", "charge"); code != 2 {
		t.Errorf("charge without key: %d %q", code, errOut)
	}
	if n := countRows(t, db.DB, "job_runs"); n != 0 {
		t.Fatalf("usage errors wrote %d job_runs rows", n)
	}
	if code, _, errOut := jobs(t, noKey, "billing", "rate"); code != 0 {
		t.Errorf("rate without key: %d %q", code, errOut)
	}
	if code, _, errOut := jobs(t, noKey, "billing", "--dry-run", "--now", "2999-01-01T00:00:00Z"); code != 0 {
		t.Errorf("dry run without key, in the future: %d %q", code, errOut)
	}
}

func TestBillingEndToEnd(t *testing.T) {
	db := mysqltest.New(t)
	seedBilling(t, db.DB)
	fake := startBillingFake(t, 0)
	env := envMap(billingEnv(db, fake))

	// The plan first, with a SELECT-only user: it must succeed and change nothing.
	roEnv := envMap(billingEnv(db, fake))
	roEnv["CRONKIT_DB_DSN"] = db.SelectOnlyUser(t)
	delete(roEnv, "CRONKIT_STRIPE_KEY")
	code, plan, errOut := jobs(t, roEnv, "billing", "rate", "--dry-run")
	if code != 0 || !strings.Contains(plan, "dry run (nothing was changed)") {
		t.Fatalf("dry run: %d\n%s\n%s", code, plan, errOut)
	}
	// The 72 hours fold into one line of the text report.
	if !strings.Contains(squash(plan), "rate hour 2025-02-28T00:00Z .. 2025-03-02T23:00Z (72) 9720 charges, EUR 1481.087040, JPY 4826.879712, USD 126.043200") || countRows(t, db.DB, "charges") != 0 || countRows(t, db.DB, "job_runs") != 0 {
		t.Fatalf("dry run plan or writes:\n%s", plan)
	}

	code, out, errOut := jobs(t, env, "billing")
	// Account 5 has no Stripe customer: reported, exit 3.
	if code != 3 || !strings.Contains(out, "no_payment_method") {
		t.Fatalf("billing: %d\n%s\n%s", code, out, errOut)
	}
	// February 28th, by hand: account 1 is 24 x 0.50 + 24 x round(100.333333 x 0.0002)
	// + 8 x round(0.333333 x 0.09) + 8 x round(0.666666 x 0.09) = 12 + 0.481608 + 0.24
	// + 0.48 = 13.201608, minus the 5.00 trial credit: USD 8.20. Account 4 in yen:
	// 1440 + 24 x 3.04 + 8 x 3.999996 + 8 x 7.999992 = 1608.959904: JPY 1609.
	for _, want := range []string{
		"invoice account 1 2025-02",
		"charge invoice 1 account 1 USD 8.20, attempt 1, key cronkit-invoice-1-attempt-1 -> succeeded",
		"charge invoice 3 account 3 USD 13.20, attempt 1, key cronkit-invoice-3-attempt-1 -> soft decline insufficient_funds; next attempt 2025-03-04T00:20:00Z",
		"charge invoice 4 account 4 JPY 1609, attempt 1, key cronkit-invoice-4-attempt-1 -> succeeded",
		"EUR 0.00 (subtotal 11.874880, credit 11.874880, 4 lines), paid by credit",
	} {
		if !strings.Contains(squash(out), want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	var status string
	if err := db.QueryRow(`SELECT status FROM job_runs`).Scan(&status); err != nil || status != "partial" {
		t.Fatalf("job_runs: %q %v", status, err)
	}

	// show-invoice, text and JSON.
	code, out, errOut = jobs(t, env, "billing", "show-invoice", "3")
	if code != 0 {
		t.Fatalf("show-invoice: %d %s", code, errOut)
	}
	for _, want := range []string{"invoice 3", "collection retrying", "USD 13.20", "usage instance.small", "cronkit-invoice-3-attempt-1", "soft_declined", "insufficient_funds"} {
		if !strings.Contains(squash(out), want) {
			t.Errorf("show-invoice lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = jobs(t, env, "billing", "show-invoice", "1", "--output", "json")
	var inv struct {
		Status   string
		Total    string
		Credits  []struct{ Amount string }
		Payments []struct {
			IdempotencyKey string `json:"idempotency_key"`
			Status         string
		}
	}
	if err := json.Unmarshal([]byte(out), &inv); err != nil || code != 0 {
		t.Fatalf("show-invoice json: %d %v\n%s", code, err, out)
	}
	if inv.Status != "paid" || inv.Total != "USD 8.20" || len(inv.Credits) != 1 || inv.Credits[0].Amount != "5.000000" ||
		len(inv.Payments) != 1 || inv.Payments[0].IdempotencyKey != "cronkit-invoice-1-attempt-1" {
		t.Fatalf("show-invoice json: %+v", inv)
	}
	if code, _, errOut := jobs(t, env, "billing", "show-invoice", "999"); code != 1 || !strings.Contains(errOut, "no such invoice") {
		t.Fatalf("missing invoice: %d %q", code, errOut)
	}

	// The retry day: attempt 2 declines again and waits for day 3.
	env["CRONKIT_NOW"] = "2025-03-04T00:30:00Z"
	code, out, _ = jobs(t, env, "billing", "charge")
	if code != 0 || !strings.Contains(squash(out), "key cronkit-invoice-3-attempt-2 -> soft decline insufficient_funds; next attempt 2025-03-06T00:20:00Z") {
		t.Fatalf("retry day: %d\n%s", code, out)
	}
}

// TestBillingSIGKILLAtRandomPointsMatchesOneCleanRun kills `cronkit billing` at random
// points of rating, closing and charging, runs it again to completion (twice), and
// requires charges, invoices, lines, credit, payments (with their idempotency keys)
// and the provider's PaymentIntents to be exactly what one clean run produces.
func TestBillingSIGKILLAtRandomPointsMatchesOneCleanRun(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level crash test")
	}
	bin := buildJobs(t)
	const latency = 60 * time.Millisecond
	seeds := 20
	if s := os.Getenv("CRONKIT_BILLING_KILL_SEEDS"); s != "" {
		var err error
		if seeds, err = strconv.Atoi(s); err != nil {
			t.Fatalf("CRONKIT_BILLING_KILL_SEEDS: %v", err)
		}
	}

	cleanDB := mysqltest.New(t)
	seedBilling(t, cleanDB.DB)
	cleanFake := startBillingFake(t, latency)
	start := time.Now()
	code, out := runBilling(t, bin, billingEnv(cleanDB, cleanFake))
	cleanDur := time.Since(start)
	if code != 0 && code != 3 {
		t.Fatalf("clean run: exit %d\n%s", code, out)
	}
	want := billingState(t, cleanDB.DB, cleanFake)
	if !strings.Contains(want, "== invoices (45)") || !strings.Contains(want, "== provider payment intents (3)") {
		t.Fatalf("clean run state is not the expected world:\n%s", want)
	}
	t.Logf("clean run: %s", cleanDur.Round(time.Millisecond))

	phases := map[string]int{}
	for i := range seeds {
		seed := uint64(i + 1)
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			db := mysqltest.New(t)
			seedBilling(t, db.DB)
			fake := startBillingFake(t, latency)
			env := billingEnv(db, fake)
			// Stratified over the clean run's duration, jittered by the seed, so the
			// kills cover every phase.
			rng := rand.New(rand.NewPCG(seed, 0x5eed))
			delay := time.Duration((float64(i) + rng.Float64()) / float64(seeds) * float64(cleanDur))

			cmd := exec.Command(bin, "billing")
			cmd.Env = env
			var killedOut syncBuffer
			cmd.Stdout, cmd.Stderr = &killedOut, &killedOut
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(delay)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			phase := killPhase(t, db.DB)
			phases[phase]++

			for run := 1; run <= 2; run++ {
				code, out := runBilling(t, bin, append(env, "CRONKIT_LOCK_WAIT=20s"))
				if code != 0 && code != 3 {
					t.Fatalf("re-run %d after a kill at %s (%s): exit %d\n%s", run, delay, phase, code, out)
				}
			}
			if got := billingState(t, db.DB, fake); got != want {
				t.Fatalf("kill at %s (%s): state after re-runs differs from one clean run:\n%s", delay, phase, diffLines(want, got))
			}
		})
	}
	t.Logf("kills by phase: %v", phases)
	if seeds >= 10 && (phases["charging, answer not recorded"] == 0 || phases["closing"] == 0) {
		// Where kills land depends on the machine's load; the window between the
		// provider's answer and our commit is also covered deterministically in
		// jobs/billing (TestChargeCrashAfterProviderAnswerRecordsTheOriginalResult).
		t.Logf("no kill landed while closing, or between a provider call and its commit: %v", phases)
	}
}

// killPhase says where a killed run stopped, from what it left behind.
func killPhase(t *testing.T, db *sql.DB) string {
	t.Helper()
	var charges, invoices, pending, recorded int
	if err := db.QueryRow(`SELECT (SELECT COUNT(*) FROM charges), (SELECT COUNT(*) FROM invoices),
  (SELECT COUNT(*) FROM payments WHERE status = 'pending'), (SELECT COUNT(*) FROM payments WHERE status <> 'pending')`).
		Scan(&charges, &invoices, &pending, &recorded); err != nil {
		t.Fatal(err)
	}
	switch {
	case pending > 0:
		return "charging, answer not recorded"
	case recorded > 0:
		return "charging"
	case invoices > 0:
		return "closing"
	case charges > 0:
		return "rating"
	}
	return "before rating"
}

func diffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	inWant := map[string]bool{}
	for _, l := range w {
		inWant[l] = true
	}
	inGot := map[string]bool{}
	for _, l := range g {
		inGot[l] = true
	}
	var b strings.Builder
	for _, l := range w {
		if !inGot[l] {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range g {
		if !inWant[l] {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}

// squash collapses runs of spaces, so tests match table output by its words.
func squash(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == ' ' }), " ")
}
