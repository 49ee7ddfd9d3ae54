package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/robfig/cron/v3"
)

const shutdownTimeout = 20 * time.Second

// schedule maps housekeeping jobs to their cron specs. Lease expiry is not
// here: the expiry loop drives it from the store's deadlines.
func (m *Main) schedule(ctx context.Context) (*cron.Cron, error) {
	l := cronLogger{m.Logger}
	c := cron.New(
		cron.WithLocation(time.UTC),
		cron.WithParser(cronParser), // the parser that validated the specs
		cron.WithLogger(l),
		// SkipIfStillRunning must be outermost: inside Recover, a panic would
		// lose its token and skip the job forever (robfig/cron#366).
		cron.WithChain(cron.SkipIfStillRunning(l), cron.Recover(l)),
	)
	// Housekeeping runs on one replica a tick (addExclusive); the expiry
	// loop, the revocation queue and the approval outbox claim each due
	// item instead, so every replica works on them.
	if err := m.addExclusive(ctx, c, "reconcile", m.Config.Leases.ReconcileSchedule, m.reconcile); err != nil {
		return nil, fmt.Errorf("leases.reconcile_schedule %q: %w", m.Config.Leases.ReconcileSchedule, err)
	}
	if err := m.scheduleGovernance(ctx, c); err != nil { // app_governance.go
		return nil, err
	}
	if m.Checkpoints != nil {
		// Every replica signs checkpoints into its own file: not exclusive.
		if _, err := c.AddFunc(m.Config.Audit.Checkpoints.Schedule, func() { m.checkpoint(ctx) }); err != nil {
			return nil, fmt.Errorf("audit.checkpoints.schedule %q: %w", m.Config.Audit.Checkpoints.Schedule, err)
		}
	}
	if m.Config.Approval.NoticeRetention > 0 {
		if err := m.addExclusive(ctx, c, "prune_notices", "@hourly", m.pruneNotices); err != nil {
			return nil, fmt.Errorf("schedule the outbox prune: %w", err)
		}
	}
	if err := m.addExclusive(ctx, c, "prune_counters", "@every 10m", m.pruneReplicaState); err != nil {
		return nil, fmt.Errorf("schedule the counters' prune: %w", err)
	}
	return c, nil
}

// pruneNotices deletes the approval outbox's notices delivered more than
// approval.notice_retention ago.
func (m *Main) pruneNotices(ctx context.Context) {
	before := time.Now().Add(-m.Config.Approval.NoticeRetention)
	n, err := m.DB.PruneNotices(ctx, before)
	if err != nil {
		m.Logger.Error("prune delivered approval notices", "deleted", n, "err", err)
		return
	}
	if n > 0 {
		m.Logger.Info("pruned delivered approval notices", "deleted", n, "sent_before", before.UTC().Format(time.RFC3339))
	}
}

func (m *Main) reconcile(ctx context.Context) {
	rep, err := m.Leases.Reconcile(ctx)
	if err != nil {
		m.Logger.Error("reconcile failed", "err", err)
		return
	}
	if len(rep.Orphans)+len(rep.Stale)+len(rep.FailedIssuing)+len(rep.Errors) > 0 {
		m.Logger.Warn("reconcile acted", "checked", rep.Checked, "orphans_revoked", len(rep.Orphans),
			"stale_revoked", len(rep.Stale), "issuing_failed", len(rep.FailedIssuing), "errors", len(rep.Errors))
	}
}

// cronLogger adapts slog to cron.Logger.
type cronLogger struct{ l *slog.Logger }

func (c cronLogger) Info(msg string, kv ...any) { c.l.Debug("cron: "+msg, kv...) }
func (c cronLogger) Error(err error, msg string, kv ...any) {
	c.l.Error("cron: "+msg, append(kv, "err", err)...)
}
