// Package fakestripe is a stateful stand-in for the Stripe API, so that the billing job's
// charging, retry and idempotency paths can be tested (and demonstrated) on loopback
// with the real stripe-go client talking HTTP to it: only the backend URL differs.
//
// It keeps customers and PaymentIntents in memory, answers with Stripe's JSON shapes
// and HTTP statuses, honours Stripe's test payment methods (pm_card_visa succeeds,
// pm_card_chargeDeclined* decline with the matching codes), implements Stripe's
// idempotency-key semantics against an injectable clock, and can inject the failures a
// payment integration has to survive: 5xx/429 answers, lost responses and requests
// still in flight.
//
// It also keeps refunds (created through the API or seeded) and disputes (raised by
// Stripe's pm_card_createDispute test card or seeded, settled by submitting Stripe's
// winning_evidence or losing_evidence), lists everything newest first with created
// filters and starting_after, searches PaymentIntents by metadata, status and
// customer, and expands a refund's or dispute's payment_intent.
//
// Not covered: other objects, other expansions (accepted and ignored), 3-D Secure,
// captures.
package fakestripe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// idempotencyTTL is how long Stripe remembers an idempotency key.
const idempotencyTTL = 24 * time.Hour

// Server is the fake Stripe API. Its zero value is not usable: build it with New.
// Every method is safe for concurrent use.
type Server struct {
	// Now is the fake's clock: it stamps created times and ages idempotency keys, so a
	// test can jump 24 hours ahead. Nil means time.Now. Set it before serving requests.
	Now func() time.Time
	// SearchLag is how long a new or changed PaymentIntent stays invisible to search,
	// as Stripe's search index lags its writes (about a minute, an hour in an
	// outage); zero finds everything at once. Set it before serving requests.
	SearchLag time.Duration

	mu          sync.Mutex
	keys        map[string]bool
	customers   map[string]*customer
	intents     map[string]*paymentIntent
	intentLine  timeline[*paymentIntent]
	refunds     map[string]*refund
	refundLine  timeline[*refund]
	disputes    map[string]*dispute
	disputeLine timeline[*dispute]
	idem        map[idemScope]*idemEntry
	seq         uint64
	faults      []int // statuses to answer, in order, without doing anything
	drops       int   // responses to process and then lose
	pauses      []*pause
	charges     map[string]*chargeCount // per customer ID
	created     int                     // PaymentIntents created
	closing     chan struct{}
	closeOnce   sync.Once
}

// New returns an empty fake that accepts only secretKey as its API key.
func New(secretKey string) *Server {
	return &Server{
		keys:      map[string]bool{secretKey: true},
		customers: map[string]*customer{},
		intents:   map[string]*paymentIntent{},
		refunds:   map[string]*refund{},
		disputes:  map[string]*dispute{},
		idem:      map[idemScope]*idemEntry{},
		charges:   map[string]*chargeCount{},
		closing:   make(chan struct{}),
	}
}

// AllowKey accepts one more API key, as during a key rotation. Idempotency keys stay
// scoped per API key, as Stripe scopes them.
func (s *Server) AllowKey(secretKey string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[secretKey] = true
}

func (s *Server) now() time.Time {
	now := s.Now
	if now == nil {
		now = time.Now
	}
	return now()
}

// Handler serves the fake API, for httptest.NewServer. Call Close before closing the
// httptest server so that responses held back by DropResponseNext or PauseNext are
// released.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/customers", s.api(s.createCustomer))
	mux.HandleFunc("GET /v1/customers", s.api(s.listCustomers))
	mux.HandleFunc("GET /v1/customers/{id}", s.api(s.getCustomer))
	mux.HandleFunc("POST /v1/customers/{id}", s.api(s.updateCustomer))
	mux.HandleFunc("POST /v1/payment_intents", s.api(s.createPaymentIntent))
	mux.HandleFunc("GET /v1/payment_intents", s.api(s.listPaymentIntents))
	mux.HandleFunc("GET /v1/payment_intents/search", s.api(s.searchPaymentIntents))
	mux.HandleFunc("GET /v1/payment_intents/{id}", s.api(s.getPaymentIntent))
	mux.HandleFunc("POST /v1/refunds", s.api(s.createRefund))
	mux.HandleFunc("GET /v1/refunds", s.api(s.listRefunds))
	mux.HandleFunc("GET /v1/refunds/{id}", s.api(s.getRefund))
	mux.HandleFunc("GET /v1/disputes", s.api(s.listDisputes))
	mux.HandleFunc("GET /v1/disputes/{id}", s.api(s.getDispute))
	mux.HandleFunc("POST /v1/disputes/{id}", s.api(s.updateDispute))
	mux.HandleFunc("/", s.api(func(r *request) response {
		return errorResponse(http.StatusNotFound, apiError{
			Type: "invalid_request_error",
			Message: fmt.Sprintf("Unrecognized request URL (%s: %s). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.",
				r.method, r.path),
		}, false)
	}))
	return mux
}

// Start serves the fake on addr, which must be a loopback address such as
// "127.0.0.1:0", and returns its base URL (give it to payment.Config.BaseURL) and a
// function that stops it.
func (s *Server) Start(addr string) (baseURL string, stop func(), err error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", nil, fmt.Errorf("start fake stripe on %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return "", nil, fmt.Errorf("start fake stripe on %q: only a loopback IP address is allowed", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("start fake stripe: %w", err)
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // always ErrServerClosed after Close
	}()
	stop = func() {
		s.Close()
		_ = srv.Close()
		<-done
	}
	return "http://" + ln.Addr().String(), stop, nil
}

// Close releases every response the fake is holding back, so that servers can shut
// down. The fake keeps answering requests afterwards, but no longer holds any.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closing) })
}

// FailNext makes the next n requests, whatever they are, answer status (500, 503,
// 429...) with Stripe's error body, without doing anything and without storing an
// idempotent result, as when Stripe's edge rejects a request.
func (s *Server) FailNext(n int, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults = append(s.faults, status)
	}
}

// DropResponseNext makes the next n POST requests be processed in full (the charge
// happens and the idempotent result is stored) and then lose their answer: the fake
// holds it until the client gives up and then drops the connection, as when a
// provider's answer is lost on the way back. A retry with the same key must then get
// the original result.
func (s *Server) DropResponseNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drops += n
}

// PauseNext holds the next POST request that carries an Idempotency-Key (stripe-go
// always sends one) in flight once the key is reserved, before anything is done, so that a test can send a concurrent request
// with the same key. arrived is closed when the request is being held; release lets
// it go on (calling it more than once is harmless).
func (s *Server) PauseNext() (arrived <-chan struct{}, release func()) {
	p := &pause{arrived: make(chan struct{}), release: make(chan struct{})}
	s.mu.Lock()
	s.pauses = append(s.pauses, p)
	s.mu.Unlock()
	var once sync.Once
	return p.arrived, func() { once.Do(func() { close(p.release) }) }
}

type pause struct {
	arrived chan struct{}
	release chan struct{}
}

// PaymentIntentCount reports how many PaymentIntents were created: the number a test
// asserts to prove a retry did not charge twice.
func (s *Server) PaymentIntentCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.created
}

// ChargeCount reports the card charges attempted for a customer, split into
// succeeded and failed (declined), as Stripe records a charge for each attempt.
func (s *Server) ChargeCount(customerID string) (succeeded, failed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.charges[customerID]
	if c == nil {
		return 0, 0
	}
	return c.succeeded, c.failed
}

type chargeCount struct{ succeeded, failed int }

// request is a parsed API call.
type request struct {
	ctx     context.Context
	method  string
	path    string
	apiKey  string
	form    url.Values
	pathID  string
	reqID   string
	idemKey string
}

// response is what an endpoint answers; store says whether the idempotency layer may
// keep it (Stripe keeps nothing for requests that fail validation).
type response struct {
	status int
	body   []byte
	store  bool
}

func (s *Server) api(endpoint func(*request) response) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		reqID := s.newID("req")
		w.Header().Set("Request-Id", reqID)
		w.Header().Set("Content-Type", "application/json")
		if v := r.Header.Get("Stripe-Version"); v != "" {
			w.Header().Set("Stripe-Version", v)
		}

		if status, ok := s.takeFault(); ok {
			writeResponse(w, faultResponse(status))
			return
		}

		key, resp, ok := s.authenticate(r)
		if !ok {
			w.Header().Set("Www-Authenticate", `Bearer realm="Stripe"`)
			writeResponse(w, resp)
			return
		}

		form, err := readForm(r)
		if err != nil {
			writeResponse(w, errorResponse(http.StatusBadRequest, apiError{
				Type:    "invalid_request_error",
				Message: "Invalid request body: " + err.Error(),
			}, false))
			return
		}
		req := &request{
			ctx:    r.Context(),
			method: r.Method,
			path:   r.URL.Path,
			apiKey: key,
			form:   form,
			pathID: r.PathValue("id"),
			reqID:  reqID,
		}
		if r.Method == http.MethodPost {
			req.idemKey = strings.TrimSpace(r.Header.Get("Idempotency-Key"))
		}
		if req.idemKey == "" {
			resp := endpoint(req)
			if r.Method == http.MethodPost {
				s.deliver(w, req, resp)
				return
			}
			writeResponse(w, resp)
			return
		}
		w.Header().Set("Idempotency-Key", req.idemKey)
		s.serveIdempotent(w, req, endpoint)
	}
}

func (s *Server) takeFault() (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.faults) == 0 {
		return 0, false
	}
	status := s.faults[0]
	s.faults = s.faults[1:]
	return status, true
}

func faultResponse(status int) response {
	e := apiError{Type: "api_error", Message: "An unknown error occurred"}
	switch {
	case status == http.StatusTooManyRequests:
		e = apiError{
			Type:    "invalid_request_error",
			Code:    "rate_limit",
			Message: "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
			DocURL:  "https://stripe.com/docs/error-codes/rate-limit",
		}
	case status < 500:
		e = apiError{Type: "invalid_request_error", Message: http.StatusText(status)}
	}
	return errorResponse(status, e, false)
}

// authenticate accepts "Authorization: Bearer <key>" and, as Stripe does, HTTP basic
// auth with the key as user name.
func (s *Server) authenticate(r *http.Request) (string, response, bool) {
	var key string
	auth := r.Header.Get("Authorization")
	if user, _, ok := r.BasicAuth(); ok {
		key = user
	} else if k, ok := strings.CutPrefix(auth, "Bearer "); ok {
		key = strings.TrimSpace(k)
	}
	if key == "" {
		return "", errorResponse(http.StatusUnauthorized, apiError{
			Type:    "invalid_request_error",
			Message: "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.",
		}, false), false
	}
	s.mu.Lock()
	ok := s.keys[key]
	s.mu.Unlock()
	if !ok {
		return "", errorResponse(http.StatusUnauthorized, apiError{
			Type:    "invalid_request_error",
			Message: "Invalid API Key provided: " + maskKey(key),
		}, false), false
	}
	return key, response{}, true
}

// maskKey shows a key the way Stripe's error messages do: its prefix and last four
// characters only.
func maskKey(key string) string {
	prefix := ""
	for _, p := range []string{"sk_test_", "sk_live_", "rk_test_", "rk_live_", "pk_test_", "pk_live_"} {
		if strings.HasPrefix(key, p) {
			prefix = p
			break
		}
	}
	rest := key[len(prefix):]
	if len(rest) <= 4 {
		return prefix + strings.Repeat("*", len(rest))
	}
	return prefix + strings.Repeat("*", len(rest)-4) + rest[len(rest)-4:]
}

func readForm(r *http.Request) (url.Values, error) {
	if r.Method == http.MethodGet || r.Method == http.MethodDelete {
		return url.ParseQuery(r.URL.RawQuery)
	}
	const maxBody = 1 << 20
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxBody {
		return nil, errors.New("larger than 1 MiB")
	}
	return url.ParseQuery(string(body))
}

func writeResponse(w http.ResponseWriter, resp response) {
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body)
}

// newID returns a Stripe-looking ID; IDs are deterministic per server so that demo
// output is stable, and unique within it.
func (s *Server) newID(prefix string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newIDLocked(prefix)
}

func (s *Server) newIDLocked(prefix string) string {
	s.seq++
	return fmt.Sprintf("%s_1Fake%019d", prefix, s.seq)
}

// apiError is Stripe's error object.
type apiError struct {
	Type          string               `json:"type"`
	Code          string               `json:"code,omitempty"`
	DeclineCode   string               `json:"decline_code,omitempty"`
	Message       string               `json:"message,omitempty"`
	Param         string               `json:"param,omitempty"`
	DocURL        string               `json:"doc_url,omitempty"`
	Charge        string               `json:"charge,omitempty"`
	PaymentIntent *paymentIntentJSON   `json:"payment_intent,omitempty"`
	PaymentMethod *paymentMethodObject `json:"payment_method,omitempty"`
}

func errorResponse(status int, e apiError, store bool) response {
	return jsonResponse(status, struct {
		Error apiError `json:"error"`
	}{e}, store)
}

func jsonResponse(status int, v any, store bool) response {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		// Only plain structs, maps and strings are marshalled here.
		panic(fmt.Sprintf("fakestripe: marshal response: %v", err))
	}
	return response{status: status, body: append(body, '\n'), store: store}
}

func invalidParam(param, code, msg string) response {
	e := apiError{Type: "invalid_request_error", Code: code, Message: msg, Param: param}
	if code != "" {
		e.DocURL = "https://stripe.com/docs/error-codes/" + strings.ReplaceAll(code, "_", "-")
	}
	return errorResponse(http.StatusBadRequest, e, false)
}

func notFound(param, object, id string) response {
	e := apiError{
		Type:    "invalid_request_error",
		Code:    "resource_missing",
		DocURL:  "https://stripe.com/docs/error-codes/resource-missing",
		Message: fmt.Sprintf("No such %s: '%s'", object, id),
		Param:   param,
	}
	status := http.StatusBadRequest
	if param == "id" {
		status = http.StatusNotFound
	}
	return errorResponse(status, e, false)
}
