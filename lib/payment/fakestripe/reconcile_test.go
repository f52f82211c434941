package fakestripe

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func ids(a answer) []string {
	var out []string
	for _, d := range a.json["data"].([]any) {
		out = append(out, d.(map[string]any)["id"].(string))
	}
	return out
}

// Seeded out of creation order, the timeline still lists newest first, and a page
// after starting_after starts right behind the cursor.
func TestSeededIntentsListInCreationOrder(t *testing.T) {
	s, ts, _ := newTestServer(t)
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	for _, m := range []int{5, 1, 4, 2, 3} {
		if _, err := s.AddPaymentIntent(PaymentIntent{ID: "pi_" + itoa(int64(m)), Amount: 100, Currency: "usd", Created: at(m)}); err != nil {
			t.Fatal(err)
		}
	}
	u := ts.URL + "/v1/payment_intents"
	if got := ids(call(t, nil, "GET", u, key, "", "")); strings.Join(got, ",") != "pi_5,pi_4,pi_3,pi_2,pi_1" {
		t.Errorf("listed %v", got)
	}
	if got := ids(call(t, nil, "GET", u, key, "", "limit=2&starting_after=pi_4")); strings.Join(got, ",") != "pi_3,pi_2" {
		t.Errorf("after pi_4: %v", got)
	}
	q := "created[gte]=" + itoa(at(2).Unix()) + "&created[lt]=" + itoa(at(5).Unix())
	if got := ids(call(t, nil, "GET", u, key, "", q)); strings.Join(got, ",") != "pi_4,pi_3,pi_2" {
		t.Errorf("window: %v", got)
	}
	for _, bad := range []PaymentIntent{
		{ID: "ch_1", Amount: 1, Currency: "usd"}, {Amount: 0, Currency: "usd"}, {Amount: 1, Currency: "usd", Status: "paid"},
		{ID: "pi_5", Amount: 1, Currency: "usd"}, {Amount: 1, Currency: "usd", Customer: "cus_nobody"},
	} {
		if _, err := s.AddPaymentIntent(bad); err == nil {
			t.Errorf("AddPaymentIntent(%+v) accepted", bad)
		}
	}
}

func TestRefundsThroughTheAPI(t *testing.T) {
	s, ts, _ := newTestServer(t)
	paid, _ := s.AddPaymentIntent(PaymentIntent{Amount: 1000, Currency: "eur", Metadata: map[string]string{"invoice_id": "3"}})
	declined, _ := s.AddPaymentIntent(PaymentIntent{Amount: 1000, Currency: "eur", Status: "requires_payment_method"})
	u := ts.URL + "/v1/refunds"

	a := call(t, nil, "POST", u, key, "refund-1", "payment_intent="+paid+"&amount=300&reason=requested_by_customer&expand[]=payment_intent")
	if a.status != http.StatusOK || a.json["amount"].(float64) != 300 || a.json["status"] != "succeeded" ||
		a.json["payment_intent"].(map[string]any)["metadata"].(map[string]any)["invoice_id"] != "3" {
		t.Fatalf("partial refund: %d %s", a.status, a.body)
	}
	// The same key replays; the rest is refunded by charge id.
	if again := call(t, nil, "POST", u, key, "refund-1", "payment_intent="+paid+"&amount=300&reason=requested_by_customer&expand[]=payment_intent"); again.json["id"] != a.json["id"] {
		t.Errorf("replay made another refund: %s", again.body)
	}
	charge := a.json["charge"].(string)
	rest := call(t, nil, "POST", u, key, "", "charge="+charge)
	if rest.status != http.StatusOK || rest.json["amount"].(float64) != 700 || rest.json["payment_intent"] != paid {
		t.Fatalf("refund of the rest: %d %s", rest.status, rest.body)
	}
	for form, code := range map[string]string{
		"payment_intent=" + paid:                 "charge_already_refunded",
		"payment_intent=" + declined:             "charge_not_refundable",
		"payment_intent=pi_nope":                 "resource_missing",
		"reason=because&payment_intent=" + paid:  "",
		"amount=10":                              "parameter_missing",
		"payment_intent=" + paid + "&currency=x": "parameter_unknown",
	} {
		if a := call(t, nil, "POST", u, key, "", form); a.status != http.StatusBadRequest || (code != "" && a.errorField("code") != code) {
			t.Errorf("%s: %d %s, want 400 %s", form, a.status, a.body, code)
		}
	}
	got := call(t, nil, "GET", u+"/"+rest.json["id"].(string), key, "", "")
	if got.status != http.StatusOK || got.json["payment_intent"] != paid {
		t.Errorf("get refund: %s", got.body)
	}
	if l := call(t, nil, "GET", u, key, "", "payment_intent="+paid+"&expand[]=data.payment_intent"); len(ids(l)) != 2 {
		t.Errorf("refunds of %s: %s", paid, l.body)
	}
}

func TestDisputesSettleWithStripesTestEvidence(t *testing.T) {
	s, ts, _ := newTestServer(t)
	cus := mustAdd(t, s, Customer{})
	a := call(t, nil, "POST", ts.URL+"/v1/payment_intents", key, "k1",
		"amount=2500&currency=usd&customer="+cus+"&payment_method=pm_card_createDispute&confirm=true&payment_method_types[]=card")
	if a.status != http.StatusOK || a.json["status"] != "succeeded" {
		t.Fatalf("charge: %d %s", a.status, a.body)
	}
	list := call(t, nil, "GET", ts.URL+"/v1/disputes", key, "", "payment_intent="+a.json["id"].(string))
	if got := ids(list); len(got) != 1 {
		t.Fatalf("disputes: %s", list.body)
	}
	dp := list.json["data"].([]any)[0].(map[string]any)
	if dp["status"] != "needs_response" || dp["amount"].(float64) != 2500 || dp["charge"] != a.json["latest_charge"] {
		t.Errorf("dispute = %v", dp)
	}
	u := ts.URL + "/v1/disputes/" + dp["id"].(string)
	won := call(t, nil, "POST", u, key, "", url.Values{"evidence[uncategorized_text]": {"winning_evidence"}}.Encode())
	if won.status != http.StatusOK || won.json["status"] != "won" {
		t.Errorf("winning evidence: %d %s", won.status, won.body)
	}
	if again := call(t, nil, "POST", u, key, "", "evidence[uncategorized_text]=more"); again.status != http.StatusBadRequest {
		t.Errorf("evidence on a closed dispute: %d %s", again.status, again.body)
	}
	if err := s.SetDisputeStatus(dp["id"].(string), "lost"); err != nil {
		t.Fatal(err)
	}
	if got := call(t, nil, "GET", u, key, "", ""); got.json["status"] != "lost" {
		t.Errorf("after SetDisputeStatus: %s", got.body)
	}
}

func TestSearchQueryLanguage(t *testing.T) {
	s, ts, _ := newTestServer(t)
	cus := mustAdd(t, s, Customer{})
	hit, _ := s.AddPaymentIntent(PaymentIntent{Customer: cus, Amount: 100, Currency: "usd", Metadata: map[string]string{"invoice_id": "1"}})
	_, _ = s.AddPaymentIntent(PaymentIntent{Customer: cus, Amount: 100, Currency: "usd", Status: "canceled", Metadata: map[string]string{"invoice_id": "1"}})
	u := ts.URL + "/v1/payment_intents/search"
	q := url.Values{"query": {`metadata["invoice_id"]:"1" AND status:'succeeded' AND customer:'` + cus + `'`}}.Encode()
	a := call(t, nil, "GET", u, key, "", q)
	if a.status != http.StatusOK || a.json["object"] != "search_result" || strings.Join(ids(a), ",") != hit || a.json["next_page"] != nil {
		t.Errorf("search: %d %s", a.status, a.body)
	}
	for _, bad := range []string{"", "amount>10", "status:'a' OR status:'b'", "metadata['x':'1'", "status:'open"} {
		if a := call(t, nil, "GET", u, key, "", url.Values{"query": {bad}}.Encode()); a.status != http.StatusBadRequest {
			t.Errorf("query %q: %d %s", bad, a.status, a.body)
		}
	}
}
