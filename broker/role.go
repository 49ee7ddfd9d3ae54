package broker

import (
	"fmt"
	"strings"
	"time"
)

// Sensitivity ranks how much damage a role's credential can do. Policy,
// approval routing and the console key on it.
type Sensitivity string

// Sensitivities, from least to most dangerous.
const (
	SensitivityLow      Sensitivity = "low"
	SensitivityMedium   Sensitivity = "medium"
	SensitivityHigh     Sensitivity = "high"
	SensitivityCritical Sensitivity = "critical"
)

// Valid reports whether s is one of the four sensitivities.
func (s Sensitivity) Valid() bool {
	switch s {
	case SensitivityLow, SensitivityMedium, SensitivityHigh, SensitivityCritical:
		return true
	}
	return false
}

// CredentialKind says what a role's Vault path mints and so which fields the
// agent receives.
type CredentialKind string

// Credential kinds.
const (
	// KindDatabase is a database engine role (database/creds/<role>): the agent
	// gets username, password and the role's connection details.
	KindDatabase CredentialKind = "database"
	// KindToken is a Vault token role (auth/token/create/<role>): the agent gets
	// a Vault token scoped by the role's Vault policies.
	KindToken CredentialKind = "token"
	// KindGeneric is any other leased secret: the agent gets Vault's data as is.
	KindGeneric CredentialKind = "generic"
)

// Valid reports whether k is a known credential kind.
func (k CredentialKind) Valid() bool {
	switch k {
	case KindDatabase, KindToken, KindGeneric:
		return true
	}
	return false
}

// Role is something an agent can request: which Vault path mints it, how
// sensitive it is, how long a window may last, and which agents are eligible.
// Roles are defined in the configuration file.
type Role struct {
	Name        string         `json:"name" yaml:"name"`
	Description string         `json:"description" yaml:"description"`
	Kind        CredentialKind `json:"kind" yaml:"kind"`
	Sensitivity Sensitivity    `json:"sensitivity" yaml:"sensitivity"`
	// Vault says how Stint mints the credential.
	Vault RoleVault `json:"-" yaml:"vault"`
	// DefaultTTL is the window when a request gives none; MaxTTL caps it.
	DefaultTTL time.Duration `json:"default_ttl" yaml:"default_ttl"`
	MaxTTL     time.Duration `json:"max_ttl" yaml:"max_ttl"`
	// MinTTL is the shortest window (and the least an extension adds) a
	// request may ask for; zero means DefaultMinTTL, and less than
	// DefaultMinTTL is refused (see MinWindow).
	MinTTL time.Duration `json:"min_ttl,omitempty" yaml:"min_ttl"`
	// Eligible is a label selector: an agent may request the role only if it
	// carries every label with the given value ("*" matches any value). An
	// empty selector makes every agent eligible.
	Eligible map[string]string `json:"eligible,omitempty" yaml:"eligible"`
	// Connection is returned with database credentials so the agent knows
	// where to log in.
	Connection *Connection `json:"-" yaml:"connection"`
	// AutoApprove grants eligible requests without human approval.
	AutoApprove bool `json:"auto_approve" yaml:"auto_approve"`

	// Breakglass lets an agent take the role at once in an emergency, with
	// a mandatory reason and a short window; security is alerted and the
	// owner must close a post-review (governance).
	Breakglass Breakglass `json:"breakglass" yaml:"breakglass"`
	// MCP says how the MCP tools hand this role's credential over.
	MCP RoleMCP `json:"mcp" yaml:"mcp"`
	// MaxExtensions is how many times a lease's window may be extended
	// (POST /v1/leases/{id}/extend); zero forbids extensions.
	MaxExtensions int `json:"max_extensions,omitempty" yaml:"max_extensions"`
	// MaxTotalTTL caps a lease's whole window, extensions included; zero
	// means MaxTTL.
	MaxTotalTTL time.Duration `json:"max_total_ttl,omitempty" yaml:"max_total_ttl"`
}

// DefaultMinTTL is the shortest window any role grants, and the min_ttl of
// a role that sets none. Vault's database plugins set the target's own
// expiry (PostgreSQL VALID UNTIL) 5 s past the Vault lease, and Stint aims
// the lease that much earlier only when the window is longer than twice
// that slack (leases/vault); Vault also rounds TTLs to whole seconds. A
// window of at least 15 s leaves room for both, so no credential outlives
// its window.
const DefaultMinTTL = 15 * time.Second

// MinWindow is the shortest window a request for the role may ask for:
// MinTTL, or DefaultMinTTL when unset.
func (r *Role) MinWindow() time.Duration {
	if r.MinTTL > 0 {
		return r.MinTTL
	}
	return DefaultMinTTL
}

// TotalTTL is the longest a lease's whole window may grow by extensions.
func (r *Role) TotalTTL() time.Duration {
	if r.MaxTotalTTL > 0 {
		return r.MaxTotalTTL
	}
	return r.MaxTTL
}

// RoleMCP configures the MCP tools for a role. By default an MCP tool
// result never carries the secret: the credential goes to a file beside the
// agent (stdio) or to `stint exec --lease` (HTTP).
type RoleMCP struct {
	// InlineSecret lets the MCP tools return the credential in the tool
	// result itself, where the model reads it. The result then says it
	// contains a secret.
	InlineSecret bool `json:"inline_secret" yaml:"inline_secret"`
}

// RoleVault names the Vault call that mints a role's credential.
type RoleVault struct {
	// Path is the Vault path, e.g. "database/creds/stint-readonly" or
	// "auth/token/create/stint-agent".
	Path string `yaml:"path"`
	// Method is "read" (GET) or "write" (PUT with Params).
	Method string `yaml:"method"`
	// Params are sent with a write.
	Params map[string]any `yaml:"params"`
}

// Connection is where a database credential is used.
type Connection struct {
	Host     string `json:"host" yaml:"host"`
	Port     int    `json:"port" yaml:"port"`
	Database string `json:"database" yaml:"database"`
}

// Validate returns an error naming the first problem with the role.
func (r *Role) Validate() error {
	switch {
	case !ValidName(r.Name):
		return fmt.Errorf("role %q: name must be 1-64 characters of a-z, 0-9, '-', '_' or '.'", r.Name)
	case !r.Kind.Valid():
		return fmt.Errorf("role %q: kind must be database, token or generic, not %q", r.Name, r.Kind)
	case !r.Sensitivity.Valid():
		return fmt.Errorf("role %q: sensitivity must be low, medium, high or critical, not %q", r.Name, r.Sensitivity)
	case r.Vault.Path == "" || strings.HasPrefix(r.Vault.Path, "/"):
		return fmt.Errorf("role %q: vault.path is required and must not start with '/'", r.Name)
	case r.Vault.Method != "read" && r.Vault.Method != "write":
		return fmt.Errorf("role %q: vault.method must be read or write, not %q", r.Name, r.Vault.Method)
	case r.MaxTTL <= 0:
		return fmt.Errorf("role %q: max_ttl must be positive", r.Name)
	case r.DefaultTTL <= 0 || r.DefaultTTL > r.MaxTTL:
		return fmt.Errorf("role %q: default_ttl must be positive and at most max_ttl", r.Name)
	case r.MinTTL != 0 && r.MinTTL < DefaultMinTTL:
		return fmt.Errorf("role %q: min_ttl %s is below %s: a shorter window could end before its credential (Vault's database plugins keep a login valid 5 s past the lease)", r.Name, r.MinTTL, DefaultMinTTL)
	case r.DefaultTTL < r.MinWindow():
		return fmt.Errorf("role %q: default_ttl %s is below the role's minimum window of %s (min_ttl)", r.Name, r.DefaultTTL, r.MinWindow())
	case r.Kind == KindDatabase && r.Connection == nil:
		return fmt.Errorf("role %q: database roles need connection (host, port, database)", r.Name)
	case r.Kind == KindToken && !strings.HasPrefix(r.Vault.Path, "auth/token/create"):
		return fmt.Errorf("role %q: token roles mint through auth/token/create[/<role>]", r.Name)
	case r.Breakglass.Allowed && (r.Breakglass.MaxTTL <= 0 || r.Breakglass.MaxTTL > r.MaxTTL):
		return fmt.Errorf("role %q: breakglass.max_ttl must be positive and at most max_ttl (%s) when breakglass.allowed", r.Name, r.MaxTTL)
	case r.Breakglass.Allowed && r.Breakglass.MaxTTL < r.MinWindow():
		return fmt.Errorf("role %q: breakglass.max_ttl %s is below the role's minimum window of %s (min_ttl)", r.Name, r.Breakglass.MaxTTL, r.MinWindow())
	case !r.Breakglass.Allowed && r.Breakglass.MaxTTL != 0:
		return fmt.Errorf("role %q: breakglass.max_ttl is set but breakglass.allowed is false", r.Name)
	case r.MaxExtensions < 0:
		return fmt.Errorf("role %q: max_extensions must not be negative", r.Name)
	case r.MaxTotalTTL != 0 && r.MaxTotalTTL < r.MaxTTL:
		return fmt.Errorf("role %q: max_total_ttl (%s) must be at least max_ttl (%s)", r.Name, r.MaxTotalTTL, r.MaxTTL)
	case r.Kind == KindToken && r.MaxExtensions > 0:
		return fmt.Errorf("role %q: token roles cannot be extended (Stint mints non-renewable tokens whose max TTL is the window); set max_extensions to 0", r.Name)
	}
	return nil
}

// EligibleFor reports whether the agent's labels satisfy the role's selector.
func (r *Role) EligibleFor(a *Agent) bool {
	for k, want := range r.Eligible {
		got, ok := a.Labels[k]
		if !ok || (want != "*" && got != want) {
			return false
		}
	}
	return true
}

// WindowFor resolves a requested TTL such as "15m" against the role: an empty
// string means the role's default. Returns EINVALID naming "ttl" if it does not
// parse, is zero or negative, is under the role's MinWindow, or exceeds MaxTTL.
func (r *Role) WindowFor(ttl string) (time.Duration, error) {
	if ttl == "" {
		return r.DefaultTTL, nil
	}
	d, err := time.ParseDuration(ttl)
	switch {
	case err != nil:
		return 0, FieldErrorf("ttl", "TTL %q is not a duration such as \"15m\" or \"1h30m\".", ttl)
	case d <= 0:
		return 0, FieldErrorf("ttl", "TTL must be positive.")
	case d < r.MinWindow():
		return 0, FieldErrorf("ttl", "TTL %s is below the minimum of %s for role %q (min_ttl), so that no credential outlives its window.", d, r.MinWindow(), r.Name)
	case d > r.MaxTTL:
		return 0, FieldErrorf("ttl", "TTL %s exceeds the maximum of %s for role %q.", d, r.MaxTTL, r.Name)
	}
	return d, nil
}
