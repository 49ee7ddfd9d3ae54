package approvals_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stint-broker/stint/approvals"
	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/sqlite"
	"github.com/stint-broker/stint/leases"
)

func approverCtx(email string) context.Context {
	return broker.NewContextWithActor(context.Background(), broker.Actor{Kind: broker.ActorApprover, Name: email, AuthMethod: "approver_token"})
}

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// newApprovalService returns a service over a real SQLite store with three
// security approvers, one of whom (olive) owns the agent, and a pending lease
// made on behalf of bob.
func newApprovalService(t *testing.T) (*approvals.Service, *sqlite.DB, *broker.Lease) {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "stint.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	svc, err := approvals.NewService(db, []*broker.Approver{
		{Email: "dana@example.com", Groups: []string{"security"}, TokenSHA256: tokenHash("dana-token")},
		{Email: "Bob@Example.com", Groups: []string{"security"}},
		{Email: "olive@example.com", Groups: []string{"security"}},
		{Email: "mallory@example.com", Groups: []string{"data"}},
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	agent := &broker.Agent{ID: uuid.NewString(), Name: "report-bot", Owner: "olive@example.com", State: broker.AgentActive, CreatedAt: now, UpdatedAt: now}
	if err := db.CreateAgent(context.Background(), agent); err != nil {
		t.Fatal(err)
	}
	l := &broker.Lease{
		ID: uuid.NewString(), AgentID: agent.ID, Agent: agent.Name, Role: "db-admin", Task: "migrate", TTL: broker.Duration(time.Hour),
		State: broker.LeasePending, OnBehalfOf: "bob@example.com", CreatedAt: now, UpdatedAt: now,
		PolicyDecision: &broker.Decision{Outcome: broker.OutcomeApprovals, Approvals: 1, ApproverGroup: "security"},
	}
	if err := db.CreateLease(context.Background(), l, "agent:report-bot", "needs approval"); err != nil {
		t.Fatal(err)
	}
	// The lease service records the answers (it alone writes lease state).
	svc.Verdicts = leases.NewService(db, nil, nil, nil)
	return svc, db, l
}

func TestSeparationOfDuty(t *testing.T) {
	svc, _, l := newApprovalService(t)
	digest := approvals.Digest(l)
	for _, tc := range []struct{ who, want string }{
		{"olive@example.com", "You own agent report-bot"},
		{"bob@example.com", "The agent asked on your behalf"},
		{"mallory@example.com", `You are not in approver group "security"`},
		{"stranger@example.com", "not a configured approver"},
	} {
		_, err := svc.Approve(approverCtx(tc.who), l.ID, digest)
		if broker.ErrorCode(err) != broker.EFORBIDDEN || !strings.Contains(broker.ErrorMessage(err), tc.want) {
			t.Errorf("%s approving: %v, want EFORBIDDEN saying %q", tc.who, err, tc.want)
		}
	}
	// Only dana may see and decide it.
	for who, want := range map[string]int{"dana@example.com": 1, "olive@example.com": 0, "bob@example.com": 0, "mallory@example.com": 0} {
		got, err := svc.FindPendingApprovals(approverCtx(who))
		if err != nil || len(got) != want {
			t.Errorf("FindPendingApprovals as %s = %d, %v; want %d", who, len(got), err, want)
		}
	}
	agentCtx := broker.NewContextWithActor(context.Background(), broker.Actor{Kind: broker.ActorAgent, Name: "report-bot"})
	if _, err := svc.Approve(agentCtx, l.ID, digest); broker.ErrorCode(err) != broker.EFORBIDDEN {
		t.Errorf("an agent approving: %v, want EFORBIDDEN", err)
	}
	if _, err := svc.Approve(approverCtx("dana@example.com"), uuid.NewString(), digest); broker.ErrorCode(err) != broker.ENOTFOUND {
		t.Errorf("approving an unknown lease: %v, want ENOTFOUND", err)
	}
	got, err := svc.Approve(approverCtx("dana@example.com"), l.ID, digest)
	if err != nil || got.State != broker.LeaseApproved {
		t.Fatalf("dana approving = %v, %v", got, err)
	}
	// Changing one's mind after answering is refused; repeating is not.
	if _, err := svc.Deny(approverCtx("dana@example.com"), l.ID, digest, "oops"); broker.ErrorCode(err) != broker.ECONFLICT {
		t.Errorf("deny after approve: %v, want ECONFLICT", err)
	}
	if _, err := svc.Approve(approverCtx("dana@example.com"), l.ID, digest); err != nil {
		t.Errorf("approving twice: %v, want no error", err)
	}
}

func TestDigest(t *testing.T) {
	_, _, l := newApprovalService(t)
	base := approvals.Digest(l)
	for name, change := range map[string]func(l *broker.Lease){
		"Task":          func(l *broker.Lease) { l.Task = "drop" },
		"Justification": func(l *broker.Lease) { l.Justification = "x" },
		"TTL":           func(l *broker.Lease) { l.TTL = broker.Duration(2 * time.Hour) },
		"Role":          func(l *broker.Lease) { l.Role = "db-root" },
		"Decision": func(l *broker.Lease) {
			l.PolicyDecision = &broker.Decision{Outcome: broker.OutcomeApprovals, Approvals: 2}
		},
	} {
		c := *l
		change(&c)
		if approvals.Digest(&c) == base {
			t.Errorf("changing %s keeps the digest", name)
		}
	}
	c := *l
	c.State, c.UpdatedAt = broker.LeaseApproved, c.UpdatedAt.Add(time.Minute)
	if approvals.Digest(&c) != base {
		t.Error("the digest depends on state or times, which change as approvals arrive")
	}
}

func TestApproverTokens(t *testing.T) {
	svc, _, _ := newApprovalService(t)
	a, ok := svc.AuthenticateApprover("dana-token")
	if !ok || a.Kind != broker.ActorApprover || a.Name != "dana@example.com" {
		t.Fatalf("AuthenticateApprover = %+v, %t", a, ok)
	}
	if _, ok := svc.AuthenticateApprover("stint_ak_not-an-approver"); ok {
		t.Fatal("an unknown token authenticated")
	}
	for _, tc := range []struct {
		approvers []*broker.Approver
		want      string
	}{
		{[]*broker.Approver{{Email: "nope", Groups: []string{"g"}}}, "not an email address"},
		{[]*broker.Approver{{Email: "a@x", Groups: []string{"g"}}, {Email: "A@x", Groups: []string{"g"}}}, "listed twice"},
		{[]*broker.Approver{{Email: "a@x"}}, "groups is empty"},
		{[]*broker.Approver{{Email: "a@x", Groups: []string{"g"}, TokenSHA256: "abc"}}, "64 hex digits"},
		{[]*broker.Approver{{Email: "a@x", Groups: []string{"g"}, SlackUserID: "U1"}, {Email: "b@x", Groups: []string{"g"}, SlackUserID: "U1"}}, "used twice"},
	} {
		if err := svc.SetApprovers(tc.approvers); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("SetApprovers(%v) = %v, want an error saying %q", tc.approvers, err, tc.want)
		}
	}
}

// TestDecideAfterDeadline: a pending lease whose decide_by has passed, but
// which the expiry loop has not timed out yet, takes no answer, and no
// activation window opens.
func TestDecideAfterDeadline(t *testing.T) {
	svc, db, l := newApprovalService(t)
	now := time.Now().UTC()
	deadline := now.Add(-time.Second)
	if _, err := db.UpdateLease(context.Background(), l.ID, broker.LeaseUpdate{From: []broker.LeaseState{broker.LeasePending}, DecideBy: &deadline, Actor: broker.SystemActor(broker.JobApprovalTimeout).String(), Reason: "deadline"}); err != nil {
		t.Fatal(err)
	}
	svc.Now = func() time.Time { return now }
	want := "The request timed out at " + deadline.Format(time.RFC3339) + ", before this answer; it can no longer be approved or denied."
	if _, err := svc.Approve(approverCtx("dana@example.com"), l.ID, approvals.Digest(l)); broker.ErrorCode(err) != broker.ECONFLICT || broker.ErrorMessage(err) != want {
		t.Fatalf("approving after the deadline: %v, want ECONFLICT %q", err, want)
	}
	if _, err := svc.Deny(approverCtx("dana@example.com"), l.ID, approvals.Digest(l), "too late"); broker.ErrorCode(err) != broker.ECONFLICT {
		t.Fatalf("denying after the deadline: %v, want ECONFLICT", err)
	}
	got, err := db.FindLeaseByID(context.Background(), l.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != broker.LeasePending || got.ActivateBy != nil {
		t.Fatalf("lease after a late approval: state %s, activate_by %v; want pending with no activation window", got.State, got.ActivateBy)
	}
	if list, _ := db.FindApprovals(context.Background(), l.ID); len(list) != 0 {
		t.Fatalf("%d approvals recorded after the deadline, want none", len(list))
	}
	// The same answer before the deadline is recorded.
	svc.Now = func() time.Time { return deadline.Add(-time.Minute) }
	if _, err := svc.Approve(approverCtx("dana@example.com"), l.ID, approvals.Digest(l)); err != nil {
		t.Fatalf("approving before the deadline: %v", err)
	}
}

func TestDenyReasonRefusesControlCharacters(t *testing.T) {
	svc, db, l := newApprovalService(t)
	_, err := svc.Deny(approverCtx("dana@example.com"), l.ID, approvals.Digest(l), "no\x1b[8m hidden")
	if broker.ErrorCode(err) != broker.EINVALID || broker.ErrorField(err) != "reason" {
		t.Fatalf("deny with ESC in the reason: %v, want EINVALID on reason", err)
	}
	if list, _ := db.FindApprovals(context.Background(), l.ID); len(list) != 0 {
		t.Fatalf("%d answers recorded, want none", len(list))
	}
}
