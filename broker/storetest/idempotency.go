package storetest

import (
	"context"
	"testing"

	"github.com/stint-broker/stint/broker"
)

func testIdempotencyKeys(t *testing.T, open func(tb testing.TB) Store) {
	ctx := context.Background()
	s := open(t)
	a := mustCreateAgent(t, s, "etl")
	b := mustCreateAgent(t, s, "bi")
	claim := func(agentID, key, leaseID, replace string) *broker.IdempotencyKey {
		t.Helper()
		got, err := s.ClaimIdempotencyKey(ctx, broker.IdempotencyKey{AgentID: agentID, Key: key, LeaseID: leaseID, Role: "db-readonly", CreatedAt: at(0)}, replace)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}

	first, second := newID(), newID()
	if got := claim(a.ID, "k", first, ""); got.LeaseID != first || got.Role != "db-readonly" || !got.CreatedAt.Equal(at(0)) {
		t.Fatalf("first claim = %+v", got)
	}
	// A second claim finds the first.
	if got := claim(a.ID, "k", second, ""); got.LeaseID != first {
		t.Fatalf("second claim = %+v, want the first's lease %s", got, first)
	}
	// Keys are per agent.
	if got := claim(b.ID, "k", second, ""); got.LeaseID != second {
		t.Fatalf("other agent's claim = %+v, want its own", got)
	}
	// Replacing works only for the lease named.
	if got := claim(a.ID, "k", second, "not-the-lease"); got.LeaseID != first {
		t.Fatalf("replace of another lease = %+v, want the first kept", got)
	}
	if got := claim(a.ID, "k", second, first); got.LeaseID != second {
		t.Fatalf("replace = %+v, want %s", got, second)
	}
	// Releasing forgets the key only while it names the lease.
	if err := s.ReleaseIdempotencyKey(ctx, a.ID, "k", first); err != nil {
		t.Fatal(err)
	}
	if got := claim(a.ID, "k", newID(), ""); got.LeaseID != second {
		t.Fatalf("after releasing another lease's key = %+v, want %s", got, second)
	}
	if err := s.ReleaseIdempotencyKey(ctx, a.ID, "k", second); err != nil {
		t.Fatal(err)
	}
	third := newID()
	if got := claim(a.ID, "k", third, ""); got.LeaseID != third {
		t.Fatalf("claim after release = %+v, want %s", got, third)
	}
	// An unknown agent cannot hold keys.
	if _, err := s.ClaimIdempotencyKey(ctx, broker.IdempotencyKey{AgentID: "no-such-agent", Key: "k", LeaseID: newID(), Role: "r", CreatedAt: at(0)}, ""); broker.ErrorCode(err) != broker.ENOTFOUND {
		t.Fatalf("claim for an unknown agent = %v, want ENOTFOUND", err)
	}
}
