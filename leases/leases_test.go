package leases_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/sqlite"
	"github.com/stint-broker/stint/leases"
)

// fakeIssuer is an in-memory Issuer: it records what it minted and revoked,
// and can be told to fail.
type fakeIssuer struct {
	mu        sync.Mutex
	now       func() time.Time
	live      map[string]time.Time // vault id → issued at
	revokedAt map[string]time.Time
	issueErr  error
	revokeErr error
	n         int
}

func newFakeIssuer() *fakeIssuer {
	return &fakeIssuer{now: time.Now, live: map[string]time.Time{}, revokedAt: map[string]time.Time{}}
}

func (f *fakeIssuer) Issue(_ context.Context, req leases.IssueRequest) (*leases.Grant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.issueErr != nil {
		return nil, f.issueErr
	}
	f.n++
	id := fmt.Sprintf("%s/%d", req.Role.Vault.Path, f.n)
	f.live[id] = f.now()
	user := fmt.Sprintf("v-%s-%d", req.Agent, f.n)
	return &leases.Grant{VaultLeaseID: id, LeaseDuration: req.Window, Data: map[string]any{"username": user, "password": "p"}, Username: user}, nil
}

func (f *fakeIssuer) Revoke(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.revokeErr != nil {
		return f.revokeErr
	}
	delete(f.live, id)
	if _, ok := f.revokedAt[id]; !ok {
		f.revokedAt[id] = f.now()
	}
	return nil
}

func (f *fakeIssuer) ListIssued(context.Context, []*broker.Role) ([]leases.Issued, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []leases.Issued
	for id, at := range f.live {
		out = append(out, leases.Issued{VaultLeaseID: id, IssuedAt: at})
	}
	return out, nil
}

func (f *fakeIssuer) Ping(context.Context) error { return nil }

func (f *fakeIssuer) setRevokeErr(err error) {
	f.mu.Lock()
	f.revokeErr = err
	f.mu.Unlock()
}

func (f *fakeIssuer) revoked(id string) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.revokedAt[id]
	return t, ok
}

func (f *fakeIssuer) isLive(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.live[id]
	return ok
}

var testRoles = []*broker.Role{
	{
		Name: "db-readonly", Kind: broker.KindDatabase, Sensitivity: broker.SensitivityLow,
		Vault:      broker.RoleVault{Path: "database/creds/ro", Method: "read"},
		DefaultTTL: 15 * time.Minute, MaxTTL: time.Hour, AutoApprove: true,
		Eligible:   map[string]string{"team": "data"},
		Connection: &broker.Connection{Host: "127.0.0.1", Port: 5432, Database: "postgres"},
	},
	{
		Name: "db-admin", Kind: broker.KindDatabase, Sensitivity: broker.SensitivityHigh,
		Vault:      broker.RoleVault{Path: "database/creds/admin", Method: "read"},
		DefaultTTL: 15 * time.Minute, MaxTTL: time.Hour, MinTTL: 5 * time.Minute,
		Eligible:   map[string]string{"team": "*"},
		Connection: &broker.Connection{Host: "127.0.0.1", Port: 5432, Database: "postgres"},
	},
}

type fixture struct {
	db     *sqlite.DB
	issuer *fakeIssuer
	svc    *leases.Service
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "stint.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	iss := newFakeIssuer()
	svc := leases.NewService(db, iss, testRoles, nil)
	svc.RetryBase, svc.RetryMax = time.Second, 8*time.Second
	return &fixture{db: db, issuer: iss, svc: svc}
}

// agent registers an agent and returns a context acting as it.
func (f *fixture) agent(tb testing.TB, name string, labels map[string]string) context.Context {
	tb.Helper()
	now := time.Now().UTC()
	a := &broker.Agent{ID: uuid.NewString(), Name: name, Owner: "owner@example.com", Labels: labels, State: broker.AgentActive, CreatedAt: now, UpdatedAt: now}
	if err := f.db.CreateAgent(context.Background(), a); err != nil {
		tb.Fatal(err)
	}
	return broker.NewContextWithActor(context.Background(), broker.Actor{Kind: broker.ActorAgent, Name: name, AgentID: a.ID})
}

func adminCtx() context.Context {
	return broker.NewContextWithActor(context.Background(), broker.Actor{Kind: broker.ActorAdmin, Name: "sec"})
}

func wantCode(tb testing.TB, err error, code, field string) {
	tb.Helper()
	if got := broker.ErrorCode(err); got != code {
		tb.Fatalf("error code = %q (%v), want %q", got, err, code)
	}
	if got := broker.ErrorField(err); got != field {
		tb.Fatalf("error field = %q, want %q", got, field)
	}
}

func TestRequestLease(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		f := newFixture(t)
		ctx := f.agent(t, "etl", map[string]string{"team": "data"})
		l, cred, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", TTL: "10m", Task: "report"})
		if err != nil {
			t.Fatal(err)
		}
		if l.State != broker.LeaseActive || l.VaultLeaseID == "" || l.ActivatedAt == nil || l.ExpiresAt == nil {
			t.Fatalf("lease = %+v, want active with vault id and window", l)
		}
		if got, want := l.ExpiresAt.Sub(*l.ActivatedAt), 10*time.Minute; got != want {
			t.Fatalf("window = %s, want %s", got, want)
		}
		if cred == nil || cred.Data["password"] != "p" || cred.LeaseDuration != 600 || cred.Connection.Port != 5432 {
			t.Fatalf("credential = %#v", cred.Data)
		}
		if !f.issuer.isLive(l.VaultLeaseID) {
			t.Fatal("credential not live in the issuer")
		}
		// The minted user is on record (not a secret), as returned and as stored.
		stored, err := f.db.FindLeaseByID(context.Background(), l.ID)
		if err != nil {
			t.Fatal(err)
		}
		if l.Username == "" || l.Username != cred.Data["username"] || stored.Username != l.Username {
			t.Fatalf("username: lease %q, stored %q, credential %v; want the minted user recorded", l.Username, stored.Username, cred.Data["username"])
		}
		evs, err := f.svc.FindLeaseEvents(ctx, l.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 2 || evs[0].To != broker.LeaseIssuing || evs[1].To != broker.LeaseActive {
			t.Fatalf("events = %+v, want issuing then active", evs)
		}
	})

	t.Run("DefaultTTL", func(t *testing.T) {
		f := newFixture(t)
		ctx := f.agent(t, "etl", map[string]string{"team": "data"})
		l, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "report"})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := time.Duration(l.TTL), 15*time.Minute; got != want {
			t.Fatalf("ttl = %s, want %s", got, want)
		}
	})

	t.Run("ErrInvalid", func(t *testing.T) {
		f := newFixture(t)
		ctx := f.agent(t, "etl", map[string]string{"team": "data"})
		for _, tc := range []struct {
			name  string
			req   broker.LeaseRequest
			field string
		}{
			{"NoRole", broker.LeaseRequest{Task: "x"}, "role"},
			{"UnknownRole", broker.LeaseRequest{Role: "nope", Task: "x"}, "role"},
			{"NoTask", broker.LeaseRequest{Role: "db-readonly"}, "task"},
			{"ZeroTTL", broker.LeaseRequest{Role: "db-readonly", Task: "x", TTL: "0s"}, "ttl"},
			{"NegativeTTL", broker.LeaseRequest{Role: "db-readonly", Task: "x", TTL: "-5m"}, "ttl"},
			{"UnparsableTTL", broker.LeaseRequest{Role: "db-readonly", Task: "x", TTL: "soon"}, "ttl"},
			{"OverMaxTTL", broker.LeaseRequest{Role: "db-readonly", Task: "x", TTL: "61m"}, "ttl"},
			// A window shorter than the database plugin's slack would end
			// before its credential: below broker.DefaultMinTTL, or the
			// role's own min_ttl, is refused.
			{"UnderDefaultMinTTL", broker.LeaseRequest{Role: "db-readonly", Task: "x", TTL: "1s"}, "ttl"},
			{"JustUnderDefaultMinTTL", broker.LeaseRequest{Role: "db-readonly", Task: "x", TTL: "14s"}, "ttl"},
			{"UnderRoleMinTTL", broker.LeaseRequest{Role: "db-admin", Task: "x", TTL: "4m"}, "ttl"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, _, err := f.svc.RequestLease(ctx, tc.req)
				wantCode(t, err, broker.EINVALID, tc.field)
			})
		}
		if n := len(f.issuer.live); n != 0 {
			t.Fatalf("%d credentials minted for invalid requests", n)
		}
	})

	t.Run("ErrDenied", func(t *testing.T) {
		f := newFixture(t)
		ctx := f.agent(t, "outsider", map[string]string{"team": "web"})
		// db-readonly: not eligible; db-admin: eligible but not auto-approved.
		_, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "x"})
		wantCode(t, err, broker.EDENIED, "")
		_, _, err = f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-admin", Task: "x"})
		wantCode(t, err, broker.EDENIED, "")
		ls, _, err := f.svc.FindLeases(ctx, broker.LeaseFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(ls) != 2 || ls[0].State != broker.LeaseDenied || ls[1].State != broker.LeaseDenied {
			t.Fatalf("denied requests must be recorded as denied leases, got %+v", ls)
		}
	})

	t.Run("ErrUnavailable", func(t *testing.T) {
		f := newFixture(t)
		ctx := f.agent(t, "etl", map[string]string{"team": "data"})
		f.issuer.issueErr = fmt.Errorf("mint: %w", leases.ErrUnavailable)
		_, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "x"})
		wantCode(t, err, broker.EUNAVAILABLE, "")
		ls, _, _ := f.svc.FindLeases(ctx, broker.LeaseFilter{})
		if len(ls) != 1 || ls[0].State != broker.LeaseFailed || ls[0].EndedAt == nil {
			t.Fatalf("lease after unreachable Vault = %+v, want one failed lease", ls)
		}
	})

	t.Run("ErrNotAgent", func(t *testing.T) {
		f := newFixture(t)
		_, _, err := f.svc.RequestLease(adminCtx(), broker.LeaseRequest{Role: "db-readonly", Task: "x"})
		wantCode(t, err, broker.EFORBIDDEN, "")
		_, _, err = f.svc.RequestLease(context.Background(), broker.LeaseRequest{Role: "db-readonly", Task: "x"})
		wantCode(t, err, broker.EUNAUTHORIZED, "")
	})
}

func TestVisibility(t *testing.T) {
	f := newFixture(t)
	a := f.agent(t, "a", map[string]string{"team": "data"})
	b := f.agent(t, "b", map[string]string{"team": "data"})
	la, _, err := f.svc.RequestLease(a, broker.LeaseRequest{Role: "db-readonly", Task: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.FindLeaseByID(b, la.ID); broker.ErrorCode(err) != broker.ENOTFOUND {
		t.Fatalf("other agent's lease: err = %v, want not found", err)
	}
	if _, err := f.svc.ReleaseLease(b, la.ID); broker.ErrorCode(err) != broker.ENOTFOUND {
		t.Fatalf("release other agent's lease: err = %v, want not found", err)
	}
	if ls, n, _ := f.svc.FindLeases(b, broker.LeaseFilter{}); len(ls) != 0 || n != 0 {
		t.Fatalf("agent b sees %d leases, want 0", n)
	}
	if _, n, _ := f.svc.FindLeases(adminCtx(), broker.LeaseFilter{}); n != 1 {
		t.Fatalf("admin sees %d leases, want 1", n)
	}
	roles, err := f.svc.Roles(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(roles) != 2 {
		t.Fatalf("agent b may request %d roles, want 2", len(roles))
	}
	out := f.agent(t, "outsider", nil)
	if roles, _ := f.svc.Roles(out); len(roles) != 0 {
		t.Fatalf("unlabelled agent may request %d roles, want 0", len(roles))
	}
}

func TestReleaseAndRevoke(t *testing.T) {
	t.Run("Release", func(t *testing.T) {
		f := newFixture(t)
		ctx := f.agent(t, "etl", map[string]string{"team": "data"})
		l, _, _ := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "x"})
		got, err := f.svc.ReleaseLease(ctx, l.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != broker.LeaseReleased || got.EndedAt == nil || f.issuer.isLive(l.VaultLeaseID) {
			t.Fatalf("released lease = %+v, live=%t", got, f.issuer.isLive(l.VaultLeaseID))
		}
		if _, err := f.svc.ReleaseLease(ctx, l.ID); broker.ErrorCode(err) != broker.ECONFLICT {
			t.Fatalf("second release err = %v, want conflict", err)
		}
	})

	t.Run("RevokeNeedsAdminAndReason", func(t *testing.T) {
		f := newFixture(t)
		ctx := f.agent(t, "etl", map[string]string{"team": "data"})
		l, _, _ := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "x"})
		if _, err := f.svc.RevokeLease(ctx, l.ID, "mine"); broker.ErrorCode(err) != broker.EFORBIDDEN {
			t.Fatalf("agent revoke err = %v, want forbidden", err)
		}
		_, err := f.svc.RevokeLease(adminCtx(), l.ID, " ")
		wantCode(t, err, broker.EINVALID, "reason")
		got, err := f.svc.RevokeLease(adminCtx(), l.ID, "incident 42")
		if err != nil || got.State != broker.LeaseRevoked {
			t.Fatalf("revoke = %+v, %v", got, err)
		}
	})

	t.Run("QueueRetriesUntilVaultConfirms", func(t *testing.T) {
		f := newFixture(t)
		now := time.Now().UTC()
		f.svc.Now = func() time.Time { return now }
		ctx := f.agent(t, "etl", map[string]string{"team": "data"})
		l, _, _ := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "x"})

		f.issuer.setRevokeErr(errors.New("vault: connection refused"))
		got, err := f.svc.ReleaseLease(ctx, l.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != broker.LeaseRevoking || got.EndState != broker.LeaseReleased || got.RevokeAttempts != 1 || got.RevokeError == "" {
			t.Fatalf("after failed revoke: %+v, want revoking with one attempt", got)
		}
		// Still failing: the queue backs off and keeps the lease.
		for i := 0; i < 5; i++ {
			now = now.Add(time.Minute)
			if err := f.svc.RetryRevocations(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		got, _ = f.db.FindLeaseByID(context.Background(), l.ID)
		if got.State != broker.LeaseRevoking || got.RevokeAttempts != 6 {
			t.Fatalf("after more failures: state %s attempts %d, want revoking with 6", got.State, got.RevokeAttempts)
		}
		if d := got.NextRevokeAt.Sub(now); d > 8*time.Second*12/10 || d <= 0 {
			t.Fatalf("next attempt in %s, want capped near RetryMax (8s)", d)
		}
		// Vault is back: the next due attempt completes it.
		f.issuer.setRevokeErr(nil)
		now = now.Add(time.Minute)
		if err := f.svc.RetryRevocations(context.Background()); err != nil {
			t.Fatal(err)
		}
		got, _ = f.db.FindLeaseByID(context.Background(), l.ID)
		if got.State != broker.LeaseReleased || got.NextRevokeAt != nil || f.issuer.isLive(l.VaultLeaseID) {
			t.Fatalf("after Vault came back: %+v", got)
		}
	})
}

func TestReconcile(t *testing.T) {
	f := newFixture(t)
	now := time.Now().UTC()
	f.svc.Now = func() time.Time { return now }
	f.issuer.now = f.svc.Now
	ctx := f.agent(t, "etl", map[string]string{"team": "data"})
	live, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "x"})
	if err != nil {
		t.Fatal(err)
	}
	// A crash between mint and record: Vault holds a credential nobody knows,
	// and its lease row is stuck in issuing.
	f.issuer.live["database/creds/ro/orphan-old"] = now.Add(-2 * time.Minute)
	f.issuer.live["database/creds/ro/orphan-young"] = now.Add(-10 * time.Second)
	stuck := &broker.Lease{ID: uuid.NewString(), AgentID: live.AgentID, Agent: "etl", Role: "db-readonly", Task: "x",
		TTL: broker.Duration(time.Minute), State: broker.LeaseIssuing, CreatedAt: now.Add(-2 * time.Minute), UpdatedAt: now.Add(-2 * time.Minute)}
	if err := f.db.CreateLease(context.Background(), stuck, "agent:etl", "test"); err != nil {
		t.Fatal(err)
	}

	rep, err := f.svc.Reconcile(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Orphans) != 1 || rep.Orphans[0] != "database/creds/ro/orphan-old" {
		t.Fatalf("orphans = %v, want only the old one", rep.Orphans)
	}
	if f.issuer.isLive("database/creds/ro/orphan-old") || !f.issuer.isLive("database/creds/ro/orphan-young") || !f.issuer.isLive(live.VaultLeaseID) {
		t.Fatal("reconciler revoked the wrong credentials")
	}
	if len(rep.FailedIssuing) != 1 || rep.FailedIssuing[0] != stuck.ID {
		t.Fatalf("failed issuing = %v, want %s", rep.FailedIssuing, stuck.ID)
	}
	got, _ := f.db.FindLeaseByID(context.Background(), stuck.ID)
	if got.State != broker.LeaseFailed {
		t.Fatalf("stuck lease state = %s, want failed", got.State)
	}
}

// listingIssuer counts revocations per credential and runs during while it
// lists, after taking its snapshot: as if the lease ended on another
// replica while the reconciler listed Vault.
type listingIssuer struct {
	*fakeIssuer
	during  func()
	mu      sync.Mutex
	revokes map[string]int
}

func (l *listingIssuer) ListIssued(ctx context.Context, roles []*broker.Role) ([]leases.Issued, error) {
	out, err := l.fakeIssuer.ListIssued(ctx, roles)
	if l.during != nil {
		l.during()
	}
	return out, err
}

func (l *listingIssuer) Revoke(ctx context.Context, id string) error {
	l.mu.Lock()
	l.revokes[id]++
	l.mu.Unlock()
	return l.fakeIssuer.Revoke(ctx, id)
}

// TestReconcileSkipsLeasesEndedWhileListing ends a lease while the
// reconciler lists Vault: the stale listing still shows its credential,
// and the reconciler must not revoke it a second time.
func TestReconcileSkipsLeasesEndedWhileListing(t *testing.T) {
	f := newFixture(t)
	iss := &listingIssuer{fakeIssuer: f.issuer, revokes: map[string]int{}}
	f.svc.Issuer = iss
	ctx := f.agent(t, "etl", map[string]string{"team": "data"})
	l, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "x"})
	if err != nil {
		t.Fatal(err)
	}
	iss.during = func() {
		if _, err := f.svc.ReleaseLease(ctx, l.ID); err != nil {
			t.Error(err)
		}
	}
	rep, err := f.svc.Reconcile(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := iss.revokes[l.VaultLeaseID], 1; got != want {
		t.Fatalf("credential revoked %d times, want %d (reconcile report %+v)", got, want, rep)
	}
	if len(rep.Stale) != 0 {
		t.Fatalf("stale = %v, want none", rep.Stale)
	}

	// A lease that ended before the listing and is still live in Vault is
	// stale, and revoked again.
	iss.during = nil
	f.issuer.mu.Lock()
	f.issuer.live[l.VaultLeaseID] = time.Now()
	f.issuer.mu.Unlock()
	rep, err = f.svc.Reconcile(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Stale) != 1 || rep.Stale[0] != l.ID {
		t.Fatalf("stale = %v, want [%s]", rep.Stale, l.ID)
	}
}
