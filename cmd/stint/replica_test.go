package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/postgres/pgtest"
	"github.com/stint-broker/stint/leases/vault"
)

// replicaStores are the stores two replicas can share: one SQLite file
// (two processes' worth of handles) and, with STINT_TEST_PG_DSN, one
// PostgreSQL schema.
func replicaStores(t *testing.T) map[string]func(tb testing.TB) StoreConfig {
	return map[string]func(tb testing.TB) StoreConfig{
		"SQLite": func(tb testing.TB) StoreConfig {
			return StoreConfig{Driver: driverSQLite, Path: filepath.Join(tb.TempDir(), "stint.db")}
		},
		"PostgreSQL": func(tb testing.TB) StoreConfig {
			_, dsn := pgtest.NewSchema(tb)
			return StoreConfig{Driver: driverPostgres, DSN: dsn}
		},
	}
}

// openReplica opens a Main named id on store, with a no-op issuer; it
// closes when tb ends.
func openReplica(tb testing.TB, store StoreConfig, id string, edit func(*Config)) (*Main, *syncBuffer) {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Store = store
	cfg.Roles = vault.DevRoles()
	if edit != nil {
		edit(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	var logs syncBuffer
	m := NewMain(cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	m.ReplicaID = id
	m.Issuer = &noopIssuer{}
	m.Getenv = func(string) string { return testAdminToken }
	if err := m.Open(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m, &logs
}

// TestReplicasRunJobOncePerTick runs one scheduled job on two replicas of
// one store, both firing at every tick at once: each tick runs it exactly
// once, and a replica's claims are released when it stops.
func TestReplicasRunJobOncePerTick(t *testing.T) {
	for name, store := range replicaStores(t) {
		t.Run(name, func(t *testing.T) {
			sc := store(t)
			a, _ := openReplica(t, sc, "replica-a", nil)
			b, _ := openReplica(t, sc, "replica-b", nil)
			ctx := t.Context()
			every := cron.Every(time.Second)
			var runs atomic.Int64
			ranOn := map[string]int{}
			var mu sync.Mutex
			job := func(m *Main) cron.Job {
				return m.exclusiveJob(ctx, "test_job", every, func(context.Context) {
					runs.Add(1)
					mu.Lock()
					ranOn[m.ReplicaID]++
					mu.Unlock()
					time.Sleep(20 * time.Millisecond)
				})
			}
			ja, jb := job(a), job(b)
			const ticks = 3
			for tick := 1; tick <= ticks; tick++ {
				before := runs.Load()
				var wg sync.WaitGroup
				for range 3 {
					wg.Go(ja.Run)
					wg.Go(jb.Run)
				}
				wg.Wait()
				if got := runs.Load() - before; got != 1 {
					t.Fatalf("tick %d: the job ran %d times on two replicas, want once", tick, got)
				}
				time.Sleep(time.Until(every.Next(time.Now())) + 50*time.Millisecond)
			}
			t.Logf("runs by replica: %v", ranOn)

			// A claim a stopped replica held is released on Close.
			c, err := a.DB.ClaimJob(ctx, "held_job", a.ReplicaID, time.Now(), time.Now().Add(time.Hour), time.Now().Add(time.Hour))
			if err != nil || c == nil {
				t.Fatalf("ClaimJob = %v, %v", c, err)
			}
			a.Cron = cron.New() // as if it had served
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			if c2, err := b.DB.ClaimJob(ctx, "held_job", b.ReplicaID, time.Now().Add(time.Hour), time.Now().Add(2*time.Hour), time.Now().Add(2*time.Hour)); err != nil || c2 == nil {
				t.Fatalf("after replica-a stopped, ClaimJob(replica-b) = %v, %v; want the released claim", c2, err)
			}
		})
	}
}

// TestReplicasShareRateLimit sends one agent's requests to two replicas
// on one PostgreSQL store in turn: the rate is the agent's, not each
// replica's.
func TestReplicasShareRateLimit(t *testing.T) {
	sc := replicaStores(t)["PostgreSQL"](t)
	limits := func(c *Config) { c.Limits.RequestsPerSecond, c.Limits.Burst = 0.5, 3 }
	a, _ := openReplica(t, sc, "replica-a", limits)
	b, _ := openReplica(t, sc, "replica-b", limits)
	ctx := t.Context()
	_, key, _, err := a.Agents.CreateAgent(adminContext(ctx), broker.NewAgent{Name: "etl-bot", Owner: "o@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	replicas := []*Main{a, b}
	for i := range 3 {
		if _, err := replicas[i%2].Agents.AuthenticateRequest(ctx, broker.AuthRequest{Bearer: key, SourceIP: "192.0.2.1"}); err != nil {
			t.Fatalf("request %d on replica %d: %v", i+1, i%2, err)
		}
	}
	for i, m := range replicas {
		_, err := m.Agents.AuthenticateRequest(ctx, broker.AuthRequest{Bearer: key, SourceIP: "192.0.2.1"})
		if broker.ErrorCode(err) != broker.ETOOMANY {
			t.Errorf("4th request on replica %d = %v; want ETOOMANY: the burst of 3 is shared", i, err)
		}
	}
}

// TestReplicasShareAuthFailures fails authentication on two replicas of
// one store: the risk input counts both on either.
func TestReplicasShareAuthFailures(t *testing.T) {
	for name, store := range replicaStores(t) {
		t.Run(name, func(t *testing.T) {
			sc := store(t)
			a, _ := openReplica(t, sc, "replica-a", nil)
			b, _ := openReplica(t, sc, "replica-b", nil)
			ctx := t.Context()
			for _, m := range []*Main{a, b, b} {
				_, err := m.Agents.AuthenticateRequest(ctx, broker.AuthRequest{Bearer: "stint_wrong", SourceIP: "198.51.100.9"})
				if broker.ErrorCode(err) != broker.EUNAUTHORIZED {
					t.Fatalf("bad key = %v, want EUNAUTHORIZED", err)
				}
			}
			for i, m := range []*Main{a, b} {
				_, n, err := m.Agents.AuthFailures(ctx, "", "198.51.100.9")
				if err != nil {
					t.Fatal(err)
				}
				if n != 3 {
					t.Errorf("replica %d counts %d failures from the address, want 3 (both replicas')", i, n)
				}
			}
		})
	}
}

// TestReplicasShareLeaseCap has one agent request leases through two
// replicas of one store at once: together they grant no more than
// limits.max_live_leases.
func TestReplicasShareLeaseCap(t *testing.T) {
	for name, store := range replicaStores(t) {
		t.Run(name, func(t *testing.T) {
			sc := store(t)
			limits := func(c *Config) { c.Limits.MaxLiveLeases = 3 }
			a, _ := openReplica(t, sc, "replica-a", limits)
			b, _ := openReplica(t, sc, "replica-b", limits)
			ag, _, _, err := a.Agents.CreateAgent(adminContext(t.Context()), broker.NewAgent{Name: "etl-bot", Owner: "o@example.com"})
			if err != nil {
				t.Fatal(err)
			}
			actx := broker.NewContextWithActor(t.Context(), broker.Actor{Kind: broker.ActorAgent, Name: ag.Name, AgentID: ag.ID, AuthMethod: broker.AuthAPIKey})
			var mu sync.Mutex
			var granted, refused int
			var wg sync.WaitGroup
			for i := range 10 {
				m := []*Main{a, b}[i%2]
				wg.Go(func() {
					_, _, err := m.Leases.RequestLease(actx, broker.LeaseRequest{Role: "db-readonly", TTL: "30m", Task: "report"})
					mu.Lock()
					defer mu.Unlock()
					switch broker.ErrorCode(err) {
					case "":
						granted++
					case broker.ETOOMANY:
						refused++
					default:
						t.Errorf("RequestLease: %v", err)
					}
				})
			}
			wg.Wait()
			if granted != 3 || refused != 7 {
				t.Fatalf("granted %d, refused %d of 10 requests on two replicas; want 3 and 7 (max_live_leases 3)", granted, refused)
			}
		})
	}
}
