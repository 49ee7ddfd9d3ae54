package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"time"
)

// ConsoleConfig configures the web console at /console (see web/console).
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
	// OIDC adds "Sign in with SSO" to the login page. Unset: passwords only.
	OIDC *OIDCConfig `yaml:"oidc"`
}

// OIDCConfig is the console's single sign-on through an OpenID Connect
// provider (authorization code flow with PKCE). The provider vouches for an
// email address; the console user with that address (stint users add NAME
// --role ROLE --email E) is logged in, so roles and disabling stay in Stint.
// Unknown or disabled addresses, and emails the provider has not verified
// (email_verified), are refused.
type OIDCConfig struct {
	// Issuer is the provider's issuer URL (https; http only for localhost),
	// e.g. https://accounts.google.com. Its discovery document is fetched on
	// the first SSO login.
	Issuer string `yaml:"issuer"`
	// ClientID is the console's client id at the provider.
	ClientID string `yaml:"client_id"`
	// ClientSecretEnv names the environment variable holding the client
	// secret; the secret itself is never in the configuration.
	ClientSecretEnv string `yaml:"client_secret_env"`
	// RedirectURL is the callback registered with the provider:
	// https://HOST/console/login/oidc/callback.
	RedirectURL string `yaml:"redirect_url"`
	// Scopes asked for. Default [openid, email, profile]; openid and email
	// are required.
	Scopes []string `yaml:"scopes"`
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
	if c.OIDC != nil {
		return c.OIDC.Validate()
	}
	return nil
}

// Validate checks the SSO settings, including that the client secret's
// environment variable is set.
func (c *OIDCConfig) Validate() error {
	issuer, err := url.Parse(c.Issuer)
	switch {
	case c.Issuer == "" || err != nil || issuer.Host == "" || (issuer.Scheme != "https" && !(issuer.Scheme == "http" && isLoopbackHost(issuer.Hostname()))):
		return fmt.Errorf("console.oidc.issuer must be the provider's https URL, not %q", c.Issuer)
	case c.ClientID == "":
		return errors.New("console.oidc.client_id is required")
	case c.ClientSecretEnv == "":
		return errors.New("console.oidc.client_secret_env is required: the name of the environment variable holding the client secret")
	case os.Getenv(c.ClientSecretEnv) == "":
		return fmt.Errorf("console.oidc.client_secret_env: the environment variable %s is not set", c.ClientSecretEnv)
	}
	redirect, err := url.Parse(c.RedirectURL)
	if err != nil || redirect.Host == "" || (redirect.Scheme != "https" && redirect.Scheme != "http") || redirect.Path != "/console/login/oidc/callback" {
		return fmt.Errorf("console.oidc.redirect_url must be this console's callback, https://HOST/console/login/oidc/callback, not %q", c.RedirectURL)
	}
	if len(c.Scopes) > 0 && (!slices.Contains(c.Scopes, "openid") || !slices.Contains(c.Scopes, "email")) {
		return errors.New("console.oidc.scopes must include openid and email")
	}
	return nil
}

// isLoopbackHost reports whether host is localhost or a loopback address.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
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
