package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/identity"
	"github.com/stint-broker/stint/broker/postgres/pgtest"
	"github.com/stint-broker/stint/broker/users"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
	"github.com/stint-broker/stint/web/client"
)

// openDevMain opens the development setup's Main on dir as `stint dev`
// does, without Vault (nothing here mints), and prepares its state.
func openDevMain(t *testing.T, dir string) (*Main, *devState) {
	t.Helper()
	if _, err := devSecret(filepath.Join(dir, devAdminTokenFile), "stint_admin_"); err != nil {
		t.Fatal(err)
	}
	cfg, err := ReadConfig(filepath.Join(dir, devConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := prepareDevFiles(cfg, time.Now().UTC()); err != nil {
		t.Fatal(err)
	}
	m := NewMain(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	m.VaultOptional = true
	m.Getenv = func(string) string { return "" }
	if err := m.Open(context.Background()); err != nil {
		m.Close()
		t.Fatal(err)
	}
	st, err := prepareDevState(context.Background(), m, dir)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	return m, st
}

// TestDevStateSurvivesRestart starts the development setup twice on one
// state directory: the second start reuses the API key, client secret,
// private_key_jwt key and console password of the first, and they still
// authenticate. Everything generated lives in the state directory, secrets
// with mode 0600, and nothing lands in the working directory.
func TestDevStateSurvivesRestart(t *testing.T) {
	work := t.TempDir()
	t.Chdir(work)
	dir := filepath.Join("var", "dev")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeDevConfig(dir, "http://127.0.0.1:8250", "127.0.0.1:7070"); err != nil {
		t.Fatal(err)
	}

	m, first := openDevMain(t, dir)
	if first.KeyReused || first.AgentKey == "" || first.ClientSecret == "" || first.ConsolePassword == "" {
		t.Fatalf("first start: %+v", first)
	}
	a, err := m.Agents.FindAgent(adminContext(context.Background()), devAgent)
	if err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{broker.AuthAPIKey, broker.AuthMTLS, broker.AuthClientSecret, broker.AuthPrivateKeyJWT} {
		if !a.Allows(method) {
			t.Errorf("%s may not use %s", devAgent, method)
		}
	}
	if a.PublicJWKS == "" {
		t.Error("no private_key_jwt key registered")
	}
	m.Close()

	m, second := openDevMain(t, dir)
	defer m.Close()
	if !second.KeyReused || second.AgentKey != first.AgentKey || !second.KeyExpires.Equal(first.KeyExpires) {
		t.Fatalf("restart issued a new API key (reused=%t)", second.KeyReused)
	}
	if second.ClientSecret != first.ClientSecret || second.ConsolePassword != first.ConsolePassword {
		t.Fatal("restart replaced the client secret or the console password")
	}
	actor, err := m.Agents.Authenticate(context.Background(), second.AgentKey)
	if err != nil || actor.Name != devAgent {
		t.Fatalf("the kept key does not authenticate: %+v, %v", actor, err)
	}
	a, err = m.Agents.FindAgent(adminContext(context.Background()), devAgent)
	if err != nil || a.ClientSecretHash != sha256Hex(second.ClientSecret) {
		t.Fatalf("the kept client secret is not the agent's (%v)", err)
	}
	u, err := m.DB.FindUserByName(context.Background(), devConsoleUser)
	if err != nil || !users.PasswordMatches(u.PasswordHash, second.ConsolePassword) || u.Role != broker.RoleAdmin {
		t.Fatalf("console user %+v, %v: the kept password does not log in", u, err)
	}
	// A key that no longer works (rotated elsewhere) is replaced, not reused.
	if _, _, err := m.Agents.RotateKey(adminContext(context.Background()), a.ID, 0); err != nil {
		t.Fatal(err)
	}
	m.Close()
	m, third := openDevMain(t, dir)
	defer m.Close()
	if third.KeyReused || third.AgentKey == second.AgentKey {
		t.Fatal("a revoked key was reused")
	}
	if _, err := m.Agents.Authenticate(context.Background(), third.AgentKey); err != nil {
		t.Fatalf("the new key does not authenticate: %v", err)
	}
	if got, _ := readSecretFile(filepath.Join(dir, devAgentKeyFile)); got != third.AgentKey {
		t.Fatal("the new key was not kept")
	}

	// Every file is under the state directory; secrets are 0600.
	entries, err := os.ReadDir(work)
	if err != nil || len(entries) != 1 || entries[0].Name() != "var" {
		t.Fatalf("working directory holds %v, want only var/", entries)
	}
	for _, name := range []string{devAdminTokenFile, devAgentKeyFile, devClientSecretFile, devJWTKeyFile, devConsolePassFile,
		devOAuthKeyFile, filepath.Join(devTLSDir, devServerKeyFile), filepath.Join(devTLSDir, devTLSCAKeyFile), filepath.Join(devCADir, identity.CAKeyFile)} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
		} else if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, fi.Mode().Perm())
		}
	}

	// The server certificate chains to the development CA for 127.0.0.1.
	cfg := m.Config
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(filepath.Join(dir, devTLSDir, devTLSCACertFile))
	pool.AppendCertsFromPEM(caPEM)
	certPEM, _ := os.ReadFile(cfg.TLS.CertFile)
	blk, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "127.0.0.1"}); err != nil {
		t.Fatalf("server certificate: %v", err)
	}
}

// TestDevConfigTurnsEverythingOn checks the development configuration:
// TLS with optional client certificates and an enrolment CA, OAuth,
// metrics, the console and extensions are on, and every file it names is
// inside the state directory.
func TestDevConfigTurnsEverythingOn(t *testing.T) {
	dir := t.TempDir()
	if err := writeDevConfig(dir, "http://127.0.0.1:8250", "127.0.0.1:7070"); err != nil {
		t.Fatal(err)
	}
	cfg, err := ReadConfig(filepath.Join(dir, devConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case !cfg.TLS.Enabled() || cfg.TLS.ClientCerts != "optional":
		t.Errorf("tls = %+v, want on with optional client certificates", cfg.TLS)
	case !cfg.OAuth.Enabled || cfg.OAuth.Issuer != "https://127.0.0.1:7070":
		t.Errorf("oauth = %+v", cfg.OAuth)
	case cfg.Metrics.Listen == "":
		t.Error("metrics off")
	case !cfg.Console.Enabled:
		t.Error("console off")
	}
	extensible := false
	for _, r := range cfg.Roles {
		extensible = extensible || r.MaxExtensions > 0
	}
	if !extensible {
		t.Error("no role allows extensions")
	}
	files := append([]string{cfg.Store.Path, cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.Identity.CADir, cfg.OAuth.SigningKeyFile}, cfg.Policy.Files...)
	for _, f := range files {
		if rel, err := filepath.Rel(dir, f); err != nil || strings.HasPrefix(rel, "..") || f == "" {
			t.Errorf("%q is outside the state directory %s", f, dir)
		}
	}
}

// TestDevBanner checks that the banner follows the configuration: https
// addresses and the CA to trust when TLS is on, http otherwise, and that
// it says what the demo Vault token really reads.
func TestDevBanner(t *testing.T) {
	dir := t.TempDir()
	if err := writeDevConfig(dir, "http://127.0.0.1:8250", "127.0.0.1:7070"); err != nil {
		t.Fatal(err)
	}
	cfg, err := ReadConfig(filepath.Join(dir, devConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	st := &devState{AgentKey: "stint_ak_x", ClientSecret: "s", ConsolePassword: "p", VaultAddr: "http://127.0.0.1:8250", KeyExpires: time.Now()}
	var out bytes.Buffer
	if err := printDevInstructions(&out, cfg, dir, st); err != nil {
		t.Fatal(err)
	}
	banner := out.String()
	for _, want := range []string{"Stint is running on https://127.0.0.1:7070", "STINT_ADDR=https://127.0.0.1:7070", "--cacert " + filepath.Join(dir, "tls", "ca.pem"),
		"secret/data/agents/*", "not only one", "leases extend", "agents enroll demo-agent", "bin/stint token", "grant_type=client_credentials",
		"http://127.0.0.1:9464/metrics", "/console", devConsoleUser} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q", want)
		}
	}
	for _, bad := range []string{"http://127.0.0.1:7070", "and nothing else", "stint_ak_x", "fresh on every start"} {
		if strings.Contains(banner, bad) {
			t.Errorf("banner says %q", bad)
		}
	}

	cfg.TLS = TLSConfig{}
	cfg.OAuth.Enabled = false
	out.Reset()
	if err := printDevInstructions(&out, cfg, dir, st); err != nil {
		t.Fatal(err)
	}
	if banner := out.String(); !strings.Contains(banner, "http://127.0.0.1:7070") || strings.Contains(banner, "https://") || strings.Contains(banner, "--cacert") {
		t.Errorf("banner without TLS:\n%s", banner)
	}
}

// TestDefaultsWriteNoKeyHere checks that neither `stint ca init` nor the
// OAuth setup puts a private key in the working directory by default: the
// CA directory and the signing key file have no default, and each says so.
func TestDefaultsWriteNoKeyHere(t *testing.T) {
	work := t.TempDir()
	t.Chdir(work)
	if err := os.WriteFile("stint.yaml", []byte("store: {path: "+filepath.Join(t.TempDir(), "stint.db")+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "", "ca", "init"); err == nil || !strings.Contains(err.Error(), "identity.ca_dir is not set") {
		t.Fatalf("ca init without identity.ca_dir = %v, want refused", err)
	}
	_, err := ParseConfig("stint.yaml", []byte("oauth: {enabled: true, issuer: https://stint.example.com}\n"))
	if err == nil || !strings.Contains(err.Error(), "oauth.signing_key_file is required") {
		t.Fatalf("oauth without signing_key_file = %v, want refused", err)
	}
	entries, _ := os.ReadDir(work)
	if len(entries) != 1 {
		t.Fatalf("working directory holds %v, want only stint.yaml", entries)
	}
}

// TestDevStepsWork runs the development setup's server (without Vault) and
// follows the banner's steps that do not mint: OAuth tokens with the kept
// client secret and with private_key_jwt through `stint token`, used as the
// API's bearer token; an mTLS certificate enrolled with `stint agents
// enroll` authenticating over HTTPS; and metrics on their own listener.
func TestDevStepsWork(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "")
	dir := t.TempDir()
	listen, metrics := freeAddr(t), freeAddr(t)
	if err := writeDevConfig(dir, "http://127.0.0.1:8250", listen); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, devConfigFile)
	b, _ := os.ReadFile(cfgPath)
	if err := os.WriteFile(cfgPath, bytes.Replace(b, []byte(devMetricsListen), []byte(metrics), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	m, st := openDevMain(t, dir)
	if err := m.Listen(); err != nil {
		m.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; m.Close() })
	base, caFile := "https://"+listen, filepath.Join(dir, devTLSDir, devTLSCACertFile)

	for _, auth := range [][]string{
		{"--client-secret-file", filepath.Join(dir, devClientSecretFile)},
		{"--private-key", filepath.Join(dir, devJWTKeyFile)},
	} {
		out, err := runCLI(t, "", append([]string{"token", "--addr", base, "--cacert", caFile, "--client-id", devAgent}, auth...)...)
		if err != nil {
			t.Fatalf("stint token %s: %v\n%s", auth[0], err, out)
		}
		token := strings.TrimSpace(out)
		out, err = runCLI(t, "", "leases", "--addr", base, "--cacert", caFile, "--key", token, "roles", "-o", "json")
		if err != nil || !strings.Contains(out, `"db-readonly"`) {
			t.Fatalf("leases roles with the %s token = %q, %v", auth[0], out, err)
		}
	}
	if out, err := runCLI(t, "", "leases", "--addr", base, "--cacert", caFile, "--key", st.AgentKey, "list", "-o", "json"); err != nil || !strings.Contains(out, `"total": 0`) {
		t.Fatalf("leases list with the kept API key = %q, %v", out, err)
	}

	// mTLS: a key and CSR, enrolled from the command line, authenticate.
	certFile, keyFile := enrolDevAgent(t, cfgPath, dir)
	status, body := httpsGet(t, base+"/v1/whoami", caFile, certFile, keyFile)
	if status != 200 || !strings.Contains(body, `"auth_method":"mtls"`) || !strings.Contains(body, devAgent) {
		t.Fatalf("whoami over mTLS = %d %s", status, body)
	}

	// The CLI's client (web/client) authenticates every way the server
	// accepts.
	t.Setenv("STINT_KEY", "")
	for _, c := range []struct {
		method string
		auth   []string
	}{
		{"api_key", []string{"--key", st.AgentKey}},
		{"mtls", []string{"--cert", certFile, "--cert-key", keyFile}},
		{"client_secret", []string{"--client-id", devAgent, "--client-secret-file", filepath.Join(dir, devClientSecretFile)}},
		{"private_key_jwt", []string{"--client-id", devAgent, "--private-key", filepath.Join(dir, devJWTKeyFile)}},
	} {
		args := append(append([]string{"leases", "--addr", base, "--cacert", caFile}, c.auth...), "whoami", "-o", "json")
		out, err := runCLI(t, "", args...)
		if err != nil || !strings.Contains(out, `"auth_method": "`+c.method+`"`) || !strings.Contains(out, `"name": "`+devAgent+`"`) {
			t.Errorf("leases whoami with %s = %q, %v", c.method, out, err)
		}
	}
	if _, err := runCLI(t, "", "leases", "--addr", base, "--cacert", caFile, "--key", "stint_ak_wrong", "whoami"); !client.IsCode(err, client.CodeUnauthorized) {
		t.Errorf("leases whoami with a wrong key = %v, want unauthorized", err)
	}

	status, body = httpsGet(t, "http://"+metrics+"/metrics", "", "", "")
	if status != 200 || !strings.Contains(body, "stint_leases") {
		t.Fatalf("metrics = %d", status)
	}
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// enrolDevAgent makes a key and CSR for demo-agent in dir and enrols them
// with `stint agents enroll`, returning the certificate and key files.
func enrolDevAgent(t *testing.T, cfgPath, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: devAgent}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csrFile, certFile, keyFile := filepath.Join(dir, devAgent+".csr"), filepath.Join(dir, devAgent+".pem"), filepath.Join(dir, devAgent+".key")
	if err := os.WriteFile(csrFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeKeyFile(keyFile, key); err != nil {
		t.Fatal(err)
	}
	if out, err := runCLI(t, "", "-c", cfgPath, "agents", "enroll", devAgent, "--csr", csrFile, "--out", certFile); err != nil {
		t.Fatalf("agents enroll: %v\n%s", err, out)
	}
	return certFile, keyFile
}

// httpsGet GETs url, trusting caFile and presenting the client certificate
// in certFile and keyFile when given.
func httpsGet(t *testing.T, url, caFile, certFile, keyFile string) (int, string) {
	t.Helper()
	cfg := &tls.Config{}
	if caFile != "" {
		pool := x509.NewCertPool()
		b, err := os.ReadFile(caFile)
		if err != nil {
			t.Fatal(err)
		}
		pool.AppendCertsFromPEM(b)
		cfg.RootCAs = pool
	}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDevSecretPrivate: the admin token file stint dev keeps is 0600 when
// it is created, whatever the umask, and an older one that others could
// read is narrowed.
func TestDevSecretPrivate(t *testing.T) {
	old := syscall.Umask(0o022)
	t.Cleanup(func() { syscall.Umask(old) })
	path := filepath.Join(t.TempDir(), "admin-token")
	s, err := devSecret(path, "stint_admin_")
	if err != nil || !strings.HasPrefix(s, "stint_admin_") {
		t.Fatalf("devSecret = %q, %v", s, err)
	}
	wantPerm(t, path, 0o600)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	again, err := devSecret(path, "stint_admin_")
	if err != nil || again != s {
		t.Fatalf("devSecret again = %q, %v; want the same secret", again, err)
	}
	wantPerm(t, path, 0o600)
}

func wantPerm(tb testing.TB, path string, want os.FileMode) {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		tb.Errorf("%s mode = %04o, want %04o", filepath.Base(path), got, want)
	}
}

// TestDevReplicas runs `stint dev --replicas 3` on a PostgreSQL store (the
// built binary, against the development Vault): three replicas answer, a
// lease requested through one is read and released through the others, and
// Ctrl-C (SIGINT) stops the parent and its two children.
func TestDevReplicas(t *testing.T) {
	_, storeDSN := pgtest.NewSchema(t)
	vaultBin := testVaultBin(t)
	bin := buildStint(t)
	dir := t.TempDir()
	vaultPort := freeTCPPort(t)
	var listen string
	for range 20 { // three ports in a row, free a moment ago
		l := freeAddr(t)
		if free := func() bool {
			for i := 1; i <= 2; i++ {
				next, _ := shiftPort(l, i)
				ln, err := net.Listen("tcp", next)
				if err != nil {
					return false
				}
				ln.Close()
			}
			return true
		}(); free {
			listen = l
			break
		}
	}
	if err := writeDevConfig(dir, fmt.Sprintf("http://127.0.0.1:%d", vaultPort), listen); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, devConfigFile)
	b, _ := os.ReadFile(cfgPath)
	if err := os.WriteFile(cfgPath, bytes.Replace(b, []byte(devMetricsListen), []byte(freeAddr(t)), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	cmd := exec.Command(bin, "dev", "--dir", dir, "--vault-bin", vaultBin, "--vault-port", strconv.Itoa(vaultPort),
		"--pg-dsn", vaulttest.PGDSN(t), "--store", storeDSN, "--replicas", "3")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("stint dev:\n%s", tailString(out.String(), 6000))
		}
	})

	caFile := filepath.Join(dir, devTLSDir, devTLSCACertFile)
	var urls []string
	for i := range 3 {
		addr, _ := shiftPort(listen, i)
		urls = append(urls, "https://"+addr)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for _, u := range urls {
		for !strings.Contains(out.String(), "replicas on the store") || !healthy(u, caFile) {
			select {
			case err := <-exited:
				t.Fatalf("stint dev exited: %v", err)
			case <-time.After(200 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %s did not answer within 3 minutes", u)
			}
		}
	}
	key, err := readSecretFile(filepath.Join(dir, devAgentKeyFile))
	if err != nil || key == "" {
		t.Fatalf("demo-agent's key: %q, %v", key, err)
	}
	leases := func(u string, args ...string) string {
		t.Helper()
		out, err := runCLI(t, "", append([]string{"leases", "--addr", u, "--cacert", caFile, "--key", key}, args...)...)
		if err != nil {
			t.Fatalf("stint leases %v on %s: %v\n%s", args, u, err, out)
		}
		return out
	}
	var lease struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(leases(urls[1], "request", "--role", "db-readonly", "--task", "try replicas", "--ttl", "5m", "-o", "json")), &lease); err != nil || lease.State != "active" {
		t.Fatalf("lease through dev-2: %+v, %v", lease, err)
	}
	if got := leases(urls[2], "show", lease.ID, "-o", "json"); !strings.Contains(got, `"state": "active"`) {
		t.Fatalf("lease read through dev-3: %s", got)
	}
	if got := leases(urls[0], "release", lease.ID, "-o", "json"); !strings.Contains(got, `"state": "released"`) {
		t.Fatalf("lease released through dev-1: %s", got)
	}

	cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		t.Fatal("stint dev did not stop within 60s of SIGINT")
	}
	for _, u := range urls {
		if healthy(u, caFile) {
			t.Errorf("%s still answers after stint dev stopped", u)
		}
	}
}

// healthy reports whether u/healthz answers 200 over TLS with caFile.
func healthy(u, caFile string) bool {
	pool := x509.NewCertPool()
	b, err := os.ReadFile(caFile)
	if err != nil {
		return false
	}
	pool.AppendCertsFromPEM(b)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get(u + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// missingService skips, or fails under CI, for a missing service.
func missingService(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf(format, args...)
	}
	tb.Skipf(format, args...)
}

// testVaultBin is STINT_TEST_VAULT_BIN, or bin/vault at the module root.
func testVaultBin(tb testing.TB) string {
	tb.Helper()
	bin := os.Getenv("STINT_TEST_VAULT_BIN")
	if bin == "" {
		bin, _ = filepath.Abs(filepath.Join("..", "..", "bin", "vault"))
	}
	if !executable(bin) {
		missingService(tb, "no Vault server binary at %s: run `make devvault`, or set STINT_TEST_VAULT_BIN", bin)
	}
	return bin
}

func executable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
