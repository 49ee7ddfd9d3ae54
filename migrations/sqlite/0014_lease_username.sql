-- +goose Up
-- username is the login name of a lease's minted credential (a database
-- role's user, such as v-token-db-reado-x1y2z3), recorded when the lease
-- becomes active so that the target's own logs can be traced back to the
-- lease. It is not a secret; '' for credentials without one (Vault tokens).
ALTER TABLE leases ADD COLUMN username TEXT NOT NULL DEFAULT '';
