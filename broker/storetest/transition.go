package storetest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
)

// transitionActors is one realistic actor of each kind that may move a
// lease, as lease history records it, and the state machine's kind for it
// (broker.ActorKind.TransitionActors).
var transitionActors = []struct {
	actor string
	kind  broker.TransitionActors
}{
	{broker.Actor{Kind: broker.ActorAgent, Name: "etl-bot"}.String(), broker.ByAgent},
	{broker.Actor{Kind: broker.ActorApprover, Name: "dana@example.com"}.String(), broker.ByApprover},
	{broker.SystemActor(broker.JobExpiry).String(), broker.BySystem},
	{broker.GovernanceActor().String(), broker.BySecurity},
}

// testLeaseTransitions tries every (from, to) pair of lease states: the
// store applies the pairs the state machine (broker.CheckLeaseTransition)
// allows, by an actor of a kind it allows them to, and refuses every other
// pair, and every allowed pair by an actor of any other kind (a reviewer
// and an actor that names no kind included), with ErrLeaseTransition,
// leaving the lease and its history as they were. An update that names no
// expected state is refused whatever it changes.
func testLeaseTransitions(t *testing.T, open func(tb testing.TB) Store) {
	s := open(t)
	a := mustCreateAgent(t, s, "etl-bot")
	n := 0
	newAt := func(from broker.LeaseState) *broker.Lease {
		n++
		l := newLease(a, at(time.Duration(n)*time.Second))
		l.State = from
		return mustCreateLease(t, s, l)
	}
	// wantRefused checks that upd is refused with ErrLeaseTransition, with
	// a base (the store need not read the lease) and without one, and
	// leaves l and its history as they were.
	wantRefused := func(name string, l *broker.Lease, upd broker.LeaseUpdate) {
		t.Helper()
		for _, base := range []*broker.Lease{l, nil} {
			upd.Base = base
			got, err := s.UpdateLease(t.Context(), l.ID, upd)
			if !errors.Is(err, broker.ErrLeaseTransition) || broker.ErrorCode(err) != broker.ETRANSITION {
				t.Errorf("%s (base %t): UpdateLease = %v, %v; want ErrLeaseTransition (%s)", name, base != nil, got, err, broker.ETRANSITION)
			}
		}
		if got := mustFindLease(t, s, l.ID); got.State != l.State || got.Version != l.Version || got.Decision != l.Decision {
			t.Errorf("%s: refused, but the lease is now %s (version %d, was %s, version %d)", name, got.State, got.Version, l.State, l.Version)
		}
		wantEventCount(t, s, l.ID, 1, name)
	}
	others := []string{
		broker.Actor{Kind: broker.ActorReviewer, Name: "rita"}.String(),
		"",
	}
	for _, from := range broker.LeaseStates {
		for _, to := range broker.LeaseStates {
			name := fmt.Sprintf("%s→%s", from, to)
			allowed := broker.LeaseTransitionActors(from, to)
			if broker.CheckLeaseTransition(from, to) != nil {
				wantRefused(name, newAt(from), broker.LeaseUpdate{
					From: []broker.LeaseState{from}, State: ptr(to), Actor: transitionActors[2].actor, Reason: name,
				})
				continue
			}
			applied := false
			for _, ta := range transitionActors {
				upd := broker.LeaseUpdate{
					From: []broker.LeaseState{from}, State: ptr(to), Decision: ptr("moved by " + ta.actor), Actor: ta.actor, Reason: name,
				}
				name := name + " by " + ta.actor
				l := newAt(from)
				if allowed&ta.kind == 0 {
					var e *broker.Error
					if _, err := s.UpdateLease(t.Context(), l.ID, upd); !errors.As(err, &e) ||
						!strings.Contains(e.Message, string(from)+" → "+string(to)) || !strings.Contains(e.Message, string(broker.LeaseActorKind(ta.actor))) {
						t.Errorf("%s: refusal %v does not name the move and the actor's kind", name, err)
					}
					wantRefused(name, l, upd)
					continue
				}
				got, err := s.UpdateLease(t.Context(), l.ID, upd)
				if err != nil {
					t.Errorf("%s: allowed, but UpdateLease = %v", name, err)
					continue
				}
				applied = true
				if got.State != to || mustFindLease(t, s, l.ID).State != to {
					t.Errorf("%s: allowed, but the lease is %s", name, got.State)
				}
				wantEventCount(t, s, l.ID, 2, name)
			}
			if !applied {
				t.Errorf("%s: allowed to %s, but no actor of the table applied it", name, allowed)
			}
			for _, actor := range others {
				wantRefused(fmt.Sprintf("%s by %q", name, actor), newAt(from), broker.LeaseUpdate{
					From: []broker.LeaseState{from}, State: ptr(to), Decision: ptr("moved"), Actor: actor, Reason: name,
				})
			}
		}
	}

	t.Run("BulkActors", func(t *testing.T) {
		// The bulk moves check their actor too: the expiry claim, the
		// approval deadlines and containment refuse an actor of a kind the
		// state machine does not allow, and change nothing.
		b := mustCreateAgent(t, s, "bulk-bot")
		active, pending, approved := mustCreateOverdueLeases(t, s, b)
		agent := broker.Actor{Kind: broker.ActorAgent, Name: b.Name}.String()
		approver := broker.Actor{Kind: broker.ActorApprover, Name: "dana@example.com"}.String()
		wantTransitionErr := func(what string, err error) {
			t.Helper()
			if !errors.Is(err, broker.ErrLeaseTransition) || broker.ErrorCode(err) != broker.ETRANSITION {
				t.Errorf("%s = %v; want ErrLeaseTransition (%s)", what, err, broker.ETRANSITION)
			}
		}
		_, err := s.ClaimExpiredLeases(t.Context(), at(2*time.Hour), at(3*time.Hour), 10, approver, "closed")
		wantTransitionErr("ClaimExpiredLeases by an approver", err)
		_, err = s.EndOverdueLeases(t.Context(), at(2*time.Hour), 10, agent, broker.OverdueReasons{TimedOut: "late", Lapsed: "unused"})
		wantTransitionErr("EndOverdueLeases by an agent", err)
		for _, actor := range []string{agent, broker.SystemActor(broker.JobReconciler).String(), approver} {
			_, err = s.ContainAgent(t.Context(), &broker.Containment{ID: newID(), AgentID: b.ID, Actor: actor, Reason: "contained"}, broker.ContainOptions{})
			wantTransitionErr("ContainAgent by "+actor, err)
		}
		for _, l := range []*broker.Lease{active, pending, approved} {
			if got := mustFindLease(t, s, l.ID); got.State != l.State || got.Version != l.Version {
				t.Errorf("refused bulk moves changed lease %s: %s (version %d), was %s (version %d)", l.ID, got.State, got.Version, l.State, l.Version)
			}
			wantEventCount(t, s, l.ID, 1, "bulk "+string(l.State))
		}
		if cs, err := s.FindContainments(t.Context(), b.ID, 10); err != nil || len(cs) != 0 {
			t.Errorf("refused containments left %d containments (%v)", len(cs), err)
		}
	})

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
	active, pending, approved := mustCreateOverdueLeases(t, s, a)

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

// mustCreateOverdueLeases creates three leases of agent a that the bulk
// moves take at 2h: one active that expires at 1h, one pending to be
// decided by 1h and one approved to be activated by 1h.
func mustCreateOverdueLeases(tb testing.TB, s Store, a *broker.Agent) (active, pending, approved *broker.Lease) {
	tb.Helper()
	active = mustCreateLease(tb, s, newActiveLease(a, at(time.Hour)))
	pending = newLease(a, at(time.Minute))
	pending.DecideBy = ptr(at(time.Hour))
	mustCreateLease(tb, s, pending)
	approved = newLease(a, at(2*time.Minute))
	approved.State, approved.ActivateBy = broker.LeaseApproved, ptr(at(time.Hour))
	mustCreateLease(tb, s, approved)
	return active, pending, approved
}
