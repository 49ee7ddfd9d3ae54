//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stint-broker/stint/leases/vault"
)

// The fault-injection suite's world: a PostgreSQL cluster of its own, the
// development Vault behind one recording proxy per replica, and Stint
// replicas run from the built binary. Each piece can be killed, stopped or
// frozen and brought back.

// chaosPG is a PostgreSQL cluster in a temporary directory on its own port,
// run from the server binaries the machine has, so that restarting it
// disturbs no other test. As root it runs as the postgres user (initdb and
// postgres refuse root). Only the user postgres is trusted; the users
// Vault mints log in with their passwords.
type chaosPG struct {
	bindir, base, data string
	port               int
	cred               *syscall.Credential
	cmd                *exec.Cmd
	exited             chan struct{}
}

// pgBinDir finds the newest PostgreSQL server binaries: `pg_config
// --bindir`, else /usr/lib/postgresql/<version>/bin.
func pgBinDir() string {
	var dirs []string
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(found, func(a, b string) int { return pgVersionOf(b) - pgVersionOf(a) })
	for _, d := range append(found, dirs...) {
		if executable(filepath.Join(d, "initdb")) && executable(filepath.Join(d, "postgres")) {
			return d
		}
	}
	return ""
}

func pgVersionOf(dir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return v
}

// startChaosPG initialises and starts a cluster with trust authentication
// for the user postgres; it is removed when tb ends.
func startChaosPG(tb testing.TB, bindir string) *chaosPG {
	tb.Helper()
	base, err := os.MkdirTemp("", "stint-chaos-pg-")
	if err != nil {
		tb.Fatal(err)
	}
	p := &chaosPG{bindir: bindir, base: base, data: filepath.Join(base, "data"), port: freeTCPPort(tb)}
	tb.Cleanup(func() {
		p.stop(syscall.SIGQUIT)
		os.RemoveAll(base)
	})
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			tb.Fatalf("running as root, and PostgreSQL refuses to run as root: no postgres user to run it as (%v)", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(base, uid, gid); err != nil {
			tb.Fatal(err)
		}
	}
	initdb := exec.Command(filepath.Join(bindir, "initdb"), "-D", p.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		tb.Fatalf("initdb: %v\n%s", err, out)
	}
	// The administrator (Vault's connection, the store) is trusted; every
	// other role logs in with its password, as in production, so that
	// PostgreSQL enforces the minted users' VALID UNTIL (trust would
	// ignore it).
	hba := "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(filepath.Join(p.data, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		tb.Fatal(err)
	}
	if p.cred != nil {
		os.Chown(filepath.Join(p.data, "pg_hba.conf"), int(p.cred.Uid), int(p.cred.Gid))
	}
	if err := p.start(); err != nil {
		tb.Fatal(err)
	}
	return p
}

// dsn is the DSN of database db on the cluster as postgres.
func (p *chaosPG) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable&connect_timeout=5", p.port, db)
}

// start starts the server and waits until it accepts connections.
func (p *chaosPG) start() error {
	log, err := os.OpenFile(filepath.Join(p.base, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o666)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(filepath.Join(p.bindir, "postgres"), "-D", p.data, "-p", strconv.Itoa(p.port), "-k", p.base,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=300", "-c", "shared_buffers=32MB")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) { cmd.Wait(); close(exited) }(p.exited)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, p.dsn("postgres"))
		if err == nil {
			conn.Close(ctx)
			cancel()
			return nil
		}
		cancel()
		select {
		case <-p.exited:
			b, _ := os.ReadFile(filepath.Join(p.base, "postgres.log"))
			return fmt.Errorf("postgres exited at start: %s", tailString(string(b), 2000))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept connections within 60s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop stops the server with sig (SIGINT: fast shutdown; SIGQUIT:
// immediate, as a crash) and waits for it.
func (p *chaosPG) stop(sig syscall.Signal) {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
	p.cmd = nil
}

// exec runs sql on database db.
func (p *chaosPG) exec(ctx context.Context, db, sql string) error {
	conn, err := pgx.Connect(ctx, p.dsn(db))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// revokeCall is one revocation Vault confirmed, seen at the proxy.
type revokeCall struct {
	leaseID string
	at      time.Time
}

// vaultBoundary records what crosses between the replicas and Vault: every
// mint (its lease id and database user) and every revocation call, with
// whether the lease was still live in Vault when the call arrived. A
// revocation Vault confirmed of a lease live when it arrived is effective:
// two of them for one lease are a double revocation (a failed attempt
// followed by a retry is not).
type vaultBoundary struct {
	dv     *vault.DevServer
	client *http.Client

	mu        sync.Mutex
	minted    map[string]string // Vault lease id → database user
	effective map[string]int    // Vault lease id → confirmed revocations that found it live
	calls     int
	confirmed []revokeCall
}

func newVaultBoundary(dv *vault.DevServer) *vaultBoundary {
	return &vaultBoundary{dv: dv, client: &http.Client{Timeout: 20 * time.Second},
		minted: map[string]string{}, effective: map[string]int{}}
}

// live looks the lease up in Vault itself.
func (b *vaultBoundary) live(leaseID string) (bool, error) {
	body, _ := json.Marshal(map[string]string{"lease_id": leaseID})
	req, _ := http.NewRequest("PUT", b.dv.Addr+"/v1/sys/leases/lookup", bytes.NewReader(body))
	req.Header.Set("X-Vault-Token", b.dv.RootToken)
	resp, err := b.client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusBadRequest:
		return false, nil
	}
	return false, fmt.Errorf("lease lookup: status %d", resp.StatusCode)
}

// vaultProxy is one replica's way to Vault. Armed with a kill function, it
// calls it once, at the next mint, after Vault minted and before the
// replica hears of it: a crash between the mint and the store write.
type vaultProxy struct {
	b    *vaultBoundary
	ln   net.Listener
	srv  *http.Server
	mu   sync.Mutex
	kill func()
}

func startVaultProxy(tb testing.TB, b *vaultBoundary) *vaultProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &vaultProxy{b: b, ln: ln}
	p.srv = &http.Server{Handler: p}
	go p.srv.Serve(ln)
	tb.Cleanup(func() { p.srv.Close() })
	return p
}

func (p *vaultProxy) addr() string { return "http://" + p.ln.Addr().String() }

// arm makes the next mint through p call kill; it returns a function that
// disarms it and reports whether kill ran.
func (p *vaultProxy) arm(kill func()) (disarm func() bool) {
	ran := make(chan struct{})
	p.mu.Lock()
	p.kill = func() { kill(); close(ran) }
	p.mu.Unlock()
	return func() bool {
		p.mu.Lock()
		p.kill = nil
		p.mu.Unlock()
		select {
		case <-ran:
			return true
		default:
			return false
		}
	}
}

func (p *vaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	path := strings.TrimPrefix(r.URL.Path, "/v1/")
	revoke := path == "sys/leases/revoke" && (r.Method == http.MethodPut || r.Method == http.MethodPost)
	var leaseID string
	var live bool // the lease was live in Vault when the revocation arrived
	if revoke {
		var in struct {
			LeaseID string `json:"lease_id"`
		}
		json.Unmarshal(body, &in)
		leaseID = in.LeaseID
		wasLive, err := p.b.live(leaseID)
		live = err == nil && wasLive
		p.b.mu.Lock()
		p.b.calls++
		p.b.mu.Unlock()
	}
	out, _ := http.NewRequestWithContext(r.Context(), r.Method, p.b.dv.Addr+r.URL.RequestURI(), bytes.NewReader(body))
	out.Header = r.Header.Clone()
	resp, err := p.b.client.Do(out)
	if err != nil {
		http.Error(w, "vault unreachable: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	rbody, _ := io.ReadAll(resp.Body)
	if revoke && resp.StatusCode/100 == 2 {
		p.b.mu.Lock()
		p.b.confirmed = append(p.b.confirmed, revokeCall{leaseID: leaseID, at: time.Now()})
		if live {
			p.b.effective[leaseID]++
		}
		p.b.mu.Unlock()
	}
	if strings.HasPrefix(path, "database/creds/") && resp.StatusCode == http.StatusOK {
		var sec struct {
			LeaseID string `json:"lease_id"`
			Data    struct {
				Username string `json:"username"`
			} `json:"data"`
		}
		if json.Unmarshal(rbody, &sec) == nil && sec.LeaseID != "" {
			p.b.mu.Lock()
			p.b.minted[sec.LeaseID] = sec.Data.Username
			p.b.mu.Unlock()
		}
		p.mu.Lock()
		kill := p.kill
		p.kill = nil
		p.mu.Unlock()
		if kill != nil {
			kill()
			return
		}
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(rbody)
}

// chaosReplica is one slot of `stint serve` processes: a fixed address and
// configuration, a new process (and replica id) after each kill.
type chaosReplica struct {
	slot   int
	bin    string
	config string
	url    string
	env    []string
	logDir string
	proxy  *vaultProxy

	gen    int
	id     string
	cmd    *exec.Cmd
	exited chan struct{}
	frozen bool
}

// start starts the slot's next process and waits until it answers /healthz.
func (r *chaosReplica) start() error {
	r.gen++
	r.id = fmt.Sprintf("r%d-%d", r.slot, r.gen)
	log, err := os.OpenFile(filepath.Join(r.logDir, r.id+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(r.bin, "serve", "--config", r.config, "--replica-id", r.id)
	cmd.Env, cmd.Stdout, cmd.Stderr = r.env, log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start replica %s: %w", r.id, err)
	}
	r.cmd, r.exited, r.frozen = cmd, make(chan struct{}), false
	go func(exited chan struct{}) { cmd.Wait(); close(exited) }(r.exited)
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(r.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-r.exited:
			b, _ := os.ReadFile(filepath.Join(r.logDir, r.id+".log"))
			return fmt.Errorf("replica %s exited at start: %s", r.id, tailString(string(b), 3000))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replica %s did not answer /healthz within 90s", r.id)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill ends the process with SIGKILL (thawing it first if frozen, so it
// dies at once) and waits for it.
func (r *chaosReplica) kill() {
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.exited
	r.cmd = nil
}

// signal sends sig to the running process.
func (r *chaosReplica) signal(sig syscall.Signal) {
	if r.cmd != nil {
		r.cmd.Process.Signal(sig)
	}
}
