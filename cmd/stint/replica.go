package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
	"unicode"

	"github.com/robfig/cron/v3"

	"github.com/stint-broker/stint/broker"
)

// ReplicaConfig names this replica among several on one store and times
// its claims of scheduled jobs.
type ReplicaConfig struct {
	// ID names the replica in logs (key "replica"), metrics (label
	// "replica") and the claims it holds. Empty: the host name and the
	// process id, such as "web-1-4242". The serve flag --replica-id and
	// STINT_REPLICA_ID override it.
	ID string `yaml:"id"`
	// JobClaimTimeout is how long a claim of a scheduled job holds without
	// renewal. The running replica renews it every third of it; when the
	// replica dies, another may run the job at the first tick after the
	// claim runs out.
	JobClaimTimeout time.Duration `yaml:"job_claim_timeout"`
}

// defaultReplicaConfig claims jobs for two minutes at a time.
func defaultReplicaConfig() ReplicaConfig {
	return ReplicaConfig{JobClaimTimeout: 2 * time.Minute}
}

// Validate checks the replica section.
func (c *ReplicaConfig) Validate() error {
	if err := checkReplicaID(c.ID); err != nil {
		return fmt.Errorf("replica.id: %w", err)
	}
	if c.JobClaimTimeout < 10*time.Second {
		return errors.New("replica.job_claim_timeout must be at least 10s")
	}
	return nil
}

// checkReplicaID refuses ids that would not survive a log line or a metric
// label: at most 128 printable characters without spaces.
func checkReplicaID(id string) error {
	if len(id) > 128 {
		return errors.New("at most 128 characters")
	}
	for _, r := range id {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return fmt.Errorf("%q holds a space or a control character", id)
		}
	}
	return nil
}

// defaultReplicaID is the host name and the process id: unique among
// replicas running at once, and different after a restart, so that a
// restarted replica never mistakes its predecessor's claims for its own.
func defaultReplicaID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "stint"
	}
	return host + "-" + strconv.Itoa(os.Getpid())
}

// replicaID returns the id this process runs as: the override (the serve
// flag or STINT_REPLICA_ID), replica.id, or the host name and process id.
func (m *Main) replicaID() string {
	switch {
	case m.ReplicaID != "":
		return m.ReplicaID
	case m.Config.Replica.ID != "":
		return m.Config.Replica.ID
	}
	return defaultReplicaID()
}

// exclusiveJob wraps a scheduled job so that, of all replicas on the store,
// one runs each tick: the replica that claims it (broker.JobStore). The
// claim is renewed while the job runs; when it passes to another replica
// (this one stalled past the deadline), the job's context is cancelled.
// The claim is released when the job ends, also on shutdown.
func (m *Main) exclusiveJob(ctx context.Context, name string, sched cron.Schedule, job func(ctx context.Context)) cron.Job {
	timeout := m.Config.Replica.JobClaimTimeout
	if timeout <= 0 {
		timeout = defaultReplicaConfig().JobClaimTimeout
	}
	return cron.FuncJob(func() {
		if ctx.Err() != nil {
			return
		}
		now := time.Now().UTC()
		claim, err := m.DB.ClaimJob(ctx, name, m.ReplicaID, now, sched.Next(now), now.Add(timeout))
		if err != nil {
			m.Logger.Error("claim scheduled job", "job", name, "err", err)
			return
		}
		if claim == nil {
			m.Logger.Debug("scheduled job runs elsewhere", "job", name)
			return
		}
		jctx, cancel := context.WithCancel(ctx)
		defer cancel()
		renewed := make(chan struct{})
		go func() {
			defer close(renewed)
			t := time.NewTicker(timeout / 3)
			defer t.Stop()
			for {
				select {
				case <-jctx.Done():
					return
				case <-t.C:
					err := m.DB.RenewJob(jctx, claim, time.Now().Add(timeout))
					if broker.ErrorCode(err) == broker.ECONFLICT {
						m.Logger.Warn("scheduled job's claim passed to another replica; stopping it", "job", name, "epoch", claim.Epoch)
						cancel()
						return
					} else if err != nil && jctx.Err() == nil {
						m.Logger.Warn("renew scheduled job's claim", "job", name, "err", err)
					}
				}
			}
		}()
		m.Logger.Debug("scheduled job claimed", "job", name, "epoch", claim.Epoch)
		job(jctx)
		cancel()
		<-renewed
		fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer fcancel()
		if err := m.DB.FinishJob(fctx, claim, time.Now().UTC()); err != nil {
			m.Logger.Warn("release scheduled job's claim", "job", name, "err", err)
		}
	})
}

// addExclusive schedules job under name with spec on c, run by one replica
// a tick (exclusiveJob).
func (m *Main) addExclusive(ctx context.Context, c *cron.Cron, name, spec string, job func(ctx context.Context)) error {
	sched, err := cronParser.Parse(spec)
	if err != nil {
		return err
	}
	c.Schedule(sched, m.exclusiveJob(ctx, name, sched, job))
	return nil
}

// releaseClaims releases the claims this replica still holds: its
// scheduled jobs', so that another replica takes the jobs at its next tick
// rather than after the claims' deadlines, its unfinished revocations',
// so that another replica revokes those leases at once rather than after
// leases.claim_timeout, and its unsent approval notices', so that another
// replica sends them at once. Close calls it once the requests in flight, the
// expiry loop and the jobs stopped.
func (m *Main) releaseClaims() {
	if m.DB == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if m.Leases != nil {
		if n, err := m.Leases.ReleaseClaims(ctx); err != nil {
			m.Logger.Warn("release revocation claims", "err", err)
		} else if n > 0 {
			m.Logger.Info("released revocation claims", "leases", n)
		}
	}
	if m.Approvals != nil {
		if n, err := m.Approvals.ReleaseClaims(ctx); err != nil {
			m.Logger.Warn("release approval notice claims", "err", err)
		} else if n > 0 {
			m.Logger.Info("released approval notice claims", "notices", n)
		}
	}
	if m.ReplicaID == "" || m.Cron == nil {
		return
	}
	n, err := m.DB.ReleaseJobs(ctx, m.ReplicaID)
	if err != nil {
		m.Logger.Warn("release job claims", "err", err)
		return
	}
	if n > 0 {
		m.Logger.Info("released job claims", "claims", n)
	}
}

// pruneReplicaState deletes rate buckets and failed-authentication counts
// that no longer mean anything: buckets full for an hour, counts older than
// the hour they are read over.
func (m *Main) pruneReplicaState(ctx context.Context) {
	before := time.Now().Add(-time.Hour)
	rates, err := m.DB.PruneRates(ctx, before)
	if err != nil {
		m.Logger.Error("prune rate buckets", "err", err)
	}
	fails, err := m.DB.PruneAuthFailures(ctx, before.Add(-time.Minute))
	if err != nil {
		m.Logger.Error("prune failed-authentication counts", "err", err)
	}
	// A pattern idle for the history's span is rebuilt from the lease
	// history when the agent comes back.
	patterns, err := m.DB.PruneRiskPatterns(ctx, time.Now().Add(-14*24*time.Hour))
	if err != nil {
		m.Logger.Error("prune risk patterns", "err", err)
	}
	if rates+fails+patterns > 0 {
		m.Logger.Info("pruned shared counters", "rate_buckets", rates, "auth_failure_minutes", fails, "risk_patterns", patterns)
	}
}
