-- Counters of failed console password logins (broker/throttle.go): per
-- account and address ('pair'), per account and per address. Kept in the
-- store so that every replica throttles alike.

-- +goose Up

CREATE TABLE login_throttle (
    kind            TEXT    NOT NULL CHECK (kind IN ('pair', 'account', 'source')),
    key             TEXT    NOT NULL,
    failures        INTEGER NOT NULL DEFAULT 0,
    last_failure_at INTEGER,          -- unix nanoseconds
    locked_until    INTEGER,
    trusted_until   INTEGER,          -- pairs only: a successful login trusts the address for the account
    expires_at      INTEGER NOT NULL, -- the row means nothing after this; swept
    PRIMARY KEY (kind, key)
) STRICT;

CREATE INDEX login_throttle_expires ON login_throttle (expires_at);
