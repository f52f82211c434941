package fakestripe

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
)

type paymentIntent struct {
	seq uint64
	obj paymentIntentJSON
	// refunded is what refunds took back from amount_received so far.
	refunded int64
	// changed is when the object last changed, on the fake's clock (unix nanoseconds):
	// search does not see it before changed + SearchLag.
	changed int64
}

func (p *paymentIntent) sortKey() sortKey { return sortKey{created: p.obj.Created, seq: p.seq} }

// render copies the object so that it can be marshalled outside the lock.
func (p *paymentIntent) render() paymentIntentJSON {
	o := p.obj
	if o.AmountDetails == nil { // seeded objects keep only what differs
		o.AmountDetails = map[string]any{"tip": map[string]any{}}
	}
	if o.PaymentMethodOptions == nil {
		o.PaymentMethodOptions = defaultCardOptions()
	}
	o.Metadata = maps.Clone(p.obj.Metadata)
	o.PaymentMethodTypes = slices.Clone(p.obj.PaymentMethodTypes)
	if p.obj.LastPaymentError != nil {
		e := *p.obj.LastPaymentError
		o.LastPaymentError = &e
	}
	return o
}

// paymentIntentJSON is Stripe's payment_intent object.
type paymentIntentJSON struct {
	ID                        string            `json:"id"`
	Object                    string            `json:"object"`
	Amount                    int64             `json:"amount"`
	AmountCapturable          int64             `json:"amount_capturable"`
	AmountDetails             map[string]any    `json:"amount_details"`
	AmountReceived            int64             `json:"amount_received"`
	Application               *string           `json:"application"`
	ApplicationFeeAmount      *int64            `json:"application_fee_amount"`
	AutomaticPaymentMethods   map[string]any    `json:"automatic_payment_methods"`
	CanceledAt                *int64            `json:"canceled_at"`
	CancellationReason        *string           `json:"cancellation_reason"`
	CaptureMethod             string            `json:"capture_method"`
	ClientSecret              string            `json:"client_secret"`
	ConfirmationMethod        string            `json:"confirmation_method"`
	Created                   int64             `json:"created"`
	Currency                  string            `json:"currency"`
	Customer                  *string           `json:"customer"`
	Description               *string           `json:"description"`
	LastPaymentError          *apiError         `json:"last_payment_error"`
	LatestCharge              *string           `json:"latest_charge"`
	Livemode                  bool              `json:"livemode"`
	Metadata                  map[string]string `json:"metadata"`
	NextAction                any               `json:"next_action"`
	OnBehalfOf                *string           `json:"on_behalf_of"`
	PaymentMethod             *string           `json:"payment_method"`
	PaymentMethodOptions      map[string]any    `json:"payment_method_options"`
	PaymentMethodTypes        []string          `json:"payment_method_types"`
	Processing                any               `json:"processing"`
	ReceiptEmail              *string           `json:"receipt_email"`
	Review                    *string           `json:"review"`
	SetupFutureUsage          *string           `json:"setup_future_usage"`
	Shipping                  any               `json:"shipping"`
	StatementDescriptor       *string           `json:"statement_descriptor"`
	StatementDescriptorSuffix *string           `json:"statement_descriptor_suffix"`
	Status                    string            `json:"status"`
	TransferData              any               `json:"transfer_data"`
	TransferGroup             *string           `json:"transfer_group"`
}

func paymentIntentPatterns() []paramPattern {
	return []paramPattern{"amount", "currency", "customer", "payment_method", "confirm", "off_session",
		"description", "metadata[*]", "expand[]", "payment_method_types[]",
		"automatic_payment_methods[enabled]", "automatic_payment_methods[allow_redirects]",
		"capture_method", "receipt_email", "return_url", "error_on_requires_action",
		"statement_descriptor", "statement_descriptor_suffix"}
}

// minimumCharge is Stripe's smallest chargeable amount per currency, in minor units
// (https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts); billing
// must cope with invoices below it.
func minimumCharge(currency string) int64 {
	switch currency {
	case "gbp":
		return 30
	case "jpy":
		return 50
	case "sek", "nok", "dkk":
		return 300
	}
	return 50
}

// createPaymentIntent creates a PaymentIntent; with confirm=true it charges the
// payment method at once, succeeding (200, status succeeded) or declining as Stripe
// does (402 card_error embedding the PaymentIntent in requires_payment_method).
func (s *Server) createPaymentIntent(r *request) response {
	f := r.form
	if bad := checkParams(f, paymentIntentPatterns()...); bad != nil {
		return *bad
	}
	amount, ok, bad := formInt(f, "amount")
	if bad != nil {
		return *bad
	}
	if !ok {
		return missingParam("amount")
	}
	currency, ok := lastValue(f, "currency")
	if !ok {
		return missingParam("currency")
	}
	currency = strings.ToLower(currency)
	if len(currency) != 3 || strings.Trim(currency, "abcdefghijklmnopqrstuvwxyz") != "" {
		return invalidParam("currency", "", "Invalid currency: "+currency+".")
	}
	if amount < 1 {
		return invalidParam("amount", "parameter_invalid_integer", "This value must be greater than or equal to 1.")
	}
	if min := minimumCharge(currency); amount < min {
		return invalidParam("amount", "amount_too_small",
			fmt.Sprintf("Amount must be at least %d.%02d %s", min/100, min%100, currency))
	}
	confirm, bad := formBool(f, "confirm")
	if bad != nil {
		return *bad
	}
	offSession, bad := formBool(f, "off_session")
	if bad != nil {
		return *bad
	}
	if offSession && !confirm {
		return invalidParam("off_session", "", "You can only pass in `off_session` when `confirm` is set to true.")
	}
	if _, bad := formBool(f, "automatic_payment_methods[enabled]"); bad != nil {
		return *bad
	}
	if _, bad := formBool(f, "error_on_requires_action"); bad != nil {
		return *bad
	}
	if v, ok := lastValue(f, "capture_method"); ok && v != "automatic" && v != "automatic_async" {
		return invalidParam("capture_method", "", "fakestripe supports only automatic capture, not "+v+".")
	}
	types := formList(f, "payment_method_types")
	for _, t := range types {
		if t != "card" {
			return invalidParam("payment_method_types", "", "fakestripe supports only card payments, not "+t+".")
		}
	}
	customerID, _ := lastValue(f, "customer")
	pmID, _ := lastValue(f, "payment_method")
	var card testCard
	if pmID != "" {
		if card, ok = lookupTestCard(pmID); !ok {
			return notFound("payment_method", "PaymentMethod", pmID)
		}
	}
	if confirm && pmID == "" {
		return errorResponse(http.StatusBadRequest, apiError{
			Type:    "invalid_request_error",
			Code:    "payment_intent_unexpected_state",
			DocURL:  "https://stripe.com/docs/error-codes/payment-intent-unexpected-state",
			Message: "You cannot confirm this PaymentIntent because it's missing a payment method. You can either update the PaymentIntent with a payment method and then confirm it again, or confirm it again directly with a payment method.",
		}, false)
	}
	allowRedirects, _ := lastValue(f, "automatic_payment_methods[allow_redirects]")
	returnURL, _ := lastValue(f, "return_url")
	if confirm && len(types) == 0 && allowRedirects != "never" && returnURL == "" {
		return invalidParam("return_url", "",
			"This PaymentIntent is configured to accept payment methods enabled in your Dashboard. Because some of these payment methods might redirect your customer off of your page, you must provide a `return_url`. If you don't want to accept redirect-based payment methods, set `automatic_payment_methods[enabled]` to `true` and `automatic_payment_methods[allow_redirects]` to `never` when creating Setup Intents and Payment Intents.")
	}
	created := s.now().Unix()

	s.mu.Lock()
	defer s.mu.Unlock()
	if customerID != "" && s.customers[customerID] == nil {
		return notFound("customer", "customer", customerID)
	}
	s.seq++
	pi := &paymentIntent{seq: s.seq, obj: paymentIntentJSON{
		Object:               "payment_intent",
		Amount:               amount,
		AmountDetails:        map[string]any{"tip": map[string]any{}},
		CaptureMethod:        "automatic",
		ConfirmationMethod:   "automatic",
		Created:              created,
		Currency:             currency,
		Customer:             optString(customerID),
		Description:          optString(lastOr(f, "description")),
		Metadata:             formMap(f, "metadata"),
		PaymentMethod:        optString(pmID),
		PaymentMethodOptions: defaultCardOptions(),
		PaymentMethodTypes:   []string{"card"},
		ReceiptEmail:         optString(lastOr(f, "receipt_email")),
		Status:               "requires_payment_method",
	}}
	pi.obj.ID = s.newIDLocked("pi")
	pi.obj.ClientSecret = pi.obj.ID + "_secret_fake"
	for k, v := range pi.obj.Metadata {
		if v == "" {
			delete(pi.obj.Metadata, k)
		}
	}
	if len(types) == 0 {
		pi.obj.AutomaticPaymentMethods = map[string]any{"allow_redirects": optString(allowRedirects), "enabled": true}
	}
	if v, ok := lastValue(f, "capture_method"); ok {
		pi.obj.CaptureMethod = v
	}
	pi.changed = s.now().UnixNano()
	s.intents[pi.obj.ID] = pi
	s.intentLine.add(pi)
	s.created++
	if pmID != "" && !confirm {
		pi.obj.Status = "requires_confirmation"
	}
	if !confirm {
		return jsonResponse(http.StatusOK, pi.render(), true)
	}

	chargeID := s.newIDLocked("ch")
	pi.obj.LatestCharge = &chargeID
	counts := s.charges[customerID]
	if counts == nil {
		counts = &chargeCount{}
		s.charges[customerID] = counts
	}
	if card.code == "" {
		counts.succeeded++
		pi.obj.Status = "succeeded"
		pi.obj.AmountReceived = amount
		if card.dispute {
			s.addDisputeLocked(pi, Dispute{Reason: "fraudulent", Status: "needs_response", Created: time.Unix(created, 0)})
		}
		return jsonResponse(http.StatusOK, pi.render(), true)
	}
	counts.failed++
	cardErr := apiError{
		Type:          "card_error",
		Code:          card.code,
		DeclineCode:   card.declineCode,
		Message:       card.message,
		DocURL:        "https://stripe.com/docs/error-codes/" + strings.ReplaceAll(card.code, "_", "-"),
		Charge:        chargeID,
		PaymentMethod: paymentMethodJSON(pmID, card, customerID, created),
	}
	stored := cardErr // the PaymentIntent's own copy does not embed the PaymentIntent
	pi.obj.LastPaymentError = &stored
	embedded := pi.render()
	cardErr.PaymentIntent = &embedded
	return errorResponse(http.StatusPaymentRequired, cardErr, true)
}

func defaultCardOptions() map[string]any {
	return map[string]any{"card": map[string]any{"installments": nil, "mandate_options": nil, "network": nil, "request_three_d_secure": "automatic"}}
}

func lastOr(f map[string][]string, key string) string {
	v, _ := lastValue(f, key)
	return v
}

func (s *Server) getPaymentIntent(r *request) response {
	if bad := checkParams(r.form, "expand[]", "client_secret"); bad != nil {
		return *bad
	}
	s.mu.Lock()
	pi := s.intents[r.pathID]
	if pi == nil {
		s.mu.Unlock()
		return notFound("id", "payment_intent", r.pathID)
	}
	obj := pi.render()
	s.mu.Unlock()
	return jsonResponse(http.StatusOK, obj, false)
}

// listPaymentIntents lists newest first, filtered by customer and created, paged
// with limit and starting_after/ending_before, as Stripe does.
func (s *Server) listPaymentIntents(r *request) response {
	if bad := checkParams(r.form, listPatterns("customer")...); bad != nil {
		return *bad
	}
	q, bad := parseListQuery(r.form)
	if bad != nil {
		return *bad
	}
	customerID, hasCustomer := lastValue(r.form, "customer")

	s.mu.Lock()
	defer s.mu.Unlock()
	keep := func(pi *paymentIntent) bool {
		return !hasCustomer || (pi.obj.Customer != nil && *pi.obj.Customer == customerID)
	}
	page, more, badPage := s.intentLine.page(q, keep, func(id string) (sortKey, bool) {
		pi := s.intents[id]
		if pi == nil {
			return sortKey{}, false
		}
		return pi.sortKey(), true
	}, "payment_intent")
	if badPage != nil {
		return *badPage
	}
	data := make([]paymentIntentJSON, len(page))
	for i, pi := range page {
		data[i] = pi.render()
	}
	return listResponse(data, more, "/v1/payment_intents")
}
