package main

import (
	"strings"
	"testing"

	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

// The issue's poison row (99999999999999 at a unit price of 1000) made `cronkit
// billing rate` exit 1 on "Out of range value" every run, with no account rated
// after it. It must exit 3 with the problem reported, everyone else rated and the
// watermark moved, and the next run must go on.
func TestBillingRatePoisonRowExits3AndRatesTheRest(t *testing.T) {
	db := mysqltest.New(t)
	seedBilling(t, db.DB)
	if _, err := db.Exec(`INSERT INTO prices (product, currency, unit_price, valid_from) VALUES ('poison.x', 'USD', 1000, '2025-01-01')`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO usage_records (account_id, resource_id, product, hour, quantity)
VALUES (1, 'x-1', 'poison.x', '2025-03-01 05:00', 99999999999999)`); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"CRONKIT_DB_DSN": db.DSN, "CRONKIT_NOW": billingNow}
	code, out, errOut := jobs(t, env, "billing", "rate")
	if code != 3 || !strings.Contains(out, "amount_out_of_range") || !strings.Contains(out, "account 1 poison.x") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	var wm string
	if err := db.QueryRow(`SELECT DATE_FORMAT(hour_watermark, '%Y-%m-%dT%H:%i') FROM billing_state WHERE name = 'rating'`).Scan(&wm); err != nil || wm != "2025-03-02T23:00" {
		t.Fatalf("watermark %q: %v", wm, err)
	}
	var rated, unrated int
	if err := db.QueryRow(`SELECT SUM(status = 'rated'), SUM(status = 'unrated') FROM charges WHERE hour = '2025-03-01 05:00'`).Scan(&rated, &unrated); err != nil {
		t.Fatal(err)
	}
	if unrated != 1 || rated != 135 {
		t.Fatalf("hour of the poison row: %d rated, %d unrated; want 135 and 1", rated, unrated)
	}
	if code, out, errOut := jobs(t, env, "billing", "rate"); code != 3 || !strings.Contains(out, "amount_out_of_range") {
		t.Fatalf("second run: exit %d\n%s\n%s", code, out, errOut)
	}
}
