package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/stint-broker/stint/migrations"
)

// migrationLockID names the row of goose_lock that serialises migrations:
// replicas starting at once wait for the first to migrate, then find
// nothing left to do. The table locker holds a lease row (not a session
// advisory lock), so it works behind a transaction-pooling proxy and a
// migrator that dies frees the lock when its lease runs out.
const migrationLockID = 0x5374696e74 // "Stint"

// migrationLockLease is how long a migrator's lock lasts without a
// heartbeat: after a crash, another replica takes over that much later.
const migrationLockLease = 30 * time.Second

// newProvider returns goose's migration provider for db with the embedded
// PostgreSQL migrations and the table locker.
func newProvider(db *sql.DB) (*goose.Provider, error) {
	files, err := fs.Sub(migrations.FS, "postgres")
	if err != nil {
		return nil, fmt.Errorf("find migrations: %w", err)
	}
	locker, err := lock.NewPostgresTableLocker(
		lock.WithTableLockID(migrationLockID),
		lock.WithTableLeaseDuration(migrationLockLease),
		lock.WithTableHeartbeatInterval(5*time.Second),
		// Wait up to 5 minutes for another replica's migrations.
		lock.WithTableLockTimeout(time.Second, 300),
	)
	if err != nil {
		return nil, fmt.Errorf("migration lock: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, files,
		goose.WithDisableGlobalRegistry(true),
		goose.WithLogger(goose.NopLogger()),
		goose.WithLocker(locker),
	)
	if err != nil {
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	return p, nil
}

// KnownVersion is the newest schema version this binary knows.
func KnownVersion() (int64, error) {
	entries, err := fs.ReadDir(migrations.FS, "postgres")
	if err != nil {
		return 0, fmt.Errorf("find migrations: %w", err)
	}
	var v int64
	for _, e := range entries {
		if n, err := goose.NumericComponent(e.Name()); err == nil && n > v {
			v = n
		}
	}
	return v, nil
}

// checkNotNewer refuses a database whose schema is newer than this binary.
func checkNotNewer(ctx context.Context, p *goose.Provider) (current, known int64, err error) {
	sources := p.ListSources()
	known = sources[len(sources)-1].Version
	current, err = p.GetDBVersion(ctx)
	if err != nil {
		return 0, known, fmt.Errorf("read schema version: %w", permissionError(err))
	}
	if current > known {
		return current, known, fmt.Errorf("database schema version %d is newer than this binary knows (%d): another replica runs a newer stint; upgrade this one (a replica never runs on a schema it does not know)", current, known)
	}
	return current, known, nil
}

// migrateUp applies the migrations db lacks, under the migration lock,
// after checking that db is not ahead of them. It returns the versions it
// applied.
func migrateUp(ctx context.Context, db *sql.DB) ([]int64, error) {
	p, err := newProvider(db)
	if err != nil {
		return nil, err
	}
	if _, _, err := checkNotNewer(ctx, p); err != nil {
		return nil, err
	}
	if has, err := p.HasPending(ctx); err != nil {
		return nil, fmt.Errorf("read schema version: %w", permissionError(err))
	} else if !has {
		return nil, nil
	}
	results, err := p.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("apply migrations: %w", permissionError(err))
	}
	var applied []int64
	for _, r := range results {
		applied = append(applied, r.Source.Version)
	}
	return applied, nil
}

// permissionError explains a refusal to create or change tables.
func permissionError(err error) error {
	var pg *pgconn.PgError
	if errors.As(err, &pg) && pg.Code == "42501" {
		return fmt.Errorf("the database role may not create or change Stint's tables: "+
			"run `stint migrate up` once as a role that may (the schema's owner), or GRANT CREATE ON SCHEMA to this one; nothing was changed: %w", err)
	}
	return err
}

// MigrationStatus is one migration and whether the database has it.
type MigrationStatus struct {
	Version   int64
	Name      string
	Applied   bool
	AppliedAt time.Time
}

// Migrator applies and reports the schema of a PostgreSQL database without
// opening the store (stint migrate).
type Migrator struct {
	db *DB
}

// OpenMigrator connects to dsn without touching the schema.
func OpenMigrator(ctx context.Context, dsn string) (*Migrator, error) {
	db, err := connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	return &Migrator{db: db}, nil
}

// Close closes the connection.
func (m *Migrator) Close() error { return m.db.Close() }

// Status reports every migration this binary knows and whether the
// database has it, and the database's version (which may be newer than
// every migration listed).
func (m *Migrator) Status(ctx context.Context) ([]MigrationStatus, int64, error) {
	p, err := newProvider(m.db.sql)
	if err != nil {
		return nil, 0, err
	}
	current, err := p.GetDBVersion(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("read schema version: %w", permissionError(err))
	}
	st, err := p.Status(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("read migrations: %w", permissionError(err))
	}
	out := make([]MigrationStatus, len(st))
	for i, s := range st {
		out[i] = MigrationStatus{Version: s.Source.Version, Name: s.Source.Path,
			Applied: s.State == goose.StateApplied, AppliedAt: s.AppliedAt}
	}
	return out, current, nil
}

// Up applies the pending migrations and returns the versions applied.
func (m *Migrator) Up(ctx context.Context) ([]int64, error) {
	return migrateUp(ctx, m.db.sql)
}
