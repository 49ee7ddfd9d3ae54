package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"

	"github.com/stint-broker/stint/broker"
)

// OAuth endpoints, relative to the issuer URL.
const (
	TokenPath    = "/oauth/token"
	JWKSPath     = "/oauth/jwks.json"
	MetadataPath = "/.well-known/oauth-authorization-server"
)

// Lifetimes.
const (
	// MaxTokenTTL caps access token lifetimes.
	MaxTokenTTL = 15 * time.Minute
	// MaxAssertionLifetime caps exp − iat of a private_key_jwt assertion.
	MaxAssertionLifetime = 5 * time.Minute
	// clockSkew tolerates other hosts' clocks on iat and nbf of assertions
	// and subject tokens.
	clockSkew = 30 * time.Second
	// maxJWKs bounds an agent's registered key set.
	maxJWKs = 10
)

// assertionAlgs are the signature algorithms accepted on client assertions
// and subject tokens: asymmetric only, so that no shared secret signs.
var assertionAlgs = []jose.SignatureAlgorithm{
	jose.ES256, jose.ES384, jose.ES512, jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512, jose.EdDSA,
}

// OAuth is Stint's token endpoint configuration: the issuer URL (token
// endpoint Issuer+TokenPath; a client assertion's audience is one of the
// two), the ES256 key that signs access tokens, their lifetime, and the
// issuers whose user tokens a token exchange accepts.
type OAuth struct {
	Issuer   string
	TokenTTL time.Duration
	Key      *ecdsa.PrivateKey
	KeyID    string
	// TrustedIssuers are the identity providers of token exchange.
	TrustedIssuers []*TrustedIssuer
	// Delegations let agents exchange user tokens that carry no may_act
	// claim naming them; without one that matches, such a token is refused.
	Delegations []Delegation
	// Resources are the protected resources a client may ask a token for
	// with the RFC 8707 resource parameter (such as Stint's MCP endpoint),
	// each with the scopes it defines. Such a token's audience is the
	// resource alone: it is refused by the API, and the API's tokens are
	// refused by the resource.
	Resources map[string][]string

	signer jose.Signer
}

// NewOAuth checks the settings and prepares the signer. The key id is the
// key's RFC 7638 thumbprint.
func NewOAuth(issuer string, key *ecdsa.PrivateKey, ttl time.Duration, trusted []*TrustedIssuer) (*OAuth, error) {
	switch {
	case issuer == "" || strings.HasSuffix(issuer, "/") || !(strings.HasPrefix(issuer, "https://") || strings.HasPrefix(issuer, "http://")):
		return nil, fmt.Errorf("oauth issuer %q must be an http(s) URL without a trailing slash", issuer)
	case ttl <= 0 || ttl > MaxTokenTTL:
		return nil, fmt.Errorf("oauth token ttl %s must be positive and at most %s", ttl, MaxTokenTTL)
	case key == nil || key.Curve != elliptic.P256():
		return nil, errors.New("oauth signing key must be ECDSA P-256 (ES256)")
	}
	jwk := jose.JSONWebKey{Key: &key.PublicKey}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("thumbprint signing key: %w", err)
	}
	o := &OAuth{Issuer: issuer, TokenTTL: ttl, Key: key, KeyID: base64.RawURLEncoding.EncodeToString(tp), TrustedIssuers: trusted}
	o.signer, err = jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: o.KeyID}},
		(&jose.SignerOptions{}).WithType("at+jwt"))
	if err != nil {
		return nil, fmt.Errorf("token signer: %w", err)
	}
	return o, nil
}

// TokenEndpoint is the URL of the token endpoint.
func (o *OAuth) TokenEndpoint() string { return o.Issuer + TokenPath }

// LoadOrCreateSigningKey reads the PKCS #8 ECDSA P-256 key at path, or
// creates one there (mode 0600) if the file does not exist. It refuses a key
// file that others may read.
func LoadOrCreateSigningKey(path string) (*ecdsa.PrivateKey, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("create signing key directory: %w", err)
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate signing key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("encode signing key: %w", err)
		}
		if err := writeNew(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, err
		}
		return key, nil
	} else if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	k, err := readPrivateKeyFile(path, fi)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("signing key %s must be ECDSA P-256", path)
	}
	return ek, nil
}

// accessClaims are the claims of a Stint access token (RFC 9068 shape):
// sub is the agent, or the user it acts for when act is set (RFC 8693 §4.1),
// and then email is that user's verified email, if the identity provider
// gave one; cnf binds the token to a client certificate (RFC 8705 §3.1).
type accessClaims struct {
	jwt.Claims
	ClientID   string        `json:"client_id"`
	AuthMethod string        `json:"auth_method"`
	Email      string        `json:"email,omitempty"`
	Cnf        *confirmation `json:"cnf,omitempty"`
	Act        *actorClaim   `json:"act,omitempty"`
	// Scope is the space-separated scopes of a token for a resource.
	Scope string `json:"scope,omitempty"`
}

type confirmation struct {
	X5tS256 string `json:"x5t#S256"`
}

type actorClaim struct {
	Sub string `json:"sub"`
}

// certThumbprint is the base64url SHA-256 of a certificate's DER (x5t#S256).
func certThumbprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Token implements broker.TokenService.
func (s *Service) Token(ctx context.Context, req broker.TokenRequest) (*broker.TokenResponse, error) {
	o := s.OAuth
	if o == nil {
		return nil, broker.Errorf(broker.ENOTFOUND, "OAuth is not enabled on this server.")
	}
	switch req.GrantType {
	case broker.GrantClientCredentials, broker.GrantTokenExchange:
	case "":
		return nil, broker.Errorf(broker.EINVALID, "grant_type is required.")
	default:
		return nil, broker.FieldErrorf("grant_type", "Unsupported grant_type %q: use client_credentials or %s.", req.GrantType, broker.GrantTokenExchange)
	}
	audience, scope, err := o.tokenTarget(req)
	if err != nil {
		return nil, err
	}
	now := s.Now().UTC()
	agent, method, err := s.authenticateClient(ctx, req, now)
	if err != nil {
		return nil, err
	}
	if err := s.Limits.Allow(ctx, agent.ID, agent.Name, now); err != nil {
		return nil, err
	}

	subject, email, act, exp := agent.Name, "", (*actorClaim)(nil), now.Add(o.TokenTTL)
	issuedType := ""
	if req.GrantType == broker.GrantTokenExchange {
		user, err := s.verifySubjectToken(ctx, agent, req, now)
		if err != nil {
			return nil, err
		}
		subject, email, act, issuedType = user.ID, user.Email, &actorClaim{Sub: agent.Name}, broker.TokenTypeAccessToken
		// The delegated token never outlives the user's.
		if user.Expiry.Before(exp) {
			exp = user.Expiry
		}
	}
	claims := accessClaims{
		Claims: jwt.Claims{
			Issuer: o.Issuer, Subject: subject, Audience: jwt.Audience{audience},
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(exp),
			ID: uuid.Must(uuid.NewV7()).String(),
		},
		ClientID: agent.Name, AuthMethod: method, Email: email, Act: act, Scope: scope,
	}
	if len(req.PeerCertificates) > 0 {
		claims.Cnf = &confirmation{X5tS256: certThumbprint(req.PeerCertificates[0])}
	}
	token, err := jwt.Signed(o.signer).Claims(claims).Serialize()
	if err != nil {
		return nil, fmt.Errorf("sign access token: %w", err)
	}
	s.touch(ctx, agent, now)
	return &broker.TokenResponse{
		AccessToken: token, IssuedTokenType: issuedType, TokenType: "Bearer",
		ExpiresIn: int(exp.Sub(now).Round(time.Second) / time.Second), Scope: scope,
	}, nil
}

// tokenTarget resolves a token request's resource and scope parameters to
// the token's audience and scope. Without a resource the token is for the
// API: its audience is the issuer and it carries no scopes. With one, the
// resource must be among o.Resources, and scope (default: all the
// resource's scopes) must name only scopes it defines.
func (o *OAuth) tokenTarget(req broker.TokenRequest) (audience, scope string, err error) {
	if req.Resource == "" {
		if req.Scope != "" {
			return "", "", broker.FieldErrorf("scope", "Stint access tokens for the API carry no scopes; omit scope, or name a resource.")
		}
		return o.Issuer, "", nil
	}
	offered, ok := o.Resources[req.Resource]
	if !ok {
		known := make([]string, 0, len(o.Resources))
		for r := range o.Resources {
			known = append(known, r)
		}
		slices.Sort(known)
		if len(known) == 0 {
			return "", "", broker.FieldErrorf("audience", "This server issues tokens for no resource but its API; omit resource.")
		}
		return "", "", broker.FieldErrorf("audience", "Unknown resource %q; this server issues tokens for %s.", req.Resource, strings.Join(known, ", "))
	}
	asked := strings.Fields(req.Scope)
	if len(asked) == 0 {
		return req.Resource, strings.Join(offered, " "), nil
	}
	for _, sc := range asked {
		if !slices.Contains(offered, sc) {
			return "", "", broker.FieldErrorf("scope", "Scope %q is not offered for %s; use any of: %s.", sc, req.Resource, strings.Join(offered, " "))
		}
	}
	slices.Sort(asked)
	return req.Resource, strings.Join(slices.Compact(asked), " "), nil
}

// authenticateClient authenticates the token endpoint's client by exactly
// one of client_secret_basic, client_secret_post, private_key_jwt or its TLS
// client certificate (tls_client_auth, RFC 8705 §2). Failures are counted.
func (s *Service) authenticateClient(ctx context.Context, req broker.TokenRequest, now time.Time) (*broker.Agent, string, error) {
	agent, method, blame, err := s.clientAgent(ctx, req, now)
	if err == nil {
		err = admit(agent, method)
	}
	if err != nil {
		if broker.ErrorCode(err) == broker.EUNAUTHORIZED {
			if agent != nil {
				blame = agent.ID
			}
			s.recordFailure(ctx, blame, req.SourceIP, now)
		}
		return nil, "", err
	}
	return agent, method, nil
}

func (s *Service) clientAgent(ctx context.Context, req broker.TokenRequest, now time.Time) (*broker.Agent, string, string, error) {
	failed := broker.Errorf(broker.EUNAUTHORIZED, "Client authentication failed.")
	assertion := req.ClientAssertion != "" || req.ClientAssertionType != ""
	switch {
	case req.BasicAuth && req.PostSecret:
		return nil, "", "", broker.Errorf(broker.EINVALID, "Use one client authentication method, not both HTTP Basic and client_secret in the body.")
	case (req.BasicAuth || req.PostSecret) && assertion:
		return nil, "", "", broker.Errorf(broker.EINVALID, "Use one client authentication method, not both a client secret and a client assertion.")
	case req.PostSecret && req.ClientID == "":
		return nil, "", "", broker.FieldErrorf("client_id", "client_secret_post needs client_id beside client_secret.")
	case req.BasicAuth || req.PostSecret:
		if req.BasicAuth && req.FormClientID != "" && req.FormClientID != req.ClientID {
			return nil, "", "", broker.Errorf(broker.EINVALID, "client_id differs from the HTTP Basic user.")
		}
		a, err := s.Store.FindAgentByName(ctx, req.ClientID)
		if broker.ErrorCode(err) == broker.ENOTFOUND {
			return nil, "", "", failed
		} else if err != nil {
			return nil, "", "", fmt.Errorf("find client: %w", err)
		}
		if a.ClientSecretHash == "" || subtle.ConstantTimeCompare([]byte(hashKey(req.ClientSecret)), []byte(a.ClientSecretHash)) != 1 {
			return nil, "", a.ID, failed
		}
		return a, broker.AuthClientSecret, "", nil
	case assertion:
		if req.ClientAssertionType != broker.ClientAssertionJWT {
			return nil, "", "", broker.FieldErrorf("client_assertion_type", "client_assertion_type must be %s.", broker.ClientAssertionJWT)
		}
		a, blame, err := s.verifyClientAssertion(ctx, req, now)
		return a, broker.AuthPrivateKeyJWT, blame, err
	case len(req.PeerCertificates) > 0:
		a, blame, err := s.authenticateCert(ctx, req.PeerCertificates, now)
		if err != nil {
			return nil, "", blame, err
		}
		if req.FormClientID != "" && req.FormClientID != a.Name {
			return nil, "", a.ID, broker.Errorf(broker.EUNAUTHORIZED, "client_id does not match the client certificate.")
		}
		return a, broker.AuthMTLS, "", nil
	}
	return nil, "", "", broker.Errorf(broker.EUNAUTHORIZED,
		"Client authentication required: use HTTP Basic (client_secret_basic), client_id and client_secret in the body (client_secret_post), a client assertion (private_key_jwt) or a client certificate.")
}

// verifyClientAssertion checks an RFC 7523 §3 client assertion: signed by
// the agent's registered key, iss = sub = client_id, aud Stint (see
// assertionAudience), exp and iat present and at most MaxAssertionLifetime
// apart, not expired, and its jti never seen before.
func (s *Service) verifyClientAssertion(ctx context.Context, req broker.TokenRequest, now time.Time) (*broker.Agent, string, error) {
	bad := func(format string, args ...any) error {
		return broker.Errorf(broker.EUNAUTHORIZED, "Invalid client assertion: "+format, args...)
	}
	tok, err := jwt.ParseSigned(req.ClientAssertion, assertionAlgs)
	if err != nil {
		return nil, "", bad("it must be a JWS-signed JWT with an asymmetric algorithm.")
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil || unverified.Issuer == "" {
		return nil, "", bad("iss is missing.")
	}
	if req.FormClientID != "" && req.FormClientID != unverified.Issuer {
		return nil, "", bad("iss differs from client_id.")
	}
	agent, err := s.Store.FindAgentByName(ctx, unverified.Issuer)
	if broker.ErrorCode(err) == broker.ENOTFOUND {
		return nil, "", broker.Errorf(broker.EUNAUTHORIZED, "Client authentication failed.")
	} else if err != nil {
		return nil, "", fmt.Errorf("find client: %w", err)
	}
	keys, err := parseJWKS(agent.PublicJWKS)
	if err != nil || len(keys.Keys) == 0 {
		return nil, agent.ID, bad("agent %s has no registered public key (stint agents set-jwk).", agent.Name)
	}
	hdr := tok.Headers[0]
	candidates := keys.Keys
	if hdr.KeyID != "" {
		candidates = keys.Key(hdr.KeyID)
	}
	var claims jwt.Claims
	verified := false
	for _, k := range candidates {
		if k.Algorithm != "" && k.Algorithm != hdr.Algorithm {
			continue
		}
		if err := tok.Claims(k.Key, &claims); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, agent.ID, bad("the signature does not verify with the agent's registered keys.")
	}
	switch {
	case claims.Issuer != agent.Name || claims.Subject != agent.Name:
		return nil, agent.ID, bad("iss and sub must both be the client_id %q.", agent.Name)
	case !s.OAuth.assertionAudience(claims.Audience):
		return nil, agent.ID, bad("aud must be the issuer %s (or the token endpoint %s), as its only value.", s.OAuth.Issuer, s.OAuth.TokenEndpoint())
	case claims.Expiry == nil || claims.IssuedAt == nil:
		return nil, agent.ID, bad("exp and iat are required.")
	case claims.Expiry.Time().Sub(claims.IssuedAt.Time()) > MaxAssertionLifetime:
		return nil, agent.ID, bad("it may live at most %s (exp − iat).", MaxAssertionLifetime)
	case !now.Before(claims.Expiry.Time()):
		return nil, agent.ID, bad("it has expired.")
	case claims.IssuedAt.Time().After(now.Add(clockSkew)):
		return nil, agent.ID, bad("iat is in the future.")
	case claims.NotBefore != nil && claims.NotBefore.Time().After(now.Add(clockSkew)):
		return nil, agent.ID, bad("it is not valid yet (nbf).")
	case claims.ID == "" || len(claims.ID) > 256:
		return nil, agent.ID, bad("jti is required (at most 256 characters).")
	}
	if s.Identity == nil {
		return nil, agent.ID, errors.New("identity store is not configured")
	}
	if err := s.Identity.UseJTI(ctx, agent.Name, claims.ID, claims.Expiry.Time(), now); broker.ErrorCode(err) == broker.ECONFLICT {
		return nil, agent.ID, bad("it was already used (jti replay).")
	} else if err != nil {
		return nil, agent.ID, fmt.Errorf("record assertion id: %w", err)
	}
	return agent, "", nil
}

// assertionAudience reports whether a client assertion's aud names Stint
// and nothing else: the issuer identifier, which the update of RFC 7523
// (draft-ietf-oauth-rfc7523bis) makes the audience clients send and
// standard clients such as openid-client do, or the token endpoint URL,
// which RFC 7523 §3 suggests. Compared as exact strings (RFC 7523 §3). A
// second audience is refused: an assertion also meant for another server
// could have been replayed from it.
func (o *OAuth) assertionAudience(aud jwt.Audience) bool {
	return len(aud) == 1 && (aud[0] == o.Issuer || aud[0] == o.TokenEndpoint())
}

// verifyAccessToken checks a Stint access token presented as a bearer token
// and returns its agent and the actor it stands for.
func (s *Service) verifyAccessToken(ctx context.Context, bearer string, certs []*x509.Certificate, resource string, now time.Time) (broker.Actor, string, error) {
	bad := broker.Errorf(broker.EUNAUTHORIZED, "The access token is invalid.")
	o := s.OAuth
	tok, err := jwt.ParseSigned(bearer, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil || tok.Headers[0].KeyID != o.KeyID || tok.Headers[0].ExtraHeaders[jose.HeaderType] != "at+jwt" {
		return broker.Actor{}, "", bad
	}
	var c accessClaims
	if err := tok.Claims(&o.Key.PublicKey, &c); err != nil {
		return broker.Actor{}, "", bad
	}
	audience := o.Issuer
	if resource != "" {
		audience = resource
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: o.Issuer, Time: now}, 0); err != nil {
		if errors.Is(err, jwt.ErrExpired) {
			return broker.Actor{}, "", broker.Errorf(broker.EUNAUTHORIZED, "The access token has expired; get a new one from %s.", o.TokenEndpoint())
		}
		return broker.Actor{}, "", bad
	}
	// The audience is exactly one: a token for a resource (RFC 8707) is
	// refused by the API, and the API's tokens by the resource.
	if len(c.Audience) != 1 || c.Audience[0] != audience {
		if resource != "" {
			return broker.Actor{}, "", broker.Errorf(broker.EUNAUTHORIZED, "The access token was not issued for %s; ask %s for one with resource=%s.", resource, o.TokenEndpoint(), resource)
		}
		return broker.Actor{}, "", broker.Errorf(broker.EUNAUTHORIZED, "The access token was issued for another resource, not for Stint's API.")
	}
	if c.Expiry == nil || c.IssuedAt == nil || c.ClientID == "" {
		return broker.Actor{}, "", bad
	}
	agent, err := s.Store.FindAgentByName(ctx, c.ClientID)
	if broker.ErrorCode(err) == broker.ENOTFOUND {
		return broker.Actor{}, "", bad
	} else if err != nil {
		return broker.Actor{}, "", fmt.Errorf("find agent: %w", err)
	}
	if t := agent.TokensNotBefore; t != nil && !c.IssuedAt.Time().After(t.Truncate(time.Second)) {
		return broker.Actor{}, agent.ID, broker.Errorf(broker.EUNAUTHORIZED, "The access token was issued before agent %s was suspended or disabled.", agent.Name)
	}
	if c.Cnf != nil {
		if len(certs) == 0 || subtle.ConstantTimeCompare([]byte(certThumbprint(certs[0])), []byte(c.Cnf.X5tS256)) != 1 {
			return broker.Actor{}, agent.ID, broker.Errorf(broker.EUNAUTHORIZED, "The access token is bound to a client certificate; present that certificate over mutual TLS.")
		}
		// The certificate must still authenticate the agent: revoking it
		// (or unmapping its SPIFFE ID) ends every token bound to it at
		// once, on connections opened before too.
		certAgent, _, err := s.authenticateCert(ctx, certs, now)
		if err != nil {
			if broker.ErrorCode(err) == broker.EUNAUTHORIZED {
				return broker.Actor{}, agent.ID, broker.Errorf(broker.EUNAUTHORIZED, "The access token is bound to a client certificate that no longer authenticates: %s", broker.ErrorMessage(err))
			}
			return broker.Actor{}, agent.ID, err
		}
		if certAgent.ID != agent.ID {
			return broker.Actor{}, agent.ID, bad
		}
	}
	onBehalfOf, verified := "", false
	if c.Act != nil {
		if c.Act.Sub != agent.Name {
			return broker.Actor{}, agent.ID, bad
		}
		onBehalfOf = c.Subject
		if c.Email != "" {
			onBehalfOf, verified = c.Email, true
		}
	} else if c.Subject != agent.Name || c.Email != "" {
		return broker.Actor{}, agent.ID, bad
	}
	if err := admit(agent, c.AuthMethod); err != nil {
		return broker.Actor{}, agent.ID, err
	}
	s.touch(ctx, agent, now)
	return broker.Actor{Kind: broker.ActorAgent, Name: agent.Name, AgentID: agent.ID, AuthMethod: c.AuthMethod,
		OnBehalfOf: onBehalfOf, OnBehalfOfVerified: verified, Agent: agent, Scopes: strings.Fields(c.Scope)}, "", nil
}

// looksLikeJWT reports whether a bearer value has the shape of a compact JWS.
func looksLikeJWT(s string) bool {
	return strings.HasPrefix(s, "eyJ") && strings.Count(s, ".") == 2
}

// Metadata implements broker.TokenService (RFC 8414).
func (s *Service) Metadata() map[string]any {
	o := s.OAuth
	algs := make([]string, len(assertionAlgs))
	for i, a := range assertionAlgs {
		algs[i] = string(a)
	}
	md := map[string]any{
		"issuer":                                o.Issuer,
		"token_endpoint":                        o.TokenEndpoint(),
		"jwks_uri":                              o.Issuer + JWKSPath,
		"grant_types_supported":                 []string{broker.GrantClientCredentials, broker.GrantTokenExchange},
		"response_types_supported":              []string{},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post", "private_key_jwt", "tls_client_auth"},
		"token_endpoint_auth_signing_alg_values_supported": algs,
		"tls_client_certificate_bound_access_tokens":       true,
	}
	if len(o.Resources) > 0 {
		// Scopes exist only on tokens for a resource (RFC 8707).
		var scopes []string
		for _, sc := range o.Resources {
			scopes = append(scopes, sc...)
		}
		slices.Sort(scopes)
		md["scopes_supported"] = slices.Compact(scopes)
	}
	return md
}

// JWKS implements broker.TokenService.
func (s *Service) JWKS() ([]byte, error) {
	o := s.OAuth
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &o.Key.PublicKey, KeyID: o.KeyID, Algorithm: string(jose.ES256), Use: "sig"}}}
	return json.Marshal(set)
}

// ParsePublicJWKS checks an agent's key registration, a JWK or a JWK Set of
// public signing keys (EC P-256/384/521, RSA ≥ 2048 or Ed25519; at most 10),
// fills in missing key ids with RFC 7638 thumbprints and returns the set as
// JSON. Private and symmetric keys are refused. Returns EINVALID naming
// field jwk.
func ParsePublicJWKS(data []byte) (string, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(data, &probe); err != nil {
		return "", broker.FieldErrorf("jwk", "The key must be a JSON Web Key or a JSON Web Key Set.")
	}
	var set jose.JSONWebKeySet
	if _, ok := probe["keys"]; ok {
		if err := json.Unmarshal(data, &set); err != nil {
			return "", broker.FieldErrorf("jwk", "The key set cannot be parsed: each key must be a valid public JWK.")
		}
	} else {
		var k jose.JSONWebKey
		if err := json.Unmarshal(data, &k); err != nil {
			return "", broker.FieldErrorf("jwk", "The key cannot be parsed as a JSON Web Key.")
		}
		set.Keys = []jose.JSONWebKey{k}
	}
	if len(set.Keys) == 0 || len(set.Keys) > maxJWKs {
		return "", broker.FieldErrorf("jwk", "Register between 1 and %d keys.", maxJWKs)
	}
	var kids []string
	for i := range set.Keys {
		k := &set.Keys[i]
		if !k.Valid() {
			return "", broker.FieldErrorf("jwk", "Key %d is not a valid JWK.", i+1)
		}
		if !k.IsPublic() {
			return "", broker.FieldErrorf("jwk", "Key %d is a private key: register the public key only.", i+1)
		}
		switch pk := k.Key.(type) {
		case *ecdsa.PublicKey:
		case ed25519.PublicKey:
		case *rsa.PublicKey:
			if pk.N.BitLen() < 2048 {
				return "", broker.FieldErrorf("jwk", "Key %d: RSA keys need at least 2048 bits.", i+1)
			}
		default:
			return "", broker.FieldErrorf("jwk", "Key %d: only EC, RSA and Ed25519 public keys can sign client assertions.", i+1)
		}
		if k.Use != "" && k.Use != "sig" {
			return "", broker.FieldErrorf("jwk", "Key %d: use must be \"sig\".", i+1)
		}
		if k.Algorithm != "" && !slices.Contains(assertionAlgs, jose.SignatureAlgorithm(k.Algorithm)) {
			return "", broker.FieldErrorf("jwk", "Key %d: algorithm %q is not accepted.", i+1, k.Algorithm)
		}
		if k.KeyID == "" {
			tp, err := k.Thumbprint(crypto.SHA256)
			if err != nil {
				return "", broker.FieldErrorf("jwk", "Key %d cannot be thumbprinted.", i+1)
			}
			k.KeyID = base64.RawURLEncoding.EncodeToString(tp)
		}
		if slices.Contains(kids, k.KeyID) {
			return "", broker.FieldErrorf("jwk", "Key id %q is used twice.", k.KeyID)
		}
		kids = append(kids, k.KeyID)
	}
	out, err := json.Marshal(set)
	if err != nil {
		return "", fmt.Errorf("encode key set: %w", err)
	}
	return string(out), nil
}

func parseJWKS(s string) (*jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	if s == "" {
		return &set, nil
	}
	if err := json.Unmarshal([]byte(s), &set); err != nil {
		return nil, err
	}
	return &set, nil
}
