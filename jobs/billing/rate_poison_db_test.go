package billing

import (
	"database/sql"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

// The poison-row cases: one usage row, whatever its values, must end up unrated
// with a problem while every other charge of its hour is rated and the watermark
// moves on.

// poisonWorld is two ordinary accounts and a third whose product "poison.x" has a
// price the test chooses.
func poisonWorld(t *testing.T, db *sql.DB, unitPrice string) {
	t.Helper()
	account(t, db, 1, "USD", "")
	account(t, db, 2, "EUR", "")
	account(t, db, 3, "USD", "")
	jan := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	price(t, db, "instance.small", "USD", "0.01500000", jan, nil)
	price(t, db, "instance.small", "EUR", "0.01400000", jan, nil)
	price(t, db, "poison.x", "USD", unitPrice, jan, nil)
}

// normalUsage is the ordinary usage of hour h, and the charges it must give.
func normalUsage(t *testing.T, db *sql.DB, h time.Time) map[string]charge {
	t.Helper()
	usage(t, db, 1, "vm-1", "instance.small", h, "1")
	usage(t, db, 1, "vm-2", "instance.small", h, "0.5")
	usage(t, db, 2, "vm-3", "instance.small", h, "2")
	return map[string]charge{
		key(1, "instance.small", h): {account: 1, product: "instance.small", hour: h, quantity: "1.500000", unit: "0.01500000",
			amount: "0.022500", currency: "USD", status: "rated"},
		key(2, "instance.small", h): {account: 2, product: "instance.small", hour: h, quantity: "2.000000", unit: "0.01400000",
			amount: "0.028000", currency: "EUR", status: "rated"},
	}
}

// The issue's case: 99999999999999 at 1000 made the hour's INSERT fail with "Out of
// range value" and stopped everyone's billing.
func TestRatePoisonRowIsUnratedWhileTheHourIsRated(t *testing.T) {
	db := newDB(t)
	poisonWorld(t, db.DB, "1000")
	want := normalUsage(t, db.DB, hr(1))
	usage(t, db.DB, 3, "x-1", "poison.x", hr(1), "99999999999999")
	// Two rows each in range whose total is not: the quantity itself cannot be stored.
	usage(t, db.DB, 3, "x-2", "instance.small", hr(1), "99999999999999")
	usage(t, db.DB, 3, "x-3", "instance.small", hr(1), "99999999999999")
	rep, err := (&Job{DB: db.DB, Now: at(hr(2).Add(20 * time.Minute))}).Rate(testCtx())
	if err != nil {
		t.Fatalf("rate: %v", err)
	}
	want[key(3, "poison.x", hr(1))] = charge{account: 3, product: "poison.x", hour: hr(1), quantity: "99999999999999.000000",
		currency: "USD", status: "unrated", problem: "amount_out_of_range"}
	want[key(3, "instance.small", hr(1))] = charge{account: 3, product: "instance.small", hour: hr(1),
		currency: "USD", status: "unrated", problem: "quantity_out_of_range"}
	compareCharges(t, loadCharges(t, db.DB), want)
	if wm := watermark(t, db.DB); wm != fmtHour(hr(1)) {
		t.Fatalf("watermark %s, want the poisoned hour rated", wm)
	}
	for _, p := range []struct{ kind, subject, detail string }{
		{"amount_out_of_range", "account 3 poison.x", "the amount is beyond USD 999999999999.999999; 1 hour unrated"},
		{"quantity_out_of_range", "account 3 instance.small", "the usage total is beyond 99999999999999.999999; 1 hour unrated"},
	} {
		if !strings.Contains(problems(rep), p.kind+"|"+p.subject+"|"+p.detail) {
			t.Errorf("problem %s %s not reported:\n%s", p.kind, p.subject, problems(rep))
		}
	}
	if got := rep.Counts["charges_rated"]; got != 2 {
		t.Errorf("charges_rated %d, want 2", got)
	}

	// The metering is corrected: the next run rates the keys (retry of unrated).
	execSQL(t, db.DB, `UPDATE usage_records SET quantity = 2 WHERE account_id = 3`)
	rep, err = (&Job{DB: db.DB, Now: at(hr(3).Add(20 * time.Minute))}).Rate(testCtx())
	if err != nil {
		t.Fatal(err)
	}
	got := loadCharges(t, db.DB)
	if c := got[key(3, "poison.x", hr(1))]; c.status != "rated" || c.amount != "2000.000000" {
		t.Errorf("corrected poison.x: %+v", c)
	}
	if c := got[key(3, "instance.small", hr(1))]; c.status != "rated" || c.amount != "0.060000" {
		t.Errorf("corrected instance.small: %+v", c)
	}
	if len(rep.Problems) != 0 {
		t.Errorf("problems after the fix:\n%s", problems(rep))
	}
}

// A poison row arriving late, for an hour already rated, goes through the late
// scan's set-based recompute instead: it must not stop that either.
func TestRateLatePoisonRowIsUnrated(t *testing.T) {
	db := newDB(t)
	poisonWorld(t, db.DB, "1000")
	want := normalUsage(t, db.DB, hr(1))
	j := &Job{DB: db.DB, Now: at(hr(2).Add(20 * time.Minute))}
	if _, err := j.Rate(testCtx()); err != nil {
		t.Fatal(err)
	}
	usage(t, db.DB, 3, "x-1", "poison.x", hr(1), "99999999999999")
	usage(t, db.DB, 1, "vm-late", "instance.small", hr(1), "1")
	j.Now = at(hr(3).Add(20 * time.Minute))
	rep, err := j.Rate(testCtx())
	if err != nil {
		t.Fatalf("rate: %v", err)
	}
	c := want[key(1, "instance.small", hr(1))]
	c.quantity, c.amount = "2.500000", "0.037500"
	want[key(1, "instance.small", hr(1))] = c
	want[key(3, "poison.x", hr(1))] = charge{account: 3, product: "poison.x", hour: hr(1), quantity: "99999999999999.000000",
		currency: "USD", status: "unrated", problem: "amount_out_of_range"}
	compareCharges(t, loadCharges(t, db.DB), want)
	if !hasProblem(rep, "amount_out_of_range", "account 3 poison.x") || rep.Counts["charges_rerated"] != 2 {
		t.Fatalf("counts %v, problems:\n%s", rep.Counts, problems(rep))
	}
}

// FuzzRateExtremeUsage puts two usage rows of one key, with any quantities
// DECIMAL(20,6) holds, at any price DECIMAL(20,8) holds, beside ordinary usage: once
// into a new hour and once late into a rated one. Rating must never fail; the key
// is rated to the exact amount or unrated with the right problem, and the ordinary
// charges are rated. `go test` runs the seeds (f.Add and testdata/fuzz); `go test
// -fuzz FuzzRateExtremeUsage -parallel 1` explores (against MariaDB, slowly).
func FuzzRateExtremeUsage(f *testing.F) {
	for _, s := range []struct {
		q1, f1, q2, f2 int64
		p, pf          int64
	}{
		{99999999999999, 0, 0, 0, 1000, 0},                     // the poison row
		{99999999999999, 999999, 99999999999999, 999999, 0, 1}, // total beyond DECIMAL(20,6)
		{1, 0, 1, 0, 999999999999, 99999999},                   // highest price
		{-99999999999999, 999999, 1, 0, 1000, 0},               // negative
		{999999999999, 999999, 0, 0, 1, 0},                     // amount just in range
		{999999999999, 999999, 0, 1, 1, 0},                     // and just beyond
		{5, 0, 5, 0, -3, 50000000},                             // a negative price
		{0, 1, 0, 0, 0, 50000000},                              // rounds half away from zero
	} {
		f.Add(s.q1, s.f1, s.q2, s.f2, s.p, s.pf)
	}
	db := mysqltest.New(f)
	f.Fuzz(func(t *testing.T, q1, f1, q2, f2, p, pf int64) {
		qty1, qty2 := fuzzDecimal(q1, f1, 14, 6), fuzzDecimal(q2, f2, 14, 6)
		unit := fuzzDecimal(p, pf, 12, 8)
		for _, table := range []string{"charges", "usage_records", "prices", "accounts", "billing_state"} {
			execSQL(t, db.DB, "DELETE FROM "+table)
		}
		poisonWorld(t, db.DB, unit)
		want := normalUsage(t, db.DB, hr(1))
		for k, c := range normalUsage(t, db.DB, hr(2)) {
			want[k] = c
		}
		j := &Job{DB: db.DB, Now: at(hr(2).Add(20 * time.Minute))} // rates hour 1
		if _, err := j.Rate(testCtx()); err != nil {
			t.Fatalf("rate: %v", err)
		}
		// Late into hour 1, new in hour 2.
		for _, h := range []time.Time{hr(1), hr(2)} {
			usage(t, db.DB, 3, "x-1", "poison.x", h, qty1)
			usage(t, db.DB, 3, "x-2", "poison.x", h, qty2)
			want[key(3, "poison.x", h)] = expectPoison(t, h, qty1, qty2, unit)
		}
		j.Now = at(hr(3).Add(20 * time.Minute))
		rep, err := j.Rate(testCtx())
		if err != nil {
			t.Fatalf("rate %s + %s at %s: %v", qty1, qty2, unit, err)
		}
		compareCharges(t, loadCharges(t, db.DB), want)
		if wm := watermark(t, db.DB); wm != fmtHour(hr(2)) {
			t.Fatalf("watermark %s", wm)
		}
		if w := want[key(3, "poison.x", hr(2))]; w.problem != "" && !hasProblem(rep, w.problem, "account 3 poison.x") {
			t.Fatalf("problem %s not reported:\n%s", w.problem, problems(rep))
		}
	})
}

// fuzzDecimal maps fuzz integers onto a decimal with at most intDigits integer and
// scale fractional digits, keeping the sign of whole (or of frac when whole is 0).
func fuzzDecimal(whole, frac int64, intDigits, scale int) string {
	neg := whole < 0 || (whole == 0 && frac < 0)
	w := new(big.Int).Abs(big.NewInt(whole))
	w.Mod(w, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(intDigits)), nil))
	fr := new(big.Int).Abs(big.NewInt(frac))
	fr.Mod(fr, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil))
	s := fmt.Sprintf("%d.%0*d", w, scale, fr)
	if neg && (w.Sign() != 0 || fr.Sign() != 0) {
		s = "-" + s
	}
	return s
}

// expectPoison computes, without SQL, the charge of a key with usage q1 + q2 at
// price unit: the problem the guards give, or the amount rounded half away from
// zero to 6 decimals.
func expectPoison(t *testing.T, h time.Time, q1, q2, unit string) charge {
	t.Helper()
	c := charge{account: 3, product: "poison.x", hour: h, currency: "USD", status: "unrated"}
	sum := new(big.Rat).Add(rat(t, q1), rat(t, q2))
	amount := new(big.Rat).Mul(sum, rat(t, unit))
	switch {
	case new(big.Rat).Abs(sum).Cmp(rat(t, maxQuantity)) > 0:
		c.problem = "quantity_out_of_range"
		return c
	case rat(t, q1).Sign() < 0 || rat(t, q2).Sign() < 0:
		c.problem = "negative_quantity"
	case new(big.Rat).Abs(rat(t, roundAway6(t, amount))).Cmp(rat(t, maxAmount)) > 0:
		c.problem = "amount_out_of_range"
	default:
		c.status, c.unit, c.amount = "rated", unit, roundAway6(t, amount)
	}
	c.quantity = roundAway6(t, sum)
	return c
}

// roundAway6 rounds half away from zero to 6 decimals, as MariaDB's ROUND does for
// DECIMAL, and formats as the database does.
func roundAway6(t *testing.T, r *big.Rat) string {
	t.Helper()
	s := round6(t, new(big.Rat).Abs(r))
	if r.Sign() < 0 && strings.Trim(s, "0.") != "" {
		s = "-" + s
	}
	return s
}
