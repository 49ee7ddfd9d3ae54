-- +goose Up
-- A containment is the kill switch pulled on one agent: written, with the
-- leases it marks to end, before Vault is asked to revoke anything. The
-- revocation queue then owns ending them; a lease's containment_id lets the
-- containment report its progress.
CREATE TABLE containments (
    id          TEXT    NOT NULL PRIMARY KEY,
    agent_id    TEXT    NOT NULL REFERENCES agents (id),
    agent       TEXT    NOT NULL,
    agent_state TEXT    NOT NULL DEFAULT '',
    role        TEXT    NOT NULL DEFAULT '',
    actor       TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX containments_agent_id ON containments (agent_id, created_at);

ALTER TABLE leases ADD COLUMN containment_id TEXT REFERENCES containments (id);
CREATE INDEX leases_containment_id ON leases (containment_id, state) WHERE containment_id IS NOT NULL;
