package leases_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
)

// deciderFunc adapts a function to broker.Decider.
type deciderFunc func(ctx context.Context, req broker.DecisionRequest) (broker.Decision, error)

func (f deciderFunc) Decide(ctx context.Context, req broker.DecisionRequest) (broker.Decision, error) {
	return f(ctx, req)
}

func needsTwo(context.Context, broker.DecisionRequest) (broker.Decision, error) {
	return broker.Decision{Outcome: broker.OutcomeApprovals, Approvals: 2, ApproverGroup: "security",
		PolicyIDs: []string{"high-two"}, Reasons: []string{"high sensitivity"}}, nil
}

// pendingFixture is a fixture whose decider sends every request to two
// approvers, with a fake clock.
func pendingFixture(t *testing.T) (*fixture, context.Context, *time.Time) {
	f := newFixture(t)
	now := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	f.svc.Now = func() time.Time { return now }
	f.svc.Decider = deciderFunc(needsTwo)
	return f, f.agent(t, "etl", map[string]string{"team": "data"}), &now
}

// approve moves a pending lease to approved as the approvals service does.
func approve(t *testing.T, f *fixture, id string, activateBy time.Time) {
	t.Helper()
	if _, err := f.db.UpdateLease(context.Background(), id, broker.LeaseUpdate{
		From: []broker.LeaseState{broker.LeasePending}, State: ptrTo(broker.LeaseApproved), ActivateBy: &activateBy,
		Actor: "approver:dana@example.com", Reason: "approved",
	}); err != nil {
		t.Fatal(err)
	}
	f.svc.LeaseChanged(id)
}

func ptrTo[T any](v T) *T { return &v }

func TestRequestPending(t *testing.T) {
	f, ctx, now := pendingFixture(t)
	var seen broker.DecisionRequest
	f.svc.Decider = deciderFunc(func(ctx context.Context, req broker.DecisionRequest) (broker.Decision, error) {
		seen = req
		return needsTwo(ctx, req)
	})
	l, cred, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-admin", TTL: "20m", Task: "migrate", Justification: "CHG-7"})
	if err != nil {
		t.Fatal(err)
	}
	if cred != nil || l.State != broker.LeasePending || l.ActivatedAt != nil {
		t.Fatalf("lease = %+v, cred %v; want pending without a credential", l, cred != nil)
	}
	if l.DecideBy == nil || !l.DecideBy.Equal(now.Add(time.Hour)) {
		t.Fatalf("decide_by = %v, want now+1h", l.DecideBy)
	}
	if l.PolicyDecision == nil || l.PolicyDecision.Approvals != 2 || l.Decision != "needs 2 approval(s) from security: high sensitivity" {
		t.Fatalf("decision = %+v %q", l.PolicyDecision, l.Decision)
	}
	if len(f.issuer.live) != 0 {
		t.Fatal("a pending lease minted a credential")
	}
	if seen.Agent == nil || seen.Role.Name != "db-admin" || seen.TTL != 20*time.Minute || seen.Task != "migrate" ||
		seen.Justification != "CHG-7" || !seen.Time.Equal(*now) || seen.Action != broker.ActionRequest {
		t.Fatalf("decision request = %+v", seen)
	}
	stored, _ := f.db.FindLeaseByID(context.Background(), l.ID)
	if stored.State != broker.LeasePending || stored.PolicyDecision == nil || stored.DecideBy == nil {
		t.Fatalf("stored lease = %+v", stored)
	}
}

func TestRequestActiveRoles(t *testing.T) {
	f, ctx, _ := pendingFixture(t)
	f.svc.Decider = nil
	if _, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "x"}); err != nil {
		t.Fatal(err)
	}
	var seen broker.DecisionRequest
	f.svc.Decider = deciderFunc(func(ctx context.Context, req broker.DecisionRequest) (broker.Decision, error) {
		seen = req
		return broker.Decision{Outcome: broker.OutcomeApprove, Reasons: []string{"ok"}}, nil
	})
	l, cred, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-admin", Task: "x"})
	if err != nil || cred == nil || l.State != broker.LeaseActive {
		t.Fatalf("approve outcome = %+v, %v; want active with a credential", l, err)
	}
	if len(seen.ActiveRoles) != 1 || seen.ActiveRoles[0] != "db-readonly" {
		t.Fatalf("active roles = %v, want [db-readonly]", seen.ActiveRoles)
	}
	if l.PolicyDecision == nil || l.PolicyDecision.Outcome != broker.OutcomeApprove || l.Decision != "auto-approved: ok" {
		t.Fatalf("decision = %+v %q", l.PolicyDecision, l.Decision)
	}
}

func TestRequestDeniedByDecider(t *testing.T) {
	for _, tc := range []struct {
		name    string
		decider deciderFunc
		reason  string
	}{
		{"Deny", func(context.Context, broker.DecisionRequest) (broker.Decision, error) {
			return broker.Decision{Outcome: broker.OutcomeDeny, PolicyIDs: []string{"no-nights"}, Reasons: []string{"critical roles only in business hours"}}, nil
		}, "critical roles only in business hours"},
		{"ErrorFailsClosed", func(context.Context, broker.DecisionRequest) (broker.Decision, error) {
			return broker.Decision{Outcome: broker.OutcomeApprove}, errors.New("cedar exploded")
		}, "policy evaluation failed"},
		{"ApprovalsWithoutGroup", func(context.Context, broker.DecisionRequest) (broker.Decision, error) {
			return broker.Decision{Outcome: broker.OutcomeApprovals, Approvals: 1}, nil
		}, "policy asked for approvals without naming how many or from whom"},
		{"UnknownOutcome", func(context.Context, broker.DecisionRequest) (broker.Decision, error) {
			return broker.Decision{Outcome: "maybe"}, nil
		}, `policy returned an unknown outcome "maybe"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, ctx, _ := pendingFixture(t)
			f.svc.Decider = tc.decider
			_, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-admin", Task: "x"})
			wantCode(t, err, broker.EDENIED, "")
			if got, want := broker.ErrorMessage(err), "Request denied: "+tc.reason+"."; got != want {
				t.Fatalf("message = %q, want %q", got, want)
			}
			ls, _, _ := f.svc.FindLeases(ctx, broker.LeaseFilter{})
			if len(ls) != 1 || ls[0].State != broker.LeaseDenied || ls[0].PolicyDecision == nil || ls[0].PolicyDecision.Outcome != broker.OutcomeDeny {
				t.Fatalf("leases = %+v, want one denied lease with its decision", ls)
			}
			if len(f.issuer.live) != 0 {
				t.Fatal("a denied request minted")
			}
		})
	}
}

func TestActivate(t *testing.T) {
	f, ctx, now := pendingFixture(t)
	l, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-admin", TTL: "20m", Task: "migrate"})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = f.svc.ActivateLease(ctx, l.ID)
	wantCode(t, err, broker.ECONFLICT, "") // still pending

	approve(t, f, l.ID, now.Add(15*time.Minute))
	*now = now.Add(10 * time.Minute) // the window starts at activation, not at request or approval
	other := f.agent(t, "other", map[string]string{"team": "data"})
	_, _, err = f.svc.ActivateLease(other, l.ID)
	wantCode(t, err, broker.ENOTFOUND, "")
	_, _, err = f.svc.ActivateLease(adminCtx(), l.ID)
	wantCode(t, err, broker.EFORBIDDEN, "")

	active, cred, err := f.svc.ActivateLease(ctx, l.ID)
	if err != nil {
		t.Fatal(err)
	}
	if active.State != broker.LeaseActive || cred == nil || cred.Data["password"] != "p" {
		t.Fatalf("activated = %+v", active)
	}
	if !active.ActivatedAt.Equal(*now) || !active.ExpiresAt.Equal(now.Add(20*time.Minute)) {
		t.Fatalf("window %s..%s, want it to start now (%s) for 20m", active.ActivatedAt, active.ExpiresAt, now)
	}
	if !f.issuer.isLive(active.VaultLeaseID) {
		t.Fatal("credential not live")
	}
	_, _, err = f.svc.ActivateLease(ctx, l.ID)
	wantCode(t, err, broker.ECONFLICT, "")
	if len(f.issuer.live) != 1 {
		t.Fatalf("%d credentials after a second activation, want 1", len(f.issuer.live))
	}
	evs, _ := f.svc.FindLeaseEvents(ctx, l.ID)
	var path []broker.LeaseState
	for _, e := range evs {
		path = append(path, e.To)
	}
	want := []broker.LeaseState{broker.LeasePending, broker.LeaseApproved, broker.LeaseIssuing, broker.LeaseActive}
	if len(path) != len(want) {
		t.Fatalf("history %v, want %v", path, want)
	}
	for i := range want {
		if path[i] != want[i] {
			t.Fatalf("history %v, want %v (write-ahead issuing before active)", path, want)
		}
	}
}

func TestActivateLapsed(t *testing.T) {
	f, ctx, now := pendingFixture(t)
	l, _, _ := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-admin", Task: "migrate"})
	approve(t, f, l.ID, now.Add(15*time.Minute))
	*now = now.Add(15 * time.Minute)
	_, _, err := f.svc.ActivateLease(ctx, l.ID)
	wantCode(t, err, broker.ECONFLICT, "")
	got, _ := f.svc.FindLeaseByID(ctx, l.ID)
	if got.State != broker.LeaseLapsed || len(f.issuer.live) != 0 {
		t.Fatalf("lease is %s with %d credentials, want lapsed with none", got.State, len(f.issuer.live))
	}
}

func TestActivateVaultDown(t *testing.T) {
	f, ctx, now := pendingFixture(t)
	l, _, _ := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-admin", Task: "migrate"})
	approve(t, f, l.ID, now.Add(15*time.Minute))
	f.issuer.issueErr = errors.New("vault: permission denied")
	_, _, err := f.svc.ActivateLease(ctx, l.ID)
	if err == nil {
		t.Fatal("activation succeeded without a mint")
	}
	got, _ := f.svc.FindLeaseByID(ctx, l.ID)
	if got.State != broker.LeaseFailed {
		t.Fatalf("lease is %s, want failed", got.State)
	}
}

func TestCancel(t *testing.T) {
	f, ctx, now := pendingFixture(t)
	for _, approved := range []bool{false, true} {
		l, _, _ := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-admin", Task: "migrate"})
		if approved {
			approve(t, f, l.ID, now.Add(15*time.Minute))
		}
		other := f.agent(t, "other"+map[bool]string{false: "1", true: "2"}[approved], map[string]string{"team": "data"})
		_, err := f.svc.CancelLease(other, l.ID)
		wantCode(t, err, broker.ENOTFOUND, "")
		got, err := f.svc.CancelLease(ctx, l.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != broker.LeaseCanceled || got.EndedAt == nil {
			t.Fatalf("canceled lease = %+v", got)
		}
		_, err = f.svc.CancelLease(ctx, l.ID)
		wantCode(t, err, broker.ECONFLICT, "")
	}
	f.svc.Decider = nil
	active, _, _ := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "x"})
	_, err := f.svc.CancelLease(ctx, active.ID)
	wantCode(t, err, broker.ECONFLICT, "") // an active lease is released, not canceled
}

func TestWaitLease(t *testing.T) {
	f, ctx, now := pendingFixture(t)
	l, _, _ := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-admin", Task: "migrate"})

	start := time.Now()
	got, err := f.svc.WaitLease(ctx, l.ID, 50*time.Millisecond)
	if err != nil || got.State != broker.LeasePending || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("WaitLease with nothing happening = %v, %v after %s; want pending after the wait", got, err, time.Since(start))
	}

	go func() {
		time.Sleep(50 * time.Millisecond)
		approve(t, f, l.ID, now.Add(15*time.Minute))
	}()
	start = time.Now()
	got, err = f.svc.WaitLease(ctx, l.ID, 30*time.Second)
	if err != nil || got.State != broker.LeaseApproved {
		t.Fatalf("WaitLease = %v, %v; want approved", got, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("WaitLease returned after %s; the change should wake it", d)
	}
	// Not pending: answers at once.
	if got, err := f.svc.WaitLease(ctx, l.ID, 30*time.Second); err != nil || got.State != broker.LeaseApproved {
		t.Fatalf("WaitLease on an approved lease = %v, %v", got, err)
	}
	other := f.agent(t, "other", map[string]string{"team": "data"})
	_, err = f.svc.WaitLease(other, l.ID, time.Second)
	wantCode(t, err, broker.ENOTFOUND, "")
}

func TestApprovalDeadlines(t *testing.T) {
	f, ctx, now := pendingFixture(t)
	pending, _, _ := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-admin", Task: "a"})
	approved, _, _ := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-admin", Task: "b"})
	approve(t, f, approved.ID, now.Add(15*time.Minute))

	next, ok, err := f.db.NextLeaseDeadline(context.Background())
	if err != nil || !ok || !next.Equal(now.Add(15*time.Minute)) {
		t.Fatalf("next deadline = %s %t %v, want the activation deadline", next, ok, err)
	}
	*now = now.Add(14 * time.Minute)
	if err := f.svc.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.svc.FindLeaseByID(ctx, approved.ID); got.State != broker.LeaseApproved {
		t.Fatalf("approved lease is %s before its deadline", got.State)
	}
	*now = now.Add(time.Minute)
	if err := f.svc.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.svc.FindLeaseByID(ctx, approved.ID); got.State != broker.LeaseLapsed {
		t.Fatalf("approved lease is %s after its deadline, want lapsed", got.State)
	}
	if got, _ := f.svc.FindLeaseByID(ctx, pending.ID); got.State != broker.LeasePending {
		t.Fatalf("pending lease is %s before its deadline", got.State)
	}
	*now = now.Add(45 * time.Minute) // one hour after the request
	if err := f.svc.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := f.svc.FindLeaseByID(ctx, pending.ID)
	if got.State != broker.LeaseTimedOut || got.EndedAt == nil {
		t.Fatalf("pending lease is %s after an hour, want timed_out", got.State)
	}
	evs, _ := f.svc.FindLeaseEvents(ctx, pending.ID)
	if last := evs[len(evs)-1]; last.Actor != "system:approval-timeout" || last.From != broker.LeasePending {
		t.Fatalf("last event = %+v", last)
	}
}

// TestActivationTellsApprovals checks who hears of an activation through
// OnChange (the approval outbox): a lease that went to approvers, whose
// message shows its state, and not an auto-approved one, which has none.
func TestActivationTellsApprovals(t *testing.T) {
	f, ctx, now := pendingFixture(t)
	var told []string
	f.svc.OnChange = func(id string) { told = append(told, id) }

	pending, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-admin", TTL: "20m", Task: "migrate"})
	if err != nil {
		t.Fatal(err)
	}
	approve(t, f, pending.ID, now.Add(15*time.Minute))
	told = nil
	if _, _, err := f.svc.ActivateLease(ctx, pending.ID); err != nil {
		t.Fatal(err)
	}
	if len(told) != 1 || told[0] != pending.ID {
		t.Fatalf("OnChange heard %v after activating a lease that went to approvers, want [%s]", told, pending.ID)
	}

	f.svc.Decider = nil // the role's auto_approve decides
	told = nil
	auto, cred, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", TTL: "20m", Task: "report"})
	if err != nil || cred == nil || auto.State != broker.LeaseActive {
		t.Fatalf("auto-approved request = %+v, %v", auto, err)
	}
	if len(told) != 0 {
		t.Fatalf("OnChange heard %v for an auto-approved lease, want nothing", told)
	}
}
