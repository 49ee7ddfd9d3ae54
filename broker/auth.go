package broker

import (
	"context"
	"crypto/x509"
	"slices"
	"time"
)

// Authentication methods. An agent lists the ones it may use (AllowedAuth);
// every lease records the one its agent used (Lease.AuthMethod), and policy
// sees it. An access token records how its client authenticated at the token
// endpoint, so a lease requested with the token carries that method.
const (
	// AuthAPIKey is an ephemeral "stint_ak_…" key sent as a bearer token.
	AuthAPIKey = "api_key"
	// AuthMTLS is a client certificate: issued by Stint's enrolment CA, or a
	// SPIFFE X.509-SVID from a configured trust bundle.
	AuthMTLS = "mtls"
	// AuthClientSecret is OAuth client_secret_basic or client_secret_post at
	// the token endpoint.
	AuthClientSecret = "client_secret"
	// AuthPrivateKeyJWT is an RFC 7523 client assertion signed with the
	// agent's registered key.
	AuthPrivateKeyJWT = "private_key_jwt"
	// AuthAdminToken is an admin's bearer token.
	AuthAdminToken = "admin_token"
)

// AgentAuthMethods lists the methods an agent may be allowed, in the order
// they are shown.
var AgentAuthMethods = []string{AuthAPIKey, AuthMTLS, AuthClientSecret, AuthPrivateKeyJWT}

// DefaultAuthMethods are the methods a new agent may use: API keys only.
func DefaultAuthMethods() []string { return []string{AuthAPIKey} }

// ValidateAuthMethods returns EINVALID naming field auth_methods unless
// methods is a non-empty list of distinct known agent methods.
func ValidateAuthMethods(methods []string) error {
	if len(methods) == 0 {
		return FieldErrorf("auth_methods", "An agent needs at least one authentication method (api_key, mtls, client_secret, private_key_jwt).")
	}
	for i, m := range methods {
		if !slices.Contains(AgentAuthMethods, m) {
			return FieldErrorf("auth_methods", "Unknown authentication method %q; use api_key, mtls, client_secret or private_key_jwt.", m)
		}
		if slices.Contains(methods[:i], m) {
			return FieldErrorf("auth_methods", "Authentication method %q is listed twice.", m)
		}
	}
	return nil
}

// Allows reports whether the agent may authenticate with method.
func (a *Agent) Allows(method string) bool { return slices.Contains(a.AuthMethods, method) }

// Certificate is a client certificate Stint's enrolment CA issued to an
// agent. Only certificates recorded here authenticate: one the CA signed that
// the store does not know (a restored database, a stolen CA key used
// elsewhere) is refused. Revoked certificates stay listed.
type Certificate struct {
	// Serial is the certificate's serial number in lower-case hex.
	Serial  string `json:"serial"`
	AgentID string `json:"agent_id"`
	// Fingerprint is the hex SHA-256 of the certificate's DER.
	Fingerprint string `json:"fingerprint"`
	// URI is the URI SAN that names the agent.
	URI          string     `json:"uri"`
	NotBefore    time.Time  `json:"not_before"`
	NotAfter     time.Time  `json:"not_after"`
	CreatedAt    time.Time  `json:"created_at"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty"`
	RevokeReason string     `json:"revoke_reason,omitempty"`
}

// IdentityStore persists what agent authentication needs beyond agents and
// API keys: issued client certificates and the replay caches of client
// assertion ids and of exchanged user tokens.
type IdentityStore interface {
	// CreateCertificate records an issued certificate. Returns ECONFLICT if
	// the serial exists and ENOTFOUND if the agent does not.
	CreateCertificate(ctx context.Context, c *Certificate) error
	// FindCertificateBySerial returns ENOTFOUND if no certificate has serial.
	FindCertificateBySerial(ctx context.Context, serial string) (*Certificate, error)
	// FindCertificates returns an agent's certificates, newest first.
	FindCertificates(ctx context.Context, agentID string) ([]*Certificate, error)
	// RevokeCertificates marks the agent's unrevoked certificates revoked at
	// at with reason; a non-empty serial limits it to that certificate. It
	// returns how many it revoked.
	RevokeCertificates(ctx context.Context, agentID, serial string, at time.Time, reason string) (int, error)
	// UseJTI records that the client used assertion id jti, valid until
	// expires. Returns ECONFLICT if the pair was already used and has not
	// expired at now. Expired entries are purged on the way.
	UseJTI(ctx context.Context, clientID, jti string, expires, now time.Time) error
	// UseSubjectToken records that a token exchange used the user token
	// that issuer identifies as jti, which stays acceptable until expires.
	// Returns ECONFLICT if the pair was already used and has not expired at
	// now. Expired entries are purged on the way. Every replica sharing the
	// store sees the same cache, so a user token is exchanged once.
	UseSubjectToken(ctx context.Context, issuer, jti string, expires, now time.Time) error
}

// AuthRequest is what a caller presented to authenticate one HTTP request.
type AuthRequest struct {
	// Bearer is the "Authorization: Bearer" value: an API key, an admin
	// token or a Stint access token. Empty if none was sent.
	Bearer string
	// PeerCertificates are the client certificates of the TLS connection,
	// leaf first, as crypto/tls verified them; nil without mutual TLS.
	PeerCertificates []*x509.Certificate
	// SourceIP is the caller's address.
	SourceIP string
	// Resource, when set, is the protected resource the request is for
	// (such as Stint's MCP endpoint): only a Stint access token whose
	// audience is exactly Resource authenticates (RFC 8707); API keys,
	// admin tokens, client certificates alone and access tokens for any
	// other audience are refused.
	Resource string
}

// Authenticator resolves a request's credentials to an actor.
type Authenticator interface {
	// AuthenticateRequest returns the actor for req: by its bearer secret if
	// it sent one, else by its client certificate. Returns EUNAUTHORIZED for
	// anything unusable (unknown, expired, revoked, a non-active agent, a
	// method the agent may not use, a certificate-bound token without its
	// certificate) and ETOOMANY with RetryAfter when the agent is over its
	// request rate.
	AuthenticateRequest(ctx context.Context, req AuthRequest) (Actor, error)
}

// OAuth 2.0 grant and token types Stint's token endpoint knows.
const (
	GrantClientCredentials = "client_credentials"
	GrantTokenExchange     = "urn:ietf:params:oauth:grant-type:token-exchange"
	// ClientAssertionJWT is the client_assertion_type of private_key_jwt.
	ClientAssertionJWT   = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	TokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	TokenTypeIDToken     = "urn:ietf:params:oauth:token-type:id_token"
)

// TokenRequest is one call to the OAuth token endpoint.
type TokenRequest struct {
	GrantType string
	// ClientID and ClientSecret come from HTTP Basic (client_secret_basic)
	// or the form (client_secret_post); BasicAuth and PostSecret say which.
	ClientID     string
	ClientSecret string
	BasicAuth    bool
	PostSecret   bool
	// ClientAssertionType and ClientAssertion carry private_key_jwt.
	ClientAssertionType string
	ClientAssertion     string
	// FormClientID is the client_id form parameter, if sent.
	FormClientID string
	Scope        string
	// Resource is the RFC 8707 resource indicator: the protected resource
	// the token is for. Empty asks for a token for Stint's API.
	Resource string
	// SubjectToken and SubjectTokenType carry a token exchange's user token;
	// ActorToken is refused (the authenticated client is the actor).
	SubjectToken       string
	SubjectTokenType   string
	ActorToken         string
	RequestedTokenType string
	// PeerCertificates are the TLS client certificates, leaf first; a token
	// issued over mutual TLS is bound to the leaf (RFC 8705).
	PeerCertificates []*x509.Certificate
	SourceIP         string
}

// TokenResponse is a successful token endpoint answer (RFC 6749 §5.1, RFC
// 8693 §2.2.1).
type TokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type,omitempty"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int    `json:"expires_in"`
	Scope           string `json:"scope,omitempty"`
}

// TokenService is Stint's OAuth 2.0 authorization server for agents.
//
// Token errors are *Error values that the web layer renders as RFC 6749
// §5.2 errors: EUNAUTHORIZED is invalid_client, EFORBIDDEN is
// unauthorized_client, EINVALID with Field "grant_type" is
// unsupported_grant_type, with Field "scope" invalid_scope, with Field
// "audience" invalid_target, with Field "grant" invalid_grant, and any other
// EINVALID is invalid_request; ETOOMANY carries RetryAfter.
type TokenService interface {
	// Token runs the token endpoint: client_credentials or token exchange.
	Token(ctx context.Context, req TokenRequest) (*TokenResponse, error)
	// Metadata returns the RFC 8414 authorization server metadata.
	Metadata() map[string]any
	// JWKS returns the JSON Web Key Set of the token signing keys.
	JWKS() ([]byte, error)
}
