package sqlite_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

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
		got, err := db.ClaimExpiredLeases(b.Context(), now, now.Add(time.Minute), 500, "system:expiry", "window closed")
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

// BenchmarkGrantWrites measures the store's part of one auto-approved grant,
// as a lone request makes it: the write-ahead transaction (the issuing lease
// and its first history event) and the activation (issuing → active with
// the Vault lease id, and its event), each a commit of its own. The
// baseline is the smallest write a request can make, an agent's last-seen
// time, so the ratios show what the lease rows, their indexes and the audit
// chain add to a bare commit. Compare with BenchmarkGrantOverhead, where
// the same two transactions run between Vault calls on busy cores.
func BenchmarkGrantWrites(b *testing.B) {
	const grants = 2000 // per iteration: make bench runs one
	db, _ := MustOpenDB(b)
	a := MustCreateAgent(b, db, "bench-bot")
	ctx := b.Context()
	var ahead, activate, touch time.Duration
	n := 0
	for b.Loop() {
		for range grants {
			now := time.Now().UTC()
			l := &broker.Lease{
				ID: uuid.Must(uuid.NewV7()).String(), AgentID: a.ID, Agent: a.Name, Role: "db-readonly",
				Task: "bench", TTL: broker.Duration(time.Hour), VaultPath: "database/creds/readonly",
				State: broker.LeaseIssuing, PolicyDecision: &broker.Decision{Outcome: broker.OutcomeApprove},
				CreatedAt: now, UpdatedAt: now,
			}
			t0 := time.Now()
			if err := db.CreateLease(ctx, l, "agent:"+a.ID, "auto-approved"); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			active, vaultID, expires := broker.LeaseActive, "database/creds/readonly/"+uuid.NewString(), now.Add(time.Hour)
			if _, err := db.UpdateLease(ctx, l.ID, broker.LeaseUpdate{
				From: []broker.LeaseState{broker.LeaseIssuing}, State: &active,
				VaultLeaseID: &vaultID, ActivatedAt: &now, ExpiresAt: &expires,
				Actor: "agent:" + a.ID, Reason: "credential minted", Base: l,
			}); err != nil {
				b.Fatal(err)
			}
			t2 := time.Now()
			n++
			seen := now.Add(time.Duration(n) * time.Second)
			if _, err := db.UpdateAgent(ctx, a.ID, broker.AgentUpdate{LastSeenAt: &seen}); err != nil {
				b.Fatal(err)
			}
			ahead, activate, touch = ahead+t1.Sub(t0), activate+t2.Sub(t1), touch+time.Since(t2)
		}
	}
	b.ReportMetric(float64(ahead.Microseconds())/float64(n), "write-ahead-µs")
	b.ReportMetric(float64(activate.Microseconds())/float64(n), "activation-µs")
	b.ReportMetric(float64(touch.Microseconds())/float64(n), "baseline-µs")
	b.ReportMetric(float64(ahead)/float64(touch), "write-ahead-ratio")
	b.ReportMetric(float64(activate)/float64(touch), "activation-ratio")
}
