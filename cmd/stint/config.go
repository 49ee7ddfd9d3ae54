package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/stint-broker/stint/broker"
)

// Config is Stint's configuration: one YAML file. Secrets never live in it:
// the Vault token and admin tokens come from the environment variables it
// names (admin tokens may also be given as SHA-256 hashes).
type Config struct {
	// Listen is the HTTP API's address.
	Listen string `yaml:"listen"`
	// Store says where leases and agents are kept.
	Store StoreConfig `yaml:"store"`
	// Replica names this replica among several on one store (replica.go).
	Replica ReplicaConfig `yaml:"replica"`
	// Vault says how to reach the Vault that mints credentials.
	Vault VaultConfig `yaml:"vault"`
	// Admin lists how admins authenticate.
	Admin AdminConfig `yaml:"admin"`
	// Keys bounds agent API key lifetimes.
	Keys KeysConfig `yaml:"keys"`
	// Leases tunes the expiry loop, revocation queue and reconciler.
	Leases LeasesConfig `yaml:"leases"`
	// Log sets the log level and format.
	Log LogConfig `yaml:"log"`
	// Console configures the web console (config_console.go).
	Console ConsoleConfig `yaml:"console"`
	// Metrics says where Prometheus scrapes /metrics (config_console.go).
	Metrics MetricsConfig `yaml:"metrics"`
	// Policy names the Cedar policies that decide requests. Without
	// policy.files, a role's auto_approve flag decides (eligible agents get
	// auto_approve roles; nothing else is granted).
	Policy PolicyConfig `yaml:"policy"`
	// Approvers are the humans who decide pending leases: email, name,
	// groups, optional slack_user_id and token_sha256 (config_approvals.go).
	Approvers []*broker.Approver `yaml:"approvers"`
	// Approval times the approval flow (config_approvals.go).
	Approval ApprovalConfig `yaml:"approval"`
	// Slack posts approval requests and takes decisions (config_approvals.go).
	Slack SlackConfig `yaml:"slack"`
	// TLS makes the API serve HTTPS with optional or required client
	// certificates (config_identity.go).
	TLS TLSConfig `yaml:"tls"`
	// OAuth enables the OAuth 2.0 token endpoint for agents
	// (config_identity.go).
	OAuth OAuthConfig `yaml:"oauth"`
	// Identity configures the enrolment CA and SPIFFE trust bundles
	// (config_identity.go).
	Identity IdentityConfig `yaml:"identity"`
	// Limits caps each agent's request rate and live leases
	// (config_identity.go).
	Limits LimitsConfig `yaml:"limits"`
	// MCP serves the streamable HTTP MCP endpoint /mcp (config_mcp.go).
	MCP MCPConfig `yaml:"mcp"`
	// Governance caps privileged roles (config_governance.go).
	Governance GovernanceConfig `yaml:"governance"`
	// Risk sets the live risk score and its revoke threshold
	// (config_governance.go).
	Risk RiskConfig `yaml:"risk"`
	// Reviews schedules access reviews (config_governance.go).
	Reviews ReviewsConfig `yaml:"reviews"`
	// SoD lists separation-of-duty conflict sets (config_governance.go).
	SoD SoDConfig `yaml:"sod"`
	// Audit configures signed checkpoints of the audit chain
	// (config_audit.go).
	Audit AuditConfig `yaml:"audit"`
	// Roles are what agents may request. Besides the basics, a role may set
	// breakglass {allowed, max_ttl}, max_extensions and max_total_ttl
	// (broker.Role).
	Roles []*broker.Role `yaml:"roles"`
}

// StoreConfig selects the store.
type StoreConfig struct {
	// Driver is "sqlite" (the embedded default: one process, one file) or
	// "postgres" (one database that several replicas share).
	Driver string `yaml:"driver"`
	// Path is the SQLite database file.
	Path string `yaml:"path"`
	// DSN is the PostgreSQL connection string, such as
	// postgres://stint@db.example.com:5432/stint?sslmode=verify-full.
	// Prefer DSNEnv when it holds a password.
	DSN string `yaml:"dsn"`
	// DSNEnv names an environment variable holding the DSN.
	DSNEnv string `yaml:"dsn_env"`
}

// VaultConfig says how to reach Vault.
type VaultConfig struct {
	Address string `yaml:"address"`
	// TokenEnv names the environment variable holding Stint's Vault token.
	TokenEnv string `yaml:"token_env"`
	// Timeout bounds each Vault call.
	Timeout time.Duration `yaml:"timeout"`
}

// AdminConfig lists admin credentials.
type AdminConfig struct {
	// TokenEnv names an environment variable holding an admin token (admin
	// name "env"). Unset or empty variables add no admin.
	TokenEnv string `yaml:"token_env"`
	// Tokens are admin tokens given as hex SHA-256 hashes.
	Tokens []AdminTokenConfig `yaml:"tokens"`
}

// AdminTokenConfig is one admin's token hash.
type AdminTokenConfig struct {
	Name   string `yaml:"name"`
	SHA256 string `yaml:"sha256"`
}

// KeysConfig bounds API key lifetimes.
type KeysConfig struct {
	DefaultTTL time.Duration `yaml:"default_ttl"`
	MaxTTL     time.Duration `yaml:"max_ttl"`
}

// LeasesConfig tunes background lease work.
type LeasesConfig struct {
	// RetryBase and RetryMax bound the revocation queue's backoff.
	RetryBase time.Duration `yaml:"retry_base"`
	RetryMax  time.Duration `yaml:"retry_max"`
	// ReconcileSchedule is the reconciler's cron spec (seconds optional).
	ReconcileSchedule string `yaml:"reconcile_schedule"`
	// IssuingTimeout fails leases stuck minting for longer.
	IssuingTimeout time.Duration `yaml:"issuing_timeout"`
	// OrphanGrace is the age at which an unrecorded Vault credential is revoked.
	OrphanGrace time.Duration `yaml:"orphan_grace"`
	// ClaimTimeout is how long a revocation claimed by a process stays
	// hidden from the others: a process killed mid-revoke leaves its claims
	// to be taken again after it (default 30s).
	ClaimTimeout time.Duration `yaml:"claim_timeout"`
}

// PolicyConfig names the Cedar policies that decide requests (see
// `stint policy --help` and approvals/policy/doc.go).
type PolicyConfig struct {
	// Files are Cedar policy files, loaded as one set, validated at start,
	// on SIGHUP (which re-reads these files; a failed reload keeps the
	// policies in force) and by `stint policy validate`. Relative paths are
	// relative to the working directory.
	Files []string `yaml:"files"`
	// Schema is a Cedar schema file to validate the policies against; empty
	// means Stint's embedded schema (`stint policy schema` prints it).
	Schema string `yaml:"schema"`
	// Timezone is the IANA time zone of context.hour and context.weekday,
	// such as Europe/Berlin.
	Timezone string `yaml:"timezone"`
	// DefaultApproverGroup is the group that approves for a permit with
	// @approvals but no @approvers.
	DefaultApproverGroup string `yaml:"default_approver_group"`
}

// LogConfig sets logging.
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is json or text.
	Format string `yaml:"format"`
}

// DefaultConfig returns the configuration used where the file is silent.
func DefaultConfig() Config {
	return Config{
		Listen:  "127.0.0.1:7070",
		Store:   StoreConfig{Driver: "sqlite", Path: "stint.db"},
		Replica: defaultReplicaConfig(),
		Vault:   VaultConfig{Address: "http://127.0.0.1:8200", TokenEnv: "VAULT_TOKEN", Timeout: 15 * time.Second},
		Admin:   AdminConfig{TokenEnv: "STINT_ADMIN_TOKEN"},
		Keys:    KeysConfig{DefaultTTL: 24 * time.Hour, MaxTTL: 30 * 24 * time.Hour},
		Leases: LeasesConfig{
			RetryBase: 2 * time.Second, RetryMax: 30 * time.Second, ClaimTimeout: 30 * time.Second, ReconcileSchedule: "@every 1m",
			IssuingTimeout: time.Minute, OrphanGrace: time.Minute,
		},
		Log:    LogConfig{Level: "info", Format: "json"},
		Policy: PolicyConfig{Timezone: "UTC", DefaultApproverGroup: "approvers"},

		Console: defaultConsoleConfig(),

		Approval: defaultApprovalConfig(),
		Slack:    defaultSlackConfig(),

		TLS:      defaultTLSConfig(),
		OAuth:    defaultOAuthConfig(),
		MCP:      defaultMCPConfig(),
		Identity: defaultIdentityConfig(),
		Limits:   defaultLimitsConfig(),

		Governance: defaultGovernanceConfig(),
		Risk:       defaultRiskConfig(),
		Reviews:    defaultReviewsConfig(),

		Audit: defaultAuditConfig(),
	}
}

var unknownField = regexp.MustCompile(`line (\d+): field (\S+) not found in type`)

// ParseConfig reads YAML over the defaults. Unknown keys are errors that name
// the key and its line.
func ParseConfig(name string, data []byte) (Config, error) {
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			msgs := make([]error, 0, len(te.Errors))
			for _, e := range te.Errors {
				if m := unknownField.FindStringSubmatch(e); m != nil {
					msgs = append(msgs, fmt.Errorf("%s:%s: unknown key %q", name, m[1], m[2]))
				} else {
					msgs = append(msgs, fmt.Errorf("%s: %s", name, e))
				}
			}
			return cfg, errors.Join(msgs...)
		}
		return cfg, fmt.Errorf("%s: %w", name, err)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("%s: %w", name, err)
	}
	return cfg, nil
}

// ReadConfig reads and validates the configuration file.
func ReadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(path, data)
}

// Validate checks the configuration as a whole.
func (c *Config) Validate() error {
	switch {
	case c.Listen == "":
		return errors.New("listen is required")
	case c.Store.Driver != driverSQLite && c.Store.Driver != driverPostgres:
		return fmt.Errorf("store.driver must be sqlite or postgres, not %q", c.Store.Driver)
	case c.Store.Driver == driverSQLite && c.Store.Path == "":
		return errors.New("store.path is required")
	case c.Store.Driver == driverSQLite && (c.Store.DSN != "" || c.Store.DSNEnv != ""):
		return errors.New("store.dsn and store.dsn_env are for driver postgres: set store.driver: postgres, or remove them")
	case c.Store.Driver == driverPostgres && c.Store.DSN == "" && c.Store.DSNEnv == "":
		return errors.New("store.driver postgres needs store.dsn or store.dsn_env (the variable holding the DSN)")
	case c.Store.Driver == driverPostgres && c.Store.DSN != "" && c.Store.DSNEnv != "":
		return errors.New("store.dsn and store.dsn_env are exclusive: keep one")
	case c.Vault.Address == "":
		return errors.New("vault.address is required")
	case c.Vault.TokenEnv == "":
		return errors.New("vault.token_env is required: name the environment variable holding Stint's Vault token")
	case c.Vault.Timeout <= 0:
		return errors.New("vault.timeout must be positive")
	case c.Keys.DefaultTTL <= 0 || c.Keys.MaxTTL < c.Keys.DefaultTTL:
		return errors.New("keys.default_ttl must be positive and at most keys.max_ttl")
	case c.Leases.RetryBase <= 0 || c.Leases.RetryMax < c.Leases.RetryBase:
		return errors.New("leases.retry_base must be positive and at most leases.retry_max")
	case c.Leases.ClaimTimeout < 0:
		return errors.New("leases.claim_timeout must not be negative")
	case c.Leases.IssuingTimeout <= 0 || c.Leases.OrphanGrace <= 0:
		return errors.New("leases.issuing_timeout and leases.orphan_grace must be positive")
	}
	seen := map[string]bool{}
	for i, r := range c.Roles {
		if r == nil {
			return fmt.Errorf("roles[%d] is empty", i)
		}
		if err := r.Validate(); err != nil {
			return err
		}
		if seen[r.Name] {
			return fmt.Errorf("role %q is defined twice", r.Name)
		}
		seen[r.Name] = true
	}
	for _, t := range c.Admin.Tokens {
		if t.Name == "" {
			return errors.New("admin.tokens: every token needs a name")
		}
	}
	if err := c.Replica.Validate(); err != nil {
		return err
	}
	if err := c.validateMCPConfig(); err != nil {
		return err
	}
	if err := c.validateIdentityConfig(); err != nil {
		return err
	}
	if err := c.Console.Validate(); err != nil {
		return err
	}
	if err := c.Metrics.Validate(); err != nil {
		return err
	}
	if err := c.validateApprovals(); err != nil {
		return err
	}
	if err := c.Policy.Validate(); err != nil {
		return err
	}
	if err := c.validateGovernance(); err != nil {
		return err
	}
	if err := c.Audit.Checkpoints.Validate(); err != nil {
		return err
	}
	return nil
}
