package reconcile

// The payments check's SQL. IN lists are "?" placeholders built by inList.

const (
	paymentColumns = `p.id, p.invoice_id, p.account_id, p.attempt, p.amount_minor, p.currency, p.status,
  COALESCE(p.provider_payment_id, ''), COALESCE(p.decline_code, ''), p.created_at`
	invoiceColumns = `i.id, i.account_id, i.currency, i.total_minor, i.amount_paid_minor, i.status, i.attempt_count, i.collection`

	// sqlWindowPayments is the local cursor: the window's attempts with their
	// invoices, in invoice order (the staged Stripe objects are read in the same).
	sqlWindowPayments = `SELECT ` + paymentColumns + `, ` + invoiceColumns + `
FROM payments p LEFT JOIN invoices i ON i.id = p.invoice_id
WHERE p.created_at >= ? AND p.created_at < ?
ORDER BY p.invoice_id, p.attempt`

	sqlInvoicesIn       = `SELECT ` + invoiceColumns + ` FROM invoices i WHERE i.id IN (%s)`
	sqlPaymentsIn       = `SELECT ` + paymentColumns + ` FROM payments p WHERE p.invoice_id IN (%s) ORDER BY p.invoice_id, p.attempt`
	sqlLocalRefundsIn   = `SELECT provider_refund_id, provider_payment_id, invoice_id, amount_minor, currency, status FROM payment_refunds WHERE invoice_id IN (%s)`
	sqlLocalDisputesIn  = `SELECT provider_dispute_id, provider_payment_id, invoice_id, amount_minor, currency, status FROM payment_disputes WHERE invoice_id IN (%s)`
	sqlStalePendingInvs = `SELECT DISTINCT invoice_id FROM payments WHERE status = 'pending' AND created_at < ? ORDER BY invoice_id`

	// sqlOpenDisputes are disputes recorded here whose outcome is not known yet: the
	// check asks Stripe about them again, whatever the window.
	sqlOpenDisputes = `SELECT DISTINCT invoice_id, provider_payment_id FROM payment_disputes
WHERE status IN ('needs_response', 'warning_needs_response', 'under_review', 'warning_under_review') ORDER BY invoice_id`

	// sqlFindingsToRecheck are the payments findings still open or acknowledged from
	// a window the run does not cover: the check judges their invoices again.
	sqlFindingsToRecheck = `SELECT id, COALESCE(invoice_id, 0), COALESCE(payment_intent, '') FROM reconcile_findings
WHERE class IN (%s) AND state IN ('open', 'acknowledged') AND NOT (window_from >= ? AND window_to <= ?)
  AND (invoice_id IS NOT NULL OR payment_intent IS NOT NULL)
ORDER BY id LIMIT ?`
)
