package payment_test

import (
	"testing"

	"github.com/cronkit/cronkit/lib/payment"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name                      string
		status, code, declineCode string
		want                      payment.Outcome
	}{
		{"succeeded", "succeeded", "", "", payment.OutcomeSucceeded},
		{"succeeded wins over a stale last error", "succeeded", "card_declined", "insufficient_funds", payment.OutcomeSucceeded},
		{"insufficient funds", "requires_payment_method", "card_declined", "insufficient_funds", payment.OutcomeSoftDecline},
		{"generic decline", "requires_payment_method", "card_declined", "generic_decline", payment.OutcomeSoftDecline},
		{"try again later", "requires_payment_method", "card_declined", "try_again_later", payment.OutcomeSoftDecline},
		{"processing error without decline code", "requires_payment_method", "processing_error", "", payment.OutcomeSoftDecline},
		{"do not honor is soft", "requires_payment_method", "card_declined", "do_not_honor", payment.OutcomeSoftDecline},
		{"card declined without decline code", "requires_payment_method", "card_declined", "", payment.OutcomeSoftDecline},
		{"unknown decline code is soft", "requires_payment_method", "card_declined", "brand_new_code", payment.OutcomeSoftDecline},
		{"lost card", "requires_payment_method", "card_declined", "lost_card", payment.OutcomeHardDecline},
		{"stolen card", "requires_payment_method", "card_declined", "stolen_card", payment.OutcomeHardDecline},
		{"fraudulent", "requires_payment_method", "card_declined", "fraudulent", payment.OutcomeHardDecline},
		{"pickup card", "requires_payment_method", "card_declined", "pickup_card", payment.OutcomeHardDecline},
		{"restricted card", "requires_payment_method", "card_declined", "restricted_card", payment.OutcomeHardDecline},
		{"invalid account", "requires_payment_method", "card_declined", "invalid_account", payment.OutcomeHardDecline},
		{"do not try again", "requires_payment_method", "card_declined", "do_not_try_again", payment.OutcomeHardDecline},
		{"expired card as decline code", "requires_payment_method", "expired_card", "expired_card", payment.OutcomeHardDecline},
		{"expired card as error code only", "requires_payment_method", "expired_card", "", payment.OutcomeHardDecline},
		{"unknown decline code, hard error code", "requires_payment_method", "incorrect_number", "brand_new_code", payment.OutcomeHardDecline},
		{"authentication required off-session", "requires_payment_method", "authentication_required", "authentication_required", payment.OutcomeHardDecline},
		{"no payment method on the customer", "", "", payment.DeclineNoPaymentMethod, payment.OutcomeHardDecline},
		{"card error without payment intent", "", "card_declined", "insufficient_funds", payment.OutcomeSoftDecline},
		{"requires action off-session", "requires_action", "", "", payment.OutcomeHardDecline},
		{"canceled", "canceled", "", "", payment.OutcomeHardDecline},
		{"processing is pending", "processing", "", "", payment.OutcomePending},
		{"requires capture is pending", "requires_capture", "", "", payment.OutcomePending},
		{"unknown status is pending, never charged again", "some_future_status", "", "", payment.OutcomePending},
		{"nothing happened", "requires_payment_method", "", "", payment.OutcomeSoftDecline},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := payment.Classify(tt.status, tt.code, tt.declineCode); got != tt.want {
				t.Errorf("Classify(%q, %q, %q) = %v, want %v", tt.status, tt.code, tt.declineCode, got, tt.want)
			}
		})
	}
}

func TestOutcomeString(t *testing.T) {
	for o, want := range map[payment.Outcome]string{
		payment.OutcomeSucceeded:   "succeeded",
		payment.OutcomeSoftDecline: "soft_decline",
		payment.OutcomeHardDecline: "hard_decline",
		payment.OutcomePending:     "pending",
		payment.Outcome(0):         "Outcome(0)",
	} {
		if got := o.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(o), got, want)
		}
	}
}
