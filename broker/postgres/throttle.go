package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/stint-broker/stint/broker"
)

var _ broker.LoginThrottleStore = (*DB)(nil)

// throttleKinds is the order BeginLogin reads and writes the counters in.
var throttleKinds = []string{broker.ThrottlePair, broker.ThrottleAccount, broker.ThrottleSource}

// throttleRow is one counter of login_throttle.
type throttleRow struct {
	failures      int
	lastFailureAt *time.Time
	lockedUntil   *time.Time
	trustedUntil  *time.Time
}

// lockedAt reports until when the row locks at now (zero if not locked).
func (r *throttleRow) lockedAt(now time.Time) time.Time {
	if r.lockedUntil != nil && r.lockedUntil.After(now) {
		return *r.lockedUntil
	}
	return time.Time{}
}

// BeginLogin implements broker.LoginThrottleStore.
func (db *DB) BeginLogin(ctx context.Context, user, source string, now time.Time, rules broker.LoginThrottleRules) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()

	keys := broker.LoginThrottleKeys(user, source)
	if err := lockThrottle(ctx, tx, keys); err != nil {
		return err
	}
	rows := map[string]*throttleRow{}
	for _, kind := range throttleKinds {
		r, err := findThrottleRow(ctx, tx, kind, keys[kind])
		if err != nil {
			return err
		}
		if r.lastFailureAt != nil && now.Sub(*r.lastFailureAt) >= rules.Forget {
			r.failures, r.lockedUntil = 0, nil
		}
		rows[kind] = r
	}

	trusted := rows[broker.ThrottlePair].trustedUntil != nil && rows[broker.ThrottlePair].trustedUntil.After(now)
	until := rows[broker.ThrottlePair].lockedAt(now)
	if !trusted {
		for _, kind := range []string{broker.ThrottleAccount, broker.ThrottleSource} {
			if u := rows[kind].lockedAt(now); u.After(until) {
				until = u
			}
		}
	}
	if !until.IsZero() {
		// Refused attempts are not counted: a lock ends on time however
		// hard it is hammered.
		return broker.LoginThrottled(until.Sub(now))
	}

	for _, kind := range throttleKinds {
		r := rows[kind]
		r.failures++
		t := now
		r.lastFailureAt = &t
		r.lockedUntil = nil
		if d := rules.LockFor(kind, r.failures); d > 0 {
			u := now.Add(d)
			r.lockedUntil = &u
		}
		if err := saveThrottleRow(ctx, tx, kind, keys[kind], r, now, rules); err != nil {
			return err
		}
	}
	// Counters nobody has failed on for a while, and trust that ran out,
	// mean nothing: sweep them (the index makes this a range scan).
	if _, err := tx.ExecContext(ctx, `DELETE FROM login_throttle WHERE expires_at < ?`, nanos(now)); err != nil {
		return fmt.Errorf("sweep login throttle: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// LoginSucceeded implements broker.LoginThrottleStore.
func (db *DB) LoginSucceeded(ctx context.Context, user, source string, now time.Time, rules broker.LoginThrottleRules) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()

	keys := broker.LoginThrottleKeys(user, source)
	if err := lockThrottle(ctx, tx, keys); err != nil {
		return err
	}
	for _, kind := range throttleKinds {
		r, err := findThrottleRow(ctx, tx, kind, keys[kind])
		if err != nil {
			return err
		}
		if kind == broker.ThrottlePair {
			t := now.Add(rules.Trusted)
			r.failures, r.lockedUntil, r.trustedUntil = 0, nil, &t
		} else {
			r.failures = max(r.failures-1, 0)
			if rules.LockFor(kind, r.failures) == 0 {
				r.lockedUntil = nil
			}
		}
		if err := saveThrottleRow(ctx, tx, kind, keys[kind], r, now, rules); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// findThrottleRow returns the counter, or a zero one if there is none.
func findThrottleRow(ctx context.Context, tx *tx, kind, key string) (*throttleRow, error) {
	var r throttleRow
	var last, locked, trusted sql.NullInt64
	err := tx.QueryRowContext(ctx, `SELECT failures, last_failure_at, locked_until, trusted_until FROM login_throttle WHERE kind = ? AND key = ?`,
		kind, key).Scan(&r.failures, &last, &locked, &trusted)
	if errors.Is(err, sql.ErrNoRows) {
		return &r, nil
	} else if err != nil {
		return nil, fmt.Errorf("find login throttle: %w", err)
	}
	r.lastFailureAt, r.lockedUntil, r.trustedUntil = nullTime(last), nullTime(locked), nullTime(trusted)
	return &r, nil
}

// saveThrottleRow writes the counter; it expires when neither its failures,
// its lock nor its trust matter any more.
func saveThrottleRow(ctx context.Context, tx *tx, kind, key string, r *throttleRow, now time.Time, rules broker.LoginThrottleRules) error {
	expires := now
	if r.lastFailureAt != nil && r.failures > 0 {
		expires = later(expires, r.lastFailureAt.Add(rules.Forget))
	}
	if r.lockedUntil != nil {
		expires = later(expires, *r.lockedUntil)
	}
	if r.trustedUntil != nil {
		expires = later(expires, *r.trustedUntil)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO login_throttle (kind, key, failures, last_failure_at, locked_until, trusted_until, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (kind, key) DO UPDATE SET failures = excluded.failures, last_failure_at = excluded.last_failure_at,
			locked_until = excluded.locked_until, trusted_until = excluded.trusted_until, expires_at = excluded.expires_at`,
		kind, key, r.failures, nullNanos(r.lastFailureAt), nullNanos(r.lockedUntil), nullNanos(r.trustedUntil), nanos(expires)); err != nil {
		return fmt.Errorf("save login throttle: %w", err)
	}
	return nil
}

func nullTime(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n.Int64)
	return &t
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// lockThrottle serialises the counters of one login attempt with every
// other replica's attempts on the same counters, for the rest of the
// transaction: a transaction-scoped advisory lock per counter, taken in
// one order, which needs no row to exist yet and outlives no transaction.
func lockThrottle(ctx context.Context, tx *tx, keys map[string]string) error {
	for _, kind := range throttleKinds {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended(?, 0))`, "stint.login_throttle:"+kind+":"+keys[kind]); err != nil {
			return fmt.Errorf("lock login throttle: %w", err)
		}
	}
	return nil
}
