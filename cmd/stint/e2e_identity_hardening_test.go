package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/stint-broker/stint/approvals"
	"github.com/stint-broker/stint/broker"
)

// TestIdentityRevokedCertificate revokes a client certificate and checks
// that it ends at once: new handshakes with it are refused, and the access
// tokens bound to it stop working, also on a connection opened before the
// revocation.
func TestIdentityRevokedCertificate(t *testing.T) {
	env := startRefusalEnv(t, nil)
	ctx := adminContext(context.Background())
	agentID, _ := env.newIDAgent(t, "etl")
	secret, err := env.Agents.NewClientSecret(ctx, agentID)
	if err != nil {
		t.Fatal(err)
	}
	cert := env.enroll(t, agentID)
	bound := env.client(&cert)

	// Two tokens bound to the certificate: one issued to it
	// (tls_client_auth), one issued over its connection to a client
	// secret.
	status, body, _ := env.token(t, bound, url.Values{"grant_type": {"client_credentials"}}, "", "")
	if status != http.StatusOK {
		t.Fatalf("token over mTLS = %d %v", status, body)
	}
	issuedToCert := body["access_token"].(string)
	status, body, _ = env.token(t, bound, url.Values{"grant_type": {"client_credentials"}}, "etl", secret)
	if status != http.StatusOK {
		t.Fatalf("client_secret token over mTLS = %d %v", status, body)
	}
	boundBySecret := body["access_token"].(string)
	for _, tok := range []string{issuedToCert, boundBySecret} {
		if cnf, _ := accessClaimsOf(t, tok)["cnf"].(map[string]any); cnf["x5t#S256"] == nil {
			t.Fatalf("token over mTLS has no cnf: %v", accessClaimsOf(t, tok))
		}
		if status, _ := env.whoami(t, bound, tok); status != http.StatusOK {
			t.Fatalf("bound token before revocation = %d", status)
		}
	}

	// A client that resumes TLS sessions: after the revocation it must not
	// get back in through a session ticket issued before.
	resuming := env.client(&cert)
	resuming.Transport.(*http.Transport).TLSClientConfig.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	getWhoami := func(hc *http.Client) (*http.Response, error) {
		resp, err := hc.Get(env.base + "/v1/whoami")
		if err == nil {
			resp.Body.Close()
			hc.CloseIdleConnections()
		}
		return resp, err
	}
	for i := range 2 {
		resp, err := getWhoami(resuming)
		if err != nil || resp.StatusCode != http.StatusOK || resp.TLS.DidResume != (i == 1) {
			t.Fatalf("connection %d before revocation: %v, %+v; want 200, resumed the second time", i+1, err, resp)
		}
	}

	if _, err := env.Agents.RevokeCertificates(ctx, agentID, cert.Leaf.SerialNumber.Text(16), "key leaked"); err != nil {
		t.Fatal(err)
	}

	t.Run("BoundTokensEnd", func(t *testing.T) {
		for name, tok := range map[string]string{"IssuedToCert": issuedToCert, "BoundBySecret": boundBySecret} {
			// The connection opened before the revocation is still up.
			if status, msg := env.whoami(t, bound, tok); status != http.StatusUnauthorized || !strings.Contains(msg, "revoked") {
				t.Errorf("%s on the old connection = %d %s; want 401 naming the revocation", name, status, msg)
			}
			_, err := env.Agents.AuthenticateRequest(context.Background(), broker.AuthRequest{
				Bearer: tok, PeerCertificates: []*x509.Certificate{cert.Leaf}})
			if broker.ErrorCode(err) != broker.EUNAUTHORIZED || !strings.Contains(broker.ErrorMessage(err), "revoked") {
				t.Errorf("AuthenticateRequest(%s) = %v; want unauthorized, revoked", name, err)
			}
		}
	})

	t.Run("HandshakeRefused", func(t *testing.T) {
		if status, msg := env.whoami(t, env.client(&cert), ""); !handshakeRefused(status, msg) {
			t.Fatalf("new connection with the revoked certificate = %d %s; want the handshake refused", status, msg)
		}
		if resp, err := getWhoami(resuming); err == nil || !handshakeRefused(0, err.Error()) {
			t.Fatalf("resumed session with the revoked certificate = %+v, %v; want the handshake refused", resp, err)
		}
		// An unrevoked certificate of the same agent still connects.
		fresh := env.enroll(t, agentID)
		if status, method := env.whoami(t, env.client(&fresh), ""); status != http.StatusOK || method != "mtls" {
			t.Fatalf("fresh certificate = %d %s", status, method)
		}
	})

	t.Run("UnrecordedRefused", func(t *testing.T) {
		// Signed by the enrolment CA but never recorded: a stolen CA key
		// used elsewhere, or a restored database.
		forged := issueLeaf(t, env.Agents.CA.Cert, env.Agents.CA.Key, func(c *x509.Certificate) {
			c.URIs = []*url.URL{uri("spiffe://stint.local/agent/etl")}
		})
		if status, msg := env.whoami(t, env.client(&forged), ""); !handshakeRefused(status, msg) {
			t.Fatalf("unrecorded certificate = %d %s; want the handshake refused", status, msg)
		}
	})
}

// handshakeRefused reports whether a request failed because the server
// refused the TLS handshake: in TLS 1.3 the client may already be writing
// its request when the server's alert arrives, so the client sees the
// alert, or the connection closed under it.
func handshakeRefused(status int, msg string) bool {
	if status != 0 {
		return false
	}
	for _, s := range []string{"certificate", "broken pipe", "connection reset", "EOF"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// exchangeForm is a token exchange of subject by client_secret_basic.
func exchangeForm(subject string) url.Values {
	return url.Values{"grant_type": {broker.GrantTokenExchange}, "subject_token": {subject}, "subject_token_type": {broker.TokenTypeJWT}}
}

// TestIdentityTokenExchangeDelegation checks who may exchange a user's
// token: an agent the token's may_act names, or one a configured delegation
// allows to act for the user; and that a user token is exchanged once.
func TestIdentityTokenExchangeDelegation(t *testing.T) {
	env := startRefusalEnv(t, nil)
	ctx := adminContext(context.Background())
	agentID, _ := env.newIDAgent(t, "etl")
	secret, _ := env.Agents.NewClientSecret(ctx, agentID)
	plain := env.client(nil)

	t.Run("NoMayActNoDelegation", func(t *testing.T) {
		status, body, _ := env.token(t, plain, exchangeForm(env.userToken(t, "alice@example.com", nil)), "etl", secret)
		if status != http.StatusBadRequest || body["error"] != "invalid_grant" || !strings.Contains(fmtAny(body["error_description"]), "may not act for") {
			t.Fatalf("exchange without may_act or delegation = %d %v; want invalid_grant", status, body)
		}
	})

	t.Run("UsableOnce", func(t *testing.T) {
		subject := env.userToken(t, "alice@example.com", map[string]any{"jti": uuid.NewString(),
			"may_act": map[string]any{"sub": "etl"}})
		if status, body, _ := env.token(t, plain, exchangeForm(subject), "etl", secret); status != http.StatusOK {
			t.Fatalf("first exchange = %d %v", status, body)
		}
		status, body, _ := env.token(t, plain, exchangeForm(subject), "etl", secret)
		if status != http.StatusBadRequest || body["error"] != "invalid_grant" || !strings.Contains(fmtAny(body["error_description"]), "already") {
			t.Fatalf("second exchange of the same user token = %d %v; want invalid_grant", status, body)
		}
		// A token without jti is known by its hash.
		nojti := env.userToken(t, "alice@example.com", map[string]any{"may_act": map[string]any{"sub": "etl"}})
		if status, body, _ := env.token(t, plain, exchangeForm(nojti), "etl", secret); status != http.StatusOK {
			t.Fatalf("first exchange without jti = %d %v", status, body)
		}
		if status, body, _ := env.token(t, plain, exchangeForm(nojti), "etl", secret); status != http.StatusBadRequest {
			t.Fatalf("second exchange without jti = %d %v; want refused", status, body)
		}
	})

	t.Run("UnverifiedEmail", func(t *testing.T) {
		// The issuer's user claim is email: an unverified address is no
		// identity at all.
		for name, extra := range map[string]map[string]any{
			"Missing": {"email_verified": nil},
			"False":   {"email_verified": false},
			"String":  {"email_verified": "false"},
		} {
			extra["may_act"] = map[string]any{"sub": "etl"}
			status, body, _ := env.token(t, plain, exchangeForm(env.userToken(t, "alice@example.com", extra)), "etl", secret)
			if status != http.StatusBadRequest || !strings.Contains(fmtAny(body["error_description"]), "email_verified") {
				t.Errorf("%s email_verified = %d %v; want refused naming email_verified", name, status, body)
			}
		}
		// Some providers send the string "true".
		str := env.userToken(t, "alice@example.com", map[string]any{"email_verified": "true", "may_act": map[string]any{"sub": "etl"}})
		if status, body, _ := env.token(t, plain, exchangeForm(str), "etl", secret); status != http.StatusOK {
			t.Errorf("email_verified \"true\" = %d %v; want 200", status, body)
		}
	})
}

// TestIdentityTokenExchangeConfiguredDelegation lets etl act for users of
// example.com without may_act.
func TestIdentityTokenExchangeConfiguredDelegation(t *testing.T) {
	env := startRefusalEnv(t, func(c *Config) {
		c.OAuth.Delegations = []DelegationConfig{{Agent: "etl", Users: []string{"*@example.com", "carol@partner.example"}}}
	})
	ctx := adminContext(context.Background())
	etlID, _ := env.newIDAgent(t, "etl")
	etlSecret, _ := env.Agents.NewClientSecret(ctx, etlID)
	otherID, _ := env.newIDAgent(t, "other")
	otherSecret, _ := env.Agents.NewClientSecret(ctx, otherID)
	plain := env.client(nil)

	for _, tc := range []struct {
		name, client, secret, user string
		want                       int
	}{
		{"Domain", "etl", etlSecret, "alice@example.com", http.StatusOK},
		{"Exact", "etl", etlSecret, "carol@partner.example", http.StatusOK},
		{"OtherUser", "etl", etlSecret, "mallory@partner.example", http.StatusBadRequest},
		{"LookalikeDomain", "etl", etlSecret, "eve@evilexample.com", http.StatusBadRequest},
		{"OtherAgent", "other", otherSecret, "alice@example.com", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, _ := env.token(t, plain, exchangeForm(env.userToken(t, tc.user, nil)), tc.client, tc.secret)
			if status != tc.want {
				t.Fatalf("%s acting for %s = %d %v; want %d", tc.client, tc.user, status, body, tc.want)
			}
		})
	}
}

// TestIdentityDelegatedUserNeverApproves checks separation of duty for a
// lease an agent requests on a user's behalf: the user, known to the
// identity provider by an opaque sub, is known to approvers by the verified
// email of the token, and may not approve the request; without a verified
// email, a request that needs approval is refused.
func TestIdentityDelegatedUserNeverApproves(t *testing.T) {
	policy := filepath.Join(t.TempDir(), "policy.cedar")
	if err := os.WriteFile(policy, []byte(e2ePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	env := startRefusalEnv(t, func(c *Config) {
		c.OAuth.TrustedIssuers[0].UserClaim = "" // the default, sub
		c.Policy.Files = []string{policy}
		c.Approvers = []*broker.Approver{
			{Email: "alice@example.com", Name: "Alice", Groups: []string{"security"}},
			{Email: "dana@example.com", Name: "Dana", Groups: []string{"security"}},
			{Email: "eve@example.com", Name: "Eve", Groups: []string{"security"}},
		}
	})
	ctx := adminContext(context.Background())
	agentID, _ := env.newIDAgent(t, "etl")
	secret, _ := env.Agents.NewClientSecret(ctx, agentID)
	plain := env.client(nil)

	exchange := func(t *testing.T, extra map[string]any) string {
		t.Helper()
		extra["may_act"] = map[string]any{"sub": "etl"}
		status, body, _ := env.token(t, plain, exchangeForm(env.userToken(t, "alice@example.com", extra)), "etl", secret)
		if status != http.StatusOK {
			t.Fatalf("exchange = %d %v", status, body)
		}
		return body["access_token"].(string)
	}

	t.Run("VerifiedEmail", func(t *testing.T) {
		tok := exchange(t, map[string]any{})
		status, body, _, _ := env.do(t, plain, "POST", "/v1/leases", tok, `{"role":"vault-token","ttl":"10m","task":"rotate keys for alice"}`)
		if status != http.StatusAccepted {
			t.Fatalf("POST /v1/leases = %d %v; want 202 pending", status, body)
		}
		l, err := env.DB.FindLeaseByID(context.Background(), body["id"].(string))
		if err != nil {
			t.Fatal(err)
		}
		if l.OnBehalfOf != "alice@example.com" {
			t.Fatalf("on_behalf_of = %q, want the verified email alice@example.com", l.OnBehalfOf)
		}
		_, err = env.Approvals.Decide(context.Background(), env.Approvals.ApproverByEmail("alice@example.com"),
			approvals.Answer{LeaseID: l.ID, Digest: approvals.Digest(l), Verdict: broker.VerdictApprove, Via: "cli"})
		if broker.ErrorCode(err) != broker.EFORBIDDEN || !strings.Contains(broker.ErrorMessage(err), "on your behalf") {
			t.Fatalf("the user the agent acts for approving = %v; want forbidden", err)
		}
		if got := env.Approvals.EligibleApprovers(l, mustAgent(t, env, agentID)); strings.Join(got, ",") != "Dana,Eve" {
			t.Fatalf("eligible approvers = %v, want Dana and Eve", got)
		}
	})

	t.Run("NoVerifiedEmail", func(t *testing.T) {
		for name, extra := range map[string]map[string]any{
			"Unverified": {"email_verified": false},
			"NoEmail":    {"email": nil},
		} {
			tok := exchange(t, extra)
			status, body, _, _ := env.do(t, plain, "POST", "/v1/leases", tok, `{"role":"vault-token","ttl":"10m","task":"rotate keys"}`)
			if status != http.StatusForbidden || !strings.Contains(fmtAny(body), "verified email") {
				t.Errorf("%s: request needing approval = %d %v; want 403 naming the missing verified email", name, status, body)
			}
			// A role granted without approval needs no approver, so the
			// opaque user id suffices.
			status, body, _, _ = env.do(t, plain, "POST", "/v1/leases", tok, `{"role":"db-readonly","ttl":"10m","task":"read"}`)
			if status != http.StatusCreated {
				t.Errorf("%s: auto-approved request = %d %v; want 201", name, status, body)
				continue
			}
			if l, _ := env.DB.FindLeaseByID(context.Background(), body["id"].(string)); l.OnBehalfOf != "u-alice@example.com" {
				t.Errorf("%s: on_behalf_of = %q, want the user claim u-alice@example.com", name, l.OnBehalfOf)
			}
		}
	})
}

func mustAgent(tb testing.TB, env *idEnv, id string) *broker.Agent {
	tb.Helper()
	a, err := env.DB.FindAgentByID(context.Background(), id)
	if err != nil {
		tb.Fatal(err)
	}
	return a
}
