package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/stint-broker/stint/broker"
)

// connectTimeout bounds how long Open waits for PostgreSQL to answer, so
// that a wrong or unreachable address fails fast with a clear message.
const connectTimeout = 10 * time.Second

// DB is a PostgreSQL database holding Stint's state. Several processes
// (replicas) may open the same database at once: every coordination goes
// through its rows and locks. It is safe for concurrent use.
type DB struct {
	pool *pgxpool.Pool
	sql  *sql.DB // database/sql over pool, for goose and the queries

	// Now returns the current time. It stamps CreatedAt and UpdatedAt when
	// the caller leaves them zero, UpdatedAt on every update, and event
	// times. It defaults to time.Now and can be replaced in tests.
	Now func() time.Time

	// OnCommit, if set, is told of every committed write transaction: how
	// many writes it held (more than one for a group commit) and how long
	// it was open. Set it before the DB is shared between goroutines.
	OnCommit func(writes int, held time.Duration)

	// clockSkew is how far the server's clock was ahead of this host's
	// when Open connected (ClockSkew).
	clockSkew time.Duration

	// Group commit of lease writes (batch.go).
	queue     groupQueue
	closeOnce sync.Once
	// groups and groupedWrites count group commits and the writes they
	// held.
	groups, groupedWrites atomic.Int64
}

// Open connects to the PostgreSQL database named by dsn (a URL such as
// postgres://user:pass@host:5432/stint?sslmode=verify-full, or key=value
// pairs), applies pending migrations under a lock that other replicas
// starting at the same time wait on, and returns it ready to use. Open
// refuses a database whose schema is newer than this binary knows. Its
// errors say what to do: a wrong DSN, an unreachable server, a refused
// login, a missing database and a role that may not create tables each get
// their own message.
func Open(ctx context.Context, dsn string) (_ *DB, err error) {
	db, err := connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()
	if _, err := migrateUp(ctx, db.sql); err != nil {
		return nil, err
	}
	return db, nil
}

// connect opens the pool and checks that the server answers, without
// touching the schema.
func connect(ctx context.Context, dsn string) (*DB, error) {
	if strings.TrimSpace(dsn) == "" {
		return nil, errors.New("open postgres: the DSN is empty: set store.dsn or the variable store.dsn_env names")
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's message quotes the DSN with its password masked.
		return nil, fmt.Errorf("open postgres: the DSN is not valid (want postgres://user:password@host:5432/database?sslmode=...): %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 || cfg.ConnConfig.ConnectTimeout > connectTimeout {
		cfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "stint"
	}
	// Every query runs in the transaction's own time zone-free integers;
	// UTC keeps psql sessions of operators reading the same clock.
	cfg.ConnConfig.RuntimeParams["timezone"] = "UTC"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	db := &DB{pool: pool, sql: stdlib.OpenDBFromPool(pool), Now: time.Now}
	db.queue.idle = sync.NewCond(&db.queue.mu)
	pctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		db.Close()
		return nil, connectError(cfg, err)
	}
	var server time.Time
	before := time.Now()
	if err := pool.QueryRow(pctx, `SELECT clock_timestamp()`).Scan(&server); err != nil {
		db.Close()
		return nil, fmt.Errorf("open postgres: read the server's clock: %w", err)
	}
	after := time.Now()
	db.clockSkew = server.Sub(before.Add(after.Sub(before) / 2))
	return db, nil
}

// ClockSkew returns how far PostgreSQL's clock was ahead of this host's
// (negative: behind) when the store was opened. Replicas decide expiry by
// their own clocks, so a replica whose clock is off by minutes ends leases
// that much early or late: callers warn when it exceeds a few seconds.
func (db *DB) ClockSkew() time.Duration { return db.clockSkew }

// connectError explains a failed first connection: what went wrong and
// what to do about it.
func connectError(cfg *pgxpool.Config, err error) error {
	where := net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port)))
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		switch pg.Code {
		case "28P01", "28000":
			return fmt.Errorf("open postgres: PostgreSQL at %s refused the login of role %q: check the user and password in the DSN (and pg_hba.conf): %w",
				where, cfg.ConnConfig.User, err)
		case "3D000":
			return fmt.Errorf("open postgres: database %q does not exist on %s: create it (createdb %s) or fix the DSN: %w",
				cfg.ConnConfig.Database, where, cfg.ConnConfig.Database, err)
		case "42501":
			return fmt.Errorf("open postgres: role %q may not connect to database %q on %s: GRANT CONNECT to it: %w",
				cfg.ConnConfig.User, cfg.ConnConfig.Database, where, err)
		}
	}
	return fmt.Errorf("open postgres: cannot reach PostgreSQL at %s: check the host and port in the DSN and that the server is running: %w", where, err)
}

// Close refuses new writes, waits for the queued ones and closes the pool.
func (db *DB) Close() error {
	if db.queue.idle != nil {
		db.closeOnce.Do(db.closeGroups)
	}
	var err error
	if db.sql != nil {
		err = db.sql.Close()
	}
	if db.pool != nil {
		db.pool.Close()
	}
	return err
}

// Ping returns an error if the database does not answer.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping postgres: %w", err)
	}
	return nil
}

// Pool returns the connection pool, for tools that query the database
// directly (tests, stint migrate copy).
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// tx is a transaction with the one timestamp its writes use. Its queries
// take SQLite-style ? placeholders, rewritten to PostgreSQL's $n (rebind),
// so that the store's SQL reads like the SQLite store's.
type tx struct {
	*sql.Tx // nil for readOne: queries run on the pool in autocommit
	pool    *sql.DB
	now     time.Time
	ctx     context.Context
	// write is set for write transactions: lease reads lock the row
	// (findLeaseByID), since replicas write concurrently.
	write bool
	// created are the leases this transaction inserted, so that appending
	// their creation events to the audit chain need not read them back.
	created map[string]*broker.Lease
	// audits and leaseEvents are the audit events and lease events the
	// transaction wrote, waiting for Commit to append them to the chain
	// (audits first, in the order written): the chain's head is locked last
	// and held only for the appends and the commit.
	audits      []*broker.AuditEvent
	leaseEvents []*broker.LeaseEvent
	// noticed marks the lease events of leases that went to approvers:
	// Commit writes an approval notice for each (insertLeaseEvent).
	noticed  map[*broker.LeaseEvent]bool
	began    time.Time
	writes   int
	onCommit func(writes int, held time.Duration)
}

// begin starts a write transaction.
func (db *DB) begin(ctx context.Context) (*tx, error) {
	t, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("begin write: %w", err)
	}
	return &tx{Tx: t, pool: db.sql, now: normTime(db.Now()), ctx: ctx, write: true, began: time.Now(), writes: 1, onCommit: db.OnCommit}, nil
}

// beginRead starts a read-only transaction: one consistent snapshot, so that
// a page and its total agree.
func (db *DB) beginRead(ctx context.Context) (*tx, error) {
	t, err := db.sql.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead})
	if err != nil {
		return nil, fmt.Errorf("begin read: %w", err)
	}
	return &tx{Tx: t, pool: db.sql, now: normTime(db.Now()), ctx: ctx}, nil
}

// readOne returns a reader for single queries, each its own snapshot. Its
// Rollback does nothing.
func (db *DB) readOne(ctx context.Context) *tx {
	return &tx{pool: db.sql, now: normTime(db.Now()), ctx: ctx}
}

// retryable reports whether err is PostgreSQL aborting a transaction that
// may succeed if run again: a deadlock or a serialization failure.
func retryable(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && (pg.Code == "40P01" || pg.Code == "40001")
}

// rebinds caches the rewriting of each query text.
var rebinds sync.Map

// rebind rewrites ? placeholders to $1, $2, … and ?N to $N. The store's
// SQL has no ? inside string literals.
func rebind(query string) string {
	if v, ok := rebinds.Load(query); ok {
		return v.(string)
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	for i := 0; i < len(query); i++ {
		c := query[i]
		if c != '?' {
			b.WriteByte(c)
			continue
		}
		j := i + 1
		for j < len(query) && query[j] >= '0' && query[j] <= '9' {
			j++
		}
		b.WriteByte('$')
		if j > i+1 {
			b.WriteString(query[i+1 : j])
			i = j - 1
			continue
		}
		n++
		b.WriteString(strconv.Itoa(n))
	}
	out := b.String()
	rebinds.Store(query, out)
	return out
}

// ExecContext runs query in the transaction.
func (t *tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if t.Tx == nil {
		return t.pool.ExecContext(ctx, rebind(query), args...)
	}
	return t.Tx.ExecContext(ctx, rebind(query), args...)
}

// QueryContext runs query in the transaction.
func (t *tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if t.Tx == nil {
		return t.pool.QueryContext(ctx, rebind(query), args...)
	}
	return t.Tx.QueryContext(ctx, rebind(query), args...)
}

// QueryRowContext runs query in the transaction.
func (t *tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if t.Tx == nil {
		return t.pool.QueryRowContext(ctx, rebind(query), args...)
	}
	return t.Tx.QueryRowContext(ctx, rebind(query), args...)
}

// lockClause is appended to a read of a row the transaction is about to
// change: a write transaction locks it, so that a concurrent writer on
// another connection (or replica) waits instead of overwriting.
func (t *tx) lockClause() string {
	if t.write {
		return " FOR UPDATE"
	}
	return ""
}

// Commit appends the audit and lease events the transaction wrote to the
// audit chain, then commits.
func (t *tx) Commit() error {
	if len(t.audits) > 0 || len(t.leaseEvents) > 0 {
		if err := flushAudit(t.ctx, t); err != nil {
			return err
		}
	}
	if err := t.Tx.Commit(); err != nil {
		return err
	}
	if t.onCommit != nil && t.writes > 0 {
		t.onCommit(t.writes, time.Since(t.began))
	}
	return nil
}

// Rollback rolls the transaction back; after Commit it does nothing.
func (t *tx) Rollback() error {
	if t.Tx == nil {
		return nil
	}
	err := t.Tx.Rollback()
	if errors.Is(err, sql.ErrTxDone) {
		return nil
	}
	return err
}

// conflictMessages names what a UNIQUE or PRIMARY KEY violation means, keyed
// by the constraint PostgreSQL reports.
var conflictMessages = map[string]string{
	"agents_pkey":                     "Agent already exists.",
	"agents_name_key":                 "Agent name is already taken.",
	"api_keys_pkey":                   "API key already exists.",
	"api_keys_hash_key":               "API key already exists.",
	"leases_pkey":                     "Lease already exists.",
	"agents_spiffe_id":                "Another agent already has this SPIFFE ID.",
	"agent_certificates_pkey":         "A certificate with this serial already exists.",
	"oauth_jtis_pkey":                 "The assertion id was already used.",
	"subject_token_uses_pkey":         "The user token was already exchanged.",
	"console_users_pkey":              "User already exists.",
	"console_users_name_key":          "User name is already taken.",
	"audit_events_pkey":               "The audit chain moved on meanwhile; try again.",
	"audit_events_prev_hash_key":      "The audit chain moved on meanwhile; try again.",
	"reviews_open_agent":              "The agent already has an open review of this kind.",
	"role_exclusions_pkey":            "The role is already removed from the agent.",
	"containments_pkey":               "Containment already exists.",
	"approvals_lease_id_approver_key": "This approver has already answered this request.",
}

// formatError turns a UNIQUE or PRIMARY KEY violation into ECONFLICT and
// returns any other error unchanged.
func formatError(err error) error {
	var pg *pgconn.PgError
	if !errors.As(err, &pg) || pg.Code != "23505" {
		return err
	}
	if msg, ok := conflictMessages[pg.ConstraintName]; ok {
		return broker.Errorf(broker.ECONFLICT, "%s", msg)
	}
	return broker.Errorf(broker.ECONFLICT, "Object already exists.")
}

// isForeignKeyError reports whether err is a FOREIGN KEY violation.
func isForeignKeyError(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && pg.Code == "23503"
}

// newID returns a new time-ordered id.
func newID() (string, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("new id: %w", err)
	}
	return id.String(), nil
}

// normTime returns t in UTC at the precision stored, without a monotonic
// reading, so that a value written equals the value read back.
func normTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.Unix(0, t.UnixNano()).UTC()
}

// normTimePtr is normTime for optional times; nil and zero both mean unset.
func normTimePtr(t *time.Time) *time.Time {
	if t == nil || t.IsZero() {
		return nil
	}
	v := normTime(*t)
	return &v
}

// nanos is the stored form of a time.
func nanos(t time.Time) int64 { return t.UnixNano() }

// nullNanos is the stored form of an optional time: NULL when unset.
func nullNanos(t *time.Time) any {
	if t == nil || t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

// fromNanos reads a stored time.
func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// fromNullNanos reads a stored optional time.
func fromNullNanos(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n.Int64)
	return &t
}

// nullString is the stored form of an optional string: NULL when empty.
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// idsJSON encodes ids as a JSON array, which SQL expands with
// json_array_elements_text: one parameter however many rows a statement
// touches.
func idsJSON(ids []string) (string, error) {
	b, err := json.Marshal(ids)
	if err != nil {
		return "", fmt.Errorf("encode ids: %w", err)
	}
	return string(b), nil
}

// rowScanner is *sql.Row or *sql.Rows.
type rowScanner interface {
	Scan(dest ...any) error
}
