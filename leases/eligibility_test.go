package leases_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
)

// permitAll is a policy set that grants everything and never reads
// context.eligible, like a custom Cedar set "permit(principal, action,
// resource);".
func permitAll(calls *int) deciderFunc {
	return func(context.Context, broker.DecisionRequest) (broker.Decision, error) {
		*calls++
		return broker.Decision{Outcome: broker.OutcomeApprove, PolicyIDs: []string{"permit-all"}, Reasons: []string{"permit all"}}, nil
	}
}

// setLabels replaces an agent's labels, as "stint agents label" does.
func setLabels(t *testing.T, f *fixture, agentID string, labels map[string]string) {
	t.Helper()
	if _, err := f.db.UpdateAgent(context.Background(), agentID, broker.AgentUpdate{Labels: labels}); err != nil {
		t.Fatal(err)
	}
}

func TestEligibilityBeforePolicy(t *testing.T) {
	t.Run("Request", func(t *testing.T) {
		f := newFixture(t)
		var calls int
		f.svc.Decider = permitAll(&calls)
		ctx := f.agent(t, "ops-bot", map[string]string{"team": "ops"}) // db-readonly wants team=data
		l, cred, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "report"})
		if broker.ErrorCode(err) != broker.EDENIED || cred != nil {
			t.Fatalf("ineligible request under a permit-all policy: %v (credential %t), want EDENIED", err, cred != nil)
		}
		if l == nil || l.State != broker.LeaseDenied || l.PolicyDecision == nil || strings.Join(l.PolicyDecision.PolicyIDs, ",") != "stint:eligibility" {
			t.Fatalf("lease = %+v, want denied by stint:eligibility", l)
		}
		if l.Decision != "agent ops-bot is not eligible for role db-readonly" {
			t.Errorf("decision = %q", l.Decision)
		}
		if calls != 0 || len(f.issuer.live) != 0 {
			t.Fatalf("policy asked %d times and %d credentials minted, want neither", calls, len(f.issuer.live))
		}
		// An eligible agent is still granted by the same policy.
		ok := f.agent(t, "etl", map[string]string{"team": "data"})
		if l, cred, err := f.svc.RequestLease(ok, broker.LeaseRequest{Role: "db-readonly", Task: "report"}); err != nil || cred == nil || l.State != broker.LeaseActive {
			t.Fatalf("eligible request: %+v, %v", l, err)
		}
	})

	t.Run("Activate", func(t *testing.T) {
		f, ctx, now := pendingFixture(t) // etl, team=data; every request needs approvals
		l, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "report"})
		if err != nil {
			t.Fatal(err)
		}
		approve(t, f, l.ID, now.Add(time.Hour))
		setLabels(t, f, l.AgentID, map[string]string{"team": "ops"})
		_, cred, err := f.svc.ActivateLease(ctx, l.ID)
		if broker.ErrorCode(err) != broker.EFORBIDDEN || cred != nil {
			t.Fatalf("activation by an agent no longer eligible: %v (credential %t), want EFORBIDDEN", err, cred != nil)
		}
		if got := broker.ErrorMessage(err); got != "Agent etl is no longer eligible for role db-readonly." {
			t.Errorf("message = %q", got)
		}
		if len(f.issuer.live) != 0 {
			t.Fatal("a credential was minted")
		}
	})

	t.Run("Extend", func(t *testing.T) {
		f := govFixture(t)
		roles := govRoles()
		for _, r := range roles {
			if r.Name == "db-readonly" {
				r.Eligible = map[string]string{"team": "data"}
			}
		}
		f.svc.SetRoles(roles)
		now := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
		f.svc.Now = func() time.Time { return now }
		f.svc.Renewer = &fakeRenewer{}
		ctx, agentID := f.agentAs(t, "etl", broker.AuthAPIKey)
		l, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "etl"})
		if err != nil {
			t.Fatal(err)
		}
		var calls int
		f.svc.Decider = permitAll(&calls)
		setLabels(t, f, agentID, map[string]string{"team": "ops"})
		now = now.Add(11 * time.Minute)
		_, err = f.svc.ExtendLease(ctx, l.ID, "10m")
		if broker.ErrorCode(err) != broker.EDENIED || !strings.Contains(broker.ErrorMessage(err), "not eligible") {
			t.Fatalf("extension by an agent no longer eligible: %v, want EDENIED saying it is not eligible", err)
		}
		if calls != 0 {
			t.Fatalf("policy asked %d times, want 0", calls)
		}
	})
}

// TestRequestRefusesControlCharacters: free text that approvers will read
// is refused by the service itself, whatever path it came by (API, CLI,
// MCP), before anything is recorded.
func TestRequestRefusesControlCharacters(t *testing.T) {
	f := newFixture(t)
	ctx := f.agent(t, "etl", map[string]string{"team": "data"})
	for _, tc := range []struct {
		req   broker.LeaseRequest
		field string
	}{
		{broker.LeaseRequest{Role: "db-readonly", Task: "report\x1b[2K\rAPPROVED"}, "task"},
		{broker.LeaseRequest{Role: "db-readonly", Task: "report", Justification: "OPS-1\u202e"}, "justification"},
		{broker.LeaseRequest{Role: "db-readonly", Task: "report", Breakglass: true, BreakglassReason: "x\u009b"}, "breakglass_reason"},
	} {
		_, _, err := f.svc.RequestLease(ctx, tc.req)
		wantCode(t, err, broker.EINVALID, tc.field)
	}
	if got, _, _ := f.db.FindLeases(context.Background(), broker.LeaseFilter{}); len(got) != 0 {
		t.Fatalf("%d leases recorded, want none", len(got))
	}
}
