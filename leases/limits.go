package leases

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/stint-broker/stint/broker"
)

// outstandingStates are the states MaxLiveLeases counts: every lease that
// holds, or may come to hold, a live credential.
var outstandingStates = []broker.LeaseState{
	broker.LeasePending, broker.LeaseApproved, broker.LeaseIssuing, broker.LeaseActive, broker.LeaseRevoking,
}

// reserveLeaseSlot enforces MaxLiveLeases for the agent. It returns ETOOMANY
// (with RetryAfter) when the agent is at the cap. Otherwise it holds the
// agent's slot lock until release is called (release is idempotent), so that
// concurrent requests cannot both take the last slot: call it once the new
// lease is recorded.
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
		e := broker.Errorf(broker.ETOOMANY, "Agent %s already holds %d live or pending leases, the most allowed (limits.max_live_leases); release one first.", agent.Name, n)
		e.RetryAfter = 30 * time.Second
		return nil, e
	}
	return release, nil
}
