package payment_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/payment"
	"github.com/cronkit/cronkit/lib/payment/fakestripe"
)

const testKey = "sk_test_cronkit_4eC39HqLyjWDarjtT1zdp7dc"

// clock is the fake's clock, moved by tests.
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

type env struct {
	fake  *fakestripe.Server
	url   string
	clock *clock
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := &clock{t: t0}
	fake := fakestripe.New(testKey)
	fake.Now = c.Now
	ts := httptest.NewServer(fake.Handler())
	t.Cleanup(func() {
		fake.Close() // release held responses before the server waits for them
		ts.Close()
	})
	return &env{fake: fake, url: ts.URL, clock: c}
}

func (e *env) client(mods ...func(*payment.Config)) *payment.Client {
	cfg := payment.Config{APIKey: testKey, BaseURL: e.url, HTTPClient: &http.Client{Timeout: 5 * time.Second}}
	for _, m := range mods {
		m(&cfg)
	}
	return payment.New(cfg)
}

func (e *env) customer(t *testing.T, pm string) string {
	t.Helper()
	id, err := e.fake.AddCustomer(fakestripe.Customer{Email: "ops@example.com", DefaultPaymentMethod: pm})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func chargeReq(customer, key string) payment.ChargeRequest {
	return payment.ChargeRequest{
		Customer:       customer,
		AmountMinor:    1999,
		Currency:       "EUR",
		Description:    "Invoice 42",
		Metadata:       map[string]string{"invoice_id": "42", "attempt": "1"},
		IdempotencyKey: key,
	}
}

func TestChargeSucceeds(t *testing.T) {
	e := newEnv(t)
	cus := e.customer(t, "pm_card_visa")
	c := e.client()

	res, err := c.Charge(context.Background(), chargeReq(cus, "invoice-42-attempt-1"))
	if err != nil {
		t.Fatalf("Charge: %v", err)
	}
	if res.Outcome != payment.OutcomeSucceeded || res.Status != "succeeded" || res.AmountMinor != 1999 ||
		res.Currency != "eur" || res.PaymentMethod != "pm_card_visa" || res.DeclineCode != "" || res.Replayed ||
		!strings.HasPrefix(res.PaymentIntentID, "pi_") {
		t.Fatalf("result = %+v", res)
	}
	if n := e.fake.PaymentIntentCount(); n != 1 {
		t.Errorf("PaymentIntents created = %d, want 1", n)
	}
	if ok, failed := e.fake.ChargeCount(cus); ok != 1 || failed != 0 {
		t.Errorf("charges = %d ok, %d failed; want 1, 0", ok, failed)
	}
	// The metadata reached Stripe: reconciliation depends on it.
	var got []payment.PaymentIntent
	for pi, err := range c.ListPaymentIntents(context.Background(), payment.ListParams{Customer: cus}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, pi)
	}
	want := payment.PaymentIntent{ID: res.PaymentIntentID, Customer: cus, AmountMinor: 1999, AmountReceived: 1999,
		Currency: "eur", Status: "succeeded", Metadata: map[string]string{"invoice_id": "42", "attempt": "1"}, Created: t0,
		PaymentMethod: "pm_card_visa"}
	if len(got) == 1 {
		if !strings.HasPrefix(got[0].LatestCharge, "ch_") {
			t.Errorf("latest charge %q, want a ch_ id", got[0].LatestCharge)
		}
		got[0].LatestCharge = ""
	}
	if len(got) != 1 || fmt.Sprint(got[0]) != fmt.Sprint(want) {
		t.Errorf("listed %+v, want [%+v]", got, want)
	}
}

func TestChargeDeclines(t *testing.T) {
	tests := []struct {
		pm          string
		want        payment.Outcome
		declineCode string
	}{
		{"pm_card_chargeDeclined", payment.OutcomeSoftDecline, "generic_decline"},
		{"pm_card_chargeDeclinedInsufficientFunds", payment.OutcomeSoftDecline, "insufficient_funds"},
		{"pm_card_chargeDeclinedLostCard", payment.OutcomeHardDecline, "lost_card"},
		{"pm_card_chargeDeclinedStolenCard", payment.OutcomeHardDecline, "stolen_card"},
		{"pm_card_chargeDeclinedFraudulent", payment.OutcomeHardDecline, "fraudulent"},
		{"pm_card_chargeDeclinedExpiredCard", payment.OutcomeHardDecline, "expired_card"},
	}
	e := newEnv(t)
	c := e.client()
	for _, tt := range tests {
		t.Run(tt.pm, func(t *testing.T) {
			cus := e.customer(t, tt.pm)
			res, err := c.Charge(context.Background(), chargeReq(cus, "key-"+tt.pm))
			if err != nil {
				t.Fatalf("a decline must not be an error: %v", err)
			}
			if res.Outcome != tt.want || res.DeclineCode != tt.declineCode {
				t.Errorf("outcome %v decline %q, want %v %q", res.Outcome, res.DeclineCode, tt.want, tt.declineCode)
			}
			if res.Status != "requires_payment_method" || !strings.HasPrefix(res.PaymentIntentID, "pi_") ||
				res.AmountMinor != 1999 || res.Currency != "eur" || res.Message == "" {
				t.Errorf("result = %+v", res)
			}
			if ok, failed := e.fake.ChargeCount(cus); ok != 0 || failed != 1 {
				t.Errorf("charges = %d ok, %d failed; want 0, 1", ok, failed)
			}
		})
	}
}

func TestDeclineIsReplayedToo(t *testing.T) {
	e := newEnv(t)
	cus := e.customer(t, "pm_card_chargeDeclinedInsufficientFunds")
	c := e.client()
	first, err := c.Charge(context.Background(), chargeReq(cus, "k1"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Charge(context.Background(), chargeReq(cus, "k1"))
	if err != nil || !again.Replayed || again.PaymentIntentID != first.PaymentIntentID ||
		again.Outcome != payment.OutcomeSoftDecline || again.DeclineCode != "insufficient_funds" {
		t.Errorf("repeat = %+v, %v; want the replayed decline of %s", again, err, first.PaymentIntentID)
	}
	if _, failed := e.fake.ChargeCount(cus); failed != 1 {
		t.Errorf("declined charges = %d, want 1", failed)
	}
}

func TestChargeWithoutPaymentMethodIsHardDecline(t *testing.T) {
	e := newEnv(t)
	cus := e.customer(t, "")
	res, err := e.client().Charge(context.Background(), chargeReq(cus, "k1"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != payment.OutcomeHardDecline || res.DeclineCode != payment.DeclineNoPaymentMethod || res.PaymentIntentID != "" {
		t.Errorf("result = %+v", res)
	}
	if n := e.fake.PaymentIntentCount(); n != 0 {
		t.Errorf("PaymentIntents created = %d, want 0", n)
	}
}

func TestSoftDeclineThenNewCardSucceeds(t *testing.T) {
	e := newEnv(t)
	cus := e.customer(t, "pm_card_chargeDeclinedInsufficientFunds")
	c := e.client()
	ctx := context.Background()

	first, err := c.Charge(ctx, chargeReq(cus, "invoice-42-attempt-1"))
	if err != nil || first.Outcome != payment.OutcomeSoftDecline {
		t.Fatalf("attempt 1: %+v, %v", first, err)
	}
	if err := e.fake.SetDefaultPaymentMethod(cus, "pm_card_visa"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(72 * time.Hour)
	second, err := c.Charge(ctx, chargeReq(cus, "invoice-42-attempt-2"))
	if err != nil || second.Outcome != payment.OutcomeSucceeded || second.PaymentIntentID == first.PaymentIntentID {
		t.Fatalf("attempt 2: %+v, %v", second, err)
	}
	if ok, failed := e.fake.ChargeCount(cus); ok != 1 || failed != 1 {
		t.Errorf("charges = %d ok, %d failed; want 1, 1", ok, failed)
	}
}

func TestChargeExplicitPaymentMethodSkipsDefault(t *testing.T) {
	e := newEnv(t)
	cus := e.customer(t, "pm_card_chargeDeclinedLostCard")
	req := chargeReq(cus, "k1")
	req.PaymentMethod = "pm_card_mastercard"
	res, err := e.client().Charge(context.Background(), req)
	if err != nil || res.Outcome != payment.OutcomeSucceeded || res.PaymentMethod != "pm_card_mastercard" {
		t.Fatalf("%+v, %v", res, err)
	}
}

func TestChargeRefusesBadRequestsWithoutCalling(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer ts.Close()
	c := payment.New(payment.Config{APIKey: testKey, BaseURL: ts.URL})
	ctx := context.Background()

	for _, key := range []string{"", "   "} {
		_, err := c.Charge(ctx, chargeReq("cus_1", key))
		if !errors.Is(err, payment.ErrIdempotencyKeyRequired) {
			t.Errorf("key %q: err = %v, want ErrIdempotencyKeyRequired", key, err)
		}
	}
	bad := chargeReq("cus_1", "k")
	bad.AmountMinor = 0
	if _, err := c.Charge(ctx, bad); !errors.Is(err, payment.ErrInvalidRequest) {
		t.Errorf("zero amount: err = %v, want ErrInvalidRequest", err)
	}
	bad = chargeReq("cus_1", "k")
	bad.Currency = "euro"
	if _, err := c.Charge(ctx, bad); !errors.Is(err, payment.ErrInvalidRequest) {
		t.Errorf("bad currency: err = %v, want ErrInvalidRequest", err)
	}
}

// The provider charged, but its answer was lost on the way back (the client timed
// out): the retry with the same key must replay the original result, not charge again.
func TestLostResponseRetryReplaysOriginal(t *testing.T) {
	e := newEnv(t)
	cus := e.customer(t, "pm_card_visa")
	c := e.client(func(cfg *payment.Config) { cfg.HTTPClient = &http.Client{Timeout: 300 * time.Millisecond} })
	ctx := context.Background()
	req := chargeReq(cus, "invoice-42-attempt-1")

	e.fake.DropResponseNext(1)
	_, err := c.Charge(ctx, req)
	if !errors.Is(err, payment.ErrTemporary) {
		t.Fatalf("lost answer: err = %v, want ErrTemporary", err)
	}
	if n := e.fake.PaymentIntentCount(); n != 1 {
		t.Fatalf("the lost request was processed: PaymentIntents = %d, want 1", n)
	}

	res, err := c.Charge(ctx, req)
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if res.Outcome != payment.OutcomeSucceeded || !res.Replayed {
		t.Errorf("retry result = %+v, want the replayed success", res)
	}
	if n := e.fake.PaymentIntentCount(); n != 1 {
		t.Errorf("PaymentIntents = %d after retry, want 1", n)
	}
	if ok, _ := e.fake.ChargeCount(cus); ok != 1 {
		t.Errorf("charges = %d, want 1", ok)
	}
	var ids []string
	for pi, err := range c.ListPaymentIntents(ctx, payment.ListParams{}) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, pi.ID)
	}
	if !slices.Equal(ids, []string{res.PaymentIntentID}) {
		t.Errorf("provider holds %v, want only the original %s", ids, res.PaymentIntentID)
	}
}

// stripe-go's own retries reuse the key too, so a lost answer is healed in one call.
func TestLostResponseHealedByLibraryRetry(t *testing.T) {
	e := newEnv(t)
	cus := e.customer(t, "pm_card_visa")
	c := e.client(func(cfg *payment.Config) {
		cfg.HTTPClient = &http.Client{Timeout: 300 * time.Millisecond}
		cfg.MaxNetworkRetries = 1
	})
	e.fake.DropResponseNext(1)
	res, err := c.Charge(context.Background(), chargeReq(cus, "invoice-42-attempt-1"))
	if err != nil || res.Outcome != payment.OutcomeSucceeded || !res.Replayed {
		t.Fatalf("%+v, %v; want a replayed success", res, err)
	}
	if n := e.fake.PaymentIntentCount(); n != 1 {
		t.Errorf("PaymentIntents = %d, want 1", n)
	}
}

func TestSameKeyDifferentAmountConflicts(t *testing.T) {
	e := newEnv(t)
	cus := e.customer(t, "pm_card_visa")
	c := e.client()
	ctx := context.Background()
	req := chargeReq(cus, "invoice-42-attempt-1")
	if _, err := c.Charge(ctx, req); err != nil {
		t.Fatal(err)
	}
	req.AmountMinor = 2999
	_, err := c.Charge(ctx, req)
	if !errors.Is(err, payment.ErrIdempotencyConflict) {
		t.Fatalf("err = %v, want ErrIdempotencyConflict", err)
	}
	var perr *payment.Error
	if !errors.As(err, &perr) || perr.StatusCode != http.StatusBadRequest || perr.Type != "idempotency_error" {
		t.Errorf("error details = %+v", perr)
	}
	if n := e.fake.PaymentIntentCount(); n != 1 {
		t.Errorf("PaymentIntents = %d, want 1", n)
	}
}

func TestIdempotencyKeyExpiresAfter24h(t *testing.T) {
	e := newEnv(t)
	cus := e.customer(t, "pm_card_visa")
	c := e.client()
	ctx := context.Background()
	req := chargeReq(cus, "invoice-42-attempt-1")

	first, err := c.Charge(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(24*time.Hour - time.Minute)
	replay, err := c.Charge(ctx, req)
	if err != nil || !replay.Replayed || replay.PaymentIntentID != first.PaymentIntentID {
		t.Fatalf("within 24h: %+v, %v; want a replay of %s", replay, err, first.PaymentIntentID)
	}
	e.clock.Advance(2 * time.Minute)
	fresh, err := c.Charge(ctx, req)
	if err != nil || fresh.Replayed || fresh.PaymentIntentID == first.PaymentIntentID {
		t.Fatalf("after 24h: %+v, %v; want a new PaymentIntent", fresh, err)
	}
	if n := e.fake.PaymentIntentCount(); n != 2 {
		t.Errorf("PaymentIntents = %d, want 2", n)
	}
}

func TestBadAPIKeyIsNotLeaked(t *testing.T) {
	e := newEnv(t)
	cus := e.customer(t, "pm_card_visa")
	const wrong = "sk_test_wrong_51Hxyz0123456789abcdef"
	c := e.client(func(cfg *payment.Config) { cfg.APIKey = wrong })

	_, err := c.GetCustomer(context.Background(), cus)
	if !errors.Is(err, payment.ErrAuthentication) {
		t.Fatalf("err = %v, want ErrAuthentication", err)
	}
	_, cerr := c.Charge(context.Background(), chargeReq(cus, "k1"))
	if !errors.Is(cerr, payment.ErrAuthentication) {
		t.Fatalf("charge err = %v, want ErrAuthentication", cerr)
	}
	for _, err := range []error{err, cerr} {
		if strings.Contains(err.Error(), wrong) {
			t.Errorf("error leaks the key: %v", err)
		}
	}
}

// A server that echoes the Authorization header (stripe-mock does) must not get the
// key into our errors.
func TestKeyEchoedByServerIsRedacted(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		msg, _ := json.Marshal("Authorization was '" + r.Header.Get("Authorization") + "'.")
		fmt.Fprintf(w, `{"error":{"type":"invalid_request_error","message":%s}}`, msg)
	}))
	defer ts.Close()
	c := payment.New(payment.Config{APIKey: testKey, BaseURL: ts.URL})
	_, err := c.GetCustomer(context.Background(), "cus_1")
	if !errors.Is(err, payment.ErrAuthentication) {
		t.Fatalf("err = %v, want ErrAuthentication", err)
	}
	if strings.Contains(err.Error(), testKey) || !strings.Contains(err.Error(), "[redacted]") {
		t.Errorf("error = %q, want the key redacted", err)
	}
}

func TestInjectedFailureThenRetryChargesOnce(t *testing.T) {
	for _, status := range []int{http.StatusInternalServerError, http.StatusServiceUnavailable, http.StatusTooManyRequests} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			e := newEnv(t)
			cus := e.customer(t, "pm_card_visa")
			c := e.client()
			ctx := context.Background()
			req := chargeReq(cus, "invoice-42-attempt-1")
			req.PaymentMethod = "pm_card_visa" // so the failure hits the charge itself

			e.fake.FailNext(1, status)
			_, err := c.Charge(ctx, req)
			var perr *payment.Error
			if !errors.Is(err, payment.ErrTemporary) || !errors.As(err, &perr) || perr.StatusCode != status {
				t.Fatalf("err = %v, want ErrTemporary with status %d", err, status)
			}
			if n := e.fake.PaymentIntentCount(); n != 0 {
				t.Fatalf("PaymentIntents = %d after the failure, want 0", n)
			}
			res, err := c.Charge(ctx, req)
			if err != nil || res.Outcome != payment.OutcomeSucceeded || res.Replayed {
				t.Fatalf("retry: %+v, %v", res, err)
			}
			if n := e.fake.PaymentIntentCount(); n != 1 {
				t.Errorf("PaymentIntents = %d, want 1", n)
			}
			if ok, _ := e.fake.ChargeCount(cus); ok != 1 {
				t.Errorf("charges = %d, want 1", ok)
			}
		})
	}
}

func TestFailureLookingUpCustomerIsTemporary(t *testing.T) {
	e := newEnv(t)
	cus := e.customer(t, "pm_card_visa")
	e.fake.FailNext(1, http.StatusServiceUnavailable)
	_, err := e.client().Charge(context.Background(), chargeReq(cus, "k1"))
	if !errors.Is(err, payment.ErrTemporary) {
		t.Fatalf("err = %v, want ErrTemporary", err)
	}
	if n := e.fake.PaymentIntentCount(); n != 0 {
		t.Errorf("PaymentIntents = %d, want 0", n)
	}
}

func TestConcurrentRequestWithKeyInFlight(t *testing.T) {
	e := newEnv(t)
	cus := e.customer(t, "pm_card_visa")
	c := e.client()
	ctx := context.Background()
	req := chargeReq(cus, "invoice-42-attempt-1")
	req.PaymentMethod = "pm_card_visa"

	arrived, release := e.fake.PauseNext()
	defer release()
	type answer struct {
		res payment.ChargeResult
		err error
	}
	first := make(chan answer, 1)
	go func() {
		res, err := c.Charge(ctx, req)
		first <- answer{res, err}
	}()
	<-arrived
	_, err := c.Charge(ctx, req)
	var perr *payment.Error
	if !errors.Is(err, payment.ErrTemporary) || !errors.As(err, &perr) || perr.StatusCode != http.StatusConflict {
		t.Fatalf("second request while the first is in flight: err = %v, want ErrTemporary (409)", err)
	}
	release()
	a := <-first
	if a.err != nil || a.res.Outcome != payment.OutcomeSucceeded {
		t.Fatalf("first request: %+v, %v", a.res, a.err)
	}
	if n := e.fake.PaymentIntentCount(); n != 1 {
		t.Errorf("PaymentIntents = %d, want 1", n)
	}
}

// Many charges at once, some sharing a key: each key charges exactly once.
func TestConcurrentCharges(t *testing.T) {
	e := newEnv(t)
	cus := e.customer(t, "pm_card_visa")
	c := e.client()
	ctx := context.Background()

	const n = 16
	var wg sync.WaitGroup
	var mu sync.Mutex
	sharedIDs := map[string]bool{}
	for i := range 2 * n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := "shared"
			if i%2 == 1 {
				key = fmt.Sprintf("own-%d", i)
			}
			req := chargeReq(cus, key)
			req.PaymentMethod = "pm_card_visa"
			res, err := c.Charge(ctx, req)
			if key == "shared" && errors.Is(err, payment.ErrTemporary) {
				return // 409: the first one was still in flight
			}
			if err != nil || res.Outcome != payment.OutcomeSucceeded {
				t.Errorf("%s: %+v, %v", key, res, err)
				return
			}
			if key == "shared" {
				mu.Lock()
				sharedIDs[res.PaymentIntentID] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(sharedIDs) > 1 {
		t.Errorf("the shared key produced %d PaymentIntents: %v", len(sharedIDs), sharedIDs)
	}
	if got := e.fake.PaymentIntentCount(); got != n+1 {
		t.Errorf("PaymentIntents = %d, want %d", got, n+1)
	}
}

func TestGetCustomer(t *testing.T) {
	e := newEnv(t)
	if err := e.fake.LoadFixtures(strings.NewReader(
		`{"customers":[{"id":"cus_A","email":"a@example.com","default_payment_method":"pm_card_visa"},{"id":"cus_B","email":"b@example.com"}]}`)); err != nil {
		t.Fatal(err)
	}
	c := e.client()
	ctx := context.Background()
	got, err := c.GetCustomer(ctx, "cus_A")
	if err != nil || got != (payment.Customer{ID: "cus_A", Email: "a@example.com", DefaultPaymentMethod: "pm_card_visa"}) {
		t.Errorf("cus_A = %+v, %v", got, err)
	}
	got, err = c.GetCustomer(ctx, "cus_B")
	if err != nil || got != (payment.Customer{ID: "cus_B", Email: "b@example.com"}) {
		t.Errorf("cus_B = %+v, %v", got, err)
	}
	if _, err := c.GetCustomer(ctx, "cus_missing"); !errors.Is(err, payment.ErrNotFound) {
		t.Errorf("missing customer: err = %v, want ErrNotFound", err)
	}
	if _, err := c.Charge(ctx, chargeReq("cus_missing", "k")); !errors.Is(err, payment.ErrNotFound) {
		t.Errorf("charging a missing customer: err = %v, want ErrNotFound", err)
	}
}

func TestNetworkErrorIsTemporary(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	base := ts.URL
	ts.Close() // nothing listens there any more
	c := payment.New(payment.Config{APIKey: testKey, BaseURL: base})
	req := chargeReq("cus_1", "k")
	req.PaymentMethod = "pm_card_visa"
	_, err := c.Charge(context.Background(), req)
	if !errors.Is(err, payment.ErrTemporary) {
		t.Fatalf("err = %v, want ErrTemporary", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = c.Charge(ctx, req)
	if !errors.Is(err, payment.ErrTemporary) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v, want ErrTemporary wrapping context.Canceled", err)
	}
}

// countingTransport records the list requests, to check the paging.
type countingTransport struct {
	mu    sync.Mutex
	lists []url.Values
}

func (ct *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet && r.URL.Path == "/v1/payment_intents" {
		ct.mu.Lock()
		ct.lists = append(ct.lists, r.URL.Query())
		ct.mu.Unlock()
	}
	return http.DefaultTransport.RoundTrip(r)
}

func TestListPaymentIntentsPages(t *testing.T) {
	e := newEnv(t)
	cusA, cusB := e.customer(t, "pm_card_visa"), e.customer(t, "pm_card_visa")
	ct := &countingTransport{}
	c := e.client(func(cfg *payment.Config) { cfg.HTTPClient = &http.Client{Transport: ct, Timeout: 5 * time.Second} })
	ctx := context.Background()

	// 250 PaymentIntents, one a minute, alternating customers.
	var created []string // oldest first
	for i := range 250 {
		cus := cusA
		if i%2 == 1 {
			cus = cusB
		}
		req := chargeReq(cus, fmt.Sprintf("invoice-%d-attempt-1", i))
		req.PaymentMethod = "pm_card_visa"
		req.Metadata = map[string]string{"invoice_id": fmt.Sprint(i)}
		res, err := c.Charge(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		created = append(created, res.PaymentIntentID)
		e.clock.Advance(time.Minute)
	}
	newestFirst := slices.Clone(created)
	slices.Reverse(newestFirst)

	list := func(p payment.ListParams) []string {
		t.Helper()
		ct.mu.Lock()
		ct.lists = nil
		ct.mu.Unlock()
		var ids []string
		for pi, err := range c.ListPaymentIntents(ctx, p) {
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, pi.ID)
		}
		return ids
	}

	if got := list(payment.ListParams{}); !slices.Equal(got, newestFirst) {
		t.Errorf("listed %d intents, want all 250 newest first", len(got))
	}
	if len(ct.lists) != 3 {
		t.Fatalf("list requests = %d, want 3 pages of 100", len(ct.lists))
	}
	if got := ct.lists[0].Get("starting_after"); got != "" {
		t.Errorf("first page starting_after = %q", got)
	}
	for i, want := range []string{newestFirst[99], newestFirst[199]} {
		q := ct.lists[i+1]
		if q.Get("starting_after") != want || q.Get("limit") != "100" {
			t.Errorf("page %d query = %v, want starting_after=%s limit=100", i+2, q, want)
		}
	}

	// Created in [t0+100m, t0+150m): intents 100..149. A fractional start rounds up.
	from, to := t0.Add(100*time.Minute-500*time.Millisecond), t0.Add(150*time.Minute)
	window := slices.Clone(created[100:150])
	slices.Reverse(window)
	if got := list(payment.ListParams{CreatedFrom: from, CreatedTo: to}); !slices.Equal(got, window) {
		t.Errorf("created window: got %d intents %v..., want %d", len(got), got[:min(3, len(got))], len(window))
	}
	if q := ct.lists[0]; q.Get("created[gte]") != fmt.Sprint(t0.Add(100*time.Minute).Unix()) ||
		q.Get("created[lt]") != fmt.Sprint(to.Unix()) {
		t.Errorf("created filter sent as %v", q)
	}

	var wantA []string
	for i := 149; i >= 100; i-- {
		if i%2 == 0 {
			wantA = append(wantA, created[i])
		}
	}
	if got := list(payment.ListParams{Customer: cusA, CreatedFrom: from, CreatedTo: to}); !slices.Equal(got, wantA) {
		t.Errorf("customer A in window: got %d, want %d", len(got), len(wantA))
	}
	if got := list(payment.ListParams{Customer: cusB}); len(got) != 125 {
		t.Errorf("customer B: got %d, want 125", len(got))
	}

	// Streaming: stopping early fetches no further page.
	ct.mu.Lock()
	ct.lists = nil
	ct.mu.Unlock()
	n := 0
	for _, err := range c.ListPaymentIntents(ctx, payment.ListParams{}) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 5 {
			break
		}
	}
	if len(ct.lists) != 1 {
		t.Errorf("breaking after 5 items made %d requests, want 1", len(ct.lists))
	}
}

func TestListPaymentIntentsError(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	e.fake.FailNext(1, http.StatusInternalServerError)
	var errs []error
	count := 0
	for _, err := range c.ListPaymentIntents(context.Background(), payment.ListParams{}) {
		count++
		if err != nil {
			errs = append(errs, err)
		}
	}
	if count != 1 || len(errs) != 1 || !errors.Is(errs[0], payment.ErrTemporary) {
		t.Errorf("got %d items, errors %v; want exactly one ErrTemporary", count, errs)
	}
}
