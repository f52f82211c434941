package fakestripe

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// testCard is what one of Stripe's test payment methods does when charged.
type testCard struct {
	brand, last4, funding string
	// code, declineCode and message are the card_error it raises; code "" succeeds.
	code, declineCode, message string
	// dispute: the charge succeeds and the cardholder's bank disputes it at once.
	dispute bool
}

// lookupTestCard knows Stripe's test PaymentMethod IDs (https://docs.stripe.com/testing).
func lookupTestCard(id string) (testCard, bool) {
	const declined = "Your card was declined."
	switch id {
	case "pm_card_visa":
		return testCard{brand: "visa", last4: "4242", funding: "credit"}, true
	case "pm_card_visa_debit":
		return testCard{brand: "visa", last4: "5556", funding: "debit"}, true
	case "pm_card_mastercard":
		return testCard{brand: "mastercard", last4: "4444", funding: "credit"}, true
	case "pm_card_amex":
		return testCard{brand: "amex", last4: "8431", funding: "credit"}, true
	case "pm_card_createDispute":
		return testCard{brand: "visa", last4: "0259", funding: "credit", dispute: true}, true
	case "pm_card_chargeDeclined":
		return testCard{brand: "visa", last4: "0002", funding: "credit",
			code: "card_declined", declineCode: "generic_decline", message: declined}, true
	case "pm_card_chargeDeclinedInsufficientFunds":
		return testCard{brand: "visa", last4: "9995", funding: "credit",
			code: "card_declined", declineCode: "insufficient_funds", message: "Your card has insufficient funds."}, true
	case "pm_card_chargeDeclinedLostCard":
		return testCard{brand: "visa", last4: "9987", funding: "credit",
			code: "card_declined", declineCode: "lost_card", message: declined}, true
	case "pm_card_chargeDeclinedStolenCard":
		return testCard{brand: "visa", last4: "9979", funding: "credit",
			code: "card_declined", declineCode: "stolen_card", message: declined}, true
	case "pm_card_chargeDeclinedFraudulent":
		return testCard{brand: "visa", last4: "0019", funding: "credit",
			code: "card_declined", declineCode: "fraudulent", message: declined}, true
	case "pm_card_chargeDeclinedExpiredCard":
		return testCard{brand: "visa", last4: "0069", funding: "credit",
			code: "expired_card", declineCode: "expired_card", message: "Your card has expired."}, true
	case "pm_card_chargeDeclinedProcessingError":
		return testCard{brand: "visa", last4: "0119", funding: "credit",
			code: "processing_error", message: "An error occurred while processing your card. Try again in a little bit."}, true
	}
	return testCard{}, false
}

// paymentMethodObject is Stripe's payment_method object, as embedded in card errors.
type paymentMethodObject struct {
	ID             string            `json:"id"`
	Object         string            `json:"object"`
	BillingDetails map[string]any    `json:"billing_details"`
	Card           map[string]any    `json:"card"`
	Created        int64             `json:"created"`
	Customer       *string           `json:"customer"`
	Livemode       bool              `json:"livemode"`
	Metadata       map[string]string `json:"metadata"`
	Type           string            `json:"type"`
}

func paymentMethodJSON(id string, card testCard, customer string, created int64) *paymentMethodObject {
	pm := &paymentMethodObject{
		ID:     id,
		Object: "payment_method",
		BillingDetails: map[string]any{
			"address": nil, "email": nil, "name": nil, "phone": nil,
		},
		Card: map[string]any{
			"brand": card.brand, "country": "US", "exp_month": 12, "exp_year": 2034,
			"funding": card.funding, "last4": card.last4,
		},
		Created:  created,
		Metadata: map[string]string{},
		Type:     "card",
	}
	if customer != "" {
		pm.Customer = &customer
	}
	return pm
}

// paramPattern names one accepted form key: "amount", "metadata[*]" (any single
// sub-key), "expand[]" (a list, "expand[]" or "expand[0]") or a nested key such as
// "invoice_settings[default_payment_method]".
type paramPattern string

// isListIndex reports whether s is "[]" or "[<digits>]".
func isListIndex(s string) bool {
	if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
		return false
	}
	for _, c := range s[1 : len(s)-1] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (p paramPattern) matches(key string) bool {
	s := string(p)
	switch {
	case strings.HasSuffix(s, "[*]"):
		root := strings.TrimSuffix(s, "[*]")
		rest, ok := strings.CutPrefix(key, root+"[")
		return ok && strings.HasSuffix(rest, "]") && !strings.ContainsAny(rest[:len(rest)-1], "[]")
	case strings.HasSuffix(s, "[]"):
		rest, ok := strings.CutPrefix(key, strings.TrimSuffix(s, "[]"))
		return ok && isListIndex(rest)
	}
	return key == s
}

// checkParams rejects a form key no pattern accepts, as Stripe does with
// parameter_unknown: a misspelt parameter must fail loudly, not be ignored.
func checkParams(form url.Values, allowed ...paramPattern) *response {
	for key := range form {
		ok := false
		for _, p := range allowed {
			if p.matches(key) {
				ok = true
				break
			}
		}
		if !ok {
			r := invalidParam(key, "parameter_unknown", "Received unknown parameter: "+key)
			return &r
		}
	}
	return nil
}

// formMap gathers root[key]=value pairs (metadata) into a map.
func formMap(form url.Values, root string) map[string]string {
	m := map[string]string{}
	for key, vs := range form {
		rest, ok := strings.CutPrefix(key, root+"[")
		if !ok || !strings.HasSuffix(rest, "]") || len(vs) == 0 {
			continue
		}
		m[strings.TrimSuffix(rest, "]")] = vs[len(vs)-1]
	}
	return m
}

// formList gathers root[]=v / root[0]=v values in index order.
func formList(form url.Values, root string) []string {
	type item struct {
		idx int
		v   string
	}
	var items []item
	for key, vs := range form {
		rest, ok := strings.CutPrefix(key, root)
		if !ok || !isListIndex(rest) {
			continue
		}
		idx := -1 // root[] keeps its order, before indexed items
		if n, err := strconv.Atoi(rest[1 : len(rest)-1]); err == nil {
			idx = n
		}
		for _, v := range vs {
			items = append(items, item{idx, v})
		}
	}
	// Stable insertion sort: lists are tiny.
	for i := 1; i < len(items); i++ {
		for j := i; j > 0 && items[j].idx < items[j-1].idx; j-- {
			items[j], items[j-1] = items[j-1], items[j]
		}
	}
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.v
	}
	return out
}

// formInt parses an optional integer parameter.
func formInt(form url.Values, key string) (int64, bool, *response) {
	v, ok := lastValue(form, key)
	if !ok {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		r := invalidParam(key, "parameter_invalid_integer", "Invalid integer: "+v)
		return 0, false, &r
	}
	return n, true, nil
}

// formBool parses an optional boolean parameter.
func formBool(form url.Values, key string) (bool, *response) {
	v, ok := lastValue(form, key)
	if !ok {
		return false, nil
	}
	switch v {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	r := invalidParam(key, "", "Invalid boolean: "+v)
	return false, &r
}

func lastValue(form url.Values, key string) (string, bool) {
	vs, ok := form[key]
	if !ok || len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

// optString returns a pointer for a JSON field that Stripe renders as null when unset.
func optString(v string) *string {
	if v == "" {
		return nil
	}
	return &v
}

func missingParam(param string) response {
	return invalidParam(param, "parameter_missing", "Missing required param: "+param+".")
}

// listQuery is the pagination and created-filter part of a list request.
type listQuery struct {
	limit         int
	startingAfter string
	endingBefore  string
	created       createdFilter
}

type createdFilter struct {
	gt, gte, lt, lte int64
	hasGT, hasGTE    bool
	hasLT, hasLTE    bool
}

func (f createdFilter) match(created int64) bool {
	return (!f.hasGT || created > f.gt) && (!f.hasGTE || created >= f.gte) &&
		(!f.hasLT || created < f.lt) && (!f.hasLTE || created <= f.lte)
}

// listPatterns are the parameters every list endpoint accepts, plus its own filters.
func listPatterns(filters ...paramPattern) []paramPattern {
	return append([]paramPattern{"limit", "starting_after", "ending_before", "expand[]",
		"created", "created[gt]", "created[gte]", "created[lt]", "created[lte]"}, filters...)
}

func parseListQuery(form url.Values) (listQuery, *response) {
	q := listQuery{limit: 10}
	if n, ok, bad := formInt(form, "limit"); bad != nil {
		return q, bad
	} else if ok {
		if n < 1 || n > 100 {
			r := invalidParam("limit", "parameter_invalid_integer",
				"Invalid limit: must be between 1 and 100, got "+strconv.FormatInt(n, 10)+".")
			return q, &r
		}
		q.limit = int(n)
	}
	q.startingAfter, _ = lastValue(form, "starting_after")
	q.endingBefore, _ = lastValue(form, "ending_before")
	if q.startingAfter != "" && q.endingBefore != "" {
		r := invalidParam("ending_before", "", "You may only specify one of these parameters: ending_before, starting_after.")
		return q, &r
	}
	f := &q.created
	for _, b := range []struct {
		key string
		v   *int64
		has *bool
	}{
		{"created", &f.gte, &f.hasGTE}, {"created[gt]", &f.gt, &f.hasGT}, {"created[gte]", &f.gte, &f.hasGTE},
		{"created[lt]", &f.lt, &f.hasLT}, {"created[lte]", &f.lte, &f.hasLTE},
	} {
		n, ok, bad := formInt(form, b.key)
		if bad != nil {
			return q, bad
		}
		if ok {
			*b.v, *b.has = n, true
			if b.key == "created" { // an exact second
				f.lte, f.hasLTE = n, true
			}
		}
	}
	return q, nil
}

// sortKey orders list items newest first, as Stripe lists them; seq breaks ties
// between objects created in the same second.
type sortKey struct {
	created int64
	seq     uint64
}

func (a sortKey) newerThan(b sortKey) bool {
	return a.created > b.created || (a.created == b.created && a.seq > b.seq)
}

// paginate cuts one page out of items (already filtered and sorted newest first).
// cursor finds the sort key of the object named by starting_after/ending_before.
func paginate[T any](items []T, key func(T) sortKey, q listQuery, cursor func(id string) (sortKey, bool), object string) ([]T, bool, *response) {
	switch {
	case q.startingAfter != "":
		c, ok := cursor(q.startingAfter)
		if !ok {
			r := notFound("starting_after", object, q.startingAfter)
			return nil, false, &r
		}
		i := 0
		for i < len(items) && !c.newerThan(key(items[i])) {
			i++
		}
		rest := items[i:]
		if len(rest) > q.limit {
			return rest[:q.limit], true, nil
		}
		return rest, false, nil
	case q.endingBefore != "":
		c, ok := cursor(q.endingBefore)
		if !ok {
			r := notFound("ending_before", object, q.endingBefore)
			return nil, false, &r
		}
		i := 0
		for i < len(items) && key(items[i]).newerThan(c) {
			i++
		}
		before := items[:i]
		if len(before) > q.limit {
			return before[len(before)-q.limit:], true, nil
		}
		return before, false, nil
	}
	if len(items) > q.limit {
		return items[:q.limit], true, nil
	}
	return items, false, nil
}

// listJSON is Stripe's list envelope.
type listJSON struct {
	Object  string `json:"object"`
	Data    any    `json:"data"`
	HasMore bool   `json:"has_more"`
	URL     string `json:"url"`
}

func listResponse(data any, hasMore bool, path string) response {
	return jsonResponse(http.StatusOK, listJSON{Object: "list", Data: data, HasMore: hasMore, URL: path}, false)
}
