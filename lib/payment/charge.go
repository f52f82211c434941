package payment

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/rs/zerolog"
	"github.com/stripe/stripe-go/v82"
)

// Outcome is what the billing job does next with an invoice after a charge.
type Outcome int

// The outcomes of a charge.
const (
	// OutcomeSucceeded: the money was taken; mark the invoice paid.
	OutcomeSucceeded Outcome = iota + 1
	// OutcomeSoftDecline: declined for a reason that may pass (insufficient funds, a
	// generic decline, an issuer hiccup); retry on the schedule with a new attempt key.
	OutcomeSoftDecline
	// OutcomeHardDecline: retrying the same card cannot succeed (lost, stolen,
	// expired, fraud, no payment method...); the customer must act, so dunning starts
	// without further charges.
	OutcomeHardDecline
	// OutcomePending: Stripe accepted the payment but has not settled it (status
	// processing or an unexpected one). Charging again could charge twice; leave it
	// to reconciliation.
	OutcomePending
)

// String names the outcome for logs and reports.
func (o Outcome) String() string {
	switch o {
	case OutcomeSucceeded:
		return "succeeded"
	case OutcomeSoftDecline:
		return "soft_decline"
	case OutcomeHardDecline:
		return "hard_decline"
	case OutcomePending:
		return "pending"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// DeclineNoPaymentMethod is the DeclineCode Charge reports, without calling Stripe,
// for a customer who has no default payment method: nothing can be charged until
// they add one, so it is a hard decline.
const DeclineNoPaymentMethod = "no_payment_method"

// Classify decides what a charge's answer means. status is the PaymentIntent's status
// ("" when Stripe returned no PaymentIntent); errorCode and declineCode are the card
// error's code and decline_code (https://docs.stripe.com/declines/codes).
//
// Decline codes are judged first, then error codes. An unknown code is a soft
// decline: the retry schedule is bounded, whereas treating it as hard would stop
// collecting on a card that may work tomorrow. do_not_honor is soft too: issuers use
// it as a generic refusal, and card networks allow retrying it.
func Classify(status, errorCode, declineCode string) Outcome {
	switch status {
	case "succeeded":
		return OutcomeSucceeded
	case "requires_payment_method", "requires_confirmation", "":
		// A decline (or nothing happened): judged by the codes below.
	case "requires_action", "canceled":
		// Off-session, nobody can authenticate; a cancelled intent is over.
		return OutcomeHardDecline
	default: // processing, requires_capture, and statuses Stripe may add
		return OutcomePending
	}
	for _, code := range []string{declineCode, errorCode} {
		switch code {
		case "":
			continue
		case DeclineNoPaymentMethod,
			"authentication_required", "card_not_supported", "currency_not_supported",
			"do_not_try_again", "expired_card", "fraudulent", "incorrect_cvc",
			"incorrect_number", "incorrect_pin", "incorrect_zip", "invalid_account",
			"invalid_amount", "invalid_cvc", "invalid_expiry_month", "invalid_expiry_year",
			"invalid_number", "invalid_pin", "lost_card", "merchant_blacklist",
			"new_account_information_available", "not_permitted", "offline_pin_required",
			"online_or_offline_pin_required", "pickup_card", "pin_try_exceeded",
			"restricted_card", "revocation_of_all_authorizations",
			"revocation_of_authorization", "security_violation", "service_not_allowed",
			"stolen_card", "stop_payment_order", "testmode_decline",
			"transaction_not_allowed":
			return OutcomeHardDecline
		case "approve_with_id", "call_issuer", "card_declined", "card_velocity_exceeded",
			"do_not_honor", "duplicate_transaction", "generic_decline",
			"insufficient_funds", "issuer_not_available", "no_action_taken",
			"processing_error", "reenter_transaction", "try_again_later",
			"withdrawal_count_limit_exceeded", "card_decline_rate_limit_exceeded":
			return OutcomeSoftDecline
		}
	}
	return OutcomeSoftDecline // no code, or only unknown ones: see above
}

// ChargeRequest is one attempt to collect an invoice.
type ChargeRequest struct {
	// Customer is the Stripe customer ID (cus_...).
	Customer string
	// AmountMinor is the amount in the currency's minor unit (cents).
	AmountMinor int64
	// Currency is the ISO 4217 code, any case; Stripe receives it lowercase.
	Currency string
	// PaymentMethod is the pm_... to charge; empty means the customer's
	// invoice_settings.default_payment_method, looked up first.
	PaymentMethod string
	// Description shows on the payment in Stripe's dashboard.
	Description string
	// Metadata links the payment back to us (invoice_id, attempt); reconciliation
	// reads it.
	Metadata map[string]string
	// IdempotencyKey is required and must come from the invoice and attempt, never
	// from the run: a retry with the same key gets the first answer back instead of a
	// second charge. Keys live 24 hours at Stripe.
	IdempotencyKey string
}

// ChargeResult is Stripe's answer to a charge that reached a decision (or is pending).
type ChargeResult struct {
	Outcome Outcome
	// PaymentIntentID is empty only when no PaymentIntent was created
	// (DeclineNoPaymentMethod).
	PaymentIntentID string
	// Status is the PaymentIntent's status (succeeded, requires_payment_method...).
	Status        string
	AmountMinor   int64
	Currency      string
	PaymentMethod string
	// DeclineCode and ErrorCode are Stripe's decline_code and code for a decline.
	DeclineCode string
	ErrorCode   string
	// Message is Stripe's decline message, fit to show the customer.
	Message string
	// Replayed is true when Stripe answered from its idempotency store: this key was
	// already used and this is the original result.
	Replayed bool
}

// Charge creates and confirms an off-session PaymentIntent for the request. A card
// decline is a ChargeResult with a nil error. An error means the request was refused
// or its outcome is unknown: see the package documentation.
//
// Without req.PaymentMethod the customer is fetched first for their default payment
// method, so if the customer changes cards between a lost answer and its retry, the
// retry carries other parameters and fails with ErrIdempotencyConflict rather than
// charging a second card.
func (c *Client) Charge(ctx context.Context, req ChargeRequest) (ChargeResult, error) {
	const op = "charge"
	if strings.TrimSpace(req.IdempotencyKey) == "" {
		return ChargeResult{}, fmt.Errorf("%s %s: %w", op, req.Customer, ErrIdempotencyKeyRequired)
	}
	if req.Customer == "" || req.AmountMinor <= 0 || len(req.Currency) != 3 {
		return ChargeResult{}, fmt.Errorf("%s %q %d %q: %w: customer, positive amount and 3-letter currency are required",
			op, req.Customer, req.AmountMinor, req.Currency, ErrInvalidRequest)
	}
	currency := strings.ToLower(req.Currency)
	log := zerolog.Ctx(ctx).With().
		Str("customer", req.Customer).
		Int64("amount_minor", req.AmountMinor).
		Str("currency", currency).
		Str("idempotency_key", req.IdempotencyKey).
		Logger()

	pm := req.PaymentMethod
	if pm == "" {
		cust, err := c.GetCustomer(ctx, req.Customer)
		if err != nil {
			return ChargeResult{}, fmt.Errorf("%s %s: %w", op, req.Customer, err)
		}
		pm = cust.DefaultPaymentMethod
	}
	if pm == "" {
		res := ChargeResult{
			Outcome:     OutcomeHardDecline,
			AmountMinor: req.AmountMinor,
			Currency:    currency,
			DeclineCode: DeclineNoPaymentMethod,
			Message:     "The customer has no default payment method.",
		}
		log.Debug().Str("outcome", res.Outcome.String()).Str("decline_code", res.DeclineCode).
			Msg("charge not attempted: no payment method")
		return res, nil
	}

	params := &stripe.PaymentIntentCreateParams{
		Amount:        stripe.Int64(req.AmountMinor),
		Currency:      stripe.String(currency),
		Customer:      stripe.String(req.Customer),
		PaymentMethod: stripe.String(pm),
		// Cards only: with Stripe's automatic payment methods, confirming would demand
		// a return_url for redirect-based methods nobody is there to complete.
		PaymentMethodTypes: []*string{stripe.String("card")},
		Confirm:            stripe.Bool(true),
		OffSession:         stripe.Bool(true),
	}
	if req.Description != "" {
		params.Description = stripe.String(req.Description)
	}
	if len(req.Metadata) > 0 {
		params.Metadata = maps.Clone(req.Metadata)
	}
	params.SetIdempotencyKey(req.IdempotencyKey)

	pi, err := c.stripe.V1PaymentIntents.Create(ctx, params)
	var res ChargeResult
	var se *stripe.Error
	switch {
	case err == nil:
		res = resultFromIntent(pi)
		res.Replayed = replayed(pi.LastResponse)
	case errors.As(err, &se) && se.Type == stripe.ErrorTypeCard:
		if se.PaymentIntent != nil {
			res = resultFromIntent(se.PaymentIntent)
		} else {
			res = ChargeResult{AmountMinor: req.AmountMinor, Currency: currency, PaymentMethod: pm}
		}
		res.ErrorCode, res.DeclineCode, res.Message = string(se.Code), string(se.DeclineCode), se.Msg
		res.Outcome = Classify(res.Status, res.ErrorCode, res.DeclineCode)
		res.Replayed = replayed(se.LastResponse)
	default:
		werr := c.wrapError("create payment intent", err)
		log.Debug().Err(werr).Msg("charge failed")
		return ChargeResult{}, fmt.Errorf("%s %s: %w", op, req.Customer, werr)
	}
	log.Debug().
		Str("outcome", res.Outcome.String()).
		Str("payment_intent", res.PaymentIntentID).
		Str("status", res.Status).
		Str("decline_code", res.DeclineCode).
		Bool("replayed", res.Replayed).
		Msg("charge answered")
	return res, nil
}

func resultFromIntent(pi *stripe.PaymentIntent) ChargeResult {
	res := ChargeResult{
		PaymentIntentID: pi.ID,
		Status:          string(pi.Status),
		AmountMinor:     pi.Amount,
		Currency:        string(pi.Currency),
	}
	if pi.PaymentMethod != nil {
		res.PaymentMethod = pi.PaymentMethod.ID
	}
	if e := pi.LastPaymentError; e != nil {
		res.ErrorCode, res.DeclineCode, res.Message = string(e.Code), string(e.DeclineCode), e.Msg
	}
	res.Outcome = Classify(res.Status, res.ErrorCode, res.DeclineCode)
	return res
}

func replayed(r *stripe.APIResponse) bool {
	return r != nil && r.Header.Get("Idempotent-Replayed") == "true"
}
