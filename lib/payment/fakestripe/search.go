package fakestripe

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"time"
)

// PaymentIntent seeds a PaymentIntent directly, without an API call: what a charge
// would have left at Stripe, or what one made elsewhere did (tests, the demo, the
// benchmark's million).
type PaymentIntent struct {
	// ID is the PaymentIntent's ID (pi_...); empty means the fake picks one.
	ID       string
	Customer string
	Amount   int64
	Currency string
	// Status is succeeded (the default), requires_payment_method (a decline, see
	// DeclineCode), processing, requires_action, requires_confirmation or canceled.
	Status string
	// DeclineCode is the decline of a requires_payment_method PaymentIntent
	// (generic_decline by default).
	DeclineCode string
	// PaymentMethod defaults to pm_card_visa.
	PaymentMethod string
	Metadata      map[string]string
	Created       time.Time // zero: the fake's now
}

// AddPaymentIntent creates a PaymentIntent in the state p describes and returns its
// ID. A succeeded one has a charge (latest_charge) and its amount received.
func (s *Server) AddPaymentIntent(p PaymentIntent) (string, error) {
	if p.Status == "" {
		p.Status = "succeeded"
	}
	if p.PaymentMethod == "" {
		p.PaymentMethod = "pm_card_visa"
	}
	currency := strings.ToLower(p.Currency)
	switch {
	case p.ID != "" && !strings.HasPrefix(p.ID, "pi_"):
		return "", fmt.Errorf("payment intent %q: IDs start with pi_", p.ID)
	case p.Amount < 1 || len(currency) != 3:
		return "", fmt.Errorf("payment intent %q: a positive amount and a 3-letter currency are required", p.ID)
	}
	switch p.Status {
	case "succeeded", "requires_payment_method", "processing", "requires_action", "requires_confirmation", "canceled":
	default:
		return "", fmt.Errorf("payment intent %q: unknown status %q", p.ID, p.Status)
	}
	created := p.Created
	if created.IsZero() {
		created = s.now()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.ID == "" {
		p.ID = s.newIDLocked("pi")
	} else if s.intents[p.ID] != nil {
		return "", fmt.Errorf("payment intent %q already exists", p.ID)
	}
	if p.Customer != "" && s.customers[p.Customer] == nil {
		return "", fmt.Errorf("payment intent %q: no such customer %q", p.ID, p.Customer)
	}
	s.seq++
	meta := maps.Clone(p.Metadata)
	if meta == nil {
		meta = map[string]string{}
	}
	pi := &paymentIntent{seq: s.seq, changed: s.now().UnixNano(), obj: paymentIntentJSON{
		ID: p.ID, Object: "payment_intent", Amount: p.Amount, CaptureMethod: "automatic",
		ClientSecret: p.ID + "_secret_fake", ConfirmationMethod: "automatic", Created: created.Unix(),
		Currency: currency, Customer: optString(p.Customer), Metadata: meta, PaymentMethod: optString(p.PaymentMethod),
		PaymentMethodTypes: []string{"card"}, Status: p.Status,
	}}
	if p.Status != "requires_confirmation" {
		ch := s.newIDLocked("ch")
		pi.obj.LatestCharge = &ch
	}
	switch p.Status {
	case "succeeded":
		pi.obj.AmountReceived = p.Amount
	case "requires_payment_method":
		code := p.DeclineCode
		if code == "" {
			code = "generic_decline"
		}
		pi.obj.LastPaymentError = &apiError{Type: "card_error", Code: "card_declined", DeclineCode: code,
			Message: "Your card was declined.", Charge: *pi.obj.LatestCharge}
	case "canceled":
		at := created.Unix()
		pi.obj.CanceledAt = &at
	}
	s.intents[p.ID] = pi
	s.intentLine.add(pi)
	return p.ID, nil
}

// searchClause is one field:'value' term of a search query.
type searchClause struct {
	field string // status, customer, or metadata[key] as "metadata:<key>"
	value string
}

// parseSearchQuery reads the subset of Stripe's search query language the fake
// serves: terms metadata['key']:'value', status:'value' and customer:'value', joined
// by AND. Anything else is refused, so a query the fake cannot judge never answers
// "nothing found".
func parseSearchQuery(q string) ([]searchClause, error) {
	var out []searchClause
	rest := strings.TrimSpace(q)
	if rest == "" {
		return nil, errors.New("the query is empty")
	}
	for {
		var c searchClause
		switch {
		case strings.HasPrefix(rest, "metadata["):
			key, after, err := readQuoted(rest[len("metadata["):])
			if err != nil || !strings.HasPrefix(after, "]") {
				return nil, fmt.Errorf("bad metadata key in %q", q)
			}
			c.field, rest = "metadata:"+key, after[1:]
		case strings.HasPrefix(rest, "status"):
			c.field, rest = "status", rest[len("status"):]
		case strings.HasPrefix(rest, "customer"):
			c.field, rest = "customer", rest[len("customer"):]
		default:
			return nil, fmt.Errorf("fakestripe searches metadata, status and customer only, not %q", rest)
		}
		if !strings.HasPrefix(rest, ":") {
			return nil, fmt.Errorf("fakestripe supports only the ':' operator in %q", q)
		}
		v, after, err := readQuoted(rest[1:])
		if err != nil {
			return nil, fmt.Errorf("bad value in %q: %v", q, err)
		}
		c.value = v
		out = append(out, c)
		after = strings.TrimSpace(after)
		if after == "" {
			return out, nil
		}
		next, ok := strings.CutPrefix(after, "AND ")
		if !ok {
			return nil, fmt.Errorf("fakestripe joins terms with AND only, at %q", after)
		}
		rest = strings.TrimSpace(next)
	}
}

// readQuoted reads a '...' or "..." string with backslash escapes and returns it and
// what follows.
func readQuoted(s string) (string, string, error) {
	if s == "" || (s[0] != '\'' && s[0] != '"') {
		return "", "", errors.New("want a quoted string")
	}
	quote := s[0]
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if i+1 == len(s) {
				return "", "", errors.New("dangling backslash")
			}
			i++
			b.WriteByte(s[i])
		case quote:
			return b.String(), s[i+1:], nil
		default:
			b.WriteByte(s[i])
		}
	}
	return "", "", errors.New("unterminated string")
}

func (c searchClause) match(pi *paymentIntent) bool {
	switch {
	case c.field == "status":
		return pi.obj.Status == c.value
	case c.field == "customer":
		return pi.obj.Customer != nil && *pi.obj.Customer == c.value
	}
	key := strings.TrimPrefix(c.field, "metadata:")
	v, ok := pi.obj.Metadata[key]
	return ok && v == c.value
}

// searchResultJSON is Stripe's search_result envelope.
type searchResultJSON struct {
	Object   string  `json:"object"`
	Data     any     `json:"data"`
	HasMore  bool    `json:"has_more"`
	NextPage *string `json:"next_page"`
	URL      string  `json:"url"`
}

// searchPaymentIntents is GET /v1/payment_intents/search, newest first, paged with
// page/next_page. Objects changed less than SearchLag ago are not found yet.
func (s *Server) searchPaymentIntents(r *request) response {
	if bad := checkParams(r.form, "query", "limit", "page", "expand[]"); bad != nil {
		return *bad
	}
	query, ok := lastValue(r.form, "query")
	if !ok {
		return missingParam("query")
	}
	clauses, err := parseSearchQuery(query)
	if err != nil {
		return invalidParam("query", "", err.Error())
	}
	q, bad := parseListQuery(r.form)
	if bad != nil {
		return *bad
	}
	page, _ := lastValue(r.form, "page")
	cutoff := s.now().Add(-s.SearchLag).UnixNano()

	s.mu.Lock()
	defer s.mu.Unlock()
	if page != "" {
		after, ok := strings.CutPrefix(page, "page_")
		if !ok || s.intents[after] == nil {
			return invalidParam("page", "", "Invalid page: "+page)
		}
		q.startingAfter = after
	}
	keep := func(pi *paymentIntent) bool {
		if s.SearchLag > 0 && pi.changed > cutoff {
			return false
		}
		for _, c := range clauses {
			if !c.match(pi) {
				return false
			}
		}
		return true
	}
	found, more, badPage := s.intentLine.page(q, keep, func(id string) (sortKey, bool) {
		return s.intents[id].sortKey(), true
	}, "payment_intent")
	if badPage != nil {
		return *badPage
	}
	data := make([]paymentIntentJSON, len(found))
	for i, pi := range found {
		data[i] = pi.render()
	}
	res := searchResultJSON{Object: "search_result", Data: data, HasMore: more, URL: "/v1/payment_intents/search"}
	if more {
		next := "page_" + found[len(found)-1].obj.ID
		res.NextPage = &next
	}
	return jsonResponse(http.StatusOK, res, false)
}
