package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases/vault"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
)

const e2eSigningSecret = "e2e-slack-signing-secret"

// e2ePolicy sends medium roles to two approvers of the security group and
// grants low ones at once.
const e2ePolicy = `
@id("low-auto")
permit (principal is Agent, action == Action::"request", resource is Role)
when { resource.sensitivity == "low" };

@id("medium-two-security")
@approvals("2")
@approvers("security")
@reason("Medium-sensitivity role: two approvals from security.")
permit (principal is Agent, action == Action::"request", resource is Role)
when { resource.sensitivity == "medium" };
`

// slackAPI is a stand-in for Slack's Web API that records the messages Stint
// posts and updates.
type slackAPI struct {
	*httptest.Server
	mu    sync.Mutex
	calls []url.Values
}

func newSlackAPI(tb testing.TB) *slackAPI {
	s := &slackAPI{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		r.Form.Set("method", strings.TrimPrefix(r.URL.Path, "/"))
		s.mu.Lock()
		s.calls = append(s.calls, r.Form)
		n := len(s.calls)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch r.Form.Get("method") {
		case "users.lookupByEmail":
			fmt.Fprint(w, `{"ok":true,"user":{"id":"U0OWNER"}}`)
		default:
			fmt.Fprintf(w, `{"ok":true,"channel":%q,"ts":"1795735098.%06d"}`, r.Form.Get("channel"), n)
		}
	}))
	tb.Cleanup(s.Close)
	return s
}

// find returns the calls of method to channel.
func (s *slackAPI) find(method, channel string) []url.Values {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []url.Values
	for _, c := range s.calls {
		if c.Get("method") == method && c.Get("channel") == channel {
			out = append(out, c)
		}
	}
	return out
}

// waitFor polls until cond holds.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	for i := 0; !cond(); i++ {
		if i > 500 {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// signedClick posts a block_actions payload built from the shared fixture,
// signed as Slack signs it, to Stint's /slack/interactions.
func signedClick(tb testing.TB, base, user, value string) int {
	tb.Helper()
	return signedClickTo(tb, []string{base}, user, value)[0]
}

// TestE2EApproval: a medium database role goes pending, two approvers click
// Approve in Slack (signed payloads through the real HTTP route), the agent
// long-polls, activates, and the minted PostgreSQL credential logs in.
func TestE2EApproval(t *testing.T) {
	dv := vaulttest.Start(t)
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.cedar")
	if err := os.WriteFile(policy, []byte(e2ePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	api := newSlackAPI(t)

	cfg := e2eConfig(t, dv, filepath.Join(dir, "stint.db"))
	for _, r := range cfg.Roles {
		if r.Name == "db-readonly" {
			r.Sensitivity = broker.SensitivityMedium
		}
	}
	cfg.Policy.Files = []string{policy}
	cfg.Approvers = []*broker.Approver{
		{Email: "dana@example.com", Name: "Dana", Groups: []string{"security"}, SlackUserID: "U04APPROVER1"},
		{Email: "eve@example.com", Name: "Eve", Groups: []string{"security"}, SlackUserID: "U04APPROVER2"},
		{Email: "owner@example.com", Name: "Owner", Groups: []string{"security"}, SlackUserID: "U0OWNER"},
	}
	cfg.Slack.Enabled, cfg.Slack.DefaultChannel, cfg.Slack.APIURL = true, "C0APPROVALS", api.URL+"/"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s := startStintEnv(t, dv, cfg, map[string]string{cfg.Slack.BotTokenEnv: "xoxb-e2e", cfg.Slack.SigningSecretEnv: e2eSigningSecret})
	_, key := s.newAgent(t, "report-bot")

	status, body := s.call(t, "POST", "/v1/leases", key, map[string]string{"role": "db-readonly", "ttl": "5m", "task": "quarterly numbers", "justification": "FIN-42"})
	if status != http.StatusAccepted || body["state"] != "pending" || body["credential"] != nil {
		t.Fatalf("POST /v1/leases = %d %v, want 202 pending without a credential", status, body)
	}
	id := body["id"].(string)

	// The request reaches Slack with Approve buttons bound to its digest.
	waitFor(t, "the approval message", func() bool { return len(api.find("chat.postMessage", "C0APPROVALS")) > 0 })
	posted := api.find("chat.postMessage", "C0APPROVALS")[0]
	var value string
	var blocks []map[string]any
	json.Unmarshal([]byte(posted.Get("blocks")), &blocks)
	for _, b := range blocks {
		if b["type"] == "actions" {
			value = b["elements"].([]any)[0].(map[string]any)["value"].(string)
		}
	}
	if !strings.HasPrefix(value, id+":") {
		t.Fatalf("approve button value %q does not name lease %s", value, id)
	}

	// The agent long-polls while the approvals arrive.
	type polled struct {
		status int
		body   map[string]any
		took   time.Duration
	}
	poll := make(chan polled, 1)
	go func() {
		start := time.Now()
		st, b := s.call(t, "GET", "/v1/leases/"+id+"?wait=30s", key, nil)
		poll <- polled{st, b, time.Since(start)}
	}()

	if st := signedClick(t, s.url, "U0OWNER", value); st != http.StatusOK { // the owner: refused
		t.Fatalf("owner's click = %d", st)
	}
	if st := signedClick(t, s.url, "U04APPROVER1", value); st != http.StatusOK {
		t.Fatalf("dana's click = %d", st)
	}
	if l, _ := s.DB.FindLeaseByID(t.Context(), id); l.State != broker.LeasePending {
		t.Fatalf("after one approval (and the owner's refused click) the lease is %s, want pending", l.State)
	}
	if st := signedClick(t, s.url, "U04APPROVER2", value); st != http.StatusOK {
		t.Fatalf("eve's click = %d", st)
	}
	p := <-poll
	if p.status != http.StatusOK || p.body["state"] != "approved" || p.took > 25*time.Second {
		t.Fatalf("long poll = %d %v after %s, want approved before the wait ran out", p.status, p.body, p.took)
	}
	if p.body["activate_by"] == nil {
		t.Fatalf("approved lease has no activate_by: %v", p.body)
	}

	status, body = s.call(t, "POST", "/v1/leases/"+id+"/activate", key, nil)
	if status != http.StatusCreated || body["state"] != "active" {
		t.Fatalf("activate = %d %v", status, body)
	}
	cred := body["credential"].(map[string]any)
	conn := mustLogIn(t, cred)
	conn.Close(t.Context())
	if status, _ := s.call(t, "POST", "/v1/leases/"+id+"/activate", key, nil); status != http.StatusConflict {
		t.Fatalf("second activation = %d, want 409", status)
	}

	// Slack's message follows the lease to active.
	waitFor(t, "the message to show the activation", func() bool {
		for _, u := range api.find("chat.update", "C0APPROVALS") {
			if strings.Contains(u.Get("blocks"), "Active") {
				return true
			}
		}
		return false
	})

	// Release: the credential stops working.
	if status, _ := s.call(t, "DELETE", "/v1/leases/"+id, key, nil); status != http.StatusOK {
		t.Fatalf("release = %d", status)
	}
	mustNotLogIn(t, cred)
	l, _ := s.DB.FindLeaseByID(t.Context(), id)
	approvals, _ := s.DB.FindApprovals(t.Context(), id)
	if l.State != broker.LeaseReleased || len(approvals) != 2 || approvals[0].Approver != "dana@example.com" || approvals[1].Approver != "eve@example.com" {
		t.Fatalf("lease %s with approvals %+v, want released with dana's and eve's", l.State, approvals)
	}
}

// startStintEnv is startStint with extra environment variables (Slack's
// secrets) for Main to read.
func startStintEnv(tb testing.TB, dv *vault.DevServer, cfg Config, env map[string]string) *stint {
	tb.Helper()
	return startStintWith(tb, dv, cfg, stintOptions{Env: env})
}
