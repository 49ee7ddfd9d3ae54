package storetest

import (
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
)

func testEndRevocations(t *testing.T, open func(tb testing.TB) Store) {
	t.Run("OK", func(t *testing.T) {
		s := open(t)
		a := mustCreateAgent(t, s, "etl-bot")
		r1 := mustCreateLease(t, s, newRevokingLease(a, at(time.Hour)))
		r2 := newRevokingLease(a, at(time.Hour))
		r2.EndState = broker.LeaseExpired
		mustCreateLease(t, s, r2)
		active := mustCreateLease(t, s, newActiveLease(a, at(time.Hour)))

		ended, err := s.EndRevocations(t.Context(), []broker.RevocationDone{
			{LeaseID: r1.ID, At: at(61 * time.Minute)},
			{LeaseID: r2.ID, At: at(62 * time.Minute)},
			{LeaseID: active.ID, At: at(63 * time.Minute)}, // not revoking: skipped
			{LeaseID: newID(), At: at(64 * time.Minute)},   // unknown: skipped
		}, "system:expiry", "revocation confirmed by Vault")
		if err != nil {
			t.Fatal(err)
		}
		if len(ended) != 2 {
			t.Fatalf("ended %d leases, want 2", len(ended))
		}
		for _, c := range []struct {
			id    string
			state broker.LeaseState
			at    time.Time
		}{{r1.ID, broker.LeaseReleased, at(61 * time.Minute)}, {r2.ID, broker.LeaseExpired, at(62 * time.Minute)}} {
			got := mustFindLease(t, s, c.id)
			if got.State != c.state || got.EndedAt == nil || !got.EndedAt.Equal(c.at) || got.NextRevokeAt != nil || got.RevokeError != "" {
				t.Errorf("lease after EndRevocations:\n\t%s\nwant %s ended at %s with the queue fields cleared", fmtLease(got), c.state, fmtTime(&c.at))
			}
			evs, err := s.FindLeaseEvents(t.Context(), c.id)
			if err != nil {
				t.Fatal(err)
			}
			last := evs[len(evs)-1]
			if last.From != broker.LeaseRevoking || last.To != c.state || last.Actor != "system:expiry" || last.Reason != "revocation confirmed by Vault" {
				t.Errorf("last event = %s, want revoking → %s by system:expiry", fmtEvent(last), c.state)
			}
		}
		if got := mustFindLease(t, s, active.ID); got.State != broker.LeaseActive {
			t.Errorf("active lease became %s", got.State)
		}
	})
	t.Run("Empty", func(t *testing.T) {
		s := open(t)
		ended, err := s.EndRevocations(t.Context(), nil, "system:expiry", "none")
		if err != nil || len(ended) != 0 {
			t.Fatalf("EndRevocations(nil) = %d, %v", len(ended), err)
		}
	})
}
