package identity_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/identity"
	"github.com/stint-broker/stint/broker/sqlite"
)

// Fixed test keys (P-256), so that the assertions and subject tokens in the
// committed seed corpus stay valid: the agent's private_key_jwt key and the
// trusted identity provider's key. Test keys only, never used elsewhere.
const (
	fuzzAgentKeyPEM = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgECCBYMKVxqVl9Ln4
MZm1FBX08bRbCr2DJ2FODviERMuhRANCAAQKH18WZ0n7sCmxOCbsnWPg/Lyi2oqW
GNRmx8EHLFGrFqkJcxL6S0w+2PBxX/yGtCBq4rNz8zFQ+y8WzmnW1Xvt
-----END PRIVATE KEY-----`
	fuzzIdPKeyPEM = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSPoqqrhgQk5Vrwp/
6cjjAtLBkar3Z0TJ7IX/JwgjdRmhRANCAASYlQwysmE1akTExTkni10s4GHTXCKf
eNH2yQYDbDbBwmQ/KVeY2H7Ink84bbVl+ZoJSQk2+fMQS8hIBkk2w5Fn
-----END PRIVATE KEY-----`
	fuzzIssuer = "http://stint.test"
	fuzzIdP    = "https://idp.test"
)

// fuzzNow is the fixed clock of the fuzz target, so that seed tokens do not
// expire.
var fuzzNow = time.Date(2030, 1, 9, 12, 0, 0, 0, time.UTC)

func mustECKey(tb testing.TB, p string) *ecdsa.PrivateKey {
	tb.Helper()
	b, _ := pem.Decode([]byte(p))
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return k.(*ecdsa.PrivateKey)
}

// signJWT signs claims with key (ES256, key id kid).
func signJWT(tb testing.TB, key *ecdsa.PrivateKey, kid string, claims any) string {
	tb.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// FuzzToken sends arbitrary token requests to the OAuth token endpoint's
// service: client assertions (private_key_jwt) and token exchanges with
// arbitrary subject tokens, form client ids and token types. Whatever the
// input: it never panics and never fails as an internal error (a bad
// request is the client's EINVALID, EUNAUTHORIZED or EFORBIDDEN); and a
// token is issued only for an assertion that verifies with the agent's
// registered key and names the agent, and, in an exchange, only for a
// subject token that verifies with the trusted issuer's key. The seed
// corpus is in testdata/fuzz/FuzzToken.
func FuzzToken(f *testing.F) {
	agentKey, idpKey := mustECKey(f, fuzzAgentKeyPEM), mustECKey(f, fuzzIdPKeyPEM)
	dir := f.TempDir()
	db, err := sqlite.Open(context.Background(), filepath.Join(dir, "stint.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &agentKey.PublicKey, KeyID: "agent-1", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		f.Fatal(err)
	}
	registered, err := identity.ParsePublicJWKS(jwks)
	if err != nil {
		f.Fatal(err)
	}
	agent := &broker.Agent{Name: "etl-bot", Owner: "ana@example.com", State: broker.AgentActive, CreatedAt: fuzzNow, UpdatedAt: fuzzNow,
		AuthMethods: []string{broker.AuthAPIKey, broker.AuthPrivateKeyJWT}, PublicJWKS: registered}
	if err := db.CreateAgent(context.Background(), agent); err != nil {
		f.Fatal(err)
	}
	idpJWKS, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &idpKey.PublicKey, KeyID: "idp-1", Algorithm: "ES256", Use: "sig"}}})
	idpPath := filepath.Join(dir, "idp.jwks")
	if err := os.WriteFile(idpPath, idpJWKS, 0o600); err != nil {
		f.Fatal(err)
	}
	trusted, err := identity.NewTrustedIssuerFile(fuzzIdP, "stint", "sub", idpPath)
	if err != nil {
		f.Fatal(err)
	}
	signing := mustECKey(f, fuzzIdPKeyPEM) // any P-256 key signs Stint's own tokens here
	oauth, err := identity.NewOAuth(fuzzIssuer, signing, 5*time.Minute, []*identity.TrustedIssuer{trusted})
	if err != nil {
		f.Fatal(err)
	}
	s := identity.NewService(db, nil)
	s.OAuth = oauth
	s.Now = func() time.Time { return fuzzNow }

	assertion := func(jti string, mutate func(*jwt.Claims)) string {
		c := jwt.Claims{Issuer: "etl-bot", Subject: "etl-bot", Audience: jwt.Audience{oauth.TokenEndpoint()},
			IssuedAt: jwt.NewNumericDate(fuzzNow), Expiry: jwt.NewNumericDate(fuzzNow.Add(time.Minute)), ID: jti}
		if mutate != nil {
			mutate(&c)
		}
		return signJWT(f, agentKey, "agent-1", c)
	}
	subject := func(claims map[string]any) string { return signJWT(f, idpKey, "idp-1", claims) }
	user := map[string]any{"iss": fuzzIdP, "aud": "stint", "sub": "bob@example.com", "exp": fuzzNow.Add(time.Hour).Unix(), "iat": fuzzNow.Unix()}
	mayAct := map[string]any{"iss": fuzzIdP, "aud": "stint", "sub": "bob@example.com", "exp": fuzzNow.Add(time.Hour).Unix(), "may_act": map[string]any{"sub": "etl-bot"}}
	wrongAud := map[string]any{"iss": fuzzIdP, "aud": "other", "sub": "bob@example.com", "exp": fuzzNow.Add(time.Hour).Unix()}

	// The setup must issue for good input, or the fuzz target proves little.
	if _, err := s.Token(context.Background(), broker.TokenRequest{GrantType: broker.GrantClientCredentials,
		ClientAssertionType: broker.ClientAssertionJWT, ClientAssertion: assertion("setup-1", nil)}); err != nil {
		f.Fatalf("a valid client assertion: %v", err)
	}
	if _, err := s.Token(context.Background(), broker.TokenRequest{GrantType: broker.GrantTokenExchange,
		ClientAssertionType: broker.ClientAssertionJWT, ClientAssertion: assertion("setup-2", nil),
		SubjectToken: subject(mayAct), SubjectTokenType: broker.TokenTypeJWT}); err != nil {
		f.Fatalf("a valid token exchange: %v", err)
	}

	cc, te := uint8(0), uint8(1)
	f.Add(cc, assertion("jti-1", nil), "", "", "")
	f.Add(cc, assertion("jti-2", nil), "etl-bot", "", "")
	f.Add(cc, assertion("jti-3", nil), "other-bot", "", "")
	f.Add(cc, assertion("jti-4", func(c *jwt.Claims) { c.Subject = "root" }), "", "", "")
	f.Add(cc, assertion("jti-5", func(c *jwt.Claims) { c.Audience = jwt.Audience{"http://elsewhere"} }), "", "", "")
	f.Add(cc, assertion("jti-6", func(c *jwt.Claims) { c.Expiry = jwt.NewNumericDate(fuzzNow.Add(time.Hour)) }), "", "", "")
	f.Add(cc, assertion("", nil), "", "", "")
	f.Add(cc, "eyJhbGciOiJub25lIn0.eyJpc3MiOiJldGwtYm90In0.", "", "", "")
	f.Add(cc, "not.a.jwt", "", "", "")
	f.Add(te, assertion("jti-7", nil), "", subject(user), broker.TokenTypeJWT)
	f.Add(te, assertion("jti-8", nil), "", subject(mayAct), broker.TokenTypeIDToken)
	f.Add(te, assertion("jti-9", nil), "", subject(wrongAud), broker.TokenTypeJWT)
	f.Add(te, assertion("jti-10", nil), "", signJWT(f, agentKey, "idp-1", user), broker.TokenTypeJWT)
	f.Add(te, assertion("jti-11", nil), "", "x.y.z", "urn:unknown")

	f.Fuzz(func(t *testing.T, grant uint8, clientAssertion, formClientID, subjectToken, subjectTokenType string) {
		req := broker.TokenRequest{
			GrantType: broker.GrantClientCredentials, ClientAssertionType: broker.ClientAssertionJWT,
			ClientAssertion: clientAssertion, FormClientID: formClientID, SourceIP: "10.0.0.7",
		}
		switch grant % 4 {
		case 1:
			req.GrantType, req.SubjectToken, req.SubjectTokenType = broker.GrantTokenExchange, subjectToken, subjectTokenType
		case 2:
			req.GrantType = subjectTokenType // arbitrary grant types
		case 3:
			req.ClientAssertionType = subjectTokenType // arbitrary assertion types
		}
		resp, err := s.Token(context.Background(), req)
		if err != nil {
			var be *broker.Error
			if !errors.As(err, &be) {
				t.Fatalf("internal error for a client's input: %v", err)
			}
			switch be.Code {
			case broker.EINVALID, broker.EUNAUTHORIZED, broker.EFORBIDDEN, broker.ETOOMANY:
			default:
				t.Fatalf("code %s for a client's input: %v", be.Code, err)
			}
			return
		}
		// Issued: the assertion must verify with the agent's key and name it.
		tok, err := jwt.ParseSigned(clientAssertion, []jose.SignatureAlgorithm{jose.ES256})
		var c jwt.Claims
		if err != nil || tok.Claims(&agentKey.PublicKey, &c) != nil || c.Issuer != "etl-bot" || c.Subject != "etl-bot" {
			t.Fatalf("token issued for an assertion that does not verify for etl-bot: %q", clientAssertion)
		}
		at, err := jwt.ParseSigned(resp.AccessToken, []jose.SignatureAlgorithm{jose.ES256})
		var issued jwt.Claims
		if err != nil || at.Claims(&signing.PublicKey, &issued) != nil {
			t.Fatalf("issued access token does not verify: %v", err)
		}
		if req.GrantType == broker.GrantClientCredentials {
			if issued.Subject != "etl-bot" {
				t.Fatalf("client_credentials token for %q, want etl-bot", issued.Subject)
			}
			return
		}
		st, err := jwt.ParseSigned(subjectToken, []jose.SignatureAlgorithm{jose.ES256})
		var sc jwt.Claims
		if err != nil || st.Claims(&idpKey.PublicKey, &sc) != nil || sc.Issuer != fuzzIdP || sc.Subject != issued.Subject {
			t.Fatalf("exchange issued a token for %q from a subject token that does not verify with the trusted issuer: %q", issued.Subject, subjectToken)
		}
	})
}
