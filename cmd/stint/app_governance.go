package main

import (
	"context"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/stint-broker/stint/approvals/governance"
	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases"
)

// openGovernance wires risk scoring, separation of duty, the privileged
// safeguards, break-glass, extensions and access reviews into the lease
// service and the HTTP API. It runs once the lease, agent and approval
// services (and Slack) exist.
func (m *Main) openGovernance() error {
	alerts := &governance.Alerts{Logger: m.Logger, Audit: m.DB}
	// Slack delivers governance alerts once it implements broker.Alerter;
	// until then they are logged (ERROR for critical) and audited.
	if m.Slack != nil {
		if a, ok := any(m.Slack).(broker.Alerter); ok {
			alerts.Alerter = a
		}
	}
	m.Alerts = alerts
	m.Leases.Alerts = alerts

	if rc := m.Config.Risk; !rc.Disabled {
		loc, err := time.LoadLocation(m.Config.Policy.Timezone)
		if err != nil {
			return fmt.Errorf("policy.timezone: %w", err)
		}
		r := governance.NewRisk(m.DB, m.Logger)
		r.RevokeThreshold, r.Location = rc.RevokeThreshold, loc
		r.AuthFailures = func(ctx context.Context, agentID string) (int, error) {
			n, _, err := m.Agents.AuthFailures(ctx, agentID, "")
			return n, err
		}
		if m.Config.Store.Driver == driverPostgres {
			// Several replicas may score one agent: its request pattern
			// lives in the store. With SQLite, one process, it stays in
			// memory.
			r.Patterns = m.DB
		}
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
	rv := governance.NewReviews(m.DB, m.Config.Roles, m.Logger)
	rv.Deadline, rv.Grace, rv.InactiveDays, rv.BreakglassDue = rc.Deadline, rc.Grace, rc.InactiveDays, rc.BreakglassDue
	rv.KillSwitch, rv.Alerts = m.Leases, alerts
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
	svc.SetConflicts(governance.AllConflicts(cfg.SoD.Conflicts, cfg.SoD.DynamicConflicts))
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
			if err := m.Leases.MonitorRisk(ctx); err != nil {
				m.Logger.Error("risk monitor failed", "err", err)
			}
		}))
	}
	return nil
}
