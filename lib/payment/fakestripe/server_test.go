package fakestripe

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const key = "sk_test_fake_0123456789abcdef"

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var t0 = time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)

func newTestServer(t *testing.T) (*Server, *httptest.Server, *clock) {
	t.Helper()
	c := &clock{t: t0}
	s := New(key)
	s.Now = c.Now
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		s.Close()
		ts.Close()
	})
	return s, ts, c
}

type answer struct {
	status int
	header http.Header
	body   []byte
	json   map[string]any
}

// call sends a request the way stripe-go does: form body, bearer key, optional
// Idempotency-Key.
func call(t *testing.T, client *http.Client, method, u, apiKey, idemKey, form string) answer {
	t.Helper()
	var body io.Reader
	if method == http.MethodGet {
		if form != "" {
			u += "?" + form
		}
	} else {
		body = strings.NewReader(form)
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: resp.StatusCode, header: resp.Header, body: b}
	if err := json.Unmarshal(b, &a.json); err != nil {
		t.Fatalf("%s %s: body is not JSON: %v\n%s", method, u, err, b)
	}
	return a
}

// errorField returns error.<name> from a Stripe error body.
func (a answer) errorField(name string) any {
	e, _ := a.json["error"].(map[string]any)
	return e[name]
}

func mustAdd(t *testing.T, s *Server, c Customer) string {
	t.Helper()
	id, err := s.AddCustomer(c)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestAuthentication(t *testing.T) {
	s, ts, _ := newTestServer(t)
	u := ts.URL + "/v1/customers"

	a := call(t, nil, "GET", u, "", "", "")
	if a.status != http.StatusUnauthorized || a.errorField("type") != "invalid_request_error" ||
		!strings.Contains(a.errorField("message").(string), "did not provide an API key") ||
		a.header.Get("Www-Authenticate") == "" {
		t.Errorf("no key: %d %s", a.status, a.body)
	}
	const wrong = "sk_test_wrong_key_abcd1234"
	a = call(t, nil, "GET", u, wrong, "", "")
	msg, _ := a.errorField("message").(string)
	if a.status != http.StatusUnauthorized || strings.Contains(msg, wrong) || !strings.HasSuffix(msg, "sk_test_**************1234") {
		t.Errorf("wrong key: %d %s", a.status, a.body)
	}
	if a := call(t, nil, "GET", u, key, "", ""); a.status != http.StatusOK {
		t.Errorf("right key: %d %s", a.status, a.body)
	}
	// Basic auth with the key as user name works too, as with curl -u.
	req, _ := http.NewRequest("GET", u, nil)
	req.SetBasicAuth(key, "")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("basic auth: %d", resp.StatusCode)
	}
	s.AllowKey("sk_test_rotated")
	if a := call(t, nil, "GET", u, "sk_test_rotated", "", ""); a.status != http.StatusOK {
		t.Errorf("allowed second key: %d %s", a.status, a.body)
	}
}

func TestPaymentIntentShapes(t *testing.T) {
	s, ts, _ := newTestServer(t)
	cus := mustAdd(t, s, Customer{ID: "cus_A", Email: "a@example.com"})
	u := ts.URL + "/v1/payment_intents"
	base := "amount=1999&currency=EUR&customer=" + cus + "&confirm=true&off_session=true&payment_method_types[0]=card" +
		"&metadata[invoice_id]=42&metadata[attempt]=1&description=Invoice+42&expand[0]=latest_charge"

	ok := call(t, nil, "POST", u, key, "k-ok", base+"&payment_method=pm_card_visa")
	if ok.status != http.StatusOK {
		t.Fatalf("success: %d %s", ok.status, ok.body)
	}
	want := map[string]any{
		"object": "payment_intent", "amount": 1999.0, "amount_received": 1999.0, "currency": "eur",
		"customer": cus, "payment_method": "pm_card_visa", "status": "succeeded", "livemode": false,
		"created": float64(t0.Unix()), "description": "Invoice 42", "last_payment_error": nil,
		"capture_method": "automatic",
	}
	for k, v := range want {
		if ok.json[k] != v {
			t.Errorf("%s = %#v, want %#v", k, ok.json[k], v)
		}
	}
	if md, _ := ok.json["metadata"].(map[string]any); md["invoice_id"] != "42" || md["attempt"] != "1" || len(md) != 2 {
		t.Errorf("metadata = %v", ok.json["metadata"])
	}
	if id, _ := ok.json["id"].(string); !strings.HasPrefix(id, "pi_") {
		t.Errorf("id = %v", ok.json["id"])
	}
	if ch, _ := ok.json["latest_charge"].(string); !strings.HasPrefix(ch, "ch_") {
		t.Errorf("latest_charge = %v", ok.json["latest_charge"])
	}
	if ok.header.Get("Request-Id") == "" || ok.header.Get("Idempotency-Key") != "k-ok" {
		t.Errorf("headers = %v", ok.header)
	}

	d := call(t, nil, "POST", u, key, "k-declined", base+"&payment_method=pm_card_chargeDeclinedInsufficientFunds")
	if d.status != http.StatusPaymentRequired || d.errorField("type") != "card_error" ||
		d.errorField("code") != "card_declined" || d.errorField("decline_code") != "insufficient_funds" {
		t.Fatalf("decline: %d %s", d.status, d.body)
	}
	pi, _ := d.errorField("payment_intent").(map[string]any)
	lpe, _ := pi["last_payment_error"].(map[string]any)
	if pi["status"] != "requires_payment_method" || pi["amount_received"] != 0.0 || lpe["decline_code"] != "insufficient_funds" {
		t.Errorf("embedded payment_intent = %v", pi)
	}
	if _, nested := lpe["payment_intent"]; nested {
		t.Error("last_payment_error must not embed the payment intent again")
	}
	if pm, _ := d.errorField("payment_method").(map[string]any); pm["id"] != "pm_card_chargeDeclinedInsufficientFunds" || pm["object"] != "payment_method" {
		t.Errorf("payment_method = %v", d.errorField("payment_method"))
	}

	got := call(t, nil, "GET", u+"/"+pi["id"].(string), key, "", "")
	if got.status != http.StatusOK || got.json["status"] != "requires_payment_method" || got.json["latest_charge"] != d.errorField("charge") {
		t.Errorf("retrieve declined intent: %d %s", got.status, got.body)
	}
	missing := call(t, nil, "GET", u+"/pi_nope", key, "", "")
	if missing.status != http.StatusNotFound || missing.errorField("code") != "resource_missing" || missing.errorField("param") != "id" {
		t.Errorf("missing intent: %d %s", missing.status, missing.body)
	}
	if n := s.PaymentIntentCount(); n != 2 {
		t.Errorf("PaymentIntentCount = %d, want 2", n)
	}
	if okN, failed := s.ChargeCount(cus); okN != 1 || failed != 1 {
		t.Errorf("ChargeCount = %d, %d; want 1, 1", okN, failed)
	}
}

func TestPaymentIntentValidation(t *testing.T) {
	s, ts, _ := newTestServer(t)
	cus := mustAdd(t, s, Customer{})
	u := ts.URL + "/v1/payment_intents"
	tests := []struct {
		name, form, code, param string
	}{
		{"missing amount", "currency=usd", "parameter_missing", "amount"},
		{"bad integer", "amount=12.5&currency=usd", "parameter_invalid_integer", "amount"},
		{"below minimum", "amount=20&currency=usd", "amount_too_small", "amount"},
		{"unknown parameter", "amount=100&currency=usd&amout=1", "parameter_unknown", "amout"},
		{"unknown customer", "amount=100&currency=usd&customer=cus_nope", "resource_missing", "customer"},
		{"unknown payment method", "amount=100&currency=usd&payment_method=pm_nope", "resource_missing", "payment_method"},
		{"confirm without payment method", "amount=100&currency=usd&customer=" + cus + "&confirm=true&payment_method_types[]=card", "payment_intent_unexpected_state", ""},
		{"confirm with redirects possible", "amount=100&currency=usd&payment_method=pm_card_visa&confirm=true", "", "return_url"},
		{"off_session without confirm", "amount=100&currency=usd&off_session=true", "", "off_session"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := call(t, nil, "POST", u, key, "key-"+tt.name, tt.form)
			if a.status != http.StatusBadRequest || a.errorField("type") != "invalid_request_error" ||
				(tt.code != "" && a.errorField("code") != tt.code) || (tt.param != "" && a.errorField("param") != tt.param) {
				t.Errorf("%d %s", a.status, a.body)
			}
		})
	}
	if n := s.PaymentIntentCount(); n != 0 {
		t.Errorf("PaymentIntentCount = %d, want 0", n)
	}
	// A rejected request leaves no idempotent result: the corrected request with the
	// same key goes through.
	a := call(t, nil, "POST", u, key, "key-missing amount", "amount=100&currency=usd")
	if a.status != http.StatusOK || a.json["status"] != "requires_payment_method" {
		t.Errorf("corrected request: %d %s", a.status, a.body)
	}
}

func TestIdempotency(t *testing.T) {
	s, ts, clk := newTestServer(t)
	s.AllowKey("sk_test_second")
	cus := mustAdd(t, s, Customer{DefaultPaymentMethod: "pm_card_visa"})
	u := ts.URL + "/v1/payment_intents"
	form := "amount=500&currency=usd&customer=" + cus + "&payment_method=pm_card_visa&confirm=true&payment_method_types[0]=card&metadata[a]=1&metadata[b]=2"
	reordered := "metadata[b]=2&payment_method_types[0]=card&confirm=true&metadata[a]=1&payment_method=pm_card_visa&customer=" + cus + "&currency=usd&amount=500"

	first := call(t, nil, "POST", u, key, "K", form)
	if first.status != http.StatusOK || first.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first: %d %v %s", first.status, first.header, first.body)
	}
	clk.Advance(time.Hour)
	replay := call(t, nil, "POST", u, key, "K", reordered)
	if replay.status != http.StatusOK || string(replay.body) != string(first.body) ||
		replay.header.Get("Idempotent-Replayed") != "true" ||
		replay.header.Get("Original-Request") != first.header.Get("Request-Id") {
		t.Errorf("replay: %d %v\n%s", replay.status, replay.header, replay.body)
	}
	conflict := call(t, nil, "POST", u, key, "K", strings.Replace(form, "amount=500", "amount=501", 1))
	if conflict.status != http.StatusBadRequest || conflict.errorField("type") != "idempotency_error" {
		t.Errorf("other parameters: %d %s", conflict.status, conflict.body)
	}
	otherPath := call(t, nil, "POST", ts.URL+"/v1/customers", key, "K", "")
	if otherPath.status != http.StatusBadRequest || otherPath.errorField("type") != "idempotency_error" {
		t.Errorf("other endpoint: %d %s", otherPath.status, otherPath.body)
	}
	if n := s.PaymentIntentCount(); n != 1 {
		t.Fatalf("PaymentIntentCount = %d, want 1", n)
	}
	// Scoped per API key: the same key under another API key is a new request.
	if a := call(t, nil, "POST", u, "sk_test_second", "K", form); a.status != http.StatusOK || a.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("other API key: %d %v", a.status, a.header)
	}
	// Declines are stored and replayed like successes.
	decl := strings.Replace(form, "pm_card_visa", "pm_card_chargeDeclinedLostCard", 1)
	d1 := call(t, nil, "POST", u, key, "D", decl)
	d2 := call(t, nil, "POST", u, key, "D", decl)
	if d1.status != http.StatusPaymentRequired || d2.status != d1.status || string(d2.body) != string(d1.body) || d2.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("decline replay: %d/%d", d1.status, d2.status)
	}
	if n := s.PaymentIntentCount(); n != 3 {
		t.Fatalf("PaymentIntentCount = %d, want 3", n)
	}
	// Keys expire 24 hours after first use.
	clk.Advance(23 * time.Hour)
	expired := call(t, nil, "POST", u, key, "K", form)
	if expired.status != http.StatusOK || expired.header.Get("Idempotent-Replayed") != "" || expired.json["id"] == first.json["id"] {
		t.Errorf("after 24h: %d %v", expired.status, expired.header)
	}
	if n := s.PaymentIntentCount(); n != 4 {
		t.Errorf("PaymentIntentCount = %d, want 4", n)
	}
}

func TestFaultsAndHeldResponses(t *testing.T) {
	s, ts, _ := newTestServer(t)
	cus := mustAdd(t, s, Customer{})
	u := ts.URL + "/v1/payment_intents"
	form := "amount=500&currency=usd&customer=" + cus + "&payment_method=pm_card_visa&confirm=true&payment_method_types[0]=card"

	s.FailNext(2, http.StatusServiceUnavailable)
	for range 2 {
		a := call(t, nil, "POST", u, key, "F", form)
		if a.status != http.StatusServiceUnavailable || a.errorField("type") != "api_error" {
			t.Errorf("injected failure: %d %s", a.status, a.body)
		}
	}
	s.FailNext(1, http.StatusTooManyRequests)
	if a := call(t, nil, "GET", u, key, "", ""); a.status != http.StatusTooManyRequests || a.errorField("code") != "rate_limit" {
		t.Errorf("injected 429: %d %s", a.status, a.body)
	}
	if n := s.PaymentIntentCount(); n != 0 {
		t.Fatalf("a failed request created %d intents", n)
	}
	if a := call(t, nil, "POST", u, key, "F", form); a.status != http.StatusOK || a.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("after the failures: %d %v", a.status, a.header)
	}

	// A lost answer: processed, stored, never delivered.
	s.DropResponseNext(1)
	short := &http.Client{Timeout: 200 * time.Millisecond}
	req, _ := http.NewRequest("POST", u, strings.NewReader(form))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Idempotency-Key", "L")
	if resp, err := short.Do(req); err == nil {
		_ = resp.Body.Close()
		t.Fatalf("the held response arrived: %d", resp.StatusCode)
	}
	if n := s.PaymentIntentCount(); n != 2 {
		t.Fatalf("PaymentIntentCount = %d, want 2 (the lost one was processed)", n)
	}
	if a := call(t, nil, "POST", u, key, "L", form); a.status != http.StatusOK || a.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry after the lost answer: %d %v", a.status, a.header)
	}

	// A request in flight makes a concurrent one with the same key answer 409.
	arrived, release := s.PauseNext()
	done := make(chan answer, 1)
	go func() {
		done <- call(t, nil, "POST", u, key, "P", form)
	}()
	<-arrived
	if a := call(t, nil, "POST", u, key, "P", form); a.status != http.StatusConflict || a.errorField("code") != "idempotency_key_in_use" {
		t.Errorf("concurrent: %d %s", a.status, a.body)
	}
	release()
	if a := <-done; a.status != http.StatusOK {
		t.Errorf("paused request: %d %s", a.status, a.body)
	}
	if n := s.PaymentIntentCount(); n != 3 {
		t.Errorf("PaymentIntentCount = %d, want 3", n)
	}
}

func TestListPagination(t *testing.T) {
	s, ts, clk := newTestServer(t)
	cusA := mustAdd(t, s, Customer{})
	cusB := mustAdd(t, s, Customer{})
	u := ts.URL + "/v1/payment_intents"
	var ids []string // oldest first
	for i := range 7 {
		cus := cusA
		if i >= 5 {
			cus = cusB
		}
		a := call(t, nil, "POST", u, key, "", "amount=100&currency=usd&customer="+cus)
		ids = append(ids, a.json["id"].(string))
		if i != 2 { // intents 2 and 3 share a second: creation order still decides
			clk.Advance(time.Second)
		}
	}
	page := func(form string) ([]string, bool) {
		t.Helper()
		a := call(t, nil, "GET", u, key, "", form)
		if a.status != http.StatusOK || a.json["object"] != "list" || a.json["url"] != "/v1/payment_intents" {
			t.Fatalf("list %s: %d %s", form, a.status, a.body)
		}
		var out []string
		for _, d := range a.json["data"].([]any) {
			out = append(out, d.(map[string]any)["id"].(string))
		}
		return out, a.json["has_more"].(bool)
	}
	check := func(form string, want []string, wantMore bool) {
		t.Helper()
		got, more := page(form)
		if strings.Join(got, ",") != strings.Join(want, ",") || more != wantMore {
			t.Errorf("%s: got %v more=%v, want %v more=%v", form, got, more, want, wantMore)
		}
	}
	check("limit=3", []string{ids[6], ids[5], ids[4]}, true)
	check("limit=3&starting_after="+ids[4], []string{ids[3], ids[2], ids[1]}, true)
	check("limit=3&starting_after="+ids[1], []string{ids[0]}, false)
	check("limit=2&ending_before="+ids[2], []string{ids[4], ids[3]}, true)
	check("limit=2&ending_before="+ids[4], []string{ids[6], ids[5]}, false)
	check("customer="+cusB, []string{ids[6], ids[5]}, false)
	check("limit=2&customer="+cusA+"&starting_after="+ids[6], []string{ids[4], ids[3]}, true)
	from, to := t0.Unix()+1, t0.Unix()+3 // intents 1..4 (2 and 3 share t0+2)
	check("created[gte]="+itoa(from)+"&created[lte]="+itoa(to), []string{ids[4], ids[3], ids[2], ids[1]}, false)
	check("created[gt]="+itoa(from)+"&created[lt]="+itoa(to), []string{ids[3], ids[2]}, false)
	check("created="+itoa(t0.Unix()+2), []string{ids[3], ids[2]}, false)

	for _, bad := range []string{"limit=0", "limit=101", "limit=x", "starting_after=pi_nope", "created[between]=1", "starting_after=" + ids[1] + "&ending_before=" + ids[2]} {
		if a := call(t, nil, "GET", u, key, "", bad); a.status != http.StatusBadRequest || a.errorField("type") != "invalid_request_error" {
			t.Errorf("%s: %d %s", bad, a.status, a.body)
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestCustomers(t *testing.T) {
	s, ts, clk := newTestServer(t)
	fixtures := `{"customers":[
		{"id":"cus_Alpha","email":"alpha@example.com","default_payment_method":"pm_card_visa","metadata":{"account_id":"1"}},
		{"id":"cus_Beta","email":"beta@example.com"}]}`
	if err := s.LoadFixtures(strings.NewReader(fixtures)); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		`{"customers":[{"id":"cus_Alpha"}]}`,                                     // duplicate
		`{"customers":[{"id":"cus_X","default_payment_method":"pm_card_nope"}]}`, // unknown card
		`{"customers":[{"id":"x_1"}]}`,                                           // not a customer ID
		`{"accounts":[]}`,                                                        // unknown field
	} {
		if err := s.LoadFixtures(strings.NewReader(bad)); err == nil {
			t.Errorf("LoadFixtures(%s) accepted", bad)
		}
	}
	u := ts.URL + "/v1/customers"
	a := call(t, nil, "GET", u+"/cus_Alpha", key, "", "")
	is, _ := a.json["invoice_settings"].(map[string]any)
	md, _ := a.json["metadata"].(map[string]any)
	if a.status != http.StatusOK || a.json["object"] != "customer" || a.json["email"] != "alpha@example.com" ||
		is["default_payment_method"] != "pm_card_visa" || md["account_id"] != "1" || a.json["created"] != float64(t0.Unix()) {
		t.Errorf("get: %d %s", a.status, a.body)
	}
	if a := call(t, nil, "GET", u+"/cus_Beta", key, "", ""); a.json["invoice_settings"].(map[string]any)["default_payment_method"] != nil {
		t.Errorf("customer without payment method: %s", a.body)
	}

	clk.Advance(time.Minute)
	c := call(t, nil, "POST", u, key, "new-customer", "email=gamma@example.com&invoice_settings[default_payment_method]=pm_card_chargeDeclined&metadata[account_id]=3")
	gamma, _ := c.json["id"].(string)
	if c.status != http.StatusOK || !strings.HasPrefix(gamma, "cus_") || c.json["created"] != float64(t0.Unix()+60) {
		t.Fatalf("create: %d %s", c.status, c.body)
	}
	if a := call(t, nil, "POST", u, key, "", "invoice_settings[default_payment_method]=pm_nope"); a.status != http.StatusBadRequest || a.errorField("code") != "resource_missing" {
		t.Errorf("unknown payment method: %d %s", a.status, a.body)
	}

	up := call(t, nil, "POST", u+"/"+gamma, key, "", "invoice_settings[default_payment_method]=pm_card_visa&metadata[account_id]=")
	if up.json["invoice_settings"].(map[string]any)["default_payment_method"] != "pm_card_visa" || len(up.json["metadata"].(map[string]any)) != 0 {
		t.Errorf("update: %d %s", up.status, up.body)
	}
	if err := s.SetDefaultPaymentMethod("cus_Beta", "pm_card_chargeDeclinedExpiredCard"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDefaultPaymentMethod("cus_nope", "pm_card_visa"); err == nil {
		t.Error("SetDefaultPaymentMethod on a missing customer succeeded")
	}
	if a := call(t, nil, "GET", u+"/cus_Beta", key, "", ""); a.json["invoice_settings"].(map[string]any)["default_payment_method"] != "pm_card_chargeDeclinedExpiredCard" {
		t.Errorf("after SetDefaultPaymentMethod: %s", a.body)
	}

	list := call(t, nil, "GET", u, key, "", "limit=2")
	data, _ := list.json["data"].([]any)
	if len(data) != 2 || data[0].(map[string]any)["id"] != gamma || list.json["has_more"] != true {
		t.Errorf("list: %s", list.body)
	}
	byEmail := call(t, nil, "GET", u, key, "", "email=beta@example.com")
	if data, _ := byEmail.json["data"].([]any); len(data) != 1 || data[0].(map[string]any)["id"] != "cus_Beta" {
		t.Errorf("list by email: %s", byEmail.body)
	}
	if a := call(t, nil, "GET", ts.URL+"/v1/charges", key, "", ""); a.status != http.StatusNotFound || a.errorField("type") != "invalid_request_error" {
		t.Errorf("unknown URL: %d %s", a.status, a.body)
	}
}

func TestStart(t *testing.T) {
	s := New(key)
	if _, _, err := s.Start("0.0.0.0:0"); err == nil {
		t.Error("Start on a non-loopback address succeeded")
	}
	base, stop, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || !strings.HasPrefix(u.Host, "127.0.0.1:") {
		t.Fatalf("base URL %q", base)
	}
	if a := call(t, nil, "GET", base+"/v1/customers", key, "", ""); a.status != http.StatusOK {
		t.Errorf("GET: %d", a.status)
	}
	// stop must not hang on a response being held back.
	s.DropResponseNext(1)
	go func() {
		req, _ := http.NewRequest("POST", base+"/v1/customers", strings.NewReader("email=x@example.com"))
		req.Header.Set("Authorization", "Bearer "+key)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for s.customerCount() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	stopped := make(chan struct{})
	go func() {
		stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("stop hung on a held response")
	}
	if _, err := http.Get(base + "/v1/customers"); err == nil {
		t.Error("server still answers after stop")
	}
}

func (s *Server) customerCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.customers)
}
