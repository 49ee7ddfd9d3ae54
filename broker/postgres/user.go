package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/stint-broker/stint/broker"
)

// userColumns is the column list every user query selects, in scanUser's
// order.
const userColumns = `id, name, email, role, state, password_hash, created_at, updated_at, last_login_at`

// CreateUser implements broker.UserStore. It assigns an ID when u.ID is
// empty and stamps the times when zero, and records the creation in the
// audit chain with the actor of ctx.
func (db *DB) CreateUser(ctx context.Context, u *broker.User) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()

	if u.ID == "" {
		if u.ID, err = newID(); err != nil {
			return err
		}
	}
	if u.CreatedAt.IsZero() {
		u.CreatedAt = tx.now
	}
	if u.UpdatedAt.IsZero() {
		u.UpdatedAt = u.CreatedAt
	}
	if u.State == "" {
		u.State = broker.UserActive
	}
	u.CreatedAt, u.UpdatedAt, u.LastLoginAt = normTime(u.CreatedAt), normTime(u.UpdatedAt), normTimePtr(u.LastLoginAt)
	if _, err := tx.ExecContext(ctx, `INSERT INTO console_users (`+userColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		u.ID, u.Name, u.Email, string(u.Role), string(u.State), u.PasswordHash,
		nanos(u.CreatedAt), nanos(u.UpdatedAt), nullNanos(u.LastLoginAt),
	); err != nil {
		if broker.ErrorCode(formatError(err)) == broker.ECONFLICT {
			return broker.FieldErrorf("name", "A user named %q already exists.", u.Name)
		}
		return fmt.Errorf("insert user: %w", err)
	}
	if err := appendAudit(ctx, tx, &broker.AuditEvent{
		Kind: broker.AuditUserCreated, Actor: actorString(ctx), Subject: u.Name,
		Details: broker.AuditDetails(map[string]any{"user_id": u.ID, "role": u.Role, "email": u.Email}),
	}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// actorString is how the audit chain names the actor of ctx.
func actorString(ctx context.Context) string {
	if a, ok := broker.ActorFromContext(ctx); ok {
		return a.String()
	}
	return "unknown"
}

// FindUserByName implements broker.UserStore.
func (db *DB) FindUserByName(ctx context.Context, name string) (*broker.User, error) {
	return db.findUser(ctx, "name", name)
}

// FindUserByID implements broker.UserStore.
func (db *DB) FindUserByID(ctx context.Context, id string) (*broker.User, error) {
	return db.findUser(ctx, "id", id)
}

func (db *DB) findUser(ctx context.Context, column, value string) (*broker.User, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	return findUser(ctx, tx, column, value)
}

// findUser returns ENOTFOUND if no user has value in column (id or name).
func findUser(ctx context.Context, tx *tx, column, value string) (*broker.User, error) {
	u, err := scanUser(tx.QueryRowContext(ctx, `SELECT `+userColumns+` FROM console_users WHERE `+column+` = ?`, value))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, broker.Errorf(broker.ENOTFOUND, "User not found.")
	}
	return u, err
}

// FindUsers implements broker.UserStore.
func (db *DB) FindUsers(ctx context.Context) ([]*broker.User, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT `+userColumns+` FROM console_users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("find users: %w", err)
	}
	defer rows.Close()
	users := []*broker.User{}
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		users = append(users, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find users: %w", err)
	}
	return users, nil
}

// UpdateUser implements broker.UserStore. Disabling a user also ends its
// sessions and is recorded in the audit chain; so is a change of role.
func (db *DB) UpdateUser(ctx context.Context, id string, upd broker.UserUpdate) (*broker.User, error) {
	tx, err := db.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	u, err := findUser(ctx, tx, "id", id)
	if err != nil {
		return nil, err
	}
	before := *u
	if v := upd.Email; v != nil {
		u.Email = *v
	}
	if v := upd.Role; v != nil {
		u.Role = *v
	}
	if v := upd.State; v != nil {
		u.State = *v
	}
	if v := upd.PasswordHash; v != nil {
		u.PasswordHash = *v
	}
	if v := upd.LastLoginAt; v != nil {
		u.LastLoginAt = normTimePtr(v)
	}
	u.UpdatedAt = tx.now
	if _, err := tx.ExecContext(ctx, `
		UPDATE console_users SET email = ?, role = ?, state = ?, password_hash = ?, updated_at = ?, last_login_at = ?
		WHERE id = ?`,
		u.Email, string(u.Role), string(u.State), u.PasswordHash, nanos(u.UpdatedAt), nullNanos(u.LastLoginAt), id,
	); err != nil {
		return nil, fmt.Errorf("update user: %w", err)
	}
	if u.State == broker.UserDisabled && before.State != broker.UserDisabled {
		if _, err := tx.ExecContext(ctx, `DELETE FROM console_sessions WHERE user_id = ?`, id); err != nil {
			return nil, fmt.Errorf("end sessions of disabled user: %w", err)
		}
		if err := appendAudit(ctx, tx, &broker.AuditEvent{
			Kind: broker.AuditUserDisabled, Actor: actorString(ctx), Subject: u.Name,
			Details: broker.AuditDetails(map[string]any{"user_id": u.ID}),
		}); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return u, nil
}

// scanUser reads one row of userColumns.
func scanUser(row rowScanner) (*broker.User, error) {
	var (
		u                    broker.User
		role, state          string
		createdAt, updatedAt int64
		lastLogin            sql.NullInt64
	)
	if err := row.Scan(&u.ID, &u.Name, &u.Email, &role, &state, &u.PasswordHash, &createdAt, &updatedAt, &lastLogin); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, err
		}
		return nil, fmt.Errorf("scan user: %w", err)
	}
	u.Role, u.State = broker.UserRole(role), broker.UserState(state)
	u.CreatedAt, u.UpdatedAt, u.LastLoginAt = fromNanos(createdAt), fromNanos(updatedAt), fromNullNanos(lastLogin)
	return &u, nil
}

// CreateSession implements broker.UserStore.
func (db *DB) CreateSession(ctx context.Context, s *broker.Session) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO console_sessions (id, user_id, created_at, expires_at, idle_expires_at, source_ip, user_agent)
		VALUES (?, ?, ?, ?, ?, ?, ?)`,
		s.ID, s.UserID, nanos(normTime(s.CreatedAt)), nanos(normTime(s.ExpiresAt)), nanos(normTime(s.IdleExpiresAt)),
		s.SourceIP, s.UserAgent,
	); isForeignKeyError(err) {
		return broker.Errorf(broker.ENOTFOUND, "User not found.")
	} else if err != nil {
		return fmt.Errorf("insert session: %w", formatError(err))
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// FindSession implements broker.UserStore. A session is pushed forward at
// most once a minute, so that reading pages does not write on every request.
func (db *DB) FindSession(ctx context.Context, id string, now, idleUntil time.Time) (*broker.Session, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	var (
		s                             broker.Session
		created, expires, idleExpires int64
	)
	err = tx.QueryRowContext(ctx, `
		SELECT id, user_id, created_at, expires_at, idle_expires_at, source_ip, user_agent
		FROM console_sessions WHERE id = ? AND expires_at > ? AND idle_expires_at > ?`,
		id, nanos(now), nanos(now),
	).Scan(&s.ID, &s.UserID, &created, &expires, &idleExpires, &s.SourceIP, &s.UserAgent)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, broker.Errorf(broker.ENOTFOUND, "Session not found or expired.")
	} else if err != nil {
		return nil, fmt.Errorf("find session: %w", err)
	}
	tx.Rollback()
	s.CreatedAt, s.ExpiresAt, s.IdleExpiresAt = fromNanos(created), fromNanos(expires), fromNanos(idleExpires)

	next := normTime(idleUntil)
	if next.After(s.ExpiresAt) {
		next = s.ExpiresAt
	}
	if next.Sub(s.IdleExpiresAt) < time.Minute {
		return &s, nil
	}
	wtx, err := db.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer wtx.Rollback()
	if _, err := wtx.ExecContext(ctx, `UPDATE console_sessions SET idle_expires_at = ? WHERE id = ?`, nanos(next), id); err != nil {
		return nil, fmt.Errorf("extend session: %w", err)
	}
	if err := wtx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	s.IdleExpiresAt = next
	return &s, nil
}

// DeleteSession implements broker.UserStore.
func (db *DB) DeleteSession(ctx context.Context, id string) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM console_sessions WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// DeleteExpiredSessions implements broker.UserStore.
func (db *DB) DeleteExpiredSessions(ctx context.Context, now time.Time) (int, error) {
	tx, err := db.begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `DELETE FROM console_sessions WHERE expires_at <= ? OR idle_expires_at <= ?`, nanos(now), nanos(now))
	if err != nil {
		return 0, fmt.Errorf("delete expired sessions: %w", err)
	}
	n, _ := res.RowsAffected()
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return int(n), nil
}

// RevocationQueue returns how many leases wait in the revocation retry queue
// and when the one waiting longest entered it (zero if none), for metrics.
func (db *DB) RevocationQueue(ctx context.Context) (depth int, oldest time.Time, err error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return 0, time.Time{}, err
	}
	defer tx.Rollback()
	// The queue is small in health; the oldest entry is the earliest move to
	// revoking among the revoking leases (each lease's history is its audit
	// events).
	var first sql.NullInt64
	if err := tx.QueryRowContext(ctx, `
		SELECT COUNT(*), MIN((SELECT MAX(e.at) FROM audit_events e
			WHERE e.subject = l.id AND e.subject <> '' AND e.kind = '`+broker.AuditLeaseState+`'
				AND CAST(e.details AS jsonb) ->> 'to' = 'revoking' AND CAST(e.details AS jsonb) ->> 'from' <> 'revoking'))
		FROM leases l WHERE l.state = 'revoking'`,
	).Scan(&depth, &first); err != nil {
		return 0, time.Time{}, fmt.Errorf("measure revocation queue: %w", err)
	}
	if first.Valid {
		oldest = fromNanos(first.Int64)
	}
	return depth, oldest, nil
}
