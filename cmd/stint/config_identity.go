package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/stint-broker/stint/broker/identity"
	"github.com/stint-broker/stint/web"
)

// TLSConfig makes the API serve HTTPS (TLS 1.3 only). Without cert_file
// the API is plain HTTP and mutual TLS is unavailable.
type TLSConfig struct {
	// CertFile and KeyFile are the server's PEM certificate (chain) and key.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCerts is off, optional (default: agents may present a client
	// certificate) or required (every connection must, probes included).
	ClientCerts string `yaml:"client_certs"`
}

// Enabled reports whether TLS is configured.
func (c *TLSConfig) Enabled() bool { return c.CertFile != "" }

// Validate checks the TLS section.
func (c *TLSConfig) Validate() error {
	switch {
	case c.CertFile == "" && c.KeyFile == "":
		return nil
	case c.CertFile == "" || c.KeyFile == "":
		return errors.New("tls.cert_file and tls.key_file go together")
	}
	switch c.ClientCerts {
	case web.ClientCertsOff, web.ClientCertsOptional, web.ClientCertsRequired:
		return nil
	}
	return fmt.Errorf("tls.client_certs must be off, optional or required, not %q", c.ClientCerts)
}

// OAuthConfig enables Stint's OAuth 2.0 token endpoint (POST /oauth/token):
// client_credentials with client_secret_basic, client_secret_post,
// private_key_jwt or the TLS client certificate, and RFC 8693 token exchange.
type OAuthConfig struct {
	// Enabled turns the token endpoint on.
	Enabled bool `yaml:"enabled"`
	// Issuer is Stint's base URL as agents reach it, such as
	// https://stint.example.com. It is the iss and aud of access tokens;
	// client assertions name it (or Issuer + "/oauth/token") as their aud.
	Issuer string `yaml:"issuer"`
	// SigningKeyFile holds the ES256 key that signs access tokens; it is
	// created (mode 0600) if missing. Required when Enabled; no default.
	SigningKeyFile string `yaml:"signing_key_file"`
	// TokenTTL is the access token lifetime, at most 15m.
	TokenTTL time.Duration `yaml:"token_ttl"`
	// TrustedIssuers are the identity providers whose user tokens a token
	// exchange accepts as subject_token.
	TrustedIssuers []TrustedIssuerConfig `yaml:"trusted_issuers"`
	// Delegations say which agents may act for which users when the
	// user's token carries no may_act claim naming the agent. A token
	// exchange needs one or the other.
	Delegations []DelegationConfig `yaml:"delegations"`
}

// DelegationConfig lets one agent exchange the tokens of some users.
type DelegationConfig struct {
	// Agent is the agent's name.
	Agent string `yaml:"agent"`
	// Issuer, if set, limits it to the users of that trusted issuer.
	Issuer string `yaml:"issuer"`
	// Users are verified emails ("alice@example.com"), every verified
	// email of a domain ("*@example.com"), values of the issuer's
	// user_claim, or "*" for every user.
	Users []string `yaml:"users"`
}

// delegation converts the entry for the identity service.
func (d DelegationConfig) delegation() identity.Delegation {
	return identity.Delegation{Agent: d.Agent, Issuer: d.Issuer, Users: d.Users}
}

// TrustedIssuerConfig is one identity provider for token exchange.
type TrustedIssuerConfig struct {
	// Issuer is the exact iss of its tokens.
	Issuer string `yaml:"issuer"`
	// Audience is the aud its tokens carry for Stint; default oauth.issuer.
	Audience string `yaml:"audience"`
	// JWKSFile or JWKSURL (https) give its public keys.
	JWKSFile string `yaml:"jwks_file"`
	JWKSURL  string `yaml:"jwks_url"`
	// UserClaim names the claim identifying the user (default sub). The
	// lease's on_behalf_of is the token's email when email_verified is true
	// (approvers are known by email, so the user cannot approve), else this
	// claim's value (and then requests that need approval are refused).
	// With user_claim email, a token whose email is not verified is refused.
	UserClaim string `yaml:"user_claim"`
}

// Validate checks the OAuth section.
func (c *OAuthConfig) Validate() error {
	if !c.Enabled {
		return nil
	}
	switch {
	case c.Issuer == "":
		return errors.New("oauth.issuer is required when oauth.enabled: Stint's base URL, such as https://stint.example.com")
	case !strings.HasPrefix(c.Issuer, "https://") && !strings.HasPrefix(c.Issuer, "http://"), strings.HasSuffix(c.Issuer, "/"):
		return fmt.Errorf("oauth.issuer %q must be an http(s) URL without a trailing slash", c.Issuer)
	case c.SigningKeyFile == "":
		return errors.New("oauth.signing_key_file is required when oauth.enabled: name where Stint keeps the private key that signs access tokens (created 0600 if missing), such as /var/lib/stint/oauth-signing.key")
	case c.TokenTTL <= 0 || c.TokenTTL > identity.MaxTokenTTL:
		return fmt.Errorf("oauth.token_ttl must be positive and at most %s", identity.MaxTokenTTL)
	}
	for i, t := range c.TrustedIssuers {
		switch {
		case t.Issuer == "":
			return fmt.Errorf("oauth.trusted_issuers[%d].issuer is required", i)
		case t.Issuer == slackDeliveryIssuer:
			return fmt.Errorf("oauth.trusted_issuers[%d].issuer %q is reserved for Slack's interactions", i, t.Issuer)
		case (t.JWKSFile == "") == (t.JWKSURL == ""):
			return fmt.Errorf("oauth.trusted_issuers[%d] needs exactly one of jwks_file and jwks_url", i)
		}
	}
	for i, d := range c.Delegations {
		if err := d.delegation().Validate(); err != nil {
			return fmt.Errorf("oauth.delegations[%d]: %w", i, err)
		}
		if d.Issuer != "" && !slices.ContainsFunc(c.TrustedIssuers, func(t TrustedIssuerConfig) bool { return t.Issuer == d.Issuer }) {
			return fmt.Errorf("oauth.delegations[%d]: issuer %q is not in oauth.trusted_issuers", i, d.Issuer)
		}
	}
	return nil
}

// IdentityConfig configures agent certificates.
type IdentityConfig struct {
	// CADir holds the enrolment CA that stint ca init creates (ca.pem and
	// ca.key, mode 0600). Empty (the default) or without a CA, enrolment is
	// off.
	CADir string `yaml:"ca_dir"`
	// TrustDomain names Stint-issued certificates:
	// spiffe://<trust_domain>/agent/<name>.
	TrustDomain string `yaml:"trust_domain"`
	// CertTTL is the default lifetime of an enrolled certificate; CertMaxTTL
	// caps --ttl.
	CertTTL    time.Duration `yaml:"cert_ttl"`
	CertMaxTTL time.Duration `yaml:"cert_max_ttl"`
	// SPIFFE lists trust bundles whose X.509-SVIDs authenticate agents
	// mapped to their SPIFFE IDs (stint agents set-auth --spiffe-id).
	SPIFFE []SPIFFEBundleConfig `yaml:"spiffe"`
}

// SPIFFEBundleConfig is one SPIFFE trust domain's X.509 bundle.
type SPIFFEBundleConfig struct {
	TrustDomain string `yaml:"trust_domain"`
	// BundleFile holds the domain's PEM root certificates.
	BundleFile string `yaml:"bundle_file"`
}

// Validate checks the identity section.
func (c *IdentityConfig) Validate() error {
	switch {
	case c.CertTTL < time.Minute || c.CertMaxTTL < c.CertTTL:
		return errors.New("identity.cert_ttl must be at least 1m and at most identity.cert_max_ttl")
	case c.TrustDomain == "":
		return errors.New("identity.trust_domain is required")
	}
	seen := map[string]bool{}
	for i, b := range c.SPIFFE {
		switch {
		case b.TrustDomain == "" || b.BundleFile == "":
			return fmt.Errorf("identity.spiffe[%d] needs trust_domain and bundle_file", i)
		case seen[b.TrustDomain]:
			return fmt.Errorf("identity.spiffe: trust domain %q is listed twice", b.TrustDomain)
		}
		seen[b.TrustDomain] = true
	}
	return nil
}

// LimitsConfig caps what one agent may do. Zero disables a limit.
type LimitsConfig struct {
	// RequestsPerSecond and Burst bound each agent's authenticated requests
	// (token bucket); excess requests get 429 with Retry-After.
	RequestsPerSecond float64 `yaml:"requests_per_second"`
	Burst             int     `yaml:"burst"`
	// MaxLiveLeases caps each agent's pending, approved and live leases; a
	// request over it gets 429 with Retry-After.
	MaxLiveLeases int `yaml:"max_live_leases"`
}

// Validate checks the limits section.
func (c *LimitsConfig) Validate() error {
	switch {
	case c.RequestsPerSecond < 0 || c.Burst < 0 || c.MaxLiveLeases < 0:
		return errors.New("limits must not be negative")
	case c.RequestsPerSecond > 0 && c.Burst < 1:
		return errors.New("limits.burst must be at least 1 when limits.requests_per_second is set")
	}
	return nil
}

// defaultIdentityConfig names no CA directory: a default relative path
// would put the CA's private key in whatever directory Stint runs from,
// such as a source checkout.
func defaultIdentityConfig() IdentityConfig {
	return IdentityConfig{TrustDomain: identity.DefaultTrustDomain, CertTTL: 24 * time.Hour, CertMaxTTL: 7 * 24 * time.Hour}
}

// defaultOAuthConfig names no signing key file, for the same reason.
func defaultOAuthConfig() OAuthConfig {
	return OAuthConfig{TokenTTL: 10 * time.Minute}
}

func defaultTLSConfig() TLSConfig { return TLSConfig{ClientCerts: web.ClientCertsOptional} }

func defaultLimitsConfig() LimitsConfig {
	return LimitsConfig{RequestsPerSecond: 10, Burst: 20, MaxLiveLeases: 20}
}

// validateIdentityConfig checks the tls, oauth, identity and limits sections.
func (c *Config) validateIdentityConfig() error {
	return errors.Join(c.TLS.Validate(), c.OAuth.Validate(), c.Identity.Validate(), c.Limits.Validate())
}
