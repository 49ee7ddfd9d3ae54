package main

import (
	"context"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/stint-broker/stint/approvals"
	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases"
)

// openGovernance wires risk scoring, separation of duty, the privileged
// safeguards, break-glass, extensions and access reviews into the lease
// service and the HTTP API. It runs once the lease, agent and approval
// services (and Slack) exist.
func (m *Main) openGovernance() error {
	alerts := &approvals.Alerts{Logger: m.Logger, Audit: m.DB}
	// Slack delivers governance alerts once it implements broker.Alerter;
	// until then they are logged (ERROR for critical) and audited.
	if m.Slack != nil {
		if a, ok := any(m.Slack).(broker.Alerter); ok {
			alerts.Alerter = a
		}
	}
	m.Alerts = alerts
	control := agentControl{leases: m.Leases}

	if rc := m.Config.Risk; !rc.Disabled {
		loc, err := time.LoadLocation(m.Config.Policy.Timezone)
		if err != nil {
			return fmt.Errorf("policy.timezone: %w", err)
		}
		r := approvals.NewRisk(m.DB, m.Logger)
		r.RevokeThreshold, r.Location = rc.RevokeThreshold, loc
		r.AuthFailures = func(ctx context.Context, agentID string) (int, error) {
			n, _, err := m.Agents.AuthFailures(ctx, agentID, "")
			return n, err
		}
		r.Control, r.Alerts = control, alerts
		m.Risk = r
		m.Leases.Risk = r
	}

	setDecisionRules(m.Leases, m.Config)
	issuer := m.Issuer
	if ii, ok := issuer.(*instrumentedIssuer); ok {
		issuer = ii.next
	}
	if r, ok := issuer.(leases.Renewer); ok {
		m.Leases.Renewer = r
	}

	rc := m.Config.Reviews
	rv := approvals.NewReviews(m.DB, m.Config.Roles, m.Logger)
	rv.Deadline, rv.Grace, rv.InactiveDays, rv.BreakglassDue = rc.Deadline, rc.Grace, rc.InactiveDays, rc.BreakglassDue
	rv.Control, rv.Alerts = control, alerts
	m.Reviews = rv
	m.Leases.Grants = rv
	m.HTTP.Reviews = rv
	return nil
}

// setDecisionRules gives svc the governance rules that decide requests
// on top of policy: the privileged safeguards and separation of duty. The
// server and `stint policy explain` both decide with them.
func setDecisionRules(svc *leases.Service, cfg Config) {
	gc := cfg.Governance
	svc.Privileged = &leases.PrivilegedRules{MaxTTL: gc.PrivilegedMaxTTL, ApproverGroup: gc.PrivilegedApproverGroup, MinApprovals: 2}
	svc.SetConflicts(approvals.AllConflicts(cfg.SoD.Conflicts, cfg.SoD.DynamicConflicts))
}

// scheduleGovernance adds the review runs, the review deadline check and
// the risk monitor to c.
func (m *Main) scheduleGovernance(ctx context.Context, c *cron.Cron) error {
	rc := m.Config.Reviews
	if rc.Schedule != "" {
		if err := m.addExclusive(ctx, c, "review_campaign", rc.Schedule, func(ctx context.Context) {
			if _, err := m.Reviews.Campaign(ctx); err != nil {
				m.Logger.Error("access review run failed", "err", err)
			}
		}); err != nil {
			return fmt.Errorf("reviews.schedule %q: %w", rc.Schedule, err)
		}
	}
	if err := m.addExclusive(ctx, c, "review_enforce", rc.EnforceSchedule, func(ctx context.Context) {
		if err := m.Reviews.Enforce(ctx); err != nil {
			m.Logger.Error("access review deadlines failed", "err", err)
		}
	}); err != nil {
		return fmt.Errorf("reviews.enforce_schedule %q: %w", rc.EnforceSchedule, err)
	}
	if m.Risk != nil {
		every := cron.Every(m.Config.Risk.MonitorInterval)
		c.Schedule(every, m.exclusiveJob(ctx, "risk_monitor", every, func(ctx context.Context) {
			if err := m.Risk.Monitor(ctx); err != nil {
				m.Logger.Error("risk monitor failed", "err", err)
			}
		}))
	}
	return nil
}

// governanceContext is the context in which governance suspends agents
// and revokes leases: an admin actor named "governance", which lease
// history and the audit log record as "admin:governance".
func governanceContext(ctx context.Context) context.Context {
	return broker.NewContextWithActor(ctx, broker.Actor{Kind: broker.ActorAdmin, Name: "governance", AuthMethod: "local"})
}

// agentControl implements approvals.AgentControl with the lease service's
// one kill switch: risk containment and access reviews contain an agent
// exactly as an admin does (its tokens stop working at once, every live
// lease is marked to end, the revocation queue ends them).
type agentControl struct {
	leases *leases.Service
}

// SuspendAgent implements approvals.AgentControl. A disabled agent is
// contained already, and for good: suspending it (an overdue review, a risk
// containment) leaves it disabled and still ends every live lease.
func (a agentControl) SuspendAgent(ctx context.Context, agentID, reason string) error {
	req := broker.ContainRequest{AgentID: agentID, State: broker.AgentSuspended, Reason: "agent suspended: " + reason}
	if ag, err := a.leases.Store.FindAgentByID(ctx, agentID); err != nil {
		return fmt.Errorf("find agent: %w", err)
	} else if ag.State == broker.AgentDisabled {
		req.State, req.Reason = "", "agent disabled; governance would suspend it: "+reason
	}
	return a.contain(ctx, req)
}

// DisableAgent implements approvals.AgentControl.
func (a agentControl) DisableAgent(ctx context.Context, agentID, reason string) error {
	return a.contain(ctx, broker.ContainRequest{AgentID: agentID, State: broker.AgentDisabled, Reason: "agent disabled: " + reason})
}

// RevokeRoleLeases implements approvals.AgentControl.
func (a agentControl) RevokeRoleLeases(ctx context.Context, agentID, role, reason string) error {
	return a.contain(ctx, broker.ContainRequest{AgentID: agentID, Role: role, Reason: reason})
}

func (a agentControl) contain(ctx context.Context, req broker.ContainRequest) error {
	if _, err := a.leases.ContainAgent(governanceContext(ctx), req); err != nil {
		return fmt.Errorf("contain agent: %w", err)
	}
	return nil
}
