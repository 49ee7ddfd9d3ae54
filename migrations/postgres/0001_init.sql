-- The PostgreSQL schema, equal to the SQLite schema at its version 15
-- (migrations/sqlite/0001 to 0015): the same tables, columns, indexes and
-- append-only rules. Later SQLite migrations each have a twin here, with
-- the next free number of this directory.
--
-- Conventions, kept from the SQLite schema so that a store copies from one
-- to the other value for value (stint migrate copy) and the audit chain's
-- hashes, computed over stored values, verify in both: times are BIGINT unix
-- nanoseconds in UTC (NULL when unset); ids are TEXT (UUIDv7 from the
-- application); JSON is TEXT (the audit chain hashes the exact bytes); text
-- sorts by bytes (COLLATE "C"), as in SQLite, whatever the database's locale;
-- optional strings are '' rather than NULL, except vault_lease_id and
-- containment_id.
--
-- Unlike SQLite, PostgreSQL runs writers concurrently. The audit chain is
-- serialised by audit_head, a single row every append locks (SELECT … FOR
-- UPDATE) in the transaction that makes the change it records; UNIQUE on
-- seq and on prev_hash make a fork impossible even for a writer that did not
-- lock it.

-- +goose Up
CREATE TABLE agents (
    id                 TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name               TEXT COLLATE "C" NOT NULL CONSTRAINT agents_name_key UNIQUE,
    owner              TEXT COLLATE "C" NOT NULL,
    labels             TEXT COLLATE "C" NOT NULL DEFAULT '{}' CHECK ((labels::jsonb) IS NOT NULL),
    state              TEXT COLLATE "C" NOT NULL CHECK (state <> ''),
    created_at         BIGINT  NOT NULL,
    updated_at         BIGINT  NOT NULL,
    last_seen_at       BIGINT,
    auth_methods       TEXT COLLATE "C" NOT NULL DEFAULT '["api_key"]' CHECK ((auth_methods::jsonb) IS NOT NULL),
    spiffe_id          TEXT COLLATE "C" NOT NULL DEFAULT '',
    client_secret_hash TEXT COLLATE "C" NOT NULL DEFAULT '',
    public_jwks        TEXT COLLATE "C" NOT NULL DEFAULT '',
    tokens_not_before  BIGINT
);

CREATE UNIQUE INDEX agents_spiffe_id ON agents (spiffe_id) WHERE spiffe_id <> '';

CREATE TABLE api_keys (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    agent_id   TEXT COLLATE "C" NOT NULL REFERENCES agents (id),
    prefix     TEXT COLLATE "C" NOT NULL,
    hash       TEXT COLLATE "C" NOT NULL CONSTRAINT api_keys_hash_key UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE INDEX api_keys_agent_id ON api_keys (agent_id, created_at, id);

CREATE TABLE containments (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    agent_id    TEXT COLLATE "C" NOT NULL REFERENCES agents (id),
    agent       TEXT COLLATE "C" NOT NULL,
    agent_state TEXT COLLATE "C" NOT NULL DEFAULT '',
    role        TEXT COLLATE "C" NOT NULL DEFAULT '',
    actor       TEXT COLLATE "C" NOT NULL,
    reason      TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX containments_agent_id ON containments (agent_id, created_at);

CREATE TABLE leases (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    agent_id        TEXT COLLATE "C" NOT NULL REFERENCES agents (id),
    agent           TEXT COLLATE "C" NOT NULL,
    role            TEXT COLLATE "C" NOT NULL,
    task            TEXT COLLATE "C" NOT NULL DEFAULT '',
    justification   TEXT COLLATE "C" NOT NULL DEFAULT '',
    ttl             BIGINT  NOT NULL, -- the task window in nanoseconds
    state           TEXT COLLATE "C" NOT NULL CHECK (state <> ''),
    end_state       TEXT COLLATE "C" NOT NULL DEFAULT '',
    decision        TEXT COLLATE "C" NOT NULL DEFAULT '',
    vault_path      TEXT COLLATE "C" NOT NULL DEFAULT '',
    vault_lease_id  TEXT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    activated_at    BIGINT,
    expires_at      BIGINT,
    ended_at        BIGINT,
    revoke_attempts INTEGER NOT NULL DEFAULT 0,
    next_revoke_at  BIGINT,
    revoke_error    TEXT COLLATE "C" NOT NULL DEFAULT '',
    auth_method     TEXT COLLATE "C" NOT NULL DEFAULT '',
    on_behalf_of    TEXT COLLATE "C" NOT NULL DEFAULT '',
    source_ip       TEXT COLLATE "C" NOT NULL DEFAULT '',
    risk_score      INTEGER NOT NULL DEFAULT 0,
    policy_decision TEXT COLLATE "C" NOT NULL DEFAULT '', -- broker.Decision as JSON
    decide_by       BIGINT,  -- a pending lease times out then
    activate_by     BIGINT,  -- an approved lease lapses then
    breakglass      BOOLEAN NOT NULL DEFAULT FALSE,
    extensions      INTEGER NOT NULL DEFAULT 0,
    risk_factors    TEXT COLLATE "C" NOT NULL DEFAULT '', -- broker.Lease.RiskFactors as JSON ('' for none)
    version         BIGINT  NOT NULL DEFAULT 0,
    containment_id  TEXT COLLATE "C" REFERENCES containments (id),
    username        TEXT COLLATE "C" NOT NULL DEFAULT ''
);

-- The queues: active leases by deadline, revoking leases by next attempt,
-- and the approval deadlines. Replicas claim from them with FOR UPDATE SKIP
-- LOCKED.
CREATE INDEX leases_active_expires_at ON leases (expires_at, id) WHERE state = 'active';
CREATE INDEX leases_revoking_next_revoke_at ON leases (next_revoke_at, id) WHERE state = 'revoking';
CREATE INDEX leases_pending_decide_by ON leases (decide_by, id) WHERE state = 'pending';
CREATE INDEX leases_approved_activate_by ON leases (activate_by, id) WHERE state = 'approved';
-- The reconciler looks leases up by the credential Vault reports.
CREATE INDEX leases_vault_lease_id ON leases (vault_lease_id) WHERE vault_lease_id IS NOT NULL;
-- Listings: newest first, optionally by agent, state or role.
CREATE INDEX leases_created_at ON leases (created_at, id);
CREATE INDEX leases_agent_id ON leases (agent_id, created_at, id);
CREATE INDEX leases_state ON leases (state, created_at, id);
CREATE INDEX leases_role ON leases (role, created_at, id);
CREATE INDEX leases_agent_role ON leases (agent_id, role, created_at, id);
CREATE INDEX leases_live_agent_role ON leases (agent_id, role, id, state)
    WHERE state IN ('issuing', 'active', 'revoking');
CREATE INDEX leases_refused ON leases (agent_id, created_at, state)
    WHERE state IN ('denied', 'rejected');
CREATE INDEX leases_containment_id ON leases (containment_id, state) WHERE containment_id IS NOT NULL;

-- lease_events held the lease history before it moved into the audit chain
-- (SQLite version 10). It takes no new rows; a store copied from SQLite
-- keeps the rows it had (stint migrate copy sets stint.copy for that).
CREATE TABLE lease_events (
    id         BIGINT NOT NULL PRIMARY KEY,
    lease_id   TEXT COLLATE "C" NOT NULL REFERENCES leases (id),
    at         BIGINT NOT NULL,
    from_state TEXT COLLATE "C" NOT NULL DEFAULT '',
    to_state   TEXT COLLATE "C" NOT NULL,
    actor      TEXT COLLATE "C" NOT NULL,
    reason     TEXT COLLATE "C" NOT NULL DEFAULT ''
);

CREATE INDEX lease_events_lease_id ON lease_events (lease_id, id);

-- approvals holds each approver's answer to a pending lease: at most one per
-- approver and lease, never updated or deleted.
CREATE TABLE approvals (
    id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    lease_id      TEXT COLLATE "C" NOT NULL REFERENCES leases (id),
    approver      TEXT COLLATE "C" NOT NULL CHECK (approver <> ''), -- email, lower case
    approver_name TEXT COLLATE "C" NOT NULL DEFAULT '',
    verdict       TEXT COLLATE "C" NOT NULL CHECK (verdict IN ('approve', 'deny')),
    reason        TEXT COLLATE "C" NOT NULL DEFAULT '',
    digest        TEXT COLLATE "C" NOT NULL,
    via           TEXT COLLATE "C" NOT NULL,
    at            BIGINT NOT NULL,
    UNIQUE (lease_id, approver)
);

-- approval_messages says where each lease's approvers' message was posted.
CREATE TABLE approval_messages (
    lease_id  TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES leases (id),
    channel   TEXT COLLATE "C" NOT NULL,
    ts        TEXT COLLATE "C" NOT NULL,
    posted_at BIGINT NOT NULL
);

-- approval_notices is the approval outbox.
CREATE TABLE approval_notices (
    id              BIGINT  GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    lease_id        TEXT COLLATE "C" NOT NULL REFERENCES leases (id),
    event_id        BIGINT  NOT NULL,
    from_state      TEXT COLLATE "C" NOT NULL DEFAULT '',
    to_state        TEXT COLLATE "C" NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    last_error      TEXT COLLATE "C" NOT NULL DEFAULT '',
    created_at      BIGINT  NOT NULL,
    sent_at         BIGINT
);

CREATE INDEX approval_notices_unsent_lease ON approval_notices (lease_id, id) WHERE sent_at IS NULL;
CREATE INDEX approval_notices_unsent_due ON approval_notices (next_attempt_at, id) WHERE sent_at IS NULL;

CREATE TABLE agent_certificates (
    serial        TEXT COLLATE "C" NOT NULL PRIMARY KEY, -- lower-case hex
    agent_id      TEXT COLLATE "C" NOT NULL REFERENCES agents (id),
    fingerprint   TEXT COLLATE "C" NOT NULL,             -- hex SHA-256 of the DER
    uri           TEXT COLLATE "C" NOT NULL,
    not_before    BIGINT NOT NULL,
    not_after     BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    revoke_reason TEXT COLLATE "C" NOT NULL DEFAULT ''
);

CREATE INDEX agent_certificates_agent_id ON agent_certificates (agent_id, created_at, serial);

CREATE TABLE oauth_jtis (
    client_id  TEXT COLLATE "C" NOT NULL,
    jti        TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);

CREATE INDEX oauth_jtis_expires_at ON oauth_jtis (expires_at);

CREATE TABLE subject_token_uses (
    issuer     TEXT COLLATE "C" NOT NULL,
    jti        TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, jti)
);

CREATE INDEX subject_token_uses_expires_at ON subject_token_uses (expires_at);

-- audit_events is the chain, numbered by seq without gaps.
CREATE TABLE audit_events (
    seq            BIGINT NOT NULL PRIMARY KEY,
    at             BIGINT NOT NULL, -- unix nanoseconds, UTC
    kind           TEXT COLLATE "C" NOT NULL CHECK (kind <> ''),
    actor          TEXT COLLATE "C" NOT NULL,
    subject        TEXT COLLATE "C" NOT NULL DEFAULT '',
    details        TEXT COLLATE "C" NOT NULL CHECK ((details::jsonb) IS NOT NULL),
    prev_hash      TEXT COLLATE "C" NOT NULL CHECK (length(prev_hash) = 64) CONSTRAINT audit_events_prev_hash_key UNIQUE,
    hash           TEXT COLLATE "C" NOT NULL CHECK (length(hash) = 64),
    lease_event_id BIGINT UNIQUE
);

CREATE INDEX audit_events_at ON audit_events (at, seq);
CREATE INDEX audit_events_subject ON audit_events (subject, seq) WHERE subject <> '';
CREATE INDEX audit_events_kind ON audit_events (kind, seq);

-- audit_head is the chain's head: one row, locked FOR UPDATE by every
-- append in the transaction of the change it records, so appends run one
-- at a time however many replicas write. seq 0 is the empty chain.
CREATE TABLE audit_head (
    id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    seq  BIGINT  NOT NULL,
    hash TEXT COLLATE "C" NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '');

CREATE TABLE console_users (
    id            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name          TEXT COLLATE "C" NOT NULL UNIQUE,
    email         TEXT COLLATE "C" NOT NULL DEFAULT '',
    role          TEXT COLLATE "C" NOT NULL CHECK (role IN ('admin', 'approver', 'reviewer')),
    state         TEXT COLLATE "C" NOT NULL CHECK (state IN ('active', 'disabled')),
    password_hash TEXT COLLATE "C" NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    last_login_at BIGINT
);

CREATE TABLE console_sessions (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    user_id         TEXT COLLATE "C" NOT NULL REFERENCES console_users (id),
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    idle_expires_at BIGINT NOT NULL,
    source_ip       TEXT COLLATE "C" NOT NULL DEFAULT '',
    user_agent      TEXT COLLATE "C" NOT NULL DEFAULT ''
);

CREATE INDEX console_sessions_user_id ON console_sessions (user_id);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);

CREATE TABLE reviews (
    id            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    kind          TEXT COLLATE "C" NOT NULL CHECK (kind IN ('access', 'breakglass')),
    state         TEXT COLLATE "C" NOT NULL CHECK (state IN ('open', 'closed')),
    campaign      TEXT COLLATE "C" NOT NULL DEFAULT '',
    agent_id      TEXT COLLATE "C" NOT NULL REFERENCES agents (id),
    agent         TEXT COLLATE "C" NOT NULL,
    owner         TEXT COLLATE "C" NOT NULL,
    lease_id      TEXT COLLATE "C" NOT NULL DEFAULT '',
    inactive      BOOLEAN NOT NULL DEFAULT FALSE,
    last_lease_at BIGINT,
    created_at    BIGINT  NOT NULL,
    due_at        BIGINT  NOT NULL,
    closed_at     BIGINT,
    closed_by     TEXT COLLATE "C" NOT NULL DEFAULT '',
    note          TEXT COLLATE "C" NOT NULL DEFAULT '',
    suspended_at  BIGINT,
    disabled_at   BIGINT,
    escalated_at  BIGINT
);

CREATE UNIQUE INDEX reviews_open_agent ON reviews (agent_id, kind, lease_id) WHERE state = 'open';
CREATE INDEX reviews_created_at ON reviews (created_at, id);
CREATE INDEX reviews_open_due_at ON reviews (due_at, id) WHERE state = 'open';

CREATE TABLE review_items (
    review_id     TEXT COLLATE "C" NOT NULL REFERENCES reviews (id),
    role          TEXT COLLATE "C" NOT NULL,
    last_lease_at BIGINT,
    lease_count   INTEGER NOT NULL DEFAULT 0,
    never_used    BOOLEAN NOT NULL DEFAULT FALSE,
    verdict       TEXT COLLATE "C" NOT NULL DEFAULT '' CHECK (verdict IN ('', 'keep', 'remove')),
    attested_by   TEXT COLLATE "C" NOT NULL DEFAULT '',
    attested_at   BIGINT,
    note          TEXT COLLATE "C" NOT NULL DEFAULT '',
    PRIMARY KEY (review_id, role)
);

CREATE TABLE review_attestations (
    id        BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    review_id TEXT COLLATE "C" NOT NULL,
    role      TEXT COLLATE "C" NOT NULL,
    verdict   TEXT COLLATE "C" NOT NULL CHECK (verdict IN ('keep', 'remove')),
    by_actor  TEXT COLLATE "C" NOT NULL,
    at        BIGINT NOT NULL,
    note      TEXT COLLATE "C" NOT NULL DEFAULT '',
    FOREIGN KEY (review_id, role) REFERENCES review_items (review_id, role)
);

CREATE INDEX review_attestations_item ON review_attestations (review_id, role, id);

CREATE TABLE role_exclusions (
    agent_id  TEXT COLLATE "C" NOT NULL REFERENCES agents (id),
    role      TEXT COLLATE "C" NOT NULL,
    review_id TEXT COLLATE "C" NOT NULL DEFAULT '',
    by_actor  TEXT COLLATE "C" NOT NULL,
    at        BIGINT NOT NULL,
    PRIMARY KEY (agent_id, role)
);

CREATE TABLE login_throttle (
    kind            TEXT COLLATE "C" NOT NULL CHECK (kind IN ('pair', 'account', 'source')),
    key             TEXT COLLATE "C" NOT NULL,
    failures        INTEGER NOT NULL DEFAULT 0,
    last_failure_at BIGINT,
    locked_until    BIGINT,
    trusted_until   BIGINT,
    expires_at      BIGINT  NOT NULL,
    PRIMARY KEY (kind, key)
);

CREATE INDEX login_throttle_expires ON login_throttle (expires_at);

-- History is never rewritten or deleted. The triggers hold against every
-- client of the database, not only this code; removing them takes a
-- migration.

-- +goose StatementBegin
CREATE FUNCTION stint_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'restrict_violation';
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER lease_events_no_update BEFORE UPDATE ON lease_events
    FOR EACH ROW EXECUTE FUNCTION stint_refuse('lease_events is append-only');
CREATE TRIGGER lease_events_no_delete BEFORE DELETE ON lease_events
    FOR EACH ROW EXECUTE FUNCTION stint_refuse('lease_events is append-only');
CREATE TRIGGER leases_no_delete BEFORE DELETE ON leases
    FOR EACH ROW EXECUTE FUNCTION stint_refuse('leases are never deleted');
CREATE TRIGGER approvals_no_update BEFORE UPDATE ON approvals
    FOR EACH ROW EXECUTE FUNCTION stint_refuse('approvals are append-only');
CREATE TRIGGER approvals_no_delete BEFORE DELETE ON approvals
    FOR EACH ROW EXECUTE FUNCTION stint_refuse('approvals are append-only');
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION stint_refuse('audit_events is append-only');
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION stint_refuse('audit_events is append-only');
CREATE TRIGGER console_users_no_delete BEFORE DELETE ON console_users
    FOR EACH ROW EXECUTE FUNCTION stint_refuse('console users are disabled, never deleted');
CREATE TRIGGER reviews_no_delete BEFORE DELETE ON reviews
    FOR EACH ROW EXECUTE FUNCTION stint_refuse('reviews are never deleted');
CREATE TRIGGER review_items_no_delete BEFORE DELETE ON review_items
    FOR EACH ROW EXECUTE FUNCTION stint_refuse('review items are never deleted');
CREATE TRIGGER review_attestations_no_update BEFORE UPDATE ON review_attestations
    FOR EACH ROW EXECUTE FUNCTION stint_refuse('review attestations are append-only');
CREATE TRIGGER review_attestations_no_delete BEFORE DELETE ON review_attestations
    FOR EACH ROW EXECUTE FUNCTION stint_refuse('review attestations are append-only');
-- TRUNCATE fires no row trigger: refuse it on the history tables too.
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION stint_refuse('audit_events is append-only');
CREATE TRIGGER lease_events_no_truncate BEFORE TRUNCATE ON lease_events
    FOR EACH STATEMENT EXECUTE FUNCTION stint_refuse('lease_events is append-only');
CREATE TRIGGER approvals_no_truncate BEFORE TRUNCATE ON approvals
    FOR EACH STATEMENT EXECUTE FUNCTION stint_refuse('approvals are append-only');

-- lease_events takes no new rows, but for the rows stint migrate copy
-- brings from a SQLite store (in its own transaction, with stint.copy set).
-- +goose StatementBegin
CREATE FUNCTION lease_events_closed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('stint.copy', true) = 'on' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'lease_events takes no new rows: the lease history is the audit chain'
        USING ERRCODE = 'restrict_violation';
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER lease_events_closed BEFORE INSERT ON lease_events
    FOR EACH ROW EXECUTE FUNCTION lease_events_closed();

-- The approval outbox follows the chain: a notice for every lease event of
-- a lease that went to approvers, in the transaction that appends it.
-- +goose StatementBegin
CREATE FUNCTION audit_events_approval_notice() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d jsonb;
BEGIN
    IF NEW.kind NOT IN ('lease.created', 'lease.state', 'lease.note') THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM leases
        WHERE id = NEW.subject
          AND strpos(policy_decision, '"approvals"') > 0
          AND (policy_decision::jsonb ->> 'outcome') = 'approvals'
    ) THEN
        RETURN NULL;
    END IF;
    d := NEW.details::jsonb;
    INSERT INTO approval_notices (lease_id, event_id, from_state, to_state, next_attempt_at, created_at)
    VALUES (
        NEW.subject,
        NEW.seq,
        CASE NEW.kind
            WHEN 'lease.state' THEN d ->> 'from'
            WHEN 'lease.note' THEN d ->> 'state'
            ELSE ''
        END,
        CASE NEW.kind
            WHEN 'lease.state' THEN d ->> 'to'
            ELSE d ->> 'state'
        END,
        NEW.at,
        NEW.at
    );
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER audit_events_approval_notice AFTER INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_approval_notice();
