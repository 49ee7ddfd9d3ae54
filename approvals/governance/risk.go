package governance

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/stint-broker/stint/broker"
)

// Risk scoring constants. A score is the capped sum of its factors' points;
// each factor's points grow in steps with what it measures.
const (
	// riskBucket is the length of the buckets whose request counts the
	// rate factor averages.
	riskBucket = 5 * time.Minute
	// riskAlpha is the weight of the newest bucket in the moving average.
	riskAlpha = 0.1
	// riskMinSD floors the standard deviation of the rate, so that an agent
	// with a perfectly regular history is not alarmed by one extra request.
	riskMinSD = 1.0
	// riskHistory is how far back an agent's pattern is rebuilt from the
	// lease history when Stint first sees it.
	riskHistory = 14 * 24 * time.Hour
	// riskHistoryLimit bounds the leases read for that.
	riskHistoryLimit = 5000
	// riskPatternMin is how many past requests the hour and TTL factors
	// need before they judge what is unusual.
	riskPatternMin = 20
	// riskTTLMin is how many past TTLs the TTL factor needs.
	riskTTLMin = 5
)

// RiskStore is what risk scoring reads: the lease history (and agents, to
// find whose leases are live).
type RiskStore interface {
	broker.LeaseStore
	broker.AgentStore
}

// Risk computes the live risk score of requests (0–100) and says when a
// score crosses RevokeThreshold: it implements broker.RiskScorer. It acts
// on nothing: the lease service denies the request and contains the agent.
// The score is the sum, capped at 100, of:
//
//   - rate (up to 30): the agent's requests in the current five-minute
//     bucket against the exponentially weighted moving average and standard
//     deviation of its past buckets (a z-score; an agent without history is
//     compared with one request per bucket): z ≥ 2 adds 10, ≥ 4 adds 20,
//     ≥ 8 adds 30;
//   - burst (up to 50): requests in the last minute: 5 add 10, 10 add 25,
//     15 add 40, 20 add 50;
//   - first_use (15): the agent never asked for the role before;
//   - unusual_hour (10): with 20 or more past requests, fewer than 2% of
//     them (this one excluded) fell in this hour of the day (in Location);
//   - denials (up to 30): 10 per denied or rejected request in the last hour;
//   - auth_failures (up to 25): 5 per failed authentication in the last hour
//     blamed on the agent or coming from the request's address;
//   - ttl (up to 15): with 5 or more past requests, the window asked is at
//     least twice (8) or four times (15) the agent's median;
//   - task_roles (up to 15): the agent's live leases (pending to active) of
//     the request's task hold other roles: 2 add 5, 3 add 10, 4 or more
//     add 15. One task gathering many privileges is a sign of a task
//     stretched beyond what it was started for.
//
// The per-agent patterns live in memory, or in the store with Patterns
// (several replicas). Stint rebuilds an agent's pattern from the last 14
// days of its lease history the first time it scores it (seeding the
// store when it has none), so a restart loses nothing.
type Risk struct {
	Store  RiskStore
	Logger *slog.Logger
	// Now is the clock; tests replace it.
	Now func() time.Time
	// Location is the time zone of the unusual-hour factor.
	Location *time.Location
	// AuthFailures returns the failed authentications in the last hour that
	// named the agent (its key, client id or certificate); nil counts none.
	// Failures that name no agent are not counted against any, even from
	// the agent's address: anyone can make them (a browser's favicon, a
	// scanner, a neighbour behind the same NAT).
	AuthFailures func(ctx context.Context, agentID string) (int, error)
	// RevokeThreshold is the score at which an assessment says to contain
	// the agent (RiskAssessment.Contain): the lease service denies the
	// request and pulls the kill switch. Zero or more than 100 never
	// contains.
	RevokeThreshold int
	// Patterns, when set, keeps the agents' request patterns in the store,
	// shared by every replica on it, so that requests spread over several
	// replicas are all counted (measure). Nil keeps them in this process.
	Patterns broker.RiskPatternStore

	mu     sync.Mutex
	agents map[string]*riskPattern
}

// NewRisk returns a scorer with the default revoke threshold (90).
func NewRisk(store RiskStore, logger *slog.Logger) *Risk {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Risk{
		Store: store, Logger: logger, Now: time.Now, Location: time.UTC, RevokeThreshold: 90,
		agents: map[string]*riskPattern{},
	}
}

var _ broker.RiskScorer = (*Risk)(nil)

// riskPattern is what Stint knows of one agent's habits.
type riskPattern struct {
	mean, variance float64 // EWMA of the request count per bucket
	seen           int     // buckets folded into the average
	bucket         int64   // the current bucket
	count          int     // requests in the current bucket
	recent         []time.Time
	hours          [24]int
	total          int
	ttls           []time.Duration // the last ttlWindow TTLs asked
	// usedRoles are roles the store showed the agent has requested before;
	// once true it stays true, so the store is asked once per role.
	usedRoles map[string]bool
}

const ttlWindow = 50

// add counts a request at t asking for ttl (zero: not a lease request).
func (p *riskPattern) add(t time.Time, ttl time.Duration, loc *time.Location) {
	p.advance(t)
	p.count++
	p.recent = append(p.recent, t)
	if cut := t.Add(-time.Minute); len(p.recent) > 0 && !p.recent[0].After(cut) {
		i := sort.Search(len(p.recent), func(i int) bool { return p.recent[i].After(cut) })
		p.recent = append(p.recent[:0], p.recent[i:]...)
	}
	p.hours[t.In(loc).Hour()]++
	p.total++
	if ttl > 0 {
		p.ttls = append(p.ttls, ttl)
		if len(p.ttls) > ttlWindow {
			p.ttls = p.ttls[len(p.ttls)-ttlWindow:]
		}
	}
}

// clone returns a copy of p that can be changed without changing p.
func (p *riskPattern) clone() *riskPattern {
	q := *p
	q.recent, q.ttls, q.usedRoles = slices.Clone(p.recent), slices.Clone(p.ttls), nil
	return &q
}

// advance folds finished buckets up to t's into the moving average.
func (p *riskPattern) advance(t time.Time) {
	b := t.UnixNano() / int64(riskBucket)
	if p.seen == 0 && p.count == 0 && p.bucket == 0 {
		p.bucket = b
		return
	}
	if b <= p.bucket {
		return
	}
	p.fold(float64(p.count))
	// Empty buckets since; after a few hundred the average is ~0 anyway.
	for i := int64(1); i < b-p.bucket && i < 300; i++ {
		p.fold(0)
	}
	p.bucket, p.count = b, 0
}

// fold adds one bucket's count x to the exponentially weighted mean and
// variance.
func (p *riskPattern) fold(x float64) {
	if p.seen == 0 {
		p.mean, p.variance = x, 0
	} else {
		diff := x - p.mean
		incr := riskAlpha * diff
		p.mean += incr
		p.variance = (1 - riskAlpha) * (p.variance + diff*incr)
	}
	p.seen++
}

// burst counts requests in the minute before t.
func (p *riskPattern) burst(t time.Time) int {
	cut := t.Add(-time.Minute)
	n := 0
	for _, r := range p.recent {
		if r.After(cut) && !r.After(t) {
			n++
		}
	}
	return n
}

// rateZ is the z-score of the current bucket's count.
func (p *riskPattern) rateZ() float64 {
	mean, sd := 1.0, 1.0 // an agent without history: one request per bucket
	if p.seen >= 6 {
		mean, sd = p.mean, math.Sqrt(p.variance)
	}
	return (float64(p.count) - mean) / math.Max(sd, riskMinSD)
}

// pattern returns the agent's pattern, rebuilding it from the lease
// history on first use. Callers read and change it under r.mu.
func (r *Risk) pattern(ctx context.Context, agentID string, now time.Time) (*riskPattern, error) {
	r.mu.Lock()
	p := r.agents[agentID]
	r.mu.Unlock()
	if p != nil {
		return p, nil
	}
	since := now.Add(-riskHistory)
	past, _, err := r.Store.FindLeases(ctx, broker.LeaseFilter{AgentID: &agentID, CreatedAfter: &since, Limit: riskHistoryLimit})
	if err != nil {
		return nil, fmt.Errorf("read lease history: %w", err)
	}
	p = &riskPattern{}
	for i := len(past) - 1; i >= 0; i-- { // oldest first
		l := past[i]
		if l.CreatedAt.After(now) {
			continue
		}
		p.add(l.CreatedAt, time.Duration(l.TTL), r.loc())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if q := r.agents[agentID]; q != nil {
		return q, nil // another request rebuilt it meanwhile
	}
	r.agents[agentID] = p
	return p, nil
}

// measure runs fn on the agent's pattern under the lock that guards it
// and returns the pattern. With Patterns, the lock is the store's row of
// the pattern, held by one replica at a time: the stored pattern replaces
// this process's copy, fn changes it, and it is stored back, in one
// transaction (a store without one is seeded with this process's copy,
// rebuilt from the lease history). Without Patterns, the lock is r.mu over
// the copy in memory. usedRoles stays in memory either way: it only
// remembers what the store already answered.
func (r *Risk) measure(ctx context.Context, agentID string, now time.Time, fn func(p *riskPattern)) (*riskPattern, error) {
	p, err := r.pattern(ctx, agentID, now)
	if err != nil {
		return nil, err
	}
	if r.Patterns == nil {
		r.mu.Lock()
		fn(p)
		r.mu.Unlock()
		return p, nil
	}
	err = r.Patterns.UpdateRiskPattern(ctx, agentID, now, func(stored []byte) ([]byte, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(stored) > 0 {
			if err := p.decode(stored); err != nil {
				return nil, err
			}
		}
		fn(p)
		return p.encode()
	})
	if err != nil {
		return nil, fmt.Errorf("measure the agent's requests: %w", err)
	}
	return p, nil
}

// storedPattern is a riskPattern as the store keeps it (JSON).
type storedPattern struct {
	Mean     float64 `json:"mean"`
	Variance float64 `json:"variance"`
	Seen     int     `json:"seen"`
	Bucket   int64   `json:"bucket"`
	Count    int     `json:"count"`
	Recent   []int64 `json:"recent"` // unix nanoseconds
	Hours    [24]int `json:"hours"`
	Total    int     `json:"total"`
	TTLs     []int64 `json:"ttls"` // nanoseconds
}

// maxStoredRecent bounds the recent requests stored: far over the highest
// burst step, so that a flood still scores the most, without the pattern
// growing with it.
const maxStoredRecent = 256

func (p *riskPattern) encode() ([]byte, error) {
	sp := storedPattern{Mean: p.mean, Variance: p.variance, Seen: p.seen, Bucket: p.bucket, Count: p.count,
		Hours: p.hours, Total: p.total}
	recent := p.recent[max(0, len(p.recent)-maxStoredRecent):]
	for _, t := range recent {
		sp.Recent = append(sp.Recent, t.UnixNano())
	}
	for _, d := range p.ttls {
		sp.TTLs = append(sp.TTLs, int64(d))
	}
	b, err := json.Marshal(sp)
	if err != nil {
		return nil, fmt.Errorf("encode risk pattern: %w", err)
	}
	return b, nil
}

func (p *riskPattern) decode(b []byte) error {
	var sp storedPattern
	if err := json.Unmarshal(b, &sp); err != nil {
		return fmt.Errorf("decode risk pattern: %w", err)
	}
	p.mean, p.variance, p.seen, p.bucket, p.count = sp.Mean, sp.Variance, sp.Seen, sp.Bucket, sp.Count
	p.hours, p.total = sp.Hours, sp.Total
	p.recent = p.recent[:0]
	for _, n := range sp.Recent {
		p.recent = append(p.recent, time.Unix(0, n).UTC())
	}
	p.ttls = p.ttls[:0]
	for _, n := range sp.TTLs {
		p.ttls = append(p.ttls, time.Duration(n))
	}
	return nil
}

func (r *Risk) loc() *time.Location {
	if r.Location == nil {
		return time.UTC
	}
	return r.Location
}

// ScoreRequest implements broker.RiskScorer. It reads the agent's pattern
// and history, counts the request in the pattern (a DryRun is scored as if
// counted, and not counted), and scores what it measured with score, which
// sets Contain at or over RevokeThreshold.
func (r *Risk) ScoreRequest(ctx context.Context, req broker.DecisionRequest) (broker.RiskAssessment, error) {
	if req.Agent == nil || req.Role == nil {
		return broker.RiskAssessment{}, fmt.Errorf("score risk: the request names no agent or role")
	}
	now := req.Time
	if now.IsZero() {
		now = r.Now()
	}
	now = now.UTC()
	// What the history says before this request is counted.
	var f riskFacts
	var usedBefore bool
	p, err := r.measure(ctx, req.Agent.ID, now, func(p *riskPattern) {
		r.countRequest(p, req, now, &f)
		usedBefore = p.usedRoles[req.Role.Name]
	})
	if err != nil {
		return broker.RiskAssessment{}, err
	}

	if req.Action == broker.ActionRequest && !usedBefore {
		_, n, err := r.Store.FindLeases(ctx, broker.LeaseFilter{AgentID: &req.Agent.ID, Role: &req.Role.Name, Limit: 1, NoTotal: true})
		if err != nil {
			return broker.RiskAssessment{}, fmt.Errorf("count past requests for the role: %w", err)
		}
		if n == 0 {
			f.FirstUse = req.Role.Name
		} else {
			r.mu.Lock()
			if p.usedRoles == nil {
				p.usedRoles = map[string]bool{}
			}
			p.usedRoles[req.Role.Name] = true
			r.mu.Unlock()
		}
	}
	if req.Action == broker.ActionRequest && req.Task != "" {
		if f.TaskRoles, err = r.taskRoles(ctx, req); err != nil {
			return broker.RiskAssessment{}, err
		}
		f.Task = req.Task
	}
	if err := r.ambientFacts(ctx, req.Agent.ID, now, &f); err != nil {
		return broker.RiskAssessment{}, err
	}
	return score(f, r.RevokeThreshold), nil
}

// countRequest measures what p says before req is counted, then counts
// it (measure holds the pattern's lock).
func (r *Risk) countRequest(p *riskPattern, req broker.DecisionRequest, now time.Time, f *riskFacts) {
	f.Hour = now.In(r.loc()).Hour()
	if p.total > 0 {
		f.PastTotal, f.HourShare = p.total, float64(p.hours[f.Hour])/float64(p.total)
	}
	if req.Action == broker.ActionRequest && len(p.ttls) >= riskTTLMin {
		sorted := slices.Clone(p.ttls)
		slices.Sort(sorted)
		f.TTL, f.MedianTTL = req.TTL, sorted[len(sorted)/2]
	}
	ttl := time.Duration(0)
	if req.Action == broker.ActionRequest {
		ttl = req.TTL
	}
	counted := p
	if req.DryRun {
		counted = p.clone() // scored as if counted, and forgotten
	}
	counted.add(now, ttl, r.loc())
	f.Z, f.Burst, f.Count = counted.rateZ(), counted.burst(now), counted.count
}

// riskFacts is what scoring measured about a request, or about an agent
// between requests. Zero fields were not measured and add nothing.
type riskFacts struct {
	// Count is the agent's requests in the current bucket, Z their
	// z-score against its moving average.
	Count int
	Z     float64
	// Burst is the agent's requests in the last minute.
	Burst int
	// FirstUse names the role when the agent never asked for it before.
	FirstUse string
	// TTL is the window asked; MedianTTL the agent's median (zero: too few
	// past requests to judge).
	TTL, MedianTTL time.Duration
	// Task is the request's task and TaskRoles the other roles its live
	// leases hold.
	Task      string
	TaskRoles []string
	// PastTotal is the agent's past requests (fewer than riskPatternMin:
	// not judged), HourShare the share of them in Hour.
	PastTotal int
	HourShare float64
	Hour      int
	// Denials is the agent's denied or rejected requests in the last hour;
	// AuthFailures its failed authentications in the last hour.
	Denials      int
	AuthFailures int
}

// score turns facts into an assessment, and says to contain the agent at
// or over revokeThreshold. It is a pure function: the same facts always
// give the same assessment, and nothing is read or changed.
func score(f riskFacts, revokeThreshold int) broker.RiskAssessment {
	var factors []broker.RiskFactor
	add := func(name string, points int, format string, args ...any) {
		if points > 0 {
			factors = append(factors, broker.RiskFactor{Name: name, Points: points, Detail: fmt.Sprintf(format, args...)})
		}
	}
	if f.Count > 0 {
		add(broker.RiskRate, steps(f.Z, []float64{2, 4, 8}, []int{10, 20, 30}), "%d requests in this %s bucket, z-score %.1f against the agent's moving average", f.Count, riskBucket, f.Z)
	}
	add(broker.RiskBurst, steps(float64(f.Burst), []float64{5, 10, 15, 20}, []int{10, 25, 40, 50}), "%d requests in the last minute", f.Burst)
	if f.FirstUse != "" {
		add(broker.RiskFirstUse, 15, "first request for role %s", f.FirstUse)
	}
	if f.MedianTTL > 0 {
		ratio := float64(f.TTL) / float64(f.MedianTTL)
		add(broker.RiskTTL, steps(ratio, []float64{2, 4}, []int{8, 15}), "asks %s, %.1f× the agent's median of %s", f.TTL, ratio, f.MedianTTL)
	}
	if f.Task != "" {
		add(broker.RiskTaskRoles, steps(float64(len(f.TaskRoles)), []float64{2, 3, 4}, []int{5, 10, 15}),
			"task %q already holds live leases of %d other roles (%s)", f.Task, len(f.TaskRoles), strings.Join(f.TaskRoles, ", "))
	}
	if f.PastTotal >= riskPatternMin && f.HourShare < 0.02 {
		add(broker.RiskUnusualHour, 10, "%.1f%% of the agent's %d past requests came at %02d:00", f.HourShare*100, f.PastTotal, f.Hour)
	}
	add(broker.RiskDenials, min(10*f.Denials, 30), "%d denied or rejected requests in the last hour", f.Denials)
	add(broker.RiskAuthFailures, min(5*f.AuthFailures, 25), "%d failed authentications naming the agent in the last hour", f.AuthFailures)
	a := assessment(factors)
	a.Contain = crosses(a.Score, revokeThreshold)
	return a
}

// taskRoles returns the sorted roles other than the requested one that the
// agent's live leases of the request's task hold.
func (r *Risk) taskRoles(ctx context.Context, req broker.DecisionRequest) ([]string, error) {
	roles, err := r.Store.TaskRoles(ctx, req.Agent.ID, req.Task)
	if err != nil {
		return nil, fmt.Errorf("find the task's live leases: %w", err)
	}
	var others []string
	for _, role := range roles {
		if role != req.Role.Name {
			others = append(others, role)
		}
	}
	return others, nil
}

// Crosses reports whether score reaches RevokeThreshold, which contains the
// agent and denies its request. A threshold of zero or over 100 never
// does.
func (r *Risk) Crosses(score int) bool { return crosses(score, r.RevokeThreshold) }

func crosses(score, threshold int) bool {
	return threshold > 0 && threshold <= 100 && score >= threshold
}

// ambientFacts measures what holds between requests: recent denials and
// failed authentications naming the agent.
func (r *Risk) ambientFacts(ctx context.Context, agentID string, now time.Time, f *riskFacts) error {
	denied, err := r.Store.CountRefusals(ctx, agentID, now.Add(-time.Hour))
	if err != nil {
		return fmt.Errorf("count recent denials: %w", err)
	}
	f.Denials = denied
	if r.AuthFailures != nil {
		if f.AuthFailures, err = r.AuthFailures(ctx, agentID); err != nil {
			return fmt.Errorf("count failed authentications: %w", err)
		}
	}
	return nil
}

// steps returns the points of the highest threshold v reaches, or 0.
func steps(v float64, thresholds []float64, points []int) int {
	p := 0
	for i, t := range thresholds {
		if v >= t {
			p = points[i]
		}
	}
	return p
}

// assessment sums factors into a score capped at 100.
func assessment(factors []broker.RiskFactor) broker.RiskAssessment {
	sum := 0
	for _, f := range factors {
		sum += f.Points
	}
	return broker.RiskAssessment{Score: min(sum, 100), Factors: factors}
}

// ScoreAgent implements broker.RiskScorer: an agent's current score
// without a request (its rate and bursts so far, recent denials and failed
// authentications naming it), with Contain as ScoreRequest sets it. It
// counts nothing.
func (r *Risk) ScoreAgent(ctx context.Context, agentID string, now time.Time) (broker.RiskAssessment, error) {
	now = now.UTC()
	var f riskFacts
	if _, err := r.measure(ctx, agentID, now, func(p *riskPattern) {
		p.advance(now)
		f.Z, f.Burst, f.Count = p.rateZ(), p.burst(now), p.count
	}); err != nil {
		return broker.RiskAssessment{}, err
	}
	if err := r.ambientFacts(ctx, agentID, now, &f); err != nil {
		return broker.RiskAssessment{}, err
	}
	return score(f, r.RevokeThreshold), nil
}
