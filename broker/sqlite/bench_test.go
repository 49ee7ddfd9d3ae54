package sqlite_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/sqlite"
)

// BenchmarkClaimExpiredLeases measures the expiry loop's store work: moving
// every due active lease to revoking with its history event. "batch" claims
// 500 leases per call, as leases.ExpireDue does; "one-by-one" is the baseline
// of one guarded UpdateLease transaction per lease. Compare their ns/lease.
//
// With order=created the leases fall due in the order they were created (one
// TTL for all), so each batch touches neighbouring pages; with order=random
// they fall due in an order unrelated to creation, the worst case.
func BenchmarkClaimExpiredLeases(b *testing.B) {
	for _, bm := range []struct {
		name   string
		n      int
		random bool
		claim  func(b *testing.B, db *sqlite.DB, ids []string, now time.Time) int
	}{
		{"batch=500/order=created/leases=10000", 10_000, false, claimBatches},
		{"batch=500/order=created/leases=100000", 100_000, false, claimBatches},
		{"batch=500/order=random/leases=10000", 10_000, true, claimBatches},
		{"batch=500/order=random/leases=100000", 100_000, true, claimBatches},
		{"one-by-one/order=created/leases=10000", 10_000, false, claimOneByOne},
		{"one-by-one/order=random/leases=10000", 10_000, true, claimOneByOne},
	} {
		b.Run(bm.name, func(b *testing.B) {
			db, path := MustOpenDB(b)
			a := MustCreateAgent(b, db, "bench-bot")
			raw := MustOpenRaw(b, path)
			now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
			// rank is where lease i falls due: i itself, or a permutation
			// of 1..n (7919 is prime and divides neither n).
			rank := "i"
			if bm.random {
				rank = "(i * 7919 % ?4) + 1"
			}

			var total int
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				prefix := fmt.Sprintf("bench-%d", i)
				// Seeded with one statement: the store's CreateLease is not
				// what is measured here.
				if _, err := raw.ExecContext(b.Context(), `
					WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?4)
					INSERT INTO leases (id, agent_id, agent, role, ttl, state, vault_lease_id,
						created_at, updated_at, activated_at, expires_at)
					SELECT printf('%s-%08d', ?1, i), ?2, ?3, 'db-readonly', 900000000000, 'active',
						printf('database/creds/readonly/%s-%08d', ?1, i),
						?5 + i, ?5 + i, ?5 + i, ?6 - (?4 - `+rank+`) * 1000
					FROM seq`,
					prefix, a.ID, a.Name, bm.n, now.Add(-time.Hour).UnixNano(), now.UnixNano(),
				); err != nil {
					b.Fatal(err)
				}
				ids := make([]string, bm.n)
				for j := range ids {
					ids[j] = fmt.Sprintf("%s-%08d", prefix, j+1)
				}
				b.StartTimer()

				if got := bm.claim(b, db, ids, now); got != bm.n {
					b.Fatalf("claimed %d leases, want %d", got, bm.n)
				}
				total += bm.n
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(total), "ns/lease")
		})
	}
}

// claimBatches claims every due lease 500 at a time, as leases.ExpireDue does.
func claimBatches(b *testing.B, db *sqlite.DB, _ []string, now time.Time) int {
	n := 0
	for {
		got, err := db.ClaimExpiredLeases(b.Context(), now, now.Add(time.Minute), 500)
		if err != nil {
			b.Fatal(err)
		}
		n += len(got)
		if len(got) < 500 {
			return n
		}
	}
}

// claimOneByOne is the baseline: one guarded UpdateLease per lease.
func claimOneByOne(b *testing.B, db *sqlite.DB, ids []string, now time.Time) int {
	revoking, expired, retryAt := broker.LeaseRevoking, broker.LeaseExpired, now.Add(time.Minute)
	for _, id := range ids {
		if _, err := db.UpdateLease(b.Context(), id, broker.LeaseUpdate{
			From:  []broker.LeaseState{broker.LeaseActive},
			State: &revoking, EndState: &expired, NextRevokeAt: &retryAt,
			Actor: "system:expiry", Reason: "window closed",
		}); err != nil {
			b.Fatal(err)
		}
	}
	return len(ids)
}
