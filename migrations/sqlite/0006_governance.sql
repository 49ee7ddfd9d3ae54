-- Governance: the parts of each lease's risk score, access reviews and
-- break-glass post-reviews with their items, and the roles reviews removed
-- from agents.

-- +goose Up

-- risk_factors holds broker.Lease.RiskFactors as a JSON array ('' for none).
ALTER TABLE leases ADD COLUMN risk_factors TEXT NOT NULL DEFAULT '';

-- Separation of duty reads an agent's live leases by role inside the
-- transaction that makes a lease live.
CREATE INDEX leases_live_agent_role ON leases (agent_id, role)
    WHERE state IN ('issuing', 'active', 'revoking');

-- reviews are attestations owners owe: periodic access reviews and
-- break-glass post-reviews. Reviews are never deleted.
CREATE TABLE reviews (
    id            TEXT    NOT NULL PRIMARY KEY,
    kind          TEXT    NOT NULL CHECK (kind IN ('access', 'breakglass')),
    state         TEXT    NOT NULL CHECK (state IN ('open', 'closed')),
    campaign      TEXT    NOT NULL DEFAULT '',
    agent_id      TEXT    NOT NULL REFERENCES agents (id),
    agent         TEXT    NOT NULL,
    owner         TEXT    NOT NULL,
    lease_id      TEXT    NOT NULL DEFAULT '', -- the break-glass lease; '' for access reviews
    inactive      INTEGER NOT NULL DEFAULT 0,
    last_lease_at INTEGER,
    created_at    INTEGER NOT NULL,
    due_at        INTEGER NOT NULL,
    closed_at     INTEGER,
    closed_by     TEXT    NOT NULL DEFAULT '',
    note          TEXT    NOT NULL DEFAULT '',
    suspended_at  INTEGER,
    disabled_at   INTEGER,
    escalated_at  INTEGER
) STRICT;

-- One open review per agent, kind and lease: a second run does not open a
-- second access review while the first is open.
CREATE UNIQUE INDEX reviews_open_agent ON reviews (agent_id, kind, lease_id) WHERE state = 'open';
CREATE INDEX reviews_created_at ON reviews (created_at, id);
-- The enforcement job reads open reviews by deadline.
CREATE INDEX reviews_open_due_at ON reviews (due_at, id) WHERE state = 'open';

-- review_items are the roles of an access review, with the evidence shown
-- to the owner and the owner's verdict.
CREATE TABLE review_items (
    review_id     TEXT    NOT NULL REFERENCES reviews (id),
    role          TEXT    NOT NULL,
    last_lease_at INTEGER,
    lease_count   INTEGER NOT NULL DEFAULT 0,
    never_used    INTEGER NOT NULL DEFAULT 0,
    verdict       TEXT    NOT NULL DEFAULT '' CHECK (verdict IN ('', 'keep', 'remove')),
    attested_by   TEXT    NOT NULL DEFAULT '',
    attested_at   INTEGER,
    note          TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (review_id, role)
) STRICT;

-- role_exclusions are roles that a review removed from an agent.
CREATE TABLE role_exclusions (
    agent_id  TEXT    NOT NULL REFERENCES agents (id),
    role      TEXT    NOT NULL,
    review_id TEXT    NOT NULL DEFAULT '',
    by_actor  TEXT    NOT NULL,
    at        INTEGER NOT NULL,
    PRIMARY KEY (agent_id, role)
) STRICT;

-- +goose StatementBegin
CREATE TRIGGER reviews_no_delete BEFORE DELETE ON reviews
BEGIN
    SELECT RAISE(ABORT, 'reviews are never deleted');
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER review_items_no_delete BEFORE DELETE ON review_items
BEGIN
    SELECT RAISE(ABORT, 'review items are never deleted');
END;
-- +goose StatementEnd
