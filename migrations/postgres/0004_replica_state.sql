-- State that several Stint replicas on one store must share
-- (broker/replica.go): claims of scheduled jobs, agents' request-rate
-- buckets and windows of failed authentications. The twin of
-- sqlite/0018_replica_state.sql.

-- +goose Up

-- One row per scheduled job. A replica runs the job only when it is due
-- (next_due_at has passed) and no other replica holds an unexpired claim;
-- the claim bumps epoch, a fencing token.
CREATE TABLE job_claims (
    name        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    owner       TEXT   NOT NULL DEFAULT '',
    epoch       BIGINT NOT NULL DEFAULT 0,
    claimed_at  BIGINT NOT NULL DEFAULT 0,
    deadline    BIGINT NOT NULL DEFAULT 0,
    next_due_at BIGINT NOT NULL DEFAULT 0,
    finished_at BIGINT NOT NULL DEFAULT 0
);

-- Token buckets of the per-agent request rate, as a theoretical arrival
-- time (GCRA): a bucket whose tat has passed is full, and means nothing.
CREATE TABLE rate_buckets (
    key TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    tat BIGINT NOT NULL
);

CREATE INDEX rate_buckets_tat ON rate_buckets (tat);

-- Failed authentications per agent and per source address, one counter a
-- minute; a risk input read over the last hour, swept after it.
CREATE TABLE auth_failures (
    kind   TEXT COLLATE "C" NOT NULL CHECK (kind IN ('agent', 'source')),
    key    TEXT COLLATE "C" NOT NULL,
    minute BIGINT  NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (kind, key, minute)
);

CREATE INDEX auth_failures_minute ON auth_failures (minute);
