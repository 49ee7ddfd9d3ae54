package governance

import (
	"context"
	"log/slog"

	"github.com/stint-broker/stint/broker"
)

// Alerts is where governance tells humans what happened: every alert is
// logged (ERROR for critical ones, so that log-based paging sees them),
// recorded in the audit log, and delivered by the Alerter (Slack) when one
// is wired. A failed delivery is logged; the log line and the audit record
// remain.
type Alerts struct {
	Logger *slog.Logger
	// Audit records each alert; nil records nothing.
	Audit broker.AuditLog
	// Alerter delivers alerts; nil only logs and audits them.
	Alerter broker.Alerter
}

// Send logs, audits (as auditKind about subject) and delivers a. A nil
// Alerts only logs to the default logger.
func (al *Alerts) Send(ctx context.Context, a broker.Alert, auditKind, subject string) {
	logger := slog.Default()
	if al != nil && al.Logger != nil {
		logger = al.Logger
	}
	level := slog.LevelInfo
	switch a.Severity {
	case broker.SeverityCritical:
		level = slog.LevelError
	case broker.SeverityWarning:
		level = slog.LevelWarn
	}
	attrs := []any{"kind", a.Kind, "audience", a.Audience, "agent", a.Agent, "agent_id", a.AgentID}
	if a.LeaseID != "" {
		attrs = append(attrs, "lease_id", a.LeaseID)
	}
	if a.Role != "" {
		attrs = append(attrs, "role", a.Role)
	}
	if a.ReviewID != "" {
		attrs = append(attrs, "review_id", a.ReviewID)
	}
	if a.Risk != nil {
		attrs = append(attrs, "risk_score", a.Risk.Score)
	}
	logger.Log(ctx, level, "governance alert: "+a.Message, attrs...)
	if al == nil {
		return
	}
	if al.Audit != nil && auditKind != "" {
		d := map[string]any{"alert": a.Kind, "severity": a.Severity, "audience": a.Audience, "message": a.Message, "agent": a.Agent}
		if a.Role != "" {
			d["role"] = a.Role
		}
		if a.LeaseID != "" {
			d["lease_id"] = a.LeaseID
		}
		if a.Owner != "" {
			d["owner"] = a.Owner
		}
		if a.Risk != nil {
			d["risk"] = a.Risk
		}
		actor := broker.SystemActor(broker.JobGovernance).String()
		if err := al.Audit.Record(ctx, broker.AuditEvent{Kind: auditKind, Actor: actor, Subject: subject, Details: broker.AuditDetails(d)}); err != nil {
			logger.Error("record governance alert in the audit log", "kind", auditKind, "subject", subject, "err", err)
		}
	}
	if al.Alerter != nil {
		if err := al.Alerter.Alert(ctx, a); err != nil {
			logger.Error("deliver governance alert", "kind", a.Kind, "audience", a.Audience, "err", err)
		}
	}
}
