package drip

// The job's SQL, as named constants with values only as parameters. Queries with an
// IN list take it as a %s filled by inList (placeholders only, never values).

// Enrolment and the due list (drip_funnels, drip_due: migration 00060).
const (
	queryFunnelStart = `SELECT started_at, entered_until FROM drip_funnels WHERE name = ?`
	execStartFunnel  = `INSERT INTO drip_funnels (name, started_at, entered_until, created_at) VALUES (?, ?, ?, ?)
ON DUPLICATE KEY UPDATE name = name`
	// execEnroll gives every signup created in [from, to] a drip_due row due at once;
	// an account already there keeps its row (a closed one stays NULL: no re-entry).
	// The %s is the --account restriction (empty, or accountOnly).
	execEnroll = `INSERT INTO drip_due (funnel, account_id, check_at)
SELECT ?, a.id, ? FROM accounts a WHERE a.created_at >= ? AND a.created_at <= ?%s
ON DUPLICATE KEY UPDATE account_id = drip_due.account_id`
	execAdvanceFunnel = `UPDATE drip_funnels SET entered_until = GREATEST(entered_until, ?) WHERE name = ?`
	// queryDue is the run's candidate query: a range of drip_due_check. The %s is the
	// --account restriction.
	queryDue = `SELECT account_id FROM drip_due WHERE funnel = ? AND check_at <= ?%s ORDER BY check_at, account_id`
	// queryDueAndNew is queryDue for a dry run, which enrols nothing: the due rows and
	// the signups a real run would enrol now. The %s are the --account restrictions.
	queryDueAndNew = `SELECT account_id FROM drip_due WHERE funnel = ? AND check_at <= ?%s
UNION
SELECT a.id FROM accounts a WHERE a.created_at >= ? AND a.created_at <= ?%s
  AND NOT EXISTS (SELECT 1 FROM drip_due d WHERE d.funnel = ? AND d.account_id = a.id)
ORDER BY 1`
	accountOnlyDue = ` AND account_id = ?`
	accountOnlyNew = ` AND a.id = ?`
	// execSetChecks upserts next looks: %s is one "(?, ?, ?)" per account.
	execSetChecks = `INSERT INTO drip_due (funnel, account_id, check_at) VALUES %s
ON DUPLICATE KEY UPDATE check_at = VALUES(check_at)`
	queryCheckAt = `SELECT check_at FROM drip_due WHERE funnel = ? AND account_id = ?`
)

// Facts, read for a chunk of accounts at a time (or one, inside a transaction).
const (
	queryAccounts = `SELECT id, email, name, time_zone, status, created_at, payment_method_verified,
  COALESCE(cloudstack_account_id, '')
FROM accounts WHERE id IN (%s)`
	// queryAccountShared is queryAccounts for the claim-time check: a shared lock on
	// the account row, so an unsubscribe (which locks it for update) either commits
	// before the check reads or waits for the claim to commit.
	queryAccountShared = `SELECT id, email, name, time_zone, status, created_at, payment_method_verified,
  COALESCE(cloudstack_account_id, '')
FROM accounts WHERE id = ? LOCK IN SHARE MODE`
	// The facts beside the account row come in one round trip: the branches below,
	// joined with UNION ALL (factBranches), each row tagged with its kind. Columns:
	// kind, account, s1, s2, t1, t2, t3, n1, n2. The first branch fixes the names;
	// MariaDB types each column over every branch. {accounts} is the accounts' IN list,
	// {addresses} the normalized addresses', {keys} the funnel message keys' (lists of
	// placeholders only, filled by factsQuery).
	//
	// factPaid: a first paid invoice is one with something to pay (a zero invoice
	// covered by credit is not a payment).
	factPaid = `SELECT 'paid' AS kind, account_id AS account, CAST(NULL AS CHAR(320)) AS s1, CAST(NULL AS CHAR(64)) AS s2,
  CAST(NULL AS DATETIME(6)) AS t1, CAST(NULL AS DATETIME(6)) AS t2, CAST(NULL AS DATETIME(6)) AS t3,
  CAST(NULL AS SIGNED) AS n1, CAST(NULL AS SIGNED) AS n2
FROM invoices WHERE status = 'paid' AND total_minor > 0 AND account_id IN ({accounts}) GROUP BY account_id`
	// factEnforcement: the open cases of other jobs' machines (abuse's dunning and
	// free-credit cases): any of them exits the funnel.
	factEnforcement = `SELECT 'enforcement', account_id, machine, NULL, NULL, NULL, NULL, NULL, NULL FROM cases
WHERE account_id IN ({accounts}) AND closed_at IS NULL AND machine NOT LIKE 'drip:%'`
	// factCase: every case of the funnel's machine, open or closed; the latest (the
	// highest id) decides, and a closed one keeps the account out for good. Takes the
	// machine.
	factCase = `SELECT 'case', account_id, state, NULL, opened_at, state_since, closed_at, id, version FROM cases
WHERE machine = ? AND account_id IN ({accounts})`
	factSuppression = `SELECT 'suppression', NULL, email, kind, NULL, NULL, NULL, NULL, NULL FROM mail_suppressions
WHERE email IN ({addresses})`
	// factTrial: per account and currency, the latest trial credit expiry and what is
	// left of the unexpired trial credit (amount minus what invoices used). Takes now,
	// now.
	factTrial = `SELECT 'trial', c.account_id, c.currency,
  CAST(SUM(CASE WHEN c.expires_at IS NULL OR c.expires_at > ?
    THEN c.amount - COALESCE((SELECT SUM(x.amount) FROM credit_applications x WHERE x.credit_id = c.id), 0)
    ELSE 0 END) AS CHAR),
  MAX(c.expires_at), NULL, NULL, NULL, NULL
FROM credits c WHERE c.reason = 'trial' AND c.granted_at <= ? AND c.account_id IN ({accounts})
GROUP BY c.account_id, c.currency`
	// factMessage: the funnel's own messages by key (one per account and step): what
	// is in flight and when the latest went out.
	factMessage = `SELECT 'message', NULL, dedupe_key, status, next_attempt_at, sent_at, NULL, NULL, NULL FROM mail_outbox
WHERE dedupe_key IN ({keys})`
	// factMarketing is lib/mail's MarketingTimes for many recipients at once
	// (mail_outbox_recipient): when each marketing message of any campaign went or
	// will go. Takes from.
	factMarketing = `SELECT 'marketing', NULL, recipient_address, NULL, t, NULL, NULL, NULL, NULL FROM (
  SELECT recipient_address, CASE status WHEN 'sent' THEN sent_at WHEN 'sending' THEN claimed_at ELSE next_attempt_at END AS t
  FROM mail_outbox
  WHERE recipient_address IN ({addresses}) AND category = 'marketing' AND status IN ('queued', 'sending', 'sent')
) m WHERE t >= ?`
	// queryUsage is has_vm's fallback without CloudStack: the account was billed
	// for usage (charges_account_product_hour), which arrives a day late.
	queryUsage = `SELECT DISTINCT account_id FROM charges WHERE account_id IN (%s)`
)

// Ops: show, unsubscribe by address.
const (
	queryAccountsByEmail = `SELECT id FROM accounts WHERE email = ? ORDER BY id`
	// queryMessagesOf lists an account's funnel messages: the keys of its steps.
	queryMessagesOf = `SELECT id, dedupe_key, status, attempts, next_attempt_at, claimed_at, sent_at,
  COALESCE(last_error, ''), subject FROM mail_outbox WHERE dedupe_key IN (%s) ORDER BY id`
)
