-- +goose Up
-- Risk scoring asks, on every request, whether the agent ever leased the
-- role before. Without this index SQLite walked leases_role newest first
-- through every agent's leases of the role: a cost that grew with history.
CREATE INDEX leases_agent_role ON leases (agent_id, role, created_at, id);
