package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/stint-broker/stint/broker"
)

// Names of what Configure creates in the development Vault.
const (
	DevConnection   = "stint-postgres"                // database/config/<name>
	DevDatabaseRole = "stint-readonly"                // database/roles/<name>
	DevPolicy       = "stint-agent-read"              // sys/policies/acl/<name>
	DevTokenRole    = "stint-agent"                   // auth/token/roles/<name>
	DevAgentSecret  = "secret/data/agents/demo"       // readable with DevPolicy
	DevAdminSecret  = "secret/data/admin/break-glass" // not readable with DevPolicy
)

// DefaultDevPGDSN is the PostgreSQL admin DSN of the local development server.
const DefaultDevPGDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// DevOptions says how to run a development Vault server.
type DevOptions struct {
	// Bin is the Vault server binary (make devvault builds bin/vault).
	Bin string
	// Dir holds the server's configuration, file storage, log (vault.log) and
	// its unseal key and root token (init.json, mode 0600). Reusing a Dir keeps
	// Vault's state, leases included.
	Dir string
	// Port is the TCP port on 127.0.0.1 to listen on.
	Port int
	// PGDSN is the PostgreSQL admin DSN (a postgres:// URL) Vault's database
	// engine connects with. Empty means DefaultDevPGDSN.
	PGDSN string
}

// DevServer is a real Vault server for development and tests. Unlike
// "vault server -dev" it keeps its state in Dir, so it survives Stop and
// Start: leases minted before a restart can be revoked after it. It is not
// for production: the unseal key and root token sit next to the data. Its
// methods must not be called concurrently.
type DevServer struct {
	// Addr is the server's URL, e.g. "http://127.0.0.1:8200".
	Addr string
	// RootToken is the root token made when the server was initialised.
	RootToken string
	// Dir is the server's directory (DevOptions.Dir, made absolute).
	Dir string

	opts      DevOptions
	unsealKey string
	client    *sdkClient
	cmd       *exec.Cmd
	exited    chan struct{} // closed when cmd has exited
	log       *os.File
}

// devKeys is what init.json holds.
type devKeys struct {
	UnsealKey string `json:"unseal_key"`
	RootToken string `json:"root_token"`
}

// StartDev starts the Vault server in opts.Dir, initialising it on first use
// and unsealing it, then runs Configure. Call Close when done.
func StartDev(ctx context.Context, opts DevOptions) (*DevServer, error) {
	switch {
	case opts.Bin == "":
		return nil, errors.New("start dev vault: bin is required")
	case opts.Dir == "":
		return nil, errors.New("start dev vault: dir is required")
	case opts.Port <= 0 || opts.Port > 65535:
		return nil, fmt.Errorf("start dev vault: port %d is invalid", opts.Port)
	}
	if opts.PGDSN == "" {
		opts.PGDSN = DefaultDevPGDSN
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("start dev vault: %w", err)
	}
	opts.Dir = dir
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		return nil, fmt.Errorf("start dev vault: %w", err)
	}
	// The directory holds the unseal key and root token (init.json).
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("start dev vault: %w", err)
	}
	s := &DevServer{
		Addr: fmt.Sprintf("http://127.0.0.1:%d", opts.Port),
		Dir:  dir,
		opts: opts,
	}
	if err := s.writeConfig(); err != nil {
		return nil, fmt.Errorf("start dev vault: %w", err)
	}
	client, err := newSDKClient(Config{Address: s.Addr, Timeout: 10 * time.Second}, controlRetries)
	if err != nil {
		return nil, fmt.Errorf("start dev vault: %w", err)
	}
	s.client = client
	if err := s.Start(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.Configure(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Config returns an Issuer configuration that uses the root token.
func (s *DevServer) Config() Config {
	return Config{Address: s.Addr, Token: s.RootToken, Timeout: 10 * time.Second}
}

func (s *DevServer) writeConfig() error {
	hcl := fmt.Sprintf(`storage "file" {
  path = %s
}

listener "tcp" {
  address     = "127.0.0.1:%d"
  tls_disable = true
}

api_addr          = %s
disable_mlock     = true
disable_clustering = true
ui                = false
log_level         = "info"
`, strconv.Quote(filepath.Join(s.Dir, "data")), s.opts.Port, strconv.Quote(s.Addr))
	return os.WriteFile(filepath.Join(s.Dir, "vault.hcl"), []byte(hcl), 0o600)
}

// Start starts the server process if it is not running, waits until it
// answers, initialises it if it has never been, and unseals it.
func (s *DevServer) Start(ctx context.Context) error {
	if s.cmd != nil {
		select {
		case <-s.exited:
			_ = s.Stop() // it died on its own: reap it and start afresh
		default:
			return nil
		}
	}
	// Vault tells of a port already taken only in its log. Try the port
	// first, so that the caller learns it from the error's chain
	// (errors.Is(err, syscall.EADDRINUSE)) and can choose another.
	probe, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", s.opts.Port))
	if err != nil {
		return fmt.Errorf("start dev vault: %w", err)
	}
	probe.Close()
	log, err := os.OpenFile(filepath.Join(s.Dir, "vault.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("start dev vault: %w", err)
	}
	cmd := exec.Command(s.opts.Bin, "server", "-config="+filepath.Join(s.Dir, "vault.hcl"))
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = devEnv()
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start dev vault: %w", err)
	}
	s.cmd, s.log, s.exited = cmd, log, make(chan struct{})
	go func(exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(s.exited)

	if err := s.unseal(ctx); err != nil {
		s.Stop()
		return fmt.Errorf("start dev vault: %w%s", err, s.logTail())
	}
	return nil
}

// unseal waits for the server to answer, initialises it on first start,
// unseals it and waits until it serves requests.
func (s *DevServer) unseal(ctx context.Context) error {
	err := s.waitFor(ctx, "answer", func(ctx context.Context) error {
		_, err := s.client.health(ctx)
		return err
	})
	if err != nil {
		return err
	}
	health, err := s.client.health(ctx)
	if err != nil {
		return fmt.Errorf("health: %w", wrapVaultError(err))
	}
	keysPath := filepath.Join(s.Dir, "init.json")
	var keys devKeys
	if !health.Initialized {
		init, err := s.client.initialize(ctx)
		if err != nil {
			return fmt.Errorf("initialise: %w", wrapVaultError(err))
		}
		if len(init.KeysB64) != 1 || init.RootToken == "" {
			return errors.New("initialise: vault returned no unseal key or root token")
		}
		keys = devKeys{UnsealKey: init.KeysB64[0], RootToken: init.RootToken}
		if err := writePrivateJSON(keysPath, keys); err != nil {
			return fmt.Errorf("save unseal key: %w", err)
		}
	} else {
		b, err := os.ReadFile(keysPath)
		if err != nil {
			return fmt.Errorf("vault in %s is initialised but its keys are unreadable: %w", s.Dir, err)
		}
		if err := json.Unmarshal(b, &keys); err != nil {
			return fmt.Errorf("read %s: %w", keysPath, err)
		}
	}
	s.unsealKey, s.RootToken = keys.UnsealKey, keys.RootToken
	s.client.setToken(s.RootToken)

	if health.Sealed || !health.Initialized {
		st, err := s.client.unseal(ctx, s.unsealKey)
		if err != nil {
			return fmt.Errorf("unseal: %w", wrapVaultError(err))
		} else if st.Sealed {
			return errors.New("unseal: vault is still sealed")
		}
	}
	// After unsealing, the node becomes active and loads its mounts; until
	// then requests answer 5xx.
	return s.waitFor(ctx, "become active", func(ctx context.Context) error {
		_, err := s.client.read(ctx, "auth/token/lookup-self")
		return err
	})
}

// Unseal unseals a running server that was sealed (sys/seal), and waits
// until it serves requests again.
func (s *DevServer) Unseal(ctx context.Context) error {
	if s.cmd == nil {
		return errors.New("unseal dev vault: not running")
	}
	if err := s.unseal(ctx); err != nil {
		return fmt.Errorf("unseal dev vault: %w", err)
	}
	return nil
}

// waitFor calls try every 100ms until it succeeds, the process exits, ctx
// ends or 60 seconds pass.
func (s *DevServer) waitFor(ctx context.Context, what string, try func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		callCtx, callCancel := context.WithTimeout(ctx, 2*time.Second)
		err := try(callCtx)
		callCancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("vault exited before it would %s", what)
		case <-ctx.Done():
			return fmt.Errorf("vault did not %s: %w", what, wrapVaultError(err))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop stops the server process with SIGTERM and waits for it to exit
// (SIGKILL after 15 seconds). Its state stays in Dir for Start.
func (s *DevServer) Stop() error {
	if s.cmd == nil {
		return nil
	}
	defer func() {
		s.log.Close()
		s.cmd, s.log = nil, nil
		if s.client != nil {
			s.client.close()
		}
	}()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return nil
	case <-time.After(15 * time.Second):
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	return errors.New("stop dev vault: killed after SIGTERM was ignored for 15s")
}

// Pause freezes the server process (SIGSTOP), as a stalled Vault would
// be: the kernel still accepts connections, nothing answers. Resume thaws
// it. For fault-injection tests.
func (s *DevServer) Pause() error {
	if s.cmd == nil {
		return errors.New("pause dev vault: not running")
	}
	return s.cmd.Process.Signal(syscall.SIGSTOP)
}

// Resume thaws a paused server (SIGCONT).
func (s *DevServer) Resume() error {
	if s.cmd == nil {
		return errors.New("resume dev vault: not running")
	}
	return s.cmd.Process.Signal(syscall.SIGCONT)
}

// Close stops the server. Its state stays in Dir.
func (s *DevServer) Close() error {
	return s.Stop()
}

// Configure sets up what Stint's development roles use. It is idempotent:
//   - the database secrets engine at database/ (max lease TTL 24h), with the
//     connection DevConnection to PostgreSQL and the role DevDatabaseRole
//     (1h, read-only through pg_read_all_data; revocation terminates the
//     user's sessions and drops it);
//   - a KV v2 engine at secret/ with DevAgentSecret and DevAdminSecret;
//   - the policy DevPolicy: read DevAgentSecret's folder and look itself up;
//   - the token role DevTokenRole: orphan, non-renewable tokens limited to
//     DevPolicy, without the default policy, at most 24h.
func (s *DevServer) Configure(ctx context.Context) error {
	conn, err := devConnection(s.opts.PGDSN)
	if err != nil {
		return fmt.Errorf("configure dev vault: %w", err)
	}
	mounts, err := s.client.read(ctx, "sys/mounts")
	if err != nil {
		return fmt.Errorf("configure dev vault: list mounts: %w", wrapVaultError(err))
	}
	mounted := func(path string) bool {
		if mounts == nil || mounts.Data == nil {
			return false
		}
		_, ok := mounts.Data[path]
		return ok
	}
	type step struct {
		path string
		data map[string]any
		skip bool
	}
	steps := []step{
		{path: "sys/mounts/database", data: map[string]any{"type": "database"}, skip: mounted("database/")},
		{path: "sys/mounts/database/tune", data: map[string]any{"default_lease_ttl": "1h", "max_lease_ttl": "24h"}},
		{path: "database/config/" + DevConnection, data: conn},
		{path: "database/roles/" + DevDatabaseRole, data: map[string]any{
			"db_name":     DevConnection,
			"default_ttl": "1h",
			"max_ttl":     "1h",
			"creation_statements": []string{
				`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`,
				`GRANT pg_read_all_data TO "{{name}}";`,
			},
			"renew_statements": []string{
				`ALTER ROLE "{{name}}" VALID UNTIL '{{expiration}}';`,
			},
			"revocation_statements": []string{
				`ALTER ROLE "{{name}}" NOLOGIN;`,
				`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}' AND pid <> pg_backend_pid();`,
				`REVOKE pg_read_all_data FROM "{{name}}";`,
				`DROP ROLE IF EXISTS "{{name}}";`,
			},
			"rollback_statements": []string{
				`DROP ROLE IF EXISTS "{{name}}";`,
			},
		}},
		{path: "sys/mounts/secret", data: map[string]any{"type": "kv", "options": map[string]any{"version": "2"}}, skip: mounted("secret/")},
		{path: DevAgentSecret, data: map[string]any{"data": map[string]any{"message": "hello, agent"}}},
		{path: DevAdminSecret, data: map[string]any{"data": map[string]any{"message": "admins only"}}},
		{path: "sys/policies/acl/" + DevPolicy, data: map[string]any{"policy": devPolicyHCL}},
		{path: "auth/token/roles/" + DevTokenRole, data: map[string]any{
			"allowed_policies":        []string{DevPolicy},
			"orphan":                  true,
			"renewable":               false,
			"token_type":              "service",
			"token_explicit_max_ttl":  "24h",
			"token_no_default_policy": true,
		}},
	}
	for _, st := range steps {
		if st.skip {
			continue
		}
		// A new KV v2 mount refuses writes for a moment while it sets
		// itself up; retry briefly.
		var err error
		for attempt := 0; attempt < 50; attempt++ {
			if _, err = s.client.write(ctx, st.path, st.data); err == nil || !strings.HasPrefix(st.path, "secret/") {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("configure dev vault: write %s: %w", st.path, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
		if err != nil {
			return fmt.Errorf("configure dev vault: write %s: %w", st.path, wrapVaultError(err))
		}
	}
	return nil
}

// devPolicyHCL lets a token read the agents' KV folder and look itself up,
// nothing else (token_no_default_policy drops the default policy).
const devPolicyHCL = `
path "secret/data/agents/*" {
  capabilities = ["read"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
`

// devConnection turns the admin DSN into the database/config body. The
// connection URL keeps Vault's {{username}} and {{password}} templates so the
// admin password is sent as a separate field, never inside the URL.
func devConnection(dsn string) (map[string]any, error) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		return nil, errors.New("PostgreSQL DSN must be a postgres:// URL with a host")
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "5432")
	}
	db := strings.TrimPrefix(u.Path, "/")
	if db == "" {
		db = "postgres"
	}
	sslmode := u.Query().Get("sslmode")
	if sslmode == "" {
		sslmode = "disable"
	}
	user := u.User.Username()
	if user == "" {
		user = "postgres"
	}
	password, _ := u.User.Password()
	return map[string]any{
		"plugin_name":       "postgresql-database-plugin",
		"connection_url":    fmt.Sprintf("postgresql://{{username}}:{{password}}@%s/%s?sslmode=%s", host, url.PathEscape(db), url.QueryEscape(sslmode)),
		"username":          user,
		"password":          password,
		"allowed_roles":     []string{"stint-*"},
		"verify_connection": true,
	}, nil
}

// DevRoles returns the roles that the development Vault (Configure) serves,
// for `stint dev` and tests:
//   - "db-readonly": a read-only PostgreSQL login on 127.0.0.1:5432/postgres
//     (15m by default, at most 1h; low sensitivity, approved automatically);
//   - "vault-token": a Vault token limited to the stint-agent-read policy
//     (15m by default, at most 1h; medium sensitivity, needs an approval).
func DevRoles() []*broker.Role {
	return []*broker.Role{
		{
			Name:        "db-readonly",
			Description: "Read-only login to the development PostgreSQL database.",
			Kind:        broker.KindDatabase,
			Sensitivity: broker.SensitivityLow,
			Vault:       broker.RoleVault{Path: "database/creds/" + DevDatabaseRole, Method: "read"},
			DefaultTTL:  15 * time.Minute,
			MaxTTL:      time.Hour,
			Connection:  &broker.Connection{Host: "127.0.0.1", Port: 5432, Database: "postgres"},
			AutoApprove: true,
		},
		{
			Name:        "vault-token",
			Description: "Vault token that can read secret/agents/* in the development Vault.",
			Kind:        broker.KindToken,
			Sensitivity: broker.SensitivityMedium,
			Vault: broker.RoleVault{
				Path:   "auth/token/create/" + DevTokenRole,
				Method: "write",
				Params: map[string]any{"policies": []string{DevPolicy}},
			},
			DefaultTTL: 15 * time.Minute,
			MaxTTL:     time.Hour,
		},
	}
}

// devEnv is the server's environment without VAULT_* variables, which would
// change how it runs.
func devEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	return env
}

// writePrivateJSON writes v to path with mode 0600, atomically.
func writePrivateJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	// A fresh temporary file: os.WriteFile keeps the mode of a file left
	// behind by an earlier run.
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), path)
}

// logTail returns the end of vault.log, to explain a failed start.
func (s *DevServer) logTail() string {
	b, err := os.ReadFile(filepath.Join(s.Dir, "vault.log"))
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return "\nvault.log ends:\n" + string(bytes.TrimSpace(b))
}
