package leases_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
)

// watchfulScorer says to contain once armed, and records the agent's state
// as each scoring found it: scoring must never see the agent contained by
// its own call.
type watchfulScorer struct {
	db interface {
		FindAgentByID(context.Context, string) (*broker.Agent, error)
	}
	mu      sync.Mutex
	armed   bool
	seen    []broker.AgentState
	between int
}

func (w *watchfulScorer) assessment() broker.RiskAssessment {
	if !w.armed {
		return broker.RiskAssessment{Score: 5}
	}
	return broker.RiskAssessment{Score: 95, Contain: true, Factors: []broker.RiskFactor{{Name: broker.RiskBurst, Points: 95, Detail: "a burst"}}}
}

func (w *watchfulScorer) ScoreRequest(ctx context.Context, req broker.DecisionRequest) (broker.RiskAssessment, error) {
	a, err := w.db.FindAgentByID(ctx, req.Agent.ID)
	if err != nil {
		return broker.RiskAssessment{}, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = append(w.seen, a.State)
	return w.assessment(), nil
}

func (w *watchfulScorer) ScoreAgent(context.Context, string, time.Time) (broker.RiskAssessment, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.between++
	return w.assessment(), nil
}

// alertLog is a leases.Alerter that keeps what it is sent.
type alertLog struct {
	mu     sync.Mutex
	alerts []string
}

func (a *alertLog) Send(_ context.Context, al broker.Alert, kind, subject string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.alerts = append(a.alerts, kind+" "+subject+" "+al.Message)
}

// TestRiskContainment: a request the scorer says to contain is denied,
// then, as a step of its own, the agent is contained through the one kill
// switch (suspended, every live lease ended) by governance, with an alert.
// The scorer only decided: it saw the agent active.
func TestRiskContainment(t *testing.T) {
	for _, tc := range []struct {
		name string
		pull func(t *testing.T, f *fixture, ctx context.Context)
	}{
		{name: "Request", pull: func(t *testing.T, f *fixture, ctx context.Context) {
			l, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "burst"})
			wantCode(t, err, broker.EDENIED, "")
			if l == nil || l.State != broker.LeaseDenied || !strings.Contains(l.Decision, "risk score 95 crossed the revoke threshold") {
				t.Fatalf("denied lease = %+v", l)
			}
		}},
		{name: "Monitor", pull: func(t *testing.T, f *fixture, ctx context.Context) {
			if err := f.svc.MonitorRisk(context.Background()); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			w := &watchfulScorer{db: f.db}
			alerts := &alertLog{}
			f.svc.Risk, f.svc.Alerts = w, alerts
			ctx := f.agent(t, "etl", map[string]string{"team": "data"})
			id := agentID(t, ctx)
			held, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "held"})
			if err != nil || held.State != broker.LeaseActive {
				t.Fatalf("first lease = %+v, %v", held, err)
			}
			w.mu.Lock()
			w.armed = true
			w.mu.Unlock()

			tc.pull(t, f, ctx)

			for _, st := range w.seen {
				if st != broker.AgentActive {
					t.Fatalf("the scorer saw the agent %s: containment ran inside scoring", st)
				}
			}
			a, err := f.db.FindAgentByID(context.Background(), id)
			if err != nil || a.State != broker.AgentSuspended {
				t.Fatalf("agent = %+v, %v; want suspended", a, err)
			}
			cs, err := f.svc.FindContainments(adminCtx(), id, 0)
			if err != nil || len(cs) != 1 || cs[0].Actor != "admin:governance" || cs[0].AgentState != broker.AgentSuspended ||
				!strings.HasPrefix(cs[0].Reason, "agent suspended: risk score 95 reached the revoke threshold") {
				t.Fatalf("containments = %+v, %v; want one by governance for the score", cs, err)
			}
			if err := f.svc.Tick(context.Background()); err != nil {
				t.Fatal(err)
			}
			if l, err := f.db.FindLeaseByID(context.Background(), held.ID); err != nil || l.State != broker.LeaseRevoked || f.issuer.isLive(l.VaultLeaseID) {
				t.Fatalf("held lease after containment = %+v, %v; want revoked and its credential gone", l, err)
			}
			if len(alerts.alerts) != 1 || !strings.HasPrefix(alerts.alerts[0], broker.AuditRiskContainment+" "+id+" ") {
				t.Fatalf("alerts = %q; want one risk containment about the agent", alerts.alerts)
			}
			// Contained already: the next monitor run leaves it alone.
			if err := f.svc.MonitorRisk(context.Background()); err != nil {
				t.Fatal(err)
			}
			if cs, _ := f.svc.FindContainments(adminCtx(), id, 0); len(cs) != 1 {
				t.Fatalf("%d containments after another monitor run, want 1", len(cs))
			}
		})
	}
}

// TestPreviewDoesNotContain: a dry run the scorer says to contain answers
// deny, and contains nobody.
func TestPreviewDoesNotContain(t *testing.T) {
	f := newFixture(t)
	w := &watchfulScorer{db: f.db, armed: true}
	f.svc.Risk = w
	ctx := f.agent(t, "etl", map[string]string{"team": "data"})
	p, err := f.svc.PreviewLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "look"})
	if err != nil || p.Decision.Outcome != broker.OutcomeDeny {
		t.Fatalf("preview = %+v, %v; want deny", p, err)
	}
	a, err := f.db.FindAgentByID(context.Background(), agentID(t, ctx))
	if err != nil || a.State != broker.AgentActive {
		t.Fatalf("agent after a preview = %+v, %v; want active", a, err)
	}
}
