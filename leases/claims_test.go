package leases_test

import (
	"context"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases"
)

// stalledIssuer is a fakeIssuer whose revocations hang until their context
// ends, like a Vault that stopped answering; started hears of each call.
type stalledIssuer struct {
	*fakeIssuer
	started chan string
}

func (s *stalledIssuer) Revoke(ctx context.Context, id string) error {
	s.started <- id
	<-ctx.Done()
	return ctx.Err()
}

// TestReleaseClaims: a replica stopping in the middle of a revocation hands
// its claim back, and another replica on the store revokes the lease at
// once instead of after the claim timeout; a failure is not recorded
// against the lease for the interrupted call.
func TestReleaseClaims(t *testing.T) {
	f := newFixture(t)
	agent := f.agent(t, "etl", map[string]string{"team": "data"})
	l, _, err := f.svc.RequestLease(agent, broker.LeaseRequest{Role: "db-readonly", TTL: "1m", Task: "x"})
	if err != nil {
		t.Fatal(err)
	}
	later := func() time.Time { return l.ExpiresAt.Add(time.Second) }

	stalled := &stalledIssuer{fakeIssuer: f.issuer, started: make(chan string, 1)}
	a := leases.NewService(f.db, stalled, testRoles, nil)
	a.Now, a.ClaimTimeout = later, time.Hour
	b := leases.NewService(f.db, f.issuer, testRoles, nil)
	b.Now = later

	ctx, stop := context.WithCancel(context.Background())
	expired := make(chan error, 1)
	go func() { expired <- a.ExpireDue(ctx) }()
	if id := <-stalled.started; id != l.VaultLeaseID {
		t.Fatalf("a revokes %s, want %s", id, l.VaultLeaseID)
	}
	if err := b.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.issuer.revoked(l.VaultLeaseID); ok {
		t.Fatal("b revoked a lease a holds the claim of")
	}
	if n := a.HeldClaims(); n != 1 {
		t.Fatalf("a holds %d claims, want 1", n)
	}

	stop() // a stops mid-revoke
	if err := <-expired; err != nil {
		t.Fatal(err)
	}
	got, err := f.db.FindLeaseByID(context.Background(), l.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != broker.LeaseRevoking || got.RevokeAttempts != 0 || got.RevokeError != "" {
		t.Fatalf("after a stopped: state %s, %d attempts, error %q; want revoking with no failure recorded", got.State, got.RevokeAttempts, got.RevokeError)
	}
	n, err := a.ReleaseClaims(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("ReleaseClaims = %d, %v; want 1", n, err)
	}
	if n, err := a.ReleaseClaims(context.Background()); err != nil || n != 0 {
		t.Fatalf("second ReleaseClaims = %d, %v; want 0", n, err)
	}

	if err := b.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.issuer.revoked(l.VaultLeaseID); !ok {
		t.Fatal("b did not revoke the released lease")
	}
	got, err = f.db.FindLeaseByID(context.Background(), l.ID)
	if err != nil || got.State != broker.LeaseExpired {
		t.Fatalf("lease after b's pass: %v, %v; want expired", got.State, err)
	}
}

// TestReleaseClaimsAfterEnd: a lease whose revocation finished is no claim
// to release.
func TestReleaseClaimsAfterEnd(t *testing.T) {
	f := newFixture(t)
	agent := f.agent(t, "etl", map[string]string{"team": "data"})
	l, _, err := f.svc.RequestLease(agent, broker.LeaseRequest{Role: "db-readonly", TTL: "1m", Task: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.ReleaseLease(agent, l.ID); err != nil {
		t.Fatal(err)
	}
	f.issuer.setRevokeErr(leases.ErrUnavailable)
	l2, _, err := f.svc.RequestLease(agent, broker.LeaseRequest{Role: "db-readonly", TTL: "1m", Task: "y"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := f.svc.ReleaseLease(agent, l2.ID); err != nil || got.State != broker.LeaseRevoking {
		t.Fatalf("release with Vault down = %v, %v; want revoking", got, err)
	}
	if n := f.svc.HeldClaims(); n != 0 {
		t.Fatalf("service holds %d claims after both revocations were recorded, want 0", n)
	}
}
