package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/migrations"
)

// pragmas run on every new connection of both pools. busy_timeout makes a
// writer wait for another process's write lock instead of failing. The page
// cache stays at SQLite's default 2 MB: a reader drops its whole cache at the
// start of every read after a write, and the writer walks its cache's hash
// table at every commit, so a larger cache cost more than it saved (with a
// 64 MB cache the walk alone was 7% of a grant's CPU time). temp_store keeps
// the statement journals of grouped writes' savepoints in memory rather
// than in temporary files.
const pragmas = "_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)" +
	"&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_pragma=cache_size(-2000)&_pragma=temp_store(MEMORY)"

// writerPragmas add, for the writer, a checkpoint at commit only as a
// backstop (every 32,000 pages of WAL, 125 MiB): checkpoints run in the
// background (runCheckpoints), off the single writer's path.
const writerPragmas = "&_txlock=immediate&_pragma=wal_autocheckpoint(32000)"

// checkpointEvery is how often the background checkpointer copies what the
// WAL gained into the database file, when anything was committed.
const checkpointEvery = 100 * time.Millisecond

// readers is the size of the read pool.
const readers = 4

// DB is a SQLite database holding agents, API keys, leases and lease history.
// It is safe for concurrent use.
type DB struct {
	writer *sql.DB // one connection; every transaction is BEGIN IMMEDIATE
	reader *sql.DB // query_only; the writer itself for an in-memory database

	// Now returns the current time. It stamps CreatedAt and UpdatedAt when the
	// caller leaves them zero, UpdatedAt on every update, and event times.
	// It defaults to time.Now and can be replaced in tests.
	Now func() time.Time

	stmtsOnce      sync.Once
	wStmts, rStmts *stmtCache

	// Group commit of lease writes (batch.go).
	queue     groupQueue
	closing   chan struct{} // closed by Close: stops the checkpointer
	closeOnce sync.Once
	// grouped counts group commits and the writes they held (tests).
	groups, groupedWrites atomic.Int64

	// Background checkpoints (runCheckpoints); nil for an in-memory
	// database, which has no WAL.
	ckpt      *sql.DB
	ckptDone  chan struct{}
	commits   atomic.Int64 // write transactions committed
	ckptStats atomic.Int64 // checkpoints run (tests)

	// chain caches the audit chain's head between write transactions
	// (chain.go).
	chain chainCache

	// OnCommit, if set, is told of every committed write transaction: how
	// many writes it held (more than one for a group commit) and how long
	// it held SQLite's single writer, from BEGIN to COMMIT. Set it before
	// the DB is shared between goroutines.
	OnCommit func(writes int, held time.Duration)
}

// Open opens (creating if needed) the SQLite database at path, applies pending
// migrations and returns it ready to use. The path ":memory:" opens a private
// in-memory database, served by a single connection. Open refuses a database
// whose schema is newer than this binary knows. The database and its -wal and
// -shm files are private to the owner (0600), and a state directory Open
// creates is 0700; an existing database that others may read is narrowed to
// 0600, or refused if it cannot be.
func Open(ctx context.Context, path string) (_ *DB, err error) {
	if path == "" {
		return nil, errors.New("open sqlite: path is required")
	}
	db := &DB{Now: time.Now}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()

	if path == ":memory:" {
		// Every connection to ":memory:" is a new, empty database, so both
		// roles share one connection that must never be closed.
		if db.writer, err = sql.Open("sqlite", "file::memory:?"+pragmas); err != nil {
			return nil, fmt.Errorf("open sqlite: %w", err)
		}
		db.writer.SetMaxOpenConns(1)
		db.writer.SetMaxIdleConns(1)
		db.reader = db.writer
	} else {
		if err := privateFiles(path); err != nil {
			return nil, fmt.Errorf("open sqlite: %w", err)
		}
		file := "file:" + escapePath(path) + "?" + pragmas
		if db.writer, err = sql.Open("sqlite", file+writerPragmas); err != nil {
			return nil, fmt.Errorf("open sqlite writer: %w", err)
		}
		db.writer.SetMaxOpenConns(1)
		db.writer.SetMaxIdleConns(1)
	}

	if err := migrate(ctx, db.writer); err != nil {
		return nil, fmt.Errorf("migrate %s: %w", path, err)
	}

	if db.reader == nil {
		// Opened after migrating, so the file is already in WAL mode.
		file := "file:" + escapePath(path) + "?" + pragmas
		if db.reader, err = sql.Open("sqlite", file+"&_pragma=query_only(1)"); err != nil {
			return nil, fmt.Errorf("open sqlite reader: %w", err)
		}
		db.reader.SetMaxOpenConns(readers)
		db.reader.SetMaxIdleConns(readers)
		if db.ckpt, err = sql.Open("sqlite", file); err != nil {
			return nil, fmt.Errorf("open sqlite checkpointer: %w", err)
		}
		db.ckpt.SetMaxOpenConns(1)
		db.ckpt.SetMaxIdleConns(1)
	}
	db.queue.idle = sync.NewCond(&db.queue.mu)
	db.closing = make(chan struct{})
	if db.ckpt != nil {
		db.ckptDone = make(chan struct{})
		go db.runCheckpoints()
	}
	if err := db.Ping(ctx); err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	if err := db.mirrorLegacyLeaseEvents(ctx); err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	return db, nil
}

// escapePath quotes the characters that end or escape the path part of a
// SQLite URI filename.
func escapePath(path string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
}

// migrate applies the embedded SQLite migrations that db lacks, after checking
// that db is not ahead of them.
func migrate(ctx context.Context, db *sql.DB) error {
	files, err := fs.Sub(migrations.FS, "sqlite")
	if err != nil {
		return fmt.Errorf("find migrations: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, files,
		goose.WithDisableGlobalRegistry(true),
		goose.WithLogger(goose.NopLogger()),
	)
	if err != nil {
		return fmt.Errorf("load migrations: %w", err)
	}
	sources := p.ListSources()
	known := sources[len(sources)-1].Version
	current, err := p.GetDBVersion(ctx)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if current > known {
		return fmt.Errorf("database schema version %d is newer than this binary knows (%d): run a newer stint", current, known)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("apply migrations: %w", err)
	}
	return nil
}

// runCheckpoints copies committed WAL frames into the database file every
// checkpointEvery, on its own connection, while the writer goes on writing
// (a PASSIVE checkpoint takes no lock a writer or a reader waits for). Once
// a checkpoint has copied everything, the next write starts the WAL over.
// Left to the writer, the copy stalled one commit in every few hundred for
// the time it took to write thousands of pages.
func (db *DB) runCheckpoints() {
	defer close(db.ckptDone)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	var done int64
	for {
		select {
		case <-db.closing:
			return
		case <-t.C:
		}
		n := db.commits.Load()
		if n == done {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		// A failure (such as a busy database) leaves the frames for the next
		// round, and the writer's own backstop.
		if _, err := db.ckpt.ExecContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`); err == nil {
			done = n
			db.ckptStats.Add(1)
		}
		cancel()
	}
}

// Close closes the pools. It is safe to call on a partly opened DB.
func (db *DB) Close() error {
	if db.closing != nil {
		db.closeOnce.Do(func() {
			db.closeGroups()
			close(db.closing)
		})
	}
	if db.ckptDone != nil {
		<-db.ckptDone
	}
	var errs []error
	if db.ckpt != nil {
		errs = append(errs, db.ckpt.Close())
	}
	if db.wStmts != nil {
		errs = append(errs, db.wStmts.close())
	}
	if db.rStmts != nil && db.rStmts != db.wStmts {
		errs = append(errs, db.rStmts.close())
	}
	if db.reader != nil && db.reader != db.writer {
		errs = append(errs, db.reader.Close())
	}
	if db.writer != nil {
		errs = append(errs, db.writer.Close())
	}
	return errors.Join(errs...)
}

// Ping returns an error if either pool cannot reach the database file.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.writer.PingContext(ctx); err != nil {
		return fmt.Errorf("ping sqlite writer: %w", err)
	}
	if err := db.reader.PingContext(ctx); err != nil {
		return fmt.Errorf("ping sqlite reader: %w", err)
	}
	return nil
}

// tx is a transaction with the one timestamp its writes use. Its Exec and
// Query methods run through the pool's prepared-statement cache.
type tx struct {
	*sql.Tx
	now   time.Time
	stmts *stmtCache
	// unprepared are queries this transaction ran without a cached statement;
	// Commit prepares them for later transactions.
	unprepared []string
	// created are the leases this transaction inserted, so that appending
	// their creation events to the audit chain need not read them back.
	created map[string]*broker.Lease
	// leaseEvents are the lease events the transaction wrote, waiting for
	// Commit to append them to the audit chain, which is the lease history:
	// one multi-row INSERT however many writes share the transaction
	// (audit.go).
	leaseEvents []*broker.LeaseEvent
	// noticed marks the lease events of leases that went to approvers:
	// Commit writes an approval notice for each (insertLeaseEvent).
	noticed map[*broker.LeaseEvent]bool
	// ctx is the context the transaction began with.
	ctx context.Context
	// commits counts the DB's committed writes, for the checkpointer.
	commits *atomic.Int64
	// chain is the write transaction's view of the audit chain (chain.go).
	chain chainState
	// detached statements run to the end once started, whatever becomes of
	// the caller's context (statementContext).
	detached bool
	// A write transaction's start and its number of writes (a group
	// commit's are set by runGroup), for onCommit (DB.OnCommit).
	began    time.Time
	writes   int
	onCommit func(writes int, held time.Duration)
}

// statementContext is the context a statement of t runs with: ctx, or,
// when t is detached and ctx is still live, ctx without its cancellation.
// The driver watches a cancellable context with a goroutine of its own for
// each statement; an indexed lookup, which takes microseconds, is cheaper
// to let finish. (Writes of a group commit are detached in runGroup.)
func (t *tx) statementContext(ctx context.Context) context.Context {
	if !t.detached || ctx.Err() != nil {
		return ctx
	}
	return context.WithoutCancel(ctx)
}

// begin starts a write transaction. It takes the write lock at once.
func (db *DB) begin(ctx context.Context) (*tx, error) {
	t, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("begin write: %w", err)
	}
	return &tx{Tx: t, now: normTime(db.Now()), stmts: db.writerStmts(), ctx: ctx, commits: &db.commits,
		chain: chainState{cache: &db.chain}, onCommit: db.OnCommit, began: time.Now(), writes: 1}, nil
}

// beginRead starts a read-only transaction: one consistent snapshot, so that a
// page and its total agree.
func (db *DB) beginRead(ctx context.Context) (*tx, error) {
	t, err := db.reader.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("begin read: %w", err)
	}
	return &tx{Tx: t, now: normTime(db.Now()), stmts: db.readerStmts(), ctx: ctx}, nil
}

// readOne returns a reader for a single query, which needs no snapshot
// beyond its own: with no Tx, the query runs on a connection of the reader
// pool (its statement cache's) in autocommit mode,
// sparing BEGIN and ROLLBACK (each parsed anew by the driver) and
// database/sql's transaction bookkeeping. Its Rollback does nothing.
//
// Its queries are detached (statementContext): readOne's callers look rows
// up through an index, which takes microseconds; FindLeases, whose
// listings may be long, keeps its own cancellable.
func (db *DB) readOne(ctx context.Context) *tx {
	return &tx{now: normTime(db.Now()), stmts: db.readerStmts(), ctx: ctx, detached: true}
}

// maxCachedStmts bounds each pool's statement cache; queries beyond it (such
// as rarely used filter combinations) are parsed each time.
const maxCachedStmts = 256

// stmtCache keeps one prepared statement per query text for a pool, so that
// hot queries are parsed once per connection rather than once per call (SQL
// parsing was a fifth of a grant's CPU time). Statements are prepared on the
// pool only between transactions: the writer pool has a single connection,
// which a transaction holds until it ends.
type stmtCache struct {
	pool  *sql.DB
	mu    sync.Mutex
	stmts map[string]*sql.Stmt // nil value: preparing failed; don't retry
}

func (db *DB) writerStmts() *stmtCache {
	db.stmtsOnce.Do(db.initStmts)
	return db.wStmts
}

func (db *DB) readerStmts() *stmtCache {
	db.stmtsOnce.Do(db.initStmts)
	return db.rStmts
}

func (db *DB) initStmts() {
	db.wStmts = &stmtCache{pool: db.writer, stmts: map[string]*sql.Stmt{}}
	db.rStmts = db.wStmts
	if db.reader != db.writer {
		db.rStmts = &stmtCache{pool: db.reader, stmts: map[string]*sql.Stmt{}}
	}
}

// lookup returns the cached statement for query; known is false if it has
// never been prepared (or tried).
func (c *stmtCache) lookup(query string) (st *sql.Stmt, known bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, known = c.stmts[query]
	return st, known
}

// prepare prepares queries on the pool. Call it with no transaction open on
// this goroutine.
func (c *stmtCache) prepare(queries []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, q := range queries {
		c.mu.Lock()
		_, known := c.stmts[q]
		full := len(c.stmts) >= maxCachedStmts
		c.mu.Unlock()
		if known || full {
			continue
		}
		st, err := c.pool.PrepareContext(ctx, q)
		c.mu.Lock()
		if _, raced := c.stmts[q]; raced || err != nil {
			if st != nil {
				st.Close()
			}
			if !raced {
				c.stmts[q] = nil
			}
		} else {
			c.stmts[q] = st
		}
		c.mu.Unlock()
	}
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for q, st := range c.stmts {
		if st != nil {
			errs = append(errs, st.Close())
		}
		delete(c.stmts, q)
	}
	return errors.Join(errs...)
}

// stmt returns the transaction's view of query's cached statement, or nil
// (noting the query for Commit to prepare). Outside a transaction it
// prepares the query on the pool at once.
func (t *tx) stmt(ctx context.Context, query string) *sql.Stmt {
	st, known := t.stmts.lookup(query)
	if st == nil && !known {
		if t.Tx == nil {
			t.stmts.prepare([]string{query})
			st, _ = t.stmts.lookup(query)
		} else {
			t.unprepared = append(t.unprepared, query)
		}
	}
	if st == nil || t.Tx == nil {
		return st
	}
	return t.Tx.StmtContext(ctx, st)
}

// ExecContext runs query in the transaction through the statement cache.
func (t *tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	ctx = t.statementContext(ctx)
	if st := t.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	if t.Tx == nil {
		return t.stmts.pool.ExecContext(ctx, query, args...)
	}
	return t.Tx.ExecContext(ctx, query, args...)
}

// QueryContext runs query in the transaction through the statement cache.
func (t *tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	ctx = t.statementContext(ctx)
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	if t.Tx == nil {
		return t.stmts.pool.QueryContext(ctx, query, args...)
	}
	return t.Tx.QueryContext(ctx, query, args...)
}

// QueryRowContext runs query in the transaction through the statement cache.
func (t *tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	ctx = t.statementContext(ctx)
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	if t.Tx == nil {
		return t.stmts.pool.QueryRowContext(ctx, query, args...)
	}
	return t.Tx.QueryRowContext(ctx, query, args...)
}

// Commit appends the lease events the transaction wrote to the audit chain,
// commits, then prepares the queries it ran unprepared, now that its
// connection is free.
func (t *tx) Commit() error {
	if len(t.leaseEvents) > 0 {
		if err := appendLeaseEvents(t.ctx, t); err != nil {
			t.forgetChain() // read the chain afresh next time
			return err
		}
	}
	if err := t.Tx.Commit(); err != nil {
		t.forgetChain()
		return err
	}
	t.committed()
	if t.commits != nil {
		t.commits.Add(1)
	}
	if t.onCommit != nil && t.writes > 0 {
		t.onCommit(t.writes, time.Since(t.began))
	}
	t.prepareLater()
	return nil
}

// Rollback rolls the transaction back, then prepares the queries it ran
// unprepared: read transactions always end here.
func (t *tx) Rollback() error {
	if t.Tx == nil {
		return nil
	}
	err := t.Tx.Rollback()
	t.prepareLater()
	return err
}

// prepareLater prepares the queries the transaction ran unprepared. Its
// connection must be free.
func (t *tx) prepareLater() {
	if len(t.unprepared) > 0 {
		t.stmts.prepare(t.unprepared)
		t.unprepared = nil
	}
}

// conflictMessages names what a UNIQUE or PRIMARY KEY violation means, keyed
// by the "table.column" SQLite reports.
var conflictMessages = map[string]string{
	"agents.id":     "Agent already exists.",
	"agents.name":   "Agent name is already taken.",
	"api_keys.id":   "API key already exists.",
	"api_keys.hash": "API key already exists.",
	"leases.id":     "Lease already exists.",
}

// formatError turns a UNIQUE or PRIMARY KEY violation into ECONFLICT and
// returns any other error unchanged.
func formatError(err error) error {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return err
	}
	switch e.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		// The message reads "... UNIQUE constraint failed: agents.name (2067)".
		var target string
		if i := strings.LastIndex(e.Error(), "constraint failed: "); i >= 0 {
			target, _, _ = strings.Cut(e.Error()[i+len("constraint failed: "):], " ")
		}
		if msg, ok := conflictMessages[target]; ok {
			return broker.Errorf(broker.ECONFLICT, "%s", msg)
		}
		return broker.Errorf(broker.ECONFLICT, "Object already exists.")
	}
	return err
}

// isForeignKeyError reports whether err is a FOREIGN KEY violation.
func isForeignKeyError(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
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

// idsJSON encodes ids as a JSON array, which SQL expands with json_each: one
// parameter however many rows a statement touches.
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
