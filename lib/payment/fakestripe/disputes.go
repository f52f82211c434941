package fakestripe

import (
	"fmt"
	"maps"
	"net/http"
	"strings"
	"time"
)

// Dispute seeds a dispute (a chargeback) directly, as a cardholder's bank raises one.
type Dispute struct {
	// ID is the dispute's ID (dp_...); empty means the fake picks one.
	ID            string
	PaymentIntent string
	// Amount is in minor units; 0 disputes the whole amount received.
	Amount int64
	// Status is needs_response (the default), warning_needs_response, under_review,
	// warning_under_review, warning_closed, won, lost or prevented.
	Status string
	// Reason is Stripe's reason (fraudulent by default, product_not_received...).
	Reason  string
	Created time.Time // zero: the fake's now
}

// evidenceWindow is how long Stripe gives to respond to a dispute in test mode.
const evidenceWindow = 7 * 24 * time.Hour

type dispute struct {
	seq    uint64
	intent *paymentIntent
	obj    disputeJSON
}

func (d *dispute) sortKey() sortKey { return sortKey{created: d.obj.Created, seq: d.seq} }

// disputeJSON is Stripe's dispute object. PaymentIntent is the ID, or the object when
// expanded.
type disputeJSON struct {
	ID                  string                 `json:"id"`
	Object              string                 `json:"object"`
	Amount              int64                  `json:"amount"`
	BalanceTransactions []any                  `json:"balance_transactions"`
	Charge              string                 `json:"charge"`
	Created             int64                  `json:"created"`
	Currency            string                 `json:"currency"`
	Evidence            map[string]string      `json:"evidence"`
	EvidenceDetails     disputeEvidenceDetails `json:"evidence_details"`
	IsChargeRefundable  bool                   `json:"is_charge_refundable"`
	Livemode            bool                   `json:"livemode"`
	Metadata            map[string]string      `json:"metadata"`
	PaymentIntent       any                    `json:"payment_intent"`
	Reason              string                 `json:"reason"`
	Status              string                 `json:"status"`
}

type disputeEvidenceDetails struct {
	DueBy           *int64 `json:"due_by"`
	HasEvidence     bool   `json:"has_evidence"`
	PastDue         bool   `json:"past_due"`
	SubmissionCount int64  `json:"submission_count"`
}

func (d *dispute) render(expand bool) disputeJSON {
	o := d.obj
	o.Metadata = maps.Clone(d.obj.Metadata)
	o.Evidence = maps.Clone(d.obj.Evidence)
	o.BalanceTransactions = []any{}
	o.PaymentIntent = d.intent.obj.ID
	if expand {
		o.PaymentIntent = d.intent.render()
	}
	return o
}

func validDisputeStatus(s string) bool {
	switch s {
	case "warning_needs_response", "warning_under_review", "warning_closed", "needs_response",
		"under_review", "won", "lost", "prevented":
		return true
	}
	return false
}

// disputeOpen says whether a dispute still takes a response.
func disputeOpen(status string) bool {
	return status == "needs_response" || status == "warning_needs_response"
}

// AddDispute disputes a succeeded PaymentIntent directly and returns the dispute's ID.
func (s *Server) AddDispute(d Dispute) (string, error) {
	if d.Status == "" {
		d.Status = "needs_response"
	}
	if d.Reason == "" {
		d.Reason = "fraudulent"
	}
	if !validDisputeStatus(d.Status) {
		return "", fmt.Errorf("dispute of %s: unknown status %q", d.PaymentIntent, d.Status)
	}
	if d.ID != "" && !strings.HasPrefix(d.ID, "dp_") {
		return "", fmt.Errorf("dispute %q: IDs start with dp_", d.ID)
	}
	if d.Created.IsZero() {
		d.Created = s.now()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	pi := s.intents[d.PaymentIntent]
	if pi == nil || pi.obj.Status != "succeeded" {
		return "", fmt.Errorf("dispute: no succeeded payment intent %q", d.PaymentIntent)
	}
	if d.ID != "" && s.disputes[d.ID] != nil {
		return "", fmt.Errorf("dispute %q already exists", d.ID)
	}
	if d.Amount <= 0 || d.Amount > pi.obj.AmountReceived {
		d.Amount = pi.obj.AmountReceived
	}
	return s.addDisputeLocked(pi, d).obj.ID, nil
}

func (s *Server) addDisputeLocked(pi *paymentIntent, d Dispute) *dispute {
	if d.ID == "" {
		d.ID = s.newIDLocked("dp")
	}
	if d.Amount == 0 {
		d.Amount = pi.obj.AmountReceived
	}
	created := d.Created.Unix()
	s.seq++
	dp := &dispute{seq: s.seq, intent: pi, obj: disputeJSON{
		ID: d.ID, Object: "dispute", Amount: d.Amount, Created: created, Currency: pi.obj.Currency,
		Evidence: map[string]string{}, Metadata: map[string]string{}, Reason: d.Reason, Status: d.Status,
	}}
	if pi.obj.LatestCharge != nil {
		dp.obj.Charge = *pi.obj.LatestCharge
	}
	if disputeOpen(d.Status) {
		due := d.Created.Add(evidenceWindow).Unix()
		dp.obj.EvidenceDetails.DueBy = &due
	}
	s.disputes[d.ID] = dp
	s.disputeLine.add(dp)
	return dp
}

// SetDisputeStatus moves a dispute on (won, lost...), as the bank's decision does.
func (s *Server) SetDisputeStatus(id, status string) error {
	if !validDisputeStatus(status) {
		return fmt.Errorf("dispute %s: unknown status %q", id, status)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dp := s.disputes[id]
	if dp == nil {
		return fmt.Errorf("no such dispute %q", id)
	}
	dp.obj.Status = status
	return nil
}

func (s *Server) getDispute(r *request) response {
	if bad := checkParams(r.form, "expand[]"); bad != nil {
		return *bad
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dp := s.disputes[r.pathID]
	if dp == nil {
		return notFound("id", "dispute", r.pathID)
	}
	return jsonResponse(http.StatusOK, dp.render(wantsExpand(r.form, "payment_intent")), false)
}

// updateDispute is POST /v1/disputes/{id}: evidence submitted settles the dispute as
// Stripe's test mode does, won with the text winning_evidence, lost with
// losing_evidence, under review otherwise.
func (s *Server) updateDispute(r *request) response {
	f := r.form
	if bad := checkParams(f, "evidence[*]", "metadata[*]", "submit", "expand[]"); bad != nil {
		return *bad
	}
	submit := true
	if _, ok := lastValue(f, "submit"); ok {
		var bad *response
		if submit, bad = formBool(f, "submit"); bad != nil {
			return *bad
		}
	}
	evidence := formMap(f, "evidence")
	s.mu.Lock()
	defer s.mu.Unlock()
	dp := s.disputes[r.pathID]
	if dp == nil {
		return notFound("id", "dispute", r.pathID)
	}
	if len(evidence) > 0 || submit {
		if !disputeOpen(dp.obj.Status) {
			return invalidParam("", "", "This dispute is already closed")
		}
	}
	maps.Copy(dp.obj.Evidence, evidence)
	maps.Copy(dp.obj.Metadata, formMap(f, "metadata"))
	if len(evidence) > 0 {
		dp.obj.EvidenceDetails.HasEvidence = true
	}
	if submit {
		dp.obj.EvidenceDetails.SubmissionCount++
		switch dp.obj.Evidence["uncategorized_text"] {
		case "winning_evidence":
			dp.obj.Status = "won"
		case "losing_evidence":
			dp.obj.Status = "lost"
		default:
			dp.obj.Status = "under_review"
		}
	}
	return jsonResponse(http.StatusOK, dp.render(wantsExpand(f, "payment_intent")), true)
}

// listDisputes lists newest first, filtered by payment_intent, charge and created.
func (s *Server) listDisputes(r *request) response {
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
	keep := func(dp *dispute) bool {
		return (!hasPI || dp.intent.obj.ID == piID) && (!hasCharge || dp.obj.Charge == chID)
	}
	page, more, badPage := s.disputeLine.page(q, keep, func(id string) (sortKey, bool) {
		dp := s.disputes[id]
		if dp == nil {
			return sortKey{}, false
		}
		return dp.sortKey(), true
	}, "dispute")
	if badPage != nil {
		return *badPage
	}
	data := make([]disputeJSON, len(page))
	for i, dp := range page {
		data[i] = dp.render(expand)
	}
	return listResponse(data, more, "/v1/disputes")
}
