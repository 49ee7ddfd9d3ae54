package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases/vault"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
	"github.com/stint-broker/stint/web/client"
	mcptools "github.com/stint-broker/stint/web/mcp"
)

// mcpPolicy grants low-sensitivity roles at once and sends medium ones to
// one approver of security.
const mcpPolicy = `
@id("low-auto")
permit (principal is Agent, action == Action::"request", resource is Role)
when { resource.sensitivity == "low" };

@id("medium-one-security")
@approvals("1")
@approvers("security")
@reason("Medium-sensitivity role: one approval from security.")
permit (principal is Agent, action == Action::"request", resource is Role)
when { resource.sensitivity == "medium" };
`

const mcpApproverToken = "mcp-e2e-approver-token"

// mcpEnv is a running Stint with OAuth and the MCP endpoint on, roles
// db-readonly (low, granted at once), db-approved (medium, one approval)
// and vault-token (low, returned inline to MCP clients), and an agent that
// authenticates with a client secret.
type mcpEnv struct {
	*stint
	agentID, agentKey, clientSecret string
}

func startMCPEnv(t *testing.T, dv *vault.DevServer) *mcpEnv {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	policy := filepath.Join(dir, "policy.cedar")
	if err := os.WriteFile(policy, []byte(mcpPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := e2eConfig(t, dv, filepath.Join(dir, "stint.db"))
	cfg.Listen = addr
	cfg.Policy.Files = []string{policy}
	approved := *cfg.Roles[0]
	approved.Name, approved.Sensitivity = "db-approved", broker.SensitivityMedium
	cfg.Roles = append(cfg.Roles, &approved)
	for _, r := range cfg.Roles {
		if r.Name == "vault-token" {
			r.Sensitivity, r.MCP.InlineSecret = broker.SensitivityLow, true
		}
	}
	sum := sha256.Sum256([]byte(mcpApproverToken))
	cfg.Approvers = []*broker.Approver{{Email: "dana@example.com", Name: "Dana", Groups: []string{"security"}, TokenSHA256: hex.EncodeToString(sum[:])}}
	cfg.OAuth = OAuthConfig{Enabled: true, Issuer: "http://" + addr, SigningKeyFile: filepath.Join(dir, "oauth.pem"), TokenTTL: 5 * time.Minute}
	cfg.MCP = MCPConfig{Enabled: true, MaxWait: 20 * time.Second}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s := startStint(t, dv, cfg, nil)
	a, key, _, err := s.Agents.CreateAgent(adminContext(context.Background()),
		broker.NewAgent{Name: "llm-agent", Owner: "owner@example.com", AuthMethods: []string{broker.AuthAPIKey, broker.AuthClientSecret}})
	if err != nil {
		t.Fatal(err)
	}
	secret, err := s.Agents.NewClientSecret(adminContext(context.Background()), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	return &mcpEnv{stint: s, agentID: a.ID, agentKey: key, clientSecret: secret}
}

// token asks the token endpoint for an access token with the given form
// fields (resource, scope) and returns the status and JSON answer.
func (e *mcpEnv) token(t *testing.T, extra url.Values) (int, map[string]any) {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}}
	for k, v := range extra {
		form[k] = v
	}
	req, _ := http.NewRequest("POST", e.url+"/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("llm-agent", e.clientSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func (e *mcpEnv) mcpToken(t *testing.T, scope string) string {
	t.Helper()
	form := url.Values{"resource": {e.url + "/mcp"}}
	if scope != "" {
		form.Set("scope", scope)
	}
	status, body := e.token(t, form)
	if status != http.StatusOK {
		t.Fatalf("token for the MCP resource = %d %v", status, body)
	}
	return body["access_token"].(string)
}

// bearer adds an Authorization header to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// connectHTTP opens an MCP client session to /mcp with token.
func (e *mcpEnv) connectHTTP(t *testing.T, token string) *sdk.ClientSession {
	t.Helper()
	c := sdk.NewClient(&sdk.Implementation{Name: "e2e-mcp-client", Version: "1.0"}, nil)
	cs, err := c.Connect(t.Context(), &sdk.StreamableClientTransport{
		Endpoint: e.url + "/mcp", HTTPClient: &http.Client{Transport: bearer{token, http.DefaultTransport}}, MaxRetries: -1,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// connectLocal serves the tools as `stint mcp` does beside the agent: over
// the HTTP API with the agent's API key, credentials to files in a fresh
// directory. The MCP transport is in memory instead of stdin and stdout.
func (e *mcpEnv) connectLocal(t *testing.T, progress func(*sdk.ProgressNotificationParams)) (*sdk.ClientSession, *mcptools.FileDelivery, *mcptools.API) {
	t.Helper()
	c, err := client.New(e.url, client.WithAPIKey(e.agentKey))
	if err != nil {
		t.Fatal(err)
	}
	srv, files, api, err := newStdioMCP(c, filepath.Join(t.TempDir(), "creds"), 20*time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { files.Close() })
	st, ct := sdk.NewInMemoryTransports()
	ss, err := srv.Connect(t.Context(), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	opts := &sdk.ClientOptions{}
	if progress != nil {
		opts.ProgressNotificationHandler = func(_ context.Context, r *sdk.ProgressNotificationClientRequest) { progress(r.Params) }
	}
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "e2e-local-client", Version: "1.0"}, opts).Connect(t.Context(), ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs, files, api
}

// callTool calls a tool and returns its result as JSON (the whole result,
// as the model's client receives it) and its structured content.
func callTool(t *testing.T, cs *sdk.ClientSession, name string, args map[string]any) (raw string, out map[string]any, isError bool) {
	t.Helper()
	return callToolMeta(t, cs, &sdk.CallToolParams{Name: name, Arguments: args})
}

func callToolMeta(t *testing.T, cs *sdk.ClientSession, p *sdk.CallToolParams) (raw string, out map[string]any, isError bool) {
	t.Helper()
	res, err := cs.CallTool(t.Context(), p)
	if err != nil {
		t.Fatalf("%s: %v", p.Name, err)
	}
	b, _ := json.Marshal(res)
	out, _ = res.StructuredContent.(map[string]any)
	if out == nil && res.StructuredContent != nil {
		sb, _ := json.Marshal(res.StructuredContent)
		json.Unmarshal(sb, &out)
	}
	return string(b), out, res.IsError
}

// toolText is the text content of a tool result (an error's message).
func toolText(raw string) string {
	var r struct {
		Content []struct {
			Text string `json:"text"`
		} `json:"content"`
	}
	json.Unmarshal([]byte(raw), &r)
	var parts []string
	for _, c := range r.Content {
		parts = append(parts, c.Text)
	}
	return strings.Join(parts, " ")
}

// psqlWith runs psql with a libpq service file and returns current_user.
func psqlWith(serviceFile string) (string, error) {
	cmd := exec.Command("psql", "-X", "-tAc", "select current_user")
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "PGSERVICEFILE="+serviceFile, "PGSERVICE=stint", "PGCONNECT_TIMEOUT=5")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", errors.New(strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// serviceField reads key=value from a pg service file.
func serviceField(t *testing.T, path, key string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			return v
		}
	}
	t.Fatalf("%s has no %s", path, key)
	return ""
}

func TestMCPEndToEnd(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		missingService(t, "psql is not installed: install the PostgreSQL client (apt-get install postgresql-client)")
	}
	dv := vaulttest.Start(t)
	e := startMCPEnv(t, dv)

	t.Run("FileDeliveryPsqlRelease", func(t *testing.T) {
		cs, _, _ := e.connectLocal(t, nil)
		raw, out, isErr := callTool(t, cs, "request_access", map[string]any{
			"role": "db-readonly", "ttl": "5m", "task": "count orders", "justification": "daily report", "idempotency_key": "k-file-1",
		})
		if isErr || out["state"] != "active" || out["delivery"] != "file" || out["contains_secret"] != false {
			t.Fatalf("request_access = %s", raw)
		}
		path := out["credential_file"].(string)
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("credential file %s: %v mode %v, want 0600", path, err, fi.Mode().Perm())
		}
		// The whole tool result holds neither the password nor the file's text.
		password := serviceField(t, path, "password")
		if len(password) < 8 || strings.Contains(raw, password) || strings.Contains(raw, "password=") {
			t.Fatalf("the tool result contains the secret: %s", raw)
		}
		user, err := psqlWith(path)
		if err != nil || user != serviceField(t, path, "user") || user != out["username"] {
			t.Fatalf("psql with the credential file: %q %v (result %s)", user, err, raw)
		}
		// A retry with the same key is the same lease, not a second one.
		raw2, again, _ := callTool(t, cs, "request_access", map[string]any{
			"role": "db-readonly", "ttl": "5m", "task": "count orders", "justification": "daily report", "idempotency_key": "k-file-1",
		})
		if again["lease_id"] != out["lease_id"] || again["credential_file"] != path {
			t.Fatalf("retry = %s, want lease %v with file %s", raw2, out["lease_id"], path)
		}
		if _, n, _ := e.DB.FindLeases(t.Context(), broker.LeaseFilter{AgentID: &e.agentID, Role: ptrTo("db-readonly")}); n != 1 {
			t.Fatalf("%d db-readonly leases after a retried request, want 1", n)
		}

		raw, out, isErr = callTool(t, cs, "release_access", map[string]any{"lease_id": out["lease_id"]})
		if isErr || out["state"] != "released" {
			t.Fatalf("release_access = %s", raw)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("credential file after release: %v, want gone", err)
		}
		// Rewrite the service file from the values seen, to show the
		// credential itself no longer logs in.
		again2 := filepath.Join(t.TempDir(), "old.pgservice")
		os.WriteFile(again2, []byte("[stint]\nhost=127.0.0.1\nport=5432\ndbname=postgres\nuser="+user+"\npassword="+password+"\n"), 0o600)
		if u, err := psqlWith(again2); err == nil {
			t.Fatalf("psql still logs in as %s after release_access", u)
		} else if !strings.Contains(err.Error(), "password authentication failed") && !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("psql failed for another reason than the dropped login: %v", err)
		}
		// The server's audit log has the calls, with the delivery used.
		events, _, err := e.DB.FindAuditEvents(t.Context(), broker.AuditFilter{Kind: ptrTo("mcp.tool_call"), Subject: ptrTo(out["lease_id"].(string))})
		if err != nil {
			t.Fatal(err)
		}
		deliveries := map[string]bool{}
		for _, ev := range events {
			var d map[string]any
			json.Unmarshal(ev.Details, &d)
			if d["transport"] != "stdio" || d["client"] != "e2e-local-client 1.0" || d["session"] == "" || ev.Actor != "agent:llm-agent" {
				t.Fatalf("stdio audit event = %s %s", ev.Actor, ev.Details)
			}
			deliveries[fmt.Sprint(d["tool"], ":", d["delivery"])] = true
		}
		if !deliveries["request_access:file"] || !deliveries["release_access:<nil>"] {
			t.Fatalf("stdio audit events %v, want request_access with delivery file and release_access", deliveries)
		}
	})

	t.Run("StdioProcess", func(t *testing.T) {
		// The real command over real stdin and stdout: this test binary
		// runs `stint mcp` in a child process (TestMCPStdioHelper).
		dir := filepath.Join(t.TempDir(), "creds")
		cmd := exec.Command(os.Args[0], "-test.run=^TestMCPStdioHelper$")
		cmd.Env = append(os.Environ(), "STINT_MCP_STDIO_HELPER=1", "STINT_ADDR="+e.url, "STINT_KEY="+e.agentKey, "STINT_MCP_HELPER_DIR="+dir)
		cmd.Stderr = os.Stderr
		cs, err := sdk.NewClient(&sdk.Implementation{Name: "e2e-stdio-client", Version: "1.0"}, nil).Connect(t.Context(),
			&sdk.CommandTransport{Command: cmd, TerminateDuration: 10 * time.Second}, nil)
		if err != nil {
			t.Fatal(err)
		}
		raw, out, isErr := callTool(t, cs, "request_access", map[string]any{
			"role": "db-readonly", "ttl": "5m", "task": "stdio", "justification": "real process", "idempotency_key": "k-stdio-1",
		})
		if isErr || out["delivery"] != "file" || !strings.HasPrefix(out["credential_file"].(string), dir+"/") {
			t.Fatalf("request_access over stdio = %s", raw)
		}
		path := out["credential_file"].(string)
		if strings.Contains(raw, serviceField(t, path, "password")) {
			t.Fatalf("the tool result contains the secret: %s", raw)
		}
		if user, err := psqlWith(path); err != nil || user != out["username"] {
			t.Fatalf("psql with the stdio server's file: %q %v", user, err)
		}
		// Stopping stint mcp removes the files it wrote; the lease itself
		// lives on until its window ends or it is released.
		if err := cs.Close(); err != nil {
			t.Logf("close: %v", err)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("credential file after stint mcp stopped: %v", err)
		}
		if status, body := e.call(t, "DELETE", "/v1/leases/"+out["lease_id"].(string), e.agentKey, nil); status != http.StatusOK {
			t.Fatalf("release = %d %v", status, body)
		}
	})

	t.Run("FileRemovedWhenRevoked", func(t *testing.T) {
		cs, files, api := e.connectLocal(t, nil)
		raw, out, isErr := callTool(t, cs, "request_access", map[string]any{
			"role": "db-readonly", "ttl": "5m", "task": "kill switch", "justification": "test", "idempotency_key": "k-revoked-1",
		})
		if isErr || out["credential_file"] == nil {
			t.Fatalf("request_access = %s", raw)
		}
		path := out["credential_file"].(string)
		if status, body := e.call(t, "POST", "/v1/leases/"+out["lease_id"].(string)+"/revoke", testAdminToken, map[string]string{"reason": "security pulled it"}); status != http.StatusOK {
			t.Fatalf("revoke = %d %v", status, body)
		}
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("the file is gone before the sweep: %v", err)
		}
		if err := files.Sweep(t.Context(), api); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("credential file of a revoked lease after the sweep: %v", err)
		}
	})

	t.Run("PendingThenApprovedOverHTTP", func(t *testing.T) {
		var mu sync.Mutex
		var progress []*sdk.ProgressNotificationParams
		cs, _, _ := e.connectLocal(t, func(p *sdk.ProgressNotificationParams) { mu.Lock(); progress = append(progress, p); mu.Unlock() })
		p := &sdk.CallToolParams{Name: "request_access", Arguments: map[string]any{
			"role": "db-approved", "ttl": "5m", "task": "fix a row", "justification": "ticket OPS-7", "idempotency_key": "k-approval-1", "wait_seconds": 2,
		}}
		p.SetProgressToken("progress-1")
		raw, out, isErr := callToolMeta(t, cs, p)
		if isErr || out["state"] != "pending" || out["credential_file"] != nil || !strings.Contains(out["next"].(string), "lease_status") {
			t.Fatalf("request_access for a role that needs approval = %s", raw)
		}
		mu.Lock()
		got := len(progress)
		first := ""
		if got > 0 {
			first = progress[0].Message
		}
		mu.Unlock()
		if got == 0 || !strings.Contains(first, "approval(s) from security") {
			t.Fatalf("progress notifications while waiting: %d, first %q", got, first)
		}
		id := out["lease_id"].(string)

		// An approver approves over the HTTP API.
		status, body := e.call(t, "GET", "/v1/approvals", mcpApproverToken, nil)
		list, _ := body["approvals"].([]any)
		if status != http.StatusOK || len(list) != 1 {
			t.Fatalf("GET /v1/approvals = %d %v", status, body)
		}
		digest := list[0].(map[string]any)["digest"].(string)
		if status, body := e.call(t, "POST", "/v1/leases/"+id+"/approve", mcpApproverToken, map[string]string{"digest": digest}); status != http.StatusOK {
			t.Fatalf("approve = %d %v", status, body)
		}

		raw, out, isErr = callTool(t, cs, "lease_status", map[string]any{"lease_id": id})
		if isErr || out["state"] != "active" || out["delivery"] != "file" {
			t.Fatalf("lease_status after the approval = %s", raw)
		}
		if user, err := psqlWith(out["credential_file"].(string)); err != nil || user == "" {
			t.Fatalf("psql with the approved lease's file: %v", err)
		}
		if raw, out, _ := callTool(t, cs, "release_access", map[string]any{"lease_id": id}); out["state"] != "released" {
			t.Fatalf("release = %s", raw)
		}
	})

	t.Run("BadArguments", func(t *testing.T) {
		cs, _, _ := e.connectLocal(t, nil)
		for _, tc := range []struct {
			name string
			args map[string]any
			want string
		}{
			{"UnknownRole", map[string]any{"role": "db-admin", "task": "x", "justification": "y", "idempotency_key": "b1"}, "roles you may request: db-approved, db-readonly, vault-token"},
			{"TTLTooLong", map[string]any{"role": "db-readonly", "ttl": "9h", "task": "x", "justification": "y", "idempotency_key": "b2"}, "exceeds the maximum of 1h0m0s"},
			{"TTLNotADuration", map[string]any{"role": "db-readonly", "ttl": "soon", "task": "x", "justification": "y", "idempotency_key": "b3"}, "not a duration"},
			{"WrongType", map[string]any{"role": 42, "task": "x", "justification": "y", "idempotency_key": "b4"}, "role"},
			{"MissingKey", map[string]any{"role": "db-readonly", "task": "x", "justification": "y"}, "idempotency_key"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				raw, _, isErr := callTool(t, cs, "request_access", tc.args)
				if !isErr || !strings.Contains(toolText(raw), tc.want) {
					t.Fatalf("request_access(%v) = %s; want a tool error mentioning %q", tc.args, raw, tc.want)
				}
			})
		}
		// Nothing was created by any of them.
		if _, n, _ := e.DB.FindLeases(t.Context(), broker.LeaseFilter{AgentID: &e.agentID, Role: ptrTo("db-readonly"), States: []broker.LeaseState{broker.LeasePending, broker.LeaseApproved, broker.LeaseActive}}); n != 0 {
			t.Fatalf("%d live db-readonly leases after refused requests", n)
		}
	})

	t.Run("HTTPAuthorization", func(t *testing.T) {
		meta := e.url + "/.well-known/oauth-protected-resource/mcp"
		for _, path := range []string{"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"} {
			resp, err := http.Get(e.url + path)
			if err != nil {
				t.Fatal(err)
			}
			var md map[string]any
			json.NewDecoder(resp.Body).Decode(&md)
			resp.Body.Close()
			as, _ := md["authorization_servers"].([]any)
			if resp.StatusCode != http.StatusOK || md["resource"] != e.url+"/mcp" || len(as) != 1 || as[0] != e.url {
				t.Fatalf("GET %s = %d %v", path, resp.StatusCode, md)
			}
		}
		post := func(token, body string) (*http.Response, string) {
			req, _ := http.NewRequest("POST", e.url+"/mcp", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp, string(b)
		}
		list := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
		resp, _ := post("", list)
		if h := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusUnauthorized ||
			!strings.Contains(h, `resource_metadata="`+meta+`"`) || !strings.Contains(h, `scope="leases:read leases:write"`) || strings.Contains(h, "error=") {
			t.Fatalf("no token: %d %q", resp.StatusCode, h)
		}
		// The API's own token and the agent's API key are for another
		// audience: refused.
		status, tok := e.token(t, nil)
		if status != http.StatusOK {
			t.Fatalf("API token = %d %v", status, tok)
		}
		for name, bearer := range map[string]string{"APIToken": tok["access_token"].(string), "APIKey": e.agentKey} {
			resp, body := post(bearer, list)
			if h := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(h, `error="invalid_token"`) || !strings.Contains(h, "resource_metadata=") {
				t.Fatalf("%s at /mcp: %d %q %s", name, resp.StatusCode, h, body)
			}
		}
		// A token for another resource is never issued, and the MCP token
		// is refused by the API.
		if status, body := e.token(t, url.Values{"resource": {"https://elsewhere.example.com/mcp"}}); status != http.StatusBadRequest || body["error"] != "invalid_target" {
			t.Fatalf("token for another resource = %d %v", status, body)
		}
		if status, body := e.token(t, url.Values{"resource": {e.url + "/mcp"}, "scope": {"leases:read leases:admin"}}); status != http.StatusBadRequest || body["error"] != "invalid_scope" {
			t.Fatalf("token with a scope the resource lacks = %d %v", status, body)
		}
		if status, body := e.token(t, url.Values{"scope": {"leases:read"}}); status != http.StatusBadRequest || body["error"] != "invalid_scope" {
			t.Fatalf("API token with a scope = %d %v", status, body)
		}
		full := e.mcpToken(t, "")
		if status, body := e.call(t, "GET", "/v1/whoami", full, nil); status != http.StatusUnauthorized {
			t.Fatalf("MCP token on the API = %d %v", status, body)
		}
		// Scopes per tool: a read-only token cannot request access.
		readOnly := e.mcpToken(t, "leases:read")
		resp, body := post(readOnly, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"request_access","arguments":{}}}`)
		if h := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusForbidden || !strings.Contains(h, `error="insufficient_scope"`) || !strings.Contains(h, `scope="leases:write"`) {
			t.Fatalf("request_access with leases:read = %d %q %s", resp.StatusCode, h, body)
		}
		cs := e.connectHTTP(t, readOnly)
		if raw, out, isErr := callTool(t, cs, "list_my_leases", nil); isErr || out["leases"] == nil {
			t.Fatalf("list_my_leases with leases:read = %s", raw)
		}
	})

	t.Run("HTTPTools", func(t *testing.T) {
		cs := e.connectHTTP(t, e.mcpToken(t, ""))
		tools, err := cs.ListTools(t.Context(), nil)
		if err != nil || len(tools.Tools) != 6 {
			t.Fatalf("tools/list = %v %v", tools, err)
		}
		for _, tool := range tools.Tools {
			if tool.Description == "" || tool.InputSchema == nil || tool.OutputSchema == nil {
				t.Fatalf("tool %s lacks a description or schemas", tool.Name)
			}
		}
		raw, out, isErr := callTool(t, cs, "list_roles", map[string]any{"task": "report"})
		if isErr {
			t.Fatalf("list_roles = %s", raw)
		}
		would := map[string]string{}
		for _, r := range out["roles"].([]any) {
			r := r.(map[string]any)
			would[r["name"].(string)] = r["would"].(string)
		}
		if would["db-readonly"] != "auto_approve" || would["db-approved"] != "needs_approval" || would["vault-token"] != "auto_approve" {
			t.Fatalf("list_roles = %s", raw)
		}
		if _, n, _ := e.DB.FindLeases(t.Context(), broker.LeaseFilter{AgentID: &e.agentID, Role: ptrTo("db-approved"), States: []broker.LeaseState{broker.LeasePending}}); n != 0 {
			t.Fatalf("list_roles created %d pending leases", n)
		}

		// A default role: the lease is granted, the credential is minted
		// only by stint exec, and the result holds no secret.
		args := map[string]any{"role": "db-readonly", "ttl": "5m", "task": "report", "justification": "weekly numbers", "idempotency_key": "k-http-1"}
		raw, out, isErr = callTool(t, cs, "request_access", args)
		id, _ := out["lease_id"].(string)
		if isErr || out["state"] != "approved" || out["delivery"] != "exec" || out["exec_command"] != "stint exec --lease "+id+" -- <command>" ||
			out["contains_secret"] != false || out["secret"] != nil || strings.Contains(raw, "password") {
			t.Fatalf("request_access over HTTP = %s", raw)
		}
		raw2, again, _ := callTool(t, cs, "request_access", args)
		if again["lease_id"] != id {
			t.Fatalf("retried request_access = %s, want lease %s", raw2, id)
		}
		if _, n, _ := e.DB.FindLeases(t.Context(), broker.LeaseFilter{AgentID: &e.agentID, Role: ptrTo("db-readonly"), States: []broker.LeaseState{broker.LeaseApproved}}); n != 1 {
			t.Fatalf("%d approved db-readonly leases after a retried request, want 1", n)
		}

		// Over HTTP too, waiting for approvers reports progress, then
		// answers pending.
		var mu sync.Mutex
		progressed := 0
		pc := sdk.NewClient(&sdk.Implementation{Name: "e2e-mcp-client", Version: "1.0"}, &sdk.ClientOptions{
			ProgressNotificationHandler: func(context.Context, *sdk.ProgressNotificationClientRequest) { mu.Lock(); progressed++; mu.Unlock() },
		})
		pcs, err := pc.Connect(t.Context(), &sdk.StreamableClientTransport{
			Endpoint: e.url + "/mcp", HTTPClient: &http.Client{Transport: bearer{e.mcpToken(t, ""), http.DefaultTransport}}, MaxRetries: -1,
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer pcs.Close()
		pp := &sdk.CallToolParams{Name: "request_access", Arguments: map[string]any{"role": "db-approved", "ttl": "5m", "task": "fix", "justification": "OPS-8",
			"idempotency_key": "k-http-pending", "wait_seconds": 1}}
		pp.SetProgressToken("http-progress")
		raw, out, isErr = callToolMeta(t, pcs, pp)
		mu.Lock()
		n := progressed
		mu.Unlock()
		if isErr || out["state"] != "pending" || n == 0 {
			t.Fatalf("request_access over HTTP for a role that needs approval = %s with %d progress notifications", raw, n)
		}
		if raw, out, _ := callTool(t, cs, "release_access", map[string]any{"lease_id": out["lease_id"]}); out["state"] != "canceled" {
			t.Fatalf("withdraw = %s", raw)
		}

		// A role configured for inline secrets says so.
		raw, out, isErr = callTool(t, cs, "request_access", map[string]any{"role": "vault-token", "ttl": "5m", "task": "read a secret", "justification": "config", "idempotency_key": "k-http-2"})
		secret, _ := out["secret"].(map[string]any)
		if isErr || out["contains_secret"] != true || out["delivery"] != "inline" || secret["token"] == nil || out["state"] != "active" {
			t.Fatalf("request_access for an inline role = %s", raw)
		}
		if raw, out, _ := callTool(t, cs, "release_access", map[string]any{"lease_id": out["lease_id"]}); out["state"] != "released" {
			t.Fatalf("release inline = %s", raw)
		}
		if raw, out, _ := callTool(t, cs, "release_access", map[string]any{"lease_id": id}); out["state"] != "canceled" {
			t.Fatalf("release approved = %s", raw)
		}

		// Every call is in the audit log, with the client and the delivery.
		events, _, err := e.DB.FindAuditEvents(t.Context(), broker.AuditFilter{Kind: ptrTo("mcp.tool_call"), Actor: ptrTo("agent:llm-agent")})
		if err != nil {
			t.Fatal(err)
		}
		var execDelivery, inline bool
		for _, ev := range events {
			var d map[string]any
			json.Unmarshal(ev.Details, &d)
			if d["transport"] == "http" && d["client"] != "e2e-mcp-client 1.0" {
				t.Fatalf("audit event without the client: %s", ev.Details)
			}
			execDelivery = execDelivery || d["delivery"] == "exec" && ev.Subject == id
			inline = inline || d["delivery"] == "inline"
		}
		if len(events) < 6 || !execDelivery || !inline {
			t.Fatalf("%d mcp.tool_call events (exec %v, inline %v)", len(events), execDelivery, inline)
		}
	})

	t.Run("CapAcrossSessions", func(t *testing.T) {
		// Three sessions of one agent at once get the same cap on live
		// leases as the API: one lease, two tool errors that say why.
		e.Leases.MaxLiveLeases = 1
		defer func() { e.Leases.MaxLiveLeases = 0 }()
		token := e.mcpToken(t, "")
		type result struct {
			raw   string
			out   map[string]any
			isErr bool
		}
		results := make(chan result, 3)
		for i := range 3 {
			cs := e.connectHTTP(t, token)
			go func() {
				raw, out, isErr := callTool(t, cs, "request_access", map[string]any{"role": "db-readonly", "ttl": "5m", "task": "cap", "justification": "cap test",
					"idempotency_key": "k-cap-" + string(rune('a'+i))})
				results <- result{raw, out, isErr}
			}()
		}
		var granted []string
		for range 3 {
			r := <-results
			switch {
			case !r.isErr && r.out["state"] == "approved":
				granted = append(granted, r.out["lease_id"].(string))
			case r.isErr && strings.Contains(toolText(r.raw), "max_live_leases"):
			default:
				t.Fatalf("request_access under the cap = %s", r.raw)
			}
		}
		if len(granted) != 1 {
			t.Fatalf("%d leases granted to concurrent sessions under a cap of 1", len(granted))
		}
		cs := e.connectHTTP(t, token)
		if raw, out, _ := callTool(t, cs, "release_access", map[string]any{"lease_id": granted[0]}); out["state"] != "canceled" {
			t.Fatalf("release = %s", raw)
		}
	})

	t.Run("SuspendedAgentIsTold", func(t *testing.T) {
		token := e.mcpToken(t, "")
		if _, err := e.Leases.ContainAgent(adminContext(t.Context()), broker.ContainRequest{AgentID: e.agentID, State: broker.AgentSuspended, Reason: "e2e kill switch"}); err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("POST", e.url+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if h := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(h, `error="invalid_token"`) || !strings.Contains(string(b), "suspended") {
			t.Fatalf("suspended agent at /mcp = %d %q %s", resp.StatusCode, h, b)
		}
	})
}

// TestMCPStdioHelper is `stint mcp` in a child process for
// TestMCPEndToEnd/StdioProcess; run by itself it does nothing.
func TestMCPStdioHelper(t *testing.T) {
	if os.Getenv("STINT_MCP_STDIO_HELPER") != "1" {
		t.Skip("the child process of TestMCPEndToEnd/StdioProcess")
	}
	root := newRootCommand(os.Stdout, os.Stderr)
	root.SetArgs([]string{"mcp", "--credential-dir", os.Getenv("STINT_MCP_HELPER_DIR")})
	if err := root.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "stint mcp:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func ptrTo[T any](v T) *T { return &v }
