package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/identity"
	"github.com/stint-broker/stint/leases"
	"github.com/stint-broker/stint/leases/vault"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
)

// allMethods lets an agent use every authentication method.
var allMethods = []string{broker.AuthAPIKey, broker.AuthMTLS, broker.AuthClientSecret, broker.AuthPrivateKeyJWT}

// testCA is a certificate authority made for a test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(tb testing.TB, name string) *testCA {
	tb.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

// issue signs a leaf for a fresh key; tweak adjusts the template.
func issueLeaf(tb testing.TB, signerCert *x509.Certificate, signerKey crypto.Signer, tweak func(*x509.Certificate)) tls.Certificate {
	tb.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if tweak != nil {
		tweak(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		tb.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func writePEM(tb testing.TB, path, typ string, der []byte, perm os.FileMode) {
	tb.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), perm); err != nil {
		tb.Fatal(err)
	}
}

func uri(s string) *url.URL { u, _ := url.Parse(s); return u }

// idEnv is a running Stint with TLS, the enrolment CA, a SPIFFE bundle,
// OAuth and a trusted identity provider, plus the test's keys.
type idEnv struct {
	*Main
	base     string
	serverCA *x509.CertPool
	// serverCAFile holds serverCA's certificate as PEM, for other clients.
	serverCAFile string
	spiffeCA     *testCA
	idpKey       *ecdsa.PrivateKey
	done         chan struct{}
	// skew moves the identity service's clock (nanoseconds).
	skew atomic.Int64
}

const testIdP = "https://idp.example.com"

// identityConfig returns cfg with TLS, OAuth, the CA, a SPIFFE bundle for
// example.org and a trusted IdP, all generated in dir, listening on a free
// port that the OAuth issuer names.
func identityConfig(tb testing.TB, cfg Config, dir string) (Config, *idEnv) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	env := &idEnv{base: "https://" + addr, serverCA: x509.NewCertPool()}

	// The server's own certificate.
	sca := newTestCA(tb, "server CA")
	env.serverCA.AddCert(sca.cert)
	env.serverCAFile = filepath.Join(dir, "server-ca.pem")
	writePEM(tb, env.serverCAFile, "CERTIFICATE", sca.cert.Raw, 0o644)
	srv := issueLeaf(tb, sca.cert, sca.key, func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		c.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	})
	keyDER, _ := x509.MarshalPKCS8PrivateKey(srv.PrivateKey)
	writePEM(tb, filepath.Join(dir, "server.pem"), "CERTIFICATE", srv.Certificate[0], 0o644)
	writePEM(tb, filepath.Join(dir, "server.key"), "PRIVATE KEY", keyDER, 0o600)

	// The SPIFFE trust domain example.org.
	env.spiffeCA = newTestCA(tb, "example.org SPIFFE root")
	writePEM(tb, filepath.Join(dir, "bundle.pem"), "CERTIFICATE", env.spiffeCA.cert.Raw, 0o644)

	// An identity provider for token exchange.
	env.idpKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &env.idpKey.PublicKey, KeyID: "idp-1", Algorithm: "ES256", Use: "sig"}}})
	if err := os.WriteFile(filepath.Join(dir, "idp-jwks.json"), jwks, 0o644); err != nil {
		tb.Fatal(err)
	}

	cfg.Listen = addr
	cfg.TLS = TLSConfig{CertFile: filepath.Join(dir, "server.pem"), KeyFile: filepath.Join(dir, "server.key"), ClientCerts: "optional"}
	cfg.OAuth = OAuthConfig{Enabled: true, Issuer: env.base, SigningKeyFile: filepath.Join(dir, "oauth", "signing.key"), TokenTTL: 10 * time.Minute,
		TrustedIssuers: []TrustedIssuerConfig{{Issuer: testIdP, JWKSFile: filepath.Join(dir, "idp-jwks.json"), UserClaim: "email"}}}
	cfg.Identity.CADir = filepath.Join(dir, "ca")
	cfg.Identity.SPIFFE = []SPIFFEBundleConfig{{TrustDomain: "example.org", BundleFile: filepath.Join(dir, "bundle.pem")}}
	if _, err := identity.InitCA(cfg.Identity.CADir, "test enrolment CA", 48*time.Hour, time.Now()); err != nil {
		tb.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	return cfg, env
}

// start opens and runs Main with the given issuer (nil: the configured
// Vault) until the test ends.
func (env *idEnv) start(tb testing.TB, cfg Config, iss leases.Issuer, vaultToken string) {
	tb.Helper()
	m := NewMain(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	m.Issuer = iss
	m.Getenv = func(name string) string {
		switch name {
		case cfg.Vault.TokenEnv:
			return vaultToken
		case cfg.Admin.TokenEnv:
			return testAdminToken
		}
		return ""
	}
	if err := m.Open(context.Background()); err != nil {
		tb.Fatal(err)
	}
	m.Agents.Now = func() time.Time { return time.Now().Add(time.Duration(env.skew.Load())) }
	ctx, cancel := context.WithCancel(context.Background())
	env.Main, env.done = m, make(chan struct{})
	go func() {
		defer close(env.done)
		m.Run(ctx)
	}()
	// Wait by dialling: reading m.HTTP.Addr() while Run opens the listener
	// would race.
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", cfg.Listen); err == nil {
			c.Close()
			break
		}
		if i > 500 {
			tb.Fatal("server did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	tb.Cleanup(func() { cancel(); <-env.done; m.Close() })
}

// client returns an HTTPS client trusting the server, presenting cert if
// given.
func (env *idEnv) client(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: env.serverCA, MinVersion: tls.VersionTLS13}
	if cert != nil {
		// Present the certificate whatever CAs the server asks for, as an
		// attacker would (Go's default would withhold a non-matching one).
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
}

// do sends a request and decodes the JSON answer; a transport error is
// returned (status 0), as a refused handshake is.
func (env *idEnv) do(tb testing.TB, hc *http.Client, method, path, bearer, body string) (int, map[string]any, http.Header, error) {
	tb.Helper()
	req, _ := http.NewRequest(method, env.base+path, strings.NewReader(body))
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	if len(data) > 0 {
		if err := json.Unmarshal(data, &out); err != nil {
			tb.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, data)
		}
	}
	return resp.StatusCode, out, resp.Header, nil
}

// whoami returns the status of GET /v1/whoami and the auth method.
func (env *idEnv) whoami(tb testing.TB, hc *http.Client, bearer string) (int, string) {
	tb.Helper()
	status, body, _, err := env.do(tb, hc, "GET", "/v1/whoami", bearer, "")
	if err != nil {
		return 0, err.Error()
	}
	if status != http.StatusOK {
		return status, fmtAny(body)
	}
	return status, body["auth_method"].(string)
}

func fmtAny(v any) string { b, _ := json.Marshal(v); return string(b) }

// token calls the token endpoint with form values and optional Basic
// credentials.
func (env *idEnv) token(tb testing.TB, hc *http.Client, form url.Values, basicUser, basicPass string) (int, map[string]any, http.Header) {
	tb.Helper()
	req, _ := http.NewRequest("POST", env.base+"/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basicUser != "" {
		req.SetBasicAuth(url.QueryEscape(basicUser), url.QueryEscape(basicPass))
	}
	resp, err := hc.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out, resp.Header
}

// enroll makes a key and CSR and has the CA sign it for agent.
func (env *idEnv) enroll(tb testing.TB, agentID string) tls.Certificate {
	tb.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, key)
	if err != nil {
		tb.Fatal(err)
	}
	rec, certPEM, err := env.Agents.Enroll(adminContext(context.Background()), agentID, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}), 0)
	if err != nil {
		tb.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	leaf, _ := x509.ParseCertificate(block.Bytes)
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != rec.URI || !strings.HasPrefix(rec.URI, "spiffe://stint.local/agent/") {
		tb.Fatalf("enrolled certificate names %v, record %s", leaf.URIs, rec.URI)
	}
	return tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key, Leaf: leaf}
}

// newIDAgent registers an agent allowed every method and returns its id and
// API key.
func (env *idEnv) newIDAgent(tb testing.TB, name string) (string, string) {
	tb.Helper()
	a, key, _, err := env.Agents.CreateAgent(adminContext(context.Background()),
		broker.NewAgent{Name: name, Owner: "owner@example.com", AuthMethods: allMethods})
	if err != nil {
		tb.Fatal(err)
	}
	return a.ID, key
}

// registerJWK gives the agent a fresh ES256 key for private_key_jwt.
func (env *idEnv) registerJWK(tb testing.TB, agentID string) *ecdsa.PrivateKey {
	tb.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := json.Marshal(jose.JSONWebKey{Key: &key.PublicKey, KeyID: "agent-1", Algorithm: "ES256", Use: "sig"})
	if _, err := env.Agents.SetPublicJWKS(adminContext(context.Background()), agentID, pub); err != nil {
		tb.Fatal(err)
	}
	return key
}

// signJWT signs claims with key (kid) as ES256.
func signJWT(tb testing.TB, key *ecdsa.PrivateKey, kid string, claims any) string {
	tb.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := jwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// assertion returns a private_key_jwt client assertion for client.
func (env *idEnv) assertion(tb testing.TB, key *ecdsa.PrivateKey, client, aud string, iat time.Time, life time.Duration, jti string) url.Values {
	tb.Helper()
	a := signJWT(tb, key, "agent-1", jwt.Claims{Issuer: client, Subject: client, Audience: jwt.Audience{aud},
		IssuedAt: jwt.NewNumericDate(iat), Expiry: jwt.NewNumericDate(iat.Add(life)), ID: jti})
	return url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {broker.ClientAssertionJWT}, "client_assertion": {a}}
}

// userToken is a token of the trusted IdP for user, for Stint's audience,
// with a verified email; extra adds claims, or removes those it sets to nil.
func (env *idEnv) userToken(tb testing.TB, user string, extra map[string]any) string {
	tb.Helper()
	claims := map[string]any{"iss": testIdP, "sub": "u-" + user, "email": user, "email_verified": true, "aud": env.base,
		"iat": time.Now().Unix(), "exp": time.Now().Add(10 * time.Minute).Unix()}
	for k, v := range extra {
		if v == nil {
			delete(claims, k)
			continue
		}
		claims[k] = v
	}
	return signJWT(tb, env.idpKey, "idp-1", claims)
}

// accessClaimsOf decodes an access token's claims without verifying them.
func accessClaimsOf(tb testing.TB, token string) map[string]any {
	tb.Helper()
	parts := strings.Split(token, ".")
	data, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		tb.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(data, &m)
	return m
}

// TestIdentityEndToEnd requests the same lease through every
// authentication method against the development Vault, and logs in to
// PostgreSQL with each credential.
func TestIdentityEndToEnd(t *testing.T) {
	dv := vaulttest.Start(t)
	dir := t.TempDir()
	cfg, env := identityConfig(t, e2eConfig(t, dv, filepath.Join(dir, "stint.db")), dir)
	env.start(t, cfg, nil, dv.RootToken)
	ctx := adminContext(context.Background())
	agentID, apiKey := env.newIDAgent(t, "etl")
	plain := env.client(nil)

	lease := func(t *testing.T, hc *http.Client, bearer, wantMethod, wantOnBehalfOf string) {
		t.Helper()
		status, body, _, err := env.do(t, hc, "POST", "/v1/leases", bearer, `{"role":"db-readonly","ttl":"10m","task":"e2e identity"}`)
		if err != nil || status != http.StatusCreated {
			t.Fatalf("POST /v1/leases = %d %v %v", status, fmtAny(body), err)
		}
		cred := body["credential"].(map[string]any)
		mustLogIn(t, cred).Close(context.Background())
		l, err := env.DB.FindLeaseByID(context.Background(), body["id"].(string))
		if err != nil {
			t.Fatal(err)
		}
		if l.AuthMethod != wantMethod || l.OnBehalfOf != wantOnBehalfOf || l.AgentID != agentID {
			t.Fatalf("lease auth_method=%q on_behalf_of=%q agent=%s; want %q %q %s", l.AuthMethod, l.OnBehalfOf, l.AgentID, wantMethod, wantOnBehalfOf, agentID)
		}
		if _, err := env.Leases.RevokeLease(ctx, l.ID, "test done"); err != nil {
			t.Fatal(err)
		}
		mustNotLogIn(t, cred)
	}

	t.Run("APIKey", func(t *testing.T) { lease(t, plain, apiKey, broker.AuthAPIKey, "") })

	t.Run("MTLS", func(t *testing.T) {
		cert := env.enroll(t, agentID)
		lease(t, env.client(&cert), "", broker.AuthMTLS, "")
	})

	t.Run("ClientSecret", func(t *testing.T) {
		secret, err := env.Agents.NewClientSecret(ctx, agentID)
		if err != nil {
			t.Fatal(err)
		}
		status, body, _ := env.token(t, plain, url.Values{"grant_type": {"client_credentials"}}, "etl", secret)
		if status != http.StatusOK || body["token_type"] != "Bearer" || body["expires_in"].(float64) != 600 {
			t.Fatalf("token = %d %v", status, body)
		}
		lease(t, plain, body["access_token"].(string), broker.AuthClientSecret, "")
	})

	t.Run("PrivateKeyJWT", func(t *testing.T) {
		key := env.registerJWK(t, agentID)
		status, body, _ := env.token(t, plain, env.assertion(t, key, "etl", env.base+"/oauth/token", time.Now(), 2*time.Minute, uuid.NewString()), "", "")
		if status != http.StatusOK {
			t.Fatalf("token = %d %v", status, body)
		}
		lease(t, plain, body["access_token"].(string), broker.AuthPrivateKeyJWT, "")
	})

	t.Run("TokenExchange", func(t *testing.T) {
		key := env.registerJWK(t, agentID)
		form := env.assertion(t, key, "etl", env.base+"/oauth/token", time.Now(), time.Minute, uuid.NewString())
		form.Set("grant_type", broker.GrantTokenExchange)
		form.Set("subject_token", env.userToken(t, "alice@example.com", map[string]any{"may_act": map[string]any{"sub": "etl"}}))
		form.Set("subject_token_type", broker.TokenTypeJWT)
		status, body, _ := env.token(t, plain, form, "", "")
		if status != http.StatusOK || body["issued_token_type"] != broker.TokenTypeAccessToken {
			t.Fatalf("exchange = %d %v", status, body)
		}
		c := accessClaimsOf(t, body["access_token"].(string))
		if c["sub"] != "alice@example.com" || c["act"].(map[string]any)["sub"] != "etl" || c["client_id"] != "etl" {
			t.Fatalf("exchanged token claims = %v", c)
		}
		lease(t, plain, body["access_token"].(string), broker.AuthPrivateKeyJWT, "alice@example.com")
	})
}

// fakeIssuer mints nothing; the refusal tests need no Vault.
type fakeIssuer struct{}

func (fakeIssuer) Issue(_ context.Context, req leases.IssueRequest) (*leases.Grant, error) {
	return &leases.Grant{VaultLeaseID: "fake/" + req.LeaseID, LeaseDuration: req.Window, Data: map[string]any{"username": "u", "password": "p"}}, nil
}
func (fakeIssuer) Revoke(context.Context, string) error { return nil }
func (fakeIssuer) ListIssued(context.Context, []*broker.Role) ([]leases.Issued, error) {
	return nil, nil
}
func (fakeIssuer) Ping(context.Context) error { return nil }

// startRefusalEnv runs Stint with TLS and OAuth over a fake issuer.
func startRefusalEnv(t *testing.T, tweak func(*Config)) *idEnv {
	t.Helper()
	dir := t.TempDir()
	base := DefaultConfig()
	base.Store.Path = filepath.Join(dir, "stint.db")
	base.Roles = vault.DevRoles()
	for _, r := range base.Roles {
		r.AutoApprove = true
	}
	cfg, env := identityConfig(t, base, dir)
	if tweak != nil {
		tweak(&cfg)
	}
	env.start(t, cfg, fakeIssuer{}, "unused")
	return env
}

func TestIdentityMTLS(t *testing.T) {
	env := startRefusalEnv(t, nil)
	ctx := adminContext(context.Background())
	agentID, _ := env.newIDAgent(t, "etl")

	t.Run("StintIssued", func(t *testing.T) {
		cert := env.enroll(t, agentID)
		if status, method := env.whoami(t, env.client(&cert), ""); status != http.StatusOK || method != "mtls" {
			t.Fatalf("whoami = %d %s", status, method)
		}
	})

	t.Run("SPIFFE", func(t *testing.T) {
		if _, err := env.Agents.SetSPIFFEID(ctx, agentID, "spiffe://example.org/ns/etl/sa/loader"); err != nil {
			t.Fatal(err)
		}
		svid := issueLeaf(t, env.spiffeCA.cert, env.spiffeCA.key, func(c *x509.Certificate) {
			c.URIs = []*url.URL{uri("spiffe://example.org/ns/etl/sa/loader")}
		})
		if status, method := env.whoami(t, env.client(&svid), ""); status != http.StatusOK || method != "mtls" {
			t.Fatalf("whoami with SVID = %d %s", status, method)
		}
		unmapped := issueLeaf(t, env.spiffeCA.cert, env.spiffeCA.key, func(c *x509.Certificate) {
			c.URIs = []*url.URL{uri("spiffe://example.org/ns/other/sa/x")}
		})
		if status, msg := env.whoami(t, env.client(&unmapped), ""); status != http.StatusUnauthorized || !strings.Contains(msg, "No agent is mapped") {
			t.Fatalf("unmapped SVID = %d %s", status, msg)
		}
		foreign := issueLeaf(t, env.spiffeCA.cert, env.spiffeCA.key, func(c *x509.Certificate) {
			c.URIs = []*url.URL{uri("spiffe://evil.org/ns/etl/sa/loader")}
		})
		if status, msg := env.whoami(t, env.client(&foreign), ""); status != http.StatusUnauthorized || !strings.Contains(msg, "trust domain") {
			t.Fatalf("SVID of another trust domain = %d %s", status, msg)
		}
		// The enrolment CA cannot mint SVIDs for example.org: the URI maps
		// only through the root that signed it.
		forged := issueLeaf(t, env.Agents.CA.Cert, env.Agents.CA.Key, func(c *x509.Certificate) {
			c.URIs = []*url.URL{uri("spiffe://example.org/ns/etl/sa/loader")}
		})
		if status, msg := env.whoami(t, env.client(&forged), ""); !handshakeRefused(status, msg) {
			t.Fatalf("enrolment-CA cert with a SPIFFE ID = %d %s; want the handshake refused", status, msg)
		}
		_, err := env.Agents.AuthenticateRequest(context.Background(), broker.AuthRequest{PeerCertificates: []*x509.Certificate{forged.Leaf}})
		if broker.ErrorCode(err) != broker.EUNAUTHORIZED || !strings.Contains(broker.ErrorMessage(err), "unknown") {
			t.Fatalf("AuthenticateRequest(enrolment-CA cert with a SPIFFE ID) = %v", err)
		}
	})

	t.Run("WrongCA", func(t *testing.T) {
		other := newTestCA(t, "someone else")
		cert := issueLeaf(t, other.cert, other.key, func(c *x509.Certificate) {
			c.URIs = []*url.URL{uri("spiffe://stint.local/agent/etl")}
		})
		if status, msg := env.whoami(t, env.client(&cert), ""); status != 0 || !strings.Contains(msg, "certificate") {
			t.Fatalf("wrong-CA certificate = %d %s; want the handshake refused", status, msg)
		}
	})

	t.Run("Expired", func(t *testing.T) {
		cert := issueLeaf(t, env.Agents.CA.Cert, env.Agents.CA.Key, func(c *x509.Certificate) {
			c.URIs = []*url.URL{uri("spiffe://stint.local/agent/etl")}
			c.NotBefore, c.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
		})
		if status, msg := env.whoami(t, env.client(&cert), ""); status != 0 || !strings.Contains(msg, "certificate") {
			t.Fatalf("expired certificate = %d %s; want the handshake refused", status, msg)
		}
		// The authenticator refuses it on its own clock too.
		_, err := env.Agents.AuthenticateRequest(context.Background(), broker.AuthRequest{PeerCertificates: []*x509.Certificate{cert.Leaf}})
		if broker.ErrorCode(err) != broker.EUNAUTHORIZED || !strings.Contains(broker.ErrorMessage(err), "expired") {
			t.Fatalf("AuthenticateRequest(expired) = %v", err)
		}
	})

	t.Run("UnknownSerial", func(t *testing.T) {
		cert := issueLeaf(t, env.Agents.CA.Cert, env.Agents.CA.Key, func(c *x509.Certificate) {
			c.URIs = []*url.URL{uri("spiffe://stint.local/agent/etl")}
		})
		// The handshake refuses it (the store does not know it), and so
		// would authentication.
		if status, msg := env.whoami(t, env.client(&cert), ""); !handshakeRefused(status, msg) {
			t.Fatalf("unrecorded certificate = %d %s; want the handshake refused", status, msg)
		}
		_, err := env.Agents.AuthenticateRequest(context.Background(), broker.AuthRequest{PeerCertificates: []*x509.Certificate{cert.Leaf}})
		if broker.ErrorCode(err) != broker.EUNAUTHORIZED || !strings.Contains(broker.ErrorMessage(err), "unknown") {
			t.Fatalf("AuthenticateRequest(unrecorded) = %v", err)
		}
	})

	t.Run("Revoked", func(t *testing.T) {
		cert := env.enroll(t, agentID)
		hc := env.client(&cert)
		if status, _ := env.whoami(t, hc, ""); status != http.StatusOK {
			t.Fatal("fresh certificate refused")
		}
		if _, err := env.Agents.RevokeCertificates(ctx, agentID, cert.Leaf.SerialNumber.Text(16), "test"); err != nil {
			t.Fatal(err)
		}
		if status, msg := env.whoami(t, env.client(&cert), ""); !handshakeRefused(status, msg) {
			t.Fatalf("revoked certificate = %d %s; want the handshake refused", status, msg)
		}
		_, err := env.Agents.AuthenticateRequest(context.Background(), broker.AuthRequest{PeerCertificates: []*x509.Certificate{cert.Leaf}})
		if broker.ErrorCode(err) != broker.EUNAUTHORIZED || !strings.Contains(broker.ErrorMessage(err), "revoked") {
			t.Fatalf("AuthenticateRequest(revoked) = %v", err)
		}
	})

	t.Run("MethodNotAllowed", func(t *testing.T) {
		cert := env.enroll(t, agentID)
		if _, err := env.Agents.SetAuthMethods(ctx, agentID, []string{broker.AuthAPIKey}); err != nil {
			t.Fatal(err)
		}
		defer env.Agents.SetAuthMethods(ctx, agentID, allMethods)
		if status, msg := env.whoami(t, env.client(&cert), ""); status != http.StatusUnauthorized || !strings.Contains(msg, "may not authenticate with mtls") {
			t.Fatalf("mtls not allowed = %d %s", status, msg)
		}
	})

	t.Run("SuspendedAndDisabledAgent", func(t *testing.T) {
		id, _ := env.newIDAgent(t, "doomed")
		cert := env.enroll(t, id)
		if _, err := env.Leases.ContainAgent(ctx, broker.ContainRequest{AgentID: id, State: broker.AgentSuspended}); err != nil {
			t.Fatal(err)
		}
		if status, msg := env.whoami(t, env.client(&cert), ""); status != http.StatusUnauthorized || !strings.Contains(msg, "suspended") {
			t.Fatalf("suspended agent's certificate = %d %s", status, msg)
		}
		if _, err := env.Leases.ContainAgent(ctx, broker.ContainRequest{AgentID: id, State: broker.AgentDisabled}); err != nil {
			t.Fatal(err)
		}
		if _, err := env.Agents.ActivateAgent(ctx, id); broker.ErrorCode(err) != broker.ECONFLICT {
			t.Fatalf("re-activating a disabled agent = %v; want ECONFLICT (disabling is final)", err)
		}
		// Disabling revoked the certificate for good.
		if status, msg := env.whoami(t, env.client(&cert), ""); !handshakeRefused(status, msg) {
			t.Fatalf("disabled agent's certificate after re-activation = %d %s; want the handshake refused", status, msg)
		}
	})

	t.Run("FailuresCounted", func(t *testing.T) {
		byAgent, bySource, err := env.Agents.AuthFailures(t.Context(), agentID, "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if byAgent < 2 || bySource < 4 {
			t.Fatalf("AuthFailures = %d by agent, %d by source; want the refusals above counted", byAgent, bySource)
		}
	})
}

func TestIdentityOAuth(t *testing.T) {
	env := startRefusalEnv(t, nil)
	ctx := adminContext(context.Background())
	agentID, _ := env.newIDAgent(t, "etl")
	plain := env.client(nil)
	endpoint := env.base + "/oauth/token"

	t.Run("MetadataAndJWKS", func(t *testing.T) {
		status, md, _, err := env.do(t, plain, "GET", "/.well-known/oauth-authorization-server", "", "")
		if err != nil || status != http.StatusOK || md["token_endpoint"] != endpoint || md["issuer"] != env.base ||
			md["tls_client_certificate_bound_access_tokens"] != true {
			t.Fatalf("metadata = %d %v %v", status, md, err)
		}
		status, jwks, _, _ := env.do(t, plain, "GET", "/oauth/jwks.json", "", "")
		keys, _ := jwks["keys"].([]any)
		if status != http.StatusOK || len(keys) != 1 || keys[0].(map[string]any)["d"] != nil {
			t.Fatalf("jwks = %d %v", status, jwks)
		}
	})

	t.Run("ClientSecret", func(t *testing.T) {
		secret, err := env.Agents.NewClientSecret(ctx, agentID)
		if err != nil {
			t.Fatal(err)
		}
		status, body, _ := env.token(t, plain, url.Values{"grant_type": {"client_credentials"}}, "etl", secret)
		if status != http.StatusOK {
			t.Fatalf("token = %d %v", status, body)
		}
		if status, method := env.whoami(t, plain, body["access_token"].(string)); status != http.StatusOK || method != "client_secret" {
			t.Fatalf("whoami = %d %s", status, method)
		}
		status, body, h := env.token(t, plain, url.Values{"grant_type": {"client_credentials"}}, "etl", secret+"x")
		if status != http.StatusUnauthorized || body["error"] != "invalid_client" || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Basic") {
			t.Fatalf("wrong secret = %d %v %v", status, body, h)
		}
		status, body, _ = env.token(t, plain, url.Values{"grant_type": {"password"}}, "etl", secret)
		if status != http.StatusBadRequest || body["error"] != "unsupported_grant_type" {
			t.Fatalf("password grant = %d %v", status, body)
		}
		status, body, _ = env.token(t, plain, url.Values{"grant_type": {"client_credentials"}, "client_id": {"etl"}, "client_secret": {secret}}, "", "")
		if status != http.StatusOK {
			t.Fatalf("client_secret_post = %d %v", status, body)
		}
	})

	t.Run("PrivateKeyJWT", func(t *testing.T) {
		key := env.registerJWK(t, agentID)
		jti := uuid.NewString()
		form := env.assertion(t, key, "etl", endpoint, time.Now(), 2*time.Minute, jti)
		if status, body, _ := env.token(t, plain, form, "", ""); status != http.StatusOK {
			t.Fatalf("token = %d %v", status, body)
		}
		for _, tc := range []struct {
			name string
			form url.Values
			want string
		}{
			{"ReplayedJTI", form, "jti replay"},
			{"WrongAud", env.assertion(t, key, "etl", env.base+"/oauth", time.Now(), time.Minute, uuid.NewString()), "aud must be the issuer"},
			{"Expired", env.assertion(t, key, "etl", endpoint, time.Now().Add(-3*time.Minute), 2*time.Minute, uuid.NewString()), "expired"},
			{"TooLong", env.assertion(t, key, "etl", endpoint, time.Now(), 10*time.Minute, uuid.NewString()), "at most 5m0s"},
			{"OtherKey", env.assertion(t, mustECKey(), "etl", endpoint, time.Now(), time.Minute, uuid.NewString()), "does not verify"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				status, body, _ := env.token(t, plain, tc.form, "", "")
				if status != http.StatusBadRequest || body["error"] != "invalid_client" || !strings.Contains(fmtAny(body["error_description"]), tc.want) {
					t.Fatalf("token = %d %v; want 400 invalid_client mentioning %q", status, body, tc.want)
				}
			})
		}
	})

	t.Run("CertificateBoundToken", func(t *testing.T) {
		cert := env.enroll(t, agentID)
		bound := env.client(&cert)
		// tls_client_auth: the certificate is the client credential.
		status, body, _ := env.token(t, bound, url.Values{"grant_type": {"client_credentials"}}, "", "")
		if status != http.StatusOK {
			t.Fatalf("token over mTLS = %d %v", status, body)
		}
		tok := body["access_token"].(string)
		cnf, _ := accessClaimsOf(t, tok)["cnf"].(map[string]any)
		if cnf["x5t#S256"] == nil {
			t.Fatalf("token over mTLS has no cnf: %v", accessClaimsOf(t, tok))
		}
		if status, method := env.whoami(t, bound, tok); status != http.StatusOK || method != "mtls" {
			t.Fatalf("bound token with its certificate = %d %s", status, method)
		}
		if status, msg := env.whoami(t, plain, tok); status != http.StatusUnauthorized || !strings.Contains(msg, "bound to a client certificate") {
			t.Fatalf("bound token without its certificate = %d %s", status, msg)
		}
		other := env.enroll(t, agentID)
		if status, _ := env.whoami(t, env.client(&other), tok); status != http.StatusUnauthorized {
			t.Fatalf("bound token with another certificate = %d", status)
		}
	})

	t.Run("SuspensionKillsTokens", func(t *testing.T) {
		secret, _ := env.Agents.NewClientSecret(ctx, agentID)
		_, body, _ := env.token(t, plain, url.Values{"grant_type": {"client_credentials"}}, "etl", secret)
		tok := body["access_token"].(string)
		env.Leases.ContainAgent(ctx, broker.ContainRequest{AgentID: agentID, State: broker.AgentSuspended})
		if status, msg := env.whoami(t, plain, tok); status != http.StatusUnauthorized || !strings.Contains(msg, "suspended") {
			t.Fatalf("token of a suspended agent = %d %s", status, msg)
		}
		time.Sleep(1100 * time.Millisecond) // tokens are stamped in whole seconds
		env.Agents.ActivateAgent(ctx, agentID)
		if status, msg := env.whoami(t, plain, tok); status != http.StatusUnauthorized || !strings.Contains(msg, "issued before") {
			t.Fatalf("pre-suspension token after re-activation = %d %s", status, msg)
		}
		_, body, _ = env.token(t, plain, url.Values{"grant_type": {"client_credentials"}}, "etl", secret)
		if status, _ := env.whoami(t, plain, body["access_token"].(string)); status != http.StatusOK {
			t.Fatalf("fresh token after re-activation = %d", status)
		}
	})

	t.Run("TokenExchangeRefusals", func(t *testing.T) {
		secret, _ := env.Agents.NewClientSecret(ctx, agentID)
		exchange := func(subject string) (int, map[string]any) {
			status, body, _ := env.token(t, plain, url.Values{"grant_type": {broker.GrantTokenExchange},
				"subject_token": {subject}, "subject_token_type": {broker.TokenTypeJWT}}, "etl", secret)
			return status, body
		}
		untrusted := signJWT(t, mustECKey(), "x", map[string]any{"iss": "https://evil.example.com", "email": "a@b.c", "aud": env.base, "exp": time.Now().Add(time.Minute).Unix()})
		for _, tc := range []struct{ name, token, want string }{
			{"UntrustedIssuer", untrusted, "not trusted"},
			{"MayActOther", env.userToken(t, "alice@example.com", map[string]any{"may_act": map[string]any{"sub": "other-bot"}}), "may_act"},
			{"WrongAudience", env.userToken(t, "alice@example.com", map[string]any{"aud": "https://elsewhere"}), "aud"},
			{"Expired", env.userToken(t, "alice@example.com", map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}), "expired"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				status, body := exchange(tc.token)
				if status != http.StatusBadRequest || body["error"] != "invalid_request" || !strings.Contains(fmtAny(body["error_description"]), tc.want) {
					t.Fatalf("exchange = %d %v; want invalid_request mentioning %q", status, body, tc.want)
				}
			})
		}
		status, body := exchange(env.userToken(t, "alice@example.com", map[string]any{"may_act": map[string]any{"sub": "etl"}}))
		if status != http.StatusOK {
			t.Fatalf("exchange with matching may_act = %d %v", status, body)
		}
	})
}

func mustECKey() *ecdsa.PrivateKey { k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader); return k }

func TestIdentityAPIKeysAndLimits(t *testing.T) {
	env := startRefusalEnv(t, func(c *Config) {
		c.Limits = LimitsConfig{RequestsPerSecond: 0.5, Burst: 3, MaxLiveLeases: 2}
	})
	ctx := adminContext(context.Background())
	plain := env.client(nil)

	t.Run("APIKeys", func(t *testing.T) {
		a, short, _, err := env.Agents.CreateAgent(ctx, broker.NewAgent{Name: "keys", Owner: "o@example.com", KeyTTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		env.skew.Store(int64(2 * time.Minute))
		if status, msg := env.whoami(t, plain, short); status != http.StatusUnauthorized {
			t.Fatalf("expired key = %d %s", status, msg)
		}
		env.skew.Store(0)
		rotated, _, err := env.Agents.RotateKey(ctx, a.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		if status, _ := env.whoami(t, plain, short); status != http.StatusUnauthorized {
			t.Fatal("key still works after rotation")
		}
		if status, method := env.whoami(t, plain, rotated); status != http.StatusOK || method != "api_key" {
			t.Fatalf("rotated key = %d %s", status, method)
		}
		if n, err := env.Agents.RevokeKeys(ctx, a.ID); err != nil || n != 1 {
			t.Fatalf("RevokeKeys = %d, %v", n, err)
		}
		if status, _ := env.whoami(t, plain, rotated); status != http.StatusUnauthorized {
			t.Fatal("revoked key still works")
		}
	})

	t.Run("RateLimit", func(t *testing.T) {
		_, key := env.newIDAgent(t, "chatty")
		for i := range 3 {
			if status, _ := env.whoami(t, plain, key); status != http.StatusOK {
				t.Fatalf("request %d within the burst = %d", i+1, status)
			}
		}
		status, body, h, _ := env.do(t, plain, "GET", "/v1/whoami", key, "")
		if status != http.StatusTooManyRequests || h.Get("Retry-After") == "" || body["error"].(map[string]any)["code"] != "too_many" {
			t.Fatalf("over the rate = %d %v Retry-After %q", status, body, h.Get("Retry-After"))
		}
		// Other agents have their own budget.
		_, other := env.newIDAgent(t, "quiet")
		if status, _ := env.whoami(t, plain, other); status != http.StatusOK {
			t.Fatalf("another agent = %d", status)
		}
	})

	t.Run("LeaseCap", func(t *testing.T) {
		_, key := env.newIDAgent(t, "greedy")
		req := `{"role":"db-readonly","ttl":"10m","task":"cap"}`
		for i := range 2 {
			if status, body, _, _ := env.do(t, plain, "POST", "/v1/leases", key, req); status != http.StatusCreated {
				t.Fatalf("lease %d = %d %v", i+1, status, body)
			}
		}
		status, body, h, _ := env.do(t, plain, "POST", "/v1/leases", key, req)
		if status != http.StatusTooManyRequests || h.Get("Retry-After") != "30" || !strings.Contains(fmtAny(body), "max_live_leases") {
			t.Fatalf("third lease = %d %v Retry-After %q", status, body, h.Get("Retry-After"))
		}
	})
}
