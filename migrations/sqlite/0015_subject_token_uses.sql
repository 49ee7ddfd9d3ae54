-- The replay cache of token exchange: every user token (subject_token) is
-- exchanged once, known by its issuer and jti (or its SHA-256 when it has no
-- jti). Kept in the store so that every replica refuses a replay; rows are
-- purged once the token could no longer be accepted.

-- +goose Up
CREATE TABLE subject_token_uses (
    issuer     TEXT    NOT NULL,
    jti        TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (issuer, jti)
) STRICT, WITHOUT ROWID;

CREATE INDEX subject_token_uses_expires_at ON subject_token_uses (expires_at);
