package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/stint-broker/stint/approvals/policy"
	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases/vault"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// capturedAlerts is a broker.Alerter standing in for Slack.
type capturedAlerts struct {
	mu     sync.Mutex
	alerts []broker.Alert
}

func (c *capturedAlerts) Alert(_ context.Context, a broker.Alert) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.alerts = append(c.alerts, a)
	return nil
}

func (c *capturedAlerts) find(kind string) *broker.Alert {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.alerts {
		if c.alerts[i].Kind == kind {
			return &c.alerts[i]
		}
	}
	return nil
}

// governanceConfig adds to the development roles an emergency role
// (medium, never auto-approved, break-glass for at most 10m) and makes
// db-readonly extensible twice up to an hour in total.
func governanceConfig(t *testing.T, dv *vault.DevServer) Config {
	cfg := e2eConfig(t, dv, filepath.Join(t.TempDir(), "stint.db"))
	for _, r := range cfg.Roles {
		if r.Name == "db-readonly" {
			r.MaxExtensions, r.MaxTotalTTL = 2, time.Hour
		}
	}
	emergency := *vault.DevRoles()[0]
	emergency.Name, emergency.Sensitivity, emergency.AutoApprove = "db-emergency", broker.SensitivityMedium, false
	emergency.Breakglass = broker.Breakglass{Allowed: true, MaxTTL: 10 * time.Minute}
	cfg.Roles = append(cfg.Roles, &emergency)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestGovernanceEndToEnd(t *testing.T) {
	dv := vaulttest.Start(t)

	t.Run("Breakglass", func(t *testing.T) {
		logs := &syncBuffer{}
		s := startStintWith(t, dv, governanceConfig(t, dv), stintOptions{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
		alerts := &capturedAlerts{}
		s.Alerts.Alerter = alerts
		_, key := s.newAgent(t, "oncall")

		// Without break-glass the role is refused (no policy, not auto).
		status, body := s.call(t, "POST", "/v1/leases", key, map[string]any{"role": "db-emergency", "task": "fix"})
		if status != http.StatusForbidden {
			t.Fatalf("ordinary request = %d %v", status, body)
		}
		status, body = s.call(t, "POST", "/v1/leases", key, map[string]any{"role": "db-emergency", "task": "fix", "breakglass": true})
		if status != http.StatusBadRequest || !strings.Contains(body["error"].(map[string]any)["field"].(string), "breakglass_reason") {
			t.Fatalf("break-glass without a reason = %d %v", status, body)
		}
		status, body = s.call(t, "POST", "/v1/leases", key, map[string]any{"role": "db-emergency", "task": "restore replica",
			"breakglass": true, "breakglass_reason": "INC-42 primary down"})
		if status != http.StatusCreated || body["breakglass"] != true || body["ttl"] != "10m0s" {
			t.Fatalf("break-glass = %d %v", status, body)
		}
		id := body["id"].(string)
		cred := body["credential"].(map[string]any)
		mustLogIn(t, cred).Close(context.Background())

		a := alerts.find("breakglass")
		if a == nil || a.Audience != broker.AudienceSecurity || a.Severity != broker.SeverityCritical || !strings.Contains(a.Message, "INC-42") {
			t.Fatalf("security alert = %+v", a)
		}
		if !strings.Contains(logs.String(), `"level":"ERROR","msg":"governance alert: BREAK-GLASS`) {
			t.Fatalf("no ERROR log line for the break-glass grant:\n%s", logs.String())
		}
		kind := broker.AuditBreakglass
		if _, n, err := s.DB.FindAuditEvents(context.Background(), broker.AuditFilter{Kind: &kind, Subject: &id}); err != nil || n != 1 {
			t.Fatalf("break-glass audit events = %d, %v", n, err)
		}
		// The owner's post-review, closed with a note.
		bg := broker.ReviewBreakglass
		reviews, _, err := s.Reviews.FindReviews(adminContext(context.Background()), broker.ReviewFilter{Kind: &bg})
		if err != nil || len(reviews) != 1 || reviews[0].LeaseID != id || reviews[0].Owner != "owner@example.com" {
			t.Fatalf("post-reviews = %+v, %v", reviews, err)
		}
		status, body = s.call(t, "POST", "/v1/reviews/"+reviews[0].ID+"/close", testAdminToken, map[string]any{"note": "replica restored; credentials rotated"})
		if status != http.StatusOK || body["state"] != "closed" {
			t.Fatalf("close post-review = %d %v", status, body)
		}
		status, body = s.call(t, "DELETE", "/v1/leases/"+id, key, nil)
		if status != http.StatusOK {
			t.Fatalf("release = %d %v", status, body)
		}
		mustNotLogIn(t, cred)
	})

	t.Run("ExtensionRenewsVaultLease", func(t *testing.T) {
		s := startStint(t, dv, governanceConfig(t, dv), nil)
		var offset atomic.Int64
		s.Leases.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
		_, key := s.newAgent(t, "etl")
		id, cred := s.lease(t, key, "db-readonly", "20m")

		status, body := s.call(t, "POST", "/v1/leases/"+id+"/extend", key, map[string]any{"ttl": "10m"})
		if status != http.StatusConflict {
			t.Fatalf("early extension = %d %v", status, body)
		}
		// Eleven minutes later (on the broker's clock) the window may grow.
		offset.Store(int64(11 * time.Minute))
		status, body = s.call(t, "POST", "/v1/leases/"+id+"/extend", key, map[string]any{"ttl": "10m"})
		if status != http.StatusOK || body["extensions"] != float64(1) {
			t.Fatalf("extension = %d %v", status, body)
		}
		l, err := s.DB.FindLeaseByID(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if got := l.ExpiresAt.Sub(*l.ActivatedAt); got != 30*time.Minute {
			t.Fatalf("window after extension = %s, want 30m", got)
		}
		// Vault's lease now lives until the new window end (19m from the
		// broker's now, less the database plugin's 5s slack).
		vc, err := vaultapi.NewClient(&vaultapi.Config{Address: dv.Addr})
		if err != nil {
			t.Fatal(err)
		}
		vc.SetToken(dv.RootToken)
		sec, err := vc.Logical().Write("sys/leases/lookup", map[string]any{"lease_id": l.VaultLeaseID})
		if err != nil {
			t.Fatal(err)
		}
		ttl, _ := sec.Data["ttl"].(json.Number).Int64()
		if want := int64((19*time.Minute - 5*time.Second) / time.Second); ttl > want || ttl < want-10 {
			t.Fatalf("vault lease ttl = %ds after the extension, want about %ds", ttl, want)
		}
		mustLogIn(t, cred).Close(context.Background())
		status, _ = s.call(t, "DELETE", "/v1/leases/"+id, key, nil)
		if status != http.StatusOK {
			t.Fatalf("release = %d", status)
		}
	})

	t.Run("BurstStepsUpThenContains", func(t *testing.T) {
		cfg := governanceConfig(t, dv)
		dir := t.TempDir()
		for _, name := range policy.ExamplePolicyFiles {
			b, err := fs.ReadFile(policy.ExamplePolicies, name)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			cfg.Policy.Files = append(cfg.Policy.Files, path)
		}
		s := startStint(t, dv, cfg, nil)
		alerts := &capturedAlerts{}
		s.Alerts.Alerter = alerts
		agentID, key := s.newAgent(t, "burst")

		var first string
		var firstCred map[string]any
		seen := map[int]bool{}
		var scores []float64
		for i := 0; i < 40; i++ {
			status, body := s.call(t, "POST", "/v1/leases", key, map[string]any{"role": "db-readonly", "ttl": "15m", "task": "scan"})
			seen[status] = true
			if score, ok := body["risk_score"].(float64); ok {
				scores = append(scores, score)
			}
			if status == http.StatusCreated && first == "" {
				first, firstCred = body["id"].(string), body["credential"].(map[string]any)
			}
			if status == http.StatusUnauthorized {
				break // suspended: the key no longer works
			}
		}
		t.Logf("risk scores over the burst: %v", scores)
		for _, want := range []int{http.StatusCreated, http.StatusAccepted, http.StatusForbidden, http.StatusUnauthorized} {
			if !seen[want] {
				t.Fatalf("burst answers %v lack %d (granted, stepped up to approval, denied, suspended)", seen, want)
			}
		}
		a, err := s.DB.FindAgentByID(context.Background(), agentID)
		if err != nil || a.State != broker.AgentSuspended {
			t.Fatalf("agent after the burst: %v %v", a, err)
		}
		s.waitState(t, first, broker.LeaseRevoked, 15*time.Second)
		mustNotLogIn(t, firstCred)
		if al := alerts.find("risk_containment"); al == nil || al.Risk == nil || al.Risk.Score < 90 {
			t.Fatalf("containment alert = %+v", al)
		}
	})
}
