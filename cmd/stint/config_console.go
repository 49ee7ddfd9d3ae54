package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// ConsoleConfig configures the web console at /console (see web/console.go).
// Its users are managed with "stint users" and kept in the store.
type ConsoleConfig struct {
	// Enabled serves the console on the API listener. Default true.
	Enabled bool `yaml:"enabled"`
	// SessionTTL is how long a login lasts at most. Default 12h.
	SessionTTL time.Duration `yaml:"session_ttl"`
	// IdleTimeout ends a session unused for this long. Default 30m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// SecureCookies marks the session cookie Secure on plain HTTP too: set it
	// when a TLS-terminating proxy serves the console. (Requests that arrive
	// over TLS always get Secure cookies.)
	SecureCookies bool `yaml:"secure_cookies"`
}

// MetricsConfig says how Prometheus scrapes /metrics. Neither key set means
// no /metrics at all: the metrics are not public.
type MetricsConfig struct {
	// Listen serves /metrics, without authentication, on an address of its
	// own, such as 127.0.0.1:9464: bind it where only the monitoring system
	// reaches it.
	Listen string `yaml:"listen"`
	// TokenSHA256 serves /metrics on the API listener to requests with
	// "Authorization: Bearer <token>", given here as the token's hex
	// SHA-256 (printf %s "$TOKEN" | sha256sum); the token itself is never
	// configured.
	TokenSHA256 string `yaml:"token_sha256"`
}

// defaultConsoleConfig is the console part of DefaultConfig.
func defaultConsoleConfig() ConsoleConfig {
	return ConsoleConfig{Enabled: true, SessionTTL: 12 * time.Hour, IdleTimeout: 30 * time.Minute}
}

// Validate checks the console settings.
func (c *ConsoleConfig) Validate() error {
	switch {
	case c.SessionTTL <= 0 || c.IdleTimeout <= 0:
		return errors.New("console.session_ttl and console.idle_timeout must be positive")
	case c.IdleTimeout > c.SessionTTL:
		return errors.New("console.idle_timeout must be at most console.session_ttl")
	}
	return nil
}

// Validate checks the metrics settings.
func (c *MetricsConfig) Validate() error {
	if c.TokenSHA256 != "" {
		if b, err := hex.DecodeString(c.TokenSHA256); err != nil || len(b) != 32 {
			return fmt.Errorf("metrics.token_sha256 must be 64 hex characters (the SHA-256 of the token)")
		}
	}
	return nil
}
