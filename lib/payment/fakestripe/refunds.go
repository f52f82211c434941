package fakestripe

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Refund seeds a refund directly, as one made in Stripe's dashboard would be.
type Refund struct {
	// ID is the refund's ID (re_...); empty means the fake picks one.
	ID            string
	PaymentIntent string
	// Amount is in minor units; 0 refunds what is left of the PaymentIntent.
	Amount int64
	// Status is succeeded (the default), pending, failed, canceled or requires_action.
	Status string
	// Reason is duplicate, fraudulent, requested_by_customer or empty.
	Reason  string
	Created time.Time // zero: the fake's now
}

type refund struct {
	seq    uint64
	intent *paymentIntent
	obj    refundJSON
}

func (r *refund) sortKey() sortKey { return sortKey{created: r.obj.Created, seq: r.seq} }

// refundJSON is Stripe's refund object. PaymentIntent is the ID, or the object when
// expanded.
type refundJSON struct {
	ID                     string            `json:"id"`
	Object                 string            `json:"object"`
	Amount                 int64             `json:"amount"`
	BalanceTransaction     *string           `json:"balance_transaction"`
	Charge                 *string           `json:"charge"`
	Created                int64             `json:"created"`
	Currency               string            `json:"currency"`
	DestinationDetails     any               `json:"destination_details"`
	Metadata               map[string]string `json:"metadata"`
	PaymentIntent          any               `json:"payment_intent"`
	Reason                 *string           `json:"reason"`
	ReceiptNumber          *string           `json:"receipt_number"`
	SourceTransferReversal *string           `json:"source_transfer_reversal"`
	Status                 string            `json:"status"`
	TransferReversal       *string           `json:"transfer_reversal"`
}

// render copies the refund for marshalling outside the lock, its PaymentIntent
// expanded or not.
func (r *refund) render(expand bool) refundJSON {
	o := r.obj
	o.Metadata = maps.Clone(r.obj.Metadata)
	o.PaymentIntent = r.intent.obj.ID
	if expand {
		o.PaymentIntent = r.intent.render()
	}
	return o
}

// refundTakes says whether a refund in this status takes money back (or will).
func refundTakes(status string) bool { return status == "succeeded" || status == "pending" }

func validRefundStatus(s string) bool {
	switch s {
	case "succeeded", "pending", "failed", "canceled", "requires_action":
		return true
	}
	return false
}

func validRefundReason(s string) bool {
	switch s {
	case "", "duplicate", "fraudulent", "requested_by_customer":
		return true
	}
	return false
}

// AddRefund refunds a succeeded PaymentIntent directly and returns the refund's ID.
func (s *Server) AddRefund(r Refund) (string, error) {
	if r.Status == "" {
		r.Status = "succeeded"
	}
	if !validRefundStatus(r.Status) || !validRefundReason(r.Reason) {
		return "", fmt.Errorf("refund of %s: status %q or reason %q unknown", r.PaymentIntent, r.Status, r.Reason)
	}
	if r.ID != "" && !strings.HasPrefix(r.ID, "re_") {
		return "", fmt.Errorf("refund %q: IDs start with re_", r.ID)
	}
	created := r.Created.Unix()
	if r.Created.IsZero() {
		created = s.now().Unix()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	pi := s.intents[r.PaymentIntent]
	if pi == nil {
		return "", fmt.Errorf("refund: no such payment intent %q", r.PaymentIntent)
	}
	if r.ID != "" && s.refunds[r.ID] != nil {
		return "", fmt.Errorf("refund %q already exists", r.ID)
	}
	amount, msg := refundable(pi, r.Amount)
	if msg != "" {
		return "", fmt.Errorf("refund of %s: %s", pi.obj.ID, msg)
	}
	return s.addRefundLocked(pi, r.ID, amount, r.Status, r.Reason, created, nil).obj.ID, nil
}

// refundable checks a refund of amount (0: the rest) against what pi has left.
func refundable(pi *paymentIntent, amount int64) (int64, string) {
	if pi.obj.Status != "succeeded" {
		return 0, "This PaymentIntent does not have a successful charge to refund."
	}
	left := pi.obj.AmountReceived - pi.refunded
	if amount == 0 {
		amount = left
	}
	if amount <= 0 || amount > left {
		return 0, fmt.Sprintf("Refund amount (%d) is greater than unrefunded amount on charge (%d)", amount, left)
	}
	return amount, ""
}

func (s *Server) addRefundLocked(pi *paymentIntent, id string, amount int64, status, reason string, created int64, meta map[string]string) *refund {
	if id == "" {
		id = s.newIDLocked("re")
	}
	s.seq++
	if meta == nil {
		meta = map[string]string{}
	}
	re := &refund{seq: s.seq, intent: pi, obj: refundJSON{
		ID: id, Object: "refund", Amount: amount, Charge: pi.obj.LatestCharge, Created: created,
		Currency: pi.obj.Currency, Metadata: meta, Reason: optString(reason), Status: status,
	}}
	if refundTakes(status) {
		pi.refunded += amount
	}
	s.refunds[id] = re
	s.refundLine.add(re)
	return re
}

// createRefund is POST /v1/refunds: a refund of a succeeded PaymentIntent (by
// payment_intent or charge), whole or partial, succeeding at once as card refunds
// in test mode do.
func (s *Server) createRefund(r *request) response {
	f := r.form
	if bad := checkParams(f, "payment_intent", "charge", "amount", "reason", "metadata[*]", "expand[]"); bad != nil {
		return *bad
	}
	amount, _, bad := formInt(f, "amount")
	if bad != nil {
		return *bad
	}
	reason, _ := lastValue(f, "reason")
	if !validRefundReason(reason) {
		return invalidParam("reason", "", "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer")
	}
	piID, hasPI := lastValue(f, "payment_intent")
	chID, hasCharge := lastValue(f, "charge")
	if !hasPI && !hasCharge {
		return invalidParam("", "parameter_missing", "One of the following params should be provided for this request: payment_intent or charge.")
	}
	created := s.now().Unix()
	meta := formMap(f, "metadata")
	s.mu.Lock()
	var pi *paymentIntent
	if hasPI {
		pi = s.intents[piID]
		if pi == nil {
			s.mu.Unlock()
			return notFound("payment_intent", "payment_intent", piID)
		}
	} else {
		for _, p := range s.intents {
			if p.obj.LatestCharge != nil && *p.obj.LatestCharge == chID {
				pi = p
				break
			}
		}
		if pi == nil {
			s.mu.Unlock()
			return notFound("charge", "charge", chID)
		}
	}
	amount, msg := refundable(pi, amount)
	if msg != "" {
		s.mu.Unlock()
		code := "charge_already_refunded"
		if pi.obj.Status != "succeeded" {
			code = "charge_not_refundable"
		} else if amount != 0 {
			code = "amount_too_large"
		}
		return invalidParam("amount", code, msg)
	}
	re := s.addRefundLocked(pi, "", amount, "succeeded", reason, created, meta)
	pi.changed = s.now().UnixNano()
	obj := re.render(wantsExpand(f, "payment_intent"))
	s.mu.Unlock()
	return jsonResponse(http.StatusOK, obj, true)
}

func (s *Server) getRefund(r *request) response {
	if bad := checkParams(r.form, "expand[]"); bad != nil {
		return *bad
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	re := s.refunds[r.pathID]
	if re == nil {
		return notFound("id", "refund", r.pathID)
	}
	return jsonResponse(http.StatusOK, re.render(wantsExpand(r.form, "payment_intent")), false)
}

// listRefunds lists newest first, filtered by payment_intent, charge and created.
func (s *Server) listRefunds(r *request) response {
	if bad := checkParams(r.form, listPatterns("payment_intent", "charge")...); bad != nil {
		return *bad
	}
	q, bad := parseListQuery(r.form)
	if bad != nil {
		return *bad
	}
	piID, hasPI := lastValue(r.form, "payment_intent")
	chID, hasCharge := lastValue(r.form, "charge")
	expand := wantsExpand(r.form, "data.payment_intent")

	s.mu.Lock()
	defer s.mu.Unlock()
	keep := func(re *refund) bool {
		return (!hasPI || re.intent.obj.ID == piID) && (!hasCharge || (re.obj.Charge != nil && *re.obj.Charge == chID))
	}
	page, more, badPage := s.refundLine.page(q, keep, func(id string) (sortKey, bool) {
		re := s.refunds[id]
		if re == nil {
			return sortKey{}, false
		}
		return re.sortKey(), true
	}, "refund")
	if badPage != nil {
		return *badPage
	}
	data := make([]refundJSON, len(page))
	for i, re := range page {
		data[i] = re.render(expand)
	}
	return listResponse(data, more, "/v1/refunds")
}

// wantsExpand reports whether expand[] names path.
func wantsExpand(form map[string][]string, path string) bool {
	return slices.Contains(formList(form, "expand"), path)
}
