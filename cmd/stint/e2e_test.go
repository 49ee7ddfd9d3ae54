package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases"
	"github.com/stint-broker/stint/leases/vault"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
	"github.com/stint-broker/stint/web/openapitest"
)

const testAdminToken = "e2e-admin-token"

// stint is one running Stint wired like the binary: real SQLite, real Vault,
// real HTTP.
type stint struct {
	*Main
	url    string
	cancel context.CancelFunc
	done   chan struct{}
}

func e2eConfig(tb testing.TB, dv *vault.DevServer, dbPath string) Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Store.Path = dbPath
	cfg.Vault.Address = dv.Addr
	cfg.Leases.RetryBase, cfg.Leases.RetryMax = 100*time.Millisecond, time.Second
	cfg.Limits = LimitsConfig{} // tests make bursts of requests from one agent
	cfg.Roles = vault.DevRoles()
	for _, r := range cfg.Roles {
		r.AutoApprove = true
	}
	if err := cfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// startStint opens Main and runs it until the test ends (or stop is called).
func startStint(tb testing.TB, dv *vault.DevServer, cfg Config, now func() time.Time) *stint {
	tb.Helper()
	return startStintWith(tb, dv, cfg, stintOptions{Now: now})
}

// stintOptions vary how startStintWith runs Stint.
type stintOptions struct {
	// Now replaces the lease service's clock.
	Now func() time.Time
	// Env holds environment variables Main may read besides the Vault and
	// admin tokens (e.g. Slack's secrets).
	Env map[string]string
	// Logger receives Stint's logs; nil discards them.
	Logger *slog.Logger
}

// startStintWith opens Main, opens its listener, and runs it until the test
// ends (or stop is called).
func startStintWith(tb testing.TB, dv *vault.DevServer, cfg Config, o stintOptions) *stint {
	tb.Helper()
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := NewMain(cfg, logger)
	m.Getenv = func(name string) string {
		switch name {
		case cfg.Vault.TokenEnv:
			return dv.RootToken
		case cfg.Admin.TokenEnv:
			return testAdminToken
		}
		return o.Env[name]
	}
	if err := m.Open(context.Background()); err != nil {
		tb.Fatal(err)
	}
	if o.Now != nil {
		m.Leases.Now = o.Now
	}
	// Every exchange of the end-to-end tests is held to the OpenAPI document.
	m.HTTP.Wrap = openapitest.Wrap(tb)
	if err := m.Listen(); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &stint{Main: m, cancel: cancel, done: make(chan struct{}), url: m.HTTP.URL()}
	go func() {
		defer close(s.done)
		if err := m.Run(ctx); err != nil {
			tb.Errorf("run: %v", err)
		}
	}()
	tb.Cleanup(s.stop)
	return s
}

func (s *stint) stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.done
	s.Close()
	s.cancel = nil
}

// call sends a JSON request and decodes the JSON answer.
func (s *stint) call(tb testing.TB, method, path, token string, body any) (int, map[string]any) {
	tb.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.url+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	if len(data) > 0 {
		if err := json.Unmarshal(data, &out); err != nil {
			tb.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, data)
		}
	}
	return resp.StatusCode, out
}

func (s *stint) newAgent(tb testing.TB, name string) (id, key string) {
	tb.Helper()
	a, key, _, err := s.Agents.CreateAgent(adminContext(context.Background()), broker.NewAgent{Name: name, Owner: "owner@example.com"})
	if err != nil {
		tb.Fatal(err)
	}
	return a.ID, key
}

// lease requests a lease and returns its id and credential.
func (s *stint) lease(tb testing.TB, key, role, ttl string) (string, map[string]any) {
	tb.Helper()
	status, body := s.call(tb, "POST", "/v1/leases", key, map[string]string{"role": role, "ttl": ttl, "task": "e2e", "justification": "test"})
	if status != http.StatusCreated {
		tb.Fatalf("POST /v1/leases = %d %v", status, body)
	}
	cred, _ := body["credential"].(map[string]any)
	if body["state"] != "active" || cred == nil {
		tb.Fatalf("lease = %v", body)
	}
	return body["id"].(string), cred
}

func (s *stint) waitState(tb testing.TB, id string, want broker.LeaseState, within time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		l, err := s.DB.FindLeaseByID(context.Background(), id)
		if err != nil {
			tb.Fatal(err)
		}
		if l.State == want {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("lease %s is %s after %s, want %s (last error %q)", id, l.State, within, want, l.RevokeError)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func pgLogin(ctx context.Context, cred map[string]any) (*pgx.Conn, error) {
	dsn := fmt.Sprintf("postgres://%s:%s@%s:%v/%s?sslmode=disable&connect_timeout=5",
		url.PathEscape(cred["username"].(string)), url.PathEscape(cred["password"].(string)),
		cred["host"], cred["port"], cred["database"])
	return pgx.Connect(ctx, dsn)
}

// mustLogIn proves the credential works: it logs in and reads as that user.
func mustLogIn(tb testing.TB, cred map[string]any) *pgx.Conn {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgLogin(ctx, cred)
	if err != nil {
		tb.Fatalf("login with the leased credential: %v", err)
	}
	var user string
	if err := conn.QueryRow(ctx, "select current_user").Scan(&user); err != nil || user != cred["username"] {
		tb.Fatalf("current_user = %q, %v; want %v", user, err, cred["username"])
	}
	return conn
}

func mustNotLogIn(tb testing.TB, cred map[string]any) {
	tb.Helper()
	conn, err := pgLogin(context.Background(), cred)
	if err == nil {
		conn.Close(context.Background())
		tb.Fatalf("login as %v still works after the lease ended", cred["username"])
	}
	if !strings.Contains(err.Error(), "does not exist") && !strings.Contains(err.Error(), "not permitted to log in") {
		tb.Fatalf("login failed for an unexpected reason: %v", err)
	}
}

func TestEndToEnd(t *testing.T) {
	dv := vaulttest.Start(t)

	t.Run("ReleaseTerminatesOpenSession", func(t *testing.T) {
		s := startStint(t, dv, e2eConfig(t, dv, filepath.Join(t.TempDir(), "stint.db")), nil)
		_, key := s.newAgent(t, "etl")
		id, cred := s.lease(t, key, "db-readonly", "10m")
		if cred["port"] != float64(5432) || cred["lease_duration"].(float64) > 600 || cred["expires_at"] == nil {
			t.Fatalf("credential shape = %v", redactCred(cred))
		}
		open := mustLogIn(t, cred)
		defer open.Close(context.Background())

		status, body := s.call(t, "DELETE", "/v1/leases/"+id, key, nil)
		if status != http.StatusOK || body["state"] != "released" {
			t.Fatalf("release = %d %v", status, body)
		}
		if err := open.Ping(context.Background()); err == nil {
			t.Fatal("the open session survived the release")
		}
		mustNotLogIn(t, cred)
		// The lease never shows its credential again.
		status, body = s.call(t, "GET", "/v1/leases/"+id, key, nil)
		if status != http.StatusOK || body["credential"] != nil || body["state"] != "released" {
			t.Fatalf("GET lease = %d %v", status, body)
		}
	})

	t.Run("ExpiresWhenWindowCloses", func(t *testing.T) {
		s := startStint(t, dv, e2eConfig(t, dv, filepath.Join(t.TempDir(), "stint.db")), nil)
		_, key := s.newAgent(t, "etl")
		// The shortest window a role grants (broker.DefaultMinTTL): the
		// credential and its VALID UNTIL still end inside it.
		id, cred := s.lease(t, key, "db-readonly", "15s")
		if d := cred["lease_duration"].(float64); d > 10 {
			t.Fatalf("Vault lease of %vs leaves VALID UNTIL (5 s later) outside the 15s window", d)
		}
		mustLogIn(t, cred).Close(context.Background())
		s.waitState(t, id, broker.LeaseExpired, 30*time.Second)
		mustNotLogIn(t, cred)
	})

	t.Run("RevokeAllAndToken", func(t *testing.T) {
		s := startStint(t, dv, e2eConfig(t, dv, filepath.Join(t.TempDir(), "stint.db")), nil)
		agentID, key := s.newAgent(t, "etl")
		_, db1 := s.lease(t, key, "db-readonly", "10m")
		_, db2 := s.lease(t, key, "db-readonly", "10m")
		_, tok := s.lease(t, key, "vault-token", "10m")
		mustLogIn(t, db1).Close(context.Background())
		if got := vaultRead(t, dv, tok["token"].(string), vault.DevAgentSecret); got != http.StatusOK {
			t.Fatalf("token read of its allowed path = %d, want 200", got)
		}
		if got := vaultRead(t, dv, tok["token"].(string), vault.DevAdminSecret); got != http.StatusForbidden {
			t.Fatalf("token read outside its policy = %d, want 403", got)
		}

		status, body := s.call(t, "POST", "/v1/agents/"+agentID+"/revoke-all", key, map[string]string{"reason": "x"})
		if status != http.StatusForbidden {
			t.Fatalf("agent calling revoke-all = %d %v, want 403", status, body)
		}
		status, body = s.call(t, "POST", "/v1/agents/"+agentID+"/revoke-all", testAdminToken, map[string]string{"reason": "incident 7"})
		if progress, _ := body["progress"].(map[string]any); status != http.StatusOK || body["done"] != true ||
			progress["total"] != float64(3) || progress["ended"] != float64(3) {
			t.Fatalf("revoke-all = %d %v, want 200 with all 3 leases ended", status, body)
		}
		mustNotLogIn(t, db1)
		mustNotLogIn(t, db2)
		if got := vaultRead(t, dv, tok["token"].(string), vault.DevAgentSecret); got != http.StatusForbidden {
			t.Fatalf("revoked token still reads: %d", got)
		}
	})

	t.Run("OverdueLeasesRevokedAtStart", func(t *testing.T) {
		dbPath := filepath.Join(t.TempDir(), "stint.db")
		cfg := e2eConfig(t, dv, dbPath)
		s := startStint(t, dv, cfg, nil)
		_, key := s.newAgent(t, "etl")
		id, cred := s.lease(t, key, "db-readonly", "30m")
		s.stop()
		mustLogIn(t, cred).Close(context.Background()) // Stint is down; Vault's TTL has not passed

		// Restart after the window has closed (the clock is moved instead of
		// waiting 30 minutes; Vault's own TTL is still far away).
		later := func() time.Time { return time.Now().Add(31 * time.Minute) }
		s = startStint(t, dv, cfg, later)
		s.waitState(t, id, broker.LeaseExpired, 10*time.Second)
		mustNotLogIn(t, cred)
	})

	t.Run("ReconcilerCleansCrashBetweenMintAndRecord", func(t *testing.T) {
		s := startStint(t, dv, e2eConfig(t, dv, filepath.Join(t.TempDir(), "stint.db")), nil)
		agentID, _ := s.newAgent(t, "etl")
		role := s.Config.Roles[0]
		// The write-ahead row exists, Vault minted, then the process died
		// before recording the Vault lease id.
		now := time.Now().UTC()
		stuck := &broker.Lease{ID: "0190c0de-0000-7000-8000-00000000c0de", AgentID: agentID, Agent: "etl", Role: role.Name,
			Task: "e2e", TTL: broker.Duration(10 * time.Minute), State: broker.LeaseIssuing, VaultPath: role.Vault.Path,
			CreatedAt: now, UpdatedAt: now}
		if err := s.DB.CreateLease(context.Background(), stuck, "agent:etl", "test"); err != nil {
			t.Fatal(err)
		}
		grant, err := s.Issuer.Issue(context.Background(), leases.IssueRequest{LeaseID: stuck.ID, Agent: "etl", Role: role, Window: 10 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		cred := map[string]any{"username": grant.Data["username"], "password": grant.Data["password"], "host": "127.0.0.1", "port": 5432, "database": "postgres"}
		mustLogIn(t, cred).Close(context.Background())

		// A pass inside the grace period leaves the in-flight mint alone.
		rep, err := s.Leases.Reconcile(context.Background())
		if err != nil || len(rep.Orphans) != 0 || len(rep.FailedIssuing) != 0 {
			t.Fatalf("early reconcile = %+v, %v; want nothing done", rep, err)
		}
		// A minute later it is an orphan.
		s.Leases.Now = func() time.Time { return time.Now().Add(2 * time.Minute) }
		rep, err = s.Leases.Reconcile(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Orphans) != 1 || rep.Orphans[0] != grant.VaultLeaseID || len(rep.FailedIssuing) != 1 {
			t.Fatalf("reconcile = %+v, want the orphan revoked and the stuck lease failed", rep)
		}
		mustNotLogIn(t, cred)
		l, _ := s.DB.FindLeaseByID(context.Background(), stuck.ID)
		if l.State != broker.LeaseFailed {
			t.Fatalf("stuck lease is %s, want failed", l.State)
		}
	})

	t.Run("VaultDownThenBack", func(t *testing.T) {
		s := startStint(t, dv, e2eConfig(t, dv, filepath.Join(t.TempDir(), "stint.db")), nil)
		_, key := s.newAgent(t, "etl")
		id, cred := s.lease(t, key, "db-readonly", "10m")

		if err := dv.Stop(); err != nil {
			t.Fatal(err)
		}
		restarted := false
		defer func() {
			if !restarted {
				dv.Start(context.Background())
			}
		}()
		status, body := s.call(t, "POST", "/v1/leases", key, map[string]string{"role": "db-readonly", "task": "e2e"})
		if status != http.StatusServiceUnavailable || !strings.Contains(fmt.Sprint(body), "Vault") {
			t.Fatalf("request with Vault down = %d %v, want 503 naming Vault", status, body)
		}
		if status, _ := s.call(t, "GET", "/readyz", "", nil); status != http.StatusServiceUnavailable {
			t.Fatalf("readyz with Vault down = %d, want 503", status)
		}
		// Nothing half-created: the failed request left a failed lease and
		// no live one.
		live, _, _ := s.DB.FindLeases(context.Background(), broker.LeaseFilter{States: []broker.LeaseState{broker.LeaseIssuing}})
		if len(live) != 0 {
			t.Fatalf("%d leases left issuing", len(live))
		}
		status, body = s.call(t, "DELETE", "/v1/leases/"+id, key, nil)
		if status != http.StatusAccepted || body["state"] != "revoking" {
			t.Fatalf("release with Vault down = %d %v, want 202 revoking", status, body)
		}
		mustLogIn(t, cred).Close(context.Background()) // not revoked yet: Vault is down

		if err := dv.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		restarted = true
		s.waitState(t, id, broker.LeaseReleased, 30*time.Second)
		mustNotLogIn(t, cred)
	})
}

// vaultRead reads a Vault path with a token and returns the HTTP status.
func vaultRead(tb testing.TB, dv *vault.DevServer, token, path string) int {
	tb.Helper()
	req, _ := http.NewRequest("GET", dv.Addr+"/v1/"+path, nil)
	req.Header.Set("X-Vault-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func redactCred(c map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range c {
		if k == "password" || k == "token" {
			v = "[redacted]"
		}
		out[k] = v
	}
	return out
}
