package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases/vault"
)

const (
	devAgent          = "demo-agent"
	devApprover       = "approver@example.com"
	devSecondApprover = "second-approver@example.com"
	// devDir is where `stint dev` keeps its state by default; its
	// configuration is devConfigFile in it.
	devDir        = "var/dev"
	devConfigFile = "stint.yaml"
)

func newDevCommand() *cobra.Command {
	var dir, vaultBin, pgDSN, listen string
	var vaultPort int
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run Stint on SQLite against a local development Vault (for trying Stint out)",
		Long: `Start a local Vault server built from cmd/devvault (make devvault) with a
PostgreSQL database role and a Vault token role, write a configuration for it,
register the agent "demo-agent", and serve Stint on SQLite. It prints a fresh
API key for demo-agent and commands that request a lease.

State (Vault's file storage, its unseal key and root token, the admin token,
stint.yaml and stint.db) lives in --dir and survives restarts. The Vault
server here is for development only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd, dir, vaultBin, pgDSN, listen, vaultPort)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", devDir, "directory for development state")
	cmd.Flags().StringVar(&vaultBin, "vault-bin", "bin/vault", "Vault server binary (built by make devvault)")
	cmd.Flags().IntVar(&vaultPort, "vault-port", 8250, "port of the development Vault")
	cmd.Flags().StringVar(&pgDSN, "pg-dsn", envOr("STINT_PG_DSN", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"), "PostgreSQL admin DSN Vault uses to create database users (env STINT_PG_DSN)")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:7070", "Stint's HTTP address")
	return cmd
}

func runDev(cmd *cobra.Command, dir, vaultBin, pgDSN, listen string, vaultPort int) error {
	ctx := cmd.Context()
	out := cmd.OutOrStdout()
	if _, err := os.Stat(vaultBin); err != nil {
		return fmt.Errorf("vault binary %s not found: run make devvault first", vaultBin)
	}
	// The Vault process runs in its own state directory, so a relative path
	// would not find the binary from there.
	vaultBin, err := filepath.Abs(vaultBin)
	if err != nil {
		return fmt.Errorf("vault binary: %w", err)
	}
	// The state directory holds the Vault unseal key and root token, the
	// admin token and the database: only its owner may enter it, even if
	// an earlier version (or the user) made it wider.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("make %s private: %w", dir, err)
	}
	fmt.Fprintf(out, "starting development Vault on 127.0.0.1:%d (state in %s) …\n", vaultPort, filepath.Join(dir, "vault"))
	dv, err := vault.StartDev(ctx, vault.DevOptions{Bin: vaultBin, Dir: filepath.Join(dir, "vault"), Port: vaultPort, PGDSN: pgDSN})
	if err != nil {
		return fmt.Errorf("start development vault: %w", err)
	}
	defer dv.Close()

	adminToken, err := devSecret(filepath.Join(dir, "admin-token"))
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, devConfigFile)
	if err := writeDevConfig(cfgPath, dv.Addr, filepath.Join(dir, "stint.db"), listen); err != nil {
		return err
	}
	cfg, err := ReadConfig(cfgPath)
	if err != nil {
		return err
	}
	logger, err := newLogger(LogConfig{Level: "info", Format: "text"}, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	m := NewMain(cfg, logger)
	m.Getenv = func(name string) string {
		switch name {
		case cfg.Vault.TokenEnv:
			return dv.RootToken
		case cfg.Admin.TokenEnv:
			return adminToken
		}
		return os.Getenv(name)
	}
	if err := m.Open(ctx); err != nil {
		m.Close()
		return err
	}
	defer m.Close()

	key, err := devAgentKey(ctx, m)
	if err != nil {
		return err
	}
	printDevInstructions(out, cfg, cfgPath, dv, adminToken, key)
	return m.Run(ctx)
}

// devSecret reads a random secret kept in path, creating it on first use
// with mode 0600 (and narrowing an existing file that others may read).
func devSecret(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		if err := os.Chmod(path, 0o600); err != nil {
			return "", fmt.Errorf("make %s private: %w", path, err)
		}
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	s := "stint_admin_" + base64.RawURLEncoding.EncodeToString(b[:])
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("create %s: %w", path, err)
	}
	if _, err := f.WriteString(s + "\n"); err != nil {
		f.Close()
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return s, f.Close()
}

// writeDevConfig writes the development configuration unless one exists, so
// that edits to it survive restarts.
func writeDevConfig(path, vaultAddr, dbPath, listen string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	cfg := DefaultConfig()
	cfg.Listen = listen
	cfg.Store.Path = dbPath
	cfg.Vault.Address = vaultAddr
	cfg.Log.Format = "text"
	cfg.Roles = vault.DevRoles()
	// Requests are decided by the example Cedar policies, written next to
	// the configuration (`stint policy --help`).
	policyDir := filepath.Join(filepath.Dir(path), "policies")
	if _, err := writeExamplePolicies(policyDir, true); err != nil {
		return err
	}
	cfg.Policy.Files = []string{filepath.Join(policyDir, "guards.cedar"), filepath.Join(policyDir, "tiers.cedar")}
	// Two approvers, so that medium roles (one approval) and high ones (two
	// from security) can be tried with `stint approvals`.
	cfg.Approvers = []*broker.Approver{
		{Email: devApprover, Name: "Dev Approver", Groups: []string{"approvers", "security"}},
		{Email: devSecondApprover, Name: "Second Approver", Groups: []string{"approvers", "security"}},
	}
	b, err := yaml.Marshal(&cfg)
	if err != nil {
		return err
	}
	header := "# Stint development configuration written by `stint dev`. Edit freely; it is kept across restarts.\n"
	return os.WriteFile(path, append([]byte(header), b...), 0o600)
}

// devAgentKey registers demo-agent on first run, and otherwise rotates its
// key: a key is shown only once, so each start prints a fresh one.
func devAgentKey(ctx context.Context, m *Main) (string, error) {
	actx := adminContext(ctx)
	a, err := m.Agents.FindAgent(actx, devAgent)
	switch broker.ErrorCode(err) {
	case "":
		key, _, err := m.Agents.RotateKey(actx, a.ID, 0)
		return key, err
	case broker.ENOTFOUND:
		_, key, _, err := m.Agents.CreateAgent(actx, broker.NewAgent{
			Name: devAgent, Owner: "owner@example.com", Labels: map[string]string{"team": "data", "env": "dev"},
		})
		return key, err
	}
	return "", err
}

func printDevInstructions(out io.Writer, cfg Config, cfgPath string, dv *vault.DevServer, adminToken, key string) {
	base := "http://" + cfg.Listen
	fmt.Fprintf(out, `
Stint is running on %[1]s (SQLite store %[2]s, Vault %[3]s).
Configuration: %[4]s

Agent %[5]q is registered; its API key (fresh on every start):

  export STINT_ADDR=%[1]s
  export STINT_KEY=%[6]s

Request a 5-minute PostgreSQL credential:

  curl -s -X POST %[1]s/v1/leases -H "Authorization: Bearer $STINT_KEY" \
    -H 'Content-Type: application/json' \
    -d '{"role":"db-readonly","ttl":"5m","task":"nightly report","justification":"read sales tables"}'

or with the CLI:

  bin/stint leases request --role db-readonly --ttl 5m --task "nightly report"

Log in with the username and password it returns:

  PGPASSWORD=<password> psql -h 127.0.0.1 -U <username> postgres -c 'select current_user'

Other commands: bin/stint leases list | show ID | history ID | release ID | roles

The vault-token role needs one human approval (policy in %[9]s;
approvers %[10]s and %[11]s):

  bin/stint leases request --role vault-token --ttl 10m --task "read the agent secret"   # 202 pending
  bin/stint -c %[4]s approvals list --as %[10]s                  # each lease ID and its digest
  bin/stint -c %[4]s approvals approve ID --digest DIGEST --as %[10]s
  bin/stint leases activate ID                                    # the Vault token, once

The token reads %[12]s and nothing else:

  curl -s -H "X-Vault-Token: <token>" %[3]s/v1/%[12]s

Every lease event is in the tamper-evident audit chain; check it with:

  bin/stint -c %[4]s audit verify

Admin token (for revoke): %[7]s
  curl -s -X POST %[1]s/v1/leases/ID/revoke -H "Authorization: Bearer %[7]s" -d '{"reason":"test"}' -H 'Content-Type: application/json'

Vault root token (development only): %[8]s
Stop with Ctrl-C.
`, base, cfg.Store.Path, dv.Addr, cfgPath, devAgent, key, adminToken, dv.RootToken,
		filepath.Join(filepath.Dir(cfgPath), "policies"), devApprover, devSecondApprover, vault.DevAgentSecret)
}
