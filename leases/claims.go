package leases

import (
	"context"
	"fmt"
	"time"

	"github.com/stint-broker/stint/broker"
)

// A revocation this service is working on is claimed in the store: the
// lease's NextRevokeAt is pushed ClaimTimeout ahead, which hides it from
// other replicas while the Vault call runs. The service remembers what it
// holds, so that a replica that stops hands its unfinished revocations to
// the others at once (ReleaseClaims) instead of leaving them hidden until
// their claims run out.

// holdClaims records that the service holds the revocation claims of
// leases (their NextRevokeAt as the store returned it).
func (s *Service) holdClaims(leases ...*broker.Lease) {
	s.claimsMu.Lock()
	defer s.claimsMu.Unlock()
	if s.claims == nil {
		s.claims = make(map[string]time.Time)
	}
	for _, l := range leases {
		if l.NextRevokeAt != nil {
			s.claims[l.ID] = *l.NextRevokeAt
		}
	}
}

// dropClaims forgets the claims of leases whose revocation was recorded
// (ended, or queued with a new due time).
func (s *Service) dropClaims(ids ...string) {
	s.claimsMu.Lock()
	defer s.claimsMu.Unlock()
	for _, id := range ids {
		delete(s.claims, id)
	}
}

// HeldClaims returns how many revocation claims the service holds.
func (s *Service) HeldClaims() int {
	s.claimsMu.Lock()
	defer s.claimsMu.Unlock()
	return len(s.claims)
}

// ReleaseClaims makes every revocation this service claimed and did not
// finish due at once, for another replica (or this one's next start) to
// take: the lease's claim is released unless another claim replaced it
// since. Call it once Run returned and the requests in flight ended. It
// returns how many claims it released; without a store that releases
// claims (Claims nil) it releases none, and they run out after
// ClaimTimeout.
func (s *Service) ReleaseClaims(ctx context.Context) (int, error) {
	s.claimsMu.Lock()
	claims := make([]broker.RevocationClaim, 0, len(s.claims))
	for id, until := range s.claims {
		claims = append(claims, broker.RevocationClaim{LeaseID: id, Until: until})
	}
	s.claimsMu.Unlock()
	if s.Claims == nil || len(claims) == 0 {
		return 0, nil
	}
	n, err := s.Claims.ReleaseRevocations(ctx, claims, s.Now().UTC())
	if err != nil {
		return 0, fmt.Errorf("release revocation claims: %w", err)
	}
	ids := make([]string, len(claims))
	for i, c := range claims {
		ids[i] = c.LeaseID
	}
	s.dropClaims(ids...)
	return n, nil
}
