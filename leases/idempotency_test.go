package leases_test

import (
	"sync"
	"testing"

	"github.com/stint-broker/stint/broker"
)

func TestRequestLeaseIdempotency(t *testing.T) {
	t.Run("ConcurrentCopiesMakeOneLease", func(t *testing.T) {
		f := newFixture(t)
		ctx := f.agent(t, "etl", map[string]string{"team": "data"})
		req := broker.LeaseRequest{Role: "db-readonly", TTL: "10m", Task: "report", IdempotencyKey: "k-1"}
		const copies = 12
		var wg sync.WaitGroup
		ids := make(chan string, copies)
		creds := make(chan bool, copies)
		for range copies {
			wg.Go(func() {
				// A copy may arrive while the first is still minting: it is
				// told to come back, and does.
				for {
					l, cred, err := f.svc.RequestLease(ctx, req)
					if broker.ErrorCode(err) == broker.ECONFLICT && broker.ErrorField(err) == "" {
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					ids <- l.ID
					creds <- cred != nil
					return
				}
			})
		}
		wg.Wait()
		close(ids)
		close(creds)
		first := ""
		for id := range ids {
			if first == "" {
				first = id
			} else if id != first {
				t.Fatalf("copies of one request got leases %s and %s", first, id)
			}
		}
		minted := 0
		for c := range creds {
			if c {
				minted++
			}
		}
		if minted != 1 || f.issuer.n != 1 {
			t.Fatalf("%d copies got the credential and Vault minted %d, want exactly 1 of each", minted, f.issuer.n)
		}
		if _, n, _ := f.svc.FindLeases(ctx, broker.LeaseFilter{}); n != 1 {
			t.Fatalf("%d leases after %d copies of one request, want 1", n, copies)
		}
	})

	t.Run("ErrOtherRole", func(t *testing.T) {
		f := newFixture(t)
		ctx := f.agent(t, "etl", map[string]string{"team": "data"})
		if _, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "report", IdempotencyKey: "k-2"}); err != nil {
			t.Fatal(err)
		}
		_, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-admin", TTL: "10m", Task: "report", IdempotencyKey: "k-2"})
		wantCode(t, err, broker.EINVALID, "idempotency_key")
	})

	t.Run("RefusedRequestLeavesKeyFree", func(t *testing.T) {
		f := newFixture(t)
		ctx := f.agent(t, "etl", map[string]string{"team": "data"})
		_, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", TTL: "9h", Task: "report", IdempotencyKey: "k-3"})
		wantCode(t, err, broker.EINVALID, "ttl")
		// A capped request holds no key either: the same key works later.
		f.svc.MaxLiveLeases = 1
		if _, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "first"}); err != nil {
			t.Fatal(err)
		}
		_, _, err = f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "report", IdempotencyKey: "k-3"})
		wantCode(t, err, broker.ETOOMANY, "")
		f.svc.MaxLiveLeases = 0
		l, cred, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "report", IdempotencyKey: "k-3"})
		if err != nil || cred == nil || l.State != broker.LeaseActive {
			t.Fatalf("request after refusals = %v %v %v", l, cred, err)
		}
	})

	t.Run("KeysArePerAgent", func(t *testing.T) {
		f := newFixture(t)
		a := f.agent(t, "etl", map[string]string{"team": "data"})
		b := f.agent(t, "bi", map[string]string{"team": "data"})
		la, _, err := f.svc.RequestLease(a, broker.LeaseRequest{Role: "db-readonly", Task: "report", IdempotencyKey: "shared"})
		if err != nil {
			t.Fatal(err)
		}
		lb, _, err := f.svc.RequestLease(b, broker.LeaseRequest{Role: "db-readonly", Task: "report", IdempotencyKey: "shared"})
		if err != nil || lb.ID == la.ID || lb.AgentID == la.AgentID {
			t.Fatalf("another agent's request with the same key = %v %v, want its own lease", lb, err)
		}
	})

	t.Run("DeferredWaitsApproved", func(t *testing.T) {
		f := newFixture(t)
		ctx := f.agent(t, "etl", map[string]string{"team": "data"})
		l, cred, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "report", Deferred: true})
		if err != nil || cred != nil || l.State != broker.LeaseApproved || l.ActivateBy == nil {
			t.Fatalf("deferred request = %+v %v %v, want approved without a credential", l, cred, err)
		}
		if f.issuer.n != 0 {
			t.Fatalf("a deferred request minted %d credentials", f.issuer.n)
		}
		l, cred, err = f.svc.ActivateLease(ctx, l.ID)
		if err != nil || cred == nil || l.State != broker.LeaseActive {
			t.Fatalf("activate = %v %v %v", l, cred, err)
		}
	})

	t.Run("PreviewRecordsNothing", func(t *testing.T) {
		f := newFixture(t)
		ctx := f.agent(t, "etl", map[string]string{"team": "data"})
		p, err := f.svc.PreviewLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "report"})
		if err != nil || p.Decision.Outcome != broker.OutcomeApprove || p.Window.String() != "15m0s" {
			t.Fatalf("preview = %+v %v", p, err)
		}
		p, err = f.svc.PreviewLease(ctx, broker.LeaseRequest{Role: "db-admin", Task: "report"})
		if err != nil || p.Decision.Outcome != broker.OutcomeDeny {
			t.Fatalf("preview of a role that needs approval without approvers = %+v %v", p, err)
		}
		_, err = f.svc.PreviewLease(ctx, broker.LeaseRequest{Role: "nope"})
		wantCode(t, err, broker.EINVALID, "role")
		if _, n, _ := f.svc.FindLeases(ctx, broker.LeaseFilter{}); n != 0 {
			t.Fatalf("previews created %d leases", n)
		}
		_, err = f.svc.PreviewLease(adminCtx(), broker.LeaseRequest{Role: "db-readonly"})
		wantCode(t, err, broker.EFORBIDDEN, "")
	})
}
