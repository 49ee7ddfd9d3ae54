-- +goose Up
-- The lease history is the audit chain. Every lease event was written
-- twice: a row of lease_events, and the audit event mirroring it in the
-- same transaction. Now it is written once, as the audit event (kind
-- lease.created, lease.state or lease.note, subject the lease id), and a
-- lease's history is read from the chain. lease_events keeps the rows it
-- has (each one is mirrored in the chain: the audit event's lease_event_id
-- names it) and takes no more.

-- +goose StatementBegin
CREATE TRIGGER lease_events_closed BEFORE INSERT ON lease_events
BEGIN
    SELECT RAISE(ABORT, 'lease_events takes no new rows: the lease history is the audit chain');
END;
-- +goose StatementEnd

-- The approval outbox follows the chain: a notice for every lease event of
-- a lease that went to approvers. The lease's policy decision is searched
-- for the outcome's text before it is parsed (a decision whose outcome is
-- "approvals" holds that text, as encoding/json writes every decision and
-- escapes no letter), so the leases that never went to approvers, almost
-- all of them, cost no JSON parsing.
DROP TRIGGER lease_events_approval_notice;

-- +goose StatementBegin
CREATE TRIGGER audit_events_approval_notice AFTER INSERT ON audit_events
WHEN NEW.kind IN ('lease.created', 'lease.state', 'lease.note') AND EXISTS (
    SELECT 1 FROM leases
    WHERE id = NEW.subject
      AND instr(policy_decision, '"approvals"') > 0
      AND CASE WHEN json_valid(policy_decision)
               THEN json_extract(policy_decision, '$.outcome') END = 'approvals'
)
BEGIN
    INSERT INTO approval_notices (lease_id, event_id, from_state, to_state, next_attempt_at, created_at)
    VALUES (
        NEW.subject,
        NEW.seq,
        CASE NEW.kind
            WHEN 'lease.state' THEN json_extract(NEW.details, '$.from')
            WHEN 'lease.note' THEN json_extract(NEW.details, '$.state')
            ELSE ''
        END,
        CASE NEW.kind
            WHEN 'lease.state' THEN json_extract(NEW.details, '$.to')
            ELSE json_extract(NEW.details, '$.state')
        END,
        NEW.at,
        NEW.at
    );
END;
-- +goose StatementEnd
