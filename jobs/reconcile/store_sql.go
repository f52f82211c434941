package reconcile

// The findings store's SQL: values only as parameters; IN lists are built from "?"
// placeholders by inList.

const findingColumns = `id, class, fingerprint, state, COALESCE(account_id, 0), COALESCE(invoice_id, 0),
  COALESCE(resource_id, ''), COALESCE(payment_intent, ''), COALESCE(amount, ''), COALESCE(currency, ''),
  detail, fixable, first_seen, last_seen, window_from, window_to, COALESCE(acknowledged_by, ''),
  COALESCE(ack_reason, ''), acknowledged_at, COALESCE(fixed_by, ''), COALESCE(fix_reason, ''), fixed_at, resolved_at`

const (
	sqlFindingsByFingerprint = `SELECT id, state, fingerprint FROM reconcile_findings WHERE fingerprint IN (%s)`

	sqlInsertFinding = `INSERT INTO reconcile_findings (class, fingerprint, state, account_id, invoice_id, resource_id,
  payment_intent, amount, currency, detail, evidence, fixable, first_seen, last_seen, first_run_id, last_run_id,
  window_from, window_to, state_changed_at)
VALUES (?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

	// sqlSeenAgain moves last_seen and refreshes what the run saw. A resolved or fixed
	// finding opens again (the second argument says so); an acknowledged one stays so.
	// Its window becomes the run's when the first of the window's arguments says so
	// (a check that does not re-judge old findings) or when the run's window covers
	// it; a finding a re-judging check saw again by id, from another window, keeps
	// the one its objects are in, so that a later run over the re-judging window (a
	// --fix after the nightly run) judges it by id again instead of resolving it
	// unseen. window_to is assigned first and window_from's test reads its new value
	// (MariaDB assigns left to right): covered, both move; not, neither does.
	// Window arguments: move, from, to, to; move, from, to, from.
	sqlSeenAgain = `UPDATE reconcile_findings SET
  state = IF(?, 'open', state), state_changed_at = IF(?, ?, state_changed_at),
  account_id = ?, invoice_id = ?, resource_id = ?, payment_intent = ?, amount = ?, currency = ?,
  detail = ?, evidence = ?, fixable = ?, last_seen = ?, last_run_id = ?,
  window_to = IF(? OR (window_from >= ? AND window_to <= ?), ?, window_to),
  window_from = IF(? OR (window_from >= ? AND window_to <= ?), ?, window_from)
WHERE id = ?`

	sqlInsertEvent = `INSERT INTO reconcile_finding_events (finding_id, from_state, to_state, event, actor, run_id, reason, detail, at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`

	// sqlUnseenInScope finds the open and acknowledged findings of a check's classes
	// that this run did not see although it judged their window (or re-judged them by
	// id), a page at a time. The %s are the class list and the optional id list.
	sqlUnseenInScope = `SELECT id, state FROM reconcile_findings
WHERE class IN (%s) AND state IN ('open', 'acknowledged') AND last_run_id <> ?
  AND ((window_from >= ? AND window_to <= ?)%s) AND id > ?
ORDER BY id LIMIT ?`

	// sqlOpenWindows lists the distinct windows of a check's open findings (not the
	// acknowledged: a person has them) that start at or after a bound, oldest first,
	// so a run can judge them again (the reconcile_findings_scope index). The %s is
	// the class list.
	sqlOpenWindows = `SELECT DISTINCT window_from, window_to FROM reconcile_findings
WHERE class IN (%s) AND state = 'open' AND window_from >= ?
ORDER BY window_from, window_to LIMIT ?`

	sqlLockFinding = `SELECT state, last_run_id FROM reconcile_findings WHERE id = ? FOR UPDATE`

	sqlResolveFinding = `UPDATE reconcile_findings SET state = 'resolved', state_changed_at = ?, resolved_at = ?, resolved_run_id = ?
WHERE id = ?`

	sqlAcknowledgeFinding = `UPDATE reconcile_findings SET state = 'acknowledged', state_changed_at = ?, acknowledged_by = ?,
  acknowledged_at = ?, ack_reason = ? WHERE id = ?`

	sqlFixFinding = `UPDATE reconcile_findings SET state = 'fixed', state_changed_at = ?, fixed_by = ?, fixed_at = ?,
  fixed_run_id = ?, fix_reason = ? WHERE id = ?`

	sqlFindingByID = `SELECT ` + findingColumns + ` FROM reconcile_findings WHERE id = ?`

	// sqlListFindings pages through findings by id; the two optional filters are
	// switched on by their first parameter.
	sqlListFindings = `SELECT ` + findingColumns + ` FROM reconcile_findings
WHERE (? = '' OR state = ?) AND (? = '' OR class = ?) AND id > ?
ORDER BY id LIMIT ?`

	sqlFindingEvents = `SELECT from_state, to_state, event, actor, COALESCE(run_id, ''), reason, at
FROM reconcile_finding_events WHERE finding_id = ? ORDER BY id`
)

// inList returns "?, ?, ?" for n values.
func inList(n int) string {
	if n == 0 {
		return ""
	}
	b := make([]byte, 0, 3*n)
	for i := range n {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, '?')
	}
	return string(b)
}
