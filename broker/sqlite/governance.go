package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/stint-broker/stint/broker"
)

// Governance storage (migration 0006): the lease changes separation of duty
// and window extensions make atomically, access and break-glass reviews,
// and the roles reviews removed. Review changes are recorded in the audit
// chain in the transaction that makes them, by the actor of the context.

var (
	_ broker.LeaseGuard  = (*DB)(nil)
	_ broker.ReviewStore = (*DB)(nil)
)

// marshalRiskFactors renders a lease's risk factors for their column; none
// is "".
func marshalRiskFactors(f []broker.RiskFactor) (string, error) {
	if len(f) == 0 {
		return "", nil
	}
	b, err := json.Marshal(f)
	if err != nil {
		return "", fmt.Errorf("marshal risk factors: %w", err)
	}
	return string(b), nil
}

// unmarshalRiskFactors reads the risk_factors column into l.
func unmarshalRiskFactors(s string, l *broker.Lease) error {
	if s == "" {
		return nil
	}
	if err := json.Unmarshal([]byte(s), &l.RiskFactors); err != nil {
		return fmt.Errorf("scan lease %s: risk factors: %w", l.ID, err)
	}
	return nil
}

// CreateLeaseExclusive implements broker.LeaseGuard. The check and the
// insert share one write transaction, and SQLite runs one write
// transaction at a time, so two requests for conflicting roles cannot both
// pass it.
func (db *DB) CreateLeaseExclusive(ctx context.Context, l *broker.Lease, actor, reason string, conflicts []string) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()

	if l.State.Live() {
		if err := checkConflicts(ctx, tx, l.AgentID, l.Agent, l.ID, l.Role, conflicts); err != nil {
			return err
		}
	}
	if err := createLease(ctx, tx, l); err != nil {
		return err
	}
	insertLeaseEvent(tx, l, &broker.LeaseEvent{
		LeaseID: l.ID, At: l.CreatedAt, To: l.State, Actor: actor, Reason: reason,
	})
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// UpdateLeaseExclusive implements broker.LeaseGuard.
func (db *DB) UpdateLeaseExclusive(ctx context.Context, id string, upd broker.LeaseUpdate, conflicts []string) (*broker.Lease, error) {
	tx, err := db.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	cur, err := findLeaseByID(ctx, tx, id)
	if err != nil {
		return nil, err
	}
	if containsState(upd.From, cur.State) {
		if err := checkConflicts(ctx, tx, cur.AgentID, cur.Agent, cur.ID, cur.Role, conflicts); err != nil {
			return nil, err
		}
	}
	l, err := updateLease(ctx, tx, id, upd)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return l, nil
}

func containsState(states []broker.LeaseState, s broker.LeaseState) bool {
	for _, v := range states {
		if v == s {
			return true
		}
	}
	return false
}

// checkConflicts returns ECONFLICT if the agent holds a live lease, other
// than leaseID, on one of conflicts.
func checkConflicts(ctx context.Context, tx *tx, agentID, agent, leaseID, role string, conflicts []string) error {
	if len(conflicts) == 0 {
		return nil
	}
	list, err := idsJSON(conflicts)
	if err != nil {
		return err
	}
	var held, heldID string
	err = tx.QueryRowContext(ctx, `
		SELECT role, id FROM leases INDEXED BY leases_live_agent_role
		WHERE agent_id = ? AND state IN ('issuing', 'active', 'revoking') AND id <> ?
		  AND role IN (SELECT value FROM json_each(?))
		ORDER BY role LIMIT 1`,
		agentID, leaseID, list).Scan(&held, &heldID)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("check separation of duty: %w", err)
	}
	return broker.DutyConflict(agent, heldID, held, role)
}

// UpdateLeaseIfExpires implements broker.LeaseGuard.
func (db *DB) UpdateLeaseIfExpires(ctx context.Context, id string, expires time.Time, upd broker.LeaseUpdate) (*broker.Lease, error) {
	tx, err := db.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	cur, err := findLeaseByID(ctx, tx, id)
	if err != nil {
		return nil, err
	}
	if cur.ExpiresAt == nil || !cur.ExpiresAt.Equal(normTime(expires)) {
		return nil, broker.Errorf(broker.ECONFLICT, "The lease's window changed meanwhile; read it again.")
	}
	l, err := updateLease(ctx, tx, id, upd)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return l, nil
}

// RoleExcluded implements broker.LeaseGuard.
func (db *DB) RoleExcluded(ctx context.Context, agentID, role string) (bool, error) {
	tx := db.readOne(ctx)
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM role_exclusions WHERE agent_id = ? AND role = ?`, agentID, role).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("find role exclusion: %w", err)
	}
	return true, nil
}

// reviewColumns is the column list every review query selects, in
// scanReview's order.
const reviewColumns = `id, kind, state, campaign, agent_id, agent, owner, lease_id, inactive, last_lease_at,
	created_at, due_at, closed_at, closed_by, note, suspended_at, disabled_at, escalated_at`

// CreateReview implements broker.ReviewStore. It stamps CreatedAt when
// zero, and records AuditReviewOpened. It also returns ENOTFOUND if the
// agent does not exist.
func (db *DB) CreateReview(ctx context.Context, r *broker.Review) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()

	var existing string
	err = tx.QueryRowContext(ctx, `SELECT id FROM reviews WHERE agent_id = ? AND kind = ? AND lease_id = ? AND state = 'open'`,
		r.AgentID, string(r.Kind), r.LeaseID).Scan(&existing)
	switch {
	case err == nil:
		return broker.Errorf(broker.ECONFLICT, "Agent %s already has an open %s review (%s).", r.Agent, r.Kind, existing)
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("find open review: %w", err)
	}
	if r.ID == "" {
		if r.ID, err = newID(); err != nil {
			return err
		}
	}
	if r.CreatedAt.IsZero() {
		r.CreatedAt = tx.now
	}
	if r.State == "" {
		r.State = broker.ReviewOpen
	}
	r.CreatedAt, r.DueAt = normTime(r.CreatedAt), normTime(r.DueAt)
	r.LastLeaseAt = normTimePtr(r.LastLeaseAt)
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO reviews (`+reviewColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, string(r.Kind), string(r.State), r.Campaign, r.AgentID, r.Agent, r.Owner, r.LeaseID, r.Inactive,
		nullNanos(r.LastLeaseAt), nanos(r.CreatedAt), nanos(r.DueAt), nullNanos(r.ClosedAt), r.ClosedBy, r.Note,
		nullNanos(r.SuspendedAt), nullNanos(r.DisabledAt), nullNanos(r.EscalatedAt),
	); isForeignKeyError(err) {
		return broker.Errorf(broker.ENOTFOUND, "Agent not found.")
	} else if err != nil {
		return fmt.Errorf("insert review: %w", formatError(err))
	}
	if r.Items == nil {
		r.Items = []*broker.ReviewItem{}
	}
	roles := make([]string, len(r.Items))
	for i, it := range r.Items {
		it.LastLeaseAt, it.AttestedAt = normTimePtr(it.LastLeaseAt), normTimePtr(it.AttestedAt)
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO review_items (review_id, role, last_lease_at, lease_count, never_used, verdict, attested_by, attested_at, note)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.ID, it.Role, nullNanos(it.LastLeaseAt), it.LeaseCount, it.NeverUsed, string(it.Verdict), it.AttestedBy,
			nullNanos(it.AttestedAt), it.Note,
		); err != nil {
			return fmt.Errorf("insert review item %s: %w", it.Role, formatError(err))
		}
		roles[i] = it.Role
	}
	d := map[string]any{"kind": r.Kind, "agent": r.Agent, "agent_id": r.AgentID, "owner": r.Owner,
		"due_at": r.DueAt.Format(time.RFC3339), "roles": roles, "inactive": r.Inactive}
	if r.Campaign != "" {
		d["campaign"] = r.Campaign
	}
	if r.LeaseID != "" {
		d["lease_id"] = r.LeaseID
	}
	if err := appendAudit(ctx, tx, &broker.AuditEvent{Kind: broker.AuditReviewOpened, Actor: actorString(ctx), Subject: r.ID, Details: broker.AuditDetails(d)}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// FindReviewByID implements broker.ReviewStore.
func (db *DB) FindReviewByID(ctx context.Context, id string) (*broker.Review, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	return findReviewByID(ctx, tx, id)
}

// FindReviews implements broker.ReviewStore. Reviews are ordered by
// CreatedAt, newest first, then by ID descending.
func (db *DB) FindReviews(ctx context.Context, filter broker.ReviewFilter) ([]*broker.Review, int, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer tx.Rollback()

	where, args := []string{"1 = 1"}, []any{}
	if v := filter.ID; v != nil {
		where, args = append(where, "id = ?"), append(args, *v)
	}
	if v := filter.Kind; v != nil {
		where, args = append(where, "kind = ?"), append(args, string(*v))
	}
	if v := filter.State; v != nil {
		where, args = append(where, "state = ?"), append(args, string(*v))
	}
	if v := filter.AgentID; v != nil {
		where, args = append(where, "agent_id = ?"), append(args, *v)
	}
	if v := filter.Owner; v != nil {
		where, args = append(where, "owner = ? COLLATE NOCASE"), append(args, *v)
	}
	if v := filter.Campaign; v != nil {
		where, args = append(where, "campaign = ?"), append(args, *v)
	}
	if v := filter.DueBefore; v != nil {
		where, args = append(where, "due_at < ?"), append(args, nanos(*v))
	}
	cond := strings.Join(where, " AND ")
	var total int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM reviews WHERE `+cond, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count reviews: %w", err)
	}
	reviews := []*broker.Review{}
	if total == 0 {
		return reviews, 0, nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+reviewColumns+` FROM reviews WHERE `+cond+`
		ORDER BY created_at DESC, id DESC `+limitOffset(filter.Limit, filter.Offset), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("find reviews: %w", err)
	}
	for rows.Next() {
		r, err := scanReview(rows)
		if err != nil {
			rows.Close()
			return nil, 0, err
		}
		reviews = append(reviews, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("find reviews: %w", err)
	}
	for _, r := range reviews {
		if r.Items, err = findReviewItems(ctx, tx, r.ID); err != nil {
			return nil, 0, err
		}
	}
	return reviews, total, nil
}

// UpdateReview implements broker.ReviewStore. It records one audit event
// per kind of change, by the actor of the context.
func (db *DB) UpdateReview(ctx context.Context, id string, upd broker.ReviewUpdate) (*broker.Review, error) {
	tx, err := db.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	r, err := findReviewByID(ctx, tx, id)
	if err != nil {
		return nil, err
	}
	actor := actorString(ctx)
	var audits []*broker.AuditEvent
	audit := func(kind string, d map[string]any) {
		d["agent"], d["agent_id"], d["kind"] = r.Agent, r.AgentID, r.Kind
		audits = append(audits, &broker.AuditEvent{Kind: kind, Actor: actor, Subject: r.ID, Details: broker.AuditDetails(d)})
	}
	if it := upd.Item; it != nil {
		if r.State != broker.ReviewOpen {
			return nil, broker.Errorf(broker.ECONFLICT, "Review %s is closed.", r.ID)
		}
		cur := r.Item(it.Role)
		if cur == nil {
			return nil, broker.FieldErrorf("role", "Review %s has no item for role %q.", r.ID, it.Role)
		}
		a := &broker.ReviewAttestation{Verdict: it.Verdict, By: it.AttestedBy, Note: it.Note, At: tx.now}
		if it.AttestedAt != nil {
			a.At = normTime(*it.AttestedAt)
		}
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO review_attestations (review_id, role, verdict, by_actor, at, note) VALUES (?, ?, ?, ?, ?, ?)`,
			r.ID, cur.Role, string(a.Verdict), a.By, nanos(a.At), a.Note); err != nil {
			return nil, fmt.Errorf("insert review attestation: %w", formatError(err))
		}
		cur.Attestations = append(cur.Attestations, a)
		// The item shows the attestation that set its verdict; one that
		// agrees with it is kept beside it and changes nothing.
		if cur.Verdict != a.Verdict {
			cur.Verdict, cur.AttestedBy, cur.AttestedAt, cur.Note = a.Verdict, a.By, &a.At, a.Note
			if _, err := tx.ExecContext(ctx, `
				UPDATE review_items SET verdict = ?, attested_by = ?, attested_at = ?, note = ?
				WHERE review_id = ? AND role = ?`,
				string(cur.Verdict), cur.AttestedBy, nullNanos(cur.AttestedAt), cur.Note, r.ID, cur.Role); err != nil {
				return nil, fmt.Errorf("update review item: %w", err)
			}
		}
		audit(broker.AuditReviewAttested, map[string]any{"role": cur.Role, "verdict": a.Verdict, "by": a.By, "note": a.Note})
	}
	if v := upd.State; v != nil && *v != r.State {
		if r.State == broker.ReviewClosed {
			return nil, broker.Errorf(broker.ECONFLICT, "Review %s is already closed.", r.ID)
		}
		r.State = *v
		if r.State == broker.ReviewClosed {
			d := map[string]any{}
			if upd.ClosedBy != nil {
				d["by"] = *upd.ClosedBy
			}
			if upd.Note != nil {
				d["note"] = *upd.Note
			}
			audit(broker.AuditReviewClosed, d)
		}
	}
	if v := upd.ClosedAt; v != nil {
		r.ClosedAt = normTimePtr(v)
	}
	if v := upd.ClosedBy; v != nil {
		r.ClosedBy = *v
	}
	if v := upd.Note; v != nil {
		r.Note = *v
	}
	if v := upd.SuspendedAt; v != nil {
		r.SuspendedAt = normTimePtr(v)
		audit(broker.AuditReviewSuspended, map[string]any{"due_at": r.DueAt.Format(time.RFC3339)})
	}
	if v := upd.DisabledAt; v != nil {
		r.DisabledAt = normTimePtr(v)
		audit(broker.AuditReviewDisabled, map[string]any{"due_at": r.DueAt.Format(time.RFC3339)})
	}
	if v := upd.EscalatedAt; v != nil {
		r.EscalatedAt = normTimePtr(v)
		audit(broker.AuditReviewEscalated, map[string]any{"due_at": r.DueAt.Format(time.RFC3339), "lease_id": r.LeaseID})
	}
	if _, err := tx.ExecContext(ctx, `
		UPDATE reviews SET state = ?, closed_at = ?, closed_by = ?, note = ?, suspended_at = ?, disabled_at = ?, escalated_at = ?
		WHERE id = ?`,
		string(r.State), nullNanos(r.ClosedAt), r.ClosedBy, r.Note, nullNanos(r.SuspendedAt), nullNanos(r.DisabledAt),
		nullNanos(r.EscalatedAt), r.ID); err != nil {
		return nil, fmt.Errorf("update review: %w", err)
	}
	if err := appendAudit(ctx, tx, audits...); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return r, nil
}

// ExcludeRole implements broker.ReviewStore. Excluding a role twice keeps
// the first record.
func (db *DB) ExcludeRole(ctx context.Context, x *broker.RoleExclusion) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if x.At.IsZero() {
		x.At = tx.now
	}
	res, err := tx.ExecContext(ctx, `
		INSERT INTO role_exclusions (agent_id, role, review_id, by_actor, at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (agent_id, role) DO NOTHING`,
		x.AgentID, x.Role, x.ReviewID, x.By, nanos(normTime(x.At)))
	if isForeignKeyError(err) {
		return broker.Errorf(broker.ENOTFOUND, "Agent not found.")
	} else if err != nil {
		return fmt.Errorf("insert role exclusion: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return tx.Commit()
	}
	if err := appendAgentAudit(ctx, tx, broker.AuditAgentUpdated, x.AgentID, map[string]any{
		"role_removed": x.Role, "review_id": x.ReviewID, "by": x.By,
	}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// FindRoleExclusions implements broker.ReviewStore.
func (db *DB) FindRoleExclusions(ctx context.Context, agentID string) ([]*broker.RoleExclusion, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT agent_id, role, review_id, by_actor, at FROM role_exclusions WHERE agent_id = ? ORDER BY role`, agentID)
	if err != nil {
		return nil, fmt.Errorf("find role exclusions: %w", err)
	}
	defer rows.Close()
	out := []*broker.RoleExclusion{}
	for rows.Next() {
		var x broker.RoleExclusion
		var at int64
		if err := rows.Scan(&x.AgentID, &x.Role, &x.ReviewID, &x.By, &at); err != nil {
			return nil, fmt.Errorf("scan role exclusion: %w", err)
		}
		x.At = fromNanos(at)
		out = append(out, &x)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find role exclusions: %w", err)
	}
	return out, nil
}

// findReviewByID returns ENOTFOUND if no review has the id.
func findReviewByID(ctx context.Context, tx *tx, id string) (*broker.Review, error) {
	r, err := scanReview(tx.QueryRowContext(ctx, `SELECT `+reviewColumns+` FROM reviews WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, broker.Errorf(broker.ENOTFOUND, "Review not found.")
	} else if err != nil {
		return nil, err
	}
	if r.Items, err = findReviewItems(ctx, tx, r.ID); err != nil {
		return nil, err
	}
	return r, nil
}

// findReviewItems returns a review's items ordered by role.
func findReviewItems(ctx context.Context, tx *tx, reviewID string) ([]*broker.ReviewItem, error) {
	rows, err := tx.QueryContext(ctx, `
		SELECT role, last_lease_at, lease_count, never_used, verdict, attested_by, attested_at, note
		FROM review_items WHERE review_id = ? ORDER BY role`, reviewID)
	if err != nil {
		return nil, fmt.Errorf("find review items: %w", err)
	}
	defer rows.Close()
	items := []*broker.ReviewItem{}
	for rows.Next() {
		var (
			it                broker.ReviewItem
			lastLease, attest sql.NullInt64
			verdict           string
		)
		if err := rows.Scan(&it.Role, &lastLease, &it.LeaseCount, &it.NeverUsed, &verdict, &it.AttestedBy, &attest, &it.Note); err != nil {
			return nil, fmt.Errorf("scan review item: %w", err)
		}
		it.LastLeaseAt, it.AttestedAt, it.Verdict = fromNullNanos(lastLease), fromNullNanos(attest), broker.ReviewVerdict(verdict)
		items = append(items, &it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find review items: %w", err)
	}
	rows.Close()
	if err := findReviewAttestations(ctx, tx, reviewID, items); err != nil {
		return nil, err
	}
	return items, nil
}

// findReviewAttestations fills in the attestations of a review's items,
// oldest first.
func findReviewAttestations(ctx context.Context, tx *tx, reviewID string, items []*broker.ReviewItem) error {
	byRole := make(map[string]*broker.ReviewItem, len(items))
	for _, it := range items {
		byRole[it.Role] = it
	}
	rows, err := tx.QueryContext(ctx, `
		SELECT role, verdict, by_actor, at, note
		FROM review_attestations WHERE review_id = ? ORDER BY id`, reviewID)
	if err != nil {
		return fmt.Errorf("find review attestations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			a             broker.ReviewAttestation
			role, verdict string
			at            int64
		)
		if err := rows.Scan(&role, &verdict, &a.By, &at, &a.Note); err != nil {
			return fmt.Errorf("scan review attestation: %w", err)
		}
		a.Verdict, a.At = broker.ReviewVerdict(verdict), fromNanos(at)
		if it := byRole[role]; it != nil {
			it.Attestations = append(it.Attestations, &a)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("find review attestations: %w", err)
	}
	return nil
}

// scanReview reads one row of reviewColumns, without items.
func scanReview(row rowScanner) (*broker.Review, error) {
	var (
		r                                                 broker.Review
		kind, state                                       string
		lastLease, closed, suspended, disabled, escalated sql.NullInt64
		created, due                                      int64
	)
	if err := row.Scan(&r.ID, &kind, &state, &r.Campaign, &r.AgentID, &r.Agent, &r.Owner, &r.LeaseID, &r.Inactive, &lastLease,
		&created, &due, &closed, &r.ClosedBy, &r.Note, &suspended, &disabled, &escalated); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, err
		}
		return nil, fmt.Errorf("scan review: %w", err)
	}
	r.Kind, r.State = broker.ReviewKind(kind), broker.ReviewState(state)
	r.LastLeaseAt, r.ClosedAt = fromNullNanos(lastLease), fromNullNanos(closed)
	r.SuspendedAt, r.DisabledAt, r.EscalatedAt = fromNullNanos(suspended), fromNullNanos(disabled), fromNullNanos(escalated)
	r.CreatedAt, r.DueAt = fromNanos(created), fromNanos(due)
	return &r, nil
}
