package storetest

import (
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
)

// testLeaseQueue covers the expiry loop's and the revocation queue's view of
// the store: deadlines, claims and counts.
func testLeaseQueue(t *testing.T, open func(tb testing.TB) Store) {
	now := at(time.Hour)

	t.Run("NextDeadline", func(t *testing.T) {
		t.Run("None", func(t *testing.T) {
			s := open(t)
			wantNoDeadline(t, s)
			// Leases that are neither active nor revoking have no deadline,
			// whatever their times say.
			a := mustCreateAgent(t, s, "etl-bot")
			ended := newActiveLease(a, at(time.Minute))
			ended.State, ended.NextRevokeAt = broker.LeaseExpired, ptr(at(time.Minute))
			mustCreateLease(t, s, ended)
			mustCreateLease(t, s, newLease(a, at(0)))
			wantNoDeadline(t, s)
		})

		t.Run("Active", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			mustCreateLease(t, s, newActiveLease(a, at(3*time.Hour)))
			mustCreateLease(t, s, newActiveLease(a, at(2*time.Hour)))
			wantDeadline(t, s, at(2*time.Hour))
		})

		t.Run("Revoking", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			mustCreateLease(t, s, newRevokingLease(a, at(4*time.Hour)))
			mustCreateLease(t, s, newRevokingLease(a, at(5*time.Hour)))
			wantDeadline(t, s, at(4*time.Hour))
		})

		t.Run("EarliestOfBoth", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			mustCreateLease(t, s, newActiveLease(a, at(2*time.Hour)))
			mustCreateLease(t, s, newRevokingLease(a, at(90*time.Minute)))
			wantDeadline(t, s, at(90*time.Minute))

			// An expired lease that is active is still a deadline: the
			// loop must run at once.
			mustCreateLease(t, s, newActiveLease(a, at(-time.Hour)))
			wantDeadline(t, s, at(-time.Hour))
		})
	})

	t.Run("ClaimExpired", func(t *testing.T) {
		t.Run("OK", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			// Created in an order unrelated to the deadlines.
			atNow := mustCreateLease(t, s, newActiveLease(a, now))
			notDue := mustCreateLease(t, s, newActiveLease(a, now.Add(time.Second)))
			first := mustCreateLease(t, s, newActiveLease(a, now.Add(-3*time.Minute)))
			second := mustCreateLease(t, s, newActiveLease(a, now.Add(-time.Minute)))
			// Past deadlines, but not active.
			pending := newLease(a, at(0))
			pending.ExpiresAt = ptr(at(0))
			mustCreateLease(t, s, pending)
			revoking := mustCreateLease(t, s, newRevokingLease(a, at(0)))

			retryAt := now.Add(30 * time.Second)
			got, err := s.ClaimExpiredLeases(t.Context(), now, retryAt, 10, "system:expiry", "window closed")
			if err != nil {
				t.Fatal(err)
			}
			wantLeaseIDs(t, got, first.ID, second.ID, atNow.ID)
			for i, l := range []*broker.Lease{first, second, atNow} {
				want := *l
				want.State, want.EndState, want.NextRevokeAt, want.UpdatedAt = broker.LeaseRevoking, broker.LeaseExpired, &retryAt, now
				wantLease(t, got[i], &want)
				wantLease(t, mustFindLease(t, s, l.ID), &want)
				events := wantEvents(t, s, l.ID,
					&broker.LeaseEvent{LeaseID: l.ID, To: broker.LeaseActive, Actor: "agent:etl-bot", Reason: "requested"},
					&broker.LeaseEvent{LeaseID: l.ID, From: broker.LeaseActive, To: broker.LeaseRevoking, Actor: "system:expiry", Reason: "window closed"})
				if !events[1].At.Equal(now) {
					t.Errorf("expiry event at %s, want %s", fmtTime(&events[1].At), fmtTime(&now))
				}
			}
			wantLease(t, mustFindLease(t, s, notDue.ID), notDue)
			wantLease(t, mustFindLease(t, s, pending.ID), pending)
			wantLease(t, mustFindLease(t, s, revoking.ID), revoking)
		})

		t.Run("Limit", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			var want []string
			for i := range 5 {
				want = append(want, mustCreateLease(t, s, newActiveLease(a, now.Add(-time.Duration(5-i)*time.Minute))).ID)
			}
			for _, batch := range [][]string{want[0:2], want[2:4], want[4:5], nil} {
				got, err := s.ClaimExpiredLeases(t.Context(), now, now.Add(time.Minute), 2, "system:expiry", "window closed")
				if err != nil {
					t.Fatal(err)
				}
				wantLeaseIDs(t, got, batch...)
			}
		})

		t.Run("NotClaimedTwice", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			l := mustCreateLease(t, s, newActiveLease(a, now.Add(-time.Minute)))
			if got, err := s.ClaimExpiredLeases(t.Context(), now, now.Add(time.Minute), 10, "system:expiry", "window closed"); err != nil {
				t.Fatal(err)
			} else {
				wantLeaseIDs(t, got, l.ID)
			}
			// Even long after: a revoking lease belongs to the revocation queue.
			got, err := s.ClaimExpiredLeases(t.Context(), now.Add(time.Hour), now.Add(2*time.Hour), 10, "system:expiry", "window closed")
			if err != nil {
				t.Fatal(err)
			}
			wantLeaseIDs(t, got)
			if n := len(mustFindEvents(t, s, l.ID)); n != 2 {
				t.Errorf("lease has %d events, want 2", n)
			}
		})

		t.Run("Concurrent", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			const n, workers, batch = 60, 4, 7
			for i := range n {
				mustCreateLease(t, s, newActiveLease(a, now.Add(-time.Duration(i)*time.Second)))
			}
			var (
				mu      sync.Mutex
				claimed = map[string]int{}
				wg      sync.WaitGroup
			)
			for range workers {
				wg.Go(func() {
					for {
						got, err := s.ClaimExpiredLeases(t.Context(), now, now.Add(time.Minute), batch, "system:expiry", "window closed")
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						for _, l := range got {
							claimed[l.ID]++
						}
						mu.Unlock()
						if len(got) == 0 {
							return
						}
					}
				})
			}
			wg.Wait()
			if len(claimed) != n {
				t.Errorf("claimed %d distinct leases, want %d", len(claimed), n)
			}
			for id, times := range claimed {
				if times != 1 {
					t.Errorf("lease %s claimed %d times, want once", id, times)
				}
			}
		})
	})

	t.Run("ClaimDueRevocations", func(t *testing.T) {
		t.Run("OK", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			atNow := mustCreateLease(t, s, newRevokingLease(a, now))
			notDue := mustCreateLease(t, s, newRevokingLease(a, now.Add(time.Second)))
			first := mustCreateLease(t, s, newRevokingLease(a, now.Add(-2*time.Minute)))
			second := mustCreateLease(t, s, newRevokingLease(a, now.Add(-time.Minute)))
			// A due time on a lease that is not revoking means nothing.
			active := newActiveLease(a, now.Add(time.Hour))
			active.NextRevokeAt = ptr(at(0))
			mustCreateLease(t, s, active)

			retryAt := now.Add(30 * time.Second)
			got, err := s.ClaimDueRevocations(t.Context(), now, retryAt, 10)
			if err != nil {
				t.Fatal(err)
			}
			wantLeaseIDs(t, got, first.ID, second.ID, atNow.ID)
			for i, l := range []*broker.Lease{first, second, atNow} {
				if g := got[i]; g.State != broker.LeaseRevoking || g.EndState != l.EndState || fmtTime(g.NextRevokeAt) != fmtTime(&retryAt) {
					t.Errorf("claimed:\n\t%s\nwant state revoking, end_state %s, next_revoke_at %s", fmtLease(g), l.EndState, fmtTime(&retryAt))
				}
				if stored := mustFindLease(t, s, l.ID); fmtTime(stored.NextRevokeAt) != fmtTime(&retryAt) || stored.RevokeAttempts != l.RevokeAttempts {
					t.Errorf("stored:\n\t%s\nwant next_revoke_at %s, attempts unchanged", fmtLease(stored), fmtTime(&retryAt))
				}
				// No event: claiming is bookkeeping, not a change of state.
				wantEvents(t, s, l.ID,
					&broker.LeaseEvent{LeaseID: l.ID, To: broker.LeaseRevoking, Actor: "agent:etl-bot", Reason: "requested"})
			}
			wantLease(t, mustFindLease(t, s, notDue.ID), notDue)
			wantLease(t, mustFindLease(t, s, active.ID), active)
		})

		t.Run("RetryAtPreventsReclaim", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			l := mustCreateLease(t, s, newRevokingLease(a, now.Add(-time.Minute)))
			retryAt := now.Add(30 * time.Second)
			for _, step := range []struct {
				now  time.Time
				want []string
			}{
				{now, []string{l.ID}},
				{now, nil},                                 // pushed to retryAt
				{retryAt.Add(-time.Microsecond), nil},      // not yet
				{retryAt, []string{l.ID}},                  // due again
				{retryAt.Add(time.Second), nil},            // pushed again
				{retryAt.Add(time.Minute), []string{l.ID}}, // and due again
			} {
				got, err := s.ClaimDueRevocations(t.Context(), step.now, step.now.Add(30*time.Second), 10)
				if err != nil {
					t.Fatal(err)
				}
				wantLeaseIDs(t, got, step.want...)
			}
		})

		t.Run("Limit", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			var want []string
			for i := range 3 {
				want = append(want, mustCreateLease(t, s, newRevokingLease(a, now.Add(-time.Duration(3-i)*time.Minute))).ID)
			}
			for _, batch := range [][]string{want[0:2], want[2:3], nil} {
				got, err := s.ClaimDueRevocations(t.Context(), now, now.Add(time.Minute), 2)
				if err != nil {
					t.Fatal(err)
				}
				wantLeaseIDs(t, got, batch...)
			}
		})
	})

	t.Run("CountByState", func(t *testing.T) {
		t.Run("Empty", func(t *testing.T) {
			s := open(t)
			got, err := s.CountLeasesByState(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 0 {
				t.Errorf("counts = %v, want none", got)
			}
		})

		t.Run("OK", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			for range 3 {
				mustCreateLease(t, s, newActiveLease(a, at(time.Hour)))
			}
			for range 2 {
				mustCreateLease(t, s, newRevokingLease(a, at(time.Hour)))
			}
			mustCreateLease(t, s, newLease(a, at(0)))
			got, err := s.CountLeasesByState(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			want := map[broker.LeaseState]int{broker.LeaseActive: 3, broker.LeaseRevoking: 2, broker.LeasePending: 1}
			if !maps.Equal(got, want) {
				t.Errorf("counts = %v, want %v", got, want)
			}
		})
	})

	t.Run("CountByAgent", func(t *testing.T) {
		s := open(t)
		a := mustCreateAgent(t, s, "etl-bot")
		b := mustCreateAgent(t, s, "ops-bot")
		idle := mustCreateAgent(t, s, "idle-bot")
		mustCreateLease(t, s, newActiveLease(a, at(time.Hour)))
		mustCreateLease(t, s, newRevokingLease(a, at(time.Hour)))
		released := newLease(a, at(0))
		released.State, released.EndedAt = broker.LeaseReleased, ptr(at(time.Minute))
		mustCreateLease(t, s, released)
		mustCreateLease(t, s, newLease(b, at(0))) // pending: not live
		got, err := s.CountAgentLeases(t.Context(), []string{a.ID, b.ID, idle.ID, newID()})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]broker.AgentLeaseCount{a.ID: {Total: 3, Live: 2}, b.ID: {Total: 1, Live: 0}}
		if !maps.Equal(got, want) {
			t.Errorf("counts = %v, want %v", got, want)
		}
		if got, err := s.CountAgentLeases(t.Context(), nil); err != nil || len(got) != 0 {
			t.Errorf("counts of no agents = %v, %v; want none", got, err)
		}
	})
}

// wantNoDeadline fails tb if the store reports a deadline.
func wantNoDeadline(tb testing.TB, s Store) {
	tb.Helper()
	next, ok, err := s.NextLeaseDeadline(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	if ok {
		tb.Fatalf("NextLeaseDeadline = %s, true; want none", fmtTime(&next))
	}
}

// wantDeadline fails tb unless the store's next deadline is want.
func wantDeadline(tb testing.TB, s Store, want time.Time) {
	tb.Helper()
	got, ok, err := s.NextLeaseDeadline(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	if !ok || !got.Equal(want) {
		tb.Fatalf("NextLeaseDeadline = %s, %t; want %s, true", fmtTime(&got), ok, fmtTime(&want))
	}
}

// mustFindEvents returns the lease's history.
func mustFindEvents(tb testing.TB, s Store, leaseID string) []*broker.LeaseEvent {
	tb.Helper()
	events, err := s.FindLeaseEvents(tb.Context(), leaseID)
	if err != nil {
		tb.Fatal(err)
	}
	return events
}
