package main

import (
	"context"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases"
)

// missingVault stands in for Vault in operator commands run without Stint's
// Vault token: commands that only read or change the store work, and any
// that must reach Vault (revoking a lease, for one) fail saying which
// variable to set.
type missingVault struct{ env string }

func (m missingVault) err() error {
	return broker.Errorf(broker.EUNAVAILABLE, "This needs Vault: set %s to Stint's Vault token.", m.env)
}

// Issue implements leases.Issuer.
func (m missingVault) Issue(context.Context, leases.IssueRequest) (*leases.Grant, error) {
	return nil, m.err()
}

// Revoke implements leases.Issuer.
func (m missingVault) Revoke(context.Context, string) error { return m.err() }

// ListIssued implements leases.Issuer.
func (m missingVault) ListIssued(context.Context, []*broker.Role) ([]leases.Issued, error) {
	return nil, m.err()
}

// Ping implements leases.Issuer.
func (m missingVault) Ping(context.Context) error { return m.err() }
