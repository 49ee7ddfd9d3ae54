package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/postgres/pgtest"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
)

// holdingVault stands between one replica and the real Vault: it passes
// every call through, except that it can hold revocations (a Vault that
// stopped answering them) and slow mints down.
type holdingVault struct {
	*httptest.Server
	holdRevokes atomic.Bool
	mintDelay   atomic.Int64 // nanoseconds
	revokes     atomic.Int32 // revocations that reached the proxy
	minting     chan struct{}
	closed      chan struct{}
}

func newHoldingVault(tb testing.TB, vaultAddr string) *holdingVault {
	target, err := url.Parse(vaultAddr)
	if err != nil {
		tb.Fatal(err)
	}
	p := &holdingVault{minting: make(chan struct{}, 16), closed: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(target)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/v1/sys/leases/revoke"):
			p.revokes.Add(1)
			if p.holdRevokes.Load() {
				select { // until the caller gives up
				case <-r.Context().Done():
				case <-p.closed:
				}
				return
			}
		case strings.HasPrefix(r.URL.Path, "/v1/database/creds/"):
			if d := time.Duration(p.mintDelay.Load()); d > 0 {
				select {
				case p.minting <- struct{}{}:
				default:
				}
				time.Sleep(d)
			}
		}
		rp.ServeHTTP(w, r)
	}))
	tb.Cleanup(func() {
		close(p.closed)
		p.Close()
	})
	return p
}

// serveProcess runs `stint serve` from bin with cfg until the test ends,
// logging to dir/name.log (printed when the test fails), and waits until it
// answers /healthz.
func serveProcess(tb testing.TB, bin, dir, name string, cfg Config, token string, args ...string) (*exec.Cmd, string) {
	tb.Helper()
	b, err := yaml.Marshal(&cfg)
	if err != nil {
		tb.Fatal(err)
	}
	cfgPath := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"serve", "-c", cfgPath}, args...)...)
	cmd.Env = append(os.Environ(), cfg.Vault.TokenEnv+"="+token, cfg.Admin.TokenEnv+"="+testAdminToken)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		if tb.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				tb.Logf("%s:\n%s", logPath, b[max(0, len(b)-8000):])
			}
		}
	})
	waitHealthy(tb, "http://"+cfg.Listen)
	return cmd, logPath
}

// TestReplicaStopReleasesClaims runs replica A as a real process on a
// PostgreSQL store, its Vault holding revocations so that A is stuck
// revoking an expired lease and holds its claim, then stops A with SIGTERM:
// the request A had in flight is answered, A hands the claim back, and
// replica B revokes the lease within seconds instead of after the claim
// timeout (two minutes here).
func TestReplicaStopReleasesClaims(t *testing.T) {
	_, dsn := pgtest.NewSchema(t)
	dv := vaulttest.Start(t)
	bin := buildStint(t)
	dir := t.TempDir()
	proxy := newHoldingVault(t, dv.Addr)

	cfg := e2eConfig(t, dv, "unused.db")
	cfg.Store = StoreConfig{Driver: driverPostgres, DSN: dsn}
	cfg.Leases.ClaimTimeout = 2 * time.Minute
	cfg.Vault.Timeout = 2 * time.Minute
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfgA := cfg
	cfgA.Listen = fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	cfgA.Vault.Address = proxy.URL
	procA, logA := serveProcess(t, bin, dir, "replica-a", cfgA, dv.RootToken, "--replica-id", "replica-a")
	a := &stint{url: "http://" + cfgA.Listen}

	status, body := a.call(t, "POST", "/v1/agents", testAdminToken, map[string]any{"name": "etl", "owner": "owner@example.com"})
	if status != http.StatusCreated {
		t.Fatalf("create agent = %d %v", status, body)
	}
	key := body["api_key"].(string)
	id, cred := a.lease(t, key, "db-readonly", "15s")
	mustLogIn(t, cred).Close(context.Background())

	// Vault stops answering A's revocations: at expiry A claims the lease
	// and stays inside the call.
	proxy.holdRevokes.Store(true)
	deadline := time.Now().Add(40 * time.Second)
	for proxy.revokes.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("replica A did not try to revoke the expired lease")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if status, body := a.call(t, "GET", "/v1/leases/"+id, key, nil); status != http.StatusOK || body["state"] != "revoking" {
		t.Fatalf("lease while A revokes = %d %v, want revoking", status, body)
	}

	// B starts beside A and leaves A's claim alone.
	b := startStint(t, dv, cfg, nil)
	time.Sleep(b.Leases.MaxSleep + time.Second) // at least two of B's passes
	l, err := b.DB.FindLeaseByID(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if l.State != broker.LeaseRevoking {
		t.Fatalf("lease is %s while A holds its claim, want revoking", l.State)
	}

	// A request in flight when SIGTERM arrives: a grant whose mint takes
	// three seconds.
	proxy.mintDelay.Store(int64(3 * time.Second))
	type answer struct {
		status int
		body   map[string]any
	}
	answered := make(chan answer, 1)
	go func() {
		status, body := a.call(t, "POST", "/v1/leases", key, map[string]string{"role": "db-readonly", "ttl": "10m", "task": "in flight at SIGTERM", "justification": "test"})
		answered <- answer{status, body}
	}()
	<-proxy.minting

	stopped := time.Now()
	if err := procA.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- procA.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("replica A after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("replica A did not stop within 30s of SIGTERM")
	}
	t.Logf("replica A stopped %s after SIGTERM", time.Since(stopped).Round(time.Millisecond))

	inflight := <-answered
	icred, _ := inflight.body["credential"].(map[string]any)
	if inflight.status != http.StatusCreated || icred == nil {
		t.Fatalf("request in flight at SIGTERM = %d %v, want 201 with the credential", inflight.status, inflight.body)
	}
	mustLogIn(t, icred).Close(context.Background())

	b.waitState(t, id, broker.LeaseExpired, 20*time.Second)
	took := time.Since(stopped)
	t.Logf("replica B revoked the lease %s after A's SIGTERM (claim timeout %s)", took.Round(time.Millisecond), cfg.Leases.ClaimTimeout)
	mustNotLogIn(t, cred)

	events, err := b.DB.FindLeaseEvents(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var toRevoking, ended int
	for _, e := range events {
		if e.To == broker.LeaseRevoking {
			toRevoking++
		}
		if e.To == broker.LeaseExpired {
			ended++
		}
	}
	if toRevoking != 1 || ended != 1 {
		t.Fatalf("lease history: %d moves to revoking, %d ends; want 1 and 1: %v", toRevoking, ended, fmtEvents(events))
	}
	log, err := os.ReadFile(logA)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "released revocation claims") {
		t.Errorf("replica A's log does not say it released its revocation claims:\n%s", log[max(0, len(log)-3000):])
	}
}
