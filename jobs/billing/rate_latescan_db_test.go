package billing

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/cronkit/cronkit/lib/mysql"
)

// The late-usage scan's mark: a run must never skip a row that a transaction in
// flight commits after the scan, and a run right after a bulk load must not read
// the load again.

func lateScanMark(t *testing.T, db *sql.DB) time.Time {
	t.Helper()
	st, err := loadRatingState(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	if !st.lateScanFrom.Valid {
		t.Fatal("no late scan mark recorded")
	}
	return st.lateScanFrom.Time
}

func dbNow(t *testing.T, db *sql.DB) time.Time {
	t.Helper()
	var now time.Time
	if err := db.QueryRow(`SELECT NOW(6)`).Scan(&now); err != nil {
		t.Fatal(err)
	}
	return now
}

func recordedAtOf(t *testing.T, db *sql.DB, resource string) time.Time {
	t.Helper()
	var at time.Time
	if err := db.QueryRow(`SELECT recorded_at FROM usage_records WHERE resource_id = ?`, resource).Scan(&at); err != nil {
		t.Fatal(err)
	}
	return at
}

// oneRatedHour is account 1's usage of hour 1, rated; it returns the job.
func oneRatedHour(t *testing.T, db *sql.DB) *Job {
	t.Helper()
	account(t, db, 1, "USD", "")
	price(t, db, "instance.small", "USD", "0.01000000", t0.AddDate(-1, 0, 0), nil)
	usage(t, db, 1, "vm-1", "instance.small", hr(1), "1")
	j := &Job{DB: db, Now: at(hr(2).Add(20 * time.Minute))}
	if _, err := j.Rate(testCtx()); err != nil {
		t.Fatal(err)
	}
	return j
}

func TestRateLateScanMarkWaitsForATransactionInFlight(t *testing.T) {
	db := newDB(t)
	j := oneRatedHour(t, db.DB)

	// A metering transaction stamps a late row and has not committed when the next
	// run scans: that run cannot see the row, and its mark must stay below it.
	tx, err := db.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.Exec(`INSERT INTO usage_records (account_id, resource_id, product, hour, quantity) VALUES (1, 'vm-late', 'instance.small', ?, 2)`, hr(1)); err != nil {
		t.Fatal(err)
	}
	var stamped time.Time
	if err := tx.QueryRow(`SELECT recorded_at FROM usage_records WHERE resource_id = 'vm-late'`).Scan(&stamped); err != nil {
		t.Fatal(err)
	}
	// Long enough that only the transaction, not the slack, can hold the mark back.
	time.Sleep(horizonSlack + 500*time.Millisecond)
	scanned := dbNow(t, db.DB)
	j.Now = at(hr(3).Add(20 * time.Minute))
	rep, err := j.Rate(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Counts["charges_rerated"] != 0 {
		t.Fatalf("saw an uncommitted row: %+v", rep.Actions)
	}
	if !stamped.Before(scanned) {
		t.Fatalf("the row (%s) must be stamped before the scan (%s) for this test to mean anything", stamped, scanned)
	}
	if mark := lateScanMark(t, db.DB); mark.After(stamped) {
		t.Fatalf("mark %s is past the row in flight stamped %s: the next scan would skip it", mark, stamped)
	}

	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	rep, err = j.Rate(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	if c := loadCharges(t, db.DB)[key(1, "instance.small", hr(1))]; c.quantity != "3.000000" || rep.Counts["charges_rerated"] != 1 {
		t.Fatalf("late row committed after the scan was not re-rated: %+v, counts %v", c, rep.Counts)
	}
}

// Rating reads only committed usage: a metering transaction in flight on the hour
// being rated neither stops it nor is lost (the next run's late scan takes it).
func TestRateDoesNotWaitForMeteringInFlight(t *testing.T) {
	db := newDB(t)
	account(t, db.DB, 1, "USD", "")
	price(t, db.DB, "instance.small", "USD", "0.01000000", t0.AddDate(-1, 0, 0), nil)
	usage(t, db.DB, 1, "vm-1", "instance.small", hr(1), "1")
	usage(t, db.DB, 1, "vm-1", "instance.small", hr(2), "1")
	tx, err := db.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.Exec(`INSERT INTO usage_records (account_id, resource_id, product, hour, quantity) VALUES (1, 'vm-2', 'instance.small', ?, 2)`, hr(2)); err != nil {
		t.Fatal(err)
	}
	j := &Job{DB: db.DB, Now: at(hr(3).Add(20 * time.Minute))}
	ctx, cancel := context.WithTimeout(testCtx(), 20*time.Second) // a lock wait would take 50 s
	defer cancel()
	if _, err := j.Rate(ctx); err != nil {
		t.Fatalf("rating waited for the metering transaction: %v", err)
	}
	if c := loadCharges(t, db.DB)[key(1, "instance.small", hr(2))]; c.quantity != "1.000000" {
		t.Fatalf("hour 2 rated from uncommitted usage: %+v", c)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Rate(testCtx()); err != nil {
		t.Fatal(err)
	}
	if c := loadCharges(t, db.DB)[key(1, "instance.small", hr(2))]; c.quantity != "3.000000" {
		t.Fatalf("the usage committed after rating was lost: %+v", c)
	}
}

// InnoDB refreshes INNODB_TRX only when nobody has read it for 0.1 s: a monitor
// polling it faster freezes it, and a transaction begun since is missing. The scan
// must notice (its own transaction is missing too) rather than skip the row.
func TestRateLateScanMarkSurvivesAFrozenINNODBTRX(t *testing.T) {
	db := newDB(t)
	j := oneRatedHour(t, db.DB)
	stop := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				var n int
				_ = db.QueryRow(`SELECT COUNT(*) FROM information_schema.INNODB_TRX`).Scan(&n)
			}
		}
	}()
	defer func() { close(stop); <-polled }()
	time.Sleep(100 * time.Millisecond)

	tx, err := db.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.Exec(`INSERT INTO usage_records (account_id, resource_id, product, hour, quantity) VALUES (1, 'vm-late', 'instance.small', ?, 2)`, hr(1)); err != nil {
		t.Fatal(err)
	}
	var stamped time.Time
	if err := tx.QueryRow(`SELECT recorded_at FROM usage_records WHERE resource_id = 'vm-late'`).Scan(&stamped); err != nil {
		t.Fatal(err)
	}
	time.Sleep(horizonSlack + 500*time.Millisecond)
	j.Now = at(hr(3).Add(20 * time.Minute))
	rep, err := j.Rate(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	if mark := lateScanMark(t, db.DB); mark.After(stamped) {
		t.Fatalf("mark %s is past the row in flight stamped %s", mark, stamped)
	}
	if !strings.Contains(fmt.Sprint(rep.Actions), "INNODB_TRX was not refreshed") {
		t.Fatalf("the frozen INNODB_TRX was not reported: %+v", rep.Actions)
	}
}

// A statement stamped before the scan but still waiting for a metadata lock has
// no InnoDB transaction yet: only its age in PROCESSLIST holds the mark back.
func TestRateLateScanMarkWaitsForAStatementNotYetInInnoDB(t *testing.T) {
	db := newDB(t)
	j := oneRatedHour(t, db.DB)
	ctx := context.Background()
	lock, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := lock.ExecContext(ctx, `LOCK TABLES usage_records READ`); err != nil {
		t.Fatal(err)
	}
	inserted := make(chan error, 1)
	go func() {
		_, err := db.Exec(`INSERT INTO usage_records (account_id, resource_id, product, hour, quantity) VALUES (1, 'vm-late', 'instance.small', ?, 2)`, hr(1))
		inserted <- err
	}()
	for i := 0; ; i++ {
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM information_schema.PROCESSLIST
WHERE DB = DATABASE() AND STATE = 'Waiting for table metadata lock' AND INFO LIKE 'INSERT INTO usage_records%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if i == 200 {
			t.Fatal("the INSERT never waited for the metadata lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(horizonSlack + 500*time.Millisecond) // only the statement can hold the mark back
	scanned := dbNow(t, db.DB)
	j.Now = at(hr(3).Add(20 * time.Minute))
	if _, err := j.Rate(testCtx()); err != nil {
		t.Fatal(err)
	}
	mark := lateScanMark(t, db.DB)
	if _, err := lock.ExecContext(ctx, `UNLOCK TABLES`); err != nil {
		t.Fatal(err)
	}
	if err := <-inserted; err != nil {
		t.Fatal(err)
	}
	stamped := recordedAtOf(t, db.DB, "vm-late")
	if !stamped.Before(scanned) {
		t.Fatalf("the row (%s) must be stamped before the scan (%s) for this test to mean anything", stamped, scanned)
	}
	if mark.After(stamped) {
		t.Fatalf("mark %s is past the waiting statement's row stamped %s", mark, stamped)
	}
	rep, err := j.Rate(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	if c := loadCharges(t, db.DB)[key(1, "instance.small", hr(1))]; c.quantity != "3.000000" || rep.Counts["charges_rerated"] != 1 {
		t.Fatalf("late row was not re-rated: %+v, counts %v", c, rep.Counts)
	}
}

// A bulk load into rated hours is re-rated by the next run, in one pass; the run
// after that reads nothing of it.
func TestRateBulkLoadThenIdleRun(t *testing.T) {
	db := newDB(t)
	const accounts, hours = 40, 30
	execSQL(t, db.DB, `INSERT INTO accounts (id, email, currency, created_at)
SELECT seq, CONCAT('a', seq, '@example.com'), IF(seq MOD 2 = 0, 'EUR', 'USD'), '2025-01-01' FROM seq_1_to_40`)
	jan := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, p := range []priceRow{
		{"instance.small", "USD", "0.01500000", jan, nil}, {"instance.small", "EUR", "0.01400000", jan, nil},
		{"volume.gb", "USD", "0.00013699", jan, nil}, {"volume.gb", "EUR", "0.00012500", jan, nil},
	} {
		price(t, db.DB, p.product, p.currency, p.unit, p.from, p.to)
	}
	execSQL(t, db.DB, `INSERT INTO usage_records (account_id, resource_id, product, hour, quantity)
SELECT a.seq, CONCAT('vm-', a.seq), 'instance.small', ? + INTERVAL h.seq HOUR, 1 FROM seq_1_to_40 a JOIN seq_0_to_29 h
UNION ALL SELECT a.seq, CONCAT('vol-', a.seq), 'volume.gb', ? + INTERVAL h.seq HOUR, 10 + a.seq FROM seq_1_to_40 a JOIN seq_0_to_29 h`, t0, t0)
	j := &Job{DB: db.DB, Now: at(hr(hours).Add(20 * time.Minute))}
	if _, err := j.Rate(testCtx()); err != nil {
		t.Fatal(err)
	}

	// The load: a second resource for every key of every rated hour.
	execSQL(t, db.DB, `INSERT INTO usage_records (account_id, resource_id, product, hour, quantity)
SELECT a.seq, CONCAT('vm2-', a.seq), 'instance.small', ? + INTERVAL h.seq HOUR, 2 FROM seq_1_to_40 a JOIN seq_0_to_29 h
UNION ALL SELECT a.seq, CONCAT('vol2-', a.seq), 'volume.gb', ? + INTERVAL h.seq HOUR, 5 FROM seq_1_to_40 a JOIN seq_0_to_29 h`, t0, t0)
	var loaded time.Time
	if err := db.QueryRow(`SELECT MAX(recorded_at) FROM usage_records`).Scan(&loaded); err != nil {
		t.Fatal(err)
	}
	rep, err := j.Rate(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Counts["charges_rerated"]; got != accounts*hours*2 {
		t.Fatalf("charges_rerated %d, want every key: %d", got, accounts*hours*2)
	}
	listed, more := 0, ""
	for _, a := range rep.Actions {
		if a.Kind == "rerate" && a.Subject == "more keys" {
			more = a.Detail
		} else if a.Kind == "rerate" {
			listed++
		}
	}
	if listed != reportCap || more != fmt.Sprintf("%d more re-rated keys not listed", accounts*hours*2-reportCap) {
		t.Fatalf("listed %d keys, then %q", listed, more)
	}
	got := loadCharges(t, db.DB)
	if c := got[key(2, "volume.gb", hr(7))]; c.quantity != "17.000000" || c.amount != "0.002125" {
		t.Errorf("volume of account 2 after the load: %+v", c)
	}
	if c := got[key(1, "instance.small", hr(29))]; c.quantity != "3.000000" || c.amount != "0.045000" {
		t.Errorf("instance of account 1 after the load: %+v", c)
	}

	// The next run must not read the load again. Work in flight elsewhere on the
	// server (other tests) may hold a mark back for a moment; then a later run
	// passes it.
	for i := 0; lateScanMark(t, db.DB).Before(loaded); i++ {
		if i == 20 {
			t.Fatalf("the mark %s never passed the load recorded at %s", lateScanMark(t, db.DB), loaded)
		}
		time.Sleep(100 * time.Millisecond)
		if _, err := j.Rate(testCtx()); err != nil {
			t.Fatal(err)
		}
	}
	var left int
	if err := db.QueryRow(`SELECT COUNT(*) FROM usage_records WHERE recorded_at >= ?`, lateScanMark(t, db.DB)).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("the next scan would read %d rows again", left)
	}
	rep, err = j.Rate(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Counts["charges_rerated"] != 0 || rep.Counts["hours_rated"] != 0 || !reflect.DeepEqual(got, loadCharges(t, db.DB)) {
		t.Fatalf("idle run did work: %v", rep.Counts)
	}
}

// Without the PROCESS privilege the database will not show what is in flight: the
// scan falls back to the old margin and says so.
func TestRateLateScanWithoutProcessPrivilegeFallsBackToTheMargin(t *testing.T) {
	db := newDB(t)
	oneRatedHour(t, db.DB)
	cfg, err := gomysql.ParseDSN(db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	user := "np_" + db.Name[len(db.Name)-8:] // the database's random suffix
	for _, q := range []string{
		"CREATE USER '" + user + "'@'127.0.0.1' IDENTIFIED BY 'pw-" + user + "'",
		"GRANT ALL PRIVILEGES ON `" + db.Name + "`.* TO '" + user + "'@'127.0.0.1'",
	} {
		execSQL(t, db.DB, q)
	}
	t.Cleanup(func() { _, _ = db.Exec("DROP USER '" + user + "'@'127.0.0.1'") })
	cfg.User, cfg.Passwd = user, "pw-"+user
	pool, err := mysql.Open(context.Background(), cfg.FormatDSN(), mysql.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	before := dbNow(t, db.DB)
	rep, err := (&Job{DB: pool, Now: at(hr(3).Add(20 * time.Minute))}).Rate(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range rep.Actions {
		found = found || (a.Kind == "late_scan" && a.Subject == "margin" && strings.Contains(a.Detail, "no PROCESS privilege"))
	}
	if !found {
		t.Fatalf("fallback not reported: %+v", rep.Actions)
	}
	after := dbNow(t, db.DB)
	if mark := lateScanMark(t, db.DB); mark.Before(before.Add(-lateMargin)) || mark.After(after.Add(-lateMargin)) {
		t.Fatalf("mark %s, want 10 minutes before the run, between %s and %s", mark, before.Add(-lateMargin), after.Add(-lateMargin))
	}
}
