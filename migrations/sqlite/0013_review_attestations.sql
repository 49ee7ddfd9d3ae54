-- +goose Up
-- review_attestations keeps every attestation of an access review's items:
-- who said keep or remove, when, and why. An owner's attestation and an
-- admin's are both kept; one never erases the other. The verdict columns of
-- review_items summarise them (the attestation that set the item's current
-- verdict).
CREATE TABLE review_attestations (
    id        INTEGER NOT NULL PRIMARY KEY,
    review_id TEXT    NOT NULL,
    role      TEXT    NOT NULL,
    verdict   TEXT    NOT NULL CHECK (verdict IN ('keep', 'remove')),
    by_actor  TEXT    NOT NULL,
    at        INTEGER NOT NULL,
    note      TEXT    NOT NULL DEFAULT '',
    FOREIGN KEY (review_id, role) REFERENCES review_items (review_id, role)
) STRICT;

CREATE INDEX review_attestations_item ON review_attestations (review_id, role, id);

-- Items attested before this table existed keep their one attestation.
INSERT INTO review_attestations (review_id, role, verdict, by_actor, at, note)
SELECT review_id, role, verdict, attested_by, IFNULL(attested_at, 0), note
FROM review_items WHERE verdict <> ''
ORDER BY IFNULL(attested_at, 0), review_id, role;

-- +goose StatementBegin
CREATE TRIGGER review_attestations_no_update BEFORE UPDATE ON review_attestations
BEGIN
    SELECT RAISE(ABORT, 'review attestations are append-only');
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER review_attestations_no_delete BEFORE DELETE ON review_attestations
BEGIN
    SELECT RAISE(ABORT, 'review attestations are append-only');
END;
-- +goose StatementEnd
