package vault

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases"
)

var _ leases.Renewer = (*Issuer)(nil)

// Renew implements leases.Renewer with sys/leases/renew: the increment is
// the time from now to the window's end (less the database plugin's slack
// for database roles, so that PostgreSQL's VALID UNTIL stays inside the
// window too). Vault caps the result at the Vault role's max TTL, counted
// from the credential's creation; Renew returns what Vault granted.
//
// Tokens are refused with leases.ErrNotRenewable: Stint mints them
// non-renewable, with an explicit max TTL equal to the window, so that no
// token outlives its window even if Stint is down. Re-minting a token
// instead would hand the agent a second credential while the first is
// live; Stint does not do it.
func (is *Issuer) Renew(ctx context.Context, req leases.RenewRequest) (time.Duration, error) {
	switch {
	case strings.HasPrefix(req.VaultLeaseID, AccessorPrefix):
		return 0, fmt.Errorf("renew vault token %s: %w", req.VaultLeaseID, leases.ErrNotRenewable)
	case req.VaultLeaseID == "":
		return 0, errors.New("renew vault lease: empty lease id")
	case req.Window < time.Second:
		return 0, fmt.Errorf("renew vault lease %s: window %s is under a second", req.VaultLeaseID, req.Window)
	}
	increment := windowSeconds(req.Window)
	slack := 0
	if req.Role != nil && req.Role.Kind == broker.KindDatabase && increment > 2*databaseExpirySlack {
		slack = databaseExpirySlack
	}
	increment -= slack
	s, err := is.control.write(ctx, "sys/leases/renew", map[string]any{"lease_id": req.VaultLeaseID, "increment": increment})
	if vaultSaid(err, 400, "lease is not renewable") {
		return 0, fmt.Errorf("renew vault lease %s: %w", req.VaultLeaseID, leases.ErrNotRenewable)
	} else if vaultSaid(err, 400, "lease not found") || vaultSaid(err, 400, "lease expired") || vaultSaid(err, 400, "invalid lease") {
		// Revoked or expired in Vault, for instance by Vault itself while
		// Stint could not reach it: renewing again cannot help.
		return 0, fmt.Errorf("renew vault lease %s: %w", req.VaultLeaseID, leases.ErrCredentialEnded)
	} else if err != nil {
		return 0, fmt.Errorf("renew vault lease %s: %w", req.VaultLeaseID, wrapVaultError(err))
	}
	if s == nil {
		return 0, fmt.Errorf("renew vault lease %s: vault returned nothing", req.VaultLeaseID)
	}
	// Vault rounds to whole seconds; allow one.
	if s.LeaseDuration > increment+1 {
		return 0, fmt.Errorf("renew vault lease %s: vault granted %ds, more than the %ds asked", req.VaultLeaseID, s.LeaseDuration, increment)
	}
	return time.Duration(s.LeaseDuration+slack) * time.Second, nil
}
