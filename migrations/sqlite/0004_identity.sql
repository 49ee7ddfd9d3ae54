-- Agent identity: allowed authentication methods, SPIFFE mapping, OAuth
-- client credentials (hashes and public keys only), the access-token
-- watermark, client certificates Stint's enrolment CA issued, and the replay
-- cache of private_key_jwt assertion ids.

-- +goose Up
ALTER TABLE agents ADD COLUMN auth_methods       TEXT NOT NULL DEFAULT '["api_key"]' CHECK (json_valid(auth_methods));
ALTER TABLE agents ADD COLUMN spiffe_id          TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN client_secret_hash TEXT NOT NULL DEFAULT ''; -- hex SHA-256 of a 256-bit random secret
ALTER TABLE agents ADD COLUMN public_jwks        TEXT NOT NULL DEFAULT ''; -- a JSON Web Key Set of public keys
ALTER TABLE agents ADD COLUMN tokens_not_before  INTEGER;                  -- access tokens issued at or before it are refused

-- One agent per SPIFFE ID.
CREATE UNIQUE INDEX agents_spiffe_id ON agents (spiffe_id) WHERE spiffe_id <> '';

CREATE TABLE agent_certificates (
    serial        TEXT    NOT NULL PRIMARY KEY, -- lower-case hex
    agent_id      TEXT    NOT NULL REFERENCES agents (id),
    fingerprint   TEXT    NOT NULL,             -- hex SHA-256 of the DER
    uri           TEXT    NOT NULL,
    not_before    INTEGER NOT NULL,
    not_after     INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    revoke_reason TEXT    NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX agent_certificates_agent_id ON agent_certificates (agent_id, created_at, serial);

CREATE TABLE oauth_jtis (
    client_id  TEXT    NOT NULL,
    jti        TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
) STRICT, WITHOUT ROWID;

CREATE INDEX oauth_jtis_expires_at ON oauth_jtis (expires_at);
