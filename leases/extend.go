package leases

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/stint-broker/stint/broker"
)

// Renewer renews a minted credential so that it lives until a new window
// end. leases/vault implements it. It is separate from Issuer so that
// issuers which cannot renew need not pretend to.
type Renewer interface {
	// Renew renews the credential so that it, and the target's own expiry
	// (PostgreSQL VALID UNTIL), end no later than Window from now. It
	// returns how long from now the credential now lives, which Vault may
	// cap below Window (the Vault role's max TTL). Errors wrapping
	// ErrNotRenewable mean the credential cannot be renewed at all; errors
	// wrapping ErrUnavailable mean Vault could not be reached; errors
	// wrapping ErrCredentialEnded mean Vault no longer holds the credential.
	Renew(ctx context.Context, req RenewRequest) (time.Duration, error)
}

// RenewRequest asks a Renewer to extend one credential.
type RenewRequest struct {
	VaultLeaseID string
	Role         *broker.Role
	// Window is how long from now the credential may live at most.
	Window time.Duration
}

// ErrNotRenewable is wrapped by Renew errors for credentials that cannot
// be renewed, such as Stint's non-renewable Vault tokens.
var ErrNotRenewable = errors.New("the credential is not renewable")

// ErrCredentialEnded is wrapped by Renew errors for credentials that Vault
// no longer holds: revoked, or expired in Vault (for instance while Stint
// could not reach it). Renewing again cannot succeed.
var ErrCredentialEnded = errors.New("the credential has already ended in Vault")

// ExtendLease implements broker.LeaseService.
//
// The extension is written ahead: the new window end is recorded (guarded
// by the old one, so of two concurrent extensions only one applies) before
// Vault is asked to renew, so a crash leaves the recorded window longer
// than the credential, never shorter. If Vault refuses, the old window end
// is restored; if Vault caps the renewal, the window ends when the
// credential does. The expiry loop is woken to re-read its deadline.
//
// Policy is asked with action extend and context.ttl_seconds the time
// added. Only an immediate grant extends: an extension is never left
// waiting for approvers, so a decision that needs approvals refuses it, and
// privileged roles (whose grants always need two approvers) are never
// extended. A refusal is noted in the lease's history and the lease
// expires as planned.
func (s *Service) ExtendLease(ctx context.Context, id, ttl string) (*broker.Lease, error) {
	actor, err := actorFrom(ctx)
	if err != nil {
		return nil, err
	}
	if actor.Kind != broker.ActorAgent {
		return nil, broker.Errorf(broker.EFORBIDDEN, "Only the agent that holds a lease extends it.")
	}
	l, err := s.FindLeaseByID(ctx, id)
	if err != nil {
		return nil, err
	}
	if l.State != broker.LeaseActive || l.ActivatedAt == nil || l.ExpiresAt == nil {
		return nil, broker.Errorf(broker.ECONFLICT, "Lease is %s; only an active lease can be extended.", l.State)
	}
	role := s.role(l.Role)
	switch {
	case role == nil:
		return nil, broker.Errorf(broker.ECONFLICT, "Role %q no longer exists; the lease cannot be extended.", l.Role)
	case role.Kind == broker.KindToken:
		return nil, broker.Errorf(broker.ECONFLICT, "Role %q mints non-renewable Vault tokens whose max TTL is the window; request a new lease instead.", role.Name)
	case role.MaxExtensions <= 0:
		return nil, broker.Errorf(broker.ECONFLICT, "Role %q does not allow extensions (max_extensions is 0).", role.Name)
	case l.Extensions >= role.MaxExtensions:
		return nil, broker.Errorf(broker.ECONFLICT, "Lease was already extended %d time(s), the most role %q allows.", l.Extensions, role.Name)
	case l.Breakglass:
		return nil, broker.Errorf(broker.ECONFLICT, "A break-glass lease is not extended; request a new lease.")
	case s.Privileged != nil && role.Sensitivity.Privileged():
		return nil, broker.Errorf(broker.ECONFLICT, "Leases on %s roles are not extended: every grant needs two approvers; request a new lease.", role.Sensitivity)
	case s.Renewer == nil:
		return nil, broker.Errorf(broker.ECONFLICT, "This server cannot renew credentials; request a new lease.")
	}
	add := role.DefaultTTL
	if ttl != "" {
		if add, err = role.WindowFor(ttl); err != nil {
			return nil, err
		}
	}
	now := s.Now().UTC()
	start, end := *l.ActivatedAt, *l.ExpiresAt
	if half := start.Add(end.Sub(start) / 2); now.Before(half) {
		return nil, broker.Errorf(broker.ECONFLICT, "Too early: a window can be extended once half of it has passed, at %s.", half.UTC().Format(time.RFC3339))
	}
	if !now.Before(end) {
		return nil, broker.Errorf(broker.ECONFLICT, "The window has closed; the lease is expiring.")
	}
	newEnd := end.Add(add)
	if total := newEnd.Sub(start); total > role.TotalTTL() {
		return nil, broker.Errorf(broker.ECONFLICT, "Extending by %s would make the window %s, more than the %s role %q allows in total (max_total_ttl).",
			add, total.Round(time.Second), role.TotalTTL(), role.Name)
	}
	agent, err := s.Store.FindAgentByID(ctx, l.AgentID)
	if err != nil {
		return nil, fmt.Errorf("find agent: %w", err)
	}
	if agent.State != broker.AgentActive {
		return nil, broker.Errorf(broker.EFORBIDDEN, "Agent %s is %s.", agent.Name, agent.State)
	}

	risk, err := s.scoreRisk(ctx, broker.DecisionRequest{Action: broker.ActionExtend, Agent: agent, Role: role, TTL: add, Task: l.Task, Time: now}, actor)
	if err != nil {
		return nil, err
	}
	d, err := s.decideExtension(ctx, l, agent, role, add, actor, now, risk)
	if err != nil {
		return nil, err
	}
	if d.Outcome != broker.OutcomeApprove {
		reason := "extension denied: " + decisionText(d)
		if d.Outcome == broker.OutcomeApprovals {
			reason = "extension denied: policy asks for approvals (" + decisionText(d) + "), and extensions are granted only at once"
		}
		if _, err := s.Store.UpdateLease(ctx, l.ID, broker.LeaseUpdate{
			From: []broker.LeaseState{broker.LeaseActive}, Actor: actor.String(),
			Reason: fmt.Sprintf("%s (asked %s; risk %s)", reason, add, risk.Summary()),
		}); err != nil && broker.ErrorCode(err) != broker.ECONFLICT {
			return nil, fmt.Errorf("record denied extension: %w", err)
		}
		s.Logger.Info("lease extension denied", "lease_id", l.ID, "agent", l.Agent, "role", l.Role, "reason", reason)
		if risk.Contain {
			s.containRisk(ctx, agent.ID, risk, "extension of lease "+l.ID)
		}
		return nil, broker.Errorf(broker.EDENIED, "Extension denied: %s. The lease expires as planned at %s.",
			strings.TrimPrefix(reason, "extension denied: "), end.UTC().Format(time.RFC3339))
	}

	// Write ahead: the longer window is on record before Vault renews.
	n := l.Extensions + 1
	reason := fmt.Sprintf("window extended by %s to %s (extension %d of %d): %s; risk %s",
		add, newEnd.UTC().Format(time.RFC3339), n, role.MaxExtensions, decisionText(d), risk.Summary())
	// The lease's TTL is its whole window, so an extended lease shows the
	// window it now has.
	newTTL, oldTTL := broker.Duration(newEnd.Sub(start)), broker.Duration(end.Sub(start))
	ext, err := s.guardedExtend(ctx, l.ID, end, broker.LeaseUpdate{
		From: []broker.LeaseState{broker.LeaseActive}, ExpiresAt: &newEnd, Extensions: &n, Risk: &risk,
		TTL: &newTTL, Actor: actor.String(), Reason: reason,
	})
	if err != nil {
		return nil, err
	}
	// The window is counted from now, not from the start of this call:
	// Vault counts the increment from when the renewal reaches it, and the
	// write ahead (or a process stalled meanwhile) may have taken long
	// enough that a window counted from the start would let the
	// credential outlive the recorded end by as much.
	lives, err := s.Renewer.Renew(ctx, RenewRequest{VaultLeaseID: l.VaultLeaseID, Role: role, Window: newEnd.Sub(s.Now())})
	if err != nil {
		// Put the window back: the credential still ends when it did.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		back := l.Extensions
		if _, uerr := s.guardedExtend(uctx, l.ID, newEnd, broker.LeaseUpdate{
			From: []broker.LeaseState{broker.LeaseActive}, ExpiresAt: &end, Extensions: &back, TTL: &oldTTL,
			Actor: actorIssuer, Reason: "extension undone: Vault did not renew the credential: " + broker.RetryErrorText(err),
		}); uerr != nil {
			s.Logger.Error("undo extension", "lease_id", l.ID, "err", uerr)
		}
		s.Logger.Warn("lease extension failed", "lease_id", l.ID, "agent", l.Agent, "role", l.Role, "err", err)
		s.Poke()
		switch {
		case errors.Is(err, ErrUnavailable):
			return nil, err
		case errors.Is(err, ErrNotRenewable):
			return nil, broker.Errorf(broker.ECONFLICT, "The credential of role %q cannot be renewed; request a new lease.", role.Name)
		case errors.Is(err, ErrCredentialEnded):
			return nil, broker.Errorf(broker.ECONFLICT, "The credential has already ended in Vault and cannot be extended; the lease ends as planned at %s. Request a new lease.",
				end.UTC().Format(time.RFC3339))
		}
		return nil, fmt.Errorf("renew lease %s: %w", l.ID, err)
	}
	if credEnd := s.Now().UTC().Add(lives); credEnd.Before(newEnd.Add(-time.Second)) {
		// Vault capped the renewal (the Vault role's max TTL): the window
		// ends with the credential.
		capped := credEnd
		cappedTTL := broker.Duration(capped.Sub(start))
		if ext, err = s.guardedExtend(ctx, l.ID, newEnd, broker.LeaseUpdate{
			From: []broker.LeaseState{broker.LeaseActive}, ExpiresAt: &capped, TTL: &cappedTTL, Actor: actorIssuer,
			Reason: fmt.Sprintf("Vault renewed the credential only until %s (the Vault role's max TTL); the window ends then", capped.Format(time.RFC3339)),
		}); err != nil {
			return nil, err
		}
	}
	s.LeaseChanged(l.ID)
	s.Logger.Info("lease extended", "lease_id", l.ID, "agent", l.Agent, "role", l.Role, "expires_at", ext.ExpiresAt, "extensions", ext.Extensions)
	return ext, nil
}

// guardedExtend applies upd if the lease still ends at end.
func (s *Service) guardedExtend(ctx context.Context, id string, end time.Time, upd broker.LeaseUpdate) (*broker.Lease, error) {
	if s.Guard == nil {
		return nil, broker.Errorf(broker.ECONFLICT, "This store cannot extend leases safely; request a new lease.")
	}
	l, err := s.Guard.UpdateLeaseIfExpires(ctx, id, end, upd)
	if broker.ErrorCode(err) == broker.ECONFLICT {
		return nil, broker.Errorf(broker.ECONFLICT, "The lease changed meanwhile (ended, or extended by another request); read it again.")
	}
	return l, err
}

// decideExtension asks policy (action extend) about adding add to l's
// window, with the governance rules that apply to an extension: a
// contained risk score or a role removed by an access review denies.
// Without a Decider, auto_approve roles are extended for eligible agents.
func (s *Service) decideExtension(ctx context.Context, l *broker.Lease, agent *broker.Agent, role *broker.Role, add time.Duration, actor broker.Actor, now time.Time, risk broker.RiskAssessment) (broker.Decision, error) {
	if d, ok := ineligible(agent, role); ok {
		return d, nil
	}
	var d broker.Decision
	if s.Decider == nil {
		d = builtinDecision(agent, role, false)
	} else {
		// Policy sees the agent's live roles; nothing else here reads them.
		roles, err := s.liveRoles(ctx, agent.ID, "")
		if err != nil {
			return broker.Decision{}, err
		}
		d = s.askDecider(ctx, broker.DecisionRequest{
			Action: broker.ActionExtend, Agent: agent, Role: role, TTL: add, Task: l.Task,
			Justification: l.Justification, AuthMethod: actor.AuthMethod, OnBehalfOf: actor.OnBehalfOf,
			SourceIP: actor.SourceIP, Time: now, RiskScore: risk.Score, ActiveRoles: roles,
		})
	}
	// Conflicts were checked when the lease became live; an extension
	// holds no new role.
	return s.govern(ctx, d, agent, role, broker.LeaseRequest{Role: role.Name}, actor, risk, nil)
}
