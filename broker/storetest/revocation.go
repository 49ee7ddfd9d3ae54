package storetest

import (
	"fmt"
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

func testLiveRoles(t *testing.T, open func(tb testing.TB) Store) {
	s := open(t)
	a := mustCreateAgent(t, s, "etl-bot")
	other := mustCreateAgent(t, s, "ops-bot")
	if got, err := s.LiveRoles(t.Context(), a.ID, ""); err != nil || len(got) != 0 {
		t.Fatalf("LiveRoles with no leases = %v, %v; want none", got, err)
	}
	active := newActiveLease(a, at(time.Hour))
	active.Role = "db-writer"
	mustCreateLease(t, s, active)
	active2 := newActiveLease(a, at(time.Hour))
	active2.Role = "db-writer"
	mustCreateLease(t, s, active2)
	revoking := newRevokingLease(a, at(time.Hour))
	revoking.Role = "audit-reader"
	mustCreateLease(t, s, revoking)
	pending := newLease(a, at(0)) // not live
	pending.Role = "pending-role"
	mustCreateLease(t, s, pending)
	ended := newActiveLease(a, at(time.Hour))
	ended.Role, ended.State = "ended-role", broker.LeaseExpired
	mustCreateLease(t, s, ended)
	theirs := newActiveLease(other, at(time.Hour))
	theirs.Role = "their-role"
	mustCreateLease(t, s, theirs)

	got, err := s.LiveRoles(t.Context(), a.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"audit-reader", "db-writer"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("LiveRoles = %v, want %v", got, want)
	}
	got, err = s.LiveRoles(t.Context(), a.ID, revoking.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"db-writer"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("LiveRoles except the revoking lease = %v, want %v", got, want)
	}
}

func testCountRefusals(t *testing.T, open func(tb testing.TB) Store) {
	s := open(t)
	a := mustCreateAgent(t, s, "etl-bot")
	other := mustCreateAgent(t, s, "ops-bot")
	if n, err := s.CountRefusals(t.Context(), a.ID, at(0)); err != nil || n != 0 {
		t.Fatalf("CountRefusals with no leases = %d, %v; want 0", n, err)
	}
	for i, st := range []broker.LeaseState{broker.LeaseDenied, broker.LeaseRejected, broker.LeaseDenied, broker.LeaseExpired, broker.LeasePending} {
		l := newLease(a, at(time.Duration(i)*time.Minute))
		l.State = st
		mustCreateLease(t, s, l)
	}
	old := newLease(a, at(-time.Minute)) // before since
	old.State = broker.LeaseDenied
	mustCreateLease(t, s, old)
	theirs := newLease(other, at(time.Minute))
	theirs.State = broker.LeaseDenied
	mustCreateLease(t, s, theirs)
	// A pending lease an approver rejects later counts too.
	rejected := mustCreateLease(t, s, newLease(a, at(5*time.Minute)))
	if _, err := s.UpdateLease(t.Context(), rejected.ID, broker.LeaseUpdate{From: []broker.LeaseState{broker.LeasePending}, State: ptr(broker.LeaseRejected), Actor: "approver:ana@example.com", Reason: "no"}); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		since time.Time
		want  int
	}{{at(0), 4}, {at(-time.Hour), 5}, {at(time.Minute), 3}, {at(time.Hour), 0}} {
		if n, err := s.CountRefusals(t.Context(), a.ID, tt.since); err != nil || n != tt.want {
			t.Errorf("CountRefusals(since %v) = %d, %v; want %d", tt.since.Sub(at(0)), n, err, tt.want)
		}
	}
}

func testTaskRoles(t *testing.T, open func(tb testing.TB) Store) {
	s := open(t)
	a := mustCreateAgent(t, s, "etl-bot")
	other := mustCreateAgent(t, s, "ops-bot")
	if got, err := s.TaskRoles(t.Context(), a.ID, "incident 7"); err != nil || len(got) != 0 {
		t.Fatalf("TaskRoles with no leases = %v, %v; want none", got, err)
	}
	add := func(agent *broker.Agent, role, task string, state broker.LeaseState) {
		l := newActiveLease(agent, at(time.Hour))
		l.Role, l.Task, l.State = role, task, state
		mustCreateLease(t, s, l)
	}
	add(a, "db-writer", "incident 7", broker.LeaseActive)
	add(a, "db-writer", "incident 7", broker.LeaseActive) // a repeat
	add(a, "audit-reader", "incident 7", broker.LeasePending)
	add(a, "vault-token", "incident 7", broker.LeaseApproved)
	add(a, "ended-role", "incident 7", broker.LeaseExpired)     // ended
	add(a, "revoking-role", "incident 7", broker.LeaseRevoking) // on its way out
	add(a, "other-task", "incident 8", broker.LeaseActive)      // another task
	add(a, "prefix-task", "incident 77", broker.LeaseActive)    // not a prefix match
	add(other, "their-role", "incident 7", broker.LeaseActive)  // another agent
	got, err := s.TaskRoles(t.Context(), a.ID, "incident 7")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"audit-reader", "db-writer", "vault-token"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("TaskRoles = %v, want %v", got, want)
	}
}
