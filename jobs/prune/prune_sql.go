package prune

// The prune SQL. Every table has three statements: a count (the dry run's answer),
// a keyset read of the next batch's primary keys (a plain consistent read: it locks
// nothing), and a delete bounded to that batch's key range, with the same condition
// repeated so a row that changed since the read (an outbox row re-queued) is kept.
// Values, the cut-off and the keys, travel only as parameters.

// Raw usage (billing collect's archive): collected or ignored records of hours
// before the cut-off, which the job sets at or before the first month that is not
// completely rated and invoiced. Pending records (a problem nobody fixed) are never
// pruned: they are usage not billed yet.
const (
	usageCondition = `status IN ('collected', 'ignored') AND COALESCE(hour, start_date) < ?`
	countUsageSQL  = `SELECT COUNT(*) FROM cloudstack_usage WHERE ` + usageCondition
	keysUsageSQL   = `SELECT id FROM cloudstack_usage WHERE id > ? AND ` + usageCondition + ` ORDER BY id LIMIT ?`
	deleteUsageSQL = `DELETE FROM cloudstack_usage WHERE id BETWEEN ? AND ? AND ` + usageCondition
)

// CPU samples (abuse): the table's key is (account_id, sampled_at), so the batches
// walk its sampled_at index instead: each delete takes the oldest rows, which are
// gone for the next one, so no batch scans what an earlier one kept.
const (
	countSamplesSQL  = `SELECT COUNT(*) FROM abuse_cpu_samples WHERE sampled_at < ?`
	deleteSamplesSQL = `DELETE FROM abuse_cpu_samples WHERE sampled_at < ? ORDER BY sampled_at, account_id LIMIT ?`
)

// Outbox rows that are finished: sent (dated by sent_at) or cancelled (by
// created_at). Queued, sending, failed and suppressed rows are an operator's
// business and stay.
const (
	outboxCondition = `status IN ('sent', 'cancelled') AND COALESCE(sent_at, created_at) < ?`
	countOutboxSQL  = `SELECT COUNT(*) FROM mail_outbox WHERE ` + outboxCondition
	keysOutboxSQL   = `SELECT id FROM mail_outbox WHERE id > ? AND ` + outboxCondition + ` ORDER BY id LIMIT ?`
	deleteOutboxSQL = `DELETE FROM mail_outbox WHERE id BETWEEN ? AND ? AND ` + outboxCondition
)

// Job runs that started before the cut-off, whatever their status: a run still
// 'running' after months was killed and will never finish.
const (
	runsCondition = `started_at < ?`
	countRunsSQL  = `SELECT COUNT(*) FROM job_runs WHERE ` + runsCondition
	keysRunsSQL   = `SELECT id FROM job_runs WHERE id > ? AND ` + runsCondition + ` ORDER BY id LIMIT ?`
	deleteRunsSQL = `DELETE FROM job_runs WHERE id BETWEEN ? AND ? AND ` + runsCondition
)

// What bounds the raw usage cut-off: rating's watermark (the last hour rated) and
// the oldest charge not on an invoice yet.
const (
	ratingWatermarkSQL  = `SELECT hour_watermark FROM billing_state WHERE name = 'rating'`
	oldestUninvoicedSQL = `SELECT MIN(hour) FROM charges WHERE invoice_id IS NULL`
)
