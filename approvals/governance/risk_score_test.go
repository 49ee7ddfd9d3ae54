package governance_test

import (
	"context"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/stint-broker/stint/approvals/governance"
	"github.com/stint-broker/stint/broker"
)

// TestScoreFacts is a table of measured facts and the assessment they give:
// scoring is a pure function of the facts and the revoke threshold, and
// the threshold only decides Contain.
func TestScoreFacts(t *testing.T) {
	for _, tc := range []struct {
		name      string
		facts     governance.RiskFacts
		threshold int
		score     int
		factors   []string
		contain   bool
	}{
		{name: "Quiet", facts: governance.RiskFacts{Count: 1}, threshold: 90, score: 0},
		{name: "FirstUse", facts: governance.RiskFacts{Count: 1, FirstUse: "db-readonly"}, threshold: 90, score: 15, factors: []string{broker.RiskFirstUse}},
		{name: "RateSteps", facts: governance.RiskFacts{Count: 9, Z: 4}, threshold: 90, score: 20, factors: []string{broker.RiskRate}},
		{name: "BurstSteps", facts: governance.RiskFacts{Count: 1, Burst: 15}, threshold: 90, score: 40, factors: []string{broker.RiskBurst}},
		{name: "TTLTwiceMedian", facts: governance.RiskFacts{TTL: time.Hour, MedianTTL: 30 * time.Minute}, threshold: 90, score: 8, factors: []string{broker.RiskTTL}},
		{name: "TTLNotJudged", facts: governance.RiskFacts{TTL: 10 * time.Hour}, threshold: 90, score: 0},
		{name: "TaskRoles", facts: governance.RiskFacts{Task: "migrate", TaskRoles: []string{"a", "b", "c"}}, threshold: 90, score: 10, factors: []string{broker.RiskTaskRoles}},
		{name: "UnusualHour", facts: governance.RiskFacts{PastTotal: 40, HourShare: 0.01, Hour: 3}, threshold: 90, score: 10, factors: []string{broker.RiskUnusualHour}},
		{name: "UsualHour", facts: governance.RiskFacts{PastTotal: 40, HourShare: 0.2, Hour: 10}, threshold: 90, score: 0},
		{name: "TooLittleHistory", facts: governance.RiskFacts{PastTotal: 10, HourShare: 0, Hour: 3}, threshold: 90, score: 0},
		{name: "DenialsCapped", facts: governance.RiskFacts{Denials: 7}, threshold: 90, score: 30, factors: []string{broker.RiskDenials}},
		{name: "AuthFailuresCapped", facts: governance.RiskFacts{AuthFailures: 9}, threshold: 90, score: 25, factors: []string{broker.RiskAuthFailures}},
		{name: "AtThreshold", facts: governance.RiskFacts{Count: 1, Burst: 20, Denials: 3, AuthFailures: 2}, threshold: 90, score: 90,
			factors: []string{broker.RiskBurst, broker.RiskDenials, broker.RiskAuthFailures}, contain: true},
		{name: "BelowThreshold", facts: governance.RiskFacts{Count: 1, Burst: 20, Denials: 3, AuthFailures: 1}, threshold: 90, score: 85,
			factors: []string{broker.RiskBurst, broker.RiskDenials, broker.RiskAuthFailures}},
		{name: "CappedAt100", facts: governance.RiskFacts{Count: 20, Z: 9, Burst: 25, FirstUse: "x", Denials: 5, AuthFailures: 9}, threshold: 100, score: 100,
			factors: []string{broker.RiskRate, broker.RiskBurst, broker.RiskFirstUse, broker.RiskDenials, broker.RiskAuthFailures}, contain: true},
		{name: "ThresholdZeroNeverContains", facts: governance.RiskFacts{Denials: 3, AuthFailures: 9}, threshold: 0, score: 55,
			factors: []string{broker.RiskDenials, broker.RiskAuthFailures}},
		{name: "ThresholdOver100NeverContains", facts: governance.RiskFacts{Burst: 25, Denials: 3, AuthFailures: 9}, threshold: 101, score: 100,
			factors: []string{broker.RiskBurst, broker.RiskDenials, broker.RiskAuthFailures}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := governance.ScoreFacts(tc.facts, tc.threshold)
			var names []string
			for _, f := range got.Factors {
				names = append(names, f.Name)
			}
			if got.Score != tc.score || got.Contain != tc.contain || !slices.Equal(names, tc.factors) {
				t.Fatalf("score = %d contain %v factors %v (%s); want %d contain %v factors %v",
					got.Score, got.Contain, names, got.Summary(), tc.score, tc.contain, tc.factors)
			}
			if again := governance.ScoreFacts(tc.facts, tc.threshold); !reflect.DeepEqual(again, got) {
				t.Fatalf("the same facts scored twice differ: %+v vs %+v", got, again)
			}
		})
	}
}

// TestRiskCannotContain guards the scorer's purity: nothing reachable
// from a Risk can pull the kill switch or reach the lease service. Its
// fields hold no value with a ContainAgent method (or any method of
// broker.LeaseService) and no function that takes a ContainRequest.
func TestRiskCannotContain(t *testing.T) {
	// The lease service's own operations: its methods that are not the
	// store's reads (which scoring needs).
	lease, store := reflect.TypeFor[broker.LeaseService](), reflect.TypeFor[broker.LeaseStore]()
	var ops []string
	for m := range lease.NumMethod() {
		if _, ok := store.MethodByName(lease.Method(m).Name); !ok {
			ops = append(ops, lease.Method(m).Name)
		}
	}
	if !slices.Contains(ops, "ContainAgent") {
		t.Fatalf("lease service operations %v lack ContainAgent", ops)
	}
	containReq := reflect.TypeFor[broker.ContainRequest]()
	rt := reflect.TypeFor[governance.Risk]()
	for i := range rt.NumField() {
		f := rt.Field(i)
		for _, op := range ops {
			if _, ok := f.Type.MethodByName(op); ok {
				t.Errorf("Risk.%s (%s) has the lease service's operation %s", f.Name, f.Type, op)
			}
		}
		if f.Type.Kind() == reflect.Func {
			for j := range f.Type.NumIn() {
				if f.Type.In(j) == containReq {
					t.Errorf("Risk.%s takes a ContainRequest", f.Name)
				}
			}
		}
	}
	var _ interface {
		ScoreRequest(context.Context, broker.DecisionRequest) (broker.RiskAssessment, error)
	} = (*governance.Risk)(nil)
}

// TestRiskDryRunCountsNothing: a preview is scored as the request would
// be, and leaves the agent's pattern as it was: twenty previews in a
// minute neither raise the score of the real request that follows nor
// turn into a burst.
func TestRiskDryRunCountsNothing(t *testing.T) {
	db := openGovDB(t)
	now := time.Date(2026, 3, 4, 14, 0, 0, 0, time.UTC)
	a := createAgent(t, db, "etl", now.Add(-30*24*time.Hour))
	recordLease(t, db, a, "db-readonly", broker.LeaseExpired, now.Add(-24*time.Hour), 15*time.Minute)
	score := func(r *governance.Risk, dry bool) broker.RiskAssessment {
		t.Helper()
		got, err := r.ScoreRequest(context.Background(), broker.DecisionRequest{Action: broker.ActionRequest, Agent: a, Role: riskLowRole, TTL: 15 * time.Minute, Time: now, DryRun: dry})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	fresh := governance.NewRisk(db, nil)
	want := score(fresh, false)

	r := governance.NewRisk(db, nil)
	for range 20 {
		if p := score(r, true); !reflect.DeepEqual(p, want) {
			t.Fatalf("a preview scores %s, want what the request would: %s", p.Summary(), want.Summary())
		}
	}
	if got := score(r, false); !reflect.DeepEqual(got, want) {
		t.Fatalf("after 20 previews the request scores %s, want %s as without them", got.Summary(), want.Summary())
	}
}
