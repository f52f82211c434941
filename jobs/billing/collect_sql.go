package billing

import "strings"

// The collect SQL. Statements over a batch take one group of placeholders per row;
// the helpers below repeat a constant group, so only values travel as parameters.

const (
	// collectStateName is collect's row in usage_collect_state.
	collectStateName = "cloudstack"

	// selectCollectStateSQL reads coverage and how far the last run read.
	selectCollectStateSQL = `SELECT coverage, read_to FROM usage_collect_state WHERE name = 'cloudstack'`

	// saveCollectStateSQL records coverage and the end of the last complete read;
	// args (coverage, read_to, updated_at).
	saveCollectStateSQL = `INSERT INTO usage_collect_state (name, coverage, read_to, updated_at) VALUES ('cloudstack', ?, ?, ?)
ON DUPLICATE KEY UPDATE coverage = VALUES(coverage), read_to = VALUES(read_to), updated_at = VALUES(updated_at)`

	// selectCoverageSQL is what close checks: the coverage, when collect is in use.
	selectCoverageSQL = `SELECT coverage FROM usage_collect_state WHERE name = 'cloudstack'`

	// selectPendingSQL pages through the records waiting on a problem, by id; args
	// (after id, limit).
	selectPendingSQL = `SELECT id, identity, usage_id, usage_type, offering_id, start_date, end_date, cs_account_id,
  account_name, domain_id, vm_id, raw_usage, size, description, content_hash, problem
FROM cloudstack_usage WHERE status = 'pending' AND id > ? ORDER BY id LIMIT ?`

	// selectRawPrefix looks up stored records by identity; followed by inList(n).
	selectRawPrefix = `SELECT identity, content_hash, status, account_id, product, hour, quantity, raw_usage, size
FROM cloudstack_usage WHERE identity IN `

	// upsertRawPrefix writes new and changed records; followed by valueRows(n,
	// rawRowGroup) and upsertRawSuffix. first_seen_at is kept on update.
	upsertRawPrefix = `INSERT INTO cloudstack_usage (identity, usage_id, usage_type, offering_id, start_date, end_date,
  cs_account_id, content_hash, account_name, domain_id, vm_id, raw_usage, size, description,
  status, problem, account_id, product, hour, quantity, first_seen_at, changed_at) VALUES `
	rawRowGroup     = `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	upsertRawSuffix = `
ON DUPLICATE KEY UPDATE content_hash = VALUES(content_hash), account_name = VALUES(account_name),
  domain_id = VALUES(domain_id), vm_id = VALUES(vm_id), raw_usage = VALUES(raw_usage), size = VALUES(size),
  description = VALUES(description), status = VALUES(status), problem = VALUES(problem),
  account_id = VALUES(account_id), product = VALUES(product), hour = VALUES(hour),
  quantity = VALUES(quantity), changed_at = VALUES(changed_at)`

	// selectKeyRawPrefix loads the collected records of some usage_records keys;
	// followed by orList(n, keyRawGroup).
	selectKeyRawPrefix = `SELECT identity, usage_id, product, hour, account_id, quantity, start_date
FROM cloudstack_usage WHERE status = 'collected' AND (`
	keyRawGroup = `(usage_id = ? AND product = ? AND hour = ?)`

	// selectUsagePrefix loads usage_records rows by key; followed by orList(n,
	// keyUsageGroup) and ")".
	selectUsagePrefix = `SELECT resource_id, product, hour, account_id, quantity FROM usage_records WHERE (`
	keyUsageGroup     = `(resource_id = ? AND product = ? AND hour = ?)`

	// upsertUsagePrefix writes usage_records rows whose value changed; followed by
	// valueRows(n, usageRowGroup) and upsertUsageSuffix. Only changed rows are sent,
	// and an unchanged row would not be touched either: recorded_at moves exactly
	// when a value does, which is how rating finds late and corrected usage.
	upsertUsagePrefix = `INSERT INTO usage_records (account_id, resource_id, product, hour, quantity) VALUES `
	usageRowGroup     = `(?, ?, ?, ?, ?)`
	upsertUsageSuffix = `
ON DUPLICATE KEY UPDATE account_id = VALUES(account_id), quantity = VALUES(quantity)`

	// markDuplicatesSQL records how many extra copies of a record one read listed;
	// args (copies, identity).
	markDuplicatesSQL = `UPDATE cloudstack_usage SET duplicates = GREATEST(duplicates, ?) WHERE identity = ?`

	// selectAccountsPrefix maps CloudStack account ids to ours; followed by
	// inList(n).
	selectAccountsPrefix = `SELECT cloudstack_account_id, id FROM accounts WHERE cloudstack_account_id IN `
)

// inList is "(?, ?, ?)" for n values.
func inList(n int) string {
	return "(" + strings.TrimSuffix(strings.Repeat("?, ", n), ", ") + ")"
}

// valueRows is n copies of group, comma-separated, for a multi-row INSERT.
func valueRows(n int, group string) string {
	return strings.TrimSuffix(strings.Repeat(group+", ", n), ", ")
}

// orList is n copies of group joined with OR, closed by the prefix's parenthesis.
func orList(n int, group string) string {
	return strings.TrimSuffix(strings.Repeat(group+" OR ", n), " OR ") + ")"
}

func selectRawSQL(n int) string    { return selectRawPrefix + inList(n) }
func upsertRawSQL(n int) string    { return upsertRawPrefix + valueRows(n, rawRowGroup) + upsertRawSuffix }
func selectKeyRawSQL(n int) string { return selectKeyRawPrefix + orList(n, keyRawGroup) }
func selectUsageSQL(n int) string  { return selectUsagePrefix + orList(n, keyUsageGroup) }
func upsertUsageSQL(n int) string {
	return upsertUsagePrefix + valueRows(n, usageRowGroup) + upsertUsageSuffix
}
func selectAccountsSQL(n int) string { return selectAccountsPrefix + inList(n) }
