-- The initial schema: agents, their API keys, leases and lease history.
--
-- Conventions: STRICT tables; times are INTEGER unix nanoseconds in UTC (NULL
-- when unset); ids are TEXT (UUIDv7 from the application); labels are a JSON
-- object in TEXT; optional strings are '' rather than NULL, except
-- vault_lease_id, which is NULL until a credential is minted so that its index
-- holds only minted leases.

-- +goose Up
CREATE TABLE agents (
    id           TEXT    NOT NULL PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    owner        TEXT    NOT NULL,
    labels       TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(labels)),
    state        TEXT    NOT NULL CHECK (state <> ''),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    last_seen_at INTEGER
) STRICT;

CREATE TABLE api_keys (
    id         TEXT    NOT NULL PRIMARY KEY,
    agent_id   TEXT    NOT NULL REFERENCES agents (id),
    prefix     TEXT    NOT NULL,
    hash       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;

CREATE INDEX api_keys_agent_id ON api_keys (agent_id, created_at, id);

CREATE TABLE leases (
    id              TEXT    NOT NULL PRIMARY KEY,
    agent_id        TEXT    NOT NULL REFERENCES agents (id),
    agent           TEXT    NOT NULL,
    role            TEXT    NOT NULL,
    task            TEXT    NOT NULL DEFAULT '',
    justification   TEXT    NOT NULL DEFAULT '',
    ttl             INTEGER NOT NULL, -- the task window in nanoseconds
    state           TEXT    NOT NULL CHECK (state <> ''),
    end_state       TEXT    NOT NULL DEFAULT '',
    decision        TEXT    NOT NULL DEFAULT '',
    vault_path      TEXT    NOT NULL DEFAULT '',
    vault_lease_id  TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    activated_at    INTEGER,
    expires_at      INTEGER,
    ended_at        INTEGER,
    revoke_attempts INTEGER NOT NULL DEFAULT 0,
    next_revoke_at  INTEGER,
    revoke_error    TEXT    NOT NULL DEFAULT ''
) STRICT;

-- The expiry loop's queue: active leases by deadline. The store names these
-- two in INDEXED BY, so renaming them breaks it loudly.
CREATE INDEX leases_active_expires_at ON leases (expires_at, id) WHERE state = 'active';
-- The revocation retry queue: revoking leases by next attempt.
CREATE INDEX leases_revoking_next_revoke_at ON leases (next_revoke_at, id) WHERE state = 'revoking';
-- The reconciler looks leases up by the credential Vault reports.
CREATE INDEX leases_vault_lease_id ON leases (vault_lease_id) WHERE vault_lease_id IS NOT NULL;
-- Listings: newest first, optionally by agent, state or role.
CREATE INDEX leases_created_at ON leases (created_at, id);
CREATE INDEX leases_agent_id ON leases (agent_id, created_at, id);
CREATE INDEX leases_state ON leases (state, created_at, id);
CREATE INDEX leases_role ON leases (role, created_at, id);

-- lease_events is the lease history: append-only, ordered by id.
CREATE TABLE lease_events (
    id         INTEGER NOT NULL PRIMARY KEY,
    lease_id   TEXT    NOT NULL REFERENCES leases (id),
    at         INTEGER NOT NULL,
    from_state TEXT    NOT NULL DEFAULT '',
    to_state   TEXT    NOT NULL,
    actor      TEXT    NOT NULL,
    reason     TEXT    NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX lease_events_lease_id ON lease_events (lease_id, id);

-- History is never rewritten or deleted. The triggers hold against every
-- client of the file, not only this code; removing them takes a migration.

-- +goose StatementBegin
CREATE TRIGGER lease_events_no_update BEFORE UPDATE ON lease_events
BEGIN
    SELECT RAISE(ABORT, 'lease_events is append-only');
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER lease_events_no_delete BEFORE DELETE ON lease_events
BEGIN
    SELECT RAISE(ABORT, 'lease_events is append-only');
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER leases_no_delete BEFORE DELETE ON leases
BEGIN
    SELECT RAISE(ABORT, 'leases are never deleted');
END;
-- +goose StatementEnd
