package broker

import (
	"context"
	"sort"
	"strings"
	"time"
)

// AgentState is the lifecycle state of an agent identity.
type AgentState string

// Agent states. Only an active agent may authenticate and request leases.
// Suspending or disabling an agent revokes its live leases. Suspension is
// reversible (activate); disabling is final: a disabled agent's keys,
// certificates and OAuth credentials are gone and it never changes state
// again (register a new agent instead).
const (
	AgentActive    AgentState = "active"
	AgentSuspended AgentState = "suspended"
	AgentDisabled  AgentState = "disabled"
)

// Agent is a non-human identity that requests leases. Every agent has a human
// owner (its sponsor), who is accountable for it and may never approve its
// requests. Labels are free-form attributes that role eligibility and policy
// select on.
type Agent struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	Owner      string            `json:"owner"`
	Labels     map[string]string `json:"labels"`
	State      AgentState        `json:"state"`
	CreatedAt  time.Time         `json:"created_at"`
	UpdatedAt  time.Time         `json:"updated_at"`
	LastSeenAt *time.Time        `json:"last_seen_at,omitempty"`

	// AuthMethods are the authentication methods the agent may use (see
	// AgentAuthMethods); a new agent may use only api_key.
	AuthMethods []string `json:"auth_methods"`
	// SPIFFEID maps a SPIFFE X.509-SVID to the agent, such as
	// "spiffe://example.org/ns/etl/sa/loader"; empty if none.
	SPIFFEID string `json:"spiffe_id,omitempty"`
	// ClientSecretHash is the hex SHA-256 of the agent's OAuth client secret
	// (a 256-bit random value Stint generates); empty if it has none.
	ClientSecretHash string `json:"-"`
	// PublicJWKS is the agent's registered public key set for private_key_jwt,
	// as JSON; empty if none.
	PublicJWKS string `json:"-"`
	// TokensNotBefore invalidates every access token issued at or before it:
	// suspending or disabling an agent sets it.
	TokensNotBefore *time.Time `json:"-"`
}

// Validate returns EINVALID naming the field if the agent cannot be stored.
func (a *Agent) Validate() error {
	switch {
	case !ValidName(a.Name):
		return FieldErrorf("name", "Agent name must be 1-64 characters of a-z, 0-9, '-', '_' or '.', starting with a letter or digit.")
	case !strings.Contains(a.Owner, "@") || len(a.Owner) > 254 || strings.ContainsAny(a.Owner, " \t\r\n") || CheckText("owner", a.Owner) != nil:
		return FieldErrorf("owner", "Agent owner must be the email address of a human.")
	}
	if a.AuthMethods != nil {
		if err := ValidateAuthMethods(a.AuthMethods); err != nil {
			return err
		}
	}
	for k, v := range a.Labels {
		if !ValidName(k) || len(v) > 128 || CheckText("labels", v) != nil {
			return FieldErrorf("labels", "Label %q is invalid: keys use a-z, 0-9, '-', '_' or '.'; values are at most 128 characters, without control characters.", k)
		}
	}
	return nil
}

// ValidName reports whether s is usable as an agent, role or label name:
// 1 to 64 characters of lower-case letters, digits, '-', '_' and '.',
// starting with a letter or digit.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		case i > 0 && (r == '-' || r == '_' || r == '.'):
		default:
			return false
		}
	}
	return true
}

// ParseLabels parses "k=v" pairs into a label map. Returns EINVALID naming the
// first malformed pair.
func ParseLabels(pairs []string) (map[string]string, error) {
	labels := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || !ValidName(k) {
			return nil, FieldErrorf("labels", "Label %q must look like key=value with a lower-case key.", p)
		}
		labels[k] = v
	}
	return labels, nil
}

// FormatLabels renders labels as sorted "k=v" pairs joined by commas.
func FormatLabels(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + labels[k]
	}
	return strings.Join(keys, ",")
}

// AgentFilter selects agents. Nil fields do not filter.
type AgentFilter struct {
	ID    *string
	Name  *string
	State *AgentState
	// SPIFFEID finds the agent a SPIFFE ID maps to.
	SPIFFEID *string

	Offset int
	Limit  int
}

// AgentUpdate changes an agent. Nil fields are left alone.
type AgentUpdate struct {
	Owner      *string
	Labels     map[string]string
	State      *AgentState
	LastSeenAt *time.Time

	AuthMethods []string // nil leaves them; otherwise replaces them
	SPIFFEID    *string  // "" clears the mapping
	// ClientSecretHash and PublicJWKS replace the agent's OAuth client
	// credentials; "" removes them.
	ClientSecretHash *string
	PublicJWKS       *string
	TokensNotBefore  *time.Time
}

// APIKey is an agent's ephemeral API key. The key itself is shown once at
// creation; only its SHA-256 hash is stored. A key stops working at ExpiresAt
// or when revoked, whichever is first.
type APIKey struct {
	ID        string     `json:"id"`
	AgentID   string     `json:"agent_id"`
	Prefix    string     `json:"prefix"` // the first characters of the key, to recognise it in listings
	Hash      string     `json:"-"`      // hex SHA-256 of the whole key
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// Usable reports whether the key authenticates at now.
func (k *APIKey) Usable(now time.Time) bool {
	return k.RevokedAt == nil && now.Before(k.ExpiresAt)
}

// AgentStore persists agents and their API keys.
type AgentStore interface {
	// CreateAgent inserts a new agent. Returns ECONFLICT if the name is taken.
	CreateAgent(ctx context.Context, a *Agent) error
	// FindAgentByID returns ENOTFOUND if no agent has the id.
	FindAgentByID(ctx context.Context, id string) (*Agent, error)
	// FindAgentByName returns ENOTFOUND if no agent has the name.
	FindAgentByName(ctx context.Context, name string) (*Agent, error)
	// FindAgents returns agents matching the filter ordered by name, and the
	// total number of matches ignoring Offset and Limit.
	FindAgents(ctx context.Context, filter AgentFilter) ([]*Agent, int, error)
	// UpdateAgent applies upd. Returns ENOTFOUND if no agent has the id, and
	// ECONFLICT if upd moves a disabled agent to another state: disabling is
	// final.
	UpdateAgent(ctx context.Context, id string, upd AgentUpdate) (*Agent, error)

	// CreateAPIKey inserts a key. Returns ECONFLICT if the hash exists.
	CreateAPIKey(ctx context.Context, k *APIKey) error
	// FindAgentByAPIKeyHash returns the key with the hash and its agent, as
	// one snapshot, whatever their states; ENOTFOUND if no key has the hash.
	FindAgentByAPIKeyHash(ctx context.Context, hash string) (*APIKey, *Agent, error)
	// FindAPIKeys returns an agent's keys, newest first.
	FindAPIKeys(ctx context.Context, agentID string) ([]*APIKey, error)
	// RevokeAPIKeys marks every unrevoked key of the agent revoked at at and
	// returns how many it revoked.
	RevokeAPIKeys(ctx context.Context, agentID string, at time.Time) (int, error)
}
