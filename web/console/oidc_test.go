package console_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/mock"
	"github.com/stint-broker/stint/broker/sqlite"
	"github.com/stint-broker/stint/broker/users"
	"github.com/stint-broker/stint/web"
	"github.com/stint-broker/stint/web/console"
)

// testProvider is an OpenID provider: discovery, JWKS (an ECDSA P-256 key
// made here), /authorize that sends the browser straight back with a code,
// and /token that checks the PKCE verifier and returns an ID token signed
// with the key. Claims is the ID token's claims; mutate edits them per test.
type testProvider struct {
	URL      string
	ClientID string
	key      *ecdsa.PrivateKey

	mu     sync.Mutex
	codes  map[string]pendingCode
	mutate func(claims map[string]any)
	email  string
}

type pendingCode struct {
	nonce, challenge, redirect string
}

func newTestProvider(t *testing.T) *testProvider {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := &testProvider{ClientID: "stint-console", key: key, codes: map[string]pendingCode{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"issuer": p.URL, "authorization_endpoint": p.URL + "/authorize", "token_endpoint": p.URL + "/token",
			"jwks_uri": p.URL + "/jwks", "response_types_supported": []string{"code"},
			"subject_types_supported": []string{"public"}, "id_token_signing_alg_values_supported": []string{"ES256"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	})
	mux.HandleFunc("GET /authorize", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("client_id") != p.ClientID || q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" ||
			q.Get("code_challenge") == "" || q.Get("nonce") == "" || q.Get("state") == "" || !strings.Contains(q.Get("scope"), "openid") {
			http.Error(w, "bad authorize request: "+r.URL.RawQuery, http.StatusBadRequest)
			return
		}
		code := rand.Text()
		p.mu.Lock()
		p.codes[code] = pendingCode{nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri")}
		p.mu.Unlock()
		http.Redirect(w, r, q.Get("redirect_uri")+"?code="+code+"&state="+url.QueryEscape(q.Get("state")), http.StatusFound)
	})
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		id, secret, _ := r.BasicAuth()
		if id == "" {
			id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		p.mu.Lock()
		pc, ok := p.codes[r.PostForm.Get("code")]
		delete(p.codes, r.PostForm.Get("code"))
		email, mutate := p.email, p.mutate
		p.mu.Unlock()
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		if !ok || id != p.ClientID || secret != "s3cret" || pc.redirect != r.PostForm.Get("redirect_uri") ||
			base64.RawURLEncoding.EncodeToString(sum[:]) != pc.challenge {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"invalid_grant"}`))
			return
		}
		now := time.Now()
		claims := map[string]any{"iss": p.URL, "sub": "u-1", "aud": p.ClientID, "exp": now.Add(5 * time.Minute).Unix(),
			"iat": now.Unix(), "nonce": pc.nonce, "email": email, "email_verified": true}
		if mutate != nil {
			mutate(claims)
		}
		payload, _ := json.Marshal(claims)
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		jws, err := signer.Sign(payload)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		raw, _ := jws.CompactSerialize()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 300, "id_token": raw})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// set chooses the email and claim changes of the next ID token.
func (p *testProvider) set(email string, mutate func(map[string]any)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.email, p.mutate = email, mutate
}

// newOIDCConsole is a console with SSO through p on a real SQLite store with
// users sso-admin (sso@example.com), sso-rev (rev@example.com, reviewer) and
// gone (gone@example.com, disabled).
func newOIDCConsole(t *testing.T, p *testProvider) (string, *sqlite.DB) {
	t.Helper()
	db, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "stint.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx := broker.NewContextWithActor(context.Background(), broker.Actor{Kind: broker.ActorAdmin, Name: "test"})
	for _, u := range []*broker.User{
		{Name: "sso-admin", Role: broker.RoleAdmin, Email: "sso@example.com", PasswordHash: "x"},
		{Name: "sso-rev", Role: broker.RoleReviewer, Email: "Rev@Example.com", PasswordHash: "x"},
		{Name: "gone", Role: broker.RoleAdmin, Email: "gone@example.com", PasswordHash: "x"},
	} {
		if err := db.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		if u.Name == "gone" {
			disabled := broker.UserDisabled
			if _, err := db.UpdateUser(ctx, u.ID, broker.UserUpdate{State: &disabled}); err != nil {
				t.Fatal(err)
			}
		}
	}
	s := web.NewServer()
	s.Agents = &mock.AgentService{}
	s.Leases = &mock.LeaseService{}
	s.Audit = db
	s.Metrics = web.NewMetrics(db, time.Now)
	oidcCfg := &console.OIDC{Issuer: p.URL, ClientID: p.ClientID, ClientSecret: "s3cret"}
	s.Console = &console.Console{Reader: db, Users: users.NewService(db), OIDC: oidcCfg}
	s.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	oidcCfg.RedirectURL = srv.URL + "/console/login/oidc/callback"
	return srv.URL, db
}

// ssoLogin walks the browser through the flow: the console's redirect, the
// provider's authorize redirect, and the callback. It returns the callback's
// response and body.
func ssoLogin(t *testing.T, hc *http.Client, base, next string, tamper func(callback *url.URL)) (*http.Response, string) {
	t.Helper()
	resp, err := hc.Get(base + "/console/login/oidc?next=" + url.QueryEscape(next))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("GET /console/login/oidc = %d", resp.StatusCode)
	}
	var flow *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "stint_oidc" {
			flow = c
		}
	}
	if flow == nil || !flow.HttpOnly || flow.SameSite != http.SameSiteLaxMode || flow.MaxAge <= 0 || flow.MaxAge > 600 {
		t.Fatalf("flow cookie = %+v", flow)
	}
	resp, err = hc.Get(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("provider authorize = %d %s", resp.StatusCode, b)
	}
	cb, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(cb.String(), base+"/console/login/oidc/callback?") {
		t.Fatalf("provider redirect = %q", resp.Header.Get("Location"))
	}
	if tamper != nil {
		tamper(cb)
	}
	resp, err = hc.Get(cb.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func newJarClient() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func TestConsoleOIDC(t *testing.T) {
	p := newTestProvider(t)
	base, db := newOIDCConsole(t, p)

	t.Run("LoginPageShowsSSO", func(t *testing.T) {
		resp, err := http.Get(base + "/console/login?next=/console/audit")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(body), `href="/console/login/oidc?next=%2fconsole%2faudit"`) || !strings.Contains(string(body), "Sign in with SSO") {
			t.Fatalf("login page lacks the SSO button:\n%s", body)
		}
	})

	t.Run("HappyPath", func(t *testing.T) {
		hc := newJarClient()
		p.set("SSO@example.com", nil)
		resp, body := ssoLogin(t, hc, base, "/console/audit", nil)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/audit" {
			t.Fatalf("callback = %d %q\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
		}
		resp, err := hc.Get(base + "/console/audit")
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "sso-admin") {
			t.Fatalf("audit page after SSO = %d\n%s", resp.StatusCode, page)
		}
		kind := broker.AuditUserLogin
		events, _, err := db.FindAuditEvents(t.Context(), broker.AuditFilter{Kind: &kind})
		if err != nil || len(events) == 0 || events[0].Subject != "sso-admin" || !strings.Contains(string(events[0].Details), `"method":"oidc"`) {
			t.Fatalf("login events = %+v, %v", events, err)
		}
		// The role is Stint's: a reviewer stays a reviewer.
		hc = newJarClient()
		p.set("rev@example.com", nil)
		if resp, body := ssoLogin(t, hc, base, "//evil.example/", nil); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/leases" {
			t.Fatalf("reviewer callback = %d %q\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
		}
		resp, err = hc.PostForm(base+"/console/leases/x/revoke", url.Values{"reason": {"r"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("reviewer via SSO revoking = %d, want 403", resp.StatusCode)
		}
	})

	failures := []struct {
		name, email string
		mutate      func(map[string]any)
		tamper      func(*url.URL)
		reason, msg string
	}{
		{"BadState", "sso@example.com", nil, func(u *url.URL) {
			q := u.Query()
			q.Set("state", "forged")
			u.RawQuery = q.Encode()
		}, "state mismatch", "did not match"},
		{"WrongNonce", "sso@example.com", func(c map[string]any) { c["nonce"] = "other" }, nil, "nonce mismatch", "not for this sign-in"},
		{"WrongAudience", "sso@example.com", func(c map[string]any) { c["aud"] = "another-app" }, nil, "id token invalid", "not valid for this console"},
		{"Expired", "sso@example.com", func(c map[string]any) {
			c["iat"] = time.Now().Add(-2 * time.Hour).Unix()
			c["exp"] = time.Now().Add(-time.Hour).Unix()
		}, nil, "id token invalid", "not valid for this console"},
		{"UnverifiedEmail", "sso@example.com", func(c map[string]any) { c["email_verified"] = false }, nil, "email not verified", "not verified"},
		{"UnknownEmail", "nobody@example.com", nil, nil, "unknown email", "No active console user"},
		{"DisabledUser", "gone@example.com", nil, nil, "user disabled", "No active console user"},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			hc := newJarClient()
			p.set(tc.email, tc.mutate)
			resp, body := ssoLogin(t, hc, base, "/console/audit", tc.tamper)
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, tc.msg) || !strings.Contains(body, "Sign in with SSO") {
				t.Fatalf("callback = %d, want 401 with %q\n%s", resp.StatusCode, tc.msg, body)
			}
			for _, c := range resp.Cookies() {
				if c.Name == "stint_session" && c.MaxAge >= 0 {
					t.Fatalf("failed SSO set a session cookie: %+v", c)
				}
			}
			resp, err := hc.Get(base + "/console/audit")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("after failed SSO, /console/audit = %d, want the login redirect", resp.StatusCode)
			}
			kind := broker.AuditUserLoginFailed
			events, _, err := db.FindAuditEvents(t.Context(), broker.AuditFilter{Kind: &kind})
			if err != nil || len(events) == 0 || !strings.Contains(string(events[0].Details), `"reason":"`+tc.reason+`"`) ||
				!strings.Contains(string(events[0].Details), `"method":"oidc"`) {
				t.Fatalf("last login_failed event = %+v, %v; want reason %q", events, err, tc.reason)
			}
		})
	}

	t.Run("CallbackWithoutFlow", func(t *testing.T) {
		resp, err := newJarClient().Get(base + "/console/login/oidc/callback?code=x&state=y")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "took too long or was started elsewhere") {
			t.Fatalf("callback without flow cookie = %d\n%s", resp.StatusCode, body)
		}
	})
}
