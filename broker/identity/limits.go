package identity

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/stint-broker/stint/broker"
)

// RateLimiter holds one token bucket per agent: RPS requests per second with
// bursts of Burst. A zero RPS disables it. With a Store, the buckets live
// there and every replica on the store draws from the same one; without,
// they live in this process (exact for a single process).
type RateLimiter struct {
	RPS   float64
	Burst int
	// Store keeps the buckets that several replicas share; nil keeps them
	// in memory.
	Store broker.RateStore

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

// NewRateLimiter returns a limiter; rps ≤ 0 disables it.
func NewRateLimiter(rps float64, burst int) *RateLimiter {
	return &RateLimiter{RPS: rps, Burst: max(burst, 1), buckets: map[string]*rate.Limiter{}}
}

// Allow takes one request from the agent's bucket at now. Otherwise it
// returns ETOOMANY with how long to wait (whole seconds, at least one).
// A store that cannot be reached refuses the request (fail closed).
func (r *RateLimiter) Allow(ctx context.Context, agentID, agentName string, now time.Time) error {
	if r == nil || r.RPS <= 0 {
		return nil
	}
	if r.Store != nil {
		wait, err := r.Store.TakeToken(ctx, "agent:"+agentID, r.RPS, r.Burst, now)
		if err != nil {
			return fmt.Errorf("rate limit: %w", err)
		}
		if wait > 0 {
			return tooMany(agentName, wait)
		}
		return nil
	}
	r.mu.Lock()
	b, ok := r.buckets[agentID]
	if !ok {
		// Agents are registered by admins, so the map is bounded by them.
		b = rate.NewLimiter(rate.Limit(r.RPS), r.Burst)
		r.buckets[agentID] = b
	}
	r.mu.Unlock()

	res := b.ReserveN(now, 1)
	if !res.OK() {
		return tooMany(agentName, time.Second)
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return tooMany(agentName, d)
	}
	return nil
}

func tooMany(agent string, wait time.Duration) error {
	secs := max(1, int(math.Ceil(wait.Seconds())))
	e := broker.Errorf(broker.ETOOMANY, "Agent %s is over its request rate; retry in %d s.", agent, secs)
	e.RetryAfter = time.Duration(secs) * time.Second
	return e
}

// failureBuckets is the counting window of FailureCounter: one bucket per
// minute over the last hour.
const failureBuckets = 60

// maxFailureSources bounds how many source addresses FailureCounter tracks;
// the entry updated longest ago makes room for a new one.
const maxFailureSources = 10000

// FailureCounter counts failed authentications over the last hour, per
// agent (when the failure names a registered agent) and per source address.
// With a Store the counts live there, shared by every replica; without,
// they live in memory and restart with the process. It is a risk input,
// read through Service.AuthFailures.
type FailureCounter struct {
	// Store keeps the counts that several replicas share; nil keeps them
	// in memory.
	Store broker.AuthFailureStore

	mu       sync.Mutex
	byAgent  map[string]*failureWindow
	bySource map[string]*failureWindow
}

type failureWindow struct {
	minutes [failureBuckets]int64 // the unix minute each bucket counts
	counts  [failureBuckets]int
	last    int64
}

func (w *failureWindow) add(now time.Time) {
	m := now.Unix() / 60
	i := m % failureBuckets
	if w.minutes[i] != m {
		w.minutes[i], w.counts[i] = m, 0
	}
	w.counts[i]++
	w.last = m
}

func (w *failureWindow) total(now time.Time) int {
	if w == nil {
		return 0
	}
	m, n := now.Unix()/60, 0
	for i := range w.minutes {
		if m-w.minutes[i] < failureBuckets {
			n += w.counts[i]
		}
	}
	return n
}

// NewFailureCounter returns an empty counter.
func NewFailureCounter() *FailureCounter {
	return &FailureCounter{byAgent: map[string]*failureWindow{}, bySource: map[string]*failureWindow{}}
}

// failureWindowLength is how far back Agent and Source count.
const failureWindowLength = failureBuckets * time.Minute

// Record counts one failure at now; either key may be empty.
func (f *FailureCounter) Record(ctx context.Context, agentID, source string, now time.Time) error {
	if f.Store != nil {
		if err := f.Store.RecordAuthFailure(ctx, agentID, source, now); err != nil {
			return fmt.Errorf("record auth failure: %w", err)
		}
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if agentID != "" {
		w := f.byAgent[agentID]
		if w == nil {
			w = &failureWindow{}
			f.byAgent[agentID] = w
		}
		w.add(now)
	}
	if source != "" {
		w := f.bySource[source]
		if w == nil {
			if len(f.bySource) >= maxFailureSources {
				f.evictOldestSource()
			}
			w = &failureWindow{}
			f.bySource[source] = w
		}
		w.add(now)
	}
	return nil
}

func (f *FailureCounter) evictOldestSource() {
	var oldest string
	var at int64 = math.MaxInt64
	for k, w := range f.bySource {
		if w.last < at {
			oldest, at = k, w.last
		}
	}
	delete(f.bySource, oldest)
}

// Agent returns the agent's failures in the hour before now.
func (f *FailureCounter) Agent(ctx context.Context, agentID string, now time.Time) (int, error) {
	if f.Store != nil {
		return f.Store.CountAuthFailures(ctx, broker.AuthFailureAgent, agentID, now.Add(-failureWindowLength+time.Minute))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byAgent[agentID].total(now), nil
}

// Source returns the source address's failures in the hour before now.
func (f *FailureCounter) Source(ctx context.Context, ip string, now time.Time) (int, error) {
	if f.Store != nil {
		return f.Store.CountAuthFailures(ctx, broker.AuthFailureSource, ip, now.Add(-failureWindowLength+time.Minute))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bySource[ip].total(now), nil
}
