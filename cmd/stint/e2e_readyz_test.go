package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker/postgres/pgtest"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
)

// storeGate is a TCP relay to PostgreSQL that can cut the store off: Cut
// drops every open connection and refuses new ones, as a network partition
// or a database that went away would; Restore lets connections through
// again.
type storeGate struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
}

func newStoreGate(tb testing.TB, target string) *storeGate {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	g := &storeGate{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go g.serve()
	tb.Cleanup(func() {
		ln.Close()
		g.Cut()
	})
	return g
}

func (g *storeGate) addr() string { return g.ln.Addr().String() }

func (g *storeGate) serve() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		go g.relay(c)
	}
}

func (g *storeGate) relay(c net.Conn) {
	g.mu.Lock()
	if g.cut {
		g.mu.Unlock()
		c.Close()
		return
	}
	g.mu.Unlock()
	up, err := net.Dial("tcp", g.target)
	if err != nil {
		c.Close()
		return
	}
	g.mu.Lock()
	if g.cut {
		g.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	g.conns[c], g.conns[up] = struct{}{}, struct{}{}
	g.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	g.mu.Lock()
	delete(g.conns, c)
	delete(g.conns, up)
	g.mu.Unlock()
}

// Cut drops the open connections and refuses new ones until Restore.
func (g *storeGate) Cut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cut = true
	for c := range g.conns {
		c.Close()
	}
}

// Restore lets connections through again.
func (g *storeGate) Restore() {
	g.mu.Lock()
	g.cut = false
	g.mu.Unlock()
}

// readyz asks url's /readyz and returns its status, its body's message and
// how long it took.
func readyz(tb testing.TB, base string) (int, string, time.Duration) {
	tb.Helper()
	start := time.Now()
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Get(base + "/readyz")
	if err != nil {
		tb.Fatalf("GET /readyz: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("read /readyz: %v", err)
	}
	return resp.StatusCode, string(b), time.Since(start)
}

// waitReady polls /readyz until it answers want, for at most within.
func waitReady(tb testing.TB, base string, want int, within time.Duration) (string, time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		status, body, took := readyz(tb, base)
		if status == want {
			return body, took
		}
		if time.Now().After(deadline) {
			tb.Fatalf("/readyz = %d %s after %s, want %d", status, body, within, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestReadyzFollowsStoreAndVault runs Stint on a PostgreSQL store reached
// through a relay that can cut it off, with the real development Vault:
// /readyz answers 503 naming Vault while Vault is stopped and while it is
// frozen (answering within its bound rather than hanging), 503 naming the
// store while the store is cut off, and 200 again each time they are back;
// /healthz stays 200 throughout.
func TestReadyzFollowsStoreAndVault(t *testing.T) {
	_, dsn := pgtest.NewSchema(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	gate := newStoreGate(t, u.Host)
	u.Host = gate.addr()
	dv := vaulttest.Start(t)
	cfg := e2eConfig(t, dv, "unused.db")
	cfg.Store = StoreConfig{Driver: driverPostgres, DSN: u.String()}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s := startStint(t, dv, cfg, nil)
	healthy := func() {
		t.Helper()
		resp, err := http.Get(s.url + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/healthz = %d, want 200: the process is up", resp.StatusCode)
		}
	}
	if status, body, _ := readyz(t, s.url); status != http.StatusOK {
		t.Fatalf("/readyz at start = %d %s", status, body)
	}

	// Vault stopped (its process gone), then started again.
	if err := dv.Stop(); err != nil {
		t.Fatal(err)
	}
	body, _ := waitReady(t, s.url, http.StatusServiceUnavailable, 10*time.Second)
	if !strings.Contains(body, "Vault") {
		t.Errorf("/readyz with Vault stopped = %s, want it to name Vault", body)
	}
	healthy()
	if err := dv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitReady(t, s.url, http.StatusOK, 20*time.Second)

	// Vault frozen: connections open, nothing answers.
	if err := dv.Pause(); err != nil {
		t.Fatal(err)
	}
	status, body, took := readyz(t, s.url)
	dv.Resume()
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "Vault") {
		t.Errorf("/readyz with Vault frozen = %d %s, want 503 naming Vault", status, body)
	}
	if took > 10*time.Second {
		t.Errorf("/readyz with Vault frozen took %s; it must answer within its bound", took)
	}
	t.Logf("/readyz answered %d in %s with Vault frozen", status, took.Round(time.Millisecond))
	waitReady(t, s.url, http.StatusOK, 20*time.Second)

	// The store cut off, then back.
	gate.Cut()
	body, _ = waitReady(t, s.url, http.StatusServiceUnavailable, 10*time.Second)
	if !strings.Contains(body, "store") {
		t.Errorf("/readyz with the store cut off = %s, want it to name the store", body)
	}
	healthy()
	gate.Restore()
	waitReady(t, s.url, http.StatusOK, 20*time.Second)
	_, key := s.newAgent(t, "after-outage")
	s.lease(t, key, "db-readonly", "1m")
}
