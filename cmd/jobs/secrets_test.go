package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

// echoServer answers every request with an error that quotes the request back,
// headers and URL included, as careless servers (and stripe-mock's 401) do: a client
// that puts that text in an error must still keep secrets out of the logs.
func echoServer(t *testing.T, status int) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		msg := strings.NewReplacer(`"`, `'`, "\n", " ").Replace(fmt.Sprintf("%s %s auth=%s body=%s", r.Method, r.URL.String(), r.Header.Get("Authorization"), body))
		fmt.Fprintf(w, `{"error":{"type":"invalid_request_error","message":"%s"},"errorresponse":{"errorcode":%d,"errortext":"%s"}}`, msg, status, msg)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestJobsKeepSecretsOutOfLogsAndReports(t *testing.T) {
	db := mysqltest.New(t)
	now := time.Now().UTC()
	// A customer with an open invoice (billing will try to charge it) and a fresh
	// signup on trial credit (abuse will ask the orchestrator about it).
	mustExec(t, db, `INSERT INTO accounts (id, email, currency, created_at, stripe_customer_id, cloudstack_account_id)
		VALUES (1, 'a@example.com', 'EUR', ?, 'cus_1', 'cs-1'), (2, 'b@example.com', 'EUR', ?, NULL, 'cs-2')`, now.AddDate(0, -3, 0), now.Add(-2*time.Hour))
	mustExec(t, db, `INSERT INTO credits (account_id, amount, currency, reason, granted_at) VALUES (2, 50, 'EUR', 'trial', ?)`, now.Add(-2*time.Hour))
	mustExec(t, db, `INSERT INTO invoices (account_id, period_start, currency, subtotal, total_minor, status, created_at, opened_at, due_at)
		VALUES (1, '2026-01-01', 'EUR', 10, 1000, 'open', ?, ?, ?)`, now, now, now)

	const stripeKey = "sk_test_S3CRETSTRIPEKEY"
	const csKey, csSecret, smtpPass = "CSAPIKEYMARKER", "CSSECRETMARKER", "SMTPPASSMARKER"
	stripe := echoServer(t, 401)
	cs := echoServer(t, 431)
	env := map[string]string{"CRONKIT_DB_DSN": db.DSN, "CRONKIT_LOG_FORMAT": "json", "CRONKIT_LOG_LEVEL": "debug"}

	code, out, errOut := jobs(t, env, "billing", "charge", "--stripe-url", stripe.URL, "--stripe-key", stripeKey)
	if code == 0 {
		t.Fatalf("billing against a rejecting provider exited 0:\n%s\n%s", out, errOut)
	}
	assertNoSecret(t, "billing", out+errOut, stripeKey, strings.TrimPrefix(stripeKey, "sk_test_"))

	code, out, errOut = jobs(t, env, "abuse", "--cloudstack-url", cs.URL+"/client/api", "--cloudstack-api-key", csKey,
		"--cloudstack-secret-key", csSecret, "--smtp-host", "127.0.0.1", "--smtp-port", "1", "--smtp-username", "u",
		"--smtp-password", smtpPass, "--mail-from", "billing@example.com")
	if code == 0 {
		t.Fatalf("abuse against a failing orchestrator exited 0:\n%s\n%s", out, errOut)
	}
	if !strings.Contains(out+errOut, "cs-2") && !strings.Contains(out+errOut, "account 2") {
		t.Fatalf("abuse did not reach the orchestrator for the candidate:\n%s\n%s", out, errOut)
	}
	assertNoSecret(t, "abuse", out+errOut, csKey, csSecret, smtpPass)

	var args string
	if err := db.QueryRow("SELECT GROUP_CONCAT(args SEPARATOR ' | ') FROM job_runs").Scan(&args); err != nil {
		t.Fatal(err)
	}
	assertNoSecret(t, "job_runs.args", args, stripeKey, csKey, csSecret, smtpPass)
}

func assertNoSecret(t *testing.T, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("%s: secret %q appears in output:\n%s", what, s, text)
		}
	}
}

func mustExec(t *testing.T, db *mysqltest.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}
