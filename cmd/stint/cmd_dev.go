package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/checkpoint"
	"github.com/stint-broker/stint/broker/identity"
	"github.com/stint-broker/stint/broker/users"
	"github.com/stint-broker/stint/leases/vault"
	"github.com/stint-broker/stint/web"
)

const (
	devAgent          = "demo-agent"
	devApprover       = "approver@example.com"
	devSecondApprover = "second-approver@example.com"
	// devConsoleUser is the console user `stint dev` creates (role admin).
	devConsoleUser = "dev-admin"
	// devDir is where `stint dev` keeps its state by default; its
	// configuration is devConfigFile in it.
	devDir        = "var/dev"
	devConfigFile = "stint.yaml"
	// devCheckpointKey is the audit checkpoint key's file in devDir.
	devCheckpointKey = "audit-checkpoint.key"
	// devMetricsListen is where the development setup serves /metrics.
	devMetricsListen = "127.0.0.1:9464"
)

// Files of the development state directory besides the configuration, the
// store, the policies and Vault's own state. Secrets are mode 0600. The
// clear API key, client secret and console password are kept only because
// this is a demonstration that must survive restarts: Stint itself stores
// only their hashes.
const (
	devAdminTokenFile    = "admin-token"
	devAgentKeyFile      = devAgent + ".api-key"
	devClientSecretFile  = devAgent + ".client-secret"
	devJWTKeyFile        = devAgent + ".jwt-key.pem"
	devConsolePassFile   = devConsoleUser + ".password"
	devTLSDir            = "tls"
	devCADir             = "ca"
	devOAuthKeyFile      = "oauth-signing.key"
	devServerCertFile    = "server.pem"
	devServerKeyFile     = "server.key"
	devTLSCACertFile     = "ca.pem"
	devTLSCAKeyFile      = "ca.key"
	devEnrolmentValidity = 5 * 365 * 24 * time.Hour
)

func newDevCommand() *cobra.Command {
	var dir, vaultBin, pgDSN, listen, store string
	var vaultPort, replicas int
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run Stint on SQLite against a local development Vault (for trying Stint out)",
		Long: `Start a local Vault server built from cmd/devvault (make devvault) with a
PostgreSQL database role and a Vault token role, write a configuration for it,
register the agent "demo-agent", and serve Stint on SQLite with everything on:
HTTPS with optional client certificates (mTLS enrolment), OAuth
(client_secret and private_key_jwt), lease extensions, metrics on
127.0.0.1:9464 and a console user. It prints how to try each.

Everything lives in --dir and is reused on restart: Vault's file storage, its
unseal key and root token, the admin token, stint.yaml, the policies,
stint.db, the audit checkpoint key and checkpoint file, the development TLS CA and server certificate (tls/), the enrolment
CA (ca/), the OAuth signing key, and demo-agent's API key, client secret and
private_key_jwt key, and the console user's password. Those last ones are kept
in clear (mode 0600) only so that the demo survives restarts; Stint stores
only their hashes. The Vault server here is for development only.

--store postgres keeps the store in the database stint_dev on the server of
--pg-dsn (created if missing; a postgres:// URL names another), and
--replicas N (with a PostgreSQL store) serves N replicas on it: this process
as dev-1 on --listen, and N-1 "stint serve" child processes dev-2… on the
next ports (their metrics too), each with its configuration
stint-replica-<i>.yaml in --dir. Ctrl-C stops them all.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd, devOptions{dir: dir, vaultBin: vaultBin, pgDSN: pgDSN, listen: listen, vaultPort: vaultPort, store: store, replicas: replicas})
		},
	}
	cmd.Flags().StringVar(&dir, "dir", devDir, "directory for development state")
	cmd.Flags().StringVar(&vaultBin, "vault-bin", "bin/vault", "Vault server binary (built by make devvault)")
	cmd.Flags().IntVar(&vaultPort, "vault-port", 8250, "port of the development Vault")
	cmd.Flags().StringVar(&pgDSN, "pg-dsn", envOr("STINT_PG_DSN", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"), "PostgreSQL admin DSN Vault uses to create database users (env STINT_PG_DSN)")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:7070", "Stint's address (for a new configuration; an existing one keeps its own)")
	cmd.Flags().StringVar(&store, "store", driverSQLite, "the store: sqlite (as configured), postgres (database "+devStoreDatabase+" on the --pg-dsn server) or a postgres:// URL")
	cmd.Flags().IntVar(&replicas, "replicas", 1, "how many replicas to serve on the store (more than 1 needs a PostgreSQL --store)")
	return cmd
}

// devOptions are the flags of `stint dev`.
type devOptions struct {
	dir, vaultBin, pgDSN, listen, store string
	vaultPort, replicas                 int
}

func runDev(cmd *cobra.Command, o devOptions) error {
	dir, vaultBin, pgDSN, listen, vaultPort := o.dir, o.vaultBin, o.pgDSN, o.listen, o.vaultPort
	ctx := cmd.Context()
	if o.replicas < 1 {
		return errors.New("--replicas must be at least 1")
	}
	store, err := devStore(ctx, o.store, pgDSN)
	if err != nil {
		return err
	}
	if o.replicas > 1 && store == nil {
		return errors.New("--replicas needs a PostgreSQL store (--store postgres): a SQLite store serves one process")
	}
	out := cmd.OutOrStdout()
	if _, err := os.Stat(vaultBin); err != nil {
		return fmt.Errorf("vault binary %s not found: run make devvault first", vaultBin)
	}
	// The Vault process runs in its own state directory, so a relative path
	// would not find the binary from there.
	vaultBin, err = filepath.Abs(vaultBin)
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

	adminToken, err := devSecret(filepath.Join(dir, devAdminTokenFile), "stint_admin_")
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, devConfigFile)
	if err := writeDevConfig(dir, dv.Addr, listen); err != nil {
		return err
	}
	cfg, err := ReadConfig(cfgPath)
	if err != nil {
		return err
	}
	if store != nil {
		cfg.Store = *store
	}
	if err := ensureDevCheckpointKey(out, cfg.Audit.Checkpoints.KeyFile); err != nil {
		return err
	}
	if err := prepareDevFiles(cfg, time.Now().UTC()); err != nil {
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
	if o.replicas > 1 {
		m.ReplicaID = "dev-1"
	}
	if err := m.Open(ctx); err != nil {
		m.Close()
		return err
	}
	defer m.Close()

	st, err := prepareDevState(ctx, m, dir)
	if err != nil {
		return err
	}
	st.AdminToken, st.VaultAddr, st.VaultRootToken = adminToken, dv.Addr, dv.RootToken
	if err := printDevInstructions(out, cfg, dir, st); err != nil {
		return err
	}
	if o.replicas == 1 {
		return m.Run(ctx)
	}
	// The store is migrated (this process opened it): the other replicas
	// start on it now.
	env := append(os.Environ(), cfg.Vault.TokenEnv+"="+dv.RootToken, cfg.Admin.TokenEnv+"="+adminToken)
	rctx, stop := context.WithCancel(ctx)
	others, err := startDevReplicas(rctx, cfg, dir, o.replicas, env, cmd.ErrOrStderr())
	defer func() {
		stop()
		waitDevReplicas(others)
	}()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n%d replicas on the store %s (any of them serves any request):\n  dev-1  %s  (this process)\n", o.replicas, cfg.Store.Describe(), devBaseURL(cfg))
	for _, r := range others {
		fmt.Fprintf(out, "  %s  %s  (stint serve --config %s, pid %d)\n", r.ID, r.URL, r.Config, r.cmd.Process.Pid)
	}
	return m.Run(ctx)
}

// devBaseURL is the URL the development setup serves on.
func devBaseURL(cfg Config) string {
	if cfg.TLS.Enabled() {
		return "https://" + cfg.Listen
	}
	return "http://" + cfg.Listen
}

// devSecret reads a random secret kept in path, creating it (mode 0600,
// with the given prefix) on first use.
func devSecret(path, prefix string) (string, error) {
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
	s := prefix + base64.RawURLEncoding.EncodeToString(b[:])
	return s, writeSecretFile(path, s)
}

// writeSecretFile writes a secret on a line of its own, readable only by
// its owner.
func writeSecretFile(path, secret string) error {
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return err
	}
	// WriteFile keeps the mode of a file that already exists.
	return os.Chmod(path, 0o600)
}

// readSecretFile returns the trimmed content of path, or "" if it does not
// exist.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	return strings.TrimSpace(string(b)), err
}

// writeDevConfig writes the development configuration dir/stint.yaml
// unless one exists, so that edits to it survive restarts. Every file it
// names is inside dir.
func writeDevConfig(dir, vaultAddr, listen string) error {
	path := filepath.Join(dir, devConfigFile)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	cfg := DefaultConfig()
	cfg.Listen = listen
	cfg.Store.Path = filepath.Join(dir, "stint.db")
	cfg.Vault.Address = vaultAddr
	cfg.Log.Format = "text"
	cfg.Roles = vault.DevRoles()
	for _, r := range cfg.Roles {
		if r.Name == "db-readonly" {
			// Extensions on: twice, up to two hours in all.
			r.MaxExtensions, r.MaxTotalTTL = 2, 2*time.Hour
		}
	}
	// Requests are decided by the example Cedar policies, written next to
	// the configuration (`stint policy --help`).
	policyDir := filepath.Join(dir, "policies")
	if _, err := writeExamplePolicies(policyDir, true); err != nil {
		return err
	}
	cfg.Policy.Files = []string{filepath.Join(policyDir, "guards.cedar"), filepath.Join(policyDir, "tiers.cedar")}
	// Audit checkpoints, signed with a key made on first start
	// (ensureDevCheckpointKey). In production the checkpoint file belongs
	// on another host; here it sits next to the database.
	cfg.Audit.Checkpoints.KeyFile = filepath.Join(filepath.Dir(path), devCheckpointKey)
	cfg.Audit.Checkpoints.File = filepath.Join(filepath.Dir(path), "audit-checkpoints.jsonl")
	// Two approvers, so that medium roles (one approval) and high ones (two
	// from security) can be tried with `stint approvals`.
	cfg.Approvers = []*broker.Approver{
		{Email: devApprover, Name: "Dev Approver", Groups: []string{"approvers", "security"}},
		{Email: devSecondApprover, Name: "Second Approver", Groups: []string{"approvers", "security"}},
	}
	// HTTPS with a development CA, so that agents may present client
	// certificates from the enrolment CA (mTLS).
	tlsDir := filepath.Join(dir, devTLSDir)
	cfg.TLS = TLSConfig{CertFile: filepath.Join(tlsDir, devServerCertFile), KeyFile: filepath.Join(tlsDir, devServerKeyFile), ClientCerts: web.ClientCertsOptional}
	cfg.Identity.CADir = filepath.Join(dir, devCADir)
	cfg.OAuth.Enabled = true
	cfg.OAuth.Issuer = "https://" + listen
	cfg.OAuth.SigningKeyFile = filepath.Join(dir, devOAuthKeyFile)
	cfg.Metrics.Listen = devMetricsListen
	b, err := yaml.Marshal(&cfg)
	if err != nil {
		return err
	}
	header := "# Stint development configuration written by `stint dev`. Edit freely; it is kept across restarts.\n" +
		"# Every file it names is in " + dir + " (make clean removes it).\n"
	return os.WriteFile(path, append([]byte(header), b...), 0o600)
}

// ensureDevCheckpointKey creates the audit checkpoint key the development
// configuration names (mode 0600, its public key next to it), unless it
// exists or none is configured.
func ensureDevCheckpointKey(out io.Writer, path string) error {
	if path == "" {
		return nil
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		return err
	}
	pub, err := checkpoint.GenerateKey(path)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "created the audit checkpoint key %s (key id %s)\n", path, broker.AuditKeyID(pub))
	return nil
}

// prepareDevFiles creates what the configuration names but Stint does not
// create itself: the development TLS CA and server certificate, and the
// enrolment CA. Existing ones are reused; an expired server certificate is
// replaced.
func prepareDevFiles(cfg Config, now time.Time) error {
	if cfg.TLS.Enabled() {
		host, _, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return fmt.Errorf("listen %q: %w", cfg.Listen, err)
		}
		caDir := filepath.Dir(cfg.TLS.CertFile)
		if err := ensureDevServerCert(caDir, cfg.TLS.CertFile, cfg.TLS.KeyFile, host, now); err != nil {
			return fmt.Errorf("development TLS certificate: %w", err)
		}
	}
	if ca := cfg.Identity.CADir; ca != "" {
		if _, err := os.Stat(filepath.Join(ca, identity.CAKeyFile)); errors.Is(err, os.ErrNotExist) {
			if _, err := identity.InitCA(ca, "Stint development enrolment CA", devEnrolmentValidity, now); err != nil {
				return fmt.Errorf("enrolment CA: %w", err)
			}
		} else if err != nil {
			return fmt.Errorf("enrolment CA: %w", err)
		}
	}
	return nil
}

// devState is what the development setup prints: the credentials it keeps
// in its state directory.
type devState struct {
	AdminToken, VaultAddr, VaultRootToken string
	// AgentKey is demo-agent's API key; KeyExpires is when it expires, and
	// KeyReused says whether it is the key printed last time.
	AgentKey   string
	KeyExpires time.Time
	KeyReused  bool
	// ClientSecret is demo-agent's OAuth client secret (client_secret_basic).
	ClientSecret string
	// ConsolePassword is devConsoleUser's password.
	ConsolePassword string
}

// prepareDevState registers demo-agent (every auth method allowed) and the
// console user on first run, and on later runs reuses the credentials kept
// in dir when they still work: the API key, the OAuth client secret, the
// private_key_jwt key and the console password. Anything missing or no
// longer valid is issued anew and kept.
func prepareDevState(ctx context.Context, m *Main, dir string) (*devState, error) {
	actx := adminContext(ctx)
	all := []string{broker.AuthAPIKey, broker.AuthMTLS, broker.AuthClientSecret, broker.AuthPrivateKeyJWT}
	st := &devState{}
	a, err := m.Agents.FindAgent(actx, devAgent)
	switch broker.ErrorCode(err) {
	case "":
		if !sameMethods(a.AuthMethods, all) {
			if a, err = m.Agents.SetAuthMethods(actx, a.ID, all); err != nil {
				return nil, err
			}
		}
	case broker.ENOTFOUND:
		var key string
		var k *broker.APIKey
		a, key, k, err = m.Agents.CreateAgent(actx, broker.NewAgent{
			Name: devAgent, Owner: "owner@example.com", Labels: map[string]string{"team": "data", "env": "dev"},
			KeyTTL: m.Config.Keys.MaxTTL, AuthMethods: all,
		})
		if err != nil {
			return nil, err
		}
		if err := writeSecretFile(filepath.Join(dir, devAgentKeyFile), key); err != nil {
			return nil, err
		}
		st.AgentKey, st.KeyExpires = key, k.ExpiresAt
	default:
		return nil, err
	}
	if st.AgentKey == "" {
		if err := reuseOrRotateDevKey(actx, m, a, filepath.Join(dir, devAgentKeyFile), st); err != nil {
			return nil, err
		}
	}
	if m.Config.OAuth.Enabled {
		if st.ClientSecret, err = devClientSecret(actx, m, a, filepath.Join(dir, devClientSecretFile)); err != nil {
			return nil, err
		}
		if err := devJWTKey(actx, m, a, filepath.Join(dir, devJWTKeyFile)); err != nil {
			return nil, err
		}
	}
	if m.Config.Console.Enabled {
		if st.ConsolePassword, err = devConsoleLogin(actx, m, filepath.Join(dir, devConsolePassFile)); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// sameMethods reports whether a and b hold the same auth methods.
func sameMethods(a, b []string) bool {
	return len(a) == len(b) && !slices.ContainsFunc(b, func(m string) bool { return !slices.Contains(a, m) })
}

// reuseOrRotateDevKey keeps the API key stored in path while it still
// authenticates demo-agent, and otherwise rotates the agent's keys and
// stores the new one.
func reuseOrRotateDevKey(ctx context.Context, m *Main, a *broker.Agent, path string, st *devState) error {
	key, err := readSecretFile(path)
	if err != nil {
		return err
	}
	if key != "" {
		if k, ok := devKeyRecord(ctx, m, a.ID, key); ok {
			st.AgentKey, st.KeyExpires, st.KeyReused = key, k.ExpiresAt, true
			return nil
		}
	}
	key, k, err := m.Agents.RotateKey(ctx, a.ID, m.Config.Keys.MaxTTL)
	if err != nil {
		return err
	}
	st.AgentKey, st.KeyExpires = key, k.ExpiresAt
	return writeSecretFile(path, key)
}

// devKeyRecord returns the stored record of key if it is one of the agent's
// live keys.
func devKeyRecord(ctx context.Context, m *Main, agentID, key string) (*broker.APIKey, bool) {
	actor, err := m.Agents.Authenticate(ctx, key)
	if err != nil || actor.AgentID != agentID {
		return nil, false
	}
	keys, err := m.DB.FindAPIKeys(ctx, agentID)
	if err != nil {
		return nil, false
	}
	for _, k := range keys {
		if strings.HasPrefix(key, k.Prefix) && k.RevokedAt == nil {
			return k, true
		}
	}
	return nil, false
}

// devClientSecret keeps the client secret stored in path while it is the
// agent's, and otherwise issues and stores a new one.
func devClientSecret(ctx context.Context, m *Main, a *broker.Agent, path string) (string, error) {
	secret, err := readSecretFile(path)
	if err != nil {
		return "", err
	}
	if secret != "" && a.ClientSecretHash != "" && sha256Hex(secret) == a.ClientSecretHash {
		return secret, nil
	}
	if secret, err = m.Agents.NewClientSecret(ctx, a.ID); err != nil {
		return "", err
	}
	return secret, writeSecretFile(path, secret)
}

// devJWTKey keeps the agent's private_key_jwt signing key in path (created
// on first use) and registers its public half.
func devJWTKey(ctx context.Context, m *Main, a *broker.Agent, path string) error {
	key, err := loadOrCreateECKey(path)
	if err != nil {
		return fmt.Errorf("private_key_jwt key: %w", err)
	}
	jwks, err := publicJWKS(key)
	if err != nil {
		return err
	}
	if a.PublicJWKS != "" && sameJWKS(a.PublicJWKS, jwks) {
		return nil
	}
	_, err = m.Agents.SetPublicJWKS(ctx, a.ID, jwks)
	return err
}

// devConsoleLogin keeps devConsoleUser (an admin) and its password stored
// in path: the user is created, or given the stored password, as needed.
func devConsoleLogin(ctx context.Context, m *Main, path string) (string, error) {
	password, err := readSecretFile(path)
	if err != nil {
		return "", err
	}
	if password == "" {
		if password, err = devSecret(path, ""); err != nil {
			return "", err
		}
	}
	u, err := m.Users.FindUser(ctx, devConsoleUser)
	switch {
	case broker.ErrorCode(err) == broker.ENOTFOUND:
		return password, m.Users.AddUser(ctx, &broker.User{Name: devConsoleUser, Role: broker.RoleAdmin}, password)
	case err != nil:
		return "", err
	case !users.PasswordMatches(u.PasswordHash, password):
		_, err = m.Users.SetPassword(ctx, devConsoleUser, password)
		return password, err
	}
	return password, nil
}
