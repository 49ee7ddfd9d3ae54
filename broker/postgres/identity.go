package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/stint-broker/stint/broker"
)

var _ broker.IdentityStore = (*DB)(nil)

func init() {
	// The unique indexes 0004_identity.sql adds.
	conflictMessages["agents.spiffe_id"] = "Another agent already has this SPIFFE ID."
	conflictMessages["agent_certificates.serial"] = "A certificate with this serial already exists."
	conflictMessages["oauth_jtis.client_id"] = "The assertion id was already used."
	// The primary key 0011_subject_token_uses.sql adds.
	conflictMessages["subject_token_uses.issuer"] = "The user token was already exchanged."
}

// CreateCertificate implements broker.IdentityStore. It stamps CreatedAt
// when it is zero.
func (db *DB) CreateCertificate(ctx context.Context, c *broker.Certificate) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()

	if c.CreatedAt.IsZero() {
		c.CreatedAt = tx.now
	}
	c.CreatedAt, c.NotBefore, c.NotAfter = normTime(c.CreatedAt), normTime(c.NotBefore), normTime(c.NotAfter)
	c.RevokedAt = normTimePtr(c.RevokedAt)
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO agent_certificates (serial, agent_id, fingerprint, uri, not_before, not_after, created_at, revoked_at, revoke_reason)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.Serial, c.AgentID, c.Fingerprint, c.URI, nanos(c.NotBefore), nanos(c.NotAfter),
		nanos(c.CreatedAt), nullNanos(c.RevokedAt), c.RevokeReason,
	); isForeignKeyError(err) {
		return broker.Errorf(broker.ENOTFOUND, "Agent not found.")
	} else if err != nil {
		return fmt.Errorf("insert certificate: %w", formatError(err))
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// FindCertificateBySerial implements broker.IdentityStore.
func (db *DB) FindCertificateBySerial(ctx context.Context, serial string) (*broker.Certificate, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	certs, err := findCertificates(ctx, tx, "serial = ?", serial)
	if err != nil {
		return nil, err
	} else if len(certs) == 0 {
		return nil, broker.Errorf(broker.ENOTFOUND, "Certificate not found.")
	}
	return certs[0], nil
}

// FindCertificates implements broker.IdentityStore.
func (db *DB) FindCertificates(ctx context.Context, agentID string) ([]*broker.Certificate, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	return findCertificates(ctx, tx, "agent_id = ?", agentID)
}

// RevokeCertificates implements broker.IdentityStore. A zero at means now.
func (db *DB) RevokeCertificates(ctx context.Context, agentID, serial string, at time.Time, reason string) (int, error) {
	tx, err := db.begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()

	if at.IsZero() {
		at = tx.now
	}
	res, err := tx.ExecContext(ctx, `
		UPDATE agent_certificates SET revoked_at = ?, revoke_reason = ?
		WHERE agent_id = ? AND revoked_at IS NULL AND (CAST(? AS TEXT) = '' OR serial = ?)`,
		nanos(at), reason, agentID, serial, serial)
	if err != nil {
		return 0, fmt.Errorf("revoke certificates: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("revoke certificates: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return int(n), nil
}

// UseJTI implements broker.IdentityStore. Expired ids are purged in the same
// transaction, so the cache holds only assertions that could still be
// replayed.
func (db *DB) UseJTI(ctx context.Context, clientID, jti string, expires, now time.Time) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()

	if _, err := tx.ExecContext(ctx, `DELETE FROM oauth_jtis WHERE expires_at <= ?`, nanos(now)); err != nil {
		return fmt.Errorf("purge assertion ids: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO oauth_jtis (client_id, jti, expires_at) VALUES (?, ?, ?)`,
		clientID, jti, nanos(expires),
	); err != nil {
		if err := formatError(err); broker.ErrorCode(err) == broker.ECONFLICT {
			return broker.Errorf(broker.ECONFLICT, "The assertion id was already used.")
		}
		return fmt.Errorf("record assertion id: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// UseSubjectToken implements broker.IdentityStore. Expired entries are
// purged in the same transaction, so the cache holds only user tokens that
// could still be exchanged.
func (db *DB) UseSubjectToken(ctx context.Context, issuer, jti string, expires, now time.Time) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()

	if _, err := tx.ExecContext(ctx, `DELETE FROM subject_token_uses WHERE expires_at <= ?`, nanos(now)); err != nil {
		return fmt.Errorf("purge exchanged user tokens: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO subject_token_uses (issuer, jti, expires_at) VALUES (?, ?, ?)`,
		issuer, jti, nanos(expires),
	); err != nil {
		if err := formatError(err); broker.ErrorCode(err) == broker.ECONFLICT {
			return broker.Errorf(broker.ECONFLICT, "The user token was already exchanged.")
		}
		return fmt.Errorf("record exchanged user token: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// findCertificates returns the certificates matching one condition, newest
// first.
func findCertificates(ctx context.Context, tx *tx, cond string, arg any) ([]*broker.Certificate, error) {
	rows, err := tx.QueryContext(ctx, `
		SELECT serial, agent_id, fingerprint, uri, not_before, not_after, created_at, revoked_at, revoke_reason
		FROM agent_certificates
		WHERE `+cond+`
		ORDER BY created_at DESC, serial DESC`,
		arg)
	if err != nil {
		return nil, fmt.Errorf("find certificates: %w", err)
	}
	defer rows.Close()

	certs := []*broker.Certificate{}
	for rows.Next() {
		var (
			c                              broker.Certificate
			notBefore, notAfter, createdAt int64
			revokedAt                      sql.NullInt64
		)
		if err := rows.Scan(&c.Serial, &c.AgentID, &c.Fingerprint, &c.URI, &notBefore, &notAfter, &createdAt, &revokedAt, &c.RevokeReason); err != nil {
			return nil, fmt.Errorf("scan certificate: %w", err)
		}
		c.NotBefore, c.NotAfter, c.CreatedAt = fromNanos(notBefore), fromNanos(notAfter), fromNanos(createdAt)
		c.RevokedAt = fromNullNanos(revokedAt)
		certs = append(certs, &c)
	}
	if err := rows.Err(); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("find certificates: %w", err)
	}
	return certs, nil
}
