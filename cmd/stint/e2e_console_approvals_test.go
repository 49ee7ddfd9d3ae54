package main

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
)

var (
	consoleCSRF   = regexp.MustCompile(`name="_csrf" value="([^"]+)"`)
	consoleDigest = regexp.MustCompile(`name="digest" value="([^"]+)"`)
)

// consoleSession is a console user's cookie session driven over plain HTTP.
type consoleSession struct {
	t    *testing.T
	base string
	hc   *http.Client
	csrf string
}

func consoleLogin(t *testing.T, base, name, password string) *consoleSession {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &consoleSession{t: t, base: base, hc: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
	c.get("/console/login")
	if status, body := c.post("/console/login", url.Values{"name": {name}, "password": {password}, "next": {"/console/approvals"}}); status != http.StatusSeeOther {
		t.Fatalf("log in as %s = %d\n%s", name, status, body)
	}
	return c
}

func (c *consoleSession) get(path string) (int, string) {
	c.t.Helper()
	resp, err := c.hc.Get(c.base + path)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if m := consoleCSRF.FindSubmatch(b); m != nil {
		c.csrf = string(m[1])
	}
	return resp.StatusCode, string(b)
}

func (c *consoleSession) post(path string, form url.Values) (int, string) {
	c.t.Helper()
	form.Set("_csrf", c.csrf)
	resp, err := c.hc.PostForm(c.base+path, form)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// digest opens the pending approvals page and returns the lease's digest as
// shown there.
func (c *consoleSession) digest(id string) string {
	c.t.Helper()
	status, page := c.get("/console/approvals")
	if status != http.StatusOK || !strings.Contains(page, id) {
		c.t.Fatalf("approvals page = %d, lacks lease %s:\n%s", status, id, page)
	}
	m := consoleDigest.FindStringSubmatch(page)
	if m == nil {
		c.t.Fatalf("approvals page has no digest:\n%s", page)
	}
	return m[1]
}

// approve answers approve for the lease as shown with digest and returns the
// answer's status.
func (c *consoleSession) approve(id, digest string) int {
	c.t.Helper()
	c.get("/console/approvals") // the page's CSRF token
	status, _ := c.post("/console/approvals/"+id+"/approve", url.Values{"digest": {digest}})
	return status
}

// TestConsoleApprovals: approvers decide pending leases in the console (the
// fallback to Slack); the agent's owner cannot approve its lease, two
// distinct approvers can, and the approved lease activates into a working
// PostgreSQL credential.
func TestConsoleApprovals(t *testing.T) {
	dv := vaulttest.Start(t)
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.cedar")
	if err := os.WriteFile(policy, []byte(e2ePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := e2eConfig(t, dv, filepath.Join(dir, "stint.db"))
	for _, r := range cfg.Roles {
		if r.Name == "db-readonly" {
			r.Sensitivity = broker.SensitivityMedium
		}
	}
	cfg.Policy.Files = []string{policy}
	cfg.Approvers = []*broker.Approver{
		{Email: "dana@example.com", Name: "Dana", Groups: []string{"security"}},
		{Email: "eve@example.com", Name: "Eve", Groups: []string{"security"}},
		{Email: "owner@example.com", Name: "Owner", Groups: []string{"security"}},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s := startStint(t, dv, cfg, nil)
	const pw = "approver-console-pw-31"
	addUserEmail(t, s, "owen", broker.RoleApprover, pw, "owner@example.com")
	addUserEmail(t, s, "dana", broker.RoleApprover, pw, "dana@example.com")
	addUserEmail(t, s, "eve", broker.RoleApprover, pw, "eve@example.com")

	_, key := s.newAgent(t, "report-bot") // owned by owner@example.com
	status, body := s.call(t, "POST", "/v1/leases", key, map[string]string{"role": "db-readonly", "ttl": "5m", "task": "quarterly numbers"})
	if status != http.StatusAccepted || body["state"] != "pending" {
		t.Fatalf("POST /v1/leases = %d %v, want 202 pending", status, body)
	}
	id := body["id"].(string)

	dana := consoleLogin(t, s.url, "dana", pw)
	digest := dana.digest(id)

	// The owner is not offered the lease, and a forged answer is refused.
	owen := consoleLogin(t, s.url, "owen", pw)
	if _, page := owen.get("/console/approvals"); strings.Contains(page, id) {
		t.Fatal("the agent's owner is offered its lease to approve")
	}
	if got := owen.approve(id, digest); got != http.StatusForbidden {
		t.Fatalf("the agent's owner approving in the console = %d, want 403", got)
	}
	if got := dana.approve(id, digest); got != http.StatusSeeOther {
		t.Fatalf("dana approving = %d, want 303", got)
	}
	if l, _ := s.DB.FindLeaseByID(context.Background(), id); l.State != broker.LeasePending {
		t.Fatalf("after one of two approvals the lease is %s, want pending", l.State)
	}
	eve := consoleLogin(t, s.url, "eve", pw)
	if got := eve.approve(id, eve.digest(id)); got != http.StatusSeeOther {
		t.Fatalf("eve approving = %d, want 303", got)
	}
	// The history filters by approver.
	if _, page := dana.get("/console/history?approver=DANA@example.com"); !strings.Contains(page, id[:12]) {
		t.Fatalf("history filtered on dana's approvals lacks the lease:\n%s", page)
	}
	if _, page := dana.get("/console/history?approver=nobody@example.com"); strings.Contains(page, id[:12]) {
		t.Fatal("history filtered on an approver who answered nothing shows the lease")
	}
	status, body = s.call(t, "POST", "/v1/leases/"+id+"/activate", key, nil)
	if status != http.StatusCreated || body["credential"] == nil {
		t.Fatalf("activate = %d %v, want 201 with the credential", status, body)
	}
	mustLogIn(t, body["credential"].(map[string]any)).Close(context.Background())
}
