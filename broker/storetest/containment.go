package storetest

import (
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
)

// testContainments checks ContainAgent: one transaction marks every live
// lease of the agent (of one role, when asked), changes the agent, and the
// progress counts what the queue has left.
func testContainments(t *testing.T, open func(tb testing.TB) Store) {
	t.Run("EveryLiveState", func(t *testing.T) {
		s := open(t)
		a, other := mustCreateAgent(t, s, "alpha"), mustCreateAgent(t, s, "beta")
		pending := mustCreateLease(t, s, newLease(a, at(time.Minute)))
		approved := newLease(a, at(2*time.Minute))
		approved.State = broker.LeaseApproved
		mustCreateLease(t, s, approved)
		issuing := newLease(a, at(3*time.Minute))
		issuing.State = broker.LeaseIssuing
		mustCreateLease(t, s, issuing)
		active := mustCreateLease(t, s, newActiveLease(a, time.Now().Add(time.Hour)))
		revoking := mustCreateLease(t, s, newRevokingLease(a, time.Now().Add(time.Hour)))
		ended := newActiveLease(a, at(time.Hour))
		ended.State, ended.EndedAt = broker.LeaseExpired, ptr(at(time.Hour))
		mustCreateLease(t, s, ended)
		othersActive := mustCreateLease(t, s, newActiveLease(other, time.Now().Add(time.Hour)))

		grace := time.Now().Add(time.Minute).UTC().Truncate(time.Microsecond)
		c, err := s.ContainAgent(t.Context(), &broker.Containment{
			ID: newID(), AgentID: a.ID, AgentState: broker.AgentSuspended, Actor: "admin:sec", Reason: "incident 1",
		}, broker.ContainOptions{
			AgentUpdate:    &broker.AgentUpdate{State: ptr(broker.AgentSuspended)},
			MintGraceUntil: grace,
			MintingReason:  "incident 1, minted credential withheld",
		})
		if err != nil {
			t.Fatal(err)
		}
		// The events carry the caller's actor and reasons: the minting
		// reason for the lease that was issuing, the containment's for the
		// others.
		for _, w := range []struct {
			l      *broker.Lease
			reason string
		}{{issuing, "incident 1, minted credential withheld"}, {active, "incident 1"}, {pending, "incident 1"}} {
			events, err := s.FindLeaseEvents(t.Context(), w.l.ID)
			if err != nil {
				t.Fatal(err)
			}
			if e := events[len(events)-1]; e.Actor != "admin:sec" || e.Reason != w.reason {
				t.Errorf("lease %s: last event %s; want by admin:sec for %q", w.l.Task, fmtEvent(e), w.reason)
			}
		}
		if c.Agent != "alpha" || c.CreatedAt.IsZero() {
			t.Fatalf("containment = %+v, want agent name and creation time", c)
		}
		// The lease already ending had a failed attempt: it counts as failing.
		if got, want := c.Progress, (broker.ContainmentProgress{Total: 5, Ended: 2, Revoking: 3, Failing: 1}); got.Total != want.Total || got.Ended != want.Ended || got.Revoking != want.Revoking || got.Failing != want.Failing {
			t.Fatalf("progress = %+v, want %+v", got, want)
		}
		if got := mustFindAgent(t, s, "alpha"); got.State != broker.AgentSuspended {
			t.Fatalf("agent = %s, want suspended", got.State)
		}
		for _, w := range []struct {
			l            *broker.Lease
			state, end   broker.LeaseState
			due          bool // next_revoke_at at or before now
			graceDue     bool // next_revoke_at at the grace
			containmentd bool
		}{
			{pending, broker.LeaseRevoked, "", false, false, true},
			{approved, broker.LeaseRevoked, "", false, false, true},
			{issuing, broker.LeaseRevoking, broker.LeaseRevoked, false, true, true},
			{active, broker.LeaseRevoking, broker.LeaseRevoked, true, false, true},
			{revoking, broker.LeaseRevoking, broker.LeaseReleased, true, false, true},
			{ended, broker.LeaseExpired, "", false, false, false},
			{othersActive, broker.LeaseActive, "", false, false, false},
		} {
			got := mustFindLease(t, s, w.l.ID)
			if got.State != w.state || got.EndState != w.end {
				t.Errorf("lease %s: %s (end %q), want %s (end %q)", w.l.Task, got.State, got.EndState, w.state, w.end)
			}
			if (got.ContainmentID == c.ID) != w.containmentd {
				t.Errorf("lease %s: containment %q, want marked %v", w.l.Task, got.ContainmentID, w.containmentd)
			}
			if w.due && (got.NextRevokeAt == nil || got.NextRevokeAt.After(time.Now())) {
				t.Errorf("lease %s: next attempt %v, want due now", w.l.ID, got.NextRevokeAt)
			}
			if w.graceDue && (got.NextRevokeAt == nil || !got.NextRevokeAt.Equal(grace)) {
				t.Errorf("issuing lease: next attempt %v, want the grace %v", got.NextRevokeAt, grace)
			}
			if w.state == broker.LeaseRevoked && got.EndedAt == nil {
				t.Errorf("lease %s ended without an end time", w.l.ID)
			}
		}
		wantEvents(t, s, active.ID,
			&broker.LeaseEvent{LeaseID: active.ID, To: broker.LeaseActive, Actor: "agent:alpha", Reason: "requested"},
			&broker.LeaseEvent{LeaseID: active.ID, From: broker.LeaseActive, To: broker.LeaseRevoking, Actor: "admin:sec", Reason: "incident 1"})

		marked, _, err := s.FindLeases(t.Context(), broker.LeaseFilter{ContainmentID: &c.ID})
		if err != nil || len(marked) != 5 {
			t.Fatalf("leases of the containment = %d, %v; want 5", len(marked), err)
		}

		// The queue confirms two; one fails.
		if _, err := s.EndRevocations(t.Context(), []broker.RevocationDone{{LeaseID: active.ID, At: time.Now()}, {LeaseID: revoking.ID, At: time.Now()}},
			"system:revocation-queue", "revocation confirmed by Vault"); err != nil {
			t.Fatal(err)
		}
		next := time.Now().Add(time.Minute)
		if _, err := s.UpdateLease(t.Context(), issuing.ID, broker.LeaseUpdate{
			From: []broker.LeaseState{broker.LeaseRevoking}, RevokeAttempts: ptr(1), NextRevokeAt: &next,
			RevokeError: ptr("Vault is unreachable"), Actor: "system:revocation-queue", Reason: "attempt 1 failed",
		}); err != nil {
			t.Fatal(err)
		}
		got, err := s.FindContainmentByID(t.Context(), c.ID)
		if err != nil {
			t.Fatal(err)
		}
		p := got.Progress
		if p.Total != 5 || p.Ended != 4 || p.Revoking != 1 || p.Failing != 1 || p.Done() ||
			len(p.Errors) != 1 || p.Errors[0] != (broker.ContainmentError{Error: "Vault is unreachable", Leases: 1}) || p.NextAttemptAt == nil {
			t.Fatalf("progress = %+v", p)
		}
		list, err := s.FindContainments(t.Context(), a.ID, 0)
		if err != nil || len(list) != 1 || list[0].ID != c.ID || list[0].Reason != "incident 1" || list[0].AgentState != broker.AgentSuspended {
			t.Fatalf("containments = %+v, %v", list, err)
		}
		if list, _ := s.FindContainments(t.Context(), other.ID, 0); len(list) != 0 {
			t.Fatalf("the other agent has containments: %+v", list)
		}
	})

	t.Run("OneRole", func(t *testing.T) {
		s := open(t)
		a := mustCreateAgent(t, s, "alpha")
		ro := mustCreateLease(t, s, newActiveLease(a, time.Now().Add(time.Hour)))
		adm := newActiveLease(a, time.Now().Add(time.Hour))
		adm.Role = "db-admin"
		mustCreateLease(t, s, adm)
		c, err := s.ContainAgent(t.Context(), &broker.Containment{
			ID: newID(), AgentID: a.ID, Role: "db-admin", Actor: "admin:review", Reason: "access review removed db-admin",
		}, broker.ContainOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if c.Progress.Total != 1 || mustFindLease(t, s, adm.ID).State != broker.LeaseRevoking || mustFindLease(t, s, ro.ID).State != broker.LeaseActive {
			t.Fatalf("role containment marked %d; want only the db-admin lease", c.Progress.Total)
		}
		if got := mustFindAgent(t, s, "alpha"); got.State != broker.AgentActive {
			t.Fatalf("agent = %s, want its state left alone", got.State)
		}
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		s := open(t)
		_, err := s.ContainAgent(t.Context(), &broker.Containment{ID: newID(), AgentID: newID(), Actor: "admin:sec", Reason: "x"}, broker.ContainOptions{})
		wantError(t, err, broker.ENOTFOUND, "Agent not found.")
		_, err = s.FindContainmentByID(t.Context(), newID())
		wantError(t, err, broker.ENOTFOUND, "Containment not found.")
	})

	// The activation guard: a lease of an agent that is not active does not
	// move, whatever the From guard says.
	t.Run("AgentActiveGuard", func(t *testing.T) {
		s := open(t)
		a := mustCreateAgent(t, s, "alpha")
		l := newLease(a, at(time.Minute))
		l.State = broker.LeaseIssuing
		mustCreateLease(t, s, l)
		if _, err := s.UpdateAgent(t.Context(), a.ID, broker.AgentUpdate{State: ptr(broker.AgentSuspended)}); err != nil {
			t.Fatal(err)
		}
		_, err := s.UpdateLease(t.Context(), l.ID, broker.LeaseUpdate{
			From: []broker.LeaseState{broker.LeaseIssuing}, AgentActive: true, State: ptr(broker.LeaseActive), Actor: "agent:alpha", Reason: "minted",
		})
		wantError(t, err, broker.EFORBIDDEN, "Agent alpha is suspended.")
		if got := mustFindLease(t, s, l.ID); got.State != broker.LeaseIssuing {
			t.Fatalf("lease = %s, want still issuing", got.State)
		}
	})
}
