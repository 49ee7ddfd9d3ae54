package governance_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stint-broker/stint/approvals/governance"
	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/sqlite"
)

// fakeControl is a kill switch that records what governance asked of
// agents, and refuses any caller but broker.GovernanceActor.
type fakeControl struct {
	mu        sync.Mutex
	suspended []string
	disabled  []string
	revoked   []string // agent/role
}

func (c *fakeControl) ContainAgent(ctx context.Context, req broker.ContainRequest) (*broker.Containment, error) {
	if a, _ := broker.ActorFromContext(ctx); a.String() != broker.GovernanceActor().String() || !a.IsAdmin() {
		return nil, broker.Errorf(broker.EFORBIDDEN, "contained by %s, not governance", a)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch req.State {
	case broker.AgentSuspended:
		c.suspended = append(c.suspended, req.AgentID)
	case broker.AgentDisabled:
		c.disabled = append(c.disabled, req.AgentID)
	default:
		c.revoked = append(c.revoked, req.AgentID+"/"+req.Role)
	}
	return &broker.Containment{ID: "cnt", AgentID: req.AgentID, AgentState: req.State, Role: req.Role, Reason: req.Reason}, nil
}

// alertRecorder is a broker.Alerter that keeps what it is sent.
type alertRecorder struct {
	mu     sync.Mutex
	alerts []broker.Alert
}

func (a *alertRecorder) Alert(_ context.Context, al broker.Alert) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.alerts = append(a.alerts, al)
	return nil
}

func (a *alertRecorder) kinds() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, al := range a.alerts {
		out = append(out, al.Kind+"/"+al.Audience)
	}
	return out
}

func openGovDB(t *testing.T) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "stint.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func createAgent(t *testing.T, db *sqlite.DB, name string, created time.Time) *broker.Agent {
	t.Helper()
	a := &broker.Agent{ID: uuid.NewString(), Name: name, Owner: name + "-owner@example.com", Labels: map[string]string{"team": "data"},
		State: broker.AgentActive, CreatedAt: created, UpdatedAt: created}
	if err := db.CreateAgent(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	return a
}

// recordLease stores a lease of the agent as the lease service would.
func recordLease(t *testing.T, db *sqlite.DB, a *broker.Agent, role string, state broker.LeaseState, created time.Time, ttl time.Duration) *broker.Lease {
	t.Helper()
	l := &broker.Lease{ID: uuid.NewString(), AgentID: a.ID, Agent: a.Name, Role: role, Task: "t", TTL: broker.Duration(ttl),
		State: state, CreatedAt: created, UpdatedAt: created}
	if state != broker.LeaseDenied && state != broker.LeasePending {
		act, exp := created, created.Add(ttl)
		l.ActivatedAt, l.ExpiresAt, l.VaultLeaseID = &act, &exp, "database/creds/x/"+l.ID
	}
	if err := db.CreateLease(context.Background(), l, "agent:"+a.Name, "test"); err != nil {
		t.Fatal(err)
	}
	return l
}

var riskLowRole = &broker.Role{Name: "db-readonly", Sensitivity: broker.SensitivityLow, MaxTTL: time.Hour, DefaultTTL: 15 * time.Minute}

// TestRiskBurst scripts a burst of requests from a quiet agent: the score
// climbs past 40 (policy steps up approval), past 80 (policy denies), and
// the denials take it to the revoke threshold, where the assessment says to
// contain the agent; scoring itself changes nothing.
func TestRiskBurst(t *testing.T) {
	db := openGovDB(t)
	now := time.Date(2026, 3, 4, 14, 0, 0, 0, time.UTC)
	a := createAgent(t, db, "etl", now.Add(-30*24*time.Hour))
	// Two weeks of one request per working hour, 15-minute windows.
	for d := 13; d >= 1; d-- {
		for h := 9; h < 17; h++ {
			at := time.Date(2026, 3, 4-d, h, 30, 0, 0, time.UTC)
			recordLease(t, db, a, "db-readonly", broker.LeaseExpired, at, 15*time.Minute)
		}
	}
	r := governance.NewRisk(db, nil)
	r.Now = func() time.Time { return now }

	score := func(ttl time.Duration) broker.RiskAssessment {
		t.Helper()
		a2, err := r.ScoreRequest(context.Background(), broker.DecisionRequest{Action: broker.ActionRequest, Agent: a, Role: riskLowRole, TTL: ttl, Time: now})
		if err != nil {
			t.Fatal(err)
		}
		return a2
	}
	first := score(15 * time.Minute)
	if first.Score != 0 || first.Contain {
		t.Fatalf("a usual request scores %s, want 0", first.Summary())
	}
	recordLease(t, db, a, "db-readonly", broker.LeaseActive, now, 15*time.Minute)

	var steppedUp, denied, contained int
	var last broker.RiskAssessment
	for i := 1; i <= 40 && contained == 0; i++ {
		now = now.Add(2 * time.Second)
		last = score(15 * time.Minute)
		state := broker.LeaseActive
		switch {
		case last.Contain:
			contained = i
			state = broker.LeaseDenied
		case last.Score >= 80:
			if denied == 0 {
				denied = i
			}
			state = broker.LeaseDenied
		case last.Score >= 40:
			if steppedUp == 0 {
				steppedUp = i
			}
			state = broker.LeasePending
		}
		recordLease(t, db, a, "db-readonly", state, now, 15*time.Minute)
	}
	t.Logf("burst: step-up at request %d, denial at %d, containment at %d: %s", steppedUp, denied, contained, last.Summary())
	if !(steppedUp > 0 && denied > steppedUp && contained > denied) {
		t.Fatalf("burst escalation step-up %d, deny %d, contain %d; want 0 < step-up < deny < contain", steppedUp, denied, contained)
	}
	names := map[string]bool{}
	for _, f := range last.Factors {
		names[f.Name] = true
	}
	for _, want := range []string{broker.RiskRate, broker.RiskBurst, broker.RiskDenials} {
		if !names[want] {
			t.Errorf("final assessment lacks factor %s: %s", want, last.Summary())
		}
	}
	// Scoring decided; it did nothing: the agent is as it was and nothing
	// was recorded (the lease service contains).
	if got, err := db.FindAgentByID(context.Background(), a.ID); err != nil || got.State != broker.AgentActive {
		t.Fatalf("agent after scoring = %+v, %v; want active (the scorer only decides)", got, err)
	}
	kind := broker.AuditRiskContainment
	if _, n, err := db.FindAuditEvents(context.Background(), broker.AuditFilter{Kind: &kind}); err != nil || n != 0 {
		t.Fatalf("containment audit events after scoring = %d, %v; want none", n, err)
	}
}

// TestRiskFactors checks the other factors one by one.
func TestRiskFactors(t *testing.T) {
	db := openGovDB(t)
	now := time.Date(2026, 3, 4, 3, 0, 0, 0, time.UTC) // 03:00, outside the agent's hours
	a := createAgent(t, db, "etl", now.Add(-30*24*time.Hour))
	for d := 10; d >= 1; d-- {
		for h := 10; h < 13; h++ {
			recordLease(t, db, a, "db-readonly", broker.LeaseExpired, time.Date(2026, 3, 4-d, h, 0, 0, 0, time.UTC), 10*time.Minute)
		}
	}
	r := governance.NewRisk(db, nil)
	r.Now = func() time.Time { return now }
	r.AuthFailures = func(_ context.Context, agentID string) (int, error) {
		if agentID == a.ID {
			return 3, nil
		}
		return 0, nil
	}
	got, err := r.ScoreRequest(context.Background(), broker.DecisionRequest{Action: broker.ActionRequest, Agent: a,
		Role: &broker.Role{Name: "txn-approve", Sensitivity: broker.SensitivityLow}, TTL: 50 * time.Minute, Time: now, SourceIP: "10.0.0.9"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{broker.RiskFirstUse: 15, broker.RiskUnusualHour: 10, broker.RiskTTL: 15, broker.RiskAuthFailures: 15}
	gotPts := map[string]int{}
	for _, f := range got.Factors {
		gotPts[f.Name] = f.Points
	}
	for name, pts := range want {
		if gotPts[name] != pts {
			t.Errorf("factor %s = %d, want %d (%s)", name, gotPts[name], pts, got.Summary())
		}
	}
	if got.Score != 55 {
		t.Errorf("score = %d, want 55: %s", got.Score, got.Summary())
	}
}

// TestRiskTaskRoles: a request adds task_roles points for the other roles
// the agent's live leases of the same task hold; ended leases, other tasks
// and the requested role itself do not count.
func TestRiskTaskRoles(t *testing.T) {
	db := openGovDB(t)
	now := time.Date(2026, 3, 4, 11, 0, 0, 0, time.UTC)
	a := createAgent(t, db, "etl", now.Add(-30*24*time.Hour))
	taskLease := func(role, task string, state broker.LeaseState) {
		t.Helper()
		created := now.Add(-time.Minute)
		l := &broker.Lease{ID: uuid.NewString(), AgentID: a.ID, Agent: a.Name, Role: role, Task: task, TTL: broker.Duration(10 * time.Minute),
			State: state, CreatedAt: created, UpdatedAt: created}
		if err := db.CreateLease(context.Background(), l, "agent:"+a.Name, "test"); err != nil {
			t.Fatal(err)
		}
	}
	score := func(role, task string) (int, string) {
		t.Helper()
		r := governance.NewRisk(db, nil)
		r.Now = func() time.Time { return now }
		got, err := r.ScoreRequest(context.Background(), broker.DecisionRequest{Action: broker.ActionRequest, Agent: a,
			Role: &broker.Role{Name: role, Sensitivity: broker.SensitivityLow}, TTL: 10 * time.Minute, Task: task, Time: now})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range got.Factors {
			if f.Name == broker.RiskTaskRoles {
				return f.Points, f.Detail
			}
		}
		return 0, ""
	}
	taskLease("db-readonly", "migrate", broker.LeaseActive)
	taskLease("vault-token", "migrate", broker.LeasePending)
	taskLease("db-readonly", "migrate", broker.LeaseActive) // the same role twice counts once
	taskLease("db-admin", "migrate", broker.LeaseReleased)  // ended
	taskLease("s3-write", "report", broker.LeaseActive)     // another task
	if pts, detail := score("db-admin", "migrate"); pts != 5 || !strings.Contains(detail, "2 other roles (db-readonly, vault-token)") {
		t.Fatalf("two other live roles: %d %q, want 5", pts, detail)
	}
	taskLease("kafka-read", "migrate", broker.LeaseApproved)
	if pts, _ := score("db-admin", "migrate"); pts != 10 {
		t.Fatalf("three other live roles: %d, want 10", pts)
	}
	if pts, _ := score("vault-token", "migrate"); pts != 5 {
		t.Fatalf("the requested role's own lease counted: %d, want 5", pts)
	}
	taskLease("s3-write", "migrate", broker.LeaseActive)
	if pts, _ := score("db-admin", "migrate"); pts != 15 {
		t.Fatalf("four other live roles: %d, want 15", pts)
	}
	if pts, _ := score("db-admin", "report"); pts != 0 {
		t.Fatalf("a task with one other role: %d, want 0", pts)
	}
}
