package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/stint-broker/stint/broker"
)

var _ broker.ApprovalStore = (*DB)(nil)

// RecordApproval implements broker.ApprovalStore. The approver's email is
// stored in lower case.
func (db *DB) RecordApproval(ctx context.Context, a *broker.Approval, seen time.Time, prior int, upd broker.LeaseUpdate) (*broker.Lease, error) {
	tx, err := db.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	l, err := findLeaseByID(ctx, tx, a.LeaseID)
	if err != nil {
		return nil, err
	}
	if l.State != broker.LeasePending {
		return nil, broker.Errorf(broker.ECONFLICT, "Lease is %s, no longer pending.", l.State)
	}
	if a.At.IsZero() {
		a.At = tx.now
	}
	// The deadline is checked here, in the transaction that records the
	// answer: the expiry loop may not have timed the lease out yet.
	if err := broker.CheckDecideBy(l, a.At); err != nil {
		return nil, err
	}
	approver := strings.ToLower(strings.TrimSpace(a.Approver))
	var count, mine int
	if err := tx.QueryRowContext(ctx, `
		SELECT COUNT(*), COALESCE(SUM(approver = ?), 0) FROM approvals WHERE lease_id = ?`,
		approver, a.LeaseID).Scan(&count, &mine); err != nil {
		return nil, fmt.Errorf("count approvals: %w", err)
	}
	switch {
	case mine > 0:
		return nil, broker.Errorf(broker.ECONFLICT, "%s has already answered this request.", approver)
	case count != prior || nanos(l.UpdatedAt) != nanos(normTime(seen)):
		return nil, broker.Errorf(broker.ECONFLICT, "The lease changed meanwhile; read it again.")
	}

	a.At, a.Approver = normTime(a.At), approver
	res, err := tx.ExecContext(ctx, `
		INSERT INTO approvals (lease_id, approver, approver_name, verdict, reason, digest, via, at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		a.LeaseID, a.Approver, a.ApproverName, string(a.Verdict), a.Reason, a.Digest, a.Via, nanos(a.At))
	if err != nil {
		return nil, fmt.Errorf("insert approval: %w", formatError(err))
	}
	if a.ID, err = res.LastInsertId(); err != nil {
		return nil, fmt.Errorf("insert approval: %w", err)
	}
	upd.From = []broker.LeaseState{broker.LeasePending}
	l, err = updateLease(ctx, tx, a.LeaseID, upd)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return l, nil
}

// FindApprovals implements broker.ApprovalStore.
func (db *DB) FindApprovals(ctx context.Context, leaseID string) ([]*broker.Approval, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	rows, err := tx.QueryContext(ctx, `
		SELECT id, lease_id, approver, approver_name, verdict, reason, digest, via, at
		FROM approvals WHERE lease_id = ? ORDER BY id`, leaseID)
	if err != nil {
		return nil, fmt.Errorf("find approvals: %w", err)
	}
	defer rows.Close()
	out := []*broker.Approval{}
	for rows.Next() {
		var (
			a       broker.Approval
			verdict string
			at      int64
		)
		if err := rows.Scan(&a.ID, &a.LeaseID, &a.Approver, &a.ApproverName, &verdict, &a.Reason, &a.Digest, &a.Via, &at); err != nil {
			return nil, fmt.Errorf("scan approval: %w", err)
		}
		a.Verdict, a.At = broker.Verdict(verdict), fromNanos(at)
		out = append(out, &a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find approvals: %w", err)
	}
	return out, nil
}

// noticeColumns is the column list every notice query selects, in
// scanNotice's order.
const noticeColumns = `id, lease_id, event_id, from_state, to_state, attempts, next_attempt_at,
	last_error, created_at, sent_at`

// ClaimNotices implements broker.ApprovalStore. Notices come oldest first.
// Returns an error if limit is not positive.
func (db *DB) ClaimNotices(ctx context.Context, now, retryAt time.Time, limit int) ([]*broker.Notice, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("claim notices: limit %d is not positive", limit)
	}
	tx, err := db.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	now, retryAt = normTime(now), normTime(retryAt)
	rows, err := tx.QueryContext(ctx, `
		SELECT `+noticeColumns+`
		FROM approval_notices AS n
		WHERE n.sent_at IS NULL
		  AND (n.attempts = 0 OR n.next_attempt_at <= ?)
		  AND n.id = (SELECT MIN(id) FROM approval_notices INDEXED BY approval_notices_unsent_lease
		              WHERE lease_id = n.lease_id AND sent_at IS NULL)
		ORDER BY n.id
		LIMIT ?`, nanos(now), limit)
	if err != nil {
		return nil, fmt.Errorf("find due notices: %w", err)
	}
	notices, err := scanNotices(rows)
	if err != nil {
		return nil, fmt.Errorf("find due notices: %w", err)
	}
	if len(notices) == 0 {
		return notices, nil
	}
	for _, n := range notices {
		// attempts = 0 rows are due at once; counting the claim keeps a
		// worker that dies mid-send from making them due again before retryAt.
		if _, err := tx.ExecContext(ctx, `
			UPDATE approval_notices SET next_attempt_at = ?, attempts = MAX(attempts, 1) WHERE id = ?`,
			nanos(retryAt), n.ID); err != nil {
			return nil, fmt.Errorf("push claimed notice: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return notices, nil
}

// CompleteNotice implements broker.ApprovalStore.
func (db *DB) CompleteNotice(ctx context.Context, id int64, at time.Time) error {
	return db.updateNotice(ctx, id, `UPDATE approval_notices SET sent_at = ?, last_error = '' WHERE id = ?`, nanos(normTime(at)), id)
}

// pruneBatch bounds how many notices one transaction of PruneNotices
// deletes, so that a first prune of a large outbox does not hold the write
// lock for long.
const pruneBatch = 2000

// PruneNotices implements broker.ApprovalStore.
func (db *DB) PruneNotices(ctx context.Context, sentBefore time.Time) (int, error) {
	total := 0
	for {
		tx, err := db.begin(ctx)
		if err != nil {
			return total, err
		}
		res, err := tx.ExecContext(ctx, `
			DELETE FROM approval_notices WHERE id IN (
				SELECT id FROM approval_notices WHERE sent_at IS NOT NULL AND sent_at < ? ORDER BY id LIMIT ?)`,
			nanos(normTime(sentBefore)), pruneBatch)
		if err != nil {
			tx.Rollback()
			return total, fmt.Errorf("prune notices: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			tx.Rollback()
			return total, fmt.Errorf("prune notices: %w", err)
		}
		if err := tx.Commit(); err != nil {
			return total, fmt.Errorf("prune notices: commit: %w", err)
		}
		total += int(n)
		if n < pruneBatch {
			return total, nil
		}
	}
}

// RetryNotice implements broker.ApprovalStore.
func (db *DB) RetryNotice(ctx context.Context, id int64, attempts int, next time.Time, lastError string) error {
	return db.updateNotice(ctx, id, `
		UPDATE approval_notices SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?`,
		attempts, nanos(normTime(next)), lastError, id)
}

// updateNotice runs one update of a notice; ENOTFOUND if it matched nothing.
func (db *DB) updateNotice(ctx context.Context, id int64, query string, args ...any) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("update notice %d: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("update notice %d: %w", id, err)
	} else if n == 0 {
		return broker.Errorf(broker.ENOTFOUND, "Notice not found.")
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// FindNotices implements broker.ApprovalStore.
func (db *DB) FindNotices(ctx context.Context, leaseID string) ([]*broker.Notice, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT `+noticeColumns+` FROM approval_notices WHERE lease_id = ? ORDER BY id`, leaseID)
	if err != nil {
		return nil, fmt.Errorf("find notices: %w", err)
	}
	notices, err := scanNotices(rows)
	if err != nil {
		return nil, fmt.Errorf("find notices: %w", err)
	}
	return notices, nil
}

// CountUnsentNotices implements broker.ApprovalStore.
func (db *DB) CountUnsentNotices(ctx context.Context) (int, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM approval_notices WHERE sent_at IS NULL`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count unsent notices: %w", err)
	}
	return n, nil
}

// scanNotices reads and closes rows of noticeColumns.
func scanNotices(rows *sql.Rows) ([]*broker.Notice, error) {
	defer rows.Close()
	out := []*broker.Notice{}
	for rows.Next() {
		var (
			n             broker.Notice
			from, to      string
			next, created int64
			sent          sql.NullInt64
		)
		if err := rows.Scan(&n.ID, &n.LeaseID, &n.EventID, &from, &to, &n.Attempts, &next,
			&n.LastError, &created, &sent); err != nil {
			return nil, fmt.Errorf("scan notice: %w", err)
		}
		n.From, n.To = broker.LeaseState(from), broker.LeaseState(to)
		n.NextAttemptAt, n.CreatedAt, n.SentAt = fromNanos(next), fromNanos(created), fromNullNanos(sent)
		out = append(out, &n)
	}
	return out, rows.Err()
}

// SetApprovalMessage implements broker.ApprovalStore. Setting it again
// replaces it.
func (db *DB) SetApprovalMessage(ctx context.Context, m *broker.ApprovalMessage) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if m.PostedAt.IsZero() {
		m.PostedAt = tx.now
	}
	m.PostedAt = normTime(m.PostedAt)
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO approval_messages (lease_id, channel, ts, posted_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (lease_id) DO UPDATE SET channel = excluded.channel, ts = excluded.ts, posted_at = excluded.posted_at`,
		m.LeaseID, m.Channel, m.TS, nanos(m.PostedAt)); isForeignKeyError(err) {
		return broker.Errorf(broker.ENOTFOUND, "Lease not found.")
	} else if err != nil {
		return fmt.Errorf("set approval message: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// FindApprovalMessage implements broker.ApprovalStore.
func (db *DB) FindApprovalMessage(ctx context.Context, leaseID string) (*broker.ApprovalMessage, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	var (
		m      broker.ApprovalMessage
		posted int64
	)
	err = tx.QueryRowContext(ctx, `SELECT lease_id, channel, ts, posted_at FROM approval_messages WHERE lease_id = ?`, leaseID).
		Scan(&m.LeaseID, &m.Channel, &m.TS, &posted)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, broker.Errorf(broker.ENOTFOUND, "No approval message for this lease.")
	} else if err != nil {
		return nil, fmt.Errorf("find approval message: %w", err)
	}
	m.PostedAt = fromNanos(posted)
	return &m, nil
}

// EndOverdueLeases implements broker.LeaseStore. The leases' UpdatedAt and
// their events are dated now. Returns an error if limit is not positive.
func (db *DB) EndOverdueLeases(ctx context.Context, now time.Time, limit int, actor string, reasons broker.OverdueReasons) ([]*broker.Lease, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("end overdue leases: limit %d is not positive", limit)
	}
	tx, err := db.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	now = normTime(now)
	var leases []*broker.Lease
	for _, q := range []struct {
		from, to broker.LeaseState
		query    string
		reason   string
	}{
		{broker.LeasePending, broker.LeaseTimedOut, `
			SELECT rowid FROM leases INDEXED BY leases_pending_decide_by
			WHERE state = 'pending' AND decide_by <= ? ORDER BY decide_by, id LIMIT ?`,
			reasons.TimedOut},
		{broker.LeaseApproved, broker.LeaseLapsed, `
			SELECT rowid FROM leases INDEXED BY leases_approved_activate_by
			WHERE state = 'approved' AND activate_by <= ? ORDER BY activate_by, id LIMIT ?`,
			reasons.Lapsed},
	} {
		if err := broker.CheckLeaseMove(q.from, q.to, actor); err != nil {
			return nil, fmt.Errorf("end overdue %s leases: %w", q.from, err)
		}
		if len(leases) >= limit {
			break
		}
		rows, err := tx.QueryContext(ctx, `
			UPDATE leases SET state = ?, ended_at = ?, updated_at = ?, version = version + 1
			WHERE rowid IN (`+q.query+`)
			RETURNING `+leaseColumns,
			string(q.to), nanos(now), nanos(now), nanos(now), limit-len(leases))
		if err != nil {
			return nil, fmt.Errorf("end overdue %s leases: %w", q.from, err)
		}
		ended, err := scanLeases(rows)
		if err != nil {
			return nil, fmt.Errorf("end overdue %s leases: %w", q.from, err)
		}
		if len(ended) == 0 {
			continue
		}
		insertLeaseEventBatch(tx, ended, now, q.from, q.to, actor, q.reason)
		leases = append(leases, ended...)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	if leases == nil {
		return []*broker.Lease{}, nil
	}
	deadline := func(l *broker.Lease) time.Time {
		if l.State == broker.LeaseTimedOut {
			return *l.DecideBy
		}
		return *l.ActivateBy
	}
	slices.SortFunc(leases, func(a, b *broker.Lease) int {
		return cmp.Or(deadline(a).Compare(deadline(b)), strings.Compare(a.ID, b.ID))
	})
	return leases, nil
}
