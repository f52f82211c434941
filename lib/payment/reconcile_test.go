package payment_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/payment"
	"github.com/cronkit/cronkit/lib/payment/fakestripe"
)

// The reads reconciliation makes: one PaymentIntent, a search by metadata, refunds
// and disputes in a window with their PaymentIntents' metadata.

func collect[T any](t *testing.T, seq func(func(T, error) bool)) []T {
	t.Helper()
	var out []T
	for v, err := range seq {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func TestGetPaymentIntent(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	ctx := context.Background()
	cus := e.customer(t, "pm_card_chargeDeclinedInsufficientFunds")
	res, err := c.Charge(ctx, chargeReq(cus, "invoice-42-attempt-1"))
	if err != nil {
		t.Fatal(err)
	}
	pi, err := c.GetPaymentIntent(ctx, res.PaymentIntentID)
	if err != nil {
		t.Fatal(err)
	}
	if pi.ID != res.PaymentIntentID || pi.Status != "requires_payment_method" || pi.AmountReceived != 0 ||
		pi.DeclineCode != "insufficient_funds" || pi.ErrorCode != "card_declined" || pi.Metadata["invoice_id"] != "42" {
		t.Errorf("GetPaymentIntent = %+v", pi)
	}
	if _, err := c.GetPaymentIntent(ctx, "pi_missing"); !errors.Is(err, payment.ErrNotFound) {
		t.Errorf("missing intent: %v, want ErrNotFound", err)
	}
}

func TestSearchPaymentIntentsByMetadata(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	ctx := context.Background()
	// 130 attempts of invoice 7 (more than a page of 100), one of invoice 8, and a
	// value with a quote in it.
	for i := range 130 {
		if _, err := e.fake.AddPaymentIntent(fakestripe.PaymentIntent{Amount: 500, Currency: "eur",
			Metadata: map[string]string{"invoice_id": "7", "attempt": fmt.Sprint(i + 1)}}); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(time.Second)
	}
	only, _ := e.fake.AddPaymentIntent(fakestripe.PaymentIntent{Amount: 500, Currency: "eur",
		Metadata: map[string]string{"invoice_id": "8", "attempt": "1"}})
	quoted, _ := e.fake.AddPaymentIntent(fakestripe.PaymentIntent{Amount: 500, Currency: "eur",
		Metadata: map[string]string{"note": `it's \ odd`}})

	if got := collect(t, c.SearchPaymentIntents(ctx, map[string]string{"invoice_id": "7"})); len(got) != 130 ||
		got[0].Metadata["attempt"] != "130" || got[129].Metadata["attempt"] != "1" {
		t.Errorf("invoice 7: %d intents, want 130 newest first", len(got))
	}
	got := collect(t, c.SearchPaymentIntents(ctx, map[string]string{"invoice_id": "8", "attempt": "1"}))
	if len(got) != 1 || got[0].ID != only {
		t.Errorf("invoice 8 attempt 1: %+v", got)
	}
	if got := collect(t, c.SearchPaymentIntents(ctx, map[string]string{"invoice_id": "8", "attempt": "2"})); len(got) != 0 {
		t.Errorf("invoice 8 attempt 2: %+v, want none", got)
	}
	if got := collect(t, c.SearchPaymentIntents(ctx, map[string]string{"note": `it's \ odd`})); len(got) != 1 || got[0].ID != quoted {
		t.Errorf("quoted value: %+v", got)
	}
	for _, err := range c.SearchPaymentIntents(ctx, nil) {
		if !errors.Is(err, payment.ErrInvalidRequest) {
			t.Errorf("empty metadata: %v, want ErrInvalidRequest", err)
		}
	}
	if q := payment.MetadataQuery(map[string]string{"invoice_id": "42", "attempt": "1"}); q != `metadata['attempt']:'1' AND metadata['invoice_id']:'42'` {
		t.Errorf("query = %s", q)
	}

	// Stripe's index lags its writes: a fresh attempt is not found yet.
	e.fake.SearchLag = time.Minute
	fresh, _ := e.fake.AddPaymentIntent(fakestripe.PaymentIntent{Amount: 500, Currency: "eur",
		Metadata: map[string]string{"invoice_id": "9", "attempt": "1"}})
	if got := collect(t, c.SearchPaymentIntents(ctx, map[string]string{"invoice_id": "9"})); len(got) != 0 {
		t.Errorf("found %+v before the index caught up", got)
	}
	e.clock.Advance(time.Minute + time.Second)
	if got := collect(t, c.SearchPaymentIntents(ctx, map[string]string{"invoice_id": "9"})); len(got) != 1 || got[0].ID != fresh {
		t.Errorf("after the lag: %+v", got)
	}
}

func TestListRefundsAndDisputesInAWindow(t *testing.T) {
	e := newEnv(t)
	ct := &refundTransport{}
	c := e.client(func(cfg *payment.Config) { cfg.HTTPClient = &http.Client{Transport: ct, Timeout: 5 * time.Second} })
	ctx := context.Background()
	cus := e.customer(t, "pm_card_visa")

	// 120 paid invoices, one a minute; each refunded in part an hour after.
	var intents []string
	for i := range 120 {
		req := chargeReq(cus, fmt.Sprintf("invoice-%d-attempt-1", i))
		req.Metadata = map[string]string{"invoice_id": fmt.Sprint(i), "attempt": "1"}
		res, err := c.Charge(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		intents = append(intents, res.PaymentIntentID)
		e.clock.Advance(time.Minute)
	}
	refundsFrom := e.clock.Now()
	var refunds []string // oldest first
	for i, pi := range intents {
		id, err := e.fake.AddRefund(fakestripe.Refund{PaymentIntent: pi, Amount: int64(100 + i), Reason: "requested_by_customer"})
		if err != nil {
			t.Fatal(err)
		}
		refunds = append(refunds, id)
		e.clock.Advance(time.Minute)
	}

	// Refunds 10..109 by their own creation time, not their intents'.
	from, to := refundsFrom.Add(10*time.Minute), refundsFrom.Add(110*time.Minute)
	got := collect(t, c.ListRefunds(ctx, payment.RefundListParams{CreatedFrom: from, CreatedTo: to}))
	if len(got) != 100 || got[0].ID != refunds[109] || got[99].ID != refunds[10] {
		t.Fatalf("refunds in window: %d, want 100 newest first", len(got))
	}
	r := got[0]
	if r.PaymentIntent != intents[109] || r.AmountMinor != 209 || r.Currency != "eur" || r.Status != "succeeded" ||
		r.Reason != "requested_by_customer" || r.IntentMetadata["invoice_id"] != "109" || !strings.HasPrefix(r.Charge, "ch_") ||
		!r.Created.Equal(refundsFrom.Add(109*time.Minute)) {
		t.Errorf("refund = %+v", r)
	}
	q := ct.first("/v1/refunds")
	if q.Get("expand[0]") != "data.payment_intent" || q.Get("created[gte]") != fmt.Sprint(from.Unix()) || q.Get("created[lt]") != fmt.Sprint(to.Unix()) {
		t.Errorf("refund list sent %v", q)
	}
	if got := collect(t, c.ListRefunds(ctx, payment.RefundListParams{PaymentIntent: intents[3]})); len(got) != 1 || got[0].ID != refunds[3] {
		t.Errorf("refunds of one intent: %+v", got)
	}

	// A dispute raised by Stripe's test card, and one seeded and lost.
	dcus := e.customer(t, "pm_card_createDispute")
	req := chargeReq(dcus, "invoice-500-attempt-1")
	req.Metadata = map[string]string{"invoice_id": "500", "attempt": "1"}
	res, err := c.Charge(ctx, req)
	if err != nil || res.Outcome != payment.OutcomeSucceeded {
		t.Fatalf("charge with pm_card_createDispute: %+v, %v", res, err)
	}
	disputedAt := e.clock.Now()
	e.clock.Advance(time.Hour)
	lost, err := e.fake.AddDispute(fakestripe.Dispute{PaymentIntent: intents[0], Status: "lost", Reason: "product_not_received"})
	if err != nil {
		t.Fatal(err)
	}
	ds := collect(t, c.ListDisputes(ctx, payment.RefundListParams{CreatedFrom: disputedAt}))
	if len(ds) != 2 || ds[0].ID != lost || ds[0].Status != "lost" || !ds[0].EvidenceDueBy.IsZero() || ds[0].AmountMinor != 1999 {
		t.Fatalf("disputes = %+v", ds)
	}
	d := ds[1]
	if d.PaymentIntent != res.PaymentIntentID || d.Status != "needs_response" || d.Reason != "fraudulent" ||
		d.IntentMetadata["invoice_id"] != "500" || !d.EvidenceDueBy.Equal(disputedAt.Add(7*24*time.Hour)) {
		t.Errorf("dispute = %+v", d)
	}
	if got := collect(t, c.ListDisputes(ctx, payment.RefundListParams{PaymentIntent: intents[0]})); len(got) != 1 || got[0].ID != lost {
		t.Errorf("disputes of one intent: %+v", got)
	}
}

// refundTransport records the queries of list requests.
type refundTransport struct{ queries map[string][]url.Values }

func (rt *refundTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet {
		if rt.queries == nil {
			rt.queries = map[string][]url.Values{}
		}
		rt.queries[r.URL.Path] = append(rt.queries[r.URL.Path], r.URL.Query())
	}
	return http.DefaultTransport.RoundTrip(r)
}

func (rt *refundTransport) first(path string) url.Values {
	if qs := rt.queries[path]; len(qs) > 0 {
		return qs[0]
	}
	return nil
}
