package billing

import (
	"database/sql"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// catchUpWorld is two weeks of usage of varying density (empty hours, busy hours)
// for accounts in two currencies, with price changes and an overlapping price row
// inside the span, so that multi-hour statements cross price boundaries.
func catchUpWorld(t *testing.T, db *sql.DB) (map[int64]string, []priceRow, []usageRow) {
	t.Helper()
	accounts := map[int64]string{}
	for id := int64(1); id <= 12; id++ {
		cur := "USD"
		if id%3 == 0 {
			cur = "EUR"
		}
		accounts[id] = cur
		account(t, db, id, cur, "")
	}
	jan := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	rise, cut, cutEnd := hr(50), hr(123), hr(130)
	prices := []priceRow{
		{"instance.small", "USD", "0.01500000", jan, &rise},
		{"instance.small", "USD", "0.01750000", rise, nil},
		{"instance.small", "USD", "0.01000000", cut, &cutEnd}, // a week-end discount over the rise: the later valid_from wins
		{"instance.small", "EUR", "0.01400000", jan, nil},
		{"volume.gb", "USD", "0.00013699", jan, nil},
		{"volume.gb", "EUR", "0.00012500", hr(200), nil}, // unpriced in EUR before hour 200
	}
	for _, p := range prices {
		price(t, db, p.product, p.currency, p.unit, p.from, p.to)
	}
	var use []usageRow
	for h := 0; h < 14*24; h++ {
		if h%24 >= 20 && h%7 != 0 { // some empty hours
			continue
		}
		for id := int64(1); id <= 12; id++ {
			if (int64(h)+id)%5 == 0 {
				continue
			}
			use = append(use, usageRow{id, fmt.Sprintf("vm-%d", id), "instance.small", hr(h), "1"})
			if h%4 == 0 {
				use = append(use, usageRow{id, fmt.Sprintf("vm-%db", id), "instance.small", hr(h), "0.5"})
			}
			use = append(use, usageRow{id, fmt.Sprintf("vol-%d", id), "volume.gb", hr(h), fmt.Sprintf("%d.%06d", 10+id, h)})
		}
	}
	// Batched: one row per statement takes seconds per world.
	for i := 0; i < len(use); i += 500 {
		batch := use[i:min(i+500, len(use))]
		q := `INSERT INTO usage_records (account_id, resource_id, product, hour, quantity) VALUES (?, ?, ?, ?, ?)` +
			strings.Repeat(`, (?, ?, ?, ?, ?)`, len(batch)-1)
		var args []any
		for _, u := range batch {
			args = append(args, u.account, u.resource, u.product, u.hour, u.qty)
		}
		execSQL(t, db, q, args...)
	}
	return accounts, prices, use
}

// A catch-up rates many hours per statement: the charges and the per-hour report
// must be exactly those of rating one hour at a time.
func TestRateCatchUpInChunksEqualsHourByHour(t *testing.T) {
	now := hr(14*24 + 5).Add(20 * time.Minute)
	type result struct {
		charges map[string]charge
		actions []string
		counts  map[string]int64
		wm      string
	}
	rate := func(chunkRows int) result {
		db := newDB(t)
		accounts, prices, use := catchUpWorld(t, db.DB)
		rep, err := (&Job{DB: db.DB, Now: at(now), rateChunkRows: chunkRows}).Rate(testCtx())
		if err != nil {
			t.Fatalf("chunk %d: %v", chunkRows, err)
		}
		got := loadCharges(t, db.DB)
		compareCharges(t, got, expectCharges(t, accounts, prices, use, floorHour(now.Add(-DefaultSettleDelay))))
		var acts []string
		for _, a := range rep.Actions {
			acts = append(acts, a.Kind+" "+a.Subject+": "+a.Detail)
		}
		return result{got, acts, rep.Counts, watermark(t, db.DB)}
	}
	hourly := rate(1)   // one hour per statement: what rating did before chunks
	chunked := rate(97) // a few hours per statement, boundaries anywhere
	whole := rate(0)    // the default: the whole fortnight in one statement
	for name, r := range map[string]result{"chunked": chunked, "whole": whole} {
		if !reflect.DeepEqual(r.actions, hourly.actions) {
			t.Errorf("%s report differs from hour by hour:\n%q\n%q", name, r.actions, hourly.actions)
		}
		if !reflect.DeepEqual(r.counts, hourly.counts) || r.wm != hourly.wm {
			t.Errorf("%s counts %v watermark %s, hour by hour %v %s", name, r.counts, r.wm, hourly.counts, hourly.wm)
		}
		if len(r.charges) != len(hourly.charges) {
			t.Errorf("%s: %d charges, hour by hour %d", name, len(r.charges), len(hourly.charges))
		}
	}
	if hourly.counts["hours_rated"] < 250 {
		t.Fatalf("the world is too small to mean anything: %v", hourly.counts)
	}
}

// Rating hours again (ops moved the watermark back) updates the charges in place:
// the per-hour report reads them as the existing charges, not the new ones, and
// must say what the first rating said.
func TestRateAgainReportsTheChargesItUpdated(t *testing.T) {
	now := hr(14*24 + 5).Add(20 * time.Minute)
	db := newDB(t)
	catchUpWorld(t, db.DB)
	job := &Job{DB: db.DB, Now: at(now), rateChunkRows: 97}
	rated := func() []string {
		rep, err := job.Rate(testCtx())
		if err != nil {
			t.Fatal(err)
		}
		var acts []string
		for _, a := range rep.Actions {
			if a.Kind == "rate" {
				acts = append(acts, a.Subject+": "+a.Detail)
			}
		}
		return acts
	}
	first := rated()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM charges`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	execSQL(t, db.DB, `UPDATE billing_state SET hour_watermark = NULL WHERE name = 'rating'`)
	again := rated()
	if len(first) < 250 || !reflect.DeepEqual(again, first) {
		t.Fatalf("rated again (%d hours):\n%q\nfirst (%d hours):\n%q", len(again), again, len(first), first)
	}
	var m int
	if err := db.QueryRow(`SELECT COUNT(*) FROM charges`).Scan(&m); err != nil || m != n {
		t.Fatalf("%d charges after rating again, %d before: %v", m, n, err)
	}
}
