package postgres

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/stint-broker/stint/broker"
)

// leaseColumns is the column list every lease query selects, in scanLease's
// order.
const leaseColumns = `id, agent_id, agent, role, task, justification, ttl, state, end_state,
	decision, vault_path, vault_lease_id, created_at, updated_at, activated_at, expires_at,
	ended_at, revoke_attempts, next_revoke_at, revoke_error,
	auth_method, on_behalf_of, source_ip, risk_score, policy_decision, decide_by, activate_by,
	breakglass, extensions, risk_factors, username, version, containment_id`

// CreateLease implements broker.LeaseStore. It assigns an ID when l.ID is
// empty and stamps CreatedAt and UpdatedAt when they are zero; the first
// event is dated CreatedAt. It also returns ENOTFOUND if the agent does not
// exist.
func (db *DB) CreateLease(ctx context.Context, l *broker.Lease, actor, reason string) error {
	return db.grouped(ctx, func(ctx context.Context, tx *tx) error {
		created := *l
		if err := createLease(ctx, tx, &created); err != nil {
			return err
		}
		insertLeaseEvent(tx, &created, &broker.LeaseEvent{
			LeaseID: created.ID, At: created.CreatedAt, To: created.State, Actor: actor, Reason: reason,
		})
		*l = created
		return nil
	})
}

// FindLeaseByID implements broker.LeaseStore.
func (db *DB) FindLeaseByID(ctx context.Context, id string) (*broker.Lease, error) {
	tx := db.readOne(ctx)
	return findLeaseByID(ctx, tx, id)
}

// FindLeases implements broker.LeaseStore. Leases are ordered by CreatedAt,
// newest first, then by ID descending.
func (db *DB) FindLeases(ctx context.Context, filter broker.LeaseFilter) ([]*broker.Lease, int, error) {
	if filter.NoTotal { // one query: no snapshot to share with a count
		tx := db.readOne(ctx)
		return findLeases(ctx, tx, filter)
	}
	tx, err := db.beginRead(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer tx.Rollback()
	return findLeases(ctx, tx, filter)
}

// UpdateLease implements broker.LeaseStore. The event is dated, and UpdatedAt
// set to, the store's clock.
func (db *DB) UpdateLease(ctx context.Context, id string, upd broker.LeaseUpdate) (*broker.Lease, error) {
	var l *broker.Lease
	err := db.grouped(ctx, func(ctx context.Context, tx *tx) error {
		var err error
		l, err = updateLease(ctx, tx, id, upd)
		return err
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

// FindLeaseEvents implements broker.LeaseStore: the lease's events in the
// audit chain, oldest first, each one's ID its seq. An unknown lease has no
// events.
func (db *DB) FindLeaseEvents(ctx context.Context, leaseID string) ([]*broker.LeaseEvent, error) {
	tx := db.readOne(ctx)

	rows, err := tx.QueryContext(ctx, `
		SELECT seq, at, kind, actor, details
		FROM audit_events
		WHERE subject = ? AND subject <> '' AND kind IN ('`+broker.AuditLeaseCreated+`', '`+broker.AuditLeaseState+`', '`+broker.AuditLeaseNote+`')
		ORDER BY seq`,
		leaseID)
	if err != nil {
		return nil, fmt.Errorf("find lease events: %w", err)
	}
	defer rows.Close()

	events := []*broker.LeaseEvent{}
	for rows.Next() {
		var (
			e             = broker.LeaseEvent{LeaseID: leaseID}
			at            int64
			kind, details string
		)
		if err := rows.Scan(&e.ID, &at, &kind, &e.Actor, &details); err != nil {
			return nil, fmt.Errorf("scan lease event: %w", err)
		}
		var d struct{ From, To, State, Reason string }
		if err := json.Unmarshal([]byte(details), &d); err != nil {
			return nil, fmt.Errorf("decode lease event %d: %w", e.ID, err)
		}
		e.At, e.Reason = fromNanos(at), d.Reason
		switch kind {
		case broker.AuditLeaseState:
			e.From, e.To = broker.LeaseState(d.From), broker.LeaseState(d.To)
		case broker.AuditLeaseNote:
			e.From, e.To = broker.LeaseState(d.State), broker.LeaseState(d.State)
		default: // created
			e.To = broker.LeaseState(d.State)
		}
		events = append(events, &e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find lease events: %w", err)
	}
	return events, nil
}

// FindLeaseEndings implements broker.LeaseStore. It reads the lease
// history in the audit chain, a few hundred leases a query.
func (db *DB) FindLeaseEndings(ctx context.Context, leaseIDs []string) (map[string]*broker.LeaseEvent, error) {
	out := make(map[string]*broker.LeaseEvent)
	if len(leaseIDs) == 0 {
		return out, nil
	}
	ending := []string{"'" + string(broker.LeaseRevoking) + "'"}
	for _, st := range broker.LeaseStates {
		if st.Terminal() {
			ending = append(ending, "'"+string(st)+"'")
		}
	}
	tx := db.readOne(ctx)
	const chunk = 500
	for start := 0; start < len(leaseIDs); start += chunk {
		ids := leaseIDs[start:min(start+chunk, len(leaseIDs))]
		args := make([]any, len(ids))
		for i, id := range ids {
			args[i] = id
		}
		rows, err := tx.QueryContext(ctx, `
			SELECT subject, seq, at, kind, actor, details
			FROM audit_events
			WHERE subject IN (?`+strings.Repeat(", ?", len(ids)-1)+`) AND subject <> ''
				AND kind IN ('`+broker.AuditLeaseCreated+`', '`+broker.AuditLeaseState+`')
				AND (CAST(details AS jsonb) ->> CASE kind WHEN '`+broker.AuditLeaseState+`' THEN 'to' ELSE 'state' END)
					IN (`+strings.Join(ending, ", ")+`)
			ORDER BY seq`, args...)
		if err != nil {
			return nil, fmt.Errorf("find lease endings: %w", err)
		}
		for rows.Next() {
			var (
				e             broker.LeaseEvent
				at            int64
				kind, details string
			)
			if err := rows.Scan(&e.LeaseID, &e.ID, &at, &kind, &e.Actor, &details); err != nil {
				rows.Close()
				return nil, fmt.Errorf("scan lease ending: %w", err)
			}
			if out[e.LeaseID] != nil {
				continue // a later step of the same end
			}
			var d struct{ From, To, State, Reason string }
			if err := json.Unmarshal([]byte(details), &d); err != nil {
				rows.Close()
				return nil, fmt.Errorf("decode lease event %d: %w", e.ID, err)
			}
			e.At, e.Reason = fromNanos(at), d.Reason
			if kind == broker.AuditLeaseState {
				e.From, e.To = broker.LeaseState(d.From), broker.LeaseState(d.To)
			} else {
				e.To = broker.LeaseState(d.State)
			}
			out[e.LeaseID] = &e
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("find lease endings: %w", err)
		}
	}
	return out, nil
}

// NextLeaseDeadline implements broker.LeaseStore.
func (db *DB) NextLeaseDeadline(ctx context.Context) (time.Time, bool, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return time.Time{}, false, err
	}
	defer tx.Rollback()

	// One index seek per queue, each reading the first entry of its
	// partial index. the queue queries to the partial
	// indexes: without statistics SQLite prefers leases_state, then sorts
	// every active lease to find the first few.
	var next int64
	var ok bool
	for _, query := range []string{
		`SELECT expires_at FROM leases
		WHERE state = 'active' AND expires_at IS NOT NULL
		ORDER BY expires_at LIMIT 1`,
		`SELECT next_revoke_at FROM leases
		WHERE state = 'revoking' AND next_revoke_at IS NOT NULL
		ORDER BY next_revoke_at LIMIT 1`,
		// The approval deadlines (migration 0003): pending leases time out,
		// approved leases lapse.
		`SELECT decide_by FROM leases
		WHERE state = 'pending' AND decide_by IS NOT NULL
		ORDER BY decide_by LIMIT 1`,
		`SELECT activate_by FROM leases
		WHERE state = 'approved' AND activate_by IS NOT NULL
		ORDER BY activate_by LIMIT 1`,
	} {
		var t int64
		switch err := tx.QueryRowContext(ctx, query).Scan(&t); {
		case errors.Is(err, sql.ErrNoRows):
			continue
		case err != nil:
			return time.Time{}, false, fmt.Errorf("find next lease deadline: %w", err)
		}
		if !ok || t < next {
			next, ok = t, true
		}
	}
	if !ok {
		return time.Time{}, false, nil
	}
	return fromNanos(next), true, nil
}

// ClaimExpiredLeases implements broker.LeaseStore. The claimed leases'
// UpdatedAt and their events are dated now. Returns an error if limit is not
// positive.
func (db *DB) ClaimExpiredLeases(ctx context.Context, now, retryAt time.Time, limit int, actor, reason string) ([]*broker.Lease, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("claim expired leases: limit %d is not positive", limit)
	}
	if err := broker.CheckLeaseMove(broker.LeaseActive, broker.LeaseRevoking, actor); err != nil {
		return nil, fmt.Errorf("claim expired leases: %w", err)
	}
	tx, err := db.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	now, retryAt = normTime(now), normTime(retryAt)
	// SKIP LOCKED: replicas claiming at once take disjoint batches, never
	// waiting on each other and never claiming a lease twice.
	rows, err := tx.QueryContext(ctx, `
		WITH due AS (
			SELECT id AS due_id FROM leases
			WHERE state = 'active' AND expires_at <= ?5
			ORDER BY expires_at, id
			LIMIT ?6
			FOR UPDATE SKIP LOCKED
		)
		UPDATE leases
		SET state = ?1, end_state = ?2, next_revoke_at = ?3, updated_at = ?4, version = version + 1
		FROM due WHERE id = due.due_id
		RETURNING `+leaseColumns,
		string(broker.LeaseRevoking), string(broker.LeaseExpired), nanos(retryAt), nanos(now),
		nanos(now), limit)
	if err != nil {
		return nil, fmt.Errorf("claim expired leases: %w", err)
	}
	leases, err := scanLeases(rows)
	if err != nil {
		return nil, fmt.Errorf("claim expired leases: %w", err)
	}
	if len(leases) == 0 {
		return leases, nil
	}
	// RETURNING has no defined order; the contract is earliest deadline first,
	// and the events are numbered in the same order.
	slices.SortFunc(leases, func(a, b *broker.Lease) int {
		return cmp.Or(a.ExpiresAt.Compare(*b.ExpiresAt), strings.Compare(a.ID, b.ID))
	})

	insertLeaseEventBatch(tx, leases, now, broker.LeaseActive, broker.LeaseRevoking, actor, reason)
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return leases, nil
}

// ClaimDueRevocations implements broker.LeaseStore. The leases come earliest
// due first, and their UpdatedAt is set to now. Returns an error if limit is
// not positive.
func (db *DB) ClaimDueRevocations(ctx context.Context, now, retryAt time.Time, limit int) ([]*broker.Lease, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("claim due revocations: limit %d is not positive", limit)
	}
	tx, err := db.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	now, retryAt = normTime(now), normTime(retryAt)
	// Select first: RETURNING would report the pushed time and no order.
	rows, err := tx.QueryContext(ctx, `
		SELECT `+leaseColumns+`
		FROM leases
		WHERE state = 'revoking' AND next_revoke_at <= ?
		ORDER BY next_revoke_at, id
		LIMIT ?
		FOR UPDATE SKIP LOCKED`,
		nanos(now), limit)
	if err != nil {
		return nil, fmt.Errorf("find due revocations: %w", err)
	}
	leases, err := scanLeases(rows)
	if err != nil {
		return nil, fmt.Errorf("find due revocations: %w", err)
	}
	if len(leases) == 0 {
		return leases, nil
	}

	ids := make([]string, len(leases))
	for i, l := range leases {
		ids[i] = l.ID
		next := retryAt
		l.NextRevokeAt, l.UpdatedAt = &next, now
		l.Version++
	}
	list, err := idsJSON(ids)
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `
		UPDATE leases SET next_revoke_at = ?, updated_at = ?, version = version + 1
		WHERE id IN (SELECT value FROM json_array_elements_text(CAST(? AS json)))`,
		nanos(retryAt), nanos(now), list,
	); err != nil {
		return nil, fmt.Errorf("push due revocations: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return leases, nil
}

// CountLeasesByState implements broker.LeaseStore. States without leases are
// absent from the map.
func (db *DB) CountLeasesByState(ctx context.Context) (map[broker.LeaseState]int, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	rows, err := tx.QueryContext(ctx, `SELECT state, COUNT(*) FROM leases GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("count leases: %w", err)
	}
	defer rows.Close()

	counts := make(map[broker.LeaseState]int)
	for rows.Next() {
		var state string
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			return nil, fmt.Errorf("scan lease count: %w", err)
		}
		counts[broker.LeaseState(state)] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count leases: %w", err)
	}
	return counts, nil
}

// CountAgentLeases implements broker.LeaseStore: one query for a page of
// agents, each count read from an index (all of an agent's leases from
// leases_agent_id, its live ones from the live-roles partial index).
func (db *DB) CountAgentLeases(ctx context.Context, agentIDs []string) (map[string]broker.AgentLeaseCount, error) {
	counts := map[string]broker.AgentLeaseCount{}
	if len(agentIDs) == 0 {
		return counts, nil
	}
	list, err := idsJSON(agentIDs)
	if err != nil {
		return nil, err
	}
	tx, err := db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `
		SELECT a.value,
			(SELECT COUNT(*) FROM leases WHERE agent_id = a.value),
			(SELECT COUNT(*) FROM leases
				WHERE agent_id = a.value AND state IN ('issuing', 'active', 'revoking'))
		FROM json_array_elements_text(CAST(? AS json)) AS a(value)`, list)
	if err != nil {
		return nil, fmt.Errorf("count agents' leases: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var c broker.AgentLeaseCount
		if err := rows.Scan(&id, &c.Total, &c.Live); err != nil {
			return nil, fmt.Errorf("scan agent lease count: %w", err)
		}
		if c.Total > 0 {
			counts[id] = c
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count agents' leases: %w", err)
	}
	return counts, nil
}

// createLease inserts l, filling in its ID and timestamps when unset.
func createLease(ctx context.Context, tx *tx, l *broker.Lease) error {
	if l.ID == "" {
		id, err := newID()
		if err != nil {
			return err
		}
		l.ID = id
	}
	if l.CreatedAt.IsZero() {
		l.CreatedAt = tx.now
	}
	if l.UpdatedAt.IsZero() {
		l.UpdatedAt = l.CreatedAt
	}
	l.CreatedAt, l.UpdatedAt = normTime(l.CreatedAt), normTime(l.UpdatedAt)
	l.ActivatedAt, l.ExpiresAt = normTimePtr(l.ActivatedAt), normTimePtr(l.ExpiresAt)
	l.EndedAt, l.NextRevokeAt = normTimePtr(l.EndedAt), normTimePtr(l.NextRevokeAt)
	l.DecideBy, l.ActivateBy = normTimePtr(l.DecideBy), normTimePtr(l.ActivateBy)
	decision, err := marshalDecision(l.PolicyDecision)
	if err != nil {
		return err
	}
	riskFactors, err := marshalRiskFactors(l.RiskFactors) // governance.go
	if err != nil {
		return err
	}

	if _, err := tx.ExecContext(ctx, `
		INSERT INTO leases (
			id, agent_id, agent, role, task, justification, ttl, state, end_state,
			decision, vault_path, vault_lease_id, created_at, updated_at, activated_at, expires_at,
			ended_at, revoke_attempts, next_revoke_at, revoke_error,
			auth_method, on_behalf_of, source_ip, risk_score, policy_decision, decide_by, activate_by,
			breakglass, extensions, risk_factors, username
		) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		l.ID, l.AgentID, l.Agent, l.Role, l.Task, l.Justification, int64(l.TTL),
		string(l.State), string(l.EndState), l.Decision, l.VaultPath, nullString(l.VaultLeaseID),
		nanos(l.CreatedAt), nanos(l.UpdatedAt), nullNanos(l.ActivatedAt), nullNanos(l.ExpiresAt),
		nullNanos(l.EndedAt), l.RevokeAttempts, nullNanos(l.NextRevokeAt), l.RevokeError,
		l.AuthMethod, l.OnBehalfOf, l.SourceIP, l.RiskScore, decision, nullNanos(l.DecideBy), nullNanos(l.ActivateBy),
		l.Breakglass, l.Extensions, riskFactors, l.Username,
	); isForeignKeyError(err) {
		return broker.Errorf(broker.ENOTFOUND, "Agent not found.")
	} else if err != nil {
		return fmt.Errorf("insert lease: %w", formatError(err))
	}
	l.Version = 0 // the column's default
	if tx.created == nil {
		tx.created = map[string]*broker.Lease{}
	}
	tx.created[l.ID] = l
	return nil
}

// findLeaseByID returns ENOTFOUND if no lease has the id.
func findLeaseByID(ctx context.Context, tx *tx, id string) (*broker.Lease, error) {
	l, err := scanLease(tx.QueryRowContext(ctx, `SELECT `+leaseColumns+` FROM leases WHERE id = ?`+tx.lockClause(), id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, broker.Errorf(broker.ENOTFOUND, "Lease not found.")
	} else if err != nil {
		return nil, err
	}
	return l, nil
}

// findLeases returns one page of matching leases, newest first, and the
// total.
func findLeases(ctx context.Context, tx *tx, filter broker.LeaseFilter) ([]*broker.Lease, int, error) {
	where, args := []string{"1 = 1"}, []any{}
	if v := filter.ID; v != nil {
		where, args = append(where, "id = ?"), append(args, *v)
	}
	if v := filter.AgentID; v != nil {
		where, args = append(where, "agent_id = ?"), append(args, *v)
	}
	if v := filter.Role; v != nil {
		where, args = append(where, "role = ?"), append(args, *v)
	}
	if v := filter.Task; v != nil {
		where, args = append(where, "task = ?"), append(args, *v)
	}
	if len(filter.States) > 0 {
		marks := strings.TrimSuffix(strings.Repeat("?, ", len(filter.States)), ", ")
		where = append(where, "state IN ("+marks+")")
		for _, s := range filter.States {
			args = append(args, string(s))
		}
	}
	if v := filter.ContainmentID; v != nil {
		where, args = append(where, "containment_id = ?"), append(args, *v)
	}
	if v := filter.VaultLeaseID; v != nil {
		where, args = append(where, "vault_lease_id = ?"), append(args, *v)
	}
	if v := filter.CreatedBefore; v != nil {
		where, args = append(where, "created_at < ?"), append(args, nanos(*v))
	}
	if v := filter.CreatedAfter; v != nil {
		where, args = append(where, "created_at >= ?"), append(args, nanos(*v))
	}
	if v := filter.Owner; v != nil {
		where, args = append(where, "agent_id IN (SELECT id FROM agents WHERE owner = ?)"), append(args, *v)
	}
	if v := filter.Approver; v != nil {
		where, args = append(where, "id IN (SELECT lease_id FROM approvals WHERE approver = ?)"), append(args, strings.ToLower(*v))
	}
	cond := strings.Join(where, " AND ")

	var total int
	if !filter.NoTotal {
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM leases WHERE `+cond, args...).Scan(&total); err != nil {
			return nil, 0, fmt.Errorf("count leases: %w", err)
		}
		if total == 0 {
			return []*broker.Lease{}, 0, nil
		}
	}

	rows, err := tx.QueryContext(ctx, `
		SELECT `+leaseColumns+`
		FROM leases
		WHERE `+cond+`
		ORDER BY created_at DESC, id DESC
		`+limitOffset(filter.Limit, filter.Offset),
		args...)
	if err != nil {
		return nil, 0, fmt.Errorf("find leases: %w", err)
	}
	leases, err := scanLeases(rows)
	if err != nil {
		return nil, 0, fmt.Errorf("find leases: %w", err)
	}
	if filter.NoTotal {
		total = len(leases)
	}
	return leases, total, nil
}

// scanLeases reads and closes rows of leaseColumns.
func scanLeases(rows *sql.Rows) ([]*broker.Lease, error) {
	defer rows.Close()
	leases := []*broker.Lease{}
	for rows.Next() {
		l, err := scanLease(rows)
		if err != nil {
			return nil, err
		}
		leases = append(leases, l)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return leases, nil
}

// scanLease reads one row of leaseColumns.
func scanLease(row rowScanner) (*broker.Lease, error) {
	var (
		l                                   broker.Lease
		ttl, createdAt, updatedAt           int64
		state, endState                     string
		vaultLeaseID                        sql.NullString
		activatedAt, expiresAt, endedAt, nr sql.NullInt64
		decideBy, activateBy                sql.NullInt64
		decision, riskFactors               string
		containmentID                       sql.NullString
	)
	if err := row.Scan(
		&l.ID, &l.AgentID, &l.Agent, &l.Role, &l.Task, &l.Justification, &ttl, &state, &endState,
		&l.Decision, &l.VaultPath, &vaultLeaseID, &createdAt, &updatedAt, &activatedAt, &expiresAt,
		&endedAt, &l.RevokeAttempts, &nr, &l.RevokeError,
		&l.AuthMethod, &l.OnBehalfOf, &l.SourceIP, &l.RiskScore, &decision, &decideBy, &activateBy,
		&l.Breakglass, &l.Extensions, &riskFactors, &l.Username, &l.Version, &containmentID,
	); err != nil {
		return nil, fmt.Errorf("scan lease: %w", err)
	}
	if err := unmarshalRiskFactors(riskFactors, &l); err != nil { // governance.go
		return nil, err
	}
	if decision != "" {
		l.PolicyDecision = new(broker.Decision)
		if err := json.Unmarshal([]byte(decision), l.PolicyDecision); err != nil {
			return nil, fmt.Errorf("scan lease %s: policy decision: %w", l.ID, err)
		}
	}
	l.DecideBy, l.ActivateBy = fromNullNanos(decideBy), fromNullNanos(activateBy)
	l.TTL = broker.Duration(ttl)
	l.State, l.EndState = broker.LeaseState(state), broker.LeaseState(endState)
	l.VaultLeaseID, l.ContainmentID = vaultLeaseID.String, containmentID.String
	l.CreatedAt, l.UpdatedAt = fromNanos(createdAt), fromNanos(updatedAt)
	l.ActivatedAt, l.ExpiresAt = fromNullNanos(activatedAt), fromNullNanos(expiresAt)
	l.EndedAt, l.NextRevokeAt = fromNullNanos(endedAt), fromNullNanos(nr)
	return &l, nil
}

// updateLease checks the From guard and the lease state machine
// (broker.CheckLeaseUpdate), applies upd, writes the lease and appends its
// event. With upd.Base it first tries the update on the base, guarded by
// its version; if the lease changed since, it reads it.
func updateLease(ctx context.Context, tx *tx, id string, upd broker.LeaseUpdate) (*broker.Lease, error) {
	if len(upd.From) == 0 {
		return nil, fmt.Errorf("update lease %s: %w", id, broker.ErrUnguardedLeaseUpdate)
	}
	if upd.AgentActive {
		if err := checkAgentActive(ctx, tx, id); err != nil {
			return nil, err
		}
	}
	if b := upd.Base; b != nil && b.ID == id && broker.CheckLeaseUpdate(b.State, &upd) == nil {
		base := *b
		l, err := applyLeaseUpdate(ctx, tx, &base, upd, true)
		if err == nil || !errors.Is(err, errStaleBase) {
			return l, err
		}
	}
	l, err := findLeaseByID(ctx, tx, id)
	if err != nil {
		return nil, err
	}
	if err := broker.CheckLeaseUpdate(l.State, &upd); err != nil {
		return nil, err
	}
	return applyLeaseUpdate(ctx, tx, l, upd, false)
}

// errStaleBase reports that a LeaseUpdate.Base is no longer the stored
// lease.
var errStaleBase = errors.New("lease changed since its base was read")

// applyLeaseUpdate applies upd to l, the lease as stored (when guarded, as
// stored at l.Version: errStaleBase if it is not), writes the changed
// columns and appends the event.
func applyLeaseUpdate(ctx context.Context, tx *tx, l *broker.Lease, upd broker.LeaseUpdate, guarded bool) (*broker.Lease, error) {
	id := l.ID

	// Only the columns upd changes are written: SQLite rewrites the entries
	// of every index on a column the SET names, changed or not.
	from := l.State
	set, args := make([]string, 0, 8), make([]any, 0, 9)
	col := func(name string, v any) {
		set, args = append(set, name+" = ?"), append(args, v)
	}
	if v := upd.State; v != nil {
		l.State = *v
		col("state", string(l.State))
	}
	if v := upd.EndState; v != nil {
		l.EndState = *v
		col("end_state", string(l.EndState))
	}
	if v := upd.Decision; v != nil {
		l.Decision = *v
		col("decision", l.Decision)
	}
	if v := upd.VaultLeaseID; v != nil {
		l.VaultLeaseID = *v
		col("vault_lease_id", nullString(l.VaultLeaseID))
	}
	if v := upd.Username; v != nil {
		l.Username = *v
		col("username", l.Username)
	}
	if v := upd.ActivatedAt; v != nil {
		l.ActivatedAt = normTimePtr(v)
		col("activated_at", nullNanos(l.ActivatedAt))
	}
	if v := upd.ExpiresAt; v != nil {
		l.ExpiresAt = normTimePtr(v)
		col("expires_at", nullNanos(l.ExpiresAt))
	}
	if v := upd.EndedAt; v != nil {
		l.EndedAt = normTimePtr(v)
		col("ended_at", nullNanos(l.EndedAt))
	}
	if v := upd.RevokeAttempts; v != nil {
		l.RevokeAttempts = *v
		col("revoke_attempts", l.RevokeAttempts)
	}
	if v := upd.NextRevokeAt; v != nil {
		l.NextRevokeAt = normTimePtr(v)
		col("next_revoke_at", nullNanos(l.NextRevokeAt))
	}
	if v := upd.RevokeError; v != nil {
		l.RevokeError = *v
		col("revoke_error", l.RevokeError)
	}
	if v := upd.PolicyDecision; v != nil {
		l.PolicyDecision = v
		decision, err := marshalDecision(l.PolicyDecision)
		if err != nil {
			return nil, err
		}
		col("policy_decision", decision)
	}
	if v := upd.Risk; v != nil {
		l.RiskScore, l.RiskFactors = v.Score, v.Factors
		factors, err := marshalRiskFactors(l.RiskFactors) // governance.go
		if err != nil {
			return nil, err
		}
		col("risk_score", l.RiskScore)
		col("risk_factors", factors)
	}
	if v := upd.DecideBy; v != nil {
		l.DecideBy = normTimePtr(v)
		col("decide_by", nullNanos(l.DecideBy))
	}
	if v := upd.ActivateBy; v != nil {
		l.ActivateBy = normTimePtr(v)
		col("activate_by", nullNanos(l.ActivateBy))
	}
	if v := upd.Extensions; v != nil {
		l.Extensions = *v
		col("extensions", l.Extensions)
	}
	if v := upd.TTL; v != nil {
		l.TTL = *v
		col("ttl", int64(l.TTL))
	}
	l.UpdatedAt = tx.now
	col("updated_at", nanos(l.UpdatedAt))
	set = append(set, "version = version + 1")
	where := ` WHERE id = ?`
	args = append(args, id)
	if guarded {
		where += ` AND version = ?`
		args = append(args, l.Version)
	}
	l.Version++

	res, err := tx.ExecContext(ctx, `UPDATE leases SET `+strings.Join(set, ", ")+where, args...)
	if err != nil {
		return nil, fmt.Errorf("update lease: %w", formatError(err))
	}
	if guarded {
		if n, err := res.RowsAffected(); err != nil {
			return nil, fmt.Errorf("update lease: %w", err)
		} else if n == 0 {
			return nil, errStaleBase
		}
	}
	insertLeaseEvent(tx, l, &broker.LeaseEvent{
		LeaseID: id, At: tx.now, From: from, To: l.State, Actor: upd.Actor, Reason: upd.Reason,
	})
	return l, nil
}

// insertLeaseEvent appends e to the history of its lease l (as e leaves
// it): Commit appends it to the audit chain and sets e.ID (audit.go). If l
// went to approvers, Commit also writes e's approval notice (the outbox).
func insertLeaseEvent(tx *tx, l *broker.Lease, e *broker.LeaseEvent) {
	tx.leaseEvents = append(tx.leaseEvents, e)
	if l.PolicyDecision != nil && l.PolicyDecision.Outcome == broker.OutcomeApprovals {
		if tx.noticed == nil {
			tx.noticed = make(map[*broker.LeaseEvent]bool)
		}
		tx.noticed[e] = true
	}
}

// insertNotices writes the approval notice of each of events that
// insertLeaseEvent marked, now that the chain gave it its seq (e.ID): one
// notice per event of a lease that went to approvers, due at once, with
// the event's From and To (equal for a note, From empty for a creation).
func insertNotices(ctx context.Context, tx *tx, events []*broker.LeaseEvent) error {
	for _, e := range events {
		if !tx.noticed[e] {
			continue
		}
		at := nanos(normTime(e.At))
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO approval_notices (lease_id, event_id, from_state, to_state, next_attempt_at, created_at)
			VALUES (?, ?, ?, ?, ?, ?)`,
			e.LeaseID, e.ID, string(e.From), string(e.To), at, at); err != nil {
			return fmt.Errorf("insert approval notice: %w", err)
		}
	}
	clear(tx.noticed)
	return nil
}

// insertLeaseEventBatch appends the same event (from → to, by actor, for
// reason, dated at) to each of leases, in their order.
func insertLeaseEventBatch(tx *tx, leases []*broker.Lease, at time.Time, from, to broker.LeaseState, actor, reason string) {
	for _, l := range leases {
		insertLeaseEvent(tx, l, &broker.LeaseEvent{LeaseID: l.ID, At: at, From: from, To: to, Actor: actor, Reason: reason})
	}
}

// marshalDecision renders a policy decision for its column; nil is "".
func marshalDecision(d *broker.Decision) (string, error) {
	if d == nil {
		return "", nil
	}
	b, err := json.Marshal(d)
	if err != nil {
		return "", fmt.Errorf("marshal policy decision: %w", err)
	}
	return string(b), nil
}
