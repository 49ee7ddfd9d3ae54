-- State that several Stint replicas on one store must share
-- (broker/replica.go): claims of scheduled jobs, agents' request-rate
-- buckets and windows of failed authentications.

-- +goose Up

-- One row per scheduled job. A replica runs the job only when it is due
-- (next_due_at has passed) and no other replica holds an unexpired claim;
-- the claim bumps epoch, a fencing token.
CREATE TABLE job_claims (
    name        TEXT    NOT NULL PRIMARY KEY,
    owner       TEXT    NOT NULL DEFAULT '', -- the replica holding the claim; '' when free
    epoch       INTEGER NOT NULL DEFAULT 0,
    claimed_at  INTEGER NOT NULL DEFAULT 0,  -- unix nanoseconds
    deadline    INTEGER NOT NULL DEFAULT 0,  -- the claim passes to another replica after this
    next_due_at INTEGER NOT NULL DEFAULT 0,
    finished_at INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Token buckets of the per-agent request rate, as a theoretical arrival
-- time (GCRA): a bucket whose tat has passed is full, and means nothing.
CREATE TABLE rate_buckets (
    key TEXT    NOT NULL PRIMARY KEY,
    tat INTEGER NOT NULL -- unix nanoseconds
) STRICT;

CREATE INDEX rate_buckets_tat ON rate_buckets (tat);

-- Failed authentications per agent and per source address, one counter a
-- minute; a risk input read over the last hour, swept after it.
CREATE TABLE auth_failures (
    kind   TEXT    NOT NULL CHECK (kind IN ('agent', 'source')),
    key    TEXT    NOT NULL,
    minute INTEGER NOT NULL, -- unix minutes
    count  INTEGER NOT NULL,
    PRIMARY KEY (kind, key, minute)
) STRICT;

CREATE INDEX auth_failures_minute ON auth_failures (minute);
