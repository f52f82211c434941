-- +goose Up
-- What the billing job learned it needs beyond 00020.

-- Close looks for rated charges not yet on an invoice before the current month; this
-- index makes that a range over only the un-invoiced rows (after a close, almost
-- none) instead of a scan of the month. It replaces charges_invoice, whose lookups
-- by invoice_id it still serves as a prefix.
ALTER TABLE charges
  DROP KEY charges_invoice,
  ADD KEY charges_uninvoiced (invoice_id, status, hour);

-- Every run looks for usage recorded since its last scan (late usage, corrections):
-- with the hour in the index, that scan reads only the index, about one hour of
-- metering per hourly run.
ALTER TABLE usage_records
  DROP KEY usage_recorded,
  ADD KEY usage_recorded (recorded_at, hour);

-- 'failed': the provider refused the request (invalid amount, unknown customer,
-- idempotency key reused with other parameters). Nothing was charged, or, for a
-- reused key, what happened is for reconciliation to find out; ops look at the
-- invoice and set collection back to 'pending' once fixed.
ALTER TABLE payments
  MODIFY status ENUM('pending','succeeded','soft_declined','hard_declined','failed') NOT NULL,
  -- The customer and card the attempt was made with: a replay must send exactly the
  -- first request's parameters (the provider refuses a key reused with others), even
  -- if the account's customer or default card changed since.
  ADD COLUMN provider_customer_id VARCHAR(64) NULL AFTER currency,
  ADD COLUMN provider_payment_method_id VARCHAR(255) NULL AFTER provider_customer_id;

ALTER TABLE invoices
  MODIFY collection ENUM('pending','retrying','hard_declined','exhausted','no_payment_method','succeeded','failed') NOT NULL DEFAULT 'pending';

-- +goose Down
ALTER TABLE invoices
  MODIFY collection ENUM('pending','retrying','hard_declined','exhausted','no_payment_method','succeeded') NOT NULL DEFAULT 'pending';
ALTER TABLE payments
  DROP COLUMN provider_payment_method_id,
  DROP COLUMN provider_customer_id,
  MODIFY status ENUM('pending','succeeded','soft_declined','hard_declined') NOT NULL;
ALTER TABLE charges
  DROP KEY charges_uninvoiced,
  ADD KEY charges_invoice (invoice_id);
ALTER TABLE usage_records
  DROP KEY usage_recorded,
  ADD KEY usage_recorded (recorded_at);
