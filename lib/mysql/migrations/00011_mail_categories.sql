-- +goose Up
-- lib/mail for drip's funnel (issue 9): marketing and transactional mail are told
-- apart, a claim-time check can cancel a message, and suppressions have a kind.
--
-- Every message carries its category. Rows from before are abuse's notices:
-- transactional. The default stays so that a binary from before this migration, still
-- running while a deploy rolls out, keeps queueing what it always queued.
ALTER TABLE mail_outbox
  ADD COLUMN category ENUM('transactional','marketing') NOT NULL DEFAULT 'transactional'
    COMMENT 'marketing is blocked by an unsubscribe; transactional only by a bounce or complaint'
    AFTER dedupe_key,
  -- The bare lower-cased address of recipient (lib/mail.NormalizeAddress), for the
  -- frequency cap's per-recipient count. Empty on rows from before: all transactional,
  -- which the cap does not count.
  ADD COLUMN recipient_address VARCHAR(320) NOT NULL DEFAULT '' AFTER recipient,
  -- 'cancelled': the deliverer's claim-time check (Outbox.BeforeSend) dropped it,
  -- e.g. a funnel step queued before the account converted. last_error says why.
  MODIFY COLUMN status ENUM('queued','sending','sent','failed','suppressed','cancelled') NOT NULL DEFAULT 'queued',
  ADD KEY mail_outbox_recipient (recipient_address, category);

-- One row per address and kind: an unsubscribe blocks marketing only, a hard bounce or
-- a complaint blocks everything, and an address that unsubscribed and then bounced has
-- both. Rows from before blocked every message whatever their reason, so they become
-- bounces, which keep doing that; ops can lift and re-record them with a kind.
ALTER TABLE mail_suppressions
  ADD COLUMN kind ENUM('unsubscribe','bounce','complaint') NOT NULL DEFAULT 'bounce'
    COMMENT 'unsubscribe blocks marketing; bounce and complaint block every category'
    AFTER email,
  DROP PRIMARY KEY,
  ADD PRIMARY KEY (email, kind);

-- +goose Down
-- Going back loses what the old schema cannot hold: a cancelled message becomes
-- failed (it was never sent), and an address keeps one suppression row (which still
-- blocks everything there).
DELETE s FROM mail_suppressions s
  JOIN mail_suppressions k ON k.email = s.email AND k.kind < s.kind;
ALTER TABLE mail_suppressions
  DROP PRIMARY KEY,
  DROP COLUMN kind,
  ADD PRIMARY KEY (email);
UPDATE mail_outbox SET status = 'failed' WHERE status = 'cancelled';
ALTER TABLE mail_outbox
  DROP KEY mail_outbox_recipient,
  MODIFY COLUMN status ENUM('queued','sending','sent','failed','suppressed') NOT NULL DEFAULT 'queued',
  DROP COLUMN recipient_address,
  DROP COLUMN category;
