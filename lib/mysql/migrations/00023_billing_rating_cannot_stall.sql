-- +goose Up
-- Rating that no bad row or bulk load can stall.

-- A usage total too large for DECIMAL(20,6) cannot be stored; its charge is kept
-- unrated with problem quantity_out_of_range and no quantity, instead of failing
-- the whole hour's INSERT.
ALTER TABLE charges
  MODIFY quantity DECIMAL(20,6) NULL COMMENT 'NULL: the usage total does not fit (problem quantity_out_of_range)';

-- The late-usage scan reads the keys of the rows recorded since its mark from this
-- index alone, in one pass, however many hours they fall in.
ALTER TABLE usage_records
  DROP KEY usage_recorded,
  ADD KEY usage_recorded (recorded_at, hour, account_id, product);

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
  DROP KEY usage_recorded,
  ADD KEY usage_recorded (recorded_at, hour);
-- Charges without a quantity cannot go back: rate them again after fixing the usage.
DELETE FROM charges WHERE quantity IS NULL;
ALTER TABLE charges
  MODIFY quantity DECIMAL(20,6) NOT NULL;
