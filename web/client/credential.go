package client

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strconv"
)

// redacted is how a Credential renders anywhere but Reveal and Field.
const redacted = "[credential redacted]"

// Credential is what Vault minted for a lease: database roles give
// username, password, host, port and database; token roles give token;
// generic roles give Vault's data as is; all give lease_duration (seconds)
// and expires_at.
//
// It renders as "[credential redacted]" with fmt (any verb), log/slog and
// encoding/json, so that printing or logging a Lease never shows the
// secret. Reveal and Field return it.
type Credential struct {
	data map[string]any
}

// UnmarshalJSON implements json.Unmarshaler.
func (c *Credential) UnmarshalJSON(b []byte) error {
	return json.Unmarshal(b, &c.data)
}

// Reveal returns a copy of every field, secret included.
func (c *Credential) Reveal() map[string]any {
	if c == nil {
		return nil
	}
	return maps.Clone(c.data)
}

// Field returns one field as text ("5432" for a port), and whether the
// credential has it.
func (c *Credential) Field(name string) (string, bool) {
	if c == nil {
		return "", false
	}
	v, ok := c.data[name]
	if !ok || v == nil {
		return "", false
	}
	switch v := v.(type) {
	case string:
		return v, true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(v), true
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", false
	}
	return string(b), true
}

// String implements fmt.Stringer without the secret.
func (c Credential) String() string { return redacted }

// GoString implements fmt.GoStringer without the secret.
func (c Credential) GoString() string { return redacted }

// Format implements fmt.Formatter without the secret, for every verb.
func (c Credential) Format(f fmt.State, _ rune) { io.WriteString(f, redacted) }

// LogValue implements slog.LogValuer without the secret.
func (c Credential) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON implements json.Marshaler without the secret.
func (c Credential) MarshalJSON() ([]byte, error) { return json.Marshal(redacted) }
