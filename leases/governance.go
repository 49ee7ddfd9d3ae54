package leases

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/stint-broker/stint/broker"
)

// PrivilegedRules are the safeguards on high and critical roles, enforced
// here whatever policy says:
//
//   - a request is never granted at once: policy's "approve" becomes
//     MinApprovals approvals from ApproverGroup, and fewer approvals are
//     raised to MinApprovals (break-glass aside: that is its point);
//   - the agent must have authenticated by mTLS or private_key_jwt, to
//     request and to activate;
//   - a window (extensions included) is at most MaxTTL;
//   - the owner hears of every grant (the GrantObserver).
type PrivilegedRules struct {
	MaxTTL        time.Duration
	ApproverGroup string
	MinApprovals  int
}

// SetConflicts replaces the separation-of-duty conflict sets (on start and
// on reload).
func (s *Service) SetConflicts(c broker.ConflictSets) {
	s.mu.Lock()
	s.conflicts = c
	s.mu.Unlock()
}

// conflictsWith returns the roles that conflict with role.
func (s *Service) conflictsWith(role string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conflicts.ConflictsWith(role)
}

// scoreRisk asks the RiskScorer about a request. Without one the score is
// 0; an error from it fails the request (fail closed). The scorer only
// scores: a score it says to contain denies the request (govern) and the
// caller then contains the agent (containRisk).
func (s *Service) scoreRisk(ctx context.Context, req broker.DecisionRequest, actor broker.Actor) (broker.RiskAssessment, error) {
	if s.Risk == nil {
		return broker.RiskAssessment{}, nil
	}
	req.AuthMethod, req.OnBehalfOf, req.SourceIP = actor.AuthMethod, actor.OnBehalfOf, actor.SourceIP
	r, err := s.Risk.ScoreRequest(ctx, req)
	if err != nil {
		return broker.RiskAssessment{}, fmt.Errorf("score risk: %w", err)
	}
	return r, nil
}

// govern applies the governance rules to policy's decision d, in order:
// a risk score that crossed the revoke threshold denies; a role an access
// review removed denies; holding a live lease on a conflicting role denies
// (separation of duty; the activating transaction checks again); the
// privileged safeguards; break-glass, which turns anything but a denial
// into an immediate grant; and a request on behalf of a user without a
// verified email is denied if it needs approval, since nobody could tell
// whether that user is among its approvers.
func (s *Service) govern(ctx context.Context, d broker.Decision, agent *broker.Agent, role *broker.Role, req broker.LeaseRequest, actor broker.Actor, risk broker.RiskAssessment, liveRoles []string) (broker.Decision, error) {
	deny := func(id, reason string) broker.Decision {
		return broker.Decision{Outcome: broker.OutcomeDeny, PolicyIDs: []string{id}, Reasons: []string{reason}}
	}
	if risk.Contain {
		return deny("stint:risk-containment", fmt.Sprintf("risk score %d crossed the revoke threshold: agent %s was suspended", risk.Score, agent.Name)), nil
	}
	if s.Guard != nil {
		excluded, err := s.Guard.RoleExcluded(ctx, agent.ID, role.Name)
		if err != nil {
			return broker.Decision{}, fmt.Errorf("check role exclusions: %w", err)
		}
		if excluded {
			return deny("stint:access-review", fmt.Sprintf("an access review removed role %s from agent %s", role.Name, agent.Name)), nil
		}
	}
	for _, c := range s.conflictsWith(role.Name) {
		if slices.Contains(liveRoles, c) {
			return deny("stint:separation-of-duty", fmt.Sprintf("separation of duty: agent %s holds a live lease on role %s, which conflicts with role %s", agent.Name, c, role.Name)), nil
		}
	}
	if p := s.Privileged; p != nil && role.Sensitivity.Privileged() {
		if !broker.StrongAuth(actor.AuthMethod) {
			return deny("stint:privileged-strong-auth", fmt.Sprintf("%s roles require authentication by mTLS or private_key_jwt, not %s", role.Sensitivity, authName(actor.AuthMethod))), nil
		}
		if !req.Breakglass && d.Outcome != broker.OutcomeDeny {
			if d.Outcome == broker.OutcomeApprove {
				d.Outcome, d.ApproverGroup = broker.OutcomeApprovals, p.ApproverGroup
				d.Reasons = append(d.Reasons, fmt.Sprintf("%s roles are never granted without approval", role.Sensitivity))
				d.PolicyIDs = append(d.PolicyIDs, "stint:privileged-approvals")
			}
			if d.Approvals < p.MinApprovals {
				d.Approvals = p.MinApprovals
				d.Reasons = append(d.Reasons, fmt.Sprintf("%s roles need at least %d distinct approvers", role.Sensitivity, p.MinApprovals))
				if !slices.Contains(d.PolicyIDs, "stint:privileged-approvals") {
					d.PolicyIDs = append(d.PolicyIDs, "stint:privileged-approvals")
				}
			}
		}
	}
	if req.Breakglass && d.Outcome != broker.OutcomeDeny {
		d = broker.Decision{
			Outcome:   broker.OutcomeApprove,
			PolicyIDs: append(d.PolicyIDs, "stint:breakglass"),
			Reasons:   []string{"break-glass: " + req.BreakglassReason},
		}
	}
	if d.Outcome == broker.OutcomeApprovals && actor.OnBehalfOf != "" && !actor.OnBehalfOfVerified {
		// Approvers are known by email; a user known only by the identity
		// provider's id could approve their own request unrecognised.
		return deny("stint:delegated-user-unverified", fmt.Sprintf(
			"the request is made on behalf of %s, who has no verified email to tell them apart from the approvers, and it needs approval", actor.OnBehalfOf)), nil
	}
	return d, nil
}

// authName names an authentication method for messages.
func authName(m string) string {
	if m == "" {
		return "an unknown method"
	}
	return m
}

// checkActivation applies the governance rules that hold at activation as
// at request: the agent must still be eligible for the role (its labels or
// the role's selector may have changed since the approval), privileged roles
// need strong authentication, and a role an access review removed cannot be
// activated.
func (s *Service) checkActivation(ctx context.Context, l *broker.Lease, agent *broker.Agent, role *broker.Role, actor broker.Actor) error {
	if !role.EligibleFor(agent) {
		return broker.Errorf(broker.EFORBIDDEN, "Agent %s is no longer eligible for role %s.", agent.Name, role.Name)
	}
	if p := s.Privileged; p != nil && role.Sensitivity.Privileged() && !broker.StrongAuth(actor.AuthMethod) {
		return broker.Errorf(broker.EFORBIDDEN, "%s roles are activated only by an agent authenticated by mTLS or private_key_jwt.", role.Sensitivity)
	}
	if s.Guard != nil {
		excluded, err := s.Guard.RoleExcluded(ctx, l.AgentID, l.Role)
		if err != nil {
			return fmt.Errorf("check role exclusions: %w", err)
		}
		if excluded {
			return broker.Errorf(broker.EFORBIDDEN, "An access review removed role %s from agent %s.", l.Role, l.Agent)
		}
	}
	return nil
}

// createLive records a lease that is about to be minted (state issuing).
// With conflict sets, the store checks separation of duty in the same
// transaction; a refusal is recorded as a denied lease and returned as
// EDENIED.
func (s *Service) createLive(ctx context.Context, l *broker.Lease, actor, reason string) error {
	conflicts := s.conflictsWith(l.Role)
	if s.capInStore() {
		err := s.createCapped(ctx, l, actor, reason, conflicts)
		if isDutyConflict(err) {
			return s.denyConflict(ctx, l, actor, strings.TrimSuffix(broker.ErrorMessage(err), "."))
		}
		return err
	}
	if len(conflicts) == 0 {
		return s.Store.CreateLease(ctx, l, actor, reason)
	}
	if s.Guard == nil {
		return s.denyConflict(ctx, l, actor, "separation of duty cannot be checked: the store has no lease guard")
	}
	err := s.Guard.CreateLeaseExclusive(ctx, l, actor, reason, conflicts)
	if isDutyConflict(err) {
		return s.denyConflict(ctx, l, actor, strings.TrimSuffix(broker.ErrorMessage(err), "."))
	}
	return err
}

// denyConflict records l as denied for reason and returns EDENIED.
func (s *Service) denyConflict(ctx context.Context, l *broker.Lease, actor, reason string) error {
	now := s.Now().UTC()
	l.State, l.EndedAt = broker.LeaseDenied, &now
	l.PolicyDecision = &broker.Decision{Outcome: broker.OutcomeDeny, PolicyIDs: []string{"stint:separation-of-duty"}, Reasons: []string{reason}}
	l.Decision = decisionText(*l.PolicyDecision)
	if err := s.Store.CreateLease(ctx, l, actor, l.Decision); err != nil {
		return fmt.Errorf("record denied lease: %w", err)
	}
	s.Logger.Warn("lease denied: separation of duty", "lease_id", l.ID, "agent", l.Agent, "role", l.Role, "reason", reason)
	return broker.Errorf(broker.EDENIED, "Request denied: %s.", reason)
}

// isDutyConflict reports whether err is a refusal for separation of duty.
func isDutyConflict(err error) bool {
	return errors.Is(err, broker.ErrDutyConflict)
}

// activateIntent moves an approved lease to issuing, checking separation of
// duty in the same store transaction when the role has conflicts.
func (s *Service) activateIntent(ctx context.Context, id, role string, upd broker.LeaseUpdate) (*broker.Lease, error) {
	conflicts := s.conflictsWith(role)
	if len(conflicts) == 0 {
		return s.Store.UpdateLease(ctx, id, upd)
	}
	if s.Guard == nil {
		return nil, &broker.Error{Code: broker.ECONFLICT, Message: "Separation of duty cannot be checked: the store has no lease guard.", Err: broker.ErrDutyConflict}
	}
	return s.Guard.UpdateLeaseExclusive(ctx, id, upd, conflicts)
}

// granted tells the GrantObserver about an activated lease.
func (s *Service) granted(ctx context.Context, l *broker.Lease, role *broker.Role) {
	if s.Grants == nil {
		return
	}
	gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	s.Grants.LeaseGranted(gctx, l, role)
}
