package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker/postgres"
	"github.com/stint-broker/stint/broker/postgres/pgtest"
)

// TestOpenMigratesOnce starts four replicas on an empty schema at once:
// one migrates, the others wait for it and find nothing to do; all open.
func TestOpenMigratesOnce(t *testing.T) {
	_, dsn := pgtest.NewSchema(t)
	known, err := postgres.KnownVersion()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	dbs := make([]*postgres.DB, 4)
	errs := make([]error, 4)
	start := make(chan struct{})
	for i := range dbs {
		wg.Go(func() {
			<-start
			dbs[i], errs[i] = postgres.Open(t.Context(), dsn)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: Open: %v", i, err)
		}
		t.Cleanup(func() { dbs[i].Close() })
	}
	var applied, heads int
	pool := dbs[0].Pool()
	if err := pool.QueryRow(t.Context(), `SELECT COUNT(*) FROM goose_db_version WHERE version_id > 0`).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(t.Context(), `SELECT COUNT(*) FROM audit_head`).Scan(&heads); err != nil {
		t.Fatal(err)
	}
	if int64(applied) != known || heads != 1 {
		t.Fatalf("migrations recorded %d times, audit_head rows %d; want %d and 1", applied, heads, known)
	}
}

// TestOpenErrors checks that every way of failing to open says what to do.
func TestOpenErrors(t *testing.T) {
	admin := pgtest.AdminDSN(t)
	ctx := t.Context()
	open := func(t *testing.T, dsn string, want ...string) {
		t.Helper()
		db, err := postgres.Open(ctx, dsn)
		if err == nil {
			db.Close()
			t.Fatalf("Open(%q) succeeded", dsn)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("Open: %v\nwant it to say %q", err, w)
			}
		}
	}
	t.Run("Empty", func(t *testing.T) { open(t, " ", "DSN is empty") })
	t.Run("Malformed", func(t *testing.T) {
		open(t, "postgres://stint:secret@db:notaport/stint", "DSN is not valid")
		db, err := postgres.Open(ctx, "postgres://stint:secret@db:notaport/stint")
		if err == nil {
			db.Close()
		} else if strings.Contains(err.Error(), "secret") {
			t.Fatalf("the error shows the password: %v", err)
		}
	})
	t.Run("Unreachable", func(t *testing.T) {
		open(t, "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2",
			"cannot reach PostgreSQL at 127.0.0.1:1", "check the host and port")
	})
	t.Run("UnknownRole", func(t *testing.T) {
		open(t, pgtest.WithParam(t, admin, "user", "stint_no_such_role"), "refused the login of role \"stint_no_such_role\"")
	})
	t.Run("NoDatabase", func(t *testing.T) {
		u, err := url.Parse(admin)
		if err != nil || u.Scheme == "" {
			t.Fatalf("the test DSN is not a URL (%v): set %s as postgres://…", err, pgtest.EnvDSN)
		}
		u.Path = "/stint_no_such_db"
		dsn := u.String()
		open(t, dsn, `database "stint_no_such_db" does not exist`, "createdb stint_no_such_db")
	})
	t.Run("NoPermission", func(t *testing.T) {
		schema, dsn := pgtest.NewSchema(t)
		var b [4]byte
		rand.Read(b[:])
		role := "stint_test_ro_" + hex.EncodeToString(b[:])
		pgtest.Exec(t, "CREATE ROLE "+role+" LOGIN")
		t.Cleanup(func() { pgtest.Exec(t, "DROP OWNED BY "+role+"; DROP ROLE "+role) })
		pgtest.Exec(t, "GRANT USAGE ON SCHEMA "+schema+" TO "+role)
		open(t, pgtest.WithParam(t, dsn, "user", role), "may not create or change Stint's tables", "stint migrate up")
		// Nothing half-written: the schema is still empty.
		var n int
		db := MustOpenDSN(t, dsn) // as the owner: migrates
		if err := db.Pool().QueryRow(ctx, `SELECT COUNT(*) FROM goose_db_version WHERE version_id > 0`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if known, _ := postgres.KnownVersion(); int64(n) != known {
			t.Fatalf("%d migrations applied by the owner after the refusal, want %d", n, known)
		}
	})
	t.Run("NewerSchema", func(t *testing.T) {
		_, dsn := pgtest.NewSchema(t)
		db := MustOpenDSN(t, dsn)
		if _, err := db.Pool().Exec(ctx, `INSERT INTO goose_db_version (version_id, is_applied) VALUES (9999, true)`); err != nil {
			t.Fatal(err)
		}
		open(t, dsn, "schema version 9999 is newer than this binary knows", "upgrade this one")
	})
}

// TestMigrator checks stint migrate's view: status before and after up.
func TestMigrator(t *testing.T) {
	_, dsn := pgtest.NewSchema(t)
	ctx := context.Background()
	m, err := postgres.OpenMigrator(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	st, current, err := m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if current != 0 || len(st) == 0 || st[0].Applied {
		t.Fatalf("before up: version %d, %d migrations, first applied %v", current, len(st), len(st) > 0 && st[0].Applied)
	}
	applied, err := m.Up(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != len(st) {
		t.Fatalf("up applied %v, want %d migrations", applied, len(st))
	}
	st, current, err = m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	known, _ := postgres.KnownVersion()
	if current != known || !st[len(st)-1].Applied {
		t.Fatalf("after up: version %d (want %d), last applied %v", current, known, st[len(st)-1].Applied)
	}
	if again, err := m.Up(ctx); err != nil || len(again) != 0 {
		t.Fatalf("second up: %v, %v; want nothing to do", again, err)
	}
}

// TestClockSkew: the server runs on this host here, so the measured skew
// is within the round trip.
func TestClockSkew(t *testing.T) {
	db := MustOpenDB(t)
	if skew := db.ClockSkew(); skew > time.Second || skew < -time.Second {
		t.Fatalf("ClockSkew = %s against a server on this host", skew)
	}
}
