-- +goose Up
-- Manual tags on accounts, e.g. never_suspend ("invoiced customer"): the abuse
-- policy names the tags that exclude an account from enforcement. Who set a tag and
-- why is kept with it.
CREATE TABLE account_tags (
  account_id BIGINT        NOT NULL,
  tag        VARCHAR(64)   NOT NULL,
  reason     VARCHAR(2000) NOT NULL,
  actor      VARCHAR(255)  NOT NULL,
  created_at DATETIME(6)   NOT NULL,
  PRIMARY KEY (account_id, tag),
  KEY account_tags_tag (tag)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose Down
DROP TABLE account_tags;
