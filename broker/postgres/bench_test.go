package postgres_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/sqlite"
	"github.com/stint-broker/stint/broker/storetest"
)

// BenchmarkCreateLease creates leases (each with its creation event in the
// audit chain) in the SQLite store and in the PostgreSQL store, one writer
// and then 8 at once, and reports PostgreSQL's time per lease as a multiple
// of SQLite's measured in the same run (x_sqlite).
func BenchmarkCreateLease(b *testing.B) {
	for _, writers := range []int{1, 8} {
		ns := map[string]float64{}
		for _, kind := range []string{"sqlite", "postgres"} {
			b.Run(fmt.Sprintf("%s/writers=%d", kind, writers), func(b *testing.B) {
				var s storetest.Store
				if kind == "sqlite" {
					db, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "stint.db"))
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { db.Close() })
					s = db
				} else {
					s = MustOpenDB(b)
				}
				a := &broker.Agent{Name: "bench", Owner: "owner@example.com", State: broker.AgentActive}
				if err := s.CreateAgent(b.Context(), a); err != nil {
					b.Fatal(err)
				}
				expires := time.Now().Add(time.Hour).UTC()
				b.SetParallelism(writers) // RunParallel: GOMAXPROCS × writers goroutines
				start := time.Now()
				b.ResetTimer()
				if writers == 1 {
					for b.Loop() {
						l := activeLease(a, expires)
						l.ID = uuid.Must(uuid.NewV7()).String()
						if err := s.CreateLease(b.Context(), l, "agent:bench", "requested"); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if err := s.CreateLease(b.Context(), activeLease(a, expires), "agent:bench", "requested"); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				ns[kind] = float64(time.Since(start).Nanoseconds()) / float64(b.N)
				if kind == "postgres" && ns["sqlite"] > 0 {
					b.ReportMetric(ns["postgres"]/ns["sqlite"], "x_sqlite")
				}
			})
		}
	}
}
