package leases

import (
	"context"
	"fmt"
	"time"

	"github.com/stint-broker/stint/broker"
)

// Alerter tells people what the lease service did on its own, such as a
// risk containment. approvals/governance.Alerts implements it: every alert is logged,
// recorded in the audit log as auditKind about subject, and sent to Slack
// when it is wired.
type Alerter interface {
	Send(ctx context.Context, a broker.Alert, auditKind, subject string)
}

// riskContainTimeout bounds a risk containment, which outlives the request
// that triggered it.
const riskContainTimeout = 30 * time.Second

// containRisk acts on a risk score that the scorer said to contain (a
// RiskAssessment with Contain): it pulls the one kill switch on the agent
// as governance (broker.GovernanceActor), suspending it (a disabled agent
// stays disabled) and marking every live lease to end, and alerts
// security. It is a step of its own, taken after the request was denied:
// the scorer decides and never acts. The kill switch writes one store
// transaction and leaves Vault to the revocation queue, so the caller does
// not wait on Vault. An agent no longer active was contained already.
func (s *Service) containRisk(ctx context.Context, agentID string, a broker.RiskAssessment, trigger string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), riskContainTimeout)
	defer cancel()
	agent, err := s.Store.FindAgentByID(ctx, agentID)
	if err != nil {
		s.Logger.Error("risk containment: find agent", "agent_id", agentID, "err", err)
		agent = &broker.Agent{ID: agentID, State: broker.AgentActive}
	}
	if agent.State != broker.AgentActive {
		return
	}
	reason := fmt.Sprintf("risk score %d reached the revoke threshold (%s)", a.Score, trigger)
	action := "agent suspended and its live leases revoked"
	gctx := broker.NewContextWithActor(ctx, broker.GovernanceActor())
	if _, err := s.ContainAgent(gctx, broker.ContainRequest{AgentID: agentID, State: broker.AgentSuspended, Reason: reason, KeepDisabled: true}); err != nil {
		action = "suspending the agent failed: " + broker.ErrorMessage(err)
		s.Logger.Error("risk containment failed", "agent", agent.Name, "agent_id", agentID, "err", err)
	}
	alert := broker.Alert{
		Kind: "risk_containment", Severity: broker.SeverityCritical, Audience: broker.AudienceSecurity,
		AgentID: agentID, Agent: agent.Name, Owner: agent.Owner, Risk: &a,
		Message: fmt.Sprintf("Agent %s (owner %s): %s; %s. Score %s.", agent.Name, agent.Owner, reason, action, a.Summary()),
	}
	if s.Alerts == nil {
		s.Logger.Error("governance alert: "+alert.Message, "kind", alert.Kind, "agent_id", agentID)
		return
	}
	s.Alerts.Send(ctx, alert, broker.AuditRiskContainment, agentID)
}

// MonitorRisk re-scores every agent that holds active leases with the
// factors that change between requests (Risk.ScoreAgent) and contains
// those the scorer says to contain. It is idempotent; cmd runs it every
// risk.monitor_interval.
func (s *Service) MonitorRisk(ctx context.Context) error {
	if s.Risk == nil {
		return nil
	}
	live, _, err := s.Store.FindLeases(ctx, broker.LeaseFilter{States: []broker.LeaseState{broker.LeaseActive}, NoTotal: true})
	if err != nil {
		return fmt.Errorf("find live leases: %w", err)
	}
	now := s.Now().UTC()
	done := map[string]bool{}
	for _, l := range live {
		if done[l.AgentID] {
			continue
		}
		done[l.AgentID] = true
		a, err := s.Risk.ScoreAgent(ctx, l.AgentID, now)
		if err != nil {
			return fmt.Errorf("score agent %s: %w", l.Agent, err)
		}
		if a.Contain {
			s.containRisk(ctx, l.AgentID, a, "risk monitor")
		}
	}
	return nil
}
