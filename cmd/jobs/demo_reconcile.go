package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cronkit/cronkit/fixtures"
	"github.com/cronkit/cronkit/jobs/reconcile"
	"github.com/cronkit/cronkit/lib/orchestrator"
	"github.com/cronkit/cronkit/lib/orchestrator/fakecloudstack"
	"github.com/cronkit/cronkit/lib/payment"
	"github.com/cronkit/cronkit/lib/payment/fakestripe"
)

// reconcileDemo is the reconciliation chapter of the demo: money leaking in every way
// cronkit reconcile knows, made the way a real cloud makes it (the usage server loses
// hours, a second metering agent writes rows, the console double-charges, a refund
// is given in Stripe's dashboard, a payment's answer is lost on the way back), then
// found, listed, repaired where that is safe, and the repair followed through to the
// customer's dunning case.
type reconcileDemo struct {
	e         *env
	db        *sql.DB
	world     *fixtures.World
	start     time.Time // the story's day 0: billing's first run
	clock     *demoClock
	stripe    *fakestripe.Server
	stripeURL string
	cs        *fakecloudstack.Server
	csURL     string

	// lostInvoice is the invoice whose payment Stripe took and billing never heard
	// of: the decliner's, whose dunning case the repair ends.
	lostInvoice int64
}

// The accounts the chapter plants its leaks on (established customers, none of the
// story's others) and the one-off invoices it charges.
const (
	demoRunningNotMetered = 1050
	demoMeteredNotFound   = 1051
	demoAfterRemoval      = 1052
	demoHoursExceed       = 1053
	demoMisattributed     = 1054 // its volume's usage lands on demoMisattributed+1
	demoRecordedNotPaid   = 1060
	demoAmountMismatch    = 1061
	demoCurrencyMismatch  = 1062
	demoDuplicate         = 1063
	demoRefunded          = 1064
	demoDisputed          = 1065
	demoStray             = 1066
	demoStrayInvoice      = 990001 // an invoice no cronkit database has
)

// reconcileDemoClasses are the classes the chapter plants, one finding each.
func reconcileDemoClasses() []string {
	return []string{
		reconcile.ClassRunningNotMetered, reconcile.ClassMeteredNotFound, reconcile.ClassMeteredAfterRemoval,
		reconcile.ClassHoursExceedWindow, reconcile.ClassAccountMismatch, reconcile.ClassSuspendedButRunning,
		reconcile.ClassPaidNotRecorded, reconcile.ClassRecordedNotPaid, reconcile.ClassAmountMismatch,
		reconcile.ClassCurrencyMismatch, reconcile.ClassDuplicateCharge, reconcile.ClassRefundedNotRecorded,
		reconcile.ClassDisputed, reconcile.ClassUnknownPayment,
	}
}

// from is the window every reconcile run of the chapter judges: from the day before
// billing's first run (collect's coverage) to the start of today.
func (r *reconcileDemo) from() string { return r.start.Add(-24 * time.Hour).Format(time.RFC3339) }

func (r *reconcileDemo) steps(roDSN string) []demoStep {
	from := r.from()
	lost := func() string { return fmt.Sprint(fixtures.DeclinerID) }
	return []demoStep{
		{do: r.plant},
		{title: "reconcile: usage (CloudStack vs metering) and payments (Stripe vs the books); exit 3 while findings are open",
			args: []string{"reconcile", "--from", from}, ok: []int{3}, quiet: true, check: r.checkFound, clip: [2]int{2, 24}},
		{title: "the findings, kept as tickets (open until fixed, acknowledged or no longer reproducing)",
			args: []string{"reconcile", "findings", "--state", "open"}, ok: []int{0}},
		{title: "reconcile payments --fix, dry run with the SELECT-only user: what it would record (nothing that moves money)",
			args: []string{"reconcile", "payments", "--from", from, "--fix", "--dry-run"}, dsn: roDSN, ok: []int{3}, quiet: true, clip: [2]int{2, 26}},
		{title: "reconcile payments --fix: the lost payment recorded from Stripe's object, its invoice paid (under billing's lock)",
			args: []string{"reconcile", "payments", "--from", from, "--fix"}, ok: []int{3}, quiet: true, check: r.checkFixed, clip: [2]int{2, 23}},
		{title: fmt.Sprintf("abuse: account %s's invoice is paid, so its dunning case resolves through abuse's own facts", lost()),
			args: []string{"abuse"}, ok: []int{0, 3}, check: r.checkDunningResolved},
		{title: fmt.Sprintf("what happened to account %s?", lost()), args: []string{"abuse", "show", lost()}, ok: []int{0}},
		{title: "the lost payment's finding is fixed (the refund's and the dispute's too; the rest wait for a person: cronkit reconcile ack)",
			args: []string{"reconcile", "findings", "--state", reconcile.StateFixed}, ok: []int{0}},
	}
}

// plant makes one leak of each class.
func (r *reconcileDemo) plant(ctx context.Context) error {
	r.e.section("reconcile: a leak of every kind, made the way a real cloud makes them")
	var planted [][2]string
	note := func(class, what string) { planted = append(planted, [2]string{class, what}) }
	if err := r.plantUsage(ctx, note); err != nil {
		return fmt.Errorf("plant usage leaks: %w", err)
	}
	if err := r.plantPayments(ctx, note); err != nil {
		return fmt.Errorf("plant payment leaks: %w", err)
	}
	for _, p := range planted {
		fmt.Fprintf(r.e.stdout, "%-24s %s\n", p[0], p[1])
	}
	fmt.Fprintf(r.e.stdout, "look for: one finding of each of these %d classes, and nothing about the other %d customers\n",
		len(planted), len(r.world.Accounts)-len(planted))
	return nil
}

func (r *reconcileDemo) account(id int64) fixtures.Account {
	for _, a := range r.world.Accounts {
		if a.ID == id {
			return a
		}
	}
	return fixtures.Account{}
}

func (r *reconcileDemo) exec(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := r.db.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("%.60s: %w", q, err)
	}
	return res.RowsAffected()
}

// plantUsage makes the usage check's six classes in the day before billing's first
// run, which collect has read from the fake CloudStack.
func (r *reconcileDemo) plantUsage(ctx context.Context, note func(class, what string)) error {
	day := r.start.Add(-24 * time.Hour)
	h := func(n int) time.Time { return day.Add(time.Duration(n) * time.Hour) }

	// The usage server's job for three hours failed and was never re-run: collect
	// has nothing of one customer's volume for 08:00-11:00.
	vol := r.volumeOf(ctx, r.account(demoRunningNotMetered))
	if n, err := r.exec(ctx, `DELETE FROM cloudstack_usage WHERE usage_id = ? AND usage_type = 6 AND start_date >= ? AND start_date < ?`,
		vol, h(8), h(11)); err != nil || n == 0 {
		return errors.Join(err, fmt.Errorf("no usage records of volume %q at %s", vol, h(8).Format(time.RFC3339)))
	}
	if _, err := r.exec(ctx, `DELETE FROM usage_records WHERE resource_id = ? AND product = 'volume.gb' AND hour >= ? AND hour < ?`,
		vol, h(8), h(11)); err != nil {
		return err
	}
	note(reconcile.ClassRunningNotMetered, fmt.Sprintf("account %d: the usage server lost 3 hours of volume %s", demoRunningNotMetered, short(vol)))

	// A metering agent of the old platform still writes rows for a VM that was
	// migrated away long ago.
	for i := 0; i < 3; i++ {
		if _, err := r.exec(ctx, `INSERT INTO usage_records (account_id, resource_id, product, hour, quantity) VALUES (?, ?, 'instance.small', ?, 1)`,
			demoMeteredNotFound, "legacy-vm-7f3a", h(12+i)); err != nil {
			return err
		}
	}
	note(reconcile.ClassMeteredNotFound, fmt.Sprintf("account %d: an old metering agent bills 3 hours of legacy-vm-7f3a, unknown to CloudStack", demoMeteredNotFound))

	// A scratch volume deleted at 12:00 whose usage kept being written until 18:00.
	acct := r.account(demoAfterRemoval)
	vol = "scratch-" + strconv.FormatInt(demoAfterRemoval, 10)
	if _, err := r.cs.AddVolume(fakecloudstack.Volume{ID: vol, Name: vol, AccountID: acct.CSAccountID, SizeBytes: 50 << 30,
		Created: h(2), Deleted: h(12)}); err != nil {
		return err
	}
	for n := 2; n < 18; n++ {
		if _, err := r.exec(ctx, `INSERT INTO usage_records (account_id, resource_id, product, hour, quantity) VALUES (?, ?, 'volume.gb', ?, 50)`,
			demoAfterRemoval, vol, h(n)); err != nil {
			return err
		}
	}
	note(reconcile.ClassMeteredAfterRemoval, fmt.Sprintf("account %d: volume %s deleted at 12:00, metered until 18:00", demoAfterRemoval, vol))

	// The usage server wrote 1.5 hours into a one-hour record.
	vm := r.account(demoHoursExceed).VMs[0]
	if n, err := r.exec(ctx, `UPDATE cloudstack_usage SET raw_usage = '1.5' WHERE usage_id = ? AND usage_type = 1 AND start_date = ?`,
		vm.ID, h(14)); err != nil || n != 1 {
		return errors.Join(err, fmt.Errorf("no usage record of %s at %s", vm.ID, h(14).Format(time.RFC3339)))
	}
	note(reconcile.ClassHoursExceedWindow, fmt.Sprintf("account %d: a one-hour record of VM %s says 1.5 hours", demoHoursExceed, short(vm.ID)))

	// One hour of a customer's volume was metered (and billed) on another account.
	acct, other := r.account(demoMisattributed), r.account(demoMisattributed+1)
	volID := r.volumeOf(ctx, acct)
	if _, err := r.exec(ctx, `UPDATE cloudstack_usage SET cs_account_id = ?, account_id = ? WHERE usage_id = ? AND usage_type = 6 AND start_date = ?`,
		other.CSAccountID, other.ID, volID, h(16)); err != nil {
		return err
	}
	if _, err := r.exec(ctx, `UPDATE usage_records SET account_id = ? WHERE resource_id = ? AND hour = ?`, other.ID, volID, h(16)); err != nil {
		return err
	}
	note(reconcile.ClassAccountMismatch, fmt.Sprintf("account %d's volume metered for an hour on account %d", acct.ID, other.ID))

	// Support works a ticket on the wrong account: re-enables the suspended miner in
	// CloudStack and starts one of its VMs.
	miner := r.account(fixtures.MinerID)
	orch, err := orchestrator.New(orchestrator.Config{APIURL: r.csURL, APIKey: fixtures.CloudStackAPIKey, SecretKey: fixtures.CloudStackSecretKey,
		Timeout: 10 * time.Second, AsyncPoll: 20 * time.Millisecond})
	if err != nil {
		return err
	}
	if err := orch.EnableAccount(ctx, miner.CSAccountID); err != nil {
		return fmt.Errorf("enable the miner's account: %w", err)
	}
	if err := orch.StartVM(ctx, miner.VMs[0].ID); err != nil {
		return fmt.Errorf("start the miner's VM: %w", err)
	}
	note(reconcile.ClassSuspendedButRunning, fmt.Sprintf("account %d (suspended by abuse): support re-enables it in CloudStack and starts its VM %s", miner.ID, short(miner.VMs[0].ID)))
	return nil
}

// volumeOf is the id of the account's volume in the fixtures.
func (r *reconcileDemo) volumeOf(ctx context.Context, a fixtures.Account) string {
	var id string
	_ = r.db.QueryRowContext(ctx, `SELECT usage_id FROM cloudstack_usage WHERE cs_account_id = ? AND usage_type = 6 LIMIT 1`, a.CSAccountID).Scan(&id)
	return id
}

// short abbreviates a CloudStack UUID for the story.
func short(id string) string {
	if len(id) > 13 {
		return id[:8] + "..." + id[len(id)-4:]
	}
	return id
}

// plantPayments makes the payments check's eight classes in the days after billing's
// first run, through the fake Stripe's API (as billing and the console call it) and
// the rows billing or the console write.
func (r *reconcileDemo) plantPayments(ctx context.Context, note func(class, what string)) error {
	at := func(d, hour int) time.Time { return r.start.AddDate(0, 0, d).Add(time.Duration(hour) * time.Hour) }
	client := payment.New(payment.Config{APIKey: fixtures.StripeKey, BaseURL: r.stripeURL, HTTPClient: &http.Client{Timeout: 2 * time.Second}})
	charge := func(t time.Time, acct int64, invoice int64, attempt int, amount int64, currency, card, key string) (payment.ChargeResult, error) {
		r.clock.set(t)
		return client.Charge(ctx, payment.ChargeRequest{Customer: fmt.Sprintf("cus_demo%d", acct), PaymentMethod: card,
			AmountMinor: amount, Currency: currency, Description: fmt.Sprintf("Invoice %d", invoice), IdempotencyKey: key,
			Metadata: map[string]string{"invoice_id": fmt.Sprint(invoice), "attempt": fmt.Sprint(attempt), "account_id": fmt.Sprint(acct)}})
	}
	key := func(invoice int64, attempt int) string {
		return fmt.Sprintf("cronkit-invoice-%d-attempt-%d", invoice, attempt)
	}
	// oneOff is an invoice the console issues for a support plan, open until paid.
	oneOff := func(acct int64, currency string, total int64, t time.Time) (int64, error) {
		period := time.Date(r.start.Year(), r.start.Month(), 1, 0, 0, 0, 0, time.UTC)
		res, err := r.db.ExecContext(ctx, `INSERT INTO invoices (account_id, period_start, currency, subtotal, credit_applied, total_minor,
  status, created_at, opened_at, due_at, attempt_count, collection) VALUES (?, ?, ?, ?, 0, ?, 'open', ?, ?, ?, 1, 'pending')`,
			acct, period, currency, fmt.Sprintf("%d.%02d", total/100, total%100), total, t, t, t)
		if err != nil {
			return 0, fmt.Errorf("one-off invoice of %d: %w", acct, err)
		}
		return res.LastInsertId()
	}
	// record writes what the console wrote after charging: the payment and the
	// invoice paid.
	record := func(invoice, acct int64, attempt int, amount int64, currency, status, pi string, t time.Time) error {
		if _, err := r.exec(ctx, `INSERT INTO payments (invoice_id, account_id, attempt, idempotency_key, amount_minor, currency, status,
  provider_payment_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			invoice, acct, attempt, key(invoice, attempt), amount, currency, status, pi, t, t); err != nil {
			return err
		}
		_, err := r.exec(ctx, `UPDATE invoices SET status = 'paid', collection = 'succeeded', amount_paid_minor = total_minor, paid_at = ?,
  attempt_count = GREATEST(attempt_count, ?) WHERE id = ?`, t, attempt, invoice)
		return err
	}
	currencyOf := func(acct int64) string { return r.account(acct).Currency }

	// The lost payment. The decliner puts a working card on file; billing's retry
	// (attempt 2) writes its pending row, Stripe takes the money, and the answer is
	// lost on the way back. Billing's replay window passes without a run.
	t := at(3, 2)
	var inv, total int64
	var currency string
	if err := r.db.QueryRowContext(ctx, `SELECT id, total_minor, currency FROM invoices WHERE account_id = ? AND status = 'open' ORDER BY id LIMIT 1`,
		fixtures.DeclinerID).Scan(&inv, &total, &currency); err != nil {
		return fmt.Errorf("the decliner's open invoice: %w", err)
	}
	r.lostInvoice = inv
	if err := r.stripe.SetDefaultPaymentMethod(fmt.Sprintf("cus_demo%d", fixtures.DeclinerID), "pm_card_visa"); err != nil {
		return err
	}
	if _, err := r.exec(ctx, `UPDATE invoices SET attempt_count = 2 WHERE id = ?`, inv); err != nil {
		return err
	}
	if _, err := r.exec(ctx, `INSERT INTO payments (invoice_id, account_id, attempt, idempotency_key, amount_minor, currency,
  provider_customer_id, provider_payment_method_id, status, created_at, updated_at) VALUES (?, ?, 2, ?, ?, ?, ?, 'pm_card_visa', 'pending', ?, ?)`,
		inv, fixtures.DeclinerID, key(inv, 2), total, currency, fmt.Sprintf("cus_demo%d", fixtures.DeclinerID), t, t); err != nil {
		return err
	}
	r.stripe.DropResponseNext(1)
	if _, err := charge(t, fixtures.DeclinerID, inv, 2, total, currency, "pm_card_visa", key(inv, 2)); err == nil {
		return errors.New("the lost answer arrived")
	}
	note(reconcile.ClassPaidNotRecorded, fmt.Sprintf("account %d (in dunning): its retry succeeded at Stripe, the answer was lost; invoice %d still open", fixtures.DeclinerID, inv))

	type console struct {
		acct           int64
		class, story   string
		card           string
		stripeAmount   int64
		localAmount    int64
		stripeCurrency string
		localStatus    string
		twice          bool
	}
	for i, c := range []console{
		{acct: demoRecordedNotPaid, class: reconcile.ClassRecordedNotPaid, card: "pm_card_chargeDeclined", stripeAmount: 4900, localAmount: 4900,
			localStatus: "succeeded", story: "the console recorded a declined card as paid"},
		{acct: demoAmountMismatch, class: reconcile.ClassAmountMismatch, card: "pm_card_visa", stripeAmount: 4410, localAmount: 4900,
			localStatus: "succeeded", story: "Stripe took 44.10 (a coupon the books do not know), the books say 49.00"},
		{acct: demoCurrencyMismatch, class: reconcile.ClassCurrencyMismatch, card: "pm_card_visa", stripeAmount: 4900, localAmount: 4900,
			stripeCurrency: "other", localStatus: "succeeded", story: "charged in the wrong currency"},
		{acct: demoDuplicate, class: reconcile.ClassDuplicateCharge, card: "pm_card_visa", stripeAmount: 4900, localAmount: 4900,
			localStatus: "succeeded", twice: true, story: "a double click in the console: two attempts, two charges"},
		{acct: demoDisputed, class: reconcile.ClassDisputed, card: "pm_card_createDispute", stripeAmount: 4900, localAmount: 4900,
			localStatus: "succeeded", story: "paid, then the cardholder's bank disputed it"},
	} {
		t := at(4+i, 10)
		cur := currencyOf(c.acct)
		inv, err := oneOff(c.acct, cur, c.localAmount, t)
		if err != nil {
			return err
		}
		stripeCur := cur
		if c.stripeCurrency != "" {
			stripeCur = map[string]string{"EUR": "USD", "USD": "EUR"}[cur]
		}
		res, err := charge(t, c.acct, inv, 1, c.stripeAmount, stripeCur, c.card, key(inv, 1))
		if err != nil {
			return fmt.Errorf("%s: charge: %w", c.class, err)
		}
		if err := record(inv, c.acct, 1, c.localAmount, cur, c.localStatus, res.PaymentIntentID, t); err != nil {
			return err
		}
		if c.twice {
			t2 := t.Add(2 * time.Second)
			res2, err := charge(t2, c.acct, inv, 2, c.stripeAmount, stripeCur, c.card, key(inv, 2))
			if err != nil {
				return fmt.Errorf("%s: second charge: %w", c.class, err)
			}
			if err := record(inv, c.acct, 2, c.localAmount, cur, "succeeded", res2.PaymentIntentID, t2); err != nil {
				return err
			}
		}
		note(c.class, fmt.Sprintf("account %d, one-off invoice %d: %s", c.acct, inv, c.story))
	}

	// A goodwill refund given in Stripe's dashboard, not in cronkit.
	var pi string
	if err := r.db.QueryRowContext(ctx, `SELECT p.provider_payment_id, p.currency FROM payments p
WHERE p.account_id = ? AND p.status = 'succeeded' ORDER BY p.id LIMIT 1`, demoRefunded).Scan(&pi, &currency); err != nil {
		return fmt.Errorf("account %d's payment: %w", demoRefunded, err)
	}
	r.clock.set(at(10, 15))
	if err := r.stripeForm(ctx, "/v1/refunds", url.Values{"payment_intent": {pi}, "amount": {"500"}, "reason": {"requested_by_customer"}}); err != nil {
		return fmt.Errorf("refund: %w", err)
	}
	note(reconcile.ClassRefundedNotRecorded, fmt.Sprintf("account %d: support refunded %s 5.00 of %s in Stripe's dashboard", demoRefunded, currency, pi))

	// A staging environment with production's key charges a test invoice.
	if _, err := charge(at(11, 9), demoStray, demoStrayInvoice, 1, 1200, currencyOf(demoStray), "pm_card_visa", key(demoStrayInvoice, 1)); err != nil {
		return fmt.Errorf("stray charge: %w", err)
	}
	note(reconcile.ClassUnknownPayment, fmt.Sprintf("account %d: a staging copy with production's key charged invoice %d, which does not exist", demoStray, demoStrayInvoice))
	return nil
}

// stripeForm POSTs a form to the fake Stripe, as the dashboard or curl would.
func (r *reconcileDemo) stripeForm(ctx context.Context, path string, form url.Values) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.stripeURL+path, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+fixtures.StripeKey)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s", path, resp.Status)
	}
	return nil
}

// findingCounts counts the chapter's findings by class (those of the run's window).
func (r *reconcileDemo) findingCounts(state string) (map[string]int, error) {
	rows, err := r.db.Query(`SELECT class, COUNT(*) FROM reconcile_findings WHERE state = ? GROUP BY class`, state)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var c string
		var n int
		if err := rows.Scan(&c, &n); err != nil {
			return nil, err
		}
		out[c] = n
	}
	return out, rows.Err()
}

// checkFound: each planted class was found exactly once, and nothing else but the
// per-currency drift the payment leaks make.
func (r *reconcileDemo) checkFound(int) error {
	got, err := r.findingCounts(reconcile.StateOpen)
	if err != nil {
		return fmt.Errorf("reconcile findings: %w", err)
	}
	var wrong []string
	for _, c := range reconcileDemoClasses() {
		if got[c] != 1 {
			wrong = append(wrong, fmt.Sprintf("%s %d", c, got[c]))
		}
		delete(got, c)
	}
	delete(got, reconcile.ClassBalanceDrift)
	for c, n := range got {
		wrong = append(wrong, fmt.Sprintf("unplanted %s %d", c, n))
	}
	sort.Strings(wrong)
	if len(wrong) > 0 {
		return fmt.Errorf("reconcile: want one open finding of each planted class, got: %s", strings.Join(wrong, ", "))
	}
	return nil
}

// checkFixed: the lost payment is recorded from Stripe and its invoice is paid.
func (r *reconcileDemo) checkFixed(int) error {
	var status string
	var pi sql.NullString
	err := r.db.QueryRow(`SELECT i.status, p.provider_payment_id FROM invoices i JOIN payments p ON p.invoice_id = i.id AND p.attempt = 2
WHERE i.id = ? AND p.status = 'succeeded'`, r.lostInvoice).Scan(&status, &pi)
	if err != nil || status != "paid" || !pi.Valid {
		return fmt.Errorf("reconcile --fix: invoice %d is %q with payment %v (%v); want paid, attempt 2 succeeded", r.lostInvoice, status, pi.String, err)
	}
	var fixed int
	if err := r.db.QueryRow(`SELECT COUNT(*) FROM reconcile_findings WHERE class = ? AND invoice_id = ? AND state = ?`,
		reconcile.ClassPaidNotRecorded, r.lostInvoice, reconcile.StateFixed).Scan(&fixed); err != nil || fixed != 1 {
		return fmt.Errorf("reconcile --fix: %d fixed paid_not_recorded findings for invoice %d (%v), want 1", fixed, r.lostInvoice, err)
	}
	return nil
}

// checkDunningResolved: abuse closed the decliner's dunning case.
func (r *reconcileDemo) checkDunningResolved(int) error {
	var open int
	if err := r.db.QueryRow(`SELECT COUNT(*) FROM cases WHERE account_id = ? AND machine = 'dunning' AND closed_at IS NULL`,
		fixtures.DeclinerID).Scan(&open); err != nil || open != 0 {
		return fmt.Errorf("abuse: account %d still has %d open dunning case(s) (%v)", fixtures.DeclinerID, open, err)
	}
	return nil
}

// keepSandbox leaves the world running: it prints the environment that points jobs
// at it (and writes it to a file to eval), then waits for SIGINT or SIGTERM.
func (e *env) keepSandbox(ctx context.Context, own []string, dir string) error {
	e.section("sandbox: the world stays up until Ctrl-C; in another shell, eval these lines and run any cronkit command")
	var b strings.Builder
	for _, kv := range own {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(v))
	}
	envFile := filepath.Join(dir, "sandbox.env")
	if err := os.WriteFile(envFile, []byte(b.String()), 0o600); err != nil {
		return err
	}
	fmt.Fprint(e.stdout, b.String())
	fmt.Fprintf(e.stdout, "# the same lines: eval \"$(cat %s)\"\n", envFile)
	fmt.Fprintln(e.stdout, "# the fakes now keep real time: what you create is stamped now (reconcile judges it after --grace)")
	fmt.Fprintln(e.stdout, "sandbox ready")
	if f, ok := e.stdout.(interface{ Sync() error }); ok {
		_ = f.Sync()
	}
	<-ctx.Done()
	fmt.Fprintln(e.stdout, "sandbox: stopping the fakes")
	return nil
}

// shellQuote quotes v for a POSIX shell.
func shellQuote(v string) string {
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}
