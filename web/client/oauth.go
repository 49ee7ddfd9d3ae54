package client

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// clientAssertionType is the client_assertion_type of RFC 7523 §2.2.
const clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// tokenSlack is how long before its expiry a cached access token is
// replaced.
const tokenSlack = 30 * time.Second

// WithClientSecret authenticates with OAuth 2.0 client credentials: the
// client sends clientID (the agent's name) and secret to the server's token
// endpoint with HTTP Basic (client_secret_basic) and uses the access token
// it gets as its bearer token.
func WithClientSecret(clientID, secret string) Option {
	return func(s *settings) {
		if clientID == "" || secret == "" {
			s.errs = append(s.errs, errors.New("client: WithClientSecret needs a client id and a secret"))
			return
		}
		s.setAuth(&oauthSource{clientID: clientID, secret: secret, now: time.Now})
	}
}

// WithPrivateKeyJWT authenticates with OAuth 2.0 client credentials and
// private_key_jwt (RFC 7523): each token request carries a one-minute client
// assertion signed with key, whose public half is registered with the
// agent. key is an *ecdsa.PrivateKey (P-256: ES256), an *rsa.PrivateKey
// (RS256) or an ed25519.PrivateKey (EdDSA). The assertion's kid is the
// key's RFC 7638 thumbprint.
func WithPrivateKeyJWT(clientID string, key crypto.Signer) Option {
	return func(s *settings) {
		alg, err := signingAlgorithm(key)
		if clientID == "" || err != nil {
			s.errs = append(s.errs, fmt.Errorf("client: WithPrivateKeyJWT: %w", errors.Join(err, errIf(clientID == "", "no client id"))))
			return
		}
		s.setAuth(&oauthSource{clientID: clientID, key: key, alg: alg, now: time.Now})
	}
}

func errIf(cond bool, msg string) error {
	if cond {
		return errors.New(msg)
	}
	return nil
}

// ReadPrivateKey reads a PEM private key (SEC 1 EC, PKCS #1 RSA or PKCS #8)
// for WithPrivateKeyJWT.
func ReadPrivateKey(file string) (crypto.Signer, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read private key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s holds no PEM key", file)
	}
	if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: not a signing key", file)
	}
	return signer, nil
}

func signingAlgorithm(key crypto.Signer) (jose.SignatureAlgorithm, error) {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return "", errors.New("ECDSA keys must be P-256 (ES256)")
		}
		return jose.ES256, nil
	case *rsa.PrivateKey:
		return jose.RS256, nil
	case ed25519.PrivateKey:
		return jose.EdDSA, nil
	case nil:
		return "", errors.New("no key")
	}
	return "", fmt.Errorf("unsupported key type %T", key)
}

// oauthSource gets access tokens from the token endpoint and caches one.
type oauthSource struct {
	c        *Client
	clientID string
	secret   string
	key      crypto.Signer
	alg      jose.SignatureAlgorithm
	now      func() time.Time

	mu       sync.Mutex
	endpoint string
	token    string
	expires  time.Time
}

func (o *oauthSource) describe() string {
	if o.key != nil {
		return "oauth private_key_jwt as " + o.clientID
	}
	return "oauth client_secret as " + o.clientID
}

func (o *oauthSource) refresh() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	had := o.token != ""
	o.token = ""
	return had
}

func (o *oauthSource) authorize(ctx context.Context, req *http.Request) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.token == "" || !o.now().Add(tokenSlack).Before(o.expires) {
		if err := o.fetch(ctx); err != nil {
			return err
		}
	}
	req.Header.Set("Authorization", "Bearer "+o.token)
	return nil
}

// Token returns an access token from the token endpoint (cached while it
// is valid), for clients authenticated with OAuth client credentials.
func (c *Client) Token(ctx context.Context) (token string, expires time.Time, err error) {
	o, ok := c.auth.(*oauthSource)
	if !ok {
		return "", time.Time{}, errors.New("client: Token needs WithClientSecret or WithPrivateKeyJWT")
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String(), nil)
	if err := o.authorize(ctx, req); err != nil {
		return "", time.Time{}, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.token, o.expires, nil
}

// fetch asks the token endpoint for a new token; o.mu is held.
func (o *oauthSource) fetch(ctx context.Context) error {
	if o.endpoint == "" {
		ep, err := o.discover(ctx)
		if err != nil {
			return err
		}
		o.endpoint = ep
	}
	form := url.Values{"grant_type": {"client_credentials"}}
	if o.key != nil {
		assertion, err := o.assertion()
		if err != nil {
			return err
		}
		form.Set("client_assertion_type", clientAssertionType)
		form.Set("client_assertion", assertion)
		form.Set("client_id", o.clientID)
	}
	ctx, cancel := context.WithTimeout(ctx, o.c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("build token request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", o.c.userAgent)
	if o.key == nil {
		// RFC 6749 §2.3.1: both are form-encoded before Basic encoding.
		req.SetBasicAuth(url.QueryEscape(o.clientID), url.QueryEscape(o.secret))
	}
	var body struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := o.c.raw(req, &body); err != nil {
		return err
	}
	if body.AccessToken == "" || !strings.EqualFold(body.TokenType, "Bearer") && !strings.EqualFold(body.TokenType, "DPoP") && body.TokenType != "" {
		return fmt.Errorf("token endpoint %s answered without a bearer access token", o.endpoint)
	}
	o.token = body.AccessToken
	o.expires = o.now().Add(time.Duration(body.ExpiresIn) * time.Second)
	return nil
}

// discover reads the token endpoint from the server's authorization server
// metadata (RFC 8414).
func (o *oauthSource) discover(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, o.c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.c.base.String()+"/.well-known/oauth-authorization-server", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/json")
	var md struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := o.c.raw(req, &md); err != nil {
		if e, ok := AsError(err); ok && e.Status == http.StatusNotFound {
			e.Message = "The server has no OAuth token endpoint (oauth.enabled is off)."
		}
		return "", err
	}
	if md.TokenEndpoint == "" {
		return "", fmt.Errorf("%s: OAuth metadata without a token_endpoint", o.c.base)
	}
	return md.TokenEndpoint, nil
}

// assertion signs a one-minute RFC 7523 client assertion for the token
// endpoint.
func (o *oauthSource) assertion() (string, error) {
	jwk := jose.JSONWebKey{Key: o.key.Public()}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("key thumbprint: %w", err)
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: o.alg, Key: jose.JSONWebKey{Key: o.key, KeyID: base64.RawURLEncoding.EncodeToString(tp)}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("client assertion signer: %w", err)
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	now := o.now()
	return jwt.Signed(sig).Claims(jwt.Claims{
		Issuer: o.clientID, Subject: o.clientID, Audience: jwt.Audience{o.endpoint}, ID: hex.EncodeToString(jti[:]),
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute)),
	}).Serialize()
}

// raw sends a prepared request without API authentication and decodes a
// 2xx JSON answer into out; anything else is an *Error.
func (c *Client) raw(req *http.Request, out any) error {
	resp, err := c.hc.Do(req)
	if err != nil {
		return &UnreachableError{URL: c.base.String(), Err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("read %s: %w", req.URL.Path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return newError(resp, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode %s: %w", req.URL.Path, err)
	}
	return nil
}
