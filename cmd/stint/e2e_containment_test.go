package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
)

// mintDBLeases has the agent request n database leases through the lease
// service (real Vault mints, real PostgreSQL users) and returns their
// credentials.
func mintDBLeases(tb testing.TB, s *stint, agentID string, n int) []map[string]any {
	tb.Helper()
	ctx := broker.NewContextWithActor(context.Background(), broker.Actor{Kind: broker.ActorAgent, Name: "fleet", AgentID: agentID, AuthMethod: broker.AuthAPIKey})
	creds := make([]map[string]any, n)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			_, cred, err := s.Leases.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", TTL: "30m", Task: "containment test"})
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			creds[i] = map[string]any{"username": cred.Data["username"], "password": cred.Data["password"],
				"host": cred.Connection.Host, "port": cred.Connection.Port, "database": cred.Connection.Database}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		tb.Fatalf("%d of %d mints failed, first: %v", len(errs), n, errs[0])
	}
	return creds
}

// mustNotLogInAny checks that none of creds logs in any more.
func mustNotLogInAny(tb testing.TB, creds []map[string]any) {
	tb.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	failed := make(chan string, len(creds))
	for _, c := range creds {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if conn, err := pgLogin(context.Background(), c); err == nil {
				conn.Close(context.Background())
				failed <- c["username"].(string)
			}
		})
	}
	wg.Wait()
	close(failed)
	if n := len(failed); n > 0 {
		tb.Fatalf("%d of %d credentials still log in, e.g. %s", n, len(creds), <-failed)
	}
}

// TestContainmentVaultStalled pulls the kill switch on 300 live database
// leases and freezes Vault (SIGSTOP) half a second into the call: the call
// answers within its wait with the progress, and once Vault is thawed every
// credential stops logging in with no second call.
func TestContainmentVaultStalled(t *testing.T) {
	dv := vaulttest.Start(t)
	cfg := e2eConfig(t, dv, filepath.Join(t.TempDir(), "stint.db"))
	cfg.Vault.Timeout = 3 * time.Second
	s := startStint(t, dv, cfg, nil)
	id, _ := s.newAgent(t, "fleet")

	const n = 300
	creds := mintDBLeases(t, s, id, n)
	for _, c := range creds[:3] {
		mustLogIn(t, c).Close(context.Background())
	}

	type answer struct {
		status int
		body   map[string]any
		took   time.Duration
	}
	answered := make(chan answer, 1)
	start := time.Now()
	go func() {
		status, body := s.call(t, "POST", "/v1/agents/fleet/suspend", testAdminToken, map[string]string{"reason": "incident: stalled vault"})
		answered <- answer{status, body, time.Since(start)}
	}()
	time.Sleep(500 * time.Millisecond)
	if err := dv.Pause(); err != nil {
		t.Fatal(err)
	}
	paused := true
	defer func() {
		if paused {
			dv.Resume()
		}
	}()
	a := <-answered
	t.Logf("suspend answered %d after %s: %v", a.status, a.took.Round(time.Millisecond), a.body["containment"])
	cnt, _ := a.body["containment"].(map[string]any)
	if cnt == nil {
		t.Fatalf("suspend = %d %v, want the containment", a.status, a.body)
	}
	if progress := cnt["progress"].(map[string]any); progress["total"] != float64(n) {
		t.Fatalf("containment covers %v leases, want %d", progress["total"], n)
	}
	if a.status == http.StatusOK {
		t.Fatalf("suspend answered 200 (every revocation confirmed) while Vault was frozen: %v", cnt)
	}
	if a.status != http.StatusAccepted {
		t.Fatalf("suspend = %d, want 202 while Vault is frozen", a.status)
	}
	if a.took > 10*time.Second {
		t.Fatalf("suspend took %s; the call must answer within its wait", a.took)
	}
	// No lease of the agent can be active any more, whatever Vault does.
	agentID := id
	live, _, err := s.DB.FindLeases(context.Background(), broker.LeaseFilter{AgentID: &agentID, States: []broker.LeaseState{broker.LeaseActive, broker.LeaseIssuing}})
	if err != nil || len(live) != 0 {
		t.Fatalf("%d leases still active or issuing after the containment (%v)", len(live), err)
	}

	time.Sleep(5 * time.Second) // Vault stays frozen across several attempts
	if err := dv.Resume(); err != nil {
		t.Fatal(err)
	}
	paused = false
	resumed := time.Now()

	// No second call: the queue finishes on its own.
	cntID := cnt["id"].(string)
	deadline := time.Now().Add(90 * time.Second)
	for {
		c, err := s.Leases.WaitContainment(adminContext(context.Background()), cntID, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if c.Progress.Done() {
			t.Logf("all %d revocations confirmed %s after Vault resumed", c.Progress.Total, time.Since(resumed).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containment not done 90s after Vault resumed: %+v", c.Progress)
		}
	}
	mustNotLogInAny(t, creds)
	status, body := s.call(t, "GET", "/v1/containments/"+cntID, testAdminToken, nil)
	if status != http.StatusOK || body["done"] != true {
		t.Fatalf("GET containment = %d %v, want 200 done", status, body)
	}
}

// TestContainmentSurvivesKill kills the server (SIGKILL) in the middle of a
// containment, with Vault frozen so that nothing was revoked yet; a new
// server on the same store completes the containment on its own.
func TestContainmentSurvivesKill(t *testing.T) {
	dv := vaulttest.Start(t)
	bin := buildStint(t)
	dir := t.TempDir()
	cfg := e2eConfig(t, dv, filepath.Join(dir, "stint.db"))
	cfg.Listen = fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	cfg.Vault.Timeout = 3 * time.Second
	cfg.Leases.ClaimTimeout = 5 * time.Second
	b, err := yaml.Marshal(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "stint.yaml")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	serve := func() *exec.Cmd {
		cmd := exec.Command(bin, "serve", "-c", cfgPath)
		cmd.Env = append(os.Environ(), cfg.Vault.TokenEnv+"="+dv.RootToken, cfg.Admin.TokenEnv+"="+testAdminToken)
		logf, err := os.OpenFile(filepath.Join(dir, "serve.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			logf.Close()
			if t.Failed() {
				if b, err := os.ReadFile(filepath.Join(dir, "serve.log")); err == nil {
					t.Logf("serve.log:\n%s", b[max(0, len(b)-6000):])
				}
			}
		})
		waitHealthy(t, "http://"+cfg.Listen)
		return cmd
	}
	s := &stint{url: "http://" + cfg.Listen}
	first := serve()

	status, body := s.call(t, "POST", "/v1/agents", testAdminToken, map[string]any{"name": "fleet", "owner": "owner@example.com"})
	if status != http.StatusCreated {
		t.Fatalf("create agent = %d %v", status, body)
	}
	key := body["api_key"].(string)
	var creds []map[string]any
	for range 40 {
		_, cred := s.lease(t, key, "db-readonly", "30m")
		creds = append(creds, cred)
	}

	if err := dv.Pause(); err != nil {
		t.Fatal(err)
	}
	paused := true
	defer func() {
		if paused {
			dv.Resume()
		}
	}()
	status, body = s.call(t, "POST", "/v1/agents/fleet/revoke-all?wait=1s", testAdminToken, map[string]string{"reason": "incident: kill mid-containment"})
	if status != http.StatusAccepted {
		t.Fatalf("revoke-all with Vault frozen = %d %v, want 202", status, body)
	}
	cntID := body["id"].(string)
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	if err := dv.Resume(); err != nil {
		t.Fatal(err)
	}
	paused = false

	serve() // a new process on the same store, nobody calls revoke-all again
	deadline := time.Now().Add(90 * time.Second)
	for {
		status, body = s.call(t, "GET", "/v1/containments/"+cntID+"?wait=10s", testAdminToken, nil)
		if status == http.StatusOK && body["done"] == true {
			break
		}
		if status != http.StatusAccepted || time.Now().After(deadline) {
			t.Fatalf("containment after restart = %d %v", status, body)
		}
	}
	mustNotLogInAny(t, creds)
}

// buildStint builds the stint binary into a temporary directory.
func buildStint(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "stint")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// freeTCPPort returns a port on 127.0.0.1 that was free a moment ago.
func freeTCPPort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitHealthy waits for a server's /healthz.
func waitHealthy(tb testing.TB, url string) {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s did not become healthy: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
