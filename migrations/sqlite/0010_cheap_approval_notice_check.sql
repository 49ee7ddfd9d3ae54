-- +goose Up
-- The approval outbox trigger ran for every lease event and parsed the
-- lease's policy decision twice (json_valid, json_extract) to learn whether
-- the lease went to approvers; almost none did. It now looks for the
-- outcome's text first, a plain substring search, and parses the JSON only
-- when the text is there. The condition is the same: a decision whose
-- outcome is "approvals" holds that text, as every decision is written by
-- encoding/json, which escapes no letter.
DROP TRIGGER lease_events_approval_notice;

-- +goose StatementBegin
CREATE TRIGGER lease_events_approval_notice AFTER INSERT ON lease_events
WHEN EXISTS (
    SELECT 1 FROM leases
    WHERE id = NEW.lease_id
      AND instr(policy_decision, '"approvals"') > 0
      AND CASE WHEN json_valid(policy_decision)
               THEN json_extract(policy_decision, '$.outcome') END = 'approvals'
)
BEGIN
    INSERT INTO approval_notices (lease_id, event_id, from_state, to_state, next_attempt_at, created_at)
    VALUES (NEW.lease_id, NEW.id, NEW.from_state, NEW.to_state, NEW.at, NEW.at);
END;
-- +goose StatementEnd
