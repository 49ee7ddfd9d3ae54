package vault

import (
	"fmt"
	"log/slog"
	"net/url"

	"github.com/stint-broker/stint/broker"
)

// configFields is Config without its methods, for Format.
type configFields Config

// Format implements fmt.Formatter: every verb renders the configuration
// with the Vault token redacted.
func (c Config) Format(f fmt.State, verb rune) {
	c.Token = broker.RedactString(c.Token)
	fmt.Fprintf(f, fmt.FormatString(f, verb), configFields(c))
}

// LogValue implements slog.LogValuer without the Vault token.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("address", c.Address),
		slog.String("token", broker.RedactString(c.Token)),
		slog.Duration("timeout", c.Timeout),
		slog.String("namespace", c.Namespace),
		slog.String("ca_cert", c.CACert),
	)
}

// devOptionsFields is DevOptions without its methods, for Format.
type devOptionsFields DevOptions

// Format implements fmt.Formatter: the PostgreSQL DSN's password is
// redacted.
func (o DevOptions) Format(f fmt.State, verb rune) {
	o.PGDSN = redactDSN(o.PGDSN)
	fmt.Fprintf(f, fmt.FormatString(f, verb), devOptionsFields(o))
}

// LogValue implements slog.LogValuer without the DSN's password.
func (o DevOptions) LogValue() slog.Value {
	return slog.GroupValue(slog.String("bin", o.Bin), slog.String("dir", o.Dir),
		slog.Int("port", o.Port), slog.String("pg_dsn", redactDSN(o.PGDSN)))
}

// redactDSN hides the password of a URL-style DSN; a DSN that does not
// parse as a URL is redacted whole.
func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return broker.RedactString(dsn)
	}
	return u.Redacted()
}

// Format implements fmt.Formatter: a dev server renders as its address and
// directory, never its root token or unseal key.
func (s *DevServer) Format(f fmt.State, verb rune) {
	if s == nil {
		fmt.Fprint(f, "<nil>")
		return
	}
	fmt.Fprintf(f, "vault dev server %s (dir %s)", s.Addr, s.Dir)
}

// LogValue implements slog.LogValuer without the root token or unseal key.
func (s *DevServer) LogValue() slog.Value {
	if s == nil {
		return slog.StringValue("<nil>")
	}
	return slog.GroupValue(slog.String("addr", s.Addr), slog.String("dir", s.Dir))
}
