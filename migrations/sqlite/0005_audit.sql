-- +goose Up
-- The audit log: an append-only hash chain of everything that happened (see
-- broker.AuditEvent for the canonical encoding the hashes cover), and the
-- web console's users and sessions.

-- audit_events is the chain. seq numbers it without gaps; every write
-- transaction that appends reads the head (the highest seq) and inserts
-- after it, and SQLite's single writer serializes those transactions.
CREATE TABLE audit_events (
    seq       INTEGER NOT NULL PRIMARY KEY,
    at        INTEGER NOT NULL, -- unix nanoseconds, UTC
    kind      TEXT    NOT NULL CHECK (kind <> ''),
    actor     TEXT    NOT NULL,
    subject   TEXT    NOT NULL DEFAULT '',
    details   TEXT    NOT NULL CHECK (json_valid(details)),
    prev_hash TEXT    NOT NULL CHECK (length(prev_hash) = 64),
    hash      TEXT    NOT NULL CHECK (length(hash) = 64),
    -- The lease event this event mirrors, if any. The store mirrors every
    -- lease event in the transaction that writes it; this column (outside
    -- the hashed content, which carries it as details.event_id) finds where
    -- the mirror stopped.
    lease_event_id INTEGER UNIQUE
) STRICT;

-- Exports and the console read by time, by subject and by kind.
CREATE INDEX audit_events_at ON audit_events (at, seq);
CREATE INDEX audit_events_subject ON audit_events (subject, seq) WHERE subject <> '';
CREATE INDEX audit_events_kind ON audit_events (kind, seq);

-- The chain is never rewritten or deleted. The triggers hold against every
-- client of the file; an attacker who can write the file can drop them, which
-- is what the hash chain (and anchors kept elsewhere) detect.

-- +goose StatementBegin
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
-- +goose StatementEnd

-- console_users are the humans who log in to the web console. The password
-- is kept only as a bcrypt hash.
CREATE TABLE console_users (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    email         TEXT    NOT NULL DEFAULT '',
    role          TEXT    NOT NULL CHECK (role IN ('admin', 'approver', 'reviewer')),
    state         TEXT    NOT NULL CHECK (state IN ('active', 'disabled')),
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    last_login_at INTEGER
) STRICT;

-- +goose StatementBegin
CREATE TRIGGER console_users_no_delete BEFORE DELETE ON console_users
BEGIN
    SELECT RAISE(ABORT, 'console users are disabled, never deleted');
END;
-- +goose StatementEnd

-- console_sessions are server-side sessions. id is the SHA-256 of the token
-- in the cookie; the token itself is never stored.
CREATE TABLE console_sessions (
    id              TEXT    NOT NULL PRIMARY KEY,
    user_id         TEXT    NOT NULL REFERENCES console_users (id),
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    idle_expires_at INTEGER NOT NULL,
    source_ip       TEXT    NOT NULL DEFAULT '',
    user_agent      TEXT    NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX console_sessions_user_id ON console_sessions (user_id);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);
