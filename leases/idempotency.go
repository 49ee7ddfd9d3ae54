package leases

import (
	"context"
	"fmt"
	"time"

	"github.com/stint-broker/stint/broker"
)

// checkIdempotencyKey returns EINVALID naming idempotency_key if the key is
// too long or holds control characters; it is written to logs and shown
// back.
// A deferred break-glass request is refused too: break-glass exists to
// act at once.
func checkIdempotencyKey(req broker.LeaseRequest) error {
	if req.Breakglass && req.Deferred {
		return broker.FieldErrorf("breakglass", "A break-glass request is activated at once; it cannot be deferred.")
	}
	if req.IdempotencyKey == "" {
		return nil
	}
	if err := broker.CheckLen("idempotency_key", req.IdempotencyKey, broker.MaxIdempotencyKeyLen); err != nil {
		return err
	}
	return broker.CheckText("idempotency_key", req.IdempotencyKey)
}

// claimIdempotencyKey holds req's key for the lease id about to be created,
// unless the agent already used it. claimed is true when the caller now
// holds the key and must create the lease (or let the key go); otherwise
// prior is the lease the first copy of the request created, returned with
// the error that request got (EDENIED for a denied one), or the error says
// why the request cannot be answered yet.
func (s *Service) claimIdempotencyKey(ctx context.Context, agent *broker.Agent, req broker.LeaseRequest, id string) (prior *broker.Lease, claimed bool, err error) {
	k := broker.IdempotencyKey{AgentID: agent.ID, Key: req.IdempotencyKey, LeaseID: id, Role: req.Role, CreatedAt: s.Now().UTC()}
	replace := ""
	for range 2 {
		got, err := s.Store.ClaimIdempotencyKey(ctx, k, replace)
		if err != nil {
			return nil, false, fmt.Errorf("claim idempotency key: %w", err)
		}
		if got.LeaseID == id {
			return nil, true, nil
		}
		if got.Role != req.Role {
			return nil, false, broker.FieldErrorf("idempotency_key",
				"Idempotency key %q was already used for a request of role %q (lease %s); use a new key for a different request.",
				req.IdempotencyKey, got.Role, got.LeaseID)
		}
		l, err := s.Store.FindLeaseByID(ctx, got.LeaseID)
		switch {
		case err == nil:
			if l.State == broker.LeaseDenied {
				return l, false, broker.Errorf(broker.EDENIED, "Request denied: %s.", l.Decision)
			}
			return l, false, nil
		case broker.ErrorCode(err) != broker.ENOTFOUND:
			return nil, false, fmt.Errorf("find lease of idempotency key: %w", err)
		case s.Now().Sub(got.CreatedAt) < s.IssuingTimeout:
			e := broker.Errorf(broker.ECONFLICT, "A request with idempotency key %q is still being processed; send it again in a few seconds.", req.IdempotencyKey)
			e.RetryAfter = 2 * time.Second
			return nil, false, e
		}
		// The request that claimed the key died before creating its
		// lease: take the key over.
		replace = got.LeaseID
	}
	return nil, false, broker.Errorf(broker.ECONFLICT, "A request with idempotency key %q is being retried concurrently; send it again in a few seconds.", req.IdempotencyKey)
}

// forgetIdempotencyKey lets go of a key held for a lease that was never
// created, so that a copy of the request can try again.
func (s *Service) forgetIdempotencyKey(ctx context.Context, agentID, key, leaseID string) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.Store.ReleaseIdempotencyKey(fctx, agentID, key, leaseID); err != nil {
		s.Logger.Error("release idempotency key", "agent_id", agentID, "lease_id", leaseID, "err", err)
	}
}

// PreviewLease implements broker.LeaseService. It decides with the same
// code as RequestLease, on the agent's live risk score and live roles, and
// records nothing.
func (s *Service) PreviewLease(ctx context.Context, req broker.LeaseRequest) (*broker.LeasePreview, error) {
	actor, err := actorFrom(ctx)
	if err != nil {
		return nil, err
	}
	if actor.Kind != broker.ActorAgent {
		return nil, broker.Errorf(broker.EFORBIDDEN, "Only agents request leases; a preview answers for the calling agent.")
	}
	agent := actor.Agent
	if agent == nil || agent.ID != actor.AgentID {
		if agent, err = s.Store.FindAgentByID(ctx, actor.AgentID); err != nil {
			return nil, fmt.Errorf("find agent: %w", err)
		}
	}
	role, window, err := s.requestable(agent, req)
	if err != nil {
		return nil, err
	}
	now := s.Now().UTC()
	risk, err := s.scoreRisk(ctx, broker.DecisionRequest{Action: broker.ActionRequest, Agent: agent, Role: role, TTL: window,
		Task: req.Task, Time: now, Breakglass: req.Breakglass, DryRun: true}, actor)
	if err != nil {
		return nil, err
	}
	d, err := s.decide(ctx, agent, role, window, req, actor, now, risk)
	if err != nil {
		return nil, err
	}
	return &broker.LeasePreview{Role: role, Window: window, Decision: d}, nil
}
