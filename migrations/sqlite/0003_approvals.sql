-- Human approval: approvers' answers, the approval deadlines' queues, where
-- each lease's Slack message lives, and the notification outbox.

-- +goose Up

-- approvals holds each approver's answer to a pending lease: at most one per
-- approver and lease, never updated or deleted.
CREATE TABLE approvals (
    id            INTEGER NOT NULL PRIMARY KEY,
    lease_id      TEXT    NOT NULL REFERENCES leases (id),
    approver      TEXT    NOT NULL CHECK (approver <> ''), -- email, lower case
    approver_name TEXT    NOT NULL DEFAULT '',
    verdict       TEXT    NOT NULL CHECK (verdict IN ('approve', 'deny')),
    reason        TEXT    NOT NULL DEFAULT '',
    digest        TEXT    NOT NULL,
    via           TEXT    NOT NULL,
    at            INTEGER NOT NULL,
    UNIQUE (lease_id, approver)
) STRICT;

-- The approval deadlines, read by the expiry loop like leases_active_expires_at.
-- The store names these two in INDEXED BY.
CREATE INDEX leases_pending_decide_by ON leases (decide_by, id) WHERE state = 'pending';
CREATE INDEX leases_approved_activate_by ON leases (activate_by, id) WHERE state = 'approved';

-- approval_messages says where each lease's approvers' message was posted.
CREATE TABLE approval_messages (
    lease_id  TEXT    NOT NULL PRIMARY KEY REFERENCES leases (id),
    channel   TEXT    NOT NULL,
    ts        TEXT    NOT NULL,
    posted_at INTEGER NOT NULL
) STRICT;

-- approval_notices is the outbox: one row per event of a lease that needs
-- approval, written by the trigger below in the event's own transaction, and
-- marked sent once Slack has it.
CREATE TABLE approval_notices (
    id              INTEGER NOT NULL PRIMARY KEY,
    lease_id        TEXT    NOT NULL REFERENCES leases (id),
    event_id        INTEGER NOT NULL,
    from_state      TEXT    NOT NULL DEFAULT '',
    to_state        TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER
) STRICT;

-- Unsent notices: by lease (the oldest of each goes first) and by due time.
CREATE INDEX approval_notices_unsent_lease ON approval_notices (lease_id, id) WHERE sent_at IS NULL;
CREATE INDEX approval_notices_unsent_due ON approval_notices (next_attempt_at, id) WHERE sent_at IS NULL;

-- +goose StatementBegin
CREATE TRIGGER lease_events_approval_notice AFTER INSERT ON lease_events
WHEN EXISTS (
    SELECT 1 FROM leases
    WHERE id = NEW.lease_id
      AND CASE WHEN json_valid(policy_decision)
               THEN json_extract(policy_decision, '$.outcome') END = 'approvals'
)
BEGIN
    INSERT INTO approval_notices (lease_id, event_id, from_state, to_state, next_attempt_at, created_at)
    VALUES (NEW.lease_id, NEW.id, NEW.from_state, NEW.to_state, NEW.at, NEW.at);
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER approvals_no_update BEFORE UPDATE ON approvals
BEGIN
    SELECT RAISE(ABORT, 'approvals are append-only');
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER approvals_no_delete BEFORE DELETE ON approvals
BEGIN
    SELECT RAISE(ABORT, 'approvals are append-only');
END;
-- +goose StatementEnd
