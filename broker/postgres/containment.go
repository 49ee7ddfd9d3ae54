package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/stint-broker/stint/broker"
)

// ContainAgent implements broker.ContainmentStore. Everything happens in
// one write transaction: the containment row, the agent's update and every
// marked lease with its event.
func (db *DB) ContainAgent(ctx context.Context, c *broker.Containment, opts broker.ContainOptions) (*broker.Containment, error) {
	if c.ID == "" {
		return nil, fmt.Errorf("contain agent: no containment id")
	}
	tx, err := db.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	a, err := findAgentByID(ctx, tx, c.AgentID)
	if err != nil {
		return nil, err
	}
	if opts.AgentUpdate != nil {
		if a, err = updateAgent(ctx, tx, a.ID, *opts.AgentUpdate); err != nil {
			return nil, err
		}
		if err := appendAgentUpdateAudit(ctx, tx, a, *opts.AgentUpdate); err != nil {
			return nil, err
		}
	}
	out := *c
	out.Agent, out.CreatedAt = a.Name, tx.now
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO containments (id, agent_id, agent, agent_state, role, actor, reason, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		out.ID, out.AgentID, out.Agent, string(out.AgentState), out.Role, out.Actor, out.Reason, nanos(out.CreatedAt),
	); err != nil {
		return nil, fmt.Errorf("insert containment: %w", formatError(err))
	}

	now, grace := tx.now, normTime(opts.MintGraceUntil)
	if grace.Before(now) {
		grace = now
	}
	role := sql.NullString{String: c.Role, Valid: c.Role != ""}
	marked := 0
	for _, q := range []struct {
		from broker.LeaseState
		set  string
		args []any
		to   broker.LeaseState
	}{
		// Already ending: keep the end state, try again now. First, so that
		// the leases the next statements move to revoking are not taken
		// again.
		{broker.LeaseRevoking, `next_revoke_at = LEAST(COALESCE(next_revoke_at, ?), ?)`, []any{nanos(now), nanos(now)}, broker.LeaseRevoking},
		// Nothing was minted: these end at once.
		{broker.LeasePending, `state = 'revoked', ended_at = ?`, []any{nanos(now)}, broker.LeaseRevoked},
		{broker.LeaseApproved, `state = 'revoked', ended_at = ?`, []any{nanos(now)}, broker.LeaseRevoked},
		// A mint in flight: its minter hands the credential to the queue.
		{broker.LeaseIssuing, `state = 'revoking', end_state = 'revoked', next_revoke_at = ?`, []any{nanos(grace)}, broker.LeaseRevoking},
		{broker.LeaseActive, `state = 'revoking', end_state = 'revoked', next_revoke_at = ?`, []any{nanos(now)}, broker.LeaseRevoking},
	} {
		if err := broker.CheckLeaseMove(q.from, q.to, out.Actor); err != nil {
			return nil, fmt.Errorf("contain agent: %w", err)
		}
		args := append([]any{}, q.args...)
		args = append(args, out.ID, nanos(now), out.AgentID, string(q.from), role, role)
		rows, err := tx.QueryContext(ctx, `
			UPDATE leases SET `+q.set+`, containment_id = ?, updated_at = ?, version = version + 1
			WHERE agent_id = ? AND state = ? AND (CAST(? AS TEXT) IS NULL OR role = ?)
			RETURNING `+leaseColumns, args...)
		if err != nil {
			return nil, fmt.Errorf("contain %s leases: %w", q.from, err)
		}
		leases, err := scanLeases(rows)
		if err != nil {
			return nil, fmt.Errorf("contain %s leases: %w", q.from, err)
		}
		reason := out.Reason
		if q.from == broker.LeaseIssuing && opts.MintingReason != "" {
			reason = opts.MintingReason
		}
		insertLeaseEventBatch(tx, leases, now, q.from, q.to, out.Actor, reason)
		marked += len(leases)
	}
	if err := appendAudit(ctx, tx, &broker.AuditEvent{
		Kind: broker.AuditAgentLeasesRevoked, Actor: out.Actor, Subject: out.AgentID,
		Details: broker.AuditDetails(map[string]any{
			"containment_id": out.ID, "name": out.Agent, "agent_state": string(out.AgentState),
			"role": out.Role, "reason": out.Reason, "leases": marked,
		}),
	}); err != nil {
		return nil, err
	}
	p, err := containmentProgress(ctx, tx, out.ID)
	if err != nil {
		return nil, err
	}
	out.Progress = p
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return &out, nil
}

// FindContainmentByID implements broker.ContainmentStore.
func (db *DB) FindContainmentByID(ctx context.Context, id string) (*broker.Containment, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	cs, err := findContainments(ctx, tx, `WHERE id = ?`, id)
	if err != nil {
		return nil, err
	}
	if len(cs) == 0 {
		return nil, broker.Errorf(broker.ENOTFOUND, "Containment not found.")
	}
	return cs[0], nil
}

// FindContainments implements broker.ContainmentStore.
func (db *DB) FindContainments(ctx context.Context, agentID string, limit int) ([]*broker.Containment, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	return findContainments(ctx, tx, `WHERE agent_id = ? ORDER BY created_at DESC, id DESC `+limitOffset(limit, 0), agentID)
}

// findContainments reads the containments that where selects, each with its
// progress.
func findContainments(ctx context.Context, tx *tx, where string, args ...any) ([]*broker.Containment, error) {
	rows, err := tx.QueryContext(ctx, `
		SELECT id, agent_id, agent, agent_state, role, actor, reason, created_at
		FROM containments `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("find containments: %w", err)
	}
	var out []*broker.Containment
	for rows.Next() {
		var (
			c       broker.Containment
			state   string
			created int64
		)
		if err := rows.Scan(&c.ID, &c.AgentID, &c.Agent, &state, &c.Role, &c.Actor, &c.Reason, &created); err != nil {
			rows.Close()
			return nil, fmt.Errorf("scan containment: %w", err)
		}
		c.AgentState, c.CreatedAt = broker.AgentState(state), fromNanos(created)
		out = append(out, &c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find containments: %w", err)
	}
	for _, c := range out {
		if c.Progress, err = containmentProgress(ctx, tx, c.ID); err != nil {
			return nil, err
		}
	}
	if out == nil {
		out = []*broker.Containment{}
	}
	return out, nil
}

// containmentProgress counts the containment's leases by state and groups
// the failing ones' last errors.
func containmentProgress(ctx context.Context, tx *tx, id string) (broker.ContainmentProgress, error) {
	var (
		p    broker.ContainmentProgress
		next sql.NullInt64
	)
	if err := tx.QueryRowContext(ctx, `
		SELECT COUNT(*),
			COUNT(*) FILTER (WHERE state <> 'revoking'),
			COUNT(*) FILTER (WHERE state = 'revoking'),
			COUNT(*) FILTER (WHERE state = 'revoking' AND revoke_attempts > 0),
			MIN(next_revoke_at) FILTER (WHERE state = 'revoking' AND revoke_attempts > 0)
		FROM leases
		WHERE containment_id = ?`, id,
	).Scan(&p.Total, &p.Ended, &p.Revoking, &p.Failing, &next); err != nil {
		return p, fmt.Errorf("count containment leases: %w", err)
	}
	if next.Valid {
		t := fromNanos(next.Int64)
		p.NextAttemptAt = &t
	}
	if p.Failing == 0 {
		return p, nil
	}
	rows, err := tx.QueryContext(ctx, `
		SELECT revoke_error, COUNT(*) FROM leases
		WHERE containment_id = ? AND state = 'revoking' AND revoke_attempts > 0
		GROUP BY revoke_error ORDER BY COUNT(*) DESC, revoke_error LIMIT 5`, id)
	if err != nil {
		return p, fmt.Errorf("group containment errors: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var e broker.ContainmentError
		if err := rows.Scan(&e.Error, &e.Leases); err != nil {
			return p, fmt.Errorf("scan containment error: %w", err)
		}
		p.Errors = append(p.Errors, e)
	}
	return p, rows.Err()
}

// checkAgentActive returns EFORBIDDEN unless the lease's agent is active
// (LeaseUpdate.AgentActive).
func checkAgentActive(ctx context.Context, tx *tx, leaseID string) error {
	var state, name string
	err := tx.QueryRowContext(ctx, `
		SELECT a.state, a.name FROM leases AS l JOIN agents AS a ON a.id = l.agent_id
		WHERE l.id = ?`+shareAgent(tx), leaseID).Scan(&state, &name)
	if errors.Is(err, sql.ErrNoRows) {
		return broker.Errorf(broker.ENOTFOUND, "Lease not found.")
	} else if err != nil {
		return fmt.Errorf("check agent state: %w", err)
	}
	if broker.AgentState(state) != broker.AgentActive {
		return broker.Errorf(broker.EFORBIDDEN, "Agent %s is %s.", name, state)
	}
	return nil
}

// shareAgent locks the agent's row in share mode in a write transaction: a
// lease made live after its agent was found active commits before a
// containment of the agent (which updates the row) starts marking leases,
// or waits for it and finds the agent contained.
func shareAgent(tx *tx) string {
	if tx.write {
		return " FOR SHARE OF a"
	}
	return ""
}
