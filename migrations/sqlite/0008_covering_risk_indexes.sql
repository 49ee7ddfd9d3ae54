-- +goose Up
-- Every request asks which roles the agent holds live (separation of duty)
-- and how many of its requests were refused in the last hour (risk).
-- Both indexes carry every column their queries read, so neither query
-- visits the leases table: with the id and state in it, the live-roles
-- index answers without one row lookup per live lease.
DROP INDEX leases_live_agent_role;
CREATE INDEX leases_live_agent_role ON leases (agent_id, role, id, state)
    WHERE state IN ('issuing', 'active', 'revoking');

-- Refused (denied or rejected) leases only: a small index, where the
-- agent's whole last hour of leases would be read through leases_agent_id.
CREATE INDEX leases_refused ON leases (agent_id, created_at, state)
    WHERE state IN ('denied', 'rejected');
