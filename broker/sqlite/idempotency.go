package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/stint-broker/stint/broker"
)

var _ broker.IdempotencyStore = (*DB)(nil)

// ClaimIdempotencyKey implements broker.IdempotencyStore.
func (db *DB) ClaimIdempotencyKey(ctx context.Context, k broker.IdempotencyKey, replace string) (*broker.IdempotencyKey, error) {
	tx, err := db.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	k.CreatedAt = normTime(k.CreatedAt)
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO lease_idempotency_keys (agent_id, key, lease_id, role, created_at)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (agent_id, key) DO NOTHING`,
		k.AgentID, k.Key, k.LeaseID, k.Role, nanos(k.CreatedAt),
	); isForeignKeyError(err) {
		return nil, broker.Errorf(broker.ENOTFOUND, "Agent not found.")
	} else if err != nil {
		return nil, fmt.Errorf("insert idempotency key: %w", formatError(err))
	}
	if replace != "" {
		if _, err := tx.ExecContext(ctx, `
			UPDATE lease_idempotency_keys SET lease_id = ?, role = ?, created_at = ?
			WHERE agent_id = ? AND key = ? AND lease_id = ?`,
			k.LeaseID, k.Role, nanos(k.CreatedAt), k.AgentID, k.Key, replace,
		); err != nil {
			return nil, fmt.Errorf("replace idempotency key: %w", err)
		}
	}
	var got broker.IdempotencyKey
	var created int64
	err = tx.QueryRowContext(ctx, `
		SELECT agent_id, key, lease_id, role, created_at FROM lease_idempotency_keys
		WHERE agent_id = ? AND key = ?`, k.AgentID, k.Key,
	).Scan(&got.AgentID, &got.Key, &got.LeaseID, &got.Role, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errors.New("read idempotency key: the row just written is missing")
	} else if err != nil {
		return nil, fmt.Errorf("read idempotency key: %w", err)
	}
	got.CreatedAt = fromNanos(created)
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return &got, nil
}

// ReleaseIdempotencyKey implements broker.IdempotencyStore.
func (db *DB) ReleaseIdempotencyKey(ctx context.Context, agentID, key, leaseID string) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `
		DELETE FROM lease_idempotency_keys WHERE agent_id = ? AND key = ? AND lease_id = ?`,
		agentID, key, leaseID,
	); err != nil {
		return fmt.Errorf("delete idempotency key: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
