package policy_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/stint-broker/stint/approvals/policy"
	"github.com/stint-broker/stint/broker"
)

// TestIndexMatchesFullEvaluation: deciding with the scope index and deciding
// by evaluating every policy (what cedar-go does alone) agree on every
// generated request, outcome, approvals, group, policy ids and reasons.
func TestIndexMatchesFullEvaluation(t *testing.T) {
	for _, tt := range []struct {
		name     string
		seed     uint64
		policies int
		agents   int
		roles    int
		unscoped int
		forbid   int
		errors   int
		approval int
	}{
		{"Small", 1, 40, 5, 4, 20, 20, 0, 50},
		{"ManyScoped", 2, 1000, 50, 20, 2, 3, 0, 20},
		{"ManyUnscoped", 3, 300, 10, 10, 60, 3, 0, 3},
		{"WithEvaluationErrors", 4, 300, 10, 10, 5, 3, 40, 10},
		{"Permits", 5, 200, 5, 5, 10, 0, 0, 50},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := newPolicyGen(tt.seed)
			g.agents, g.roles = tt.agents, tt.roles
			g.allScopeForms, g.typeShare = true, 25
			g.unscopedShare, g.forbidShare, g.approvalsShare, g.erroringShare = tt.unscoped, tt.forbid, tt.approval, tt.errors
			p, err := policy.NewFromDocuments([]policy.Document{{Name: "gen.cedar", Text: []byte(g.policies(tt.policies))}},
				nil, policy.Config{DefaultApproverGroup: "approvers"})
			if err != nil {
				t.Fatal(err)
			}
			roles := g.roleSet()
			outcomes := map[broker.Outcome]int{}
			candidates, failures := 0, 0
			const n = 3000
			for i := range n {
				r := g.request(roles)
				indexed, full := decide(t, p, r), p.DecideUnindexed(r)
				if !reflect.DeepEqual(indexed, full) {
					t.Fatalf("request %d (%s %s %s): indexed %+v\nfull %+v", i, r.Agent.Name, r.Action, r.Role.Name, indexed, full)
				}
				outcomes[indexed.Outcome]++
				if slices.ContainsFunc(indexed.Reasons, func(s string) bool { return strings.Contains(s, "could not be evaluated") }) {
					failures++
				}
				candidates += p.Candidates(r)
			}
			// The table must exercise every outcome, or it proves little.
			for _, o := range []broker.Outcome{broker.OutcomeDeny, broker.OutcomeApprove, broker.OutcomeApprovals} {
				if outcomes[o] == 0 {
					t.Errorf("no %s decision among %d requests: %v", o, n, outcomes)
				}
			}
			if tt.errors > 0 && failures == 0 {
				t.Error("no request met a failing policy")
			}
			t.Logf("outcomes %v (%d denied by evaluation errors); index evaluated %.1f of %d policies on average",
				outcomes, failures, float64(candidates)/n, tt.policies)
		})
	}
}
