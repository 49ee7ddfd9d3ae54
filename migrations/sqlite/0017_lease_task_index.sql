-- +goose Up
-- A task's leases are listed together (GET /v1/leases?task=) and released or
-- revoked together (the lease service's ReleaseTask and RevokeTask).
CREATE INDEX leases_task ON leases (task, created_at, id);
