package leases_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases"
)

// approvalsDecider sends every request to one approver.
type approvalsDecider struct{}

func (approvalsDecider) Decide(context.Context, broker.DecisionRequest) (broker.Decision, error) {
	return broker.Decision{Outcome: broker.OutcomeApprovals, Approvals: 1, ApproverGroup: "sec"}, nil
}

// gatedIssuer is a fakeIssuer whose mints wait at a gate: minting receives
// one value per mint that reached Vault, and each waits for release.
type gatedIssuer struct {
	*fakeIssuer
	minting chan struct{}
	release chan struct{}
}

func (g *gatedIssuer) Issue(ctx context.Context, req leases.IssueRequest) (*leases.Grant, error) {
	g.minting <- struct{}{}
	<-g.release
	return g.fakeIssuer.Issue(ctx, req)
}

// countingIssuer counts revocation calls.
type countingIssuer struct {
	*fakeIssuer
	revokes atomic.Int64
}

func (c *countingIssuer) Revoke(ctx context.Context, id string) error {
	c.revokes.Add(1)
	return c.fakeIssuer.Revoke(ctx, id)
}

func agentID(tb testing.TB, ctx context.Context) string {
	tb.Helper()
	a, ok := broker.ActorFromContext(ctx)
	if !ok {
		tb.Fatal("no actor")
	}
	return a.AgentID
}

func TestContainAgent(t *testing.T) {
	t.Run("EveryLiveState", func(t *testing.T) {
		f := newFixture(t)
		ctx := f.agent(t, "etl", map[string]string{"team": "data"})
		id := agentID(t, ctx)

		active, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "active"})
		if err != nil {
			t.Fatal(err)
		}
		ending, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "ending"})
		if err != nil {
			t.Fatal(err)
		}
		f.issuer.setRevokeErr(errors.New("vault: connection reset"))
		if l, err := f.svc.ReleaseLease(ctx, ending.ID); err != nil || l.State != broker.LeaseRevoking {
			t.Fatalf("release = %+v, %v; want revoking", l, err)
		}
		f.issuer.setRevokeErr(nil)
		f.svc.Decider = approvalsDecider{}
		pending, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "pending"})
		if err != nil || pending.State != broker.LeasePending {
			t.Fatalf("pending = %+v, %v", pending, err)
		}
		approved, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "approved"})
		if err != nil {
			t.Fatal(err)
		}
		activateBy := time.Now().Add(time.Hour)
		if _, err := f.db.UpdateLease(context.Background(), approved.ID, broker.LeaseUpdate{
			From: []broker.LeaseState{broker.LeasePending}, State: new(broker.LeaseApproved), ActivateBy: &activateBy,
			Actor: "approver:dana@example.com", Reason: "approved",
		}); err != nil {
			t.Fatal(err)
		}

		c, err := f.svc.ContainAgent(adminCtx(), broker.ContainRequest{AgentID: id, State: broker.AgentSuspended, Reason: "incident 7"})
		if err != nil {
			t.Fatal(err)
		}
		// Written before Vault was asked: the agent is suspended, nothing
		// of it is active, pending and approved leases ended at once.
		if c.Progress.Total != 4 || c.Progress.Ended != 2 || c.Progress.Revoking != 2 || c.Progress.Done() {
			t.Fatalf("progress = %+v, want 4 leases, 2 ended, 2 revoking", c.Progress)
		}
		a, err := f.db.FindAgentByID(context.Background(), id)
		if err != nil || a.State != broker.AgentSuspended || a.TokensNotBefore == nil {
			t.Fatalf("agent = %+v, %v; want suspended with its tokens cut", a, err)
		}
		for _, want := range []struct {
			id    string
			state broker.LeaseState
		}{{active.ID, broker.LeaseRevoking}, {ending.ID, broker.LeaseRevoking}, {pending.ID, broker.LeaseRevoked}, {approved.ID, broker.LeaseRevoked}} {
			l, err := f.db.FindLeaseByID(context.Background(), want.id)
			if err != nil || l.State != want.state || l.ContainmentID != c.ID {
				t.Fatalf("lease %s = %+v, %v; want %s in containment %s", want.id, l, err, want.state, c.ID)
			}
		}
		l, _ := f.db.FindLeaseByID(context.Background(), ending.ID)
		if l.EndState != broker.LeaseReleased {
			t.Fatalf("a lease already ending kept end state %s, want released", l.EndState)
		}
		evs, _ := f.db.FindLeaseEvents(context.Background(), active.ID)
		if last := evs[len(evs)-1]; last.To != broker.LeaseRevoking || last.Actor != "admin:sec" || last.Reason != "agent suspended: incident 7" {
			t.Fatalf("last event = %+v, want revoking by admin:sec for the reason", last)
		}
		// Nothing can become active again, and nothing new is granted.
		if _, _, err := f.svc.ActivateLease(ctx, approved.ID); err == nil {
			t.Fatal("activation of a contained lease succeeded")
		}

		// The queue ends the rest.
		if err := f.svc.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		c, err = f.svc.WaitContainment(adminCtx(), c.ID, 0)
		if err != nil || !c.Progress.Done() || c.Progress.Ended != 4 {
			t.Fatalf("after a pass: %+v, %v; want all 4 ended", c.Progress, err)
		}
		if f.issuer.isLive(active.VaultLeaseID) || f.issuer.isLive(ending.VaultLeaseID) {
			t.Fatal("a credential is still live")
		}
		got, _ := f.svc.FindContainments(adminCtx(), id, 0)
		if len(got) != 1 || got[0].ID != c.ID || got[0].Reason != "agent suspended: incident 7" {
			t.Fatalf("containments = %+v", got)
		}
	})

	t.Run("ErrInvalid", func(t *testing.T) {
		f := newFixture(t)
		ctx := f.agent(t, "etl", map[string]string{"team": "data"})
		id := agentID(t, ctx)
		_, err := f.svc.ContainAgent(adminCtx(), broker.ContainRequest{AgentID: id, Reason: " "})
		wantCode(t, err, broker.EINVALID, "reason")
		_, err = f.svc.ContainAgent(adminCtx(), broker.ContainRequest{AgentID: id, State: broker.AgentActive, Reason: "x"})
		wantCode(t, err, broker.EINVALID, "state")
		_, err = f.svc.ContainAgent(ctx, broker.ContainRequest{AgentID: id, Reason: "x"})
		wantCode(t, err, broker.EFORBIDDEN, "")
		_, err = f.svc.ContainAgent(adminCtx(), broker.ContainRequest{AgentID: "nobody", Reason: "x"})
		wantCode(t, err, broker.ENOTFOUND, "")
		if _, err := f.svc.WaitContainment(ctx, "x", 0); broker.ErrorCode(err) != broker.ENOTFOUND {
			t.Fatalf("agent reading a containment: %v, want not found", err)
		}
	})

	// A mint in flight when the kill switch is pulled: the credential Vault
	// returns afterwards never reaches the agent and is revoked.
	t.Run("MintInFlight", func(t *testing.T) {
		f := newFixture(t)
		g := &gatedIssuer{fakeIssuer: f.issuer, minting: make(chan struct{}), release: make(chan struct{})}
		f.svc.Issuer = g
		ctx := f.agent(t, "etl", map[string]string{"team": "data"})
		id := agentID(t, ctx)

		type result struct {
			l    *broker.Lease
			cred *broker.Credential
			err  error
		}
		res := make(chan result, 1)
		go func() {
			l, cred, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "x"})
			res <- result{l, cred, err}
		}()
		<-g.minting
		c, err := f.svc.ContainAgent(adminCtx(), broker.ContainRequest{AgentID: id, State: broker.AgentSuspended, Reason: "incident 8"})
		if err != nil {
			t.Fatal(err)
		}
		if c.Progress.Total != 1 || c.Progress.Revoking != 1 {
			t.Fatalf("progress = %+v, want the issuing lease marked", c.Progress)
		}
		close(g.release)
		r := <-res
		if r.cred != nil || broker.ErrorCode(r.err) != broker.EFORBIDDEN {
			t.Fatalf("request = %+v, %v; want no credential and forbidden", r.cred, r.err)
		}
		leases, _, err := f.db.FindLeases(context.Background(), broker.LeaseFilter{AgentID: &id})
		if err != nil || len(leases) != 1 {
			t.Fatalf("leases = %v, %v", leases, err)
		}
		l := leases[0]
		if l.State != broker.LeaseRevoked || l.VaultLeaseID == "" || f.issuer.isLive(l.VaultLeaseID) {
			t.Fatalf("lease = %s with credential %q (live %v), want revoked with its credential revoked", l.State, l.VaultLeaseID, f.issuer.isLive(l.VaultLeaseID))
		}
		if c, _ := f.svc.WaitContainment(adminCtx(), c.ID, 0); !c.Progress.Done() {
			t.Fatalf("progress = %+v, want done", c.Progress)
		}
	})

	// A suspension that bypasses the containment (the agent row changed
	// directly) still stops the activation: the class, not the instance.
	t.Run("SuspendedWhileMinting", func(t *testing.T) {
		f := newFixture(t)
		g := &gatedIssuer{fakeIssuer: f.issuer, minting: make(chan struct{}), release: make(chan struct{})}
		f.svc.Issuer = g
		ctx := f.agent(t, "etl", map[string]string{"team": "data"})
		id := agentID(t, ctx)
		errc := make(chan error, 1)
		var cred *broker.Credential
		go func() {
			var err error
			_, cred, err = f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "x"})
			errc <- err
		}()
		<-g.minting
		if _, err := f.db.UpdateAgent(context.Background(), id, broker.AgentUpdate{State: new(broker.AgentSuspended)}); err != nil {
			t.Fatal(err)
		}
		close(g.release)
		if err := <-errc; broker.ErrorCode(err) != broker.EFORBIDDEN || cred != nil {
			t.Fatalf("request = %v, %v; want forbidden without a credential", cred, err)
		}
		leases, _, _ := f.db.FindLeases(context.Background(), broker.LeaseFilter{AgentID: &id})
		if l := leases[0]; l.State != broker.LeaseRevoked || f.issuer.isLive(l.VaultLeaseID) {
			t.Fatalf("lease = %s, credential live %v; want revoked", l.State, f.issuer.isLive(l.VaultLeaseID))
		}
	})

	// The minter dies: the issuing lease waits out the grace, then ends;
	// the reconciler owns any credential the mint left.
	t.Run("MinterDied", func(t *testing.T) {
		f := newFixture(t)
		now := time.Now().UTC()
		f.svc.Now = func() time.Time { return now }
		ctx := f.agent(t, "etl", map[string]string{"team": "data"})
		id := agentID(t, ctx)
		l := &broker.Lease{ID: "issuing-1", AgentID: id, Agent: "etl", Role: "db-readonly", Task: "x",
			TTL: broker.Duration(time.Minute), State: broker.LeaseIssuing, CreatedAt: now, UpdatedAt: now}
		if err := f.db.CreateLease(context.Background(), l, "agent:etl", "minting"); err != nil {
			t.Fatal(err)
		}
		c, err := f.svc.ContainAgent(adminCtx(), broker.ContainRequest{AgentID: id, Reason: "incident 9"})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.svc.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got, _ := f.db.FindLeaseByID(context.Background(), l.ID); got.State != broker.LeaseRevoking {
			t.Fatalf("within the grace: %s, want revoking (the minter may still hand over)", got.State)
		}
		now = now.Add(f.svc.IssuingTimeout + time.Second)
		if err := f.svc.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got, _ := f.db.FindLeaseByID(context.Background(), l.ID); got.State != broker.LeaseRevoked {
			t.Fatalf("after the grace: %s, want revoked", got.State)
		}
		if c, _ := f.svc.WaitContainment(adminCtx(), c.ID, 0); !c.Progress.Done() {
			t.Fatalf("progress = %+v", c.Progress)
		}
	})

	// Vault down: the containment stands, says what fails, and completes
	// once Vault is back, with no second call; a restarted service (a new
	// process on the same store) finishes it.
	t.Run("VaultDownThenRestart", func(t *testing.T) {
		f := newFixture(t)
		ci := &countingIssuer{fakeIssuer: f.issuer}
		f.svc.Issuer = ci
		f.svc.Workers = 1
		now := time.Now().UTC().Add(time.Second) // the store dates the marks by its own clock
		f.svc.Now = func() time.Time { return now }
		ctx := f.agent(t, "etl", map[string]string{"team": "data"})
		id := agentID(t, ctx)
		var vaultIDs []string
		for range 20 {
			l, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "x"})
			if err != nil {
				t.Fatal(err)
			}
			vaultIDs = append(vaultIDs, l.VaultLeaseID)
		}
		f.issuer.setRevokeErr(fmt.Errorf("revoke: %w", leases.ErrUnavailable))
		c, err := f.svc.ContainAgent(adminCtx(), broker.ContainRequest{AgentID: id, State: broker.AgentDisabled, Reason: "incident 10"})
		if err != nil {
			t.Fatal(err)
		}
		now = time.Now().UTC().Add(time.Second) // the store dated the marks by its own clock
		if err := f.svc.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := ci.revokes.Load(); n != 1 {
			t.Fatalf("Vault asked %d times while down, want once per pass", n)
		}
		c, _ = f.svc.WaitContainment(adminCtx(), c.ID, 0)
		if c.Progress.Failing != 20 || len(c.Progress.Errors) != 1 || c.Progress.Errors[0].Leases != 20 || c.Progress.NextAttemptAt == nil {
			t.Fatalf("progress = %+v, want 20 failing with one error and a next attempt", c.Progress)
		}

		// Another process on the same store, after Vault is back.
		f.issuer.setRevokeErr(nil)
		svc2 := leases.NewService(f.db, f.issuer, testRoles, nil)
		later := now.Add(time.Minute)
		svc2.Now = func() time.Time { return later }
		if err := svc2.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		c, _ = f.svc.WaitContainment(adminCtx(), c.ID, 0)
		if !c.Progress.Done() || c.Progress.Ended != 20 {
			t.Fatalf("progress = %+v, want done", c.Progress)
		}
		for _, v := range vaultIDs {
			if f.issuer.isLive(v) {
				t.Fatalf("%s still live", v)
			}
		}
	})
}

// TestContainAgentRace runs the kill switch, activation, extension,
// release and expiry at once against one agent's leases, many times, and
// checks that no credential reaches the agent after its containment
// committed and that no lease ends twice. Run it with -race.
func TestContainAgentRace(t *testing.T) {
	for round := range 20 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			f := newFixture(t)
			ctx := f.agent(t, "etl", map[string]string{"team": "data"})
			id := agentID(t, ctx)
			f.svc.Decider = nil
			var seed []*broker.Lease
			for range 4 {
				l, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", TTL: "15s", Task: "x"})
				if err != nil {
					t.Fatal(err)
				}
				seed = append(seed, l)
			}
			var (
				wg     sync.WaitGroup
				mu     sync.Mutex
				grants []string // leases whose credential was handed out
			)
			start := make(chan struct{})
			wg.Go(func() {
				<-start
				if _, err := f.svc.ContainAgent(adminCtx(), broker.ContainRequest{AgentID: id, State: broker.AgentSuspended, Reason: "race"}); err != nil {
					t.Error(err)
				}
			})
			for range 4 {
				wg.Go(func() {
					<-start
					for range 5 {
						l, cred, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", TTL: "15s", Task: "y"})
						if cred != nil {
							mu.Lock()
							grants = append(grants, l.ID)
							mu.Unlock()
						} else if err == nil {
							t.Error("no credential and no error")
						}
					}
				})
			}
			for _, l := range seed {
				wg.Go(func() {
					<-start
					f.svc.ReleaseLease(ctx, l.ID)
				})
				wg.Go(func() {
					<-start
					f.svc.ExtendLease(ctx, l.ID, "15s")
				})
			}
			wg.Go(func() {
				<-start
				for range 5 {
					f.svc.Tick(context.Background())
				}
			})
			close(start)
			wg.Wait()

			// A credential handed out must have become active before the
			// containment committed: the audit chain orders both.
			kind := broker.AuditAgentLeasesRevoked
			marks, _, err := f.db.FindAuditEvents(context.Background(), broker.AuditFilter{Kind: &kind, Subject: &id})
			if err != nil || len(marks) != 1 {
				t.Fatalf("containment events = %v, %v", marks, err)
			}
			for _, g := range grants {
				evs, err := f.db.FindLeaseEvents(context.Background(), g)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range evs {
					if e.To == broker.LeaseActive && e.ID > marks[0].Seq {
						t.Fatalf("lease %s became active (event %d) after the containment (event %d)", g, e.ID, marks[0].Seq)
					}
				}
			}
			// Drain: every lease ends, each in exactly one end state, with
			// every credential revoked.
			f.svc.Now = func() time.Time { return time.Now().Add(time.Hour) }
			for range 3 {
				if err := f.svc.Tick(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			all, _, err := f.db.FindLeases(context.Background(), broker.LeaseFilter{AgentID: &id})
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range all {
				if !l.State.Terminal() {
					t.Fatalf("lease %s is %s after draining", l.ID, l.State)
				}
				if l.VaultLeaseID != "" && f.issuer.isLive(l.VaultLeaseID) {
					t.Fatalf("lease %s ended %s with its credential live", l.ID, l.State)
				}
				evs, err := f.db.FindLeaseEvents(context.Background(), l.ID)
				if err != nil {
					t.Fatal(err)
				}
				ends := 0
				for _, e := range evs {
					if e.To.Terminal() && e.From != e.To {
						ends++
					}
				}
				if ends != 1 {
					t.Fatalf("lease %s reached an end state %d times: %+v", l.ID, ends, evs)
				}
			}
		})
	}
}
