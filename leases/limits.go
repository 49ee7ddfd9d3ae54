package leases

import (
	"context"
	"fmt"
	"sync"

	"github.com/stint-broker/stint/broker"
)

// outstandingStates are the states MaxLiveLeases counts: every lease that
// holds, or may come to hold, a live credential.
var outstandingStates = broker.OutstandingLeaseStates

// capInStore reports whether the store enforces MaxLiveLeases when leases
// are created (Cap).
func (s *Service) capInStore() bool {
	return s.MaxLiveLeases > 0 && s.Cap != nil
}

// createCapped records a new lease: under the store's cap when it has one
// (with the separation-of-duty check for conflicts), otherwise as
// CreateLease (conflicts must then be empty).
func (s *Service) createCapped(ctx context.Context, l *broker.Lease, actor, reason string, conflicts []string) error {
	if s.capInStore() {
		return s.Cap.CreateLeaseCapped(ctx, l, actor, reason, conflicts, s.MaxLiveLeases)
	}
	return s.Store.CreateLease(ctx, l, actor, reason)
}

// reserveLeaseSlot enforces MaxLiveLeases for the agent. It returns ETOOMANY
// (with RetryAfter) when the agent is at the cap. Otherwise it holds the
// agent's slot lock until release is called (release is idempotent), so that
// concurrent requests cannot both take the last slot: call it once the new
// lease is recorded. With a store that enforces the cap (Cap), the lock
// only spares this process's requests the policy work, and the store's
// count when the lease is created decides across replicas.
func (s *Service) reserveLeaseSlot(ctx context.Context, agent *broker.Agent) (release func(), err error) {
	if s.MaxLiveLeases <= 0 {
		return func() {}, nil
	}
	v, _ := s.slotLocks.LoadOrStore(agent.ID, &sync.Mutex{})
	mu := v.(*sync.Mutex)
	mu.Lock()
	release = sync.OnceFunc(mu.Unlock)
	_, n, err := s.Store.FindLeases(ctx, broker.LeaseFilter{AgentID: &agent.ID, States: outstandingStates, Limit: 1})
	if err != nil {
		release()
		return nil, fmt.Errorf("count live leases: %w", err)
	}
	if n >= s.MaxLiveLeases {
		release()
		return nil, broker.LeaseCapReached(agent.Name, n)
	}
	return release, nil
}
