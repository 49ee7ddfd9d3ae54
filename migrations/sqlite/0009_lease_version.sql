-- +goose Up
-- version changes with every update of a lease, so that a writer holding
-- the lease as it last wrote it can update it without reading it again
-- (optimistic concurrency: the UPDATE names the version it expects).
ALTER TABLE leases ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
