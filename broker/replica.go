package broker

import (
	"context"
	"time"
)

// Several Stint replicas may serve one store (PostgreSQL) behind a load
// balancer. They share nothing but the store: anything that limits an agent
// or decides who does a piece of work lives there, so that no replica can be
// played against another and no work is done twice. The stores below hold
// that shared state; the SQLite store implements them too, so that one code
// path serves both.

// JobClaim is a replica's claim of one run of a scheduled job.
type JobClaim struct {
	// Name is the job's name, such as "reconcile".
	Name string
	// Owner is the replica holding the claim (its replica id).
	Owner string
	// Epoch grows by one with every claim of the job: a fencing token. A
	// replica whose claim passed to another holds a smaller epoch, and its
	// renewals and releases are refused.
	Epoch int64
	// Deadline is when the claim passes to another replica unless renewed.
	Deadline time.Time
}

// JobStore decides which replica runs each tick of a scheduled job. A job
// is claimed for a tick when it is due (its next due time has passed) and
// no other replica holds an unexpired claim; the claim sets the next due
// time, so a replica ticking a moment later for the same tick finds the job
// not due and skips it. A replica that dies while running a job leaves its
// claim to expire at its deadline; the next tick after it runs the job
// elsewhere.
type JobStore interface {
	// ClaimJob claims job name for owner at now, until deadline, and makes
	// the job due next at nextDue. It returns nil (and no error) when the
	// job is not due at now or another replica's claim holds.
	ClaimJob(ctx context.Context, name, owner string, now, nextDue, deadline time.Time) (*JobClaim, error)
	// RenewJob moves the deadline of a claim still held. Returns ECONFLICT
	// if the claim passed to another replica (a larger epoch) or was
	// released.
	RenewJob(ctx context.Context, c *JobClaim, deadline time.Time) error
	// FinishJob releases a claim at now, the job done for its tick. A
	// claim no longer held is left alone (no error).
	FinishJob(ctx context.Context, c *JobClaim, now time.Time) error
	// ReleaseJobs releases every claim owner holds, for a replica that
	// stops: another replica may take the jobs on its next tick without
	// waiting for the deadlines. It returns how many it released.
	ReleaseJobs(ctx context.Context, owner string) (int, error)
}

// RateStore keeps token buckets that every replica draws from, so that an
// agent gets one request rate however many replicas it talks to.
type RateStore interface {
	// TakeToken takes one request from bucket key at now: perSecond
	// requests a second with bursts of burst (at least 1). It returns 0 if
	// the request may go ahead, and otherwise how long until one may; a
	// refused request takes nothing.
	TakeToken(ctx context.Context, key string, perSecond float64, burst int, now time.Time) (wait time.Duration, err error)
	// PruneRates deletes buckets full before before (they mean nothing)
	// and returns how many.
	PruneRates(ctx context.Context, before time.Time) (int, error)
}

// Kinds of failed-authentication counters.
const (
	AuthFailureAgent  = "agent"
	AuthFailureSource = "source"
)

// AuthFailureStore counts failed authentications per agent and per source
// address, by the minute, for every replica at once: a risk input.
type AuthFailureStore interface {
	// RecordAuthFailure counts one failure at now against the agent and the
	// source address; either may be empty (not counted).
	RecordAuthFailure(ctx context.Context, agentID, source string, now time.Time) error
	// CountAuthFailures returns the failures counted against key of kind
	// (AuthFailureAgent or AuthFailureSource) in the minutes from since's
	// minute on.
	CountAuthFailures(ctx context.Context, kind, key string, since time.Time) (int, error)
	// PruneAuthFailures deletes the counts of minutes before before and
	// returns how many.
	PruneAuthFailures(ctx context.Context, before time.Time) (int, error)
}

// GCRA returns the new theoretical arrival time of a rate bucket at now, and
// whether a request is allowed: the generic cell rate algorithm, a token
// bucket of burst requests refilled at perSecond, held as one time. tat is
// the bucket's stored time (zero for a new bucket). When the request is
// refused, next is unchanged and wait says how long until one would pass.
func GCRA(tat, now time.Time, perSecond float64, burst int) (next time.Time, wait time.Duration) {
	interval := time.Duration(float64(time.Second) / perSecond)
	if interval <= 0 {
		interval = 1
	}
	burst = max(burst, 1)
	if tat.Before(now) {
		tat = now
	}
	next = tat.Add(interval)
	if over := next.Sub(now) - time.Duration(burst)*interval; over > 0 {
		return tat, over
	}
	return next, 0
}

// OutstandingLeaseStates are the states a per-agent cap on live leases
// counts: every lease that holds, or may come to hold, a live credential.
var OutstandingLeaseStates = []LeaseState{LeasePending, LeaseApproved, LeaseIssuing, LeaseActive, LeaseRevoking}

// LeaseCapStore creates leases under a per-agent cap that every replica on
// the store honours: the count and the insert are one transaction, with the
// agent's row locked, so that requests racing on several replicas cannot
// all take the last slot.
type LeaseCapStore interface {
	// CreateLeaseCapped is CreateLeaseExclusive that also counts, in the
	// same transaction, the agent's outstanding leases
	// (OutstandingLeaseStates): with maxOutstanding or more, and l itself
	// outstanding, it creates nothing and returns ETOOMANY. maxOutstanding
	// ≤ 0 means no cap.
	CreateLeaseCapped(ctx context.Context, l *Lease, actor, reason string, conflicts []string, maxOutstanding int) error
}

// LeaseCapReached is the ETOOMANY of a request over an agent's cap on live
// leases, with a Retry-After of 30 s.
func LeaseCapReached(agent string, held int) *Error {
	e := Errorf(ETOOMANY, "Agent %s already holds %d live or pending leases, the most allowed (limits.max_live_leases); release one first.", agent, held)
	e.RetryAfter = 30 * time.Second
	return e
}

// RevocationClaim is a replica's claim of one revoking lease: the lease's
// NextRevokeAt pushed to Until while the replica revokes it, which hides
// it from other replicas until then.
type RevocationClaim struct {
	LeaseID string
	Until   time.Time
}

// RevocationClaimStore hands a stopping replica's revocation claims back to
// the others, so that a revocation it began is taken at once rather than
// when its claim runs out (leases.claim_timeout).
type RevocationClaimStore interface {
	// ReleaseRevocations makes each claimed lease due at now, if it is
	// still revoking and still claimed until the claim's Until (a lease
	// claimed again since, by this replica or another, is left alone). It
	// records no event and returns how many it released.
	ReleaseRevocations(ctx context.Context, claims []RevocationClaim, now time.Time) (int, error)
}

// RiskPatternStore keeps each agent's request pattern (the moving average
// and recent requests behind the live risk score's rate and burst factors)
// for every replica at once, so that an agent spreading its requests over
// several replicas is measured on all of them.
type RiskPatternStore interface {
	// UpdateRiskPattern passes the agent's stored pattern (empty when it
	// has none) to update and stores what update returns, dated now, in
	// one transaction that holds the pattern's row: requests scored at
	// once on several replicas are each counted once. update runs inside
	// the transaction and must not block; its error is returned and
	// nothing is stored.
	UpdateRiskPattern(ctx context.Context, agentID string, now time.Time, update func(pattern []byte) ([]byte, error)) error
	// PruneRiskPatterns deletes the patterns not updated since before
	// (they are rebuilt from the lease history when needed) and returns
	// how many.
	PruneRiskPatterns(ctx context.Context, before time.Time) (int, error)
}

// NoticeClaimStore hands a stopping replica's claimed approval notices back
// to the others, so that a message it was sending goes out at once rather
// than when its claim runs out (the outbox's claim timeout).
type NoticeClaimStore interface {
	// ReleaseNotices makes each notice of ids due at now if it is unsent
	// and still claimed until until (ClaimNotices' retryAt); a notice
	// claimed again since is left alone. It returns how many it released.
	ReleaseNotices(ctx context.Context, ids []int64, until, now time.Time) (int, error)
}
