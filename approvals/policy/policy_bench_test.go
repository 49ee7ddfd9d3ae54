package policy_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stint-broker/stint/approvals/policy"
	"github.com/stint-broker/stint/broker"
)

// BenchmarkPolicyDecision measures one policy decision with 1,000 policies:
// a generated set shaped like a large installation (most policies name their
// agent or role in the scope; 5% are unscoped guards and tiers), with 500
// agents and 200 roles. Each iteration decides the same 5,000 requests with
// the scope index and by evaluating every policy (cedar-go's own way, the
// baseline), and reports the latency percentiles of both and their ratio,
// and how many policies the index selected per request on average. Times
// include garbage collection, which the decisions' own allocations trigger.
func BenchmarkPolicyDecision(b *testing.B) {
	g := newPolicyGen(42)
	g.agents, g.roles = 500, 200
	g.unscopedShare, g.forbidShare, g.approvalsShare, g.typeShare = 5, 15, 50, 5
	const policies, requests = 1000, 5000
	p, err := policy.NewFromDocuments([]policy.Document{{Name: "gen.cedar", Text: []byte(g.policies(policies))}},
		nil, policy.Config{DefaultApproverGroup: "approvers"})
	if err != nil {
		b.Fatal(err)
	}
	roles := g.roleSet()
	reqs := make([]broker.DecisionRequest, requests)
	candidates := 0
	for i := range reqs {
		reqs[i] = g.request(roles)
		candidates += p.Candidates(reqs[i])
	}
	ctx := context.Background()
	// Warm up: a server decides for agents and roles it has seen before.
	for _, r := range reqs {
		p.Decide(ctx, r)
		p.DecideUnindexed(r)
	}
	indexed := make([]time.Duration, 0, requests)
	full := make([]time.Duration, 0, requests)
	b.ResetTimer()
	for range b.N {
		indexed, full = indexed[:0], full[:0]
		for _, r := range reqs {
			start := time.Now()
			p.Decide(ctx, r)
			indexed = append(indexed, time.Since(start))
		}
		for _, r := range reqs {
			start := time.Now()
			p.DecideUnindexed(r)
			full = append(full, time.Since(start))
		}
	}
	b.StopTimer()
	slices.Sort(indexed)
	slices.Sort(full)
	pct := func(d []time.Duration, q float64) float64 {
		return float64(d[int(q*float64(len(d)-1))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(pct(indexed, 0.50), "p50-µs")
	b.ReportMetric(pct(indexed, 0.99), "p99-µs")
	b.ReportMetric(pct(full, 0.50), "unindexed-p50-µs")
	b.ReportMetric(pct(full, 0.99), "unindexed-p99-µs")
	b.ReportMetric(pct(indexed, 0.50)/pct(full, 0.50), "p50-ratio")
	b.ReportMetric(pct(indexed, 0.99)/pct(full, 0.99), "p99-ratio")
	b.ReportMetric(float64(candidates)/requests, "policies-evaluated")
}
