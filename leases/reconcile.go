package leases

import (
	"context"
	"fmt"

	"github.com/stint-broker/stint/broker"
)

// ReconcileReport says what one reconciliation pass did.
type ReconcileReport struct {
	// Checked is how many Vault credentials under Stint's roles were looked at.
	Checked int
	// Orphans are Vault lease ids that no lease knew and that were revoked.
	Orphans []string
	// Stale are lease ids that had ended in Stint but were still live in Vault
	// and were revoked again.
	Stale []string
	// FailedIssuing are lease ids stuck in issuing that were marked failed.
	FailedIssuing []string
	// Errors are the revocations that failed (they are retried next pass).
	Errors []error
}

// Reconcile makes Vault agree with the lease store. It revokes credentials
// under the configured roles' Vault paths that no lease records (a crash
// between mint and record leaves those), older than OrphanGrace so that a mint
// in flight is left alone; revokes credentials of leases that already ended;
// and fails leases stuck in issuing for longer than IssuingTimeout. It is
// idempotent; cmd schedules it with cron.
//
// A lease that ended after the listing started is left alone: its
// revocation was confirmed by Vault meanwhile (on this replica or another),
// and the listing, older than that, may still show the credential.
// Revoking it again would be a second revocation of one lease.
func (s *Service) Reconcile(ctx context.Context) (*ReconcileReport, error) {
	rep := &ReconcileReport{}
	listed := s.Now().UTC()
	issued, err := s.Issuer.ListIssued(ctx, s.allRoles())
	if err != nil {
		return rep, fmt.Errorf("list issued credentials: %w", err)
	}
	now := s.Now().UTC()
	for _, c := range issued {
		rep.Checked++
		known, _, err := s.Store.FindLeases(ctx, broker.LeaseFilter{VaultLeaseID: &c.VaultLeaseID, Limit: 1})
		if err != nil {
			return rep, fmt.Errorf("find lease by vault id: %w", err)
		}
		switch {
		case len(known) == 1 && known[0].State.Live():
			continue // the expiry loop and the queue own it
		case len(known) == 1 && known[0].EndedAt != nil && !known[0].EndedAt.Before(listed):
			continue // revoked while the listing ran; the listing is stale
		case len(known) == 1:
			rep.Stale = append(rep.Stale, known[0].ID)
		case now.Sub(c.IssuedAt) < s.OrphanGrace:
			continue // possibly a mint whose record is about to land
		default:
			rep.Orphans = append(rep.Orphans, c.VaultLeaseID)
		}
		if err := s.Issuer.Revoke(ctx, c.VaultLeaseID); err != nil {
			rep.Errors = append(rep.Errors, fmt.Errorf("revoke %s: %w", c.VaultLeaseID, err))
			continue
		}
		s.Logger.Warn("reconciler revoked a credential no live lease holds",
			"vault_lease_id", c.VaultLeaseID, "lease_id", c.LeaseID, "issued_at", c.IssuedAt)
	}

	cutoff := now.Add(-s.IssuingTimeout)
	stuck, _, err := s.Store.FindLeases(ctx, broker.LeaseFilter{States: []broker.LeaseState{broker.LeaseIssuing}, CreatedBefore: &cutoff})
	if err != nil {
		return rep, fmt.Errorf("find stuck issuing leases: %w", err)
	}
	for _, l := range stuck {
		if l.UpdatedAt.After(cutoff) {
			continue // an approved lease activated just now: its mint is in flight
		}
		_, err := s.Store.UpdateLease(ctx, l.ID, broker.LeaseUpdate{
			From:    []broker.LeaseState{broker.LeaseIssuing},
			State:   ptr(broker.LeaseFailed),
			EndedAt: &now,
			Actor:   actorReconciler,
			Reason:  fmt.Sprintf("mint did not complete within %s; any credential minted is revoked by the reconciler", s.IssuingTimeout),
		})
		if broker.ErrorCode(err) == broker.ECONFLICT {
			continue // it completed meanwhile
		} else if err != nil {
			return rep, fmt.Errorf("fail stuck lease: %w", err)
		}
		rep.FailedIssuing = append(rep.FailedIssuing, l.ID)
	}
	return rep, nil
}
