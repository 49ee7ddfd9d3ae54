package leases

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/stint-broker/stint/broker"
)

// Run drives expiry and the revocation queue until ctx is done. It keeps one
// timer, set to the store's next deadline (capped at MaxSleep) and reset by
// Poke when a lease is created or a revocation is queued. The first pass runs
// at once, so leases that fell due while Stint was down are revoked at start.
func (s *Service) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	defer s.sleepsUntil.Store(0)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-s.wake:
		}
		// Awake: any deadline moved meanwhile pokes (wakeBy), so that the
		// pass after this one sees it.
		s.sleepsUntil.Store(0)
		if err := s.Tick(ctx); err != nil && ctx.Err() == nil {
			s.Logger.Error("expiry pass failed", "err", err)
		}
		wait := s.MaxSleep
		if next, ok, err := s.Store.NextLeaseDeadline(ctx); err != nil {
			if ctx.Err() == nil {
				s.Logger.Error("find next lease deadline", "err", err)
			}
			wait = time.Second // the store may be back soon; don't spin
		} else if ok {
			wait = min(max(next.Sub(s.Now()), 0), s.MaxSleep)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
		s.sleepsUntil.Store(s.Now().Add(wait).UnixNano())
	}
}

// wakeBy pokes the expiry loop unless it will wake by t anyway.
func (s *Service) wakeBy(t time.Time) {
	if until := s.sleepsUntil.Load(); until != 0 && t.UnixNano() >= until {
		return
	}
	s.Poke()
}

// Tick ends overdue approvals, expires every due lease and retries every due
// revocation once. It is idempotent and safe to call from tests with a fake
// clock.
func (s *Service) Tick(ctx context.Context) error {
	if err := s.EndOverdue(ctx); err != nil {
		return err
	}
	if err := s.ExpireDue(ctx); err != nil {
		return err
	}
	return s.RetryRevocations(ctx)
}

// ExpireDue moves every active lease whose window has closed to revoking and
// revokes it. Leases whose revocation fails stay in the queue.
func (s *Service) ExpireDue(ctx context.Context) error {
	for {
		now := s.Now().UTC()
		due, err := s.Store.ClaimExpiredLeases(ctx, now, now.Add(s.ClaimTimeout), s.BatchSize, actorExpiry, "window closed")
		if err != nil {
			return fmt.Errorf("claim expired leases: %w", err)
		}
		s.holdClaims(due...)
		s.revokeAll(ctx, due, actorExpiry)
		if len(due) < s.BatchSize {
			return nil
		}
	}
}

// RetryRevocations attempts every queued revocation whose backoff has passed.
func (s *Service) RetryRevocations(ctx context.Context) error {
	for {
		now := s.Now().UTC()
		due, err := s.Store.ClaimDueRevocations(ctx, now, now.Add(s.ClaimTimeout), s.BatchSize)
		if err != nil {
			return fmt.Errorf("claim due revocations: %w", err)
		}
		s.holdClaims(due...)
		s.revokeAll(ctx, due, actorRevocationQueue)
		if len(due) < s.BatchSize {
			return nil
		}
	}
}

// revokeAll revokes the leases' credentials with at most Workers Vault calls
// at once, then records every confirmed revocation in one store transaction;
// failures are queued for retry one by one. Once Vault is found unreachable,
// the rest of the batch is queued without asking it again, so a pass with
// Vault down takes one timeout, not one per lease.
func (s *Service) revokeAll(ctx context.Context, due []*broker.Lease, actor string) {
	if len(due) == 0 {
		return
	}
	work := make(chan *broker.Lease)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		done = make([]broker.RevocationDone, 0, len(due))
		down error // Vault's unreachable answer, once seen (under mu)
	)
	for range min(s.Workers, len(due)) {
		wg.Go(func() {
			for l := range work {
				mu.Lock()
				skip := down
				mu.Unlock()
				var err error
				switch {
				case skip != nil:
					err = skip
				case l.VaultLeaseID == "":
					// Contained while issuing, and its minter never recorded a
					// credential within the grace: nothing is on record to
					// revoke. A credential the mint left in Vault is an orphan
					// the reconciler revokes.
					s.Logger.Warn("revoking lease has no credential on record; the reconciler revokes any the mint left",
						"lease_id", l.ID, "agent", l.Agent, "role", l.Role)
				default:
					err = s.Issuer.Revoke(ctx, l.VaultLeaseID)
				}
				if err == nil {
					mu.Lock()
					done = append(done, broker.RevocationDone{LeaseID: l.ID, At: s.Now().UTC()})
					mu.Unlock()
					continue
				}
				if ctx.Err() != nil {
					// Stopping: the call was cut short, not refused. The
					// claim stays held, and ReleaseClaims hands it on.
					continue
				}
				if errors.Is(err, ErrUnavailable) {
					mu.Lock()
					if down == nil {
						down = err
					}
					mu.Unlock()
				}
				if _, err := s.queueRetry(ctx, l, err); err != nil {
					s.Logger.Error("revocation bookkeeping failed", "lease_id", l.ID, "err", err)
				} else {
					s.dropClaims(l.ID)
				}
			}
		})
	}
	for _, l := range due {
		work <- l
	}
	close(work)
	wg.Wait()

	// What Vault confirmed is recorded even when the service is stopping.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	ended, err := s.Store.EndRevocations(rctx, done, actor, "revocation confirmed by Vault")
	if err != nil {
		// The credentials are gone; the leases stay revoking and the queue
		// confirms them again (revoking a revoked lease succeeds).
		s.Logger.Error("record confirmed revocations", "leases", len(done), "err", err)
		return
	}
	for _, d := range done {
		s.dropClaims(d.LeaseID)
	}
	for _, l := range ended {
		s.Logger.Info("lease ended", "lease_id", l.ID, "agent", l.Agent, "role", l.Role, "state", l.State)
	}
}
