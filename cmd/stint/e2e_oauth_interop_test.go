package main

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"

	"github.com/stint-broker/stint/broker"
)

// TestIdentityOAuthInteropRules checks what standard clients rely on: a
// client assertion may name the issuer identifier or the token endpoint as
// its audience (RFC 7523 §3 and its update), client_secret_post works, and a
// failed client authentication answers with RFC 6749 §5.2's JSON body and a
// challenge only for the method that has one (HTTP Basic).
func TestIdentityOAuthInteropRules(t *testing.T) {
	env := startRefusalEnv(t, nil)
	ctx := adminContext(context.Background())
	agentID, _ := env.newIDAgent(t, "etl")
	secret, _ := env.Agents.NewClientSecret(ctx, agentID)
	key := env.registerJWK(t, agentID)
	plain := env.client(nil)
	endpoint := env.base + "/oauth/token"

	t.Run("AssertionAudience", func(t *testing.T) {
		for _, aud := range []string{env.base, endpoint} {
			if status, body, _ := env.token(t, plain, env.assertion(t, key, "etl", aud, time.Now(), time.Minute, uuid.NewString()), "", ""); status != http.StatusOK {
				t.Errorf("aud %s = %d %v; want 200", aud, status, body)
			}
		}
		for _, aud := range [][]string{{"https://elsewhere.example"}, {env.base + "/"}, {env.base, "https://elsewhere.example"}} {
			a := signJWTClaims(t, key, "etl", aud)
			status, body, h := env.token(t, plain, a, "", "")
			if status != http.StatusBadRequest || body["error"] != "invalid_client" || !strings.Contains(fmtAny(body["error_description"]), "aud") ||
				h.Get("WWW-Authenticate") != "" {
				t.Errorf("aud %v = %d %v %q; want 400 invalid_client naming aud, no challenge", aud, status, body, h.Get("WWW-Authenticate"))
			}
		}
	})

	t.Run("ClientSecretPost", func(t *testing.T) {
		status, body, _ := env.token(t, plain, url.Values{"grant_type": {"client_credentials"}, "client_id": {"etl"}, "client_secret": {secret}}, "", "")
		if status != http.StatusOK {
			t.Fatalf("client_secret_post = %d %v", status, body)
		}
		if status, method := env.whoami(t, plain, body["access_token"].(string)); status != http.StatusOK || method != broker.AuthClientSecret {
			t.Fatalf("whoami = %d %s", status, method)
		}
		status, body, h := env.token(t, plain, url.Values{"grant_type": {"client_credentials"}, "client_id": {"etl"}, "client_secret": {secret + "x"}}, "", "")
		if status != http.StatusBadRequest || body["error"] != "invalid_client" || body["error_description"] == nil || h.Get("WWW-Authenticate") != "" {
			t.Fatalf("wrong client_secret_post = %d %v %q; want 400 invalid_client without a challenge", status, body, h.Get("WWW-Authenticate"))
		}
		for name, form := range map[string]url.Values{
			"NoClientID": {"grant_type": {"client_credentials"}, "client_secret": {secret}},
			"AndBasic":   {"grant_type": {"client_credentials"}, "client_id": {"etl"}, "client_secret": {secret}},
		} {
			user := ""
			if name == "AndBasic" {
				user = "etl"
			}
			if status, body, _ := env.token(t, plain, form, user, secret); status != http.StatusBadRequest || body["error"] != "invalid_request" {
				t.Errorf("%s = %d %v; want invalid_request", name, status, body)
			}
		}
	})

	t.Run("Challenges", func(t *testing.T) {
		// client_secret_basic: 401 with a Basic challenge (RFC 6749 §5.2).
		status, body, h := env.token(t, plain, url.Values{"grant_type": {"client_credentials"}}, "etl", secret+"x")
		if status != http.StatusUnauthorized || body["error"] != "invalid_client" || body["error_description"] == nil ||
			!strings.HasPrefix(h.Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("wrong Basic secret = %d %v %q; want 401 with a Basic challenge", status, body, h.Get("WWW-Authenticate"))
		}
		// No client authentication at all: 401 naming the scheme it may use.
		status, body, h = env.token(t, plain, url.Values{"grant_type": {"client_credentials"}}, "", "")
		if status != http.StatusUnauthorized || body["error"] != "invalid_client" || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("no client authentication = %d %v %q; want 401 with a Basic challenge", status, body, h.Get("WWW-Authenticate"))
		}
		// private_key_jwt: no HTTP authentication scheme was used, so no
		// challenge; the JSON body says what failed.
		status, body, h = env.token(t, plain, env.assertion(t, mustECKey(), "etl", endpoint, time.Now(), time.Minute, uuid.NewString()), "", "")
		if status != http.StatusBadRequest || body["error"] != "invalid_client" || !strings.Contains(fmtAny(body["error_description"]), "does not verify") ||
			h.Get("WWW-Authenticate") != "" || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
			t.Errorf("bad assertion = %d %v %v; want 400 invalid_client in JSON without a challenge", status, body, h)
		}
	})
}

// signJWTClaims returns a client_credentials form whose assertion for
// client names the audiences aud.
func signJWTClaims(tb testing.TB, key *ecdsa.PrivateKey, client string, aud []string) url.Values {
	tb.Helper()
	now := time.Now()
	a := signJWT(tb, key, "agent-1", map[string]any{"iss": client, "sub": client, "aud": aud,
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": uuid.NewString()})
	return url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {broker.ClientAssertionJWT}, "client_assertion": {a}}
}

// TestOAuthInteropOpenIDClient drives the real server with openid-client
// (v6, on oauth4webapi), a widely used OAuth client for JavaScript:
// discovery, then client_credentials with client_secret_basic,
// client_secret_post and private_key_jwt (which sends the issuer as the
// assertion's audience), with good and bad credentials. It needs node (20
// or later) and npm, and installs the locked packages of
// testdata/oauth-interop in a temporary directory with npm ci.
func TestOAuthInteropOpenIDClient(t *testing.T) {
	node, npm := lookNode(t)
	dir, out, err := npmCI(t, npm, "oauth-interop", "package.json", "package-lock.json", "interop.mjs")
	if err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
	}

	env := startRefusalEnv(t, nil)
	admin := adminContext(context.Background())
	agentID, _ := env.newIDAgent(t, "interop-bot")
	secret, err := env.Agents.NewClientSecret(admin, agentID)
	if err != nil {
		t.Fatal(err)
	}
	key := env.registerJWK(t, agentID)
	privateJWK := func(k *ecdsa.PrivateKey) json.RawMessage {
		b, err := jose.JSONWebKey{Key: k}.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cfg, _ := json.Marshal(map[string]any{
		"issuer": env.base, "client_id": "interop-bot", "client_secret": secret,
		"jwk": privateJWK(key), "kid": "agent-1", "wrong_jwk": privateJWK(mustECKey()),
	})
	cfgPath := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	run := exec.CommandContext(ctx, node, "interop.mjs", cfgPath)
	run.Dir = dir
	run.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+env.serverCAFile)
	var stderr strings.Builder
	run.Stderr = &stderr
	out, err = run.Output()
	if err != nil {
		t.Fatalf("node interop.mjs: %v\n%s%s", err, out, stderr.String())
	}
	type result struct {
		Case             string   `json:"case"`
		OK               bool     `json:"ok"`
		AccessToken      string   `json:"access_token"`
		TokenType        string   `json:"token_type"`
		Name             string   `json:"name"`
		Message          string   `json:"message"`
		Status           int      `json:"status"`
		Error            string   `json:"error"`
		ErrorDescription string   `json:"error_description"`
		Challenges       []string `json:"challenges"`
	}
	results := map[string]result{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("node printed %q: %v", line, err)
		}
		results[r.Case] = r
	}

	for method, want := range map[string]string{
		"client_secret_basic": broker.AuthClientSecret,
		"client_secret_post":  broker.AuthClientSecret,
		"private_key_jwt":     broker.AuthPrivateKeyJWT,
	} {
		t.Run(method, func(t *testing.T) {
			r := results[method]
			if !r.OK || !strings.EqualFold(r.TokenType, "bearer") || r.AccessToken == "" {
				t.Fatalf("openid-client with %s: %+v", method, r)
			}
			if status, got := env.whoami(t, env.client(nil), r.AccessToken); status != http.StatusOK || got != want {
				t.Fatalf("whoami with the token = %d %s, want 200 %s", status, got, want)
			}
		})
		t.Run(method+"_wrong", func(t *testing.T) {
			r := results[method+"_wrong"]
			if r.OK || r.Error != "invalid_client" || r.ErrorDescription == "" {
				t.Fatalf("openid-client with a bad %s: %+v; want invalid_client with Stint's description", method, r)
			}
			if method == "client_secret_basic" {
				// RFC 6749 §5.2: 401 and the scheme the client used.
				if r.Status != http.StatusUnauthorized || r.Name != "WWWAuthenticateChallengeError" || len(r.Challenges) != 1 || r.Challenges[0] != "basic" {
					t.Fatalf("bad client_secret_basic: %+v; want 401 with a Basic challenge", r)
				}
				return
			}
			// No HTTP authentication scheme was used: the client reports
			// the JSON error itself, not a challenge.
			if r.Status != http.StatusBadRequest || r.Name != "ResponseBodyError" || len(r.Challenges) != 0 {
				t.Fatalf("bad %s: %+v; want a 400 ResponseBodyError", method, r)
			}
		})
	}
	if r := results["private_key_jwt_wrong"]; !strings.Contains(r.ErrorDescription, "does not verify") {
		t.Errorf("bad private_key_jwt description %q, want Stint's reason", r.ErrorDescription)
	}
}

// npmCI copies files of testdata/fixture into a temporary directory and
// installs their locked packages there with npm ci (no scripts run). It
// returns the directory, and npm's output with the error when it failed.
func npmCI(t *testing.T, npm, fixture string, files ...string) (string, []byte, error) {
	t.Helper()
	dir := t.TempDir()
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join("testdata", fixture, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts")
	install.Dir = dir
	out, err := install.CombinedOutput()
	return dir, out, err
}

// lookNode returns the paths of node and npm. Without them the test is
// skipped with a how-to, except under CI, where it fails.
func lookNode(t *testing.T) (node, npm string) {
	t.Helper()
	node, errNode := exec.LookPath("node")
	npm, errNPM := exec.LookPath("npm")
	if errNode == nil && errNPM == nil {
		return node, npm
	}
	const howTo = "node (20 or later) and npm are needed to drive Stint with openid-client: apt-get install nodejs npm"
	if os.Getenv("CI") == "true" {
		t.Fatal(howTo)
	}
	t.Skip(howTo)
	return "", ""
}
