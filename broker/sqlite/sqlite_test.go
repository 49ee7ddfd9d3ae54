package sqlite_test

import (
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/sqlite"
	"github.com/stint-broker/stint/broker/storetest"
	"github.com/stint-broker/stint/migrations"
)

var (
	_ broker.AgentStore = (*sqlite.DB)(nil)
	_ broker.LeaseStore = (*sqlite.DB)(nil)
	_ storetest.Store   = (*sqlite.DB)(nil)
)

func TestStore(t *testing.T) {
	storetest.RunStoreTests(t, func(tb testing.TB) storetest.Store {
		db, _ := MustOpenDB(tb)
		return db
	})
}

func TestStoreInMemory(t *testing.T) {
	storetest.RunStoreTests(t, func(tb testing.TB) storetest.Store {
		return MustOpenPath(tb, ":memory:")
	})
}

// MustOpenDB opens a new store in a temporary file, closed when tb ends, and
// returns it with the file's path.
func MustOpenDB(tb testing.TB) (*sqlite.DB, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "stint.db")
	return MustOpenPath(tb, path), path
}

// MustOpenPath opens the store at path, closed when tb ends.
func MustOpenPath(tb testing.TB, path string) *sqlite.DB {
	tb.Helper()
	db, err := sqlite.Open(tb.Context(), path)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := db.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return db
}

// MustOpenRaw opens the file at path with plain database/sql, bypassing the
// store, as another program holding the file would.
func MustOpenRaw(tb testing.TB, path string) *sql.DB {
	tb.Helper()
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { raw.Close() })
	return raw
}

// MustCreateAgent creates an active agent.
func MustCreateAgent(tb testing.TB, db *sqlite.DB, name string) *broker.Agent {
	tb.Helper()
	a := &broker.Agent{Name: name, Owner: "owner@example.com", State: broker.AgentActive}
	if err := db.CreateAgent(tb.Context(), a); err != nil {
		tb.Fatal(err)
	}
	return a
}

// MustCreateActiveLease creates an active lease of a expiring at expires.
func MustCreateActiveLease(tb testing.TB, db *sqlite.DB, a *broker.Agent, expires time.Time) *broker.Lease {
	tb.Helper()
	l := &broker.Lease{
		AgentID: a.ID, Agent: a.Name, Role: "db-readonly", TTL: broker.Duration(time.Minute),
		State: broker.LeaseActive, ExpiresAt: &expires,
	}
	if err := db.CreateLease(tb.Context(), l, "agent:"+a.Name, "requested"); err != nil {
		tb.Fatal(err)
	}
	return l
}

func TestOpen(t *testing.T) {
	t.Run("Reopen", func(t *testing.T) {
		db, path := MustOpenDB(t)
		a := MustCreateAgent(t, db, "etl-bot")
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		// Migrations already applied are skipped; the data survives.
		for range 2 {
			db := MustOpenPath(t, path)
			if _, err := db.FindAgentByID(t.Context(), a.ID); err != nil {
				t.Fatalf("after reopening: %v", err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		}
		var applied int
		if err := MustOpenRaw(t, path).QueryRow(`SELECT COUNT(*) FROM goose_db_version WHERE version_id > 0`).Scan(&applied); err != nil {
			t.Fatal(err)
		}
		files, err := fs.Glob(migrations.FS, "sqlite/*.sql")
		if err != nil {
			t.Fatal(err)
		}
		if applied != len(files) {
			t.Errorf("goose_db_version has %d applied migrations, want each of the %d once", applied, len(files))
		}
	})

	t.Run("ErrNewerSchema", func(t *testing.T) {
		db, path := MustOpenDB(t)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := MustOpenRaw(t, path).Exec(`INSERT INTO goose_db_version (version_id, is_applied) VALUES (9999, 1)`); err != nil {
			t.Fatal(err)
		}
		_, err := sqlite.Open(t.Context(), path)
		if err == nil || !strings.Contains(err.Error(), "newer than this binary") {
			t.Fatalf("Open = %v, want an error about a newer schema", err)
		}
	})

	t.Run("WAL", func(t *testing.T) {
		_, path := MustOpenDB(t)
		var mode string
		if err := MustOpenRaw(t, path).QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if mode != "wal" {
			t.Errorf("journal_mode = %q, want wal", mode)
		}
	})

	t.Run("OddPath", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "a?b#c%20d.db")
		db := MustOpenPath(t, path)
		MustCreateAgent(t, db, "etl-bot")
		if _, err := os.Stat(path); err != nil {
			t.Errorf("database file not at the path given: %v", err)
		}
	})

	t.Run("ErrEmptyPath", func(t *testing.T) {
		if _, err := sqlite.Open(t.Context(), ""); err == nil {
			t.Fatal("Open(\"\") succeeded, want an error")
		}
	})

	t.Run("Ping", func(t *testing.T) {
		db, _ := MustOpenDB(t)
		if err := db.Ping(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
}

// TestAppendOnly checks that the schema itself refuses to rewrite history,
// whoever writes to the file.
func TestAppendOnly(t *testing.T) {
	db, path := MustOpenDB(t)
	l := MustCreateActiveLease(t, db, MustCreateAgent(t, db, "etl-bot"), time.Now().Add(time.Hour))
	raw := MustOpenRaw(t, path)

	for _, tt := range []struct{ name, query string }{
		{"UpdateEvent", `UPDATE audit_events SET details = '{"reason":"rewritten"}' WHERE subject = ?`},
		{"DeleteEvent", `DELETE FROM audit_events WHERE subject = ?`},
		{"DeleteLease", `DELETE FROM leases WHERE id = ?`},
		// The table that held lease events before the chain did.
		{"LegacyEventTable", `INSERT INTO lease_events (lease_id, at, to_state, actor) VALUES (?, 0, 'active', 'x')`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := raw.ExecContext(t.Context(), tt.query, l.ID)
			if err == nil || !strings.Contains(err.Error(), "never deleted") && !strings.Contains(err.Error(), "append-only") &&
				!strings.Contains(err.Error(), "takes no new rows") {
				t.Fatalf("%s = %v, want the trigger to refuse", tt.query, err)
			}
		})
	}

	events, err := db.FindLeaseEvents(t.Context(), l.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Reason != "requested" {
		t.Errorf("history changed: %d events", len(events))
	}
	if _, err := db.FindLeaseByID(t.Context(), l.ID); err != nil {
		t.Errorf("lease gone: %v", err)
	}
}

// TestConcurrentWriters checks that writers queue rather than fail with
// SQLITE_BUSY, within one DB and across two DBs on the same file (as two
// processes would be), while readers keep reading.
func TestConcurrentWriters(t *testing.T) {
	db, path := MustOpenDB(t)
	other := MustOpenPath(t, path)
	a := MustCreateAgent(t, db, "etl-bot")
	l := MustCreateActiveLease(t, db, a, time.Now().Add(time.Hour))

	const writers, updates = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers*updates+writers)
	for w := range writers {
		store := db
		if w%2 == 1 {
			store = other
		}
		wg.Go(func() {
			for i := range updates {
				if _, err := store.UpdateLease(t.Context(), l.ID, broker.LeaseUpdate{
					From:        []broker.LeaseState{broker.LeaseActive},
					RevokeError: new(fmt.Sprintf("note %d/%d", w, i)),
					Actor:       "system:issuer", Reason: "note",
				}); err != nil {
					errs <- fmt.Errorf("writer %d update %d: %w", w, i, err)
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for range updates {
				if _, _, err := db.FindLeases(t.Context(), broker.LeaseFilter{AgentID: &a.ID}); err != nil {
					errs <- fmt.Errorf("reader: %w", err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	events, err := db.FindLeaseEvents(t.Context(), l.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(events), 1+writers*updates; got != want {
		t.Errorf("%d events, want %d", got, want)
	}
	// Both handles appended to one chain, each caching its head between
	// writes: the chain must hold every event, unforked.
	v, err := broker.VerifyAuditChain(t.Context(), db, nil, nil)
	if err != nil || !v.OK {
		t.Fatalf("audit chain after writers on two handles: %+v, %v", v, err)
	}
}

func TestClaimErrInvalidLimit(t *testing.T) {
	db, _ := MustOpenDB(t)
	now := time.Now()
	if _, err := db.ClaimExpiredLeases(t.Context(), now, now, 0, "system:expiry", "window closed"); err == nil {
		t.Error("ClaimExpiredLeases with limit 0 succeeded, want an error")
	}
	if _, err := db.ClaimDueRevocations(t.Context(), now, now, -1); err == nil {
		t.Error("ClaimDueRevocations with limit -1 succeeded, want an error")
	}
}

// TestNow checks that the injected clock stamps what the caller leaves unset.
func TestNow(t *testing.T) {
	db, _ := MustOpenDB(t)
	fixed := time.Date(2030, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 3600))
	db.Now = func() time.Time { return fixed }
	a := MustCreateAgent(t, db, "etl-bot")
	l := MustCreateActiveLease(t, db, a, fixed.Add(time.Hour))
	if !l.CreatedAt.Equal(fixed) || l.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt = %v, want %v in UTC", l.CreatedAt, fixed)
	}
	got, err := db.UpdateLease(t.Context(), l.ID, broker.LeaseUpdate{From: []broker.LeaseState{broker.LeaseActive}, Actor: "system:issuer", Reason: "note"})
	if err != nil {
		t.Fatal(err)
	}
	if !got.UpdatedAt.Equal(fixed) {
		t.Errorf("UpdatedAt = %v, want %v", got.UpdatedAt, fixed)
	}
	events, err := db.FindLeaseEvents(t.Context(), l.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if !e.At.Equal(fixed) {
			t.Errorf("event %d at %v, want %v", e.ID, e.At, fixed)
		}
	}
}

// TestErrorsAreSafe checks that conflicts carry a caller-safe message and keep
// SQLite's detail out of it.
func TestErrorsAreSafe(t *testing.T) {
	db, _ := MustOpenDB(t)
	MustCreateAgent(t, db, "etl-bot")
	err := db.CreateAgent(t.Context(), &broker.Agent{Name: "etl-bot", Owner: "o@example.com", State: broker.AgentActive})
	if got, want := broker.ErrorMessage(err), "Agent name is already taken."; got != want {
		t.Errorf("message = %q, want %q", got, want)
	}
	var e *broker.Error
	if !errors.As(err, &e) || strings.Contains(e.Message, "UNIQUE") {
		t.Errorf("error %v is not a clean *broker.Error", err)
	}
}

// TestLegacyLeaseEvents opens a database holding a lease event written the
// way stores before schema version 10 wrote them (a row of lease_events)
// that the chain does not mirror, as in a database from before the chain
// that nothing wrote to since: Open appends it to the chain, once, with its
// old id, and the lease's history shows it in order.
func TestLegacyLeaseEvents(t *testing.T) {
	db, path := MustOpenDB(t)
	a := MustCreateAgent(t, db, "etl-bot")
	l := MustCreateActiveLease(t, db, a, time.Now().Add(time.Hour))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	raw := MustOpenRaw(t, path)
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, q := range []string{
		`DROP TRIGGER lease_events_closed`,
		`INSERT INTO lease_events (id, lease_id, at, from_state, to_state, actor, reason) VALUES (41, ?1, ?2, 'active', 'revoking', 'admin:ops', 'legacy revoke')`,
		`CREATE TRIGGER lease_events_closed BEFORE INSERT ON lease_events BEGIN SELECT RAISE(ABORT, 'closed'); END`,
	} {
		if _, err := raw.ExecContext(t.Context(), q, l.ID, at.UnixNano()); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	raw.Close()

	for range 2 { // the second Open finds nothing to mirror
		db = MustOpenPath(t, path)
		events, err := db.FindLeaseEvents(t.Context(), l.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(events) != 2 {
			t.Fatalf("%d lease events, want the creation and the legacy one", len(events))
		}
		e := events[1]
		if e.From != broker.LeaseActive || e.To != broker.LeaseRevoking || e.Actor != "admin:ops" || e.Reason != "legacy revoke" || !e.At.Equal(at) {
			t.Fatalf("legacy event = %+v", e)
		}
		kind := broker.AuditLeaseState
		audited, _, err := db.FindAuditEvents(t.Context(), broker.AuditFilter{Kind: &kind, Subject: &l.ID})
		if err != nil || len(audited) != 1 || !strings.Contains(string(audited[0].Details), `"event_id":41,`) || audited[0].Seq != e.ID {
			t.Fatalf("audit events of the legacy event: %+v, %v", audited, err)
		}
		if v, err := broker.VerifyAuditChain(t.Context(), db, nil, nil); err != nil || !v.OK {
			t.Fatalf("verify = %+v, %v", v, err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestShared runs the replica suite on two handles on one database file.
func TestShared(t *testing.T) {
	storetest.RunSharedTests(t, func(tb testing.TB) (storetest.SharedStore, storetest.SharedStore) {
		a, path := MustOpenDB(tb)
		return a, MustOpenPath(tb, path)
	})
}
