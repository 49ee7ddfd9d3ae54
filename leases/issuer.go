package leases

import (
	"context"
	"time"

	"github.com/stint-broker/stint/broker"
)

// Issuer mints and revokes credentials. leases/vault implements it against
// HashiCorp Vault; benchmarks use a no-op issuer.
type Issuer interface {
	// Issue mints the role's credential for one lease. The Vault lease TTL it
	// leaves in place must not exceed window: an issuer that cannot shorten a
	// lease to the window revokes it and returns an error. Issue must not retry
	// on its own (a replayed mint leaves a credential nobody recorded).
	// Errors wrapping ErrUnavailable mean Vault could not be reached.
	Issue(ctx context.Context, req IssueRequest) (*Grant, error)
	// Revoke revokes the credential and verifies that Vault no longer knows
	// it. Revoking an already-revoked credential succeeds.
	Revoke(ctx context.Context, vaultLeaseID string) error
	// ListIssued returns the credentials Vault holds under the roles' paths,
	// for the reconciler: their Vault lease ids and issue times.
	ListIssued(ctx context.Context, roles []*broker.Role) ([]Issued, error)
	// Ping returns an error if Vault cannot be reached or is sealed.
	Ping(ctx context.Context) error
}

// IssueRequest asks an Issuer for one credential.
type IssueRequest struct {
	LeaseID string
	Agent   string
	Role    *broker.Role
	Window  time.Duration
}

// Grant is what an Issuer minted. Data holds the secret fields.
type Grant struct {
	VaultLeaseID  string
	LeaseDuration time.Duration
	Renewable     bool
	Data          map[string]any
	// Username is the credential's login name when it has one (a database
	// role's user): not a secret, recorded on the lease.
	Username string
}

// Issued is a credential Vault holds, as seen by the reconciler.
type Issued struct {
	VaultLeaseID string
	IssuedAt     time.Time
	// LeaseID is Stint's lease id when Vault recorded it (token metadata);
	// empty otherwise.
	LeaseID string
}

// ErrUnavailable is wrapped by Issuer errors that mean Vault could not be
// reached, was sealed or timed out.
var ErrUnavailable = broker.Errorf(broker.EUNAVAILABLE, "Vault is unreachable; try again shortly.")
