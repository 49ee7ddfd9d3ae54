package identity

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
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
	// "email". The lease's on_behalf_of is the user's verified email when
	// the token carries one (email with email_verified true), and this
	// claim's value otherwise. With UserClaim "email", a token whose
	// email_verified is not true is refused.
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

// subjectUser is the user a verified subject token names.
type subjectUser struct {
	// ID is the value of the issuer's user claim.
	ID string
	// Email is the user's email, lower-cased, if the token carries it with
	// email_verified true; empty otherwise.
	Email string
	// Expiry is when the user token expires.
	Expiry time.Time
}

// OnBehalfOf is how leases record the user: by verified email, which is how
// approvers are known, or else by the issuer's identifier for the user.
func (u subjectUser) OnBehalfOf() string {
	if u.Email != "" {
		return u.Email
	}
	return u.ID
}

// Delegation lets an agent exchange the tokens of some users without a
// may_act claim in them naming the agent (oauth.delegations).
type Delegation struct {
	// Agent is the agent's name.
	Agent string
	// Issuer limits the delegation to one trusted issuer's users; empty
	// means any trusted issuer.
	Issuer string
	// Users are who the agent may act for: a verified email
	// ("alice@example.com"), every verified email of a domain
	// ("*@example.com"), a value of the issuer's user claim (such as a
	// sub), or "*" for every user of the trusted issuers.
	Users []string
}

// Validate checks a delegation; the error names its fields as the
// configuration spells them.
func (d Delegation) Validate() error {
	switch {
	case d.Agent == "":
		return errors.New("agent is required")
	case len(d.Users) == 0:
		return fmt.Errorf("users is required: who agent %s may act for (an email, *@domain, a user id, or *)", d.Agent)
	}
	for _, u := range d.Users {
		rest, wildcard := strings.CutPrefix(u, "*@")
		switch {
		case u == "*":
		case wildcard && rest != "" && !strings.ContainsAny(rest, "*@ "):
		case u != "" && !strings.Contains(u, "*"):
		default:
			return fmt.Errorf("user %q: use an email, *@domain, a user id, or *", u)
		}
	}
	return nil
}

// allows reports whether d lets agent act for user of issuer.
func (d Delegation) allows(agent, issuer string, user subjectUser) bool {
	if d.Agent != agent || d.Issuer != "" && d.Issuer != issuer {
		return false
	}
	for _, p := range d.Users {
		switch domain, wildcard := strings.CutPrefix(p, "*@"); {
		case p == "*":
			return true
		case wildcard:
			// Only a verified address proves the domain.
			if user.Email != "" && strings.HasSuffix(user.Email, "@"+strings.ToLower(domain)) {
				return true
			}
		case user.Email != "" && strings.EqualFold(p, user.Email), p == user.ID:
			return true
		}
	}
	return false
}

// verifiedEmail returns the token's email, lower-cased, if email_verified
// is true (a JSON boolean, or the string "true" some providers send).
func verifiedEmail(claims map[string]any) string {
	email, _ := claims["email"].(string)
	switch v := claims["email_verified"].(type) {
	case bool:
		if !v {
			return ""
		}
	case string:
		if !strings.EqualFold(v, "true") {
			return ""
		}
	default:
		return ""
	}
	if !strings.Contains(email, "@") || len(email) > 254 {
		return ""
	}
	return strings.ToLower(email)
}

// verifySubjectToken checks a token exchange's subject_token (RFC 8693
// §2.1): a JWT from a trusted issuer, signed with one of its keys, for
// Stint's audience, unexpired. The agent must be allowed to act for the
// user: the token's may_act claim names it (RFC 8693 §4.4), or, without
// may_act, a configured Delegation allows it. A user token is exchanged
// once: its issuer and jti (its SHA-256 when it has no jti) are recorded in
// the store until it expires.
func (s *Service) verifySubjectToken(ctx context.Context, agent *broker.Agent, req broker.TokenRequest, now time.Time) (subjectUser, error) {
	bad := func(format string, args ...any) error {
		return broker.FieldErrorf("subject_token", "Invalid subject_token: "+format, args...)
	}
	switch {
	case req.SubjectToken == "":
		return subjectUser{}, broker.FieldErrorf("subject_token", "subject_token is required for a token exchange.")
	case req.SubjectTokenType != broker.TokenTypeJWT && req.SubjectTokenType != broker.TokenTypeIDToken && req.SubjectTokenType != broker.TokenTypeAccessToken:
		return subjectUser{}, broker.FieldErrorf("subject_token_type", "subject_token_type must be %s, %s or %s (a JWT).",
			broker.TokenTypeJWT, broker.TokenTypeIDToken, broker.TokenTypeAccessToken)
	case req.ActorToken != "":
		return subjectUser{}, broker.FieldErrorf("actor_token", "actor_token is not supported: the authenticated client is the actor.")
	case req.RequestedTokenType != "" && req.RequestedTokenType != broker.TokenTypeAccessToken:
		return subjectUser{}, broker.FieldErrorf("requested_token_type", "Stint issues only %s.", broker.TokenTypeAccessToken)
	}
	tok, err := jwt.ParseSigned(req.SubjectToken, assertionAlgs)
	if err != nil {
		return subjectUser{}, bad("it must be a JWT signed with an asymmetric algorithm.")
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return subjectUser{}, bad("its claims cannot be read.")
	}
	var ti *TrustedIssuer
	for _, t := range s.OAuth.TrustedIssuers {
		if t.Issuer == unverified.Issuer {
			ti = t
		}
	}
	if ti == nil {
		return subjectUser{}, bad("issuer %q is not trusted (oauth.trusted_issuers).", unverified.Issuer)
	}
	keys, err := ti.key(ctx, tok.Headers[0].KeyID, now)
	if err != nil {
		s.Logger.Warn("trusted issuer keys unavailable", "issuer", ti.Issuer, "err", err)
		return subjectUser{}, broker.Errorf(broker.EUNAVAILABLE, "The keys of issuer %s cannot be fetched; try again shortly.", ti.Issuer)
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
		return subjectUser{}, bad("the signature does not verify with the issuer's keys.")
	}
	if std.Expiry == nil {
		return subjectUser{}, bad("exp is required.")
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: ti.Issuer, AnyAudience: jwt.Audience{ti.Audience}, Time: now}, clockSkew); err != nil {
		switch {
		case errors.Is(err, jwt.ErrExpired):
			return subjectUser{}, bad("it has expired.")
		case errors.Is(err, jwt.ErrInvalidAudience):
			return subjectUser{}, bad("aud must include %s.", ti.Audience)
		}
		return subjectUser{}, bad("%s", err.Error())
	}
	id, _ := raw[ti.UserClaim].(string)
	if id == "" || len(id) > 254 {
		return subjectUser{}, bad("claim %q must name the user.", ti.UserClaim)
	}
	user := subjectUser{ID: id, Email: verifiedEmail(raw), Expiry: std.Expiry.Time()}
	if ti.UserClaim == "email" && !strings.EqualFold(user.Email, id) {
		// An address the provider has not verified may be anyone's:
		// it would let a user pass for an approver, or hide from one.
		return subjectUser{}, bad("the user is named by claim email, but email_verified is not true.")
	}

	if ma, present := raw["may_act"]; present {
		m, _ := ma.(map[string]any)
		sub, _ := m["sub"].(string)
		iss, hasIss := m["iss"]
		if sub != agent.Name || hasIss && iss != s.OAuth.Issuer {
			return subjectUser{}, bad("its may_act claim does not name agent %s.", agent.Name)
		}
	} else if !slices.ContainsFunc(s.OAuth.Delegations, func(d Delegation) bool { return d.allows(agent.Name, ti.Issuer, user) }) {
		return subjectUser{}, broker.FieldErrorf("grant",
			"Agent %s may not act for %s: the user token has no may_act claim naming the agent, and no oauth.delegations entry allows it.",
			agent.Name, user.OnBehalfOf())
	}

	// Once only. The token is accepted until exp plus the clock skew, so
	// it is remembered that long.
	jti := std.ID
	if jti == "" || len(jti) > 256 {
		sum := sha256.Sum256([]byte(req.SubjectToken))
		jti = "sha256:" + hex.EncodeToString(sum[:])
	}
	if s.Identity == nil {
		return subjectUser{}, errors.New("identity store is not configured")
	}
	if err := s.Identity.UseSubjectToken(ctx, ti.Issuer, jti, user.Expiry.Add(clockSkew), now); broker.ErrorCode(err) == broker.ECONFLICT {
		return subjectUser{}, broker.FieldErrorf("grant", "This user token was already exchanged; each is exchanged once: get a fresh one from %s.", ti.Issuer)
	} else if err != nil {
		return subjectUser{}, fmt.Errorf("record exchanged user token: %w", err)
	}
	return user, nil
}
