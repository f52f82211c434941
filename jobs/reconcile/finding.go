// Package reconcile compares what the orchestrator runs, what billing metered and
// invoiced, and what the payment provider took, and keeps each discrepancy as a
// finding that behaves like a ticket: one finding per problem across nights, open
// until it no longer reproduces, acknowledged by a person or fixed by --fix.
package reconcile

import "time"

// The classes of finding. Their names are the `class` key of the report JSON and of
// `cronkit reconcile findings`, and they never change meaning.
const (
	// usage: orchestrator vs metering.
	ClassRunningNotMetered   = "running_not_metered"
	ClassMeteredNotFound     = "metered_not_found"
	ClassMeteredAfterRemoval = "metered_after_removal"
	ClassHoursExceedWindow   = "hours_exceed_window"
	ClassAccountMismatch     = "account_mismatch"
	ClassSuspendedButRunning = "suspended_but_running"

	// payments: the provider vs local payments and invoices.
	ClassPaidNotRecorded     = "paid_not_recorded"
	ClassRecordedNotPaid     = "recorded_not_paid"
	ClassAmountMismatch      = "amount_mismatch"
	ClassCurrencyMismatch    = "currency_mismatch"
	ClassDuplicateCharge     = "duplicate_charge"
	ClassRefundedNotRecorded = "refunded_not_recorded"
	ClassDisputed            = "disputed"
	ClassUnknownPayment      = "unknown_payment"
	ClassBalanceDrift        = "balance_drift"
	// ClassPaymentUnsettled: an attempt still pending here (the answer was lost, or
	// billing gave up replaying it) whose outcome Stripe knows, or that Stripe never
	// received; until it is settled, dunning holds suspension for its invoice.
	ClassPaymentUnsettled = "payment_unsettled"
)

// PaymentClasses are the classes the payments check judges, and so resolves.
func PaymentClasses() []string {
	return []string{ClassPaidNotRecorded, ClassRecordedNotPaid, ClassAmountMismatch, ClassCurrencyMismatch,
		ClassDuplicateCharge, ClassRefundedNotRecorded, ClassDisputed, ClassUnknownPayment, ClassBalanceDrift,
		ClassPaymentUnsettled}
}

// Finding is one discrepancy as a check sees it in one run, before it is persisted.
// The same problem seen on two nights has the same Fingerprint, so it stays one
// finding (first seen, last seen) instead of becoming a new one each night.
type Finding struct {
	Class string
	// Fingerprint is stable across runs: the class and the ids on both sides, never
	// a time or an amount that a later run could see differently for the same problem.
	Fingerprint string

	// The ids on both sides, where they apply (zero when not).
	AccountID     int64
	InvoiceID     int64
	ResourceID    string
	PaymentIntent string
	// Amount is an exact decimal string in Currency, where money is involved.
	Amount   string
	Currency string

	// Detail is one line for the text report.
	Detail string
	// Evidence is what each side said: {"orchestrator": ..., "metering": ...},
	// {"stripe": ..., "local": ...}; stored as JSON with the finding.
	Evidence map[string]any
	// Fixable says --fix may repair it (safe and repeatable; never moves money).
	Fixable bool
	// Seen is when the check observed it (the run's clock).
	Seen time.Time
}

// Classes are every class a finding may have, usage's then payments', for checking
// what an operator types.
func Classes() []string {
	return append([]string{ClassRunningNotMetered, ClassMeteredNotFound, ClassMeteredAfterRemoval, ClassHoursExceedWindow,
		ClassAccountMismatch, ClassSuspendedButRunning}, PaymentClasses()...)
}
