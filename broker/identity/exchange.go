package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/stint-broker/stint/broker"
)

// jwksRefresh is how long a fetched JWKS is used before it is fetched again;
// an unknown key id forces a fetch at most every jwksMinRefetch.
const (
	jwksRefresh    = 5 * time.Minute
	jwksMinRefetch = 30 * time.Second
)

// TrustedIssuer is an identity provider whose JWTs a token exchange accepts
// as the subject_token: the user an agent acts for. Its keys come from a JWKS
// file read at start, or a JWKS URL fetched and cached.
type TrustedIssuer struct {
	// Issuer is the exact iss of its tokens.
	Issuer string
	// Audience is the aud its tokens must carry for Stint.
	Audience string
	// UserClaim names the claim that identifies the user, such as "sub" or
	// "email"; it becomes the lease's on_behalf_of.
	UserClaim string

	jwksURL string
	client  *http.Client

	mu      sync.Mutex
	keys    *jose.JSONWebKeySet
	fetched time.Time
}

// NewTrustedIssuerFile returns an issuer whose keys are the JWKS in path.
func NewTrustedIssuerFile(issuer, audience, userClaim, path string) (*TrustedIssuer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("trusted issuer %s: %w", issuer, err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(data, &set); err != nil || len(set.Keys) == 0 {
		return nil, fmt.Errorf("trusted issuer %s: %s holds no JSON Web Key Set", issuer, path)
	}
	for _, k := range set.Keys {
		if !k.IsPublic() {
			return nil, fmt.Errorf("trusted issuer %s: %s holds a private key; keep only public keys", issuer, path)
		}
	}
	return newTrustedIssuer(issuer, audience, userClaim, &set, "")
}

// NewTrustedIssuerURL returns an issuer whose keys are fetched from jwksURL
// (https, or http on a loopback address).
func NewTrustedIssuerURL(issuer, audience, userClaim, jwksURL string) (*TrustedIssuer, error) {
	u, err := url.Parse(jwksURL)
	if err != nil || !(u.Scheme == "https" || u.Scheme == "http" && (u.Hostname() == "127.0.0.1" || u.Hostname() == "localhost" || u.Hostname() == "::1")) {
		return nil, fmt.Errorf("trusted issuer %s: jwks_url must be an https URL", issuer)
	}
	return newTrustedIssuer(issuer, audience, userClaim, nil, jwksURL)
}

func newTrustedIssuer(issuer, audience, userClaim string, keys *jose.JSONWebKeySet, jwksURL string) (*TrustedIssuer, error) {
	if issuer == "" || audience == "" {
		return nil, errors.New("a trusted issuer needs an issuer and an audience")
	}
	if userClaim == "" {
		userClaim = "sub"
	}
	return &TrustedIssuer{Issuer: issuer, Audience: audience, UserClaim: userClaim, keys: keys, jwksURL: jwksURL,
		client: &http.Client{Timeout: 10 * time.Second}}, nil
}

// key returns the issuer's keys matching kid (all of them if kid is empty).
func (t *TrustedIssuer) key(ctx context.Context, kid string, now time.Time) ([]jose.JSONWebKey, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	match := func() []jose.JSONWebKey {
		if t.keys == nil {
			return nil
		}
		if kid == "" {
			return t.keys.Keys
		}
		return t.keys.Key(kid)
	}
	if t.jwksURL == "" {
		return match(), nil
	}
	stale := now.Sub(t.fetched) > jwksRefresh
	if keys := match(); len(keys) > 0 && !stale {
		return keys, nil
	}
	if !stale && now.Sub(t.fetched) < jwksMinRefetch {
		return nil, nil
	}
	set, err := t.fetch(ctx)
	if err != nil {
		if keys := match(); len(keys) > 0 {
			return keys, nil // keep using what we have while the IdP is down
		}
		return nil, err
	}
	t.keys, t.fetched = set, now
	return match(), nil
}

func (t *TrustedIssuer) fetch(ctx context.Context) (*jose.JSONWebKeySet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.jwksURL, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks: %w", err)
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks of %s: %w", t.Issuer, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch jwks of %s: status %d", t.Issuer, resp.StatusCode)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("decode jwks of %s: %w", t.Issuer, err)
	}
	return &set, nil
}

// verifySubjectToken checks a token exchange's subject_token (RFC 8693
// §2.1): a JWT from a trusted issuer, signed with one of its keys, for
// Stint's audience, unexpired; if it carries may_act, that must name the
// agent. It returns the user and when the token expires.
func (s *Service) verifySubjectToken(ctx context.Context, agent *broker.Agent, req broker.TokenRequest, now time.Time) (string, time.Time, error) {
	bad := func(format string, args ...any) error {
		return broker.FieldErrorf("subject_token", "Invalid subject_token: "+format, args...)
	}
	switch {
	case req.SubjectToken == "":
		return "", time.Time{}, broker.FieldErrorf("subject_token", "subject_token is required for a token exchange.")
	case req.SubjectTokenType != broker.TokenTypeJWT && req.SubjectTokenType != broker.TokenTypeIDToken && req.SubjectTokenType != broker.TokenTypeAccessToken:
		return "", time.Time{}, broker.FieldErrorf("subject_token_type", "subject_token_type must be %s, %s or %s (a JWT).",
			broker.TokenTypeJWT, broker.TokenTypeIDToken, broker.TokenTypeAccessToken)
	case req.ActorToken != "":
		return "", time.Time{}, broker.FieldErrorf("actor_token", "actor_token is not supported: the authenticated client is the actor.")
	case req.RequestedTokenType != "" && req.RequestedTokenType != broker.TokenTypeAccessToken:
		return "", time.Time{}, broker.FieldErrorf("requested_token_type", "Stint issues only %s.", broker.TokenTypeAccessToken)
	}
	tok, err := jwt.ParseSigned(req.SubjectToken, assertionAlgs)
	if err != nil {
		return "", time.Time{}, bad("it must be a JWT signed with an asymmetric algorithm.")
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return "", time.Time{}, bad("its claims cannot be read.")
	}
	var ti *TrustedIssuer
	for _, t := range s.OAuth.TrustedIssuers {
		if t.Issuer == unverified.Issuer {
			ti = t
		}
	}
	if ti == nil {
		return "", time.Time{}, bad("issuer %q is not trusted (oauth.trusted_issuers).", unverified.Issuer)
	}
	keys, err := ti.key(ctx, tok.Headers[0].KeyID, now)
	if err != nil {
		s.Logger.Warn("trusted issuer keys unavailable", "issuer", ti.Issuer, "err", err)
		return "", time.Time{}, broker.Errorf(broker.EUNAVAILABLE, "The keys of issuer %s cannot be fetched; try again shortly.", ti.Issuer)
	}
	var (
		std jwt.Claims
		raw map[string]any
		ok  bool
	)
	for _, k := range keys {
		if err := tok.Claims(k.Key, &std, &raw); err == nil {
			ok = true
			break
		}
	}
	if !ok {
		return "", time.Time{}, bad("the signature does not verify with the issuer's keys.")
	}
	if std.Expiry == nil {
		return "", time.Time{}, bad("exp is required.")
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: ti.Issuer, AnyAudience: jwt.Audience{ti.Audience}, Time: now}, clockSkew); err != nil {
		switch {
		case errors.Is(err, jwt.ErrExpired):
			return "", time.Time{}, bad("it has expired.")
		case errors.Is(err, jwt.ErrInvalidAudience):
			return "", time.Time{}, bad("aud must include %s.", ti.Audience)
		}
		return "", time.Time{}, bad("%s", err.Error())
	}
	user, _ := raw[ti.UserClaim].(string)
	if user == "" || len(user) > 254 {
		return "", time.Time{}, bad("claim %q must name the user.", ti.UserClaim)
	}
	if ma, present := raw["may_act"]; present {
		m, _ := ma.(map[string]any)
		if sub, _ := m["sub"].(string); sub != agent.Name {
			return "", time.Time{}, bad("its may_act claim does not name agent %s.", agent.Name)
		}
	}
	return user, std.Expiry.Time(), nil
}
