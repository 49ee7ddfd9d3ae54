package broker

import (
	"encoding/json"
	"time"
)

// Credential is what Vault minted for a lease. It is handed to the agent once,
// in the response that activates the lease, and is never stored or logged:
// String and GoString redact it, and only MarshalJSON reveals it.
type Credential struct {
	Kind CredentialKind
	// Data holds the secret fields: username and password for database roles,
	// token for token roles, Vault's data as is for generic roles.
	Data map[string]any
	// Connection is set for database roles.
	Connection *Connection
	// LeaseDuration is the Vault lease TTL in whole seconds.
	LeaseDuration int
	// ExpiresAt is when the credential stops working at the latest: the end of
	// the window or of the Vault lease, whichever is first.
	ExpiresAt time.Time
}

// String implements fmt.Stringer without revealing the secret.
func (c *Credential) String() string { return "[credential redacted]" }

// GoString implements fmt.GoStringer without revealing the secret.
func (c *Credential) GoString() string { return "[credential redacted]" }

// LogValue keeps the credential out of structured logs.
func (c *Credential) LogValue() any { return "[credential redacted]" }

// MarshalJSON renders the credential in the API's shape: database roles give
// username, password, host, port and database; token roles give token; both
// give lease_duration (seconds) and expires_at.
func (c *Credential) MarshalJSON() ([]byte, error) {
	out := make(map[string]any, len(c.Data)+5)
	switch c.Kind {
	case KindDatabase:
		out["username"] = c.Data["username"]
		out["password"] = c.Data["password"]
		if c.Connection != nil {
			out["host"] = c.Connection.Host
			out["port"] = c.Connection.Port
			out["database"] = c.Connection.Database
		}
	case KindToken:
		out["token"] = c.Data["token"]
	default:
		for k, v := range c.Data {
			out[k] = v
		}
	}
	out["lease_duration"] = c.LeaseDuration
	out["expires_at"] = c.ExpiresAt.UTC().Format(time.RFC3339)
	return json.Marshal(out)
}
