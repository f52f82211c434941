-- +goose Up
-- Rating that no bad row or bulk load can stall.

-- A usage total too large for DECIMAL(20,6) cannot be stored; its charge is kept
-- unrated with problem quantity_out_of_range and no quantity, instead of failing
-- the whole hour's INSERT.
ALTER TABLE charges
  MODIFY quantity DECIMAL(20,6) NULL COMMENT 'NULL: the usage total does not fit (problem quantity_out_of_range)';

-- The late-usage scan re-rates, in each hour with usage recorded since its mark, the
-- keys whose latest record is that recent: with recorded_at in the covering index
-- that is one ordered pass over the hour's index, however many keys a bulk load
-- touched (finding each late key through usage_recorded and then its usage through
-- usage_hour cost a hash, a sort and a random lookup per key).
ALTER TABLE usage_records
  DROP KEY usage_hour,
  ADD KEY usage_hour (hour, account_id, product, quantity, recorded_at);

-- late_scan_from used to be the start of the previous scan, and each scan started
-- ten minutes before it; it is now exactly where the next scan starts (a committed
-- high-water mark, see jobs/billing/rate.go). Keep the next scan where it would
-- have started.
UPDATE billing_state SET late_scan_from = late_scan_from - INTERVAL 10 MINUTE
WHERE name = 'rating' AND late_scan_from IS NOT NULL;

-- +goose Down
UPDATE billing_state SET late_scan_from = late_scan_from + INTERVAL 10 MINUTE
WHERE name = 'rating' AND late_scan_from IS NOT NULL;
ALTER TABLE usage_records
  DROP KEY usage_hour,
  ADD KEY usage_hour (hour, account_id, product, quantity);
-- Charges without a quantity cannot go back: rate them again after fixing the usage.
DELETE FROM charges WHERE quantity IS NULL;
ALTER TABLE charges
  MODIFY quantity DECIMAL(20,6) NOT NULL;
