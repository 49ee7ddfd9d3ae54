package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases/vault"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
)

// cliConfig writes cfg where the CLI reads it and gives the CLI Stint's
// Vault token, so that the CLI runs against the same store and Vault as
// the server. It returns the config file's path.
func cliConfig(t *testing.T, cfg Config, dv *vault.DevServer) string {
	t.Helper()
	b, err := yaml.Marshal(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "stint.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(cfg.Vault.TokenEnv, dv.RootToken)
	return path
}

// TestKillSwitchEntryPoints pulls the kill switch from each place that can
// pull it (the API, the console, the CLI, and risk containment) on an agent
// holding a real PostgreSQL credential minted by a real Vault, on the
// SQLite store and on the PostgreSQL store. Each goes
// through the one operation (LeaseService.ContainAgent, which alone records
// a containment), and each leaves the agent out of service, no live lease,
// a credential that no longer logs in and a key that no longer works.
func TestKillSwitchEntryPoints(t *testing.T) {
	dv := vaulttest.Start(t)
	for name, store := range replicaStores(t) {
		t.Run(name, func(t *testing.T) { testKillSwitchEntryPoints(t, dv, store(t)) })
	}
}

func testKillSwitchEntryPoints(t *testing.T, dv *vault.DevServer, store StoreConfig) {
	cfg := e2eConfig(t, dv, filepath.Join(t.TempDir(), "stint.db"))
	cfg.Store = store
	// Low enough that a short burst crosses it, high enough that an
	// agent's first request (first use of the role: 15) does not.
	cfg.Risk.RevokeThreshold = 30
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s := startStint(t, dv, cfg, nil)
	cfgPath := cliConfig(t, cfg, dv)

	const pw = "kill-switch-console-pw-17"
	addUserEmail(t, s, "sec", broker.RoleAdmin, pw, "sec@example.com")

	for _, tc := range []struct {
		name  string
		state broker.AgentState
		// pull contains the agent (id, named name, holding an API key)
		// and returns the reason it gave.
		pull func(t *testing.T, id, name, key string) string
		// actor is who the containment records; empty: any admin.
		actor string
	}{
		{name: "API", state: broker.AgentSuspended, pull: func(t *testing.T, id, name, key string) string {
			status, body := s.call(t, "POST", "/v1/agents/"+name+"/suspend", testAdminToken, map[string]string{"reason": "api incident"})
			if status != http.StatusOK && status != http.StatusAccepted {
				t.Fatalf("POST suspend = %d %v", status, body)
			}
			return "api incident"
		}},
		{name: "Console", state: broker.AgentDisabled, pull: func(t *testing.T, id, name, key string) string {
			c := consoleLogin(t, s.url, "sec", pw)
			c.get("/console/agents/" + id)
			if status, page := c.post("/console/agents/"+id+"/disable", url.Values{"reason": {"console incident"}}); status != http.StatusSeeOther {
				t.Fatalf("console disable = %d\n%s", status, page)
			}
			return "console incident"
		}},
		{name: "CLI", state: broker.AgentSuspended, pull: func(t *testing.T, id, name, key string) string {
			out, err := runCLI(t, "", "--config", cfgPath, "agents", "suspend", name, "--reason", "cli incident", "--wait", "30s")
			if err != nil {
				t.Fatalf("stint agents suspend: %v\n%s", err, out)
			}
			return "cli incident"
		}},
		{name: "Risk", state: broker.AgentSuspended, actor: "admin:governance", pull: func(t *testing.T, id, name, key string) string {
			for i := range 12 {
				status, body := s.call(t, "POST", "/v1/leases", key, map[string]string{"role": "db-readonly", "ttl": "10m", "task": "burst"})
				switch status {
				case http.StatusCreated:
					continue
				case http.StatusForbidden:
					t.Logf("request %d denied: %v", i+2, body["error"])
					return "risk score"
				}
				t.Fatalf("burst request %d = %d %v", i+2, status, body)
			}
			t.Fatal("a burst of 12 requests never crossed the revoke threshold")
			return ""
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "ks-" + strings.ToLower(tc.name)
			id, key := s.newAgent(t, name)
			_, cred := s.lease(t, key, "db-readonly", "10m")
			mustLogIn(t, cred).Close(context.Background())

			reason := tc.pull(t, id, name, key)

			ctx := adminContext(context.Background())
			cs, err := s.Leases.FindContainments(ctx, id, 0)
			if err != nil || len(cs) != 1 {
				t.Fatalf("containments of %s = %+v, %v; want exactly one (the kill switch)", name, cs, err)
			}
			c := cs[0]
			if c.AgentState != tc.state || !strings.Contains(c.Reason, reason) || !strings.HasPrefix(c.Reason, "agent "+string(tc.state)) {
				t.Fatalf("containment = %+v; want the agent %s for %q", c, tc.state, reason)
			}
			if !strings.HasPrefix(c.Actor, "admin:") || (tc.actor != "" && c.Actor != tc.actor) {
				t.Fatalf("containment by %q, want an admin (%q)", c.Actor, tc.actor)
			}
			deadline := time.Now().Add(60 * time.Second)
			for !c.Progress.Done() {
				if time.Now().After(deadline) {
					t.Fatalf("containment not done after 60s: %+v", c.Progress)
				}
				if c, err = s.Leases.WaitContainment(ctx, c.ID, 5*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			if c.Progress.Total < 1 {
				t.Fatalf("containment ended %d leases, want the live one", c.Progress.Total)
			}
			live, _, err := s.DB.FindLeases(context.Background(), broker.LeaseFilter{AgentID: &id, States: []broker.LeaseState{
				broker.LeasePending, broker.LeaseApproved, broker.LeaseIssuing, broker.LeaseActive, broker.LeaseRevoking}})
			if err != nil || len(live) != 0 {
				t.Fatalf("%d live leases after the kill switch (%v)", len(live), err)
			}
			mustNotLogIn(t, cred)
			a, err := s.DB.FindAgentByID(context.Background(), id)
			if err != nil || a.State != tc.state {
				t.Fatalf("agent = %+v, %v; want %s", a, err, tc.state)
			}
			if status, body := s.call(t, "GET", "/v1/leases", key, nil); status != http.StatusUnauthorized {
				t.Fatalf("the contained agent's key still works: %d %v", status, body)
			}
		})
	}
}

// TestLimitsSameEverywhere sends the same over-limit input (each limit is
// defined once, in broker) through the API and through the CLI, which
// calls the services directly: both refuse it, naming the same field with
// the same message, and nothing changes.
func TestLimitsSameEverywhere(t *testing.T) {
	dv := vaulttest.Start(t)
	cfg := e2eConfig(t, dv, filepath.Join(t.TempDir(), "stint.db"))
	s := startStint(t, dv, cfg, nil)
	cfgPath := cliConfig(t, cfg, dv)
	id, _ := s.newAgent(t, "limits-bot")

	reason := strings.Repeat("r", broker.MaxReasonLen+1)
	note := strings.Repeat("n", broker.MaxReviewNoteLen+1)
	for _, tc := range []struct {
		name       string
		path       string
		body       map[string]string
		cli        []string
		wantField  string
		wantMaxLen int
	}{
		{"SuspendReason", "/v1/agents/limits-bot/suspend", map[string]string{"reason": reason},
			[]string{"agents", "suspend", "limits-bot", "--reason", reason}, "reason", broker.MaxReasonLen},
		{"RevokeAllReason", "/v1/agents/limits-bot/revoke-all", map[string]string{"reason": reason},
			[]string{"agents", "revoke-all", "limits-bot", "--reason", reason}, "reason", broker.MaxReasonLen},
		{"AttestNote", "/v1/reviews/no-such-review/attest", map[string]string{"role": "db-readonly", "verdict": "keep", "note": note},
			[]string{"reviews", "attest", "no-such-review", "db-readonly", "--keep", "--note", note}, "note", broker.MaxReviewNoteLen},
		{"CloseBreakglassNote", "/v1/reviews/no-such-review/close", map[string]string{"note": note},
			[]string{"reviews", "close-breakglass", "no-such-review", "--note", note}, "note", broker.MaxReviewNoteLen},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := s.call(t, "POST", tc.path, testAdminToken, tc.body)
			apiErr, _ := body["error"].(map[string]any)
			if status != http.StatusBadRequest || apiErr == nil {
				t.Fatalf("API = %d %v, want 400", status, body)
			}
			out, err := runCLI(t, "", append([]string{"--config", cfgPath}, tc.cli...)...)
			if broker.ErrorCode(err) != broker.EINVALID {
				t.Fatalf("CLI = %v\n%s; want EINVALID", err, out)
			}
			want := fmt.Sprintf("Field %q must be at most %d characters.", tc.wantField, tc.wantMaxLen)
			if apiErr["message"] != want || broker.ErrorMessage(err) != want || apiErr["field"] != tc.wantField || broker.ErrorField(err) != tc.wantField {
				t.Fatalf("API refused with %v (field %v), CLI with %q (field %q); want both %q (field %s)",
					apiErr["message"], apiErr["field"], broker.ErrorMessage(err), broker.ErrorField(err), want, tc.wantField)
			}
		})
	}
	// A break-glass reason: the API's check and the lease service's own
	// (which the MCP tools and the Go client reach) are the same limit;
	// they once were 2,000 and 1,000.
	t.Run("BreakglassReason", func(t *testing.T) {
		_, key := s.newAgent(t, "limits-oncall")
		long := strings.Repeat("b", broker.MaxBreakglassReasonLen+1)
		status, body := s.call(t, "POST", "/v1/leases", key, map[string]any{"role": "db-readonly", "task": "fix", "breakglass": true, "breakglass_reason": long})
		apiErr, _ := body["error"].(map[string]any)
		if status != http.StatusBadRequest || apiErr == nil {
			t.Fatalf("API = %d %v, want 400", status, body)
		}
		a, err := s.DB.FindAgentByName(context.Background(), "limits-oncall")
		if err != nil {
			t.Fatal(err)
		}
		ctx := broker.NewContextWithActor(context.Background(), broker.Actor{Kind: broker.ActorAgent, Name: a.Name, AgentID: a.ID, AuthMethod: broker.AuthAPIKey})
		_, _, err = s.Leases.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "fix", Breakglass: true, BreakglassReason: long})
		want := fmt.Sprintf("Field %q must be at most %d characters.", "breakglass_reason", broker.MaxBreakglassReasonLen)
		if apiErr["message"] != want || broker.ErrorMessage(err) != want {
			t.Fatalf("API refused with %v, the lease service with %v; want both %q", apiErr["message"], err, want)
		}
	})
	if a, err := s.DB.FindAgentByID(context.Background(), id); err != nil || a.State != broker.AgentActive {
		t.Fatalf("agent after refused input = %+v, %v; want active", a, err)
	}
	if cs, err := s.Leases.FindContainments(adminContext(context.Background()), id, 0); err != nil || len(cs) != 0 {
		t.Fatalf("containments after refused input = %d, %v; want none", len(cs), err)
	}
}
