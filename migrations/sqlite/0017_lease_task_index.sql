-- +goose Up
-- A task's leases are listed, released and revoked together
-- (GET /v1/leases?task=, POST /v1/tasks/{task}/release|revoke), and the
-- risk score counts the roles live in one task.
CREATE INDEX leases_task ON leases (task, created_at, id);
