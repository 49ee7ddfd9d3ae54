package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/stint-broker/stint/broker"
)

var (
	_ broker.JobStore             = (*DB)(nil)
	_ broker.RateStore            = (*DB)(nil)
	_ broker.AuthFailureStore     = (*DB)(nil)
	_ broker.RevocationClaimStore = (*DB)(nil)
	_ broker.RiskPatternStore     = (*DB)(nil)
	_ broker.NoticeClaimStore     = (*DB)(nil)
)

// ClaimJob implements broker.JobStore.
func (db *DB) ClaimJob(ctx context.Context, name, owner string, now, nextDue, deadline time.Time) (*broker.JobClaim, error) {
	if name == "" || owner == "" {
		return nil, errors.New("claim job: a job name and an owner are required")
	}
	tx, err := db.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO job_claims (name) VALUES (?) ON CONFLICT (name) DO NOTHING`, name); err != nil {
		return nil, fmt.Errorf("claim job: %w", err)
	}
	// One statement decides: of replicas claiming at once, the first
	// moves next_due_at past now and the others match no row.
	var epoch int64
	err = tx.QueryRowContext(ctx, `
		UPDATE job_claims SET owner = ?1, epoch = epoch + 1, claimed_at = ?2, deadline = ?3, next_due_at = ?4
		WHERE name = ?5 AND next_due_at <= ?2 AND (owner = '' OR deadline < ?2)
		RETURNING epoch`, owner, nanos(now), nanos(deadline), nanos(nextDue), name).Scan(&epoch)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("claim job: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return &broker.JobClaim{Name: name, Owner: owner, Epoch: epoch, Deadline: deadline}, nil
}

// RenewJob implements broker.JobStore.
func (db *DB) RenewJob(ctx context.Context, c *broker.JobClaim, deadline time.Time) error {
	n, err := db.execJob(ctx, `UPDATE job_claims SET deadline = ? WHERE name = ? AND owner = ? AND epoch = ?`,
		nanos(deadline), c.Name, c.Owner, c.Epoch)
	if err != nil {
		return fmt.Errorf("renew job claim: %w", err)
	}
	if n == 0 {
		return broker.Errorf(broker.ECONFLICT, "The claim of job %s passed to another replica.", c.Name)
	}
	c.Deadline = deadline
	return nil
}

// FinishJob implements broker.JobStore.
func (db *DB) FinishJob(ctx context.Context, c *broker.JobClaim, now time.Time) error {
	if _, err := db.execJob(ctx, `UPDATE job_claims SET owner = '', deadline = 0, finished_at = ? WHERE name = ? AND owner = ? AND epoch = ?`,
		nanos(now), c.Name, c.Owner, c.Epoch); err != nil {
		return fmt.Errorf("finish job claim: %w", err)
	}
	return nil
}

// ReleaseJobs implements broker.JobStore.
func (db *DB) ReleaseJobs(ctx context.Context, owner string) (int, error) {
	n, err := db.execJob(ctx, `UPDATE job_claims SET owner = '', deadline = 0 WHERE owner = ?`, owner)
	if err != nil {
		return 0, fmt.Errorf("release job claims: %w", err)
	}
	return n, nil
}

// execJob runs one write in its own transaction and returns the rows it
// changed.
func (db *DB) execJob(ctx context.Context, query string, args ...any) (int, error) {
	tx, err := db.begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return int(n), nil
}

// TakeToken implements broker.RateStore.
func (db *DB) TakeToken(ctx context.Context, key string, perSecond float64, burst int, now time.Time) (time.Duration, error) {
	if perSecond <= 0 {
		return 0, fmt.Errorf("take token: rate %v is not positive", perSecond)
	}
	burst = max(burst, 1)
	interval := max(time.Duration(float64(time.Second)/perSecond), 1)
	tx, err := db.begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	// The generic cell rate algorithm in one statement (broker.GCRA): the
	// bucket moves only when the request fits in the burst.
	var tat int64
	err = tx.QueryRowContext(ctx, `
		INSERT INTO rate_buckets (key, tat) VALUES (?1, ?2::bigint + ?3::bigint)
		ON CONFLICT (key) DO UPDATE SET tat = GREATEST(rate_buckets.tat, ?2::bigint) + ?3::bigint
		WHERE GREATEST(rate_buckets.tat, ?2::bigint) + ?3::bigint - ?2::bigint <= ?4::bigint
		RETURNING tat`, key, nanos(now), int64(interval), int64(burst)*int64(interval)).Scan(&tat)
	if errors.Is(err, sql.ErrNoRows) {
		if err := tx.QueryRowContext(ctx, `SELECT tat FROM rate_buckets WHERE key = ?`, key).Scan(&tat); err != nil {
			return 0, fmt.Errorf("take token: %w", err)
		}
		_, wait := broker.GCRA(fromNanos(tat), now, perSecond, burst)
		return max(wait, 1), nil
	} else if err != nil {
		return 0, fmt.Errorf("take token: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return 0, nil
}

// PruneRates implements broker.RateStore.
func (db *DB) PruneRates(ctx context.Context, before time.Time) (int, error) {
	n, err := db.execJob(ctx, `DELETE FROM rate_buckets WHERE tat < ?`, nanos(before))
	if err != nil {
		return 0, fmt.Errorf("prune rate buckets: %w", err)
	}
	return n, nil
}

// RecordAuthFailure implements broker.AuthFailureStore.
func (db *DB) RecordAuthFailure(ctx context.Context, agentID, source string, now time.Time) error {
	if agentID == "" && source == "" {
		return nil
	}
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, k := range [][2]string{{broker.AuthFailureAgent, agentID}, {broker.AuthFailureSource, source}} {
		if k[1] == "" {
			continue
		}
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO auth_failures (kind, key, minute, count) VALUES (?, ?, ?, 1)
			ON CONFLICT (kind, key, minute) DO UPDATE SET count = auth_failures.count + 1`,
			k[0], k[1], now.Unix()/60); err != nil {
			return fmt.Errorf("record auth failure: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// CountAuthFailures implements broker.AuthFailureStore.
func (db *DB) CountAuthFailures(ctx context.Context, kind, key string, since time.Time) (int, error) {
	var n int
	if err := db.readOne(ctx).QueryRowContext(ctx, `SELECT COALESCE(SUM(count), 0) FROM auth_failures WHERE kind = ? AND key = ? AND minute >= ?`,
		kind, key, since.Unix()/60).Scan(&n); err != nil {
		return 0, fmt.Errorf("count auth failures: %w", err)
	}
	return n, nil
}

// PruneAuthFailures implements broker.AuthFailureStore.
func (db *DB) PruneAuthFailures(ctx context.Context, before time.Time) (int, error) {
	n, err := db.execJob(ctx, `DELETE FROM auth_failures WHERE minute < ?`, before.Unix()/60)
	if err != nil {
		return 0, fmt.Errorf("prune auth failures: %w", err)
	}
	return n, nil
}

var _ broker.LeaseCapStore = (*DB)(nil)

// CreateLeaseCapped implements broker.LeaseCapStore.
func (db *DB) CreateLeaseCapped(ctx context.Context, l *broker.Lease, actor, reason string, conflicts []string, maxOutstanding int) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()

	if maxOutstanding > 0 && slices.Contains(broker.OutstandingLeaseStates, l.State) {
		if _, err := tx.ExecContext(ctx, `SELECT 1 FROM agents WHERE id = ? FOR UPDATE`, l.AgentID); err != nil {
			return fmt.Errorf("lock agent: %w", err)
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM leases WHERE agent_id = ? AND state IN ('pending', 'approved', 'issuing', 'active', 'revoking')`,
			l.AgentID).Scan(&n); err != nil {
			return fmt.Errorf("count outstanding leases: %w", err)
		}
		if n >= maxOutstanding {
			return broker.LeaseCapReached(l.Agent, n)
		}
	}
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

// ReleaseRevocations implements broker.RevocationClaimStore, in one
// transaction.
func (db *DB) ReleaseRevocations(ctx context.Context, claims []broker.RevocationClaim, now time.Time) (int, error) {
	if len(claims) == 0 {
		return 0, nil
	}
	tx, err := db.begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	released := 0
	for _, c := range claims {
		// The claim's time is its fencing token: a lease claimed again
		// since holds another.
		res, err := tx.ExecContext(ctx, `
			UPDATE leases SET next_revoke_at = ?, updated_at = ?, version = version + 1
			WHERE id = ? AND state = 'revoking' AND next_revoke_at = ?`,
			nanos(now), nanos(now), c.LeaseID, nanos(c.Until))
		if err != nil {
			return 0, fmt.Errorf("release revocation claim: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return 0, fmt.Errorf("release revocation claim: %w", err)
		}
		released += int(n)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return released, nil
}

// UpdateRiskPattern implements broker.RiskPatternStore: the pattern's row
// is locked (FOR UPDATE) from the read to the write.
func (db *DB) UpdateRiskPattern(ctx context.Context, agentID string, now time.Time, update func([]byte) ([]byte, error)) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO risk_patterns (agent_id, pattern, updated_at) VALUES (?, '', ?) ON CONFLICT (agent_id) DO NOTHING`,
		agentID, nanos(now)); err != nil {
		return fmt.Errorf("update risk pattern: %w", err)
	}
	var stored string
	if err := tx.QueryRowContext(ctx, `SELECT pattern FROM risk_patterns WHERE agent_id = ? FOR UPDATE`, agentID).Scan(&stored); err != nil {
		return fmt.Errorf("read risk pattern: %w", err)
	}
	next, err := update([]byte(stored))
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE risk_patterns SET pattern = ?, updated_at = ? WHERE agent_id = ?`,
		string(next), nanos(now), agentID); err != nil {
		return fmt.Errorf("write risk pattern: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// PruneRiskPatterns implements broker.RiskPatternStore.
func (db *DB) PruneRiskPatterns(ctx context.Context, before time.Time) (int, error) {
	n, err := db.execJob(ctx, `DELETE FROM risk_patterns WHERE updated_at < ?`, nanos(before))
	if err != nil {
		return 0, fmt.Errorf("prune risk patterns: %w", err)
	}
	return n, nil
}

// ReleaseNotices implements broker.NoticeClaimStore, in one transaction.
func (db *DB) ReleaseNotices(ctx context.Context, ids []int64, until, now time.Time) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	tx, err := db.begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	released := 0
	for _, id := range ids {
		res, err := tx.ExecContext(ctx, `
			UPDATE approval_notices SET next_attempt_at = ?
			WHERE id = ? AND sent_at IS NULL AND next_attempt_at = ?`,
			nanos(now), id, nanos(until))
		if err != nil {
			return 0, fmt.Errorf("release notice claim: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return 0, fmt.Errorf("release notice claim: %w", err)
		}
		released += int(n)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return released, nil
}
