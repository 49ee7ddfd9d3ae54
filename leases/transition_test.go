package leases_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
)

// TestTransitionActors drives leases through every path the service
// offers (grant, release, revoke, expiry, approval, denial by an approver,
// cancel, containment) and checks every recorded move against the state
// machine: the table allows it, and for the kind of actor the history
// names.
func TestTransitionActors(t *testing.T) {
	f := newFixture(t)
	ctx := f.agent(t, "etl", map[string]string{"team": "data"})
	var ids []string
	request := func(role, task string) *broker.Lease {
		t.Helper()
		l, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: role, Task: task})
		if err != nil {
			t.Fatalf("request %s: %v", task, err)
		}
		ids = append(ids, l.ID)
		return l
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	released := request("db-readonly", "released")
	_, err := f.svc.ReleaseLease(ctx, released.ID)
	must("release", err)
	releasedByAdmin := request("db-readonly", "released by an admin")
	_, err = f.svc.ReleaseLease(adminCtx(), releasedByAdmin.ID)
	must("release by an admin", err)
	request("db-readonly", "task released by an admin")
	_, err = f.svc.ReleaseTask(adminCtx(), "task released by an admin")
	must("release a task by an admin", err)
	revoked := request("db-readonly", "revoked")
	_, err = f.svc.RevokeLease(adminCtx(), revoked.ID, "incident")
	must("revoke", err)
	request("db-readonly", "expired")
	now := time.Now()
	f.svc.Now = func() time.Time { return now.Add(2 * time.Hour) }
	must("expire", f.svc.ExpireDue(context.Background()))
	f.svc.Now = time.Now

	f.svc.Decider = approvalsDecider{}
	verdict := func(l *broker.Lease, v broker.Verdict) {
		t.Helper()
		_, err := f.svc.RecordVerdict(context.Background(), l, nil, &broker.Approval{
			LeaseID: l.ID, Approver: "dana@example.com", Verdict: v, Digest: "d", Via: "api", At: time.Now().UTC(),
		})
		must("record verdict", err)
	}
	approved := request("db-readonly", "approved")
	verdict(approved, broker.VerdictApprove)
	_, _, err = f.svc.ActivateLease(ctx, approved.ID)
	must("activate", err)
	verdict(request("db-readonly", "rejected"), broker.VerdictDeny)
	canceled := request("db-readonly", "canceled")
	_, err = f.svc.CancelLease(ctx, canceled.ID)
	must("cancel", err)
	request("db-readonly", "contained pending")
	_, err = f.svc.ContainAgent(adminCtx(), broker.ContainRequest{AgentID: agentID(t, ctx), Reason: "incident"})
	must("contain", err)

	moves := map[string]bool{}
	for _, id := range ids {
		events, err := f.db.FindLeaseEvents(context.Background(), id)
		must("find events", err)
		for _, e := range events[1:] { // the first is the lease's creation
			kind, _, _ := strings.Cut(e.Actor, ":")
			allowed := broker.LeaseTransitionActors(e.From, e.To)
			if allowed&broker.ActorKind(kind).TransitionActors() == 0 {
				t.Errorf("lease %s: %s → %s by %s (%s); the state machine allows it to %s", id, e.From, e.To, e.Actor, e.Reason, allowed)
			}
			moves[string(e.From)+"→"+string(e.To)] = true
		}
	}
	// The paths above make these moves; a path that stops making one
	// no longer tests it.
	for _, m := range []string{"issuing→active", "active→revoking", "revoking→released", "revoking→revoked", "revoking→expired",
		"pending→approved", "approved→issuing", "pending→rejected", "pending→canceled", "pending→revoked"} {
		if !moves[m] {
			t.Errorf("no lease moved %s", m)
		}
	}
}

// TestTransitionActorRefused checks that the store, not the caller, holds
// the rule of who may move a lease: an agent's update of a move only
// security may make (containing a pending lease) is refused with
// ErrLeaseTransition, which the API answers 409 illegal_transition, and
// the lease and its history stay as they were; the same move by an admin
// applies.
func TestTransitionActorRefused(t *testing.T) {
	f := newFixture(t)
	f.svc.Decider = approvalsDecider{}
	ctx := f.agent(t, "etl", map[string]string{"team": "data"})
	l, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "pending"})
	if err != nil {
		t.Fatal(err)
	}
	if l.State != broker.LeasePending {
		t.Fatalf("lease is %s; want pending", l.State)
	}
	agent, _ := broker.ActorFromContext(ctx)
	upd := broker.LeaseUpdate{
		From: []broker.LeaseState{broker.LeasePending}, State: new(broker.LeaseRevoked), EndedAt: new(time.Now().UTC()),
		Actor: agent.String(), Reason: "contained by itself",
	}
	_, err = f.db.UpdateLease(context.Background(), l.ID, upd)
	wantCode(t, err, broker.ETRANSITION, "")
	if !errors.Is(err, broker.ErrLeaseTransition) || !strings.Contains(err.Error(), `pending → revoked is not allowed to actor kind "agent"; only security may`) {
		t.Errorf("agent's pending → revoked = %v; want ErrLeaseTransition naming the move and the kind", err)
	}
	got, err := f.db.FindLeaseByID(context.Background(), l.ID)
	if err != nil || got.State != broker.LeasePending || got.Version != l.Version {
		t.Fatalf("after the refusal the lease is %+v (%v); want it pending at version %d", got, err, l.Version)
	}
	if events, err := f.db.FindLeaseEvents(context.Background(), l.ID); err != nil || len(events) != 1 {
		t.Errorf("after the refusal the lease has %d events (%v); want 1", len(events), err)
	}

	upd.Actor = broker.Actor{Kind: broker.ActorAdmin, Name: "sec"}.String()
	if got, err := f.db.UpdateLease(context.Background(), l.ID, upd); err != nil || got.State != broker.LeaseRevoked {
		t.Fatalf("admin's pending → revoked = %v, %v; want revoked", got, err)
	}
}
