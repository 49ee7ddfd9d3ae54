package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/postgres/pgtest"
)

// BenchmarkReplicaThroughput measures auto-approved grants per second with
// a no-op issuer on 1, 2 and 3 replicas sharing one PostgreSQL store
// (STINT_TEST_PG_DSN), each replica running its background loops, from 16
// concurrent callers (STINT_BENCH_CALLERS) spread over the replicas on
// behalf of 200 agents. It reports, for each count, grants per second
// through the HTTP API and through the lease service alone, and the CPU
// time per grant: "cpu-µs/grant" is the process's user and system time
// over the service-level run divided by its grants (the replicas' work,
// not PostgreSQL's), which does not depend on how many cores the machine
// has; "http-cpu-µs/grant" is the same over the HTTP run, the callers'
// own HTTP clients included. The ratio against one replica is
// "speedup-vs-1". The replicas share this process, so the speedup shows
// what the store lets several replicas do at once on the cores there are,
// not more cores.
func BenchmarkReplicaThroughput(b *testing.B) {
	grants := envInt("STINT_BENCH_REPLICA_GRANTS", 3000)
	callers := envInt("STINT_BENCH_CALLERS", 16)
	const agents = 200
	var base float64
	for _, n := range []int{1, 2, 3} {
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) {
			_, dsn := pgtest.NewSchema(b)
			sc := StoreConfig{Driver: driverPostgres, DSN: dsn}
			var replicas []*Main
			for i := range n {
				m, _ := openReplica(b, sc, fmt.Sprintf("bench-%d", i), func(c *Config) {
					c.Limits = LimitsConfig{}
					for _, r := range c.Roles {
						r.AutoApprove = true
					}
				})
				if err := m.HTTP.Open("127.0.0.1:0"); err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				running := make(chan error, 1)
				go func() { running <- m.Run(ctx) }()
				b.Cleanup(func() {
					cancel()
					if err := <-running; err != nil {
						b.Error(err)
					}
				})
				replicas = append(replicas, m)
			}
			keys := make([]string, agents)
			actxs := make([]context.Context, agents)
			for i := range agents {
				_, key, _, err := replicas[0].Agents.CreateAgent(adminContext(context.Background()), broker.NewAgent{Name: fmt.Sprintf("bench-%d", i), Owner: "o@example.com"})
				if err != nil {
					b.Fatal(err)
				}
				agent, err := replicas[0].Agents.Authenticate(context.Background(), key)
				if err != nil {
					b.Fatal(err)
				}
				keys[i], actxs[i] = key, broker.NewContextWithActor(context.Background(), agent)
			}
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			var turn atomic.Int64
			grant := func() error {
				i := turn.Add(1)
				return benchGrant(hc, replicas[i%int64(n)].HTTP.URL(), keys[i%agents])
			}
			direct := func() error {
				i := turn.Add(1)
				_, _, err := replicas[i%int64(n)].Leases.RequestLease(actxs[i%agents], broker.LeaseRequest{Role: "db-readonly", TTL: "1h", Task: "bench"})
				return err
			}
			b.ResetTimer()
			for range b.N {
				if _, _, err := runCallers(callers, 200, grant); err != nil { // warm-up
					b.Fatal(err)
				}
				hd, hcpu, err := runCallers(callers, grants, grant)
				if err != nil {
					b.Fatal(err)
				}
				sd, scpu, err := runCallers(callers, grants, direct)
				if err != nil {
					b.Fatal(err)
				}
				rate := float64(grants) / sd.Seconds()
				if n == 1 {
					base = rate
				}
				b.ReportMetric(rate, "service-grants/s")
				b.ReportMetric(float64(grants)/hd.Seconds(), "grants/s")
				b.ReportMetric(float64(scpu.Microseconds())/float64(grants), "cpu-µs/grant")
				b.ReportMetric(float64(hcpu.Microseconds())/float64(grants), "http-cpu-µs/grant")
				if base > 0 {
					b.ReportMetric(rate/base, "speedup-vs-1")
				}
			}
		})
	}
}

// benchGrant requests a one-hour db-readonly lease from the server at base
// with key and expects it granted at once.
func benchGrant(hc *http.Client, base, key string) error {
	req, _ := http.NewRequest("POST", base+"/v1/leases", strings.NewReader(`{"role":"db-readonly","ttl":"1h","task":"bench"}`))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("grant: status %d", resp.StatusCode)
	}
	return nil
}

// runCallers calls do n times from callers goroutines and returns the
// wall time and the process's CPU time (user and system) it took.
func runCallers(callers, n int, do func() error) (wall, cpu time.Duration, err error) {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	cpu0 := processCPU()
	t0 := time.Now()
	for range callers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := do(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return 0, 0, e.(error)
	}
	return time.Since(t0), processCPU() - cpu0, nil
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
