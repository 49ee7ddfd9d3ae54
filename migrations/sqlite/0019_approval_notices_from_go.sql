-- +goose Up
-- The approval outbox is written by the store's Go code, in the
-- transaction that appends the lease event (insertLeaseEvent and
-- insertNotices in broker/sqlite), no longer by a trigger that parses the
-- lease's policy decision: the decision's JSON form is not part of the
-- schema, and every store writes the outbox the same way.
DROP TRIGGER audit_events_approval_notice;
