package leases

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/stint-broker/stint/broker"
)

// containmentPoll is how often WaitContainment reads the progress again.
const containmentPoll = 100 * time.Millisecond

// AgentCredentials ends an agent's own credentials (API keys, client
// certificates) for good; the lease service calls it when a containment
// disables the agent.
type AgentCredentials interface {
	RevokeAgentCredentials(ctx context.Context, agentID, reason string) error
}

// ContainAgent implements broker.LeaseService: the one kill switch. The
// containment (the agent's new state, every live lease marked to end) is
// written in one store transaction before Vault is asked for anything;
// from then on no lease of the agent can become active and the revocation
// queue owns the rest, with retries that never give up and survive
// restarts. It returns at once, with the progress so far.
//
// Every caller (the API, the console, the CLI, risk containment, access
// review deadlines) comes here with the actor in ctx and its own reason;
// the recorded reason says what was done to the agent ("agent suspended:
// " and the caller's reason), so callers never phrase it themselves.
// Suspending a disabled agent fails (disabling is final) unless
// req.KeepDisabled: then it stays disabled and every live lease still ends.
func (s *Service) ContainAgent(ctx context.Context, req broker.ContainRequest) (*broker.Containment, error) {
	actor, err := actorFrom(ctx)
	if err != nil {
		return nil, err
	}
	if !actor.IsAdmin() {
		return nil, broker.Errorf(broker.EFORBIDDEN, "Only admins contain an agent.")
	}
	why := strings.TrimSpace(req.Reason)
	if err := broker.CheckLen("reason", why, broker.MaxReasonLen); err != nil {
		return nil, err
	}
	switch {
	case why == "" && req.State == "":
		return nil, broker.FieldErrorf("reason", "A reason is required to revoke leases.")
	case req.State != "" && req.State != broker.AgentSuspended && req.State != broker.AgentDisabled:
		return nil, broker.FieldErrorf("state", "A containment suspends or disables the agent, or leaves its state alone.")
	case req.State != "" && req.Role != "":
		return nil, broker.FieldErrorf("role", "A containment that changes the agent's state covers all its roles.")
	}
	if req.State == broker.AgentSuspended && req.KeepDisabled {
		a, err := s.Store.FindAgentByID(ctx, req.AgentID)
		if err != nil {
			return nil, err
		}
		if a.State == broker.AgentDisabled {
			req.State = ""
			why = joinReason("agent disabled; suspending it ends its live leases", why)
		}
	}
	reason := why
	if req.State != "" {
		reason = joinReason("agent "+string(req.State), why)
	}
	now := s.Now().UTC()
	opts := broker.ContainOptions{
		MintGraceUntil: now.Add(s.IssuingTimeout),
		MintingReason:  reason + " (a credential being minted is revoked as soon as Vault returns it)",
	}
	if req.State != "" {
		state := req.State
		upd := broker.AgentUpdate{State: &state, TokensNotBefore: &now} // its access tokens stop working
		if state == broker.AgentDisabled {
			upd.ClientSecretHash, upd.PublicJWKS = new(string), new(string) // dropped for good
		}
		opts.AgentUpdate = &upd
	}
	c, err := s.Store.ContainAgent(ctx, &broker.Containment{
		ID:         uuid.Must(uuid.NewV7()).String(),
		AgentID:    req.AgentID,
		AgentState: req.State,
		Role:       req.Role,
		Actor:      actor.String(),
		Reason:     reason,
	}, opts)
	if err != nil {
		return nil, err
	}
	s.Logger.Warn("agent contained", "containment_id", c.ID, "agent", c.Agent, "agent_state", c.AgentState,
		"role", c.Role, "actor", c.Actor, "reason", c.Reason, "leases", c.Progress.Total)
	// The queue revokes; wake it, and everyone waiting on a lease.
	s.LeaseChanged("")
	if req.State == broker.AgentDisabled && s.Credentials != nil {
		if err := s.Credentials.RevokeAgentCredentials(ctx, c.AgentID, reason); err != nil {
			return c, fmt.Errorf("revoke the disabled agent's keys and certificates: %w", err)
		}
	}
	return c, nil
}

// joinReason records what was done, then the caller's reason if any.
func joinReason(what, why string) string {
	if why == "" {
		return what
	}
	return what + ": " + why
}

// WaitContainment implements broker.LeaseService. wait is capped at
// broker.MaxContainmentWait.
func (s *Service) WaitContainment(ctx context.Context, id string, wait time.Duration) (*broker.Containment, error) {
	actor, err := actorFrom(ctx)
	if err != nil {
		return nil, err
	}
	if !actor.IsAdmin() {
		return nil, broker.Errorf(broker.ENOTFOUND, "Containment not found.")
	}
	c, err := s.Store.FindContainmentByID(ctx, id)
	if err != nil || c.Progress.Done() || wait <= 0 {
		return c, err
	}
	deadline := time.NewTimer(min(wait, broker.MaxContainmentWait))
	defer deadline.Stop()
	poll := time.NewTicker(containmentPoll)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return c, nil
		case <-deadline.C:
			return c, nil
		case <-poll.C:
		}
		next, err := s.Store.FindContainmentByID(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return c, nil
			}
			return nil, fmt.Errorf("re-read containment: %w", err)
		}
		if c = next; c.Progress.Done() {
			return c, nil
		}
	}
}

// FindContainments implements broker.LeaseService.
func (s *Service) FindContainments(ctx context.Context, agentID string, limit int) ([]*broker.Containment, error) {
	actor, err := actorFrom(ctx)
	if err != nil {
		return nil, err
	}
	if !actor.IsAdmin() {
		return []*broker.Containment{}, nil
	}
	return s.Store.FindContainments(ctx, agentID, limit)
}

// handOver gives a credential minted for a lease that can no longer become
// active (its agent was contained, or suspended, while Vault minted) to the
// revocation queue: the lease records the credential's Vault id and is due
// at once. It returns the error the caller answers with. If the lease
// cannot record it, the credential is revoked directly; the reconciler
// catches it if that fails too.
func (s *Service) handOver(ctx context.Context, l *broker.Lease, vaultLeaseID string, cause error) error {
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	now := s.Now().UTC()
	upd := broker.LeaseUpdate{
		VaultLeaseID: &vaultLeaseID,
		NextRevokeAt: &now,
		Actor:        actorIssuer,
	}
	cur, err := s.Store.FindLeaseByID(hctx, l.ID)
	switch {
	case err != nil:
	case cur.State == broker.LeaseIssuing: // the agent is no longer active, or the store failed
		upd.From, upd.State, upd.EndState = []broker.LeaseState{broker.LeaseIssuing}, ptr(broker.LeaseRevoking), ptr(broker.LeaseRevoked)
		upd.Reason = "the credential could not be recorded as active: it is revoked, not handed out"
		if broker.ErrorCode(cause) == broker.EFORBIDDEN {
			upd.Reason = "the agent is no longer active: the credential minted for the lease is revoked, not handed out"
		}
	case cur.State == broker.LeaseRevoking && cur.VaultLeaseID == "": // contained while minting
		upd.From = []broker.LeaseState{broker.LeaseRevoking}
		upd.Reason = "contained while the credential was minted: it is revoked, not handed out"
	default:
		err = broker.Errorf(broker.ECONFLICT, "Lease is %s.", cur.State)
	}
	if err == nil {
		var q *broker.Lease
		if q, err = s.Store.UpdateLease(hctx, l.ID, upd); err == nil {
			s.Logger.Warn("minted credential withheld: the lease was contained", "lease_id", l.ID, "agent", l.Agent, "role", l.Role)
			if _, err := s.attemptRevoke(hctx, q, actorIssuer); err != nil {
				s.Logger.Error("revoke withheld credential", "lease_id", l.ID, "err", err)
			}
		}
	}
	if err != nil {
		s.Logger.Error("hand over withheld credential; revoking it directly", "lease_id", l.ID, "err", err)
		if rerr := s.Issuer.Revoke(hctx, vaultLeaseID); rerr != nil {
			s.Logger.Error("revoke withheld credential", "lease_id", l.ID, "err", rerr)
		}
	}
	switch broker.ErrorCode(cause) {
	case broker.EFORBIDDEN:
		return cause
	case broker.ECONFLICT:
		return broker.Errorf(broker.EFORBIDDEN, "Lease %s was revoked while its credential was minted; the credential was not handed out.", l.ID)
	}
	return fmt.Errorf("record minted lease: %w", cause)
}
