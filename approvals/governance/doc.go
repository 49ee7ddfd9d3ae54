// Package governance holds the rules that watch who holds access over
// time, apart from the decision on a single request (approvals/policy) and
// from the people who answer one (approvals):
//
//   - Risk scores every request and every agent (broker.RiskScorer). It
//     acts on nothing: the lease service denies a request whose score
//     crosses the threshold and contains the agent;
//   - Reviews runs periodic access reviews and break-glass post-reviews
//     (broker.ReviewService) and hears of every grant
//     (broker.GrantObserver);
//   - Alerts is where these tell humans what happened: the log, the audit
//     log and the Alerter;
//   - CheckConflictSets and AllConflicts check and combine the
//     separation-of-duty sets of the configuration; the lease store
//     enforces them when a lease goes live.
//
// Each reaches the store and the lease service only through the ports it
// declares (RiskStore, ReviewsStore, KillSwitch) and broker's interfaces;
// cmd/stint wires them.
package governance
