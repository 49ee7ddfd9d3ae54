package identity_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/identity"
)

func TestParsePublicJWKS(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	enc := func(v any) []byte { b, _ := json.Marshal(v); return b }

	t.Run("OK", func(t *testing.T) {
		out, err := identity.ParsePublicJWKS(enc(jose.JSONWebKey{Key: &ec.PublicKey}))
		if err != nil {
			t.Fatal(err)
		}
		var set jose.JSONWebKeySet
		if err := json.Unmarshal([]byte(out), &set); err != nil || len(set.Keys) != 1 || set.Keys[0].KeyID == "" {
			t.Fatalf("set = %s, %v; want one key with a thumbprint kid", out, err)
		}
		if _, err := identity.ParsePublicJWKS(enc(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: &ec.PublicKey, KeyID: "a"}, {Key: edPriv.Public(), KeyID: "b"}}})); err != nil {
			t.Fatalf("two public keys: %v", err)
		}
	})
	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"Private":     {enc(jose.JSONWebKey{Key: ec}), "private key"},
		"Symmetric":   {[]byte(`{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0"}`), "JWK"},
		"DuplicateID": {enc(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &ec.PublicKey, KeyID: "a"}, {Key: edPriv.Public(), KeyID: "a"}}}), "twice"},
		"Encryption":  {enc(jose.JSONWebKey{Key: &ec.PublicKey, Use: "enc"}), "sig"},
		"HMACAlg":     {enc(jose.JSONWebKey{Key: &ec.PublicKey, Algorithm: "HS256"}), "not accepted"},
		"NotJSON":     {[]byte("nope"), "JSON Web Key"},
		"Empty":       {[]byte(`{"keys":[]}`), "between 1 and"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := identity.ParsePublicJWKS(tc.data)
			if broker.ErrorField(err) != "jwk" || !strings.Contains(broker.ErrorMessage(err), tc.want) {
				t.Fatalf("err = %v; want field jwk mentioning %q", err, tc.want)
			}
		})
	}
}

func TestParseSPIFFEID(t *testing.T) {
	for _, ok := range []string{"spiffe://example.org/ns/etl/sa/loader", "spiffe://stint.local/agent/a.b-c_d"} {
		if _, err := identity.ParseSPIFFEID(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "https://example.org/x", "spiffe://example.org", "spiffe://example.org/", "spiffe://Example.org/x",
		"spiffe://example.org/x/", "spiffe://example.org//x", "spiffe://example.org/x?y=1", "spiffe://example.org:8080/x",
		"spiffe://u@example.org/x", "spiffe://example.org/x#f", "spiffe://example.org/../x", "spiffe://example.org/x y"} {
		if _, err := identity.ParseSPIFFEID(bad); broker.ErrorField(err) != "spiffe_id" {
			t.Errorf("%q accepted (err %v)", bad, err)
		}
	}
}

func TestRateLimiter(t *testing.T) {
	r := identity.NewRateLimiter(1, 2)
	now := time.Unix(1000, 0)
	for i := range 2 {
		if err := r.Allow(t.Context(), "a", "a", now); err != nil {
			t.Fatalf("request %d within burst: %v", i+1, err)
		}
	}
	err := r.Allow(t.Context(), "a", "a", now)
	var be *broker.Error
	if broker.ErrorCode(err) != broker.ETOOMANY || !asError(err, &be) || be.RetryAfter != time.Second {
		t.Fatalf("over the rate: %v; want ETOOMANY retrying after 1s", err)
	}
	if err := r.Allow(t.Context(), "b", "b", now); err != nil {
		t.Fatalf("another agent: %v", err)
	}
	if err := r.Allow(t.Context(), "a", "a", now.Add(time.Second)); err != nil {
		t.Fatalf("after refill: %v", err)
	}
	if err := identity.NewRateLimiter(0, 0).Allow(t.Context(), "a", "a", now); err != nil {
		t.Fatalf("disabled limiter: %v", err)
	}
}

func asError(err error, target **broker.Error) bool {
	e, ok := err.(*broker.Error)
	*target = e
	return ok
}

func TestFailureCounter(t *testing.T) {
	f := identity.NewFailureCounter()
	now := time.Unix(1_000_000, 0)
	f.Record(t.Context(), "agent-1", "10.0.0.1", now)
	f.Record(t.Context(), "", "10.0.0.1", now.Add(30*time.Minute))
	f.Record(t.Context(), "agent-1", "", now.Add(59*time.Minute))
	count := func(kind, key string, at time.Time) int {
		t.Helper()
		fn := f.Agent
		if kind == "source" {
			fn = f.Source
		}
		n, err := fn(t.Context(), key, at)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if got := count("agent", "agent-1", now.Add(59*time.Minute)); got != 2 {
		t.Fatalf("agent failures = %d, want 2", got)
	}
	if got := count("source", "10.0.0.1", now.Add(59*time.Minute)); got != 2 {
		t.Fatalf("source failures = %d, want 2", got)
	}
	// An hour later the first failures have left the window.
	if got := count("agent", "agent-1", now.Add(61*time.Minute)); got != 1 {
		t.Fatalf("agent failures an hour on = %d, want 1", got)
	}
	if got := count("source", "10.9.9.9", now); got != 0 {
		t.Fatalf("unknown source = %d", got)
	}
}

func TestEnroll(t *testing.T) {
	s, _, now := newService(t)
	dir := t.TempDir()
	ca, err := identity.InitCA(filepath.Join(dir, "ca"), "test CA", 48*time.Hour, *now)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "ca", identity.CAKeyFile)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode = %o, want 600", fi.Mode().Perm())
	}
	if _, err := identity.InitCA(filepath.Join(dir, "ca"), "again", 48*time.Hour, *now); err == nil {
		t.Fatal("InitCA replaced an existing CA")
	}
	if _, err := identity.LoadCA(filepath.Join(dir, "ca")); err != nil {
		t.Fatal(err)
	}
	s.CA = ca
	a, _, _, err := s.CreateAgent(admin, broker.NewAgent{Name: "etl", Owner: "o@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key)
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})

	if _, _, err := s.Enroll(admin, a.ID, csr, 0); broker.ErrorCode(err) != broker.ECONFLICT || !strings.Contains(broker.ErrorMessage(err), "may not use mtls") {
		t.Fatalf("enroll without mtls allowed: %v", err)
	}
	if _, err := s.SetAuthMethods(admin, a.ID, []string{broker.AuthAPIKey, broker.AuthMTLS}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Enroll(admin, a.ID, csr, 8*24*time.Hour); broker.ErrorField(err) != "ttl" {
		t.Fatalf("ttl over the maximum: %v", err)
	}
	if _, _, err := s.Enroll(admin, a.ID, []byte("junk"), 0); broker.ErrorField(err) != "csr" {
		t.Fatalf("junk CSR: %v", err)
	}
	rec, certPEM, err := s.Enroll(admin, a.ID, csr, 0)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	cert, _ := x509.ParseCertificate(block.Bytes)
	if rec.URI != "spiffe://stint.local/agent/etl" || cert.URIs[0].String() != rec.URI || !rec.NotAfter.Equal(now.Add(24*time.Hour).Truncate(time.Second)) ||
		cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || cert.IsCA {
		t.Fatalf("certificate: uri %v, record %+v", cert.URIs, rec)
	}
	actor, err := s.AuthenticateRequest(admin, broker.AuthRequest{PeerCertificates: []*x509.Certificate{cert}, SourceIP: "10.0.0.1"})
	if err != nil || actor.AgentID != a.ID || actor.AuthMethod != broker.AuthMTLS {
		t.Fatalf("AuthenticateRequest = %+v, %v", actor, err)
	}
	// Past its expiry, on the service's clock.
	*now = now.Add(25 * time.Hour)
	if _, err := s.AuthenticateRequest(admin, broker.AuthRequest{PeerCertificates: []*x509.Certificate{cert}}); broker.ErrorCode(err) != broker.EUNAUTHORIZED {
		t.Fatalf("expired certificate: %v", err)
	}
}
