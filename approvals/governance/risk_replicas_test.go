package governance_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stint-broker/stint/approvals/governance"
	"github.com/stint-broker/stint/broker"
)

// TestRiskSharedPattern scores a burst that an agent spreads over two
// replicas (two scorers on one store): with the pattern in the store
// (Patterns), each replica's burst and rate factors count every request;
// with patterns in memory, each replica sees half, which is what the
// store-kept pattern is for.
func TestRiskSharedPattern(t *testing.T) {
	for _, shared := range []bool{true, false} {
		name := "InMemory"
		if shared {
			name = "InStore"
		}
		t.Run(name, func(t *testing.T) {
			db := openGovDB(t)
			now := time.Date(2026, 3, 4, 14, 0, 0, 0, time.UTC)
			a := createAgent(t, db, "etl", now.Add(-30*24*time.Hour))
			for d := 13; d >= 1; d-- {
				recordLease(t, db, a, "db-readonly", broker.LeaseExpired, time.Date(2026, 3, 4-d, 14, 0, 0, 0, time.UTC), 15*time.Minute)
			}
			var replicas []*governance.Risk
			for range 2 {
				r := governance.NewRisk(db, nil)
				r.Now = func() time.Time { return now }
				if shared {
					r.Patterns = db
				}
				replicas = append(replicas, r)
			}
			var last broker.RiskAssessment
			const requests = 12
			for i := range requests {
				now = now.Add(2 * time.Second)
				var err error
				last, err = replicas[i%2].ScoreRequest(context.Background(), broker.DecisionRequest{Action: broker.ActionRequest, Agent: a, Role: riskLowRole, TTL: 15 * time.Minute, Time: now})
				if err != nil {
					t.Fatal(err)
				}
			}
			burst := factor(last, broker.RiskBurst)
			t.Logf("after %d requests over two replicas: %s", requests, last.Summary())
			switch {
			case shared && (burst == nil || burst.Points != 25 || !strings.Contains(burst.Detail, "12 requests")):
				t.Fatalf("burst factor with the pattern in the store = %+v, want 12 requests (25 points)", burst)
			case !shared && (burst == nil || burst.Points != 10 || !strings.Contains(burst.Detail, "6 requests")):
				t.Fatalf("burst factor with patterns in memory = %+v, want each replica's 6 requests (10 points)", burst)
			}
			// The monitor's score of the agent, on either replica, sees the
			// same burst.
			if shared {
				for i, r := range replicas {
					s, err := r.ScoreAgent(context.Background(), a.ID, now)
					if err != nil {
						t.Fatal(err)
					}
					if b := factor(s, broker.RiskBurst); b == nil || b.Points != 25 {
						t.Errorf("ScoreAgent on replica %d: burst %+v, want 25 points", i, b)
					}
				}
			}
		})
	}
}

func factor(a broker.RiskAssessment, name string) *broker.RiskFactor {
	for i := range a.Factors {
		if a.Factors[i].Name == name {
			return &a.Factors[i]
		}
	}
	return nil
}
