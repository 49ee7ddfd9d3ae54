package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stint-broker/stint/broker/postgres/pgtest"
	"github.com/stint-broker/stint/leases/vault"
)

// TestReplicasIdentity runs two replicas with TLS and OAuth on one
// PostgreSQL store, configured alike (the same issuer URL, the load
// balancer's, and the same token-signing key file): a client assertion
// accepted by one replica is a replay on the other, and an access token
// one replica issued is good on the other.
func TestReplicasIdentity(t *testing.T) {
	_, dsn := pgtest.NewSchema(t)
	dir := t.TempDir()
	base := DefaultConfig()
	base.Store = StoreConfig{Driver: driverPostgres, DSN: dsn}
	base.Store.Path = filepath.Join(dir, "unused.db")
	base.Roles = vault.DevRoles()
	for _, r := range base.Roles {
		r.AutoApprove = true
	}
	cfgA, a := identityConfig(t, base, dir)
	a.start(t, cfgA, fakeIssuer{}, "unused")
	cfgB := cfgA
	cfgB.Listen = fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	b := &idEnv{base: "https://" + cfgB.Listen, serverCA: a.serverCA}
	b.start(t, cfgB, fakeIssuer{}, "unused")

	agentID, _ := a.newIDAgent(t, "etl")
	key := a.registerJWK(t, agentID)
	endpoint := cfgA.OAuth.Issuer + "/oauth/token" // the issuer's, whichever replica answers
	form := a.assertion(t, key, "etl", endpoint, time.Now(), 2*time.Minute, uuid.NewString())
	status, body, _ := a.token(t, a.client(nil), form, "", "")
	if status != http.StatusOK {
		t.Fatalf("token on a = %d %v", status, body)
	}
	token := body["access_token"].(string)

	// The same assertion replayed on the other replica.
	status, body, _ = b.token(t, b.client(nil), form, "", "")
	if status != http.StatusBadRequest || body["error"] != "invalid_client" || !strings.Contains(fmtAny(body["error_description"]), "jti replay") {
		t.Fatalf("assertion replayed on b = %d %v, want 400 invalid_client (jti replay)", status, body)
	}
	// A fresh assertion is good on b, and a's token works there.
	form2 := a.assertion(t, key, "etl", endpoint, time.Now(), 2*time.Minute, uuid.NewString())
	if status, body, _ := b.token(t, b.client(nil), form2, "", ""); status != http.StatusOK {
		t.Fatalf("fresh assertion on b = %d %v", status, body)
	}
	if status, method := b.whoami(t, b.client(nil), token); status != http.StatusOK || method != "private_key_jwt" {
		t.Fatalf("a's access token on b: whoami = %d %s", status, method)
	}
}
