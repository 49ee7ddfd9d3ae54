//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases/vault"
)

// The fault-injection suite: three `stint serve` processes on one
// PostgreSQL store of their own, the development Vault, a mixed load of
// grants, releases, extensions, expiries and kill switches, and random
// faults (SIGKILL of a replica, also between Vault's mint and the store
// write; PostgreSQL restarted; Vault stopped across expiries; a replica
// frozen with SIGSTOP). Afterwards it checks Vault and PostgreSQL
// themselves, not Stint's view of them. `make test` runs a short version;
// `make chaos` the full one. Settings (environment):
//
//	CHAOS_RUNS        independent runs, each in a fresh world (default 1)
//	CHAOS_SEED        seed of the first run; run i uses seed+i (default: the clock)
//	CHAOS_FAULTS      faults per run (default 20)
//	CHAOS_VAULT_DOWN  longest Vault outage (default 4s)
//	CHAOS_STINT_BIN   the stint binary to run (default: built by the test)

const (
	// chaosReplicas is how many replicas serve the store.
	chaosReplicas = 3
	// chaosClaimTimeout is leases.claim_timeout: a revocation claimed by a
	// replica that dies or freezes passes to another after it.
	chaosClaimTimeout = 5 * time.Second
	// chaosGrace is how long after its window a credential may still log
	// in: none is expected (the database plugin's VALID UNTIL is the
	// window's end, which PostgreSQL enforces at password logins even
	// while Vault is down, and Stint revokes at the window), so the grace
	// only absorbs whole-second rounding and a loaded machine.
	chaosGrace = 5 * time.Second
	// chaosVaultReturn is how soon after Vault's return every revocation
	// that fell due while it was down must be done.
	chaosVaultReturn = 30 * time.Second
)

type chaosSettings struct {
	runs, faults int
	seed         int64
	vaultDown    time.Duration
}

func chaosSettingsFromEnv(tb testing.TB) chaosSettings {
	s := chaosSettings{runs: envInt("CHAOS_RUNS", 1), faults: envInt("CHAOS_FAULTS", 20), seed: time.Now().UnixNano() % 1_000_000, vaultDown: 4 * time.Second}
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			tb.Fatalf("CHAOS_SEED=%q is not an integer", v)
		}
		s.seed = n
	}
	if v := os.Getenv("CHAOS_VAULT_DOWN"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			tb.Fatalf("CHAOS_VAULT_DOWN=%q is not a duration of at least 1s", v)
		}
		s.vaultDown = d
	}
	return s
}

// chaosCounts are what one run found.
type chaosCounts struct {
	faults, leases                    int
	orphaned, overdue, doubleRevoked  int
	lostHistory, lateAfterVault, left int
	unregistered                      int // database users Vault created for a mint it never completed
	auditBroken                       bool
	byKind                            map[string]int
}

func (c *chaosCounts) add(o chaosCounts) {
	c.faults += o.faults
	c.leases += o.leases
	c.orphaned += o.orphaned
	c.overdue += o.overdue
	c.doubleRevoked += o.doubleRevoked
	c.lostHistory += o.lostHistory
	c.lateAfterVault += o.lateAfterVault
	c.left += o.left
	c.unregistered += o.unregistered
	c.auditBroken = c.auditBroken || o.auditBroken
	if c.byKind == nil {
		c.byKind = map[string]int{}
	}
	for k, n := range o.byKind {
		c.byKind[k] += n
	}
}

func TestChaos(t *testing.T) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("the fault-injection suite is not short (CI runs it even with -short)")
	}
	set := chaosSettingsFromEnv(t)
	bindir := pgBinDir()
	if bindir == "" {
		missingService(t, "no PostgreSQL server binaries (initdb, postgres) under /usr/lib/postgresql/*/bin or pg_config --bindir: install the postgresql package")
	}
	vaultBin := testVaultBin(t)
	bin := os.Getenv("CHAOS_STINT_BIN")
	if bin == "" {
		bin = buildStint(t)
	}
	var total chaosCounts
	for run := range set.runs {
		seed := set.seed + int64(run)
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			c := runChaos(t, bin, vaultBin, bindir, set, seed)
			t.Logf("run seed=%d: %+v", seed, c)
			total.add(c)
		})
	}
	audit := "verified"
	if total.auditBroken {
		audit = "broken"
	}
	fmt.Printf("chaos details: seed=%d faults_by_kind=%v lost_history=%d late_after_vault=%d unsettled=%d unregistered_by_vault=%d\n",
		set.seed, total.byKind, total.lostHistory, total.lateAfterVault, total.left, total.unregistered)
	fmt.Printf("chaos: runs=%d faults=%d leases=%d orphaned=%d overdue=%d double_revoked=%d audit=%s\n",
		set.runs, total.faults, total.leases, total.orphaned, total.overdue, total.doubleRevoked, audit)
	if total.orphaned+total.overdue+total.doubleRevoked+total.lostHistory+total.lateAfterVault+total.left > 0 || total.auditBroken {
		t.Fail()
	}
}

// chaosGrant is a credential the load received.
type chaosGrant struct {
	leaseID string
	cred    map[string]any
	checked bool // a login was tried after its window and refused
}

// chaosWorld is one run's services, replicas and load.
type chaosWorld struct {
	t        *testing.T
	pg       *chaosPG
	dv       *vault.DevServer
	boundary *vaultBoundary
	replicas []*chaosReplica
	store    *pgxpool.Pool
	bin      string
	hc       *http.Client
	journal  string // faults.log: what was injected when

	mu       sync.Mutex
	agents   []string // agent ids
	keys     []string // their API keys
	grants   []*chaosGrant
	outages  [][2]time.Time // Vault down, up
	overdue  []string       // lease ids whose credential logged in after its window
	requests atomic.Int64
}

func runChaos(t *testing.T, bin, vaultBin, bindir string, set chaosSettings, seed int64) chaosCounts {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	w := &chaosWorld{t: t, bin: bin, hc: &http.Client{Timeout: 20 * time.Second}}
	w.pg = startChaosPG(t, bindir)
	if err := w.pg.exec(ctx, "postgres", "CREATE DATABASE stint"); err != nil {
		t.Fatal(err)
	}
	dv, err := vault.StartDev(ctx, vault.DevOptions{Bin: vaultBin, Dir: t.TempDir(), Port: freeTCPPort(t), PGDSN: w.pg.dsn("postgres")})
	if err != nil {
		t.Fatal(err)
	}
	w.dv = dv
	t.Cleanup(func() { dv.Close() })
	w.boundary = newVaultBoundary(dv)
	logDir := chaosLogDir(t, seed)
	w.journal = filepath.Join(logDir, "faults.log")
	for slot := range chaosReplicas {
		r := &chaosReplica{slot: slot, bin: bin, logDir: logDir, proxy: startVaultProxy(t, w.boundary)}
		port := freeTCPPort(t)
		r.url = fmt.Sprintf("http://127.0.0.1:%d", port)
		r.config = filepath.Join(logDir, fmt.Sprintf("stint-%d.yaml", slot))
		if err := os.WriteFile(r.config, []byte(chaosConfig(port, r.proxy.addr(), w.pg)), 0o600); err != nil {
			t.Fatal(err)
		}
		r.env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir(), "VAULT_TOKEN=" + dv.RootToken, "STINT_ADMIN_TOKEN=" + testAdminToken}
		w.replicas = append(w.replicas, r)
	}
	t.Cleanup(func() {
		for _, r := range w.replicas {
			r.signal(syscall.SIGCONT)
			r.kill()
		}
		if t.Failed() {
			copyFile(filepath.Join(w.pg.base, "postgres.log"), filepath.Join(logDir, "postgres.log"))
			copyFile(filepath.Join(dv.Dir, "vault.log"), filepath.Join(logDir, "vault.log"))
		}
	})
	// The first replica migrates the store; the others start together.
	if err := w.replicas[0].start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, chaosReplicas)
	for _, r := range w.replicas[1:] {
		wg.Go(func() { errs <- r.start() })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	store, err := pgxpool.New(ctx, w.pg.dsn("stint"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	w.store = store

	for i := range 4 {
		status, body := w.call(ctx, 0, "POST", "/v1/agents", testAdminToken, map[string]string{"name": fmt.Sprintf("chaos-%d", i), "owner": "owner@example.com"})
		agent, _ := body["agent"].(map[string]any)
		if status != http.StatusCreated || agent == nil {
			t.Fatalf("create agent = %d %v", status, body)
		}
		w.agents = append(w.agents, agent["id"].(string))
		w.keys = append(w.keys, body["api_key"].(string))
	}

	// The load, the kill switch and the login checker run while faults
	// are injected.
	loadCtx, stopLoad := context.WithCancel(ctx)
	checkCtx, stopCheck := context.WithCancel(ctx)
	var load, checker sync.WaitGroup
	for i := range 3 {
		wr := rand.New(rand.NewPCG(uint64(seed), uint64(100+i)))
		load.Go(func() { w.grantLoop(loadCtx, wr, &load) })
	}
	kr := rand.New(rand.NewPCG(uint64(seed), 200))
	load.Go(func() { w.killSwitchLoop(loadCtx, kr) })
	checker.Go(func() { w.checkLogins(checkCtx) })

	counts := chaosCounts{byKind: map[string]int{}}
	time.Sleep(3 * time.Second) // some leases first
	for i := range set.faults {
		start := time.Now()
		kind := w.inject(ctx, rng, set)
		w.note("fault %d: %s from %s to %s", i+1, kind, start.UTC().Format(time.StampMilli), time.Now().UTC().Format(time.StampMilli))
		counts.byKind[kind]++
		counts.faults++
		time.Sleep(time.Duration(500+rng.IntN(1000)) * time.Millisecond)
	}
	stopLoad()
	load.Wait()
	t.Logf("load done: %d requests, %d credentials granted; faults %v", w.requests.Load(), len(w.grants), counts.byKind)

	// Every replica is up; wait for every lease to end and for Vault and
	// PostgreSQL to hold nothing the store does not know.
	w.settle(ctx, &counts)
	stopCheck()
	checker.Wait()
	w.finalChecks(ctx, &counts)
	return counts
}

// chaosLogDir is where a run keeps the replicas' logs, their
// configurations and the fault journal: under STINT_TEST_ARTIFACTS (or
// the temporary directory), removed when the run passes.
func chaosLogDir(t *testing.T, seed int64) string {
	base := os.Getenv("STINT_TEST_ARTIFACTS")
	if base == "" {
		base = os.TempDir()
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(base, fmt.Sprintf("chaos-seed-%d-", seed))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs of the failed run in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// note logs a line and appends it to the fault journal.
func (w *chaosWorld) note(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	w.t.Log(line)
	if f, err := os.OpenFile(w.journal, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
		fmt.Fprintln(f, line)
		f.Close()
	}
}

func copyFile(from, to string) {
	if b, err := os.ReadFile(from); err == nil {
		os.WriteFile(to, b, 0o600)
	}
}

// chaosConfig is one replica's configuration: its address and its proxy
// to Vault differ; the store is shared.
func chaosConfig(port int, vaultAddr string, pg *chaosPG) string {
	return fmt.Sprintf(`listen: 127.0.0.1:%d
store:
  driver: postgres
  dsn: %s
vault:
  address: %s
  timeout: 5s
leases:
  retry_base: 500ms
  retry_max: 3s
  reconcile_schedule: "@every 5s"
  issuing_timeout: 15s
  orphan_grace: 15s
  claim_timeout: %s
replica:
  job_claim_timeout: 10s
limits:
  requests_per_second: 0
  burst: 0
  max_live_leases: 0
log:
  level: info
  format: text
roles:
  - name: db-readonly
    description: Read-only login to the fault-injection cluster.
    kind: database
    sensitivity: low
    vault:
      path: database/creds/%s
      method: read
    default_ttl: 20s
    max_ttl: 1m
    max_extensions: 2
    max_total_ttl: 2m
    auto_approve: true
    connection:
      host: 127.0.0.1
      port: %d
      database: postgres
`, port, pg.dsn("stint"), vaultAddr, chaosClaimTimeout, vault.DevDatabaseRole, pg.port)
}

// call sends a JSON request to replica slot and decodes the answer; a
// transport error is status 0.
func (w *chaosWorld) call(ctx context.Context, slot int, method, path, token string, body any) (int, map[string]any) {
	w.requests.Add(1)
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(ctx, method, w.replicas[slot].url+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.hc.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	json.Unmarshal(data, &out)
	return resp.StatusCode, out
}

// grantLoop requests leases on random replicas and, for each credential,
// releases it early, extends it, or lets it expire.
func (w *chaosWorld) grantLoop(ctx context.Context, rng *rand.Rand, actions *sync.WaitGroup) {
	for ctx.Err() == nil {
		a := rng.IntN(len(w.keys))
		ttl := time.Duration(15+rng.IntN(11)) * time.Second
		status, body := w.call(ctx, rng.IntN(chaosReplicas), "POST", "/v1/leases", w.keys[a],
			map[string]string{"role": "db-readonly", "ttl": ttl.String(), "task": "chaos", "justification": "fault injection"})
		cred, _ := body["credential"].(map[string]any)
		if status == http.StatusCreated && cred != nil {
			g := &chaosGrant{leaseID: body["id"].(string), cred: cred}
			w.mu.Lock()
			w.grants = append(w.grants, g)
			w.mu.Unlock()
			choice, slot := rng.IntN(100), rng.IntN(chaosReplicas)
			switch {
			case choice < 35: // released early
				wait := time.Duration(rng.Int64N(int64(ttl / 2)))
				actions.Go(func() {
					if sleepCtx(ctx, wait) {
						w.call(ctx, slot, "DELETE", "/v1/leases/"+g.leaseID, w.keys[a], nil)
					}
				})
			case choice < 55: // extended once half the window passed
				actions.Go(func() {
					if sleepCtx(ctx, ttl/2+time.Second) {
						w.call(ctx, slot, "POST", "/v1/leases/"+g.leaseID+"/extend", w.keys[a], map[string]string{"ttl": "15s"})
					}
				})
			}
		}
		sleepCtx(ctx, time.Duration(200+rng.IntN(600))*time.Millisecond)
	}
}

// killSwitchLoop pulls the kill switch on a random agent now and then.
func (w *chaosWorld) killSwitchLoop(ctx context.Context, rng *rand.Rand) {
	for sleepCtx(ctx, time.Duration(8+rng.IntN(10))*time.Second) {
		a := rng.IntN(len(w.agents))
		w.call(ctx, rng.IntN(chaosReplicas), "POST", "/v1/agents/"+w.agents[a]+"/revoke-all", testAdminToken, map[string]string{"reason": "chaos kill switch"})
	}
}

// sleepCtx sleeps d and reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// inject picks a fault, injects it, and brings everything back.
func (w *chaosWorld) inject(ctx context.Context, rng *rand.Rand, set chaosSettings) string {
	t := w.t
	kinds := []struct {
		name   string
		weight int
	}{{"kill", 3}, {"kill_at_mint", 2}, {"pg_restart", 2}, {"vault_down", 1}, {"freeze", 2}}
	n := rng.IntN(10)
	kind := kinds[len(kinds)-1].name
	for _, k := range kinds {
		if n < k.weight {
			kind = k.name
			break
		}
		n -= k.weight
	}
	r := w.replicas[rng.IntN(chaosReplicas)]
	switch kind {
	case "kill":
		sleepCtx(ctx, time.Duration(rng.IntN(1000))*time.Millisecond)
		r.kill()
		w.restart(r, rng)
	case "kill_at_mint":
		proc := r.cmd.Process
		disarm := r.proxy.arm(func() { proc.Signal(syscall.SIGKILL) })
		deadline := time.Now().Add(10 * time.Second)
		for r.cmd != nil && time.Now().Before(deadline) {
			select {
			case <-r.exited:
				r.cmd = nil
			case <-time.After(50 * time.Millisecond):
			}
		}
		if !disarm() {
			kind = "kill" // no mint went through this replica in time
		}
		r.kill()
		w.restart(r, rng)
	case "pg_restart":
		sig := syscall.SIGINT // fast shutdown
		if rng.IntN(2) == 0 {
			sig = syscall.SIGQUIT // immediate, as a crash
		}
		w.pg.stop(sig)
		sleepCtx(ctx, time.Duration(500+rng.IntN(2500))*time.Millisecond)
		if err := w.pg.start(); err != nil {
			t.Fatalf("restart postgres: %v", err)
		}
	case "vault_down":
		down := time.Now()
		if err := w.dv.Stop(); err != nil {
			t.Logf("stop vault: %v", err)
		}
		sleepCtx(ctx, set.vaultDown/2+time.Duration(rng.Int64N(int64(set.vaultDown/2))))
		if err := w.dv.Start(ctx); err != nil {
			t.Fatalf("restart vault: %v", err)
		}
		w.mu.Lock()
		w.outages = append(w.outages, [2]time.Time{down, time.Now()})
		w.mu.Unlock()
	case "freeze":
		// Prefer a replica that holds a job claim right now.
		var owner string
		w.store.QueryRow(ctx, `SELECT owner FROM job_claims WHERE deadline > $1 AND owner <> '' ORDER BY random() LIMIT 1`, time.Now().UnixNano()).Scan(&owner)
		for _, c := range w.replicas {
			if c.id == owner {
				r = c
			}
		}
		r.signal(syscall.SIGSTOP)
		r.frozen = true
		sleepCtx(ctx, chaosClaimTimeout+time.Duration(1000+rng.IntN(6000))*time.Millisecond)
		r.signal(syscall.SIGCONT)
		r.frozen = false
	}
	return kind
}

// restart starts the slot's next process after a short pause.
func (w *chaosWorld) restart(r *chaosReplica, rng *rand.Rand) {
	time.Sleep(time.Duration(200+rng.IntN(1500)) * time.Millisecond)
	if err := r.start(); err != nil {
		w.t.Fatal(err)
	}
}

// checkLogins tries each credential once its window (as the store holds
// it now, extensions included) plus the grace has passed: a login that
// works is overdue. A refused login settles the credential; a server that
// does not answer (restarting) is tried again.
func (w *chaosWorld) checkLogins(ctx context.Context) {
	for sleepCtx(ctx, time.Second) {
		w.checkLoginsOnce(ctx, false)
	}
}

// checkLoginsOnce checks the credentials whose window passed; with all set
// it checks every credential (the load is over; every one must be dead).
func (w *chaosWorld) checkLoginsOnce(ctx context.Context, all bool) {
	w.mu.Lock()
	var todo []*chaosGrant
	var ids []string
	for _, g := range w.grants {
		if !g.checked {
			todo = append(todo, g)
			ids = append(ids, g.leaseID)
		}
	}
	w.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	ends := map[string]int64{}
	rows, err := w.store.Query(ctx, `SELECT id, COALESCE(expires_at, 0) FROM leases WHERE id = ANY($1)`, ids)
	if err != nil {
		return // the store is restarting
	}
	for rows.Next() {
		var id string
		var end int64
		if rows.Scan(&id, &end) == nil {
			ends[id] = end
		}
	}
	rows.Close()
	for _, g := range todo {
		end, ok := ends[g.leaseID]
		if !ok || (!all && time.Now().Before(time.Unix(0, end).Add(chaosGrace))) {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := pgLogin(lctx, g.cred)
		cancel()
		var pgErr *pgconn.PgError
		switch {
		case err == nil:
			conn.Close(context.Background())
			w.mu.Lock()
			w.overdue = append(w.overdue, g.leaseID)
			g.checked = true
			w.mu.Unlock()
			w.t.Errorf("OVERDUE: the credential of lease %s (user %v) logs in at %s, after its window ended at %s",
				g.leaseID, g.cred["username"], time.Now().UTC().Format(time.StampMilli), time.Unix(0, end).UTC().Format(time.StampMilli))
		case errors.As(err, &pgErr) && (pgErr.Code == "28P01" || pgErr.Code == "28000"):
			w.mu.Lock()
			g.checked = true
			w.mu.Unlock()
		}
	}
}

// settle waits for every lease to end and for Vault and PostgreSQL to hold
// no credential: the replicas' expiry loops, revocation queues and
// reconcilers do it, nothing else.
func (w *chaosWorld) settle(ctx context.Context, c *chaosCounts) {
	t := w.t
	for _, r := range w.replicas {
		if r.cmd == nil {
			t.Fatalf("replica slot %d is not running after the faults", r.slot)
		}
	}
	deadline := time.Now().Add(3 * time.Minute)
	var live int
	for {
		live = -1
		w.store.QueryRow(ctx, `SELECT count(*) FROM leases WHERE state IN ('pending', 'approved', 'issuing', 'active', 'revoking')`).Scan(&live)
		if live == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if live != 0 {
		c.left += max(live, 1)
		rows, _ := w.store.Query(ctx, `SELECT id, state, revoke_error FROM leases WHERE state IN ('pending', 'approved', 'issuing', 'active', 'revoking')`)
		for rows.Next() {
			var id, state, rerr string
			rows.Scan(&id, &state, &rerr)
			t.Errorf("lease %s is still %s three minutes after the load stopped (%s)", id, state, rerr)
		}
		rows.Close()
	}
	// Orphans are revoked once older than orphan_grace, by the next
	// reconciler pass.
	deadline = time.Now().Add(90 * time.Second)
	for {
		leftVault, leftPG := w.leftovers(ctx)
		if len(leftVault)+len(leftPG) == 0 || time.Now().After(deadline) {
			return
		}
		time.Sleep(2 * time.Second)
	}
}

// leftovers lists the Vault leases under the role's path and the database
// users Vault minted that still exist.
func (w *chaosWorld) leftovers(ctx context.Context) (vaultLeases, users []string) {
	is, err := vault.Open(w.dv.Config())
	if err != nil {
		w.t.Fatal(err)
	}
	defer is.Close()
	issued, err := is.ListIssued(ctx, []*broker.Role{{Name: "db-readonly", Kind: broker.KindDatabase, Vault: broker.RoleVault{Path: "database/creds/" + vault.DevDatabaseRole}}})
	if err != nil {
		w.t.Fatalf("list vault leases: %v", err)
	}
	for _, l := range issued {
		vaultLeases = append(vaultLeases, l.VaultLeaseID)
	}
	conn, err := pgx.Connect(ctx, w.pg.dsn("postgres"))
	if err != nil {
		w.t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-%'`)
	if err != nil {
		w.t.Fatal(err)
	}
	users, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		w.t.Fatal(err)
	}
	return vaultLeases, users
}

// finalChecks counts, against Vault and PostgreSQL themselves, what the
// run left behind.
func (w *chaosWorld) finalChecks(ctx context.Context, c *chaosCounts) {
	t := w.t
	type storeLease struct {
		state, vaultID    string
		expires, ended    int64
		created, terminal bool
	}
	leases := map[string]*storeLease{}
	byVault := map[string]string{}
	rows, err := w.store.Query(ctx, `SELECT id, state, COALESCE(vault_lease_id, ''), COALESCE(expires_at, 0), COALESCE(ended_at, 0) FROM leases`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		l := &storeLease{}
		if err := rows.Scan(&id, &l.state, &l.vaultID, &l.expires, &l.ended); err != nil {
			t.Fatal(err)
		}
		leases[id] = l
		if l.vaultID != "" {
			byVault[l.vaultID] = id
		}
	}
	rows.Close()
	c.leases = len(leases)

	// Orphans: Vault leases and database users still there.
	vaultLeft, usersLeft := w.leftovers(ctx)
	w.boundary.mu.Lock()
	userLease := map[string]string{}
	for vid, u := range w.boundary.minted {
		userLease[u] = vid
	}
	w.boundary.mu.Unlock()
	for _, vid := range vaultLeft {
		c.orphaned++
		t.Errorf("ORPHANED: Vault lease %s is live after every lease ended (store lease %q)", vid, byVault[vid])
	}
	for _, u := range usersLeft {
		vid, ok := userLease[u]
		if !ok && len(vaultLeft) == 0 {
			// Vault created the user but never answered the mint with a
			// lease, and holds none: a replica killed mid-mint closes its
			// connection, Vault cancels the request after the database
			// plugin committed the user, and registers no lease. Nobody
			// ever received its password, so nothing can log in with it,
			// and neither Vault nor Stint can know of it; it lapses at
			// the Vault role's TTL (VALID UNTIL). Reported, not counted.
			c.unregistered++
			t.Logf("UNREGISTERED: database user %s was created by a mint Vault never completed (no lease in Vault, no credential handed out)", u)
			continue
		}
		c.orphaned++
		t.Errorf("ORPHANED: database user %s exists after every lease ended (Vault lease %q, store lease %q)", u, vid, byVault[vid])
	}

	// Overdue: a last try of every credential, all windows being over.
	w.checkLoginsOnce(ctx, true)
	w.mu.Lock()
	c.overdue = len(w.overdue)
	for _, g := range w.grants {
		if !g.checked {
			t.Errorf("the credential of lease %s could not be tried", g.leaseID)
			c.overdue++
		}
	}
	outages := slices.Clone(w.outages)
	w.mu.Unlock()

	// Double revocations: two revocations that each found the lease live.
	w.boundary.mu.Lock()
	for vid, n := range w.boundary.effective {
		if n > 1 {
			c.doubleRevoked++
			t.Errorf("DOUBLE REVOKED: Vault lease %s (store lease %q) was revoked %d times while live", vid, byVault[vid], n)
		}
	}
	confirmed := slices.Clone(w.boundary.confirmed)
	calls := w.boundary.calls
	w.boundary.mu.Unlock()
	t.Logf("vault boundary: %d revocation calls, %d confirmed", calls, len(confirmed))

	// Revocations due while Vault was down: done within 30 s of its return.
	firstAfter := func(vid string, after time.Time) (time.Time, bool) {
		for _, rc := range confirmed {
			if rc.leaseID == vid && !rc.at.Before(after) {
				return rc.at, true
			}
		}
		return time.Time{}, false
	}
	for id, l := range leases {
		if l.state != string(broker.LeaseExpired) || l.vaultID == "" {
			continue
		}
		exp := time.Unix(0, l.expires)
		for _, o := range outages {
			if exp.Before(o[0]) || exp.After(o[1]) {
				continue
			}
			// Vault may answer a moment before the suite records its
			// return (o[1] is taken after its own readiness check), so a
			// revocation confirmed at any time after the lease fell due
			// counts; it is late only when it came more than
			// chaosVaultReturn after the return.
			at, ok := firstAfter(l.vaultID, exp)
			if !ok || at.Sub(o[1]) > chaosVaultReturn {
				c.lateAfterVault++
				t.Errorf("LATE: lease %s fell due at %s while Vault was down (%s–%s); revoked %v (found %v), want within %s of its return",
					id, exp.Format(time.StampMilli), o[0].Format(time.StampMilli), o[1].Format(time.StampMilli), at.Format(time.StampMilli), ok, chaosVaultReturn)
			}
		}
	}

	// History: every lease has its creation and its terminal event, read
	// from the audit chain through the store.
	db, err := openConfiguredStore(ctx, StoreConfig{Driver: driverPostgres, DSN: w.pg.dsn("stint")}, os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for id, l := range leases {
		events, err := db.FindLeaseEvents(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range events {
			l.created = l.created || e.From == ""
			l.terminal = l.terminal || (string(e.To) == l.state && e.To.Terminal())
		}
	}
	for id, l := range leases {
		if !l.created || !l.terminal {
			c.lostHistory++
			t.Errorf("LOST HISTORY: lease %s (%s) has creation event %v, terminal event %v", id, l.state, l.created, l.terminal)
		}
	}
	verify := exec.Command(w.bin, "audit", "verify", "--config", w.replicas[0].config)
	verify.Env = w.replicas[0].env
	out, err := verify.CombinedOutput()
	if err != nil {
		c.auditBroken = true
		t.Errorf("stint audit verify: %v\n%s", err, out)
	}
	t.Logf("audit verify: %s", strings.TrimSpace(string(out)))
}
