package identity

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/stint-broker/stint/broker"
)

// RateLimiter holds one token bucket per agent: RPS requests per second with
// bursts of Burst. A zero RPS disables it.
type RateLimiter struct {
	RPS   float64
	Burst int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

// NewRateLimiter returns a limiter; rps ≤ 0 disables it.
func NewRateLimiter(rps float64, burst int) *RateLimiter {
	return &RateLimiter{RPS: rps, Burst: max(burst, 1), buckets: map[string]*rate.Limiter{}}
}

// Allow takes one request from the agent's bucket at now. Otherwise it
// returns ETOOMANY with how long to wait (whole seconds, at least one).
func (r *RateLimiter) Allow(agentID, agentName string, now time.Time) error {
	if r == nil || r.RPS <= 0 {
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
// It lives in memory: counts restart with the process. It is a risk input,
// read through Service.AuthFailures.
type FailureCounter struct {
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

// Record counts one failure at now; either key may be empty.
func (f *FailureCounter) Record(agentID, source string, now time.Time) {
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
func (f *FailureCounter) Agent(agentID string, now time.Time) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byAgent[agentID].total(now)
}

// Source returns the source address's failures in the hour before now.
func (f *FailureCounter) Source(ip string, now time.Time) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bySource[ip].total(now)
}
