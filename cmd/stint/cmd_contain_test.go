package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/sqlite"
)

// TestContainCommandTruthful runs the CLI kill switch where Vault cannot
// confirm anything: it must contain the agent, and say that the
// revocations are not confirmed, with exit status 3, never "revoked".
func TestContainCommandTruthful(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "stint.db")
	cfgPath := filepath.Join(dir, "stint.yaml")
	cfg := "store:\n  path: " + dbPath + "\nvault:\n  address: http://127.0.0.1:1\n  timeout: 1s\n  token_env: STINT_TEST_CONTAIN_VAULT_TOKEN\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := sqlite.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	a := &broker.Agent{ID: uuid.NewString(), Name: "etl", Owner: "o@example.com", State: broker.AgentActive, CreatedAt: now, UpdatedAt: now}
	if err := db.CreateAgent(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		exp := now.Add(time.Hour)
		l := &broker.Lease{ID: uuid.NewString(), AgentID: a.ID, Agent: a.Name, Role: "db-readonly", Task: "t",
			TTL: broker.Duration(time.Hour), State: broker.LeaseActive, VaultLeaseID: "database/creds/ro/" + string(rune('a'+i)),
			ActivatedAt: &now, ExpiresAt: &exp, CreatedAt: now, UpdatedAt: now}
		if err := db.CreateLease(context.Background(), l, "agent:etl", "minted"); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	c := func(args ...string) []string { return append([]string{"--config", cfgPath}, args...) }

	t.Run("NoVaultToken", func(t *testing.T) {
		out, err := runCLI(t, "", c("agents", "revoke-all", "etl", "--reason", "incident 1", "--wait", "1s")...)
		if exitCode(err) != 3 {
			t.Fatalf("exit = %d (%v), want 3; output:\n%s", exitCode(err), err, out)
		}
		for _, want := range []string{"2 live leases marked to end", "NOT CONFIRMED: 0 of 2 leases ended", "running server (stint serve) revokes them"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "leases revoked") {
			t.Errorf("output claims a revocation Vault never confirmed:\n%s", out)
		}
	})

	t.Run("VaultUnreachable", func(t *testing.T) {
		t.Setenv("STINT_TEST_CONTAIN_VAULT_TOKEN", "not-a-real-token")
		out, err := runCLI(t, "", c("agents", "suspend", "etl", "--reason", "incident 2", "--wait", "3s")...)
		if exitCode(err) != 3 {
			t.Fatalf("exit = %d (%v), want 3; output:\n%s", exitCode(err), err, out)
		}
		for _, want := range []string{"agent etl is suspended", "NOT CONFIRMED: 0 of 2 leases ended", "failing: "} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		out, err = runCLI(t, "", c("agents", "containments", "etl")...)
		if err != nil || strings.Count(out, "\n") != 3 || !strings.Contains(out, "incident 2") || !strings.Contains(out, "ended 0/2") {
			t.Fatalf("containments = %q, %v; want both containments listed with their progress", out, err)
		}
	})
}
