package leases

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/stint-broker/stint/broker"
)

// waitPoll is how often WaitLease re-reads the lease even without a change
// signal: an approval recorded by another process (the CLI) signals nothing.
const waitPoll = time.Second

// decide asks the Decider about a request, failing closed: an error or a
// malformed decision denies. The governance rules (governance.go) then
// apply on top of what policy said.
//
// The agent's live roles are read only when something reads them: the
// Decider (policy sees them) or the role's conflict sets.
func (s *Service) decide(ctx context.Context, agent *broker.Agent, role *broker.Role, window time.Duration, req broker.LeaseRequest, actor broker.Actor, now time.Time, risk broker.RiskAssessment) (broker.Decision, error) {
	// Eligibility holds before policy, whatever the policy set checks.
	if d, ok := ineligible(agent, role); ok {
		return d, nil
	}
	var roles []string
	if s.Decider != nil || len(s.conflictsWith(role.Name)) > 0 {
		var err error
		if roles, err = s.liveRoles(ctx, agent.ID, ""); err != nil {
			return broker.Decision{}, err
		}
	}
	return s.decideWith(ctx, agent, role, window, req, actor, now, risk, roles)
}

// decideWith is decide once the agent's live roles are known: policy (or
// the built-in rule), then the governance rules. RequestLease and
// DecideRequest both decide here.
func (s *Service) decideWith(ctx context.Context, agent *broker.Agent, role *broker.Role, window time.Duration, req broker.LeaseRequest, actor broker.Actor, now time.Time, risk broker.RiskAssessment, roles []string) (broker.Decision, error) {
	if s.Decider == nil {
		return s.govern(ctx, builtinDecision(agent, role, req.Breakglass), agent, role, req, actor, risk, roles)
	}
	d := s.askDecider(ctx, broker.DecisionRequest{
		Action:        broker.ActionRequest,
		Agent:         agent,
		Role:          role,
		TTL:           window,
		Task:          req.Task,
		Justification: req.Justification,
		AuthMethod:    actor.AuthMethod,
		OnBehalfOf:    actor.OnBehalfOf,
		SourceIP:      actor.SourceIP,
		Time:          now,
		RiskScore:     risk.Score,
		ActiveRoles:   roles,
		Breakglass:    req.Breakglass,
	})
	return s.govern(ctx, d, agent, role, req, actor, risk, roles)
}

// requestable checks that agent may ask for a lease at all and resolves
// req's role and window, as RequestLease does before deciding. Returns
// EFORBIDDEN if the agent is not active, EINVALID for an unknown role or a
// window the role does not allow.
func (s *Service) requestable(agent *broker.Agent, req broker.LeaseRequest) (*broker.Role, time.Duration, error) {
	if agent.State != broker.AgentActive {
		return nil, 0, broker.Errorf(broker.EFORBIDDEN, "Agent %s is %s.", agent.Name, agent.State)
	}
	role := s.role(req.Role)
	if role == nil {
		return nil, 0, broker.FieldErrorf("role", "Role %q does not exist.", req.Role)
	}
	window, err := s.requestWindow(role, req) // breakglass.go
	if err != nil {
		return nil, 0, err
	}
	return role, window, nil
}

// DecideRequest answers what RequestLease would decide for req by agent,
// authenticated as actor (its AuthMethod, OnBehalfOf and SourceIP), at now,
// with the risk assessment given and the agent holding live leases on
// liveRoles. It runs RequestLease's own code: the agent must be active, the
// role and window are resolved as for a request, policy (or the built-in
// rule) decides, and the governance rules apply on top (a contained risk
// score, a role an access review removed, separation of duty, the
// privileged safeguards, break-glass). Nothing is recorded, scored or
// minted. `stint policy explain` shows its answer. Returns the errors
// RequestLease returns before deciding (EFORBIDDEN, EINVALID).
func (s *Service) DecideRequest(ctx context.Context, agent *broker.Agent, actor broker.Actor, req broker.LeaseRequest, now time.Time, risk broker.RiskAssessment, liveRoles []string) (broker.Decision, error) {
	role, window, err := s.requestable(agent, req)
	if err != nil {
		return broker.Decision{}, err
	}
	return s.decideWith(ctx, agent, role, window, req, actor, now.UTC(), risk, liveRoles)
}

// askDecider asks the Decider, failing closed: an error or a malformed
// decision denies.
func (s *Service) askDecider(ctx context.Context, dr broker.DecisionRequest) broker.Decision {
	agent, role := dr.Agent, dr.Role
	d, err := s.Decider.Decide(ctx, dr)
	if err != nil {
		s.Logger.Error("policy decision failed; denying", "agent", agent.Name, "role", role.Name, "action", dr.Action, "err", err)
		return broker.Decision{Outcome: broker.OutcomeDeny, Reasons: []string{"policy evaluation failed"}}
	}
	switch d.Outcome {
	case broker.OutcomeApprove, broker.OutcomeDeny:
	case broker.OutcomeApprovals:
		if d.Approvals < 1 || d.ApproverGroup == "" {
			s.Logger.Error("policy asked for approvals without a count or group; denying",
				"agent", agent.Name, "role", role.Name, "approvals", d.Approvals, "group", d.ApproverGroup)
			d.Outcome = broker.OutcomeDeny
			d.Reasons = append(d.Reasons, "policy asked for approvals without naming how many or from whom")
		}
	default:
		d.Reasons = append(d.Reasons, fmt.Sprintf("policy returned an unknown outcome %q", d.Outcome))
		d.Outcome = broker.OutcomeDeny
	}
	return d
}

// liveRoles returns the roles the agent holds live leases on (issuing,
// active or revoking: a credential may exist), sorted, leaving out the
// lease except.
func (s *Service) liveRoles(ctx context.Context, agentID, except string) ([]string, error) {
	roles, err := s.Store.LiveRoles(ctx, agentID, except)
	if err != nil {
		return nil, fmt.Errorf("find live roles: %w", err)
	}
	return roles, nil
}

// ineligible returns a denial, and true, if the agent's labels do not
// satisfy the role's eligible selector. It is checked before any policy is
// asked, on request and on extension, so that a policy set that never
// reads context.eligible cannot grant an ineligible agent.
func ineligible(agent *broker.Agent, role *broker.Role) (broker.Decision, bool) {
	if role.EligibleFor(agent) {
		return broker.Decision{}, false
	}
	return broker.Decision{Outcome: broker.OutcomeDeny, PolicyIDs: []string{"stint:eligibility"},
		Reasons: []string{fmt.Sprintf("agent %s is not eligible for role %s", agent.Name, role.Name)}}, true
}

// builtinDecision is the rule without a Decider: eligible agents get
// auto_approve roles (and, in an emergency, break-glass roles); nothing
// else is granted.
func builtinDecision(agent *broker.Agent, role *broker.Role, breakglass bool) broker.Decision {
	switch {
	case !role.EligibleFor(agent):
		return broker.Decision{Outcome: broker.OutcomeDeny, Reasons: []string{fmt.Sprintf("agent %s is not eligible for role %s", agent.Name, role.Name)}}
	case breakglass:
		return broker.Decision{Outcome: broker.OutcomeApprove, Reasons: []string{fmt.Sprintf("agent %s is eligible for role %s", agent.Name, role.Name)}}
	case !role.AutoApprove:
		return broker.Decision{Outcome: broker.OutcomeDeny, Reasons: []string{fmt.Sprintf("role %s needs human approval, which this server does not offer", role.Name)}}
	}
	return broker.Decision{Outcome: broker.OutcomeApprove, Reasons: []string{fmt.Sprintf("role %s is auto_approve and agent %s is eligible", role.Name, agent.Name)}}
}

// decisionText is the one-line summary of a decision kept on the lease.
func decisionText(d broker.Decision) string {
	reasons := strings.Join(d.Reasons, "; ")
	switch d.Outcome {
	case broker.OutcomeApprove:
		if reasons == "" {
			return "auto-approved by policy"
		}
		return "auto-approved: " + reasons
	case broker.OutcomeApprovals:
		s := fmt.Sprintf("needs %d approval(s) from %s", d.Approvals, d.ApproverGroup)
		if reasons != "" {
			s += ": " + reasons
		}
		return s
	}
	if reasons == "" {
		return "denied by policy"
	}
	return reasons
}

// LeaseChanged signals that a lease changed state: it wakes the expiry loop
// (a new deadline), every WaitLease, and calls OnChange. Approvals call it
// (through the wiring in cmd) when they approve or reject a lease.
func (s *Service) LeaseChanged(leaseID string) {
	s.Poke()
	s.broadcastChange()
	if s.OnChange != nil {
		s.OnChange(leaseID)
	}
}

// activated is LeaseChanged for a lease that became active, which asks
// less of the loops: the expiry loop is woken only if the lease's window
// closes before the loop would wake anyway, and OnChange (the approval
// outbox) hears only of a lease that went to approvers, since no other
// lease has notices to send. Under load this spares a pass of the expiry
// loop (three claims, each a write transaction) and of the outbox per
// grant.
func (s *Service) activated(l *broker.Lease) {
	if l.ExpiresAt != nil {
		s.wakeBy(*l.ExpiresAt)
	} else {
		s.Poke()
	}
	s.broadcastChange()
	if s.OnChange != nil && l.PolicyDecision != nil && l.PolicyDecision.Outcome == broker.OutcomeApprovals {
		s.OnChange(l.ID)
	}
}

// broadcastChange wakes every WaitLease.
func (s *Service) broadcastChange() {
	s.changeMu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.changeMu.Unlock()
}

func (s *Service) changes() <-chan struct{} {
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	return s.changed
}

// WaitLease implements broker.LeaseService. wait is capped at broker.MaxLeaseWait.
func (s *Service) WaitLease(ctx context.Context, id string, wait time.Duration) (*broker.Lease, error) {
	l, err := s.FindLeaseByID(ctx, id)
	if err != nil || l.State != broker.LeasePending || wait <= 0 {
		return l, err
	}
	deadline := time.NewTimer(min(wait, broker.MaxLeaseWait))
	defer deadline.Stop()
	poll := time.NewTicker(waitPoll)
	defer poll.Stop()
	for {
		changed := s.changes()
		select {
		case <-ctx.Done():
			return l, nil
		case <-deadline.C:
			return l, nil
		case <-changed:
		case <-poll.C:
		}
		next, err := s.Store.FindLeaseByID(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return l, nil
			}
			return nil, fmt.Errorf("re-read lease: %w", err)
		}
		if l = next; l.State != broker.LeasePending {
			return l, nil
		}
	}
}

// ActivateLease implements broker.LeaseService. Like an auto-approved
// request it writes ahead: the lease is issuing before Vault is asked.
func (s *Service) ActivateLease(ctx context.Context, id string) (*broker.Lease, *broker.Credential, error) {
	actor, err := actorFrom(ctx)
	if err != nil {
		return nil, nil, err
	}
	if actor.Kind != broker.ActorAgent {
		return nil, nil, broker.Errorf(broker.EFORBIDDEN, "Only the agent that asked for a lease activates it.")
	}
	l, err := s.FindLeaseByID(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	switch l.State {
	case broker.LeaseApproved:
	case broker.LeasePending:
		return nil, nil, broker.Errorf(broker.ECONFLICT, "Lease is still pending approval.")
	case broker.LeaseIssuing, broker.LeaseActive, broker.LeaseRevoking:
		return nil, nil, broker.Errorf(broker.ECONFLICT, "Lease is already activated; its credential was returned once, when it was activated.")
	default:
		return nil, nil, broker.Errorf(broker.ECONFLICT, "Lease is %s.", l.State)
	}
	now := s.Now().UTC()
	if l.ActivateBy != nil && !now.Before(*l.ActivateBy) {
		if _, err := s.Store.UpdateLease(ctx, l.ID, broker.LeaseUpdate{
			From: []broker.LeaseState{broker.LeaseApproved}, State: ptr(broker.LeaseLapsed), EndedAt: &now,
			Actor: actorApprovalTimeout, Reason: overdueReasons.Lapsed,
		}); err != nil && broker.ErrorCode(err) != broker.ECONFLICT {
			return nil, nil, fmt.Errorf("record lapsed lease: %w", err)
		}
		s.LeaseChanged(l.ID)
		return nil, nil, broker.Errorf(broker.ECONFLICT, "The approval lapsed at %s; request the lease again.", l.ActivateBy.UTC().Format(time.RFC3339))
	}
	agent, err := s.Store.FindAgentByID(ctx, l.AgentID)
	if err != nil {
		return nil, nil, fmt.Errorf("find agent: %w", err)
	}
	if agent.State != broker.AgentActive {
		return nil, nil, broker.Errorf(broker.EFORBIDDEN, "Agent %s is %s.", agent.Name, agent.State)
	}
	role := s.role(l.Role)
	if role == nil {
		return nil, nil, broker.Errorf(broker.ECONFLICT, "Role %q no longer exists; the lease cannot be activated.", l.Role)
	}
	if err := s.checkActivation(ctx, l, agent, role, actor); err != nil { // governance.go
		return nil, nil, err
	}

	// Write ahead, guarded: of two concurrent activations only one moves the
	// lease to issuing and mints; with conflicting roles, separation of duty
	// is checked in the same transaction.
	issuing, err := s.activateIntent(ctx, l.ID, l.Role, broker.LeaseUpdate{
		From:        []broker.LeaseState{broker.LeaseApproved},
		AgentActive: true,
		State:       ptr(broker.LeaseIssuing),
		Actor:       actor.String(),
		Reason:      "activating: minting the credential",
	})
	if isDutyConflict(err) {
		return nil, nil, err
	} else if broker.ErrorCode(err) == broker.ECONFLICT {
		return nil, nil, broker.Errorf(broker.ECONFLICT, "Lease is already activated; its credential was returned once, when it was activated.")
	} else if err != nil {
		return nil, nil, fmt.Errorf("record activation intent: %w", err)
	}
	return s.activate(ctx, issuing, role, actor)
}

// CancelLease implements broker.LeaseService. Agents cancel their own
// leases; admins any.
func (s *Service) CancelLease(ctx context.Context, id string) (*broker.Lease, error) {
	actor, err := actorFrom(ctx)
	if err != nil {
		return nil, err
	}
	l, err := s.FindLeaseByID(ctx, id)
	if err != nil {
		return nil, err
	}
	if l.State != broker.LeasePending && l.State != broker.LeaseApproved {
		return nil, broker.Errorf(broker.ECONFLICT, "Lease is %s; only a pending or approved lease can be canceled.", l.State)
	}
	now := s.Now().UTC()
	reason := "canceled by the agent"
	if actor.IsAdmin() {
		reason = "canceled by an admin"
	}
	l, err = s.Store.UpdateLease(ctx, id, broker.LeaseUpdate{
		From:    []broker.LeaseState{broker.LeasePending, broker.LeaseApproved},
		State:   ptr(broker.LeaseCanceled),
		EndedAt: &now,
		Actor:   actor.String(),
		Reason:  reason,
	})
	if err != nil {
		return nil, err
	}
	s.Logger.Info("lease canceled", "lease_id", l.ID, "agent", l.Agent, "role", l.Role, "actor", actor.String())
	s.LeaseChanged(l.ID)
	return l, nil
}

// overdueReasons are the reasons recorded when an approval deadline passes.
var overdueReasons = broker.OverdueReasons{
	TimedOut: "no decision before the deadline",
	Lapsed:   "not activated before the deadline",
}

// EndOverdue ends pending leases past DecideBy (timed_out) and approved
// leases past ActivateBy (lapsed). Nothing was minted for either, so nothing
// needs revoking. It is idempotent; the expiry loop runs it on every pass.
func (s *Service) EndOverdue(ctx context.Context) error {
	for {
		ended, err := s.Store.EndOverdueLeases(ctx, s.Now().UTC(), s.BatchSize, actorApprovalTimeout, overdueReasons)
		if err != nil {
			return fmt.Errorf("end overdue leases: %w", err)
		}
		for _, l := range ended {
			s.Logger.Info("lease ended before activation", "lease_id", l.ID, "agent", l.Agent, "role", l.Role, "state", l.State)
			s.LeaseChanged(l.ID)
		}
		if len(ended) < s.BatchSize {
			return nil
		}
	}
}
