-- +goose Up
-- What policy saw and said about each lease, and the deadlines of the
-- approval flow.
ALTER TABLE leases ADD COLUMN auth_method     TEXT    NOT NULL DEFAULT '';
ALTER TABLE leases ADD COLUMN on_behalf_of    TEXT    NOT NULL DEFAULT '';
ALTER TABLE leases ADD COLUMN source_ip       TEXT    NOT NULL DEFAULT '';
ALTER TABLE leases ADD COLUMN risk_score      INTEGER NOT NULL DEFAULT 0;
ALTER TABLE leases ADD COLUMN policy_decision TEXT    NOT NULL DEFAULT ''; -- broker.Decision as JSON
ALTER TABLE leases ADD COLUMN decide_by       INTEGER; -- a pending lease times out then
ALTER TABLE leases ADD COLUMN activate_by     INTEGER; -- an approved lease lapses then
ALTER TABLE leases ADD COLUMN breakglass      INTEGER NOT NULL DEFAULT 0;
ALTER TABLE leases ADD COLUMN extensions      INTEGER NOT NULL DEFAULT 0;
