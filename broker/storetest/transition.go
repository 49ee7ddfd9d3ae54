package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
)

// testLeaseTransitions tries every (from, to) pair of lease states: the
// store applies the pairs the state machine (broker.CheckLeaseTransition)
// allows and refuses every other one with ErrLeaseTransition, leaving the
// lease and its history as they were. An update that names no expected
// state is refused whatever it changes.
func testLeaseTransitions(t *testing.T, open func(tb testing.TB) Store) {
	s := open(t)
	a := mustCreateAgent(t, s, "etl-bot")
	n := 0
	for _, from := range broker.LeaseStates {
		for _, to := range broker.LeaseStates {
			n++
			name := fmt.Sprintf("%s→%s", from, to)
			l := newLease(a, at(time.Duration(n)*time.Second))
			l.State = from
			mustCreateLease(t, s, l)
			upd := broker.LeaseUpdate{
				From:   []broker.LeaseState{from},
				State:  ptr(to),
				Actor:  "system:conformance",
				Reason: name,
			}
			if broker.CheckLeaseTransition(from, to) == nil {
				got, err := s.UpdateLease(t.Context(), l.ID, upd)
				if err != nil {
					t.Errorf("%s: allowed, but UpdateLease = %v", name, err)
					continue
				}
				if got.State != to || mustFindLease(t, s, l.ID).State != to {
					t.Errorf("%s: allowed, but the lease is %s", name, got.State)
				}
				continue
			}
			// Refused with a base (the store need not read the lease) and
			// without one.
			for _, base := range []*broker.Lease{l, nil} {
				upd.Base = base
				got, err := s.UpdateLease(t.Context(), l.ID, upd)
				if !errors.Is(err, broker.ErrLeaseTransition) || broker.ErrorCode(err) != broker.ETRANSITION {
					t.Errorf("%s (base %t): UpdateLease = %v, %v; want ErrLeaseTransition (%s)", name, base != nil, got, err, broker.ETRANSITION)
				}
			}
			if got := mustFindLease(t, s, l.ID); got.State != from || got.Version != l.Version {
				t.Errorf("%s: refused, but the lease is now %s (version %d, was %d)", name, got.State, got.Version, l.Version)
			}
			wantEventCount(t, s, l.ID, 1, name)
		}
	}

	t.Run("ErrUnguarded", func(t *testing.T) {
		l := mustCreateLease(t, s, newLease(a, at(time.Hour)))
		for _, upd := range []broker.LeaseUpdate{
			{State: ptr(broker.LeaseApproved), Actor: "approver:dana@example.com"},
			{Decision: ptr("note"), Actor: "admin:ada"},
			{State: ptr(broker.LeaseApproved), Actor: "approver:dana@example.com", Base: l},
		} {
			if _, err := s.UpdateLease(t.Context(), l.ID, upd); !errors.Is(err, broker.ErrUnguardedLeaseUpdate) {
				t.Errorf("UpdateLease without From = %v; want ErrUnguardedLeaseUpdate", err)
			}
		}
		if got := mustFindLease(t, s, l.ID); got.State != broker.LeasePending || got.Decision != l.Decision {
			t.Errorf("unguarded updates changed the lease: %s, %q", got.State, got.Decision)
		}
		wantEventCount(t, s, l.ID, 1, "unguarded")
	})

	t.Run("ErrConflict", func(t *testing.T) {
		// Expecting another state than the lease's is a race lost, not a
		// transition the machine refuses.
		l := mustCreateLease(t, s, newLease(a, at(2*time.Hour)))
		_, err := s.UpdateLease(t.Context(), l.ID, broker.LeaseUpdate{
			From: []broker.LeaseState{broker.LeaseApproved}, State: ptr(broker.LeaseIssuing), Actor: "agent:etl-bot",
		})
		if broker.ErrorCode(err) != broker.ECONFLICT || errors.Is(err, broker.ErrLeaseTransition) {
			t.Errorf("UpdateLease from the wrong state = %v; want ECONFLICT", err)
		}
	})
}

// wantEventCount fails unless the lease has n events.
func wantEventCount(tb testing.TB, s Store, leaseID string, n int, name string) {
	tb.Helper()
	events, err := s.FindLeaseEvents(tb.Context(), leaseID)
	if err != nil {
		tb.Fatal(err)
	}
	if len(events) != n {
		tb.Errorf("%s: %d events; want %d", name, len(events), n)
	}
}

// testCallerActors checks that the bulk lease moves record the actor and
// the reasons their caller passes: the store invents no history.
func testCallerActors(t *testing.T, open func(tb testing.TB) Store) {
	s := open(t)
	a := mustCreateAgent(t, s, "etl-bot")
	active := mustCreateLease(t, s, newActiveLease(a, at(time.Hour)))
	pending := newLease(a, at(time.Minute))
	pending.DecideBy = ptr(at(time.Hour))
	mustCreateLease(t, s, pending)
	approved := newLease(a, at(2*time.Minute))
	approved.State, approved.ActivateBy = broker.LeaseApproved, ptr(at(time.Hour))
	mustCreateLease(t, s, approved)

	if got, err := s.ClaimExpiredLeases(t.Context(), at(2*time.Hour), at(3*time.Hour), 10, "system:sweeper", "closed by the sweeper"); err != nil || len(got) != 1 {
		t.Fatalf("ClaimExpiredLeases = %d leases, %v", len(got), err)
	}
	reasons := broker.OverdueReasons{TimedOut: "nobody answered", Lapsed: "never used"}
	if got, err := s.EndOverdueLeases(t.Context(), at(2*time.Hour), 10, "system:clock", reasons); err != nil || len(got) != 2 {
		t.Fatalf("EndOverdueLeases = %d leases, %v", len(got), err)
	}
	for _, tt := range []struct {
		l             *broker.Lease
		to            broker.LeaseState
		actor, reason string
	}{
		{active, broker.LeaseRevoking, "system:sweeper", "closed by the sweeper"},
		{pending, broker.LeaseTimedOut, "system:clock", "nobody answered"},
		{approved, broker.LeaseLapsed, "system:clock", "never used"},
	} {
		events, err := s.FindLeaseEvents(t.Context(), tt.l.ID)
		if err != nil {
			t.Fatal(err)
		}
		last := events[len(events)-1]
		if last.From != tt.l.State || last.To != tt.to || last.Actor != tt.actor || last.Reason != tt.reason {
			t.Errorf("last event = %s; want %s → %s by %s for %q", fmtEvent(last), tt.l.State, tt.to, tt.actor, tt.reason)
		}
	}
}
