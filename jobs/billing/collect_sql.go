package billing

import "strings"

// The collect SQL. Statements over a batch take one group of placeholders per row;
// the helpers below repeat a constant group, so only values travel as parameters.

const (
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

	// selectKeyRawSQL and selectUsageSQL load the rows of a set of usage_records
	// keys: resource IN (...) AND product IN (...) AND hour IN (...), a superset the
	// caller filters. MariaDB plans that as point ranges on the keys' index in
	// milliseconds, where an OR of 500 (resource, product, hour) triples, or a row
	// IN, spends a third of a second in the range optimizer.
	selectKeyRawPrefix = `SELECT identity, usage_id, product, hour, account_id, quantity, start_date
FROM cloudstack_usage WHERE status = 'collected' AND usage_id IN `
	selectUsagePrefix = `SELECT resource_id, product, hour, account_id, quantity FROM usage_records WHERE resource_id IN `

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

// keySet is the IN lists that follow selectKeyRawPrefix and selectUsagePrefix.
func keySet(resources, products, hours int) string {
	return inList(resources) + " AND product IN " + inList(products) + " AND hour IN " + inList(hours)
}

func selectRawSQL(n int) string { return selectRawPrefix + inList(n) }
func upsertRawSQL(n int) string { return upsertRawPrefix + valueRows(n, rawRowGroup) + upsertRawSuffix }
func upsertUsageSQL(n int) string {
	return upsertUsagePrefix + valueRows(n, usageRowGroup) + upsertUsageSuffix
}
func selectAccountsSQL(n int) string     { return selectAccountsPrefix + inList(n) }
func selectKeyRawSQL(r, p, h int) string { return selectKeyRawPrefix + keySet(r, p, h) }
func selectUsageSQL(r, p, h int) string  { return selectUsagePrefix + keySet(r, p, h) }
