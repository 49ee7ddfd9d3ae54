package broker

import (
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Credential is what Vault minted for a lease. It is handed to the agent once,
// in the response that activates the lease, and is never stored or logged.
//
// Every way a program renders a value by itself redacts it: fmt with any verb
// (Format), log/slog with any handler (LogValue) and encoding/json
// (MarshalJSON), whether the Credential is passed by value, by pointer or
// nested in another value. Only Reveal returns the secret, so that the one
// place that sends it (the API response that activates a lease) says so.
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

// credentialRedacted is how a Credential renders anywhere but Reveal.
const credentialRedacted = "[credential redacted]"

// String implements fmt.Stringer without revealing the secret.
func (c Credential) String() string { return credentialRedacted }

// GoString implements fmt.GoStringer without revealing the secret.
func (c Credential) GoString() string { return credentialRedacted }

// Format implements fmt.Formatter so that no verb (%d, %x, %+v …) walks
// the fields and prints the secret.
func (c Credential) Format(f fmt.State, verb rune) { io.WriteString(f, credentialRedacted) }

// LogValue implements slog.LogValuer: structured logs show that a
// credential was there, never what it holds.
func (c Credential) LogValue() slog.Value { return slog.StringValue(credentialRedacted) }

// MarshalJSON implements json.Marshaler without revealing the secret: a
// Credential inside a value that is logged or encoded as JSON stays
// redacted. The API response uses Reveal.
func (c Credential) MarshalJSON() ([]byte, error) {
	return []byte(`"` + credentialRedacted + `"`), nil
}

// Reveal returns the credential in the API's shape, secret included:
// database roles give username, password, host, port and database; token
// roles give token; both give lease_duration (seconds) and expires_at. Call
// it only to hand the credential to its agent.
func (c *Credential) Reveal() map[string]any {
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
	return out
}
