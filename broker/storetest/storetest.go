// Package storetest is the conformance suite every Stint store passes: the
// SQLite store always, the PostgreSQL store when a database is available. It
// checks behaviour through the broker.AgentStore and broker.LeaseStore
// interfaces only, so one suite pins down what the leases and approvals
// packages may rely on, whichever store is wired in.
//
// The suite supplies every time that it compares, at microsecond precision,
// and UUID ids, so that stores with coarser clocks or typed id columns can run
// it unchanged.
package storetest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stint-broker/stint/broker"
)

// Store is what a store implements to run the suite.
type Store interface {
	broker.AgentStore
	broker.LeaseStore
	broker.ApprovalStore
	broker.LeaseGuard
	broker.ReviewStore
	broker.ContainmentStore
	broker.LoginThrottleStore
	broker.IdempotencyStore
}

// RunStoreTests runs the conformance suite against stores made by open. Each
// call to open must return a new, empty store and register its closing with
// tb.Cleanup.
func RunStoreTests(t *testing.T, open func(tb testing.TB) Store) {
	t.Run("Agent", func(t *testing.T) { testAgents(t, open) })
	t.Run("APIKey", func(t *testing.T) { testAPIKeys(t, open) })
	t.Run("Identity", func(t *testing.T) { testIdentity(t, open) })
	t.Run("Lease", func(t *testing.T) { testLeases(t, open) })
	t.Run("LeaseTransition", func(t *testing.T) { testLeaseTransitions(t, open) })
	t.Run("CallerActor", func(t *testing.T) { testCallerActors(t, open) })
	t.Run("LeaseQueue", func(t *testing.T) { testLeaseQueue(t, open) })
	t.Run("EndRevocations", func(t *testing.T) { testEndRevocations(t, open) })
	t.Run("LiveRoles", func(t *testing.T) { testLiveRoles(t, open) })
	t.Run("TaskRoles", func(t *testing.T) { testTaskRoles(t, open) })
	t.Run("CountRefusals", func(t *testing.T) { testCountRefusals(t, open) })
	t.Run("Audit", func(t *testing.T) { testAudit(t, open) })
	t.Run("Approval", func(t *testing.T) { testApprovals(t, open) })
	t.Run("Governance", func(t *testing.T) { testGovernance(t, open) })
	t.Run("Containment", func(t *testing.T) { testContainments(t, open) })
	t.Run("LoginThrottle", func(t *testing.T) { testLoginThrottle(t, open) })
	t.Run("IdempotencyKey", func(t *testing.T) { testIdempotencyKeys(t, open) })
}

// t0 is the suite's reference time. It lies in the past, so that a store
// clock stamping updates reads later than every time the suite supplies.
var t0 = time.Date(2025, 6, 2, 9, 0, 0, 0, time.UTC)

// at returns t0 plus d.
func at(d time.Duration) time.Time { return t0.Add(d) }

// ptr returns a pointer to v.
func ptr[T any](v T) *T { return &v }

// newID returns a fresh time-ordered id.
func newID() string { return uuid.Must(uuid.NewV7()).String() }

// mustCreateAgent creates an active agent with the given name.
func mustCreateAgent(tb testing.TB, s Store, name string) *broker.Agent {
	tb.Helper()
	a := &broker.Agent{
		ID:        newID(),
		Name:      name,
		Owner:     "owner@example.com",
		Labels:    map[string]string{"team": "data"},
		State:     broker.AgentActive,
		CreatedAt: t0,
		UpdatedAt: t0,
	}
	if err := s.CreateAgent(tb.Context(), a); err != nil {
		tb.Fatalf("CreateAgent(%s): %v", name, err)
	}
	return a
}

// newLease returns a pending lease of agent a created at created.
func newLease(a *broker.Agent, created time.Time) *broker.Lease {
	return &broker.Lease{
		ID:            newID(),
		AgentID:       a.ID,
		Agent:         a.Name,
		Role:          "db-readonly",
		Task:          "nightly report",
		Justification: "OPS-1234",
		TTL:           broker.Duration(15 * time.Minute),
		State:         broker.LeasePending,
		Decision:      "needs 1 approval from data-owners",
		VaultPath:     "database/creds/readonly",
		CreatedAt:     created,
		UpdatedAt:     created,
		AuthMethod:    "api_key",
		OnBehalfOf:    "bob@example.com",
		SourceIP:      "10.0.0.7",
		RiskScore:     12,
		PolicyDecision: &broker.Decision{Outcome: broker.OutcomeApprovals, Approvals: 1, ApproverGroup: "data-owners",
			PolicyIDs: []string{"medium-one-approver"}, Reasons: []string{"medium sensitivity"}},
		Breakglass: true,
	}
}

// newActiveLease returns an active lease of agent a whose window closes at
// expires.
func newActiveLease(a *broker.Agent, expires time.Time) *broker.Lease {
	l := newLease(a, expires.Add(-time.Hour))
	l.State = broker.LeaseActive
	l.VaultLeaseID = "database/creds/readonly/" + l.ID
	l.ActivatedAt = ptr(expires.Add(-15 * time.Minute))
	l.ExpiresAt = ptr(expires)
	return l
}

// newRevokingLease returns a revoking lease of agent a due another attempt at
// next.
func newRevokingLease(a *broker.Agent, next time.Time) *broker.Lease {
	l := newActiveLease(a, next.Add(-time.Minute))
	l.State = broker.LeaseRevoking
	l.EndState = broker.LeaseReleased
	l.RevokeAttempts = 1
	l.NextRevokeAt = ptr(next)
	l.RevokeError = "vault: connection refused"
	return l
}

// mustCreateLease stores l with a creation event by "agent:<name>".
func mustCreateLease(tb testing.TB, s Store, l *broker.Lease) *broker.Lease {
	tb.Helper()
	if err := s.CreateLease(tb.Context(), l, "agent:"+l.Agent, "requested"); err != nil {
		tb.Fatalf("CreateLease: %v", err)
	}
	return l
}

// mustFindLease returns the stored lease with the id.
func mustFindLease(tb testing.TB, s Store, id string) *broker.Lease {
	tb.Helper()
	l, err := s.FindLeaseByID(tb.Context(), id)
	if err != nil {
		tb.Fatalf("FindLeaseByID: %v", err)
	}
	return l
}

// wantError fails tb unless err has the code and, if msg is not empty, the
// caller-safe message.
func wantError(tb testing.TB, err error, code, msg string) {
	tb.Helper()
	if got := broker.ErrorCode(err); got != code {
		tb.Fatalf("error code = %q (err %v), want %q", got, err, code)
	}
	if got := broker.ErrorMessage(err); msg != "" && got != msg {
		tb.Fatalf("error message = %q, want %q", got, msg)
	}
}

// fmtTime renders an optional time for comparisons: UTC, full precision.
func fmtTime(t *time.Time) string {
	if t == nil {
		return "<nil>"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// fmtAgent renders every field of a for comparisons.
func fmtAgent(a *broker.Agent) string {
	if a == nil {
		return "<nil agent>"
	}
	return fmt.Sprintf("id=%s name=%s owner=%s labels={%s} state=%s created=%s updated=%s last_seen=%s",
		a.ID, a.Name, a.Owner, broker.FormatLabels(a.Labels), a.State,
		fmtTime(&a.CreatedAt), fmtTime(&a.UpdatedAt), fmtTime(a.LastSeenAt))
}

// fmtAPIKey renders every field of k for comparisons.
func fmtAPIKey(k *broker.APIKey) string {
	if k == nil {
		return "<nil key>"
	}
	return fmt.Sprintf("id=%s agent=%s prefix=%s hash=%s created=%s expires=%s revoked=%s",
		k.ID, k.AgentID, k.Prefix, k.Hash, fmtTime(&k.CreatedAt), fmtTime(&k.ExpiresAt), fmtTime(k.RevokedAt))
}

// fmtLease renders every field of l for comparisons, one per line.
func fmtLease(l *broker.Lease) string {
	if l == nil {
		return "<nil lease>"
	}
	return strings.Join([]string{
		"id=" + l.ID,
		"agent_id=" + l.AgentID,
		"agent=" + l.Agent,
		"role=" + l.Role,
		"task=" + l.Task,
		"justification=" + l.Justification,
		"ttl=" + l.TTL.String(),
		"state=" + string(l.State),
		"end_state=" + string(l.EndState),
		"decision=" + l.Decision,
		"vault_path=" + l.VaultPath,
		"vault_lease_id=" + l.VaultLeaseID,
		"username=" + l.Username,
		"created_at=" + fmtTime(&l.CreatedAt),
		"updated_at=" + fmtTime(&l.UpdatedAt),
		"activated_at=" + fmtTime(l.ActivatedAt),
		"expires_at=" + fmtTime(l.ExpiresAt),
		"ended_at=" + fmtTime(l.EndedAt),
		fmt.Sprintf("revoke_attempts=%d", l.RevokeAttempts),
		"next_revoke_at=" + fmtTime(l.NextRevokeAt),
		"revoke_error=" + l.RevokeError,
		"auth_method=" + l.AuthMethod,
		"on_behalf_of=" + l.OnBehalfOf,
		"source_ip=" + l.SourceIP,
		fmt.Sprintf("risk_score=%d risk_factors=%+v", l.RiskScore, l.RiskFactors),
		fmt.Sprintf("policy_decision=%+v", l.PolicyDecision),
		"decide_by=" + fmtTime(l.DecideBy),
		"activate_by=" + fmtTime(l.ActivateBy),
		fmt.Sprintf("breakglass=%t extensions=%d", l.Breakglass, l.Extensions),
	}, "\n\t")
}

// fmtEvent renders e without its id, which only orders events.
func fmtEvent(e *broker.LeaseEvent) string {
	return fmt.Sprintf("lease=%s %q->%q actor=%s reason=%q", e.LeaseID, e.From, e.To, e.Actor, e.Reason)
}

// wantAgent fails tb if got and want differ in any field.
func wantAgent(tb testing.TB, got, want *broker.Agent) {
	tb.Helper()
	if g, w := fmtAgent(got), fmtAgent(want); g != w {
		tb.Fatalf("agent differs\ngot:  %s\nwant: %s", g, w)
	}
}

// wantLease fails tb if got and want differ in any field.
func wantLease(tb testing.TB, got, want *broker.Lease) {
	tb.Helper()
	if g, w := fmtLease(got), fmtLease(want); g != w {
		tb.Fatalf("lease differs\ngot:\n\t%s\nwant:\n\t%s", g, w)
	}
}

// leaseIDs returns the ids of leases in order.
func leaseIDs(leases []*broker.Lease) []string {
	ids := make([]string, len(leases))
	for i, l := range leases {
		ids[i] = l.ID
	}
	return ids
}

// wantLeaseIDs fails tb unless leases are exactly the want ids, in order.
func wantLeaseIDs(tb testing.TB, leases []*broker.Lease, want ...string) {
	tb.Helper()
	if got := leaseIDs(leases); !slices.Equal(got, want) {
		tb.Fatalf("lease ids = %v, want %v", got, want)
	}
}

// wantEvents fails tb unless the lease's history is exactly want, in order,
// with increasing ids, and returns the stored events.
func wantEvents(tb testing.TB, s Store, leaseID string, want ...*broker.LeaseEvent) []*broker.LeaseEvent {
	tb.Helper()
	got, err := s.FindLeaseEvents(tb.Context(), leaseID)
	if err != nil {
		tb.Fatalf("FindLeaseEvents: %v", err)
	}
	var g, w []string
	for _, e := range got {
		g = append(g, fmtEvent(e))
	}
	for _, e := range want {
		w = append(w, fmtEvent(e))
	}
	if !slices.Equal(g, w) {
		tb.Fatalf("events differ\ngot:\n\t%s\nwant:\n\t%s", strings.Join(g, "\n\t"), strings.Join(w, "\n\t"))
	}
	for i := 1; i < len(got); i++ {
		if got[i].ID <= got[i-1].ID {
			tb.Fatalf("event ids not increasing: %d then %d", got[i-1].ID, got[i].ID)
		}
	}
	return got
}
