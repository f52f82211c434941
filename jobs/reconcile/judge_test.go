package reconcile

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The payments decisions as pure functions of one invoice's objects, at fixed
// instants in UTC.

var (
	jFrom = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	jEnv  = judgeEnv{From: jFrom, To: jFrom.AddDate(0, 0, 1), Cutoff: jFrom.Add(26 * time.Hour), Now: jFrom.Add(27 * time.Hour),
		Grace: time.Hour, ReplayWindow: BillingReplayWindow}
)

func openInvoice(total int64) *invoiceRow {
	return &invoiceRow{ID: 7, Account: 42, Currency: "EUR", Total: total, Status: "open", Attempts: 1, Collection: "pending"}
}

func pi(id string, attempt int, amount int64, status string, h float64) remote {
	r := remote{Invoice: 7, Kind: kindIntent, Attempt: attempt, ID: id, Intent: id, Amount: amount, Currency: "EUR", Status: status,
		Created: jFrom.Add(time.Duration(h * float64(time.Hour))), InWindow: true}
	if status == "succeeded" {
		r.Received = amount
	}
	return r
}

func pay(id int64, attempt int, amount int64, status, pi string, h float64) localPayment {
	return localPayment{ID: id, Invoice: 7, Account: 42, Attempt: attempt, Amount: amount, Currency: "EUR", Status: status, PI: pi,
		Created: jFrom.Add(time.Duration(h * float64(time.Hour)))}
}

// summary is "class fixable/plan" per finding, sorted.
func summary(v *verdict) string {
	var out []string
	fixes := map[string]fix{}
	for _, f := range v.fixes {
		fixes[f.fingerprint] = f
	}
	for _, f := range v.findings {
		s := f.Class
		if fx, ok := fixes[f.Fingerprint]; ok {
			s += " fix: " + fx.plan()
		} else if i := strings.Index(f.Detail, "for a person: "); i >= 0 {
			s += " person: " + f.Detail[i+len("for a person: "):]
		}
		out = append(out, s)
	}
	return strings.Join(out, "\n")
}

func TestJudge(t *testing.T) {
	for _, tc := range []struct {
		name string
		g    group
		want string
	}{
		{"paid and recorded", group{inv: &invoiceRow{ID: 7, Currency: "EUR", Total: 500, Paid: 500, Status: "paid", Attempts: 1},
			intents: []remote{pi("pi_1", 1, 500, "succeeded", 3)}, local: []localPayment{pay(1, 1, 500, "succeeded", "pi_1", 3)}}, ""},
		{"lost answer", group{inv: openInvoice(500), intents: []remote{pi("pi_1", 1, 500, "succeeded", 3)},
			local: []localPayment{pay(1, 1, 500, "pending", "", 3)}},
			"paid_not_recorded fix: record pi_1 (EUR 5.00) as the payment of invoice 7 and mark it paid"},
		{"partial amount is for a person", group{inv: openInvoice(900), intents: []remote{pi("pi_1", 1, 500, "succeeded", 3)},
			local: []localPayment{pay(1, 1, 900, "pending", "", 3)}},
			"paid_not_recorded person: Stripe took EUR 5.00 of EUR 9.00 due"},
		{"void invoice is for a person", group{inv: &invoiceRow{ID: 7, Currency: "EUR", Total: 500, Status: "void", Attempts: 1},
			intents: []remote{pi("pi_1", 1, 500, "succeeded", 3)}, local: []localPayment{pay(1, 1, 500, "soft_declined", "pi_1", 3)}},
			"paid_not_recorded person: the invoice is void"},
		{"attempt taken by another intent", group{inv: openInvoice(500),
			intents: []remote{pi("pi_2", 1, 500, "succeeded", 3), pi("pi_1", 1, 500, "requires_payment_method", 2)},
			local:   []localPayment{pay(1, 1, 500, "soft_declined", "pi_1", 2)}},
			"paid_not_recorded person: attempt 1 is recorded here with another PaymentIntent"},
		{"in flight: nothing yet", group{inv: openInvoice(500), intents: []remote{pi("pi_1", 1, 500, "processing", 3)},
			local: []localPayment{pay(1, 1, 500, "pending", "pi_1", 3)}}, ""},
		{"declined, answer lost", group{inv: openInvoice(500), intents: []remote{func() remote {
			r := pi("pi_1", 1, 500, "requires_payment_method", 3)
			r.Code, r.ErrorCode = "lost_card", "card_declined"
			return r
		}()}, local: []localPayment{pay(1, 1, 500, "pending", "", 3)}},
			"payment_unsettled fix: settle attempt 1 of invoice 7 as hard_declined (lost_card)"},
		{"never reached Stripe, billing may still replay", group{inv: openInvoice(500), marked: true,
			local: []localPayment{pay(1, 1, 500, "pending", "", 3)}}, ""},
		{"never reached Stripe, past billing's replays", group{inv: openInvoice(500), marked: true,
			local: []localPayment{pay(1, 1, 500, "pending", "", -1)}},
			"payment_unsettled fix: settle attempt 1 of invoice 7 as failed (not_at_provider)"},
		{"recorded, never at Stripe", group{inv: openInvoice(500), missing: map[string]bool{"pi_gone": true},
			local: []localPayment{pay(1, 1, 500, "succeeded", "pi_gone", 3)}}, "recorded_not_paid"},
		{"duplicate refunded in full is none", group{inv: &invoiceRow{ID: 7, Currency: "EUR", Total: 500, Paid: 500, Status: "paid", Attempts: 2},
			intents:  []remote{pi("pi_1", 1, 500, "succeeded", 3), pi("pi_2", 2, 500, "succeeded", 4)},
			local:    []localPayment{pay(1, 1, 500, "succeeded", "pi_1", 3), pay(2, 2, 500, "succeeded", "pi_2", 4)},
			refunded: map[string]int64{"pi_2": 500}}, ""},
		{"duplicate kept", group{inv: &invoiceRow{ID: 7, Currency: "EUR", Total: 500, Paid: 500, Status: "paid", Attempts: 2},
			intents:  []remote{pi("pi_1", 1, 500, "succeeded", 3), pi("pi_2", 2, 500, "succeeded", 4)},
			local:    []localPayment{pay(1, 1, 500, "succeeded", "pi_1", 3), pay(2, 2, 500, "succeeded", "pi_2", 4)},
			refunded: map[string]int64{"pi_2": 200}}, "duplicate_charge"},
		{"failed refund gave nothing back", group{inv: openInvoice(500),
			refunds: []remote{{Invoice: 7, Kind: kindRefund, ID: "re_1", Intent: "pi_1", Amount: 100, Currency: "EUR", Status: "failed", InWindow: true}}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := tc.g
			g.invoice = 7
			v := newVerdict()
			judge(&g, jEnv, v)
			if got := summary(v); got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

// The window's totals count Stripe's in-window objects and what records them here,
// never an intent fetched from outside the window.
func TestJudgeTotals(t *testing.T) {
	old := pi("pi_old", 1, 300, "succeeded", -100)
	old.InWindow = false
	g := group{invoice: 7, inv: &invoiceRow{ID: 7, Currency: "EUR", Total: 800, Paid: 800, Status: "paid", Attempts: 2},
		intents: []remote{old, pi("pi_new", 2, 500, "succeeded", 5)},
		local:   []localPayment{pay(1, 1, 300, "succeeded", "pi_old", -100), pay(2, 2, 500, "succeeded", "pi_new", 5)},
		refunds: []remote{{Invoice: 7, Kind: kindRefund, ID: "re_1", Intent: "pi_old", Amount: 100, Currency: "EUR", Status: "succeeded",
			Created: jFrom.Add(6 * time.Hour), InWindow: true}},
		localRefunds: []localRefund{{ID: "re_1", PI: "pi_old", Invoice: 7, Amount: 100, Currency: "EUR", Status: "succeeded"}},
		refunded:     map[string]int64{}}
	v := newVerdict()
	judge(&g, jEnv, v)
	if got := fmt.Sprint(v.stripe, v.local); got != "map[EUR:400] map[EUR:400]" {
		t.Errorf("totals %s, want 5.00 - 1.00 on both sides", got)
	}
	if got := summary(v); got != "duplicate_charge" {
		t.Errorf("findings: %s", got)
	}
}

func TestDecimal(t *testing.T) {
	for _, tc := range []struct {
		minor    int64
		currency string
		want     string
	}{{1234, "EUR", "12.34"}, {-5, "usd", "-0.05"}, {0, "EUR", "0.00"}, {1200, "JPY", "1200"}, {1234, "KWD", "1.234"},
		{-9223372036854775808, "EUR", "-92233720368547758.08"}} {
		if got := decimal(tc.minor, tc.currency); got != tc.want {
			t.Errorf("decimal(%d, %s) = %s, want %s", tc.minor, tc.currency, got, tc.want)
		}
	}
}

func TestDefaultWindowIsThePreviousUTCDay(t *testing.T) {
	paris := time.FixedZone("CET", 3600)
	w := DefaultWindow(time.Date(2026, 3, 3, 0, 30, 0, 0, paris)) // 23:30 UTC on the 2nd
	if !w.From.Equal(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)) || !w.To.Equal(time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("window %v .. %v", w.From, w.To)
	}
}
