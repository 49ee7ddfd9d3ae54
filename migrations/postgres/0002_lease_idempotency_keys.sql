-- +goose Up
-- Twin of migrations/sqlite/0016_lease_idempotency_keys.sql.
-- lease_idempotency_keys makes a lease request safe to send again: the
-- first request of an agent with a key records the lease it creates, and a
-- request with the same key finds that lease instead of creating another.
-- The primary key is the unique index that settles a race between two
-- copies of one request, on every replica. Rows are kept with their leases.
CREATE TABLE lease_idempotency_keys (
    agent_id   TEXT COLLATE "C" NOT NULL REFERENCES agents (id),
    key        TEXT COLLATE "C" NOT NULL CHECK (key <> ''),
    lease_id   TEXT COLLATE "C" NOT NULL,
    role       TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (agent_id, key)
);
