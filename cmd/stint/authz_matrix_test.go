package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases/vault"
	"github.com/stint-broker/stint/web"
	"github.com/stint-broker/stint/web/openapitest"
)

// The caller kinds of the authorization matrix. API callers send a bearer
// secret; console callers a session cookie and its CSRF token.
const (
	callAnonymous     = "anonymous"
	callOwnAgent      = "own-agent"   // the agent the route's resources belong to
	callOtherAgent    = "other-agent" // another registered agent
	callApprover      = "approver"    // an approver token; not the agent's owner
	callOwner         = "owner"       // the approver token of the agent's owner
	callAdmin         = "admin"       // an admin token
	callConsoleReview = "console-reviewer"
	callConsoleApprov = "console-approver"
	callConsoleAdmin  = "console-admin"
)

// matrixCallers is every caller kind, in the order each route is tried
// (refusals first; a call that changes something is followed by a fresh
// server anyway).
var matrixCallers = []string{
	callAnonymous, callOtherAgent, callApprover, callOwner, callConsoleReview,
	callOwnAgent, callConsoleApprov, callAdmin, callConsoleAdmin,
}

// Statuses the matrix uses, by what they mean for the caller.
const (
	sOK        = http.StatusOK
	sAccepted  = http.StatusAccepted // a containment whose revocations wait for the queue
	sCreated   = http.StatusCreated
	sRedirect  = http.StatusSeeOther // the console: to the login form, or after a change
	sNoAuth    = http.StatusUnauthorized
	sForbidden = http.StatusForbidden
	sNotFound  = http.StatusNotFound
	sConflict  = http.StatusConflict
	sInvalid   = http.StatusBadRequest
	sNoContent = http.StatusNoContent
)

// matrixRow is one route's expected status for each caller kind.
type matrixRow map[string]int

// apiRow is the row of a route every API caller may use.
func apiRow(anon, other, approver, owner, own, admin int) matrixRow {
	return matrixRow{
		callAnonymous: anon, callOtherAgent: other, callApprover: approver, callOwner: owner,
		callOwnAgent: own, callAdmin: admin,
		// Console sessions do not authenticate on the API.
		callConsoleReview: sNoAuth, callConsoleApprov: sNoAuth, callConsoleAdmin: sNoAuth,
	}
}

// everyoneRow is the row of a public route: every caller gets status.
func everyoneRow(status int) matrixRow {
	r := matrixRow{}
	for _, c := range matrixCallers {
		r[c] = status
	}
	return r
}

// consoleRow is the row of a console page: API callers have no session and
// are sent to the login form.
func consoleRow(reviewer, approver, admin int) matrixRow {
	return matrixRow{
		callAnonymous: sRedirect, callOtherAgent: sRedirect, callApprover: sRedirect, callOwner: sRedirect,
		callOwnAgent: sRedirect, callAdmin: sRedirect,
		callConsoleReview: reviewer, callConsoleApprov: approver, callConsoleAdmin: admin,
	}
}

// consolePostRow is the row of a console form: without a session there is no
// CSRF token to match, so API callers are refused before anything else.
func consolePostRow(reviewer, approver, admin int) matrixRow {
	r := consoleRow(reviewer, approver, admin)
	for _, c := range []string{callAnonymous, callOtherAgent, callApprover, callOwner, callOwnAgent, callAdmin} {
		r[c] = sForbidden
	}
	return r
}

// authzMatrix is every route of a fully configured server (console, OAuth,
// Slack over HTTP, /metrics on the API listener, approvers with tokens) and
// what each caller kind gets. TestAuthorizationMatrix fails for a route the
// server registers that has no row here, and for a row of a route it does
// not register.
var authzMatrix = map[string]matrixRow{
	"GET /":        everyoneRow(sRedirect),
	"GET /healthz": everyoneRow(sOK),
	"GET /readyz":  everyoneRow(sOK),
	// Crawlers are told to stay out; no credential is asked for.
	"GET /robots.txt": everyoneRow(sOK),
	// The OpenAPI document is public.
	"GET /openapi.json": everyoneRow(sOK),
	"GET /openapi.yaml": everyoneRow(sOK),

	// /metrics checks its own token, which no caller here holds.
	"GET /metrics": everyoneRow(sNoAuth),

	// OAuth authenticates its clients itself; a bearer secret is no client
	// authentication (the request is refused as malformed before that).
	"POST /oauth/token":                           everyoneRow(sInvalid),
	"GET /oauth/jwks.json":                        everyoneRow(sOK),
	"GET /.well-known/oauth-authorization-server": everyoneRow(sOK),
	"POST /slack/interactions":                    everyoneRow(sNoAuth), // unsigned

	// MCP: the endpoint takes only access tokens issued for it, which no
	// caller here holds; its metadata is public.
	"POST /mcp":   everyoneRow(sNoAuth),
	"GET /mcp":    everyoneRow(sNoAuth),
	"DELETE /mcp": everyoneRow(sNoAuth),
	"GET /.well-known/oauth-protected-resource":     everyoneRow(sOK),
	"GET /.well-known/oauth-protected-resource/mcp": everyoneRow(sOK),

	//                                  anonymous other-agent approver owner own-agent admin
	"GET /v1/whoami": apiRow(sNoAuth, sOK, sOK, sOK, sOK, sOK),
	// Roles are what an agent may request: other actors have none.
	"GET /v1/roles": apiRow(sNoAuth, sOK, sNotFound, sNotFound, sOK, sOK),

	"POST /v1/leases": apiRow(sNoAuth, sCreated, sForbidden, sForbidden, sCreated, sForbidden),
	// A dry run answers for the calling agent; humans request nothing.
	"POST /v1/leases/preview": apiRow(sNoAuth, sOK, sForbidden, sForbidden, sOK, sForbidden),
	// stint mcp records its tool calls; only agents have any.
	"POST /v1/mcp/calls": apiRow(sNoAuth, sNoContent, sForbidden, sForbidden, sNoContent, sForbidden),
	// Lists are cut to the caller's own leases (none for humans' tokens;
	// TestAuthorizationMatrix checks they come back empty).
	"GET /v1/leases":             apiRow(sNoAuth, sOK, sOK, sOK, sOK, sOK),
	"GET /v1/leases/:id":         apiRow(sNoAuth, sNotFound, sNotFound, sNotFound, sOK, sOK),
	"GET /v1/leases/:id/events":  apiRow(sNoAuth, sNotFound, sNotFound, sNotFound, sOK, sOK),
	"DELETE /v1/leases/:id":      apiRow(sNoAuth, sNotFound, sNotFound, sNotFound, sOK, sOK),
	"POST /v1/leases/:id/revoke": apiRow(sNoAuth, sForbidden, sForbidden, sForbidden, sForbidden, sOK),
	// A task's leases: an agent releases its own (none for another agent),
	// an admin every agent's; approvers hold no leases. Revoking is admin
	// work.
	"POST /v1/tasks/:task/release": apiRow(sNoAuth, sOK, sForbidden, sForbidden, sOK, sOK),
	"POST /v1/tasks/:task/revoke":  apiRow(sNoAuth, sForbidden, sForbidden, sForbidden, sForbidden, sOK),
	// The lease is pending (conflict: authorized, nothing to activate yet).
	"POST /v1/leases/:id/activate": apiRow(sNoAuth, sNotFound, sForbidden, sForbidden, sConflict, sForbidden),
	"POST /v1/leases/:id/cancel":   apiRow(sNoAuth, sNotFound, sNotFound, sNotFound, sOK, sOK),
	// Within the first half of the window (conflict: authorized, too early).
	"POST /v1/leases/:id/extend": apiRow(sNoAuth, sNotFound, sForbidden, sForbidden, sConflict, sForbidden),
	// Only approvers decide, never the agent's owner; admins are not
	// approvers.
	"GET /v1/approvals":           apiRow(sNoAuth, sForbidden, sOK, sOK, sForbidden, sForbidden),
	"POST /v1/leases/:id/approve": apiRow(sNoAuth, sForbidden, sOK, sForbidden, sForbidden, sForbidden),
	"POST /v1/leases/:id/deny":    apiRow(sNoAuth, sForbidden, sOK, sForbidden, sForbidden, sForbidden),

	// Reviews: the agent's owner and admins; another approver is told the
	// review is not theirs (403), for viewing as for attesting.
	"GET /v1/reviews":             apiRow(sNoAuth, sForbidden, sOK, sOK, sForbidden, sOK),
	"GET /v1/reviews/:id":         apiRow(sNoAuth, sForbidden, sForbidden, sOK, sForbidden, sOK),
	"POST /v1/reviews/:id/attest": apiRow(sNoAuth, sForbidden, sForbidden, sOK, sForbidden, sOK),
	// An access review is closed by attesting, not by close (conflict).
	"POST /v1/reviews/:id/close": apiRow(sNoAuth, sForbidden, sForbidden, sConflict, sForbidden, sConflict),
	"POST /v1/reviews/run":       apiRow(sNoAuth, sForbidden, sForbidden, sForbidden, sForbidden, sOK),

	"POST /v1/agents":                apiRow(sNoAuth, sForbidden, sForbidden, sForbidden, sForbidden, sCreated),
	"GET /v1/agents":                 apiRow(sNoAuth, sForbidden, sForbidden, sForbidden, sForbidden, sOK),
	"GET /v1/agents/:id":             apiRow(sNoAuth, sForbidden, sForbidden, sForbidden, sForbidden, sOK),
	"POST /v1/agents/:id/rotate-key": apiRow(sNoAuth, sForbidden, sForbidden, sForbidden, sForbidden, sOK),
	// The kill switch answers at once here (?wait=0) and no queue runs in
	// the matrix, so the admin's containment is accepted, not yet done.
	"POST /v1/agents/:id/suspend":     apiRow(sNoAuth, sForbidden, sForbidden, sForbidden, sForbidden, sAccepted),
	"POST /v1/agents/:id/disable":     apiRow(sNoAuth, sForbidden, sForbidden, sForbidden, sForbidden, sAccepted),
	"POST /v1/agents/:id/activate":    apiRow(sNoAuth, sForbidden, sForbidden, sForbidden, sForbidden, sOK),
	"POST /v1/agents/:id/revoke-all":  apiRow(sNoAuth, sForbidden, sForbidden, sForbidden, sForbidden, sAccepted),
	"GET /v1/agents/:id/containments": apiRow(sNoAuth, sForbidden, sForbidden, sForbidden, sForbidden, sOK),
	"GET /v1/containments/:id":        apiRow(sNoAuth, sForbidden, sForbidden, sForbidden, sForbidden, sOK),

	"GET /console/static/*": everyoneRow(sOK),
	// SSO is public and refuses alike whoever calls: here the provider is
	// unreachable, and the callback comes without the flow's cookie.
	"GET /console/login/oidc":          everyoneRow(sNoAuth),
	"GET /console/login/oidc/callback": everyoneRow(sNoAuth),
	// Logged-in users are sent on from the login form.
	"GET /console/login":  consoleRow(sRedirect, sRedirect, sRedirect).with(sOK, callAnonymous, callOtherAgent, callApprover, callOwner, callOwnAgent, callAdmin),
	"POST /console/login": everyoneRow(sNoAuth), // a wrong password
	"GET /console":        consoleRow(sRedirect, sRedirect, sRedirect),
	"GET /console/":       consoleRow(sRedirect, sRedirect, sRedirect),
	// Unknown console pages: the login form without a session, 404 with
	// one; another method than GET on /console has no CSRF token to match
	// without a session.
	"echo_route_not_found /console":   consolePostRow(sNotFound, sNotFound, sNotFound),
	"echo_route_not_found /console/*": consoleRow(sNotFound, sNotFound, sNotFound),
	//                                          reviewer approver admin
	"GET /console/leases":                 consoleRow(sOK, sOK, sOK),
	"GET /console/history":                consoleRow(sOK, sOK, sOK),
	"GET /console/leases/:id":             consoleRow(sOK, sOK, sOK),
	"GET /console/agents":                 consoleRow(sOK, sOK, sOK),
	"GET /console/tasks":                  consoleRow(sOK, sOK, sOK),
	"POST /console/tasks/revoke":          consolePostRow(sForbidden, sForbidden, sRedirect),
	"GET /console/approvals":              consoleRow(sOK, sOK, sOK),
	"GET /console/audit":                  consoleRow(sOK, sOK, sOK),
	"POST /console/logout":                consolePostRow(sRedirect, sRedirect, sRedirect),
	"POST /console/audit/verify":          consolePostRow(sRedirect, sRedirect, sRedirect),
	"POST /console/leases/:id/revoke":     consolePostRow(sForbidden, sForbidden, sRedirect),
	"POST /console/agents/:id/revoke-all": consolePostRow(sForbidden, sForbidden, sRedirect),
	"POST /console/agents/:id/disable":    consolePostRow(sForbidden, sForbidden, sRedirect),
	"GET /console/containments/:id":       consoleRow(sForbidden, sForbidden, sOK),
	// A console admin without an approver email decides nothing.
	"POST /console/approvals/:id/approve": consolePostRow(sForbidden, sRedirect, sForbidden),
	"POST /console/approvals/:id/deny":    consolePostRow(sForbidden, sRedirect, sForbidden),
}

// with returns r with status for callers.
func (r matrixRow) with(status int, callers ...string) matrixRow {
	for _, c := range callers {
		r[c] = status
	}
	return r
}

// matrixWorld is one freshly wired Stint (as the binary wires it, with an
// issuer that mints nothing) and the callers' secrets and resources.
type matrixWorld struct {
	m       *Main
	handler http.Handler

	secrets map[string]string // API caller → bearer secret
	cookies map[string]string // console caller → session token
	csrf    map[string]string // console caller → CSRF token

	ownAgent, otherAgent    *broker.Agent
	activeLease, pendingID  string
	pendingDigest, reviewID string
	containmentID           string // of a third agent, with nothing left to revoke
}

const (
	matrixMetricsToken = "matrix-metrics-token"
	matrixDanaToken    = "matrix-approver-dana"
	matrixOwnerToken   = "matrix-approver-owner"
)

const matrixPolicy = `
@id("low-auto")
permit (principal is Agent, action == Action::"request", resource is Role)
when { resource.sensitivity == "low" };

@id("medium-one-security")
@approvals("1")
@approvers("security")
permit (principal is Agent, action == Action::"request", resource is Role)
when { resource.sensitivity == "medium" };

@id("extend-low")
permit (principal is Agent, action == Action::"extend", resource is Role)
when { resource.sensitivity == "low" };
`

func matrixSHA256(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func newMatrixWorld(t *testing.T) *matrixWorld {
	t.Helper()
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Store.Path = filepath.Join(dir, "stint.db")
	cfg.Vault.Address = "http://127.0.0.1:1" // never called: the issuer is replaced
	cfg.Limits = LimitsConfig{}
	cfg.Roles = vault.DevRoles() // db-readonly is auto-approved, vault-token needs an approval
	cfg.Roles[0].MaxExtensions = 3
	policy := filepath.Join(dir, "policy.cedar")
	if err := os.WriteFile(policy, []byte(matrixPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Policy.Files = []string{policy}
	cfg.Metrics.TokenSHA256 = matrixSHA256(matrixMetricsToken)
	cfg.OAuth = OAuthConfig{Enabled: true, Issuer: "http://stint.test", SigningKeyFile: filepath.Join(dir, "oauth.pem"), TokenTTL: 5 * time.Minute}
	cfg.MCP.Enabled = true
	cfg.Approvers = []*broker.Approver{
		{Email: "dana@example.com", Name: "Dana", Groups: []string{"security"}, TokenSHA256: matrixSHA256(matrixDanaToken)},
		{Email: "owner@example.com", Name: "Owner", Groups: []string{"security"}, TokenSHA256: matrixSHA256(matrixOwnerToken)},
	}
	slackAPI := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true,"channel":"C0","ts":"1.0"}`)
	}))
	t.Cleanup(slackAPI.Close)
	cfg.Slack.Enabled, cfg.Slack.DefaultChannel, cfg.Slack.APIURL = true, "C0APPROVALS", slackAPI.URL+"/"
	// SSO: the provider is never reached (its discovery document is fetched
	// on the first SSO login), but its routes are registered.
	t.Setenv("STINT_MATRIX_OIDC_SECRET", "matrix-oidc-secret")
	cfg.Console.OIDC = &OIDCConfig{Issuer: "http://127.0.0.1:1", ClientID: "stint-console", ClientSecretEnv: "STINT_MATRIX_OIDC_SECRET",
		RedirectURL: "http://stint.test/console/login/oidc/callback"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}

	m := NewMain(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	m.Issuer = &noopIssuer{}
	m.Getenv = func(name string) string {
		switch name {
		case cfg.Admin.TokenEnv:
			return testAdminToken
		case cfg.Slack.BotTokenEnv:
			return "xoxb-matrix"
		case cfg.Slack.SigningSecretEnv:
			return "matrix-signing-secret"
		}
		return ""
	}
	if err := m.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	w := &matrixWorld{m: m, handler: openapitest.Handler(t, m.HTTP.Handler()),
		secrets: map[string]string{callAdmin: testAdminToken, callApprover: matrixDanaToken, callOwner: matrixOwnerToken},
		cookies: map[string]string{}, csrf: map[string]string{},
	}

	ctx := broker.NewContextWithActor(context.Background(), broker.Actor{Kind: broker.ActorAdmin, Name: "matrix"})
	var err error
	var key string
	if w.ownAgent, key, _, err = m.Agents.CreateAgent(ctx, broker.NewAgent{Name: "own-bot", Owner: "owner@example.com"}); err != nil {
		t.Fatal(err)
	}
	w.secrets[callOwnAgent] = key
	if w.otherAgent, key, _, err = m.Agents.CreateAgent(ctx, broker.NewAgent{Name: "other-bot", Owner: "someone@example.com"}); err != nil {
		t.Fatal(err)
	}
	w.secrets[callOtherAgent] = key

	// The own agent's resources: an active lease, a pending one, and an
	// access review its owner owes.
	status, body := w.api(t, "POST", "/v1/leases", w.secrets[callOwnAgent], `{"role":"db-readonly","ttl":"10m","task":"matrix"}`)
	if status != http.StatusCreated {
		t.Fatalf("active lease: %d %s", status, body)
	}
	w.activeLease = matrixJSONField(t, body, "id")
	status, body = w.api(t, "POST", "/v1/leases", w.secrets[callOwnAgent], `{"role":"vault-token","ttl":"10m","task":"matrix"}`)
	if status != http.StatusAccepted {
		t.Fatalf("pending lease: %d %s", status, body)
	}
	w.pendingID = matrixJSONField(t, body, "id")
	status, body = w.api(t, "GET", "/v1/approvals", matrixDanaToken, "")
	if status != http.StatusOK {
		t.Fatalf("GET /v1/approvals as an approver: %d %s", status, body)
	}
	var pending struct {
		Approvals []struct {
			Lease  struct{ ID string } `json:"lease"`
			Digest string              `json:"digest"`
		} `json:"approvals"`
	}
	json.Unmarshal([]byte(body), &pending)
	for _, p := range pending.Approvals {
		if p.Lease.ID == w.pendingID {
			w.pendingDigest = p.Digest
		}
	}
	if w.pendingDigest == "" {
		t.Fatalf("no digest for %s in %s", w.pendingID, body)
	}
	status, body = w.api(t, "POST", "/v1/reviews/run", testAdminToken, `{}`)
	var reviews struct {
		Reviews []struct {
			ID      string `json:"id"`
			AgentID string `json:"agent_id"`
		} `json:"reviews"`
	}
	json.Unmarshal([]byte(body), &reviews)
	for _, r := range reviews.Reviews {
		if r.AgentID == w.ownAgent.ID {
			w.reviewID = r.ID
		}
	}
	if status != http.StatusOK || w.reviewID == "" {
		t.Fatalf("POST /v1/reviews/run: %d %s, want a review of own-bot", status, body)
	}
	if _, _, _, err := w.m.Agents.CreateAgent(adminContext(t.Context()), broker.NewAgent{Name: "contained-bot", Owner: "owner@example.com"}); err != nil {
		t.Fatal(err)
	}
	status, body = w.api(t, "POST", "/v1/agents/contained-bot/revoke-all", testAdminToken, `{"reason":"matrix"}`)
	var cnt struct{ ID string }
	if json.Unmarshal([]byte(body), &cnt); status != http.StatusOK || cnt.ID == "" {
		t.Fatalf("POST /v1/agents/contained-bot/revoke-all: %d %s, want a containment", status, body)
	}
	w.containmentID = cnt.ID

	// Console users, logged in by sessions made in the store. The password
	// hash is never checked: nobody logs in with a password here.
	for caller, u := range map[string]*broker.User{
		callConsoleReview: {Name: "rita", Role: broker.RoleReviewer},
		callConsoleApprov: {Name: "dana", Role: broker.RoleApprover, Email: "dana@example.com"},
		callConsoleAdmin:  {Name: "ada", Role: broker.RoleAdmin},
	} {
		u.PasswordHash = "$2a$04$matrixmatrixmatrixmatrixmatrixmatrixmatrixmatrixmatri"
		if err := m.DB.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		token := caller + "-session-token-0123456789abcdefghijklmno"
		now := time.Now().UTC()
		if err := m.DB.CreateSession(ctx, &broker.Session{ID: matrixSHA256(token), UserID: u.ID, CreatedAt: now,
			ExpiresAt: now.Add(time.Hour), IdleExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		w.cookies[caller] = token
		w.csrf[caller] = w.consoleCSRF(t, token)
	}
	return w
}

func matrixJSONField(t *testing.T, body, name string) string {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	s, _ := v[name].(string)
	if s == "" {
		t.Fatalf("no %s in %s", name, body)
	}
	return s
}

// api sends one API request with a bearer secret ("" for none).
func (w *matrixWorld) api(t *testing.T, method, path, secret, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	w.handler.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

var matrixCSRFInput = regexp.MustCompile(`name="_csrf" value="([^"]+)"`)

// consoleCSRF reads the CSRF token a console page gives the session.
func (w *matrixWorld) consoleCSRF(t *testing.T, token string) string {
	t.Helper()
	req := httptest.NewRequest("GET", "/console/leases", nil)
	req.AddCookie(&http.Cookie{Name: "stint_session", Value: token})
	rec := httptest.NewRecorder()
	w.handler.ServeHTTP(rec, req)
	m := matrixCSRFInput.FindStringSubmatch(rec.Body.String())
	if rec.Code != http.StatusOK || m == nil {
		t.Fatalf("GET /console/leases with a session: %d, no CSRF token", rec.Code)
	}
	return m[1]
}

// target fills a route's parameters with the own agent's resources and
// gives the body a caller sends.
func (w *matrixWorld) target(route web.Route) (path, body string) {
	path = route.Path
	lease := w.activeLease
	switch {
	case strings.HasSuffix(path, "/approve"), strings.HasSuffix(path, "/deny"),
		strings.HasSuffix(path, "/activate") && strings.HasPrefix(path, "/v1/leases"),
		strings.HasSuffix(path, "/cancel"):
		lease = w.pendingID
	}
	switch {
	case strings.HasPrefix(path, "/v1/agents/:id"), strings.HasPrefix(path, "/console/agents/:id"):
		path = strings.Replace(path, ":id", w.ownAgent.ID, 1)
	case strings.HasPrefix(path, "/v1/tasks/:task"):
		path = strings.Replace(path, ":task", "matrix", 1)
	case strings.HasPrefix(path, "/v1/reviews/:id"):
		path = strings.Replace(path, ":id", w.reviewID, 1)
	case strings.HasPrefix(path, "/v1/containments/:id"), strings.HasPrefix(path, "/console/containments/:id"):
		path = strings.Replace(path, ":id", w.containmentID, 1)
	default:
		path = strings.Replace(path, ":id", lease, 1)
	}
	if route.Method == notFoundRoute {
		path = strings.Replace(path, "*", "no-such-page", 1)
	}
	path = strings.Replace(path, "*", "console.css", 1)
	switch route.Method + " " + route.Path {
	case "POST /v1/leases":
		body = `{"role":"db-readonly","ttl":"5m","task":"matrix"}`
	case "POST /v1/leases/preview":
		body = `{"role":"db-readonly","task":"matrix"}`
	case "POST /v1/mcp/calls":
		body = `{"tool":"list_roles","client":"matrix","session":"s1"}`
	case "POST /mcp":
		body = `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	case "POST /v1/leases/:id/revoke", "POST /v1/tasks/:task/revoke":
		body = `{"reason":"matrix"}`
	case "POST /v1/agents/:id/suspend", "POST /v1/agents/:id/disable", "POST /v1/agents/:id/revoke-all":
		path += "?wait=0"
		body = `{"reason":"matrix"}`
	case "POST /v1/leases/:id/approve":
		body = fmt.Sprintf(`{"digest":%q}`, w.pendingDigest)
	case "POST /v1/leases/:id/deny":
		body = fmt.Sprintf(`{"digest":%q,"reason":"matrix"}`, w.pendingDigest)
	case "POST /v1/leases/:id/extend":
		body = `{"ttl":"15m"}`
	case "POST /v1/reviews/:id/attest":
		body = `{"role":"db-readonly","verdict":"keep","note":"matrix"}`
	case "POST /v1/reviews/:id/close":
		body = `{"note":"matrix"}`
	case "POST /v1/agents":
		body = `{"name":"new-bot","owner":"owner@example.com"}`
	case "POST /console/login":
		body = url.Values{"name": {"rita"}, "password": {"wrong password"}}.Encode()
	case "POST /console/approvals/:id/approve":
		body = url.Values{"digest": {w.pendingDigest}}.Encode()
	case "POST /console/approvals/:id/deny":
		body = url.Values{"digest": {w.pendingDigest}, "reason": {"matrix"}}.Encode()
	case "POST /console/leases/:id/revoke", "POST /console/agents/:id/revoke-all", "POST /console/agents/:id/disable":
		body = url.Values{"reason": {"matrix"}}.Encode()
	case "POST /console/tasks/revoke":
		body = url.Values{"task": {"matrix"}, "reason": {"matrix"}}.Encode()
	default:
		if route.Method == "POST" && strings.HasPrefix(route.Path, "/v1/") {
			body = `{}`
		}
	}
	return path, body
}

// call sends route as caller and returns the status. A session holder
// redirected to the login form fails the test: that 303 would pass for a
// console success.
func (w *matrixWorld) call(t *testing.T, route web.Route, caller string) int {
	t.Helper()
	path, body := w.target(route)
	method := route.Method
	if method == notFoundRoute {
		method = http.MethodGet
		if route.Path == "/console" {
			// GET /console is a page; another method is not.
			method = http.MethodPut
		}
	}
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	// Each caller has an address of its own, as callers do: one caller's
	// failed logins do not throttle another's.
	req.RemoteAddr = fmt.Sprintf("192.0.2.%d:40000", 10+slices.Index(matrixCallers, caller))
	if secret := w.secrets[caller]; secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	if strings.HasPrefix(route.Path, "/console") {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token := w.cookies[caller]; token != "" {
		req.AddCookie(&http.Cookie{Name: "stint_session", Value: token})
		req.Header.Set("X-CSRF-Token", w.csrf[caller])
	}
	if route.Path == "/console/login" && route.Method == "POST" && w.cookies[caller] == "" {
		// The login form's own double-submit token.
		req.AddCookie(&http.Cookie{Name: "stint_login_csrf", Value: strings.Repeat("a", 43)})
		req.Header.Set("X-CSRF-Token", strings.Repeat("a", 43))
	}
	rec := httptest.NewRecorder()
	w.handler.ServeHTTP(rec, req)
	if loc := rec.Header().Get("Location"); w.cookies[caller] != "" && strings.HasPrefix(loc, "/console/login") && loc != "/console/login?done=loggedout" {
		t.Errorf("%s %s as %s: sent to the login form (%s) despite a session", route.Method, path, caller, loc)
	}
	return rec.Code
}

// notFoundRoute is the method echo lists for the catch-all a group with
// middleware registers: unknown paths under it.
const notFoundRoute = "echo_route_not_found"

// TestAuthorizationMatrix calls every route the server registers as every
// kind of caller, each route on a fresh server, and compares the status
// with authzMatrix. A new route fails it until it has a row.
func TestAuthorizationMatrix(t *testing.T) {
	routes := newMatrixWorld(t).m.HTTP.Routes()
	seen := map[string]bool{}
	for _, r := range routes {
		key := r.Method + " " + r.Path
		seen[key] = true
		if _, found := authzMatrix[key]; !found {
			t.Errorf("route %s has no matrixRow in authzMatrix: add what each caller kind must get", key)
		}
	}
	for key := range authzMatrix {
		if !seen[key] {
			t.Errorf("authzMatrix has a matrixRow for %s, which the server does not register", key)
		}
	}
	// Listings answer 200 to callers who may list, but only with what is
	// theirs: the own agent's leases and review are not in them.
	t.Run("listings hold only the caller's own", func(t *testing.T) {
		w := newMatrixWorld(t)
		for _, c := range []struct{ caller, path string }{
			{callApprover, "/v1/leases"}, {callOwner, "/v1/leases"}, {callOtherAgent, "/v1/leases"},
			{callApprover, "/v1/reviews"},
		} {
			status, body := w.api(t, "GET", c.path, w.secrets[c.caller], "")
			if status != http.StatusOK || !strings.Contains(body, `"total":0`) {
				t.Errorf("GET %s as %s = %d %s, want 200 and nothing", c.path, c.caller, status, body)
			}
		}
		if status, body := w.api(t, "GET", "/v1/reviews", matrixOwnerToken, ""); status != http.StatusOK || !strings.Contains(body, w.reviewID) {
			t.Errorf("GET /v1/reviews as the owner = %d %s, want the own agent's review", status, body)
		}
	})

	// STINT_MATRIX_PROBE=1 logs what each caller gets instead of checking,
	// to write a new route's row.
	probe := os.Getenv("STINT_MATRIX_PROBE") != ""
	for _, r := range routes {
		key := r.Method + " " + r.Path
		want, found := authzMatrix[key]
		if !found {
			continue
		}
		t.Run(strings.ReplaceAll(key, "/", "_"), func(t *testing.T) {
			w := newMatrixWorld(t)
			var got []string
			for _, caller := range matrixCallers {
				status := w.call(t, r, caller)
				if r.Method != http.MethodGet && status < 400 {
					// The call changed something: the next caller gets a
					// world as it was, so that each cell stands alone.
					w = newMatrixWorld(t)
				}
				if probe {
					got = append(got, fmt.Sprintf("%s=%d", caller, status))
					continue
				}
				if status != want[caller] {
					t.Errorf("%s as %s = %d, want %d", key, caller, status, want[caller])
				}
			}
			if probe {
				t.Logf("%s: %s", key, strings.Join(got, " "))
			}
		})
	}
}
