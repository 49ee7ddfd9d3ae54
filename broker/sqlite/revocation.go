package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/stint-broker/stint/broker"
)

// EndRevocations implements broker.LeaseStore. One transaction ends the whole
// batch, so the expiry loop pays one commit per batch rather than per lease.
func (db *DB) EndRevocations(ctx context.Context, done []broker.RevocationDone, actor, reason string) ([]*broker.Lease, error) {
	if len(done) == 0 {
		return nil, nil
	}
	tx, err := db.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	ended := make([]*broker.Lease, 0, len(done))
	for _, d := range done {
		l, err := findLeaseByID(ctx, tx, d.LeaseID)
		if broker.ErrorCode(err) == broker.ENOTFOUND {
			continue
		} else if err != nil {
			return nil, err
		}
		if l.State != broker.LeaseRevoking {
			continue
		}
		at := d.At
		l, err = updateLease(ctx, tx, d.LeaseID, broker.LeaseUpdate{
			From:         []broker.LeaseState{broker.LeaseRevoking},
			State:        &l.EndState,
			EndedAt:      &at,
			NextRevokeAt: &time.Time{},
			RevokeError:  new(string),
			Actor:        actor,
			Reason:       reason,
		})
		if err != nil {
			return nil, err
		}
		ended = append(ended, l)
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return ended, nil
}

// LiveRoles implements broker.LeaseStore. It reads only the partial index of
// live leases by agent and role (migration 0008), so its cost does not grow
// with an agent's history, nor with how many live leases it holds of a role.
func (db *DB) LiveRoles(ctx context.Context, agentID, exceptLeaseID string) ([]string, error) {
	tx := db.readOne(ctx)
	// A skip scan: one index seek per distinct role, however many live
	// leases the agent holds of each.
	rows, err := tx.QueryContext(ctx, `
		WITH RECURSIVE live (role) AS (
			SELECT MIN(role) FROM leases INDEXED BY leases_live_agent_role
			WHERE agent_id = ?1 AND state IN ('issuing', 'active', 'revoking') AND id <> ?2
			UNION ALL
			SELECT (SELECT MIN(role) FROM leases INDEXED BY leases_live_agent_role
				WHERE agent_id = ?1 AND state IN ('issuing', 'active', 'revoking') AND id <> ?2 AND role > live.role)
			FROM live WHERE live.role IS NOT NULL
		)
		SELECT role FROM live WHERE role IS NOT NULL`, agentID, exceptLeaseID)
	if err != nil {
		return nil, fmt.Errorf("find live roles: %w", err)
	}
	return scanRoles(rows)
}

// TaskRoles implements broker.LeaseStore.
func (db *DB) TaskRoles(ctx context.Context, agentID, task string) ([]string, error) {
	rows, err := db.readOne(ctx).QueryContext(ctx, `
		SELECT DISTINCT role FROM leases
		WHERE agent_id = ? AND task = ? AND state IN ('pending', 'approved', 'issuing', 'active')
		ORDER BY role`, agentID, task)
	if err != nil {
		return nil, fmt.Errorf("find the task's roles: %w", err)
	}
	return scanRoles(rows)
}

// scanRoles reads a one-column result of role names and closes it.
func scanRoles(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	roles := []string{}
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			return nil, fmt.Errorf("scan role: %w", err)
		}
		roles = append(roles, r)
	}
	return roles, rows.Err()
}

// CountRefusals implements broker.LeaseStore. It reads only the partial
// index of refused leases (migration 0008), which stays small and holds every column the count reads.
func (db *DB) CountRefusals(ctx context.Context, agentID string, since time.Time) (int, error) {
	var n int
	if err := db.readOne(ctx).QueryRowContext(ctx, `
		SELECT COUNT(*) FROM leases INDEXED BY leases_refused
		WHERE agent_id = ? AND created_at >= ? AND state IN ('denied', 'rejected')`,
		agentID, nanos(since)).Scan(&n); err != nil {
		return 0, fmt.Errorf("count refused leases: %w", err)
	}
	return n, nil
}
