package console

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/labstack/echo/v4"
	"golang.org/x/oauth2"

	"github.com/stint-broker/stint/broker"
)

// OIDC is the console's single sign-on: the authorization code flow with
// PKCE (S256), a state and a nonce. The provider vouches for an email
// address; the console user with that address (managed with "stint users
// add NAME --role ROLE --email E") is the one logged in, so roles and
// disabling stay in Stint. Unknown, ambiguous or disabled addresses and
// unverified emails are refused.
type OIDC struct {
	// Issuer is the provider's issuer URL; its discovery document is
	// fetched from Issuer + "/.well-known/openid-configuration" on first use.
	Issuer       string
	ClientID     string
	ClientSecret string
	// RedirectURL is this console's callback as registered with the
	// provider: https://HOST/console/login/oidc/callback.
	RedirectURL string
	// Scopes asked for; DefaultOIDCScopes when empty.
	Scopes []string
	// HTTPClient talks to the provider; http.DefaultClient with a 10s
	// timeout when nil.
	HTTPClient *http.Client

	mu       sync.Mutex
	provider *oidc.Provider
	key      []byte // signs the flow cookie (flowKey)
}

// DefaultOIDCScopes are the scopes asked for when none are configured.
var DefaultOIDCScopes = []string{oidc.ScopeOpenID, "email", "profile"}

// oidcFlowCookie carries one login's state, nonce, PKCE verifier and next
// path from the redirect to the callback, HMAC-signed; it lives ten minutes.
const (
	oidcFlowCookie = "stint_oidc"
	oidcFlowPath   = consoleLoginPath + "/oidc"
	oidcFlowTTL    = 10 * time.Minute
)

// oidcFlow is the signed content of the flow cookie.
type oidcFlow struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Next     string `json:"x"`
	Expires  int64  `json:"e"`
}

func (o *OIDC) client() *http.Client {
	if o.HTTPClient != nil {
		return o.HTTPClient
	}
	return &http.Client{Timeout: 10 * time.Second}
}

// setup discovers the provider once (retrying on later calls if discovery
// failed) and returns the OAuth 2 configuration.
func (o *OIDC) setup(ctx context.Context) (*oidc.Provider, *oauth2.Config, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.provider == nil {
		p, err := oidc.NewProvider(oidc.ClientContext(ctx, o.client()), o.Issuer)
		if err != nil {
			return nil, nil, fmt.Errorf("oidc: discover %s: %w", o.Issuer, err)
		}
		o.provider = p
	}
	scopes := o.Scopes
	if len(scopes) == 0 {
		scopes = DefaultOIDCScopes
	}
	return o.provider, &oauth2.Config{
		ClientID: o.ClientID, ClientSecret: o.ClientSecret, RedirectURL: o.RedirectURL,
		Endpoint: o.provider.Endpoint(), Scopes: scopes,
	}, nil
}

// flowKey returns the key that signs the flow cookie: derived from the
// client secret, so that every replica of one console has the same key and
// a login started on one completes on another behind a load balancer
// (rotating the secret only ends the logins in flight). Without a client
// secret it is random, for this process alone.
func (o *OIDC) flowKey() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.key == nil {
		if o.ClientSecret == "" {
			o.key = []byte(randomToken())
		} else {
			m := hmac.New(sha256.New, []byte(o.ClientSecret))
			m.Write([]byte("stint oidc flow cookie key v1"))
			o.key = m.Sum(nil)
		}
	}
	return o.key
}

func (o *OIDC) sign(b []byte) string {
	m := hmac.New(sha256.New, o.flowKey())
	m.Write([]byte("stint oidc flow v1\x00"))
	m.Write(b)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (o *OIDC) encodeFlow(f oidcFlow) string {
	b, _ := json.Marshal(f)
	return base64.RawURLEncoding.EncodeToString(b) + "." + o.sign(b)
}

// decodeFlow returns the flow in the cookie value if its signature is good
// and it has not expired.
func (o *OIDC) decodeFlow(v string, now time.Time) (*oidcFlow, bool) {
	body, sig, ok := strings.Cut(v, ".")
	if !ok || len(v) > 2048 {
		return nil, false
	}
	b, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		return nil, false
	}
	if !hmac.Equal([]byte(sig), []byte(o.sign(b))) {
		return nil, false
	}
	var f oidcFlow
	if json.Unmarshal(b, &f) != nil || now.Unix() > f.Expires {
		return nil, false
	}
	return &f, true
}

// handleConsoleOIDCStart handles "GET /console/login/oidc": it sends the
// browser to the provider with a fresh state, nonce and PKCE challenge.
func (con *Console) handleConsoleOIDCStart(c echo.Context) error {
	o := con.OIDC
	next := safeNext(c.QueryParam("next"))
	_, cfg, err := o.setup(c.Request().Context())
	if err != nil {
		con.host.Logger.ErrorContext(c.Request().Context(), "console sso unavailable", "err", err)
		return con.oidcFail(c, next, "provider unavailable", "", "Single sign-on is unavailable: the identity provider could not be reached. Try again later or log in with a password.")
	}
	f := oidcFlow{State: randomToken(), Nonce: randomToken(), Verifier: oauth2.GenerateVerifier(),
		Next: next, Expires: con.host.Now().Add(oidcFlowTTL).Unix()}
	con.setCookie(c, oidcFlowCookie, o.encodeFlow(f), oidcFlowPath, int(oidcFlowTTL/time.Second))
	return c.Redirect(http.StatusSeeOther, cfg.AuthCodeURL(f.State, oidc.Nonce(f.Nonce), oauth2.S256ChallengeOption(f.Verifier)))
}

// oidcClaims are the ID token claims the console reads.
type oidcClaims struct {
	Email         string `json:"email"`
	EmailVerified any    `json:"email_verified"`
}

// verified reports whether email_verified is true (some providers send the
// string "true").
func (c *oidcClaims) verified() bool {
	switch v := c.EmailVerified.(type) {
	case bool:
		return v
	case string:
		return v == "true"
	}
	return false
}

// handleConsoleOIDCCallback handles "GET /console/login/oidc/callback": it
// checks the state, exchanges the code (with the PKCE verifier), verifies
// the ID token (signature, issuer, audience, expiry, nonce), and logs in the
// active console user whose email the token carries.
func (con *Console) handleConsoleOIDCCallback(c echo.Context) error {
	o := con.OIDC
	ctx := c.Request().Context()
	// The flow cookie is single-use.
	con.setCookie(c, oidcFlowCookie, "", oidcFlowPath, -1)
	var flow *oidcFlow
	if ck, err := c.Cookie(oidcFlowCookie); err == nil {
		flow, _ = o.decodeFlow(ck.Value, con.host.Now())
	}
	if flow == nil {
		return con.oidcFail(c, safeNext(""), "missing or expired sign-in state", "", "The sign-in took too long or was started elsewhere: try again.")
	}
	state := c.QueryParam("state")
	if state == "" || subtle.ConstantTimeCompare([]byte(state), []byte(flow.State)) != 1 {
		return con.oidcFail(c, flow.Next, "state mismatch", "", "The sign-in did not match the one this browser started: try again.")
	}
	if e := c.QueryParam("error"); e != "" {
		return con.oidcFail(c, flow.Next, "provider error: "+limitText(e, 64), "", "The identity provider did not sign you in: try again.")
	}
	code := c.QueryParam("code")
	if code == "" {
		return con.oidcFail(c, flow.Next, "no code", "", "The identity provider sent no authorization code: try again.")
	}
	provider, cfg, err := o.setup(ctx)
	if err != nil {
		con.host.Logger.ErrorContext(ctx, "console sso unavailable", "err", err)
		return con.oidcFail(c, flow.Next, "provider unavailable", "", "Single sign-on is unavailable: the identity provider could not be reached. Try again later or log in with a password.")
	}
	pctx := oidc.ClientContext(ctx, o.client())
	tok, err := cfg.Exchange(pctx, code, oauth2.VerifierOption(flow.Verifier))
	if err != nil {
		con.host.Logger.WarnContext(ctx, "console sso code exchange failed", "err", exchangeError(err))
		return con.oidcFail(c, flow.Next, "code exchange failed", "", "The identity provider refused the sign-in: try again.")
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return con.oidcFail(c, flow.Next, "no id_token", "", "The identity provider sent no ID token.")
	}
	idt, err := provider.VerifierContext(pctx, &oidc.Config{ClientID: o.ClientID, Now: con.host.Now}).Verify(pctx, raw)
	if err != nil {
		con.host.Logger.WarnContext(ctx, "console sso id token refused", "err", err)
		return con.oidcFail(c, flow.Next, "id token invalid", "", "The identity provider's ID token was not valid for this console.")
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(flow.Nonce)) != 1 {
		return con.oidcFail(c, flow.Next, "nonce mismatch", "", "The identity provider's ID token was not for this sign-in: try again.")
	}
	var cl oidcClaims
	if err := idt.Claims(&cl); err != nil {
		return con.oidcFail(c, flow.Next, "unreadable claims", "", "The identity provider's ID token was not valid for this console.")
	}
	email := strings.TrimSpace(cl.Email)
	if email == "" {
		return con.oidcFail(c, flow.Next, "no email claim", "", "The identity provider sent no email address: ask for the email scope.")
	}
	if !cl.verified() {
		return con.oidcFail(c, flow.Next, "email not verified", email, "Your email address is not verified with the identity provider.")
	}
	u, err := con.Users.UserByEmail(ctx, email)
	var failed *broker.LoginFailure
	if errors.As(err, &failed) {
		return con.oidcFail(c, flow.Next, failed.Reason, email, "No active console user has your email address: ask an admin to add you with \"stint users add\".")
	} else if err != nil {
		return err
	}
	return con.startSession(c, u, "oidc", flow.Next)
}

// exchangeError describes a failed code exchange without the provider's
// response body.
func exchangeError(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if re.ErrorCode != "" {
			return "token endpoint: " + re.ErrorCode
		}
		if re.Response != nil {
			return "token endpoint: " + re.Response.Status
		}
	}
	return err.Error()
}

// oidcFail records a failed SSO login and shows the login page with msg.
func (con *Console) oidcFail(c echo.Context, next, reason, email, msg string) error {
	extra := map[string]any{"method": "oidc"}
	if email != "" {
		extra["email"] = limitText(email, 254)
	}
	con.host.LoginFailed(c, reason, extra)
	return con.render(c, http.StatusUnauthorized, "login", "", loginPage{Next: next, Error: msg, SSO: true})
}

// Format implements fmt.Formatter: an OIDC configuration renders as its
// issuer and client id, never its client secret or cookie key.
func (o *OIDC) Format(f fmt.State, verb rune) {
	if o == nil {
		fmt.Fprint(f, "<nil>")
		return
	}
	fmt.Fprintf(f, "oidc issuer %s client %s", o.Issuer, o.ClientID)
}

// LogValue implements slog.LogValuer without the client secret or cookie
// key.
func (o *OIDC) LogValue() slog.Value {
	if o == nil {
		return slog.StringValue("<nil>")
	}
	return slog.GroupValue(slog.String("issuer", o.Issuer), slog.String("client_id", o.ClientID),
		slog.String("client_secret", broker.RedactString(o.ClientSecret)), slog.String("redirect_url", o.RedirectURL))
}
