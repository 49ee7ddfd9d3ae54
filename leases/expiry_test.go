package leases_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/sqlite"
	"github.com/stint-broker/stint/leases"
)

// bubbleFixture builds the fixture inside a synctest bubble so the store's
// goroutines and every clock are the bubble's.
func bubbleFixture(t *testing.T, dir string) *fixture {
	db, err := sqlite.Open(context.Background(), filepath.Join(dir, "stint.db"))
	if err != nil {
		t.Fatal(err)
	}
	iss := newFakeIssuer()
	svc := leases.NewService(db, iss, testRoles, nil)
	svc.MaxSleep = time.Hour // prove the loop is woken, not polling
	return &fixture{db: db, issuer: iss, svc: svc}
}

func TestExpiryLoop(t *testing.T) {
	t.Run("RevokesAtEachDeadline", func(t *testing.T) {
		dir := t.TempDir()
		synctest.Test(t, func(t *testing.T) {
			f := bubbleFixture(t, dir)
			defer f.db.Close()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { f.svc.Run(ctx); close(done) }()
			agent := f.agent(t, "etl", map[string]string{"team": "data"})

			var ls []*broker.Lease
			for _, ttl := range []string{"2m", "30s", "1m", "30s"} {
				l, _, err := f.svc.RequestLease(agent, broker.LeaseRequest{Role: "db-readonly", TTL: ttl, Task: "x"})
				if err != nil {
					t.Fatal(err)
				}
				ls = append(ls, l)
			}
			time.Sleep(3 * time.Minute)
			synctest.Wait()
			for _, l := range ls {
				at, ok := f.issuer.revoked(l.VaultLeaseID)
				if !ok {
					t.Fatalf("lease %s (%s) not revoked", l.ID, l.TTL)
				}
				if !at.Equal(*l.ExpiresAt) {
					t.Errorf("lease %s revoked at %s, want exactly its deadline %s", l.TTL, at, l.ExpiresAt)
				}
				got, _ := f.db.FindLeaseByID(context.Background(), l.ID)
				if got.State != broker.LeaseExpired || !got.EndedAt.Equal(*l.ExpiresAt) {
					t.Errorf("lease %s: state %s ended %v, want expired at its deadline", l.TTL, got.State, got.EndedAt)
				}
			}
			cancel()
			<-done
		})
	})

	t.Run("WokenByShorterLease", func(t *testing.T) {
		dir := t.TempDir()
		synctest.Test(t, func(t *testing.T) {
			f := bubbleFixture(t, dir)
			defer f.db.Close()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { f.svc.Run(ctx); close(done) }()
			agent := f.agent(t, "etl", map[string]string{"team": "data"})

			long, _, _ := f.svc.RequestLease(agent, broker.LeaseRequest{Role: "db-readonly", TTL: "1h", Task: "x"})
			time.Sleep(10 * time.Second) // the loop now sleeps until the 1h deadline
			synctest.Wait()
			short, _, _ := f.svc.RequestLease(agent, broker.LeaseRequest{Role: "db-readonly", TTL: "15s", Task: "x"})
			time.Sleep(16 * time.Second)
			synctest.Wait()
			at, ok := f.issuer.revoked(short.VaultLeaseID)
			if !ok || !at.Equal(*short.ExpiresAt) {
				t.Fatalf("short lease revoked=%t at %s, want at %s", ok, at, short.ExpiresAt)
			}
			if _, ok := f.issuer.revoked(long.VaultLeaseID); ok {
				t.Fatal("long lease revoked early")
			}
			cancel()
			<-done
		})
	})

	// A lease whose window closes after the loop's next wake-up does not
	// make the loop run a pass: it finds the lease when it wakes.
	t.Run("NotWokenByLaterLease", func(t *testing.T) {
		dir := t.TempDir()
		synctest.Test(t, func(t *testing.T) {
			f := bubbleFixture(t, dir)
			defer f.db.Close()
			claims := &countingStore{Store: f.db}
			f.svc.Store = claims
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { f.svc.Run(ctx); close(done) }()
			agent := f.agent(t, "etl", map[string]string{"team": "data"})
			synctest.Wait()
			passes := func() int {
				synctest.Wait()
				return int(claims.expiryClaims.Load())
			}

			start := passes() // the pass at start-up
			first, _, _ := f.svc.RequestLease(agent, broker.LeaseRequest{Role: "db-readonly", TTL: "10m", Task: "x"})
			if n := passes(); n != start+1 {
				t.Fatalf("%d passes after a lease closing before the loop's wake-up, want %d", n, start+1)
			}
			later, _, _ := f.svc.RequestLease(agent, broker.LeaseRequest{Role: "db-readonly", TTL: "30m", Task: "x"})
			if n := passes(); n != start+1 {
				t.Fatalf("%d passes after a lease closing after the loop's wake-up, want %d", n, start+1)
			}
			earlier, _, _ := f.svc.RequestLease(agent, broker.LeaseRequest{Role: "db-readonly", TTL: "5m", Task: "x"})
			if n := passes(); n != start+2 {
				t.Fatalf("%d passes after a lease closing first, want %d", n, start+2)
			}
			time.Sleep(31 * time.Minute)
			synctest.Wait()
			for _, l := range []*broker.Lease{first, later, earlier} {
				if at, ok := f.issuer.revoked(l.VaultLeaseID); !ok || !at.Equal(*l.ExpiresAt) {
					t.Errorf("lease %s revoked=%t at %s, want at its deadline %s", l.TTL, ok, at, l.ExpiresAt)
				}
			}
			cancel()
			<-done
		})
	})

	t.Run("OverdueAtStartup", func(t *testing.T) {
		dir := t.TempDir()
		synctest.Test(t, func(t *testing.T) {
			f := bubbleFixture(t, dir)
			defer f.db.Close()
			agent := f.agent(t, "etl", map[string]string{"team": "data"})
			var ls []*broker.Lease
			for range 3 {
				l, _, _ := f.svc.RequestLease(agent, broker.LeaseRequest{Role: "db-readonly", TTL: "1m", Task: "x"})
				ls = append(ls, l)
			}
			// Stint is down while the windows close.
			time.Sleep(10 * time.Minute)
			start := time.Now()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { f.svc.Run(ctx); close(done) }()
			synctest.Wait()
			for _, l := range ls {
				if at, ok := f.issuer.revoked(l.VaultLeaseID); !ok || !at.Equal(start) {
					t.Fatalf("overdue lease revoked=%t at %s, want at start-up %s", ok, at, start)
				}
			}
			cancel()
			<-done
		})
	})

	t.Run("QueueDrainsWithBackoff", func(t *testing.T) {
		dir := t.TempDir()
		synctest.Test(t, func(t *testing.T) {
			f := bubbleFixture(t, dir)
			defer f.db.Close()
			f.svc.RetryBase, f.svc.RetryMax = time.Second, 30*time.Second
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { f.svc.Run(ctx); close(done) }()
			agent := f.agent(t, "etl", map[string]string{"team": "data"})
			l, _, _ := f.svc.RequestLease(agent, broker.LeaseRequest{Role: "db-readonly", TTL: "15s", Task: "x"})

			f.issuer.setRevokeErr(context.DeadlineExceeded) // Vault down at the deadline
			time.Sleep(2 * time.Minute)
			synctest.Wait()
			got, _ := f.db.FindLeaseByID(context.Background(), l.ID)
			if got.State != broker.LeaseRevoking || got.RevokeAttempts < 4 {
				t.Fatalf("while Vault is down: %s after %d attempts, want revoking with several attempts", got.State, got.RevokeAttempts)
			}
			f.issuer.setRevokeErr(nil) // Vault is back
			time.Sleep(time.Minute)
			synctest.Wait()
			got, _ = f.db.FindLeaseByID(context.Background(), l.ID)
			if got.State != broker.LeaseExpired {
				t.Fatalf("after Vault is back: %s, want expired", got.State)
			}
			cancel()
			<-done
		})
	})
}

// countingStore counts the expiry loop's passes: each claims expired leases
// first.
type countingStore struct {
	leases.Store
	expiryClaims atomic.Int64
}

func (c *countingStore) ClaimExpiredLeases(ctx context.Context, now, retryAt time.Time, limit int, actor, reason string) ([]*broker.Lease, error) {
	c.expiryClaims.Add(1)
	return c.Store.ClaimExpiredLeases(ctx, now, retryAt, limit, actor, reason)
}
