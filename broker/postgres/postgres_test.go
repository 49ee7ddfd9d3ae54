package postgres_test

import (
	"testing"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/postgres"
	"github.com/stint-broker/stint/broker/postgres/pgtest"
	"github.com/stint-broker/stint/broker/storetest"
)

var (
	_ broker.AgentStore = (*postgres.DB)(nil)
	_ broker.LeaseStore = (*postgres.DB)(nil)
	_ storetest.Store   = (*postgres.DB)(nil)
)

// TestStore runs the conformance suite, each store in a fresh schema.
func TestStore(t *testing.T) {
	storetest.RunStoreTests(t, func(tb testing.TB) storetest.Store {
		return MustOpenDB(tb)
	})
}

// MustOpenDB opens a store in a fresh schema, closed and dropped when tb
// ends.
func MustOpenDB(tb testing.TB) *postgres.DB {
	tb.Helper()
	_, dsn := pgtest.NewSchema(tb)
	return MustOpenDSN(tb, dsn)
}

// MustOpenDSN opens the store at dsn, closed when tb ends.
func MustOpenDSN(tb testing.TB, dsn string) *postgres.DB {
	tb.Helper()
	db, err := postgres.Open(tb.Context(), dsn)
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

// TestShared runs the replica suite on two stores (two pools) on one
// schema.
func TestShared(t *testing.T) {
	storetest.RunSharedTests(t, func(tb testing.TB) (storetest.SharedStore, storetest.SharedStore) {
		_, dsn := pgtest.NewSchema(tb)
		return MustOpenDSN(tb, dsn), MustOpenDSN(tb, dsn)
	})
}
