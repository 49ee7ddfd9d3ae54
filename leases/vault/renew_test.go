package vault_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stint-broker/stint/leases"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
)

// TestRenew_Ended renews database credentials that Vault no longer holds,
// revoked or never minted: the error says the credential ended
// (leases.ErrCredentialEnded), so that an extension is refused with a
// conflict rather than failing as an internal error again and again.
func TestRenew_Ended(t *testing.T) {
	s := vaulttest.Start(t)
	is := openIssuer(t, s.Config())
	ctx := context.Background()
	g, err := is.Issue(ctx, issueRequest("lease-renew-ended", dbRole(), time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := is.Renew(ctx, leases.RenewRequest{VaultLeaseID: g.VaultLeaseID, Role: dbRole(), Window: 2 * time.Minute}); err != nil {
		t.Fatalf("renew a live credential: %v", err)
	}
	if err := is.Revoke(ctx, g.VaultLeaseID); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{g.VaultLeaseID, "database/creds/" + "stint-readonly/never-minted"} {
		_, err := is.Renew(ctx, leases.RenewRequest{VaultLeaseID: id, Role: dbRole(), Window: 2 * time.Minute})
		if !errors.Is(err, leases.ErrCredentialEnded) {
			t.Fatalf("renew %s = %v, want leases.ErrCredentialEnded", id, err)
		}
		if errors.Is(err, leases.ErrUnavailable) {
			t.Fatalf("renew %s = %v: an ended credential is not Vault being unavailable", id, err)
		}
	}
}
