-- +goose Up
-- jobs reconcile usage reads collect's raw records of one window (the previous day by
-- default) every night. Without an index on their dates that read scans the whole
-- archive, which only grows; with this one it reads the window's day and the day
-- before (a daily usage server's records start up to a day before the window).
ALTER TABLE cloudstack_usage ADD KEY cloudstack_usage_start (start_date, end_date);

-- +goose Down
ALTER TABLE cloudstack_usage DROP KEY cloudstack_usage_start;
