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
