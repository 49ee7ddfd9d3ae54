package vault_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stint-broker/stint/leases/vault"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
)

func TestDevServer(t *testing.T) {
	s := vaulttest.Start(t)
	ctx := context.Background()

	fi, err := os.Stat(filepath.Join(s.Dir, "init.json"))
	if err != nil {
		t.Fatalf("init.json: %v", err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("init.json mode = %o, want 600", mode)
	}
	// The directory, and every file at its top (configuration, log, keys),
	// is the owner's alone.
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(s.Dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dev server directory: %v, %v; want mode 700", fi.Mode().Perm(), err)
	}
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s mode = %o, want no access for others", e.Name(), fi.Mode().Perm())
		}
	}

	// Configure is idempotent.
	if err := s.Configure(ctx); err != nil {
		t.Fatalf("second Configure: %v", err)
	}

	// A restart keeps the state: same root token, still configured.
	token := s.RootToken
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if s.RootToken != token {
		t.Errorf("root token changed across a restart")
	}
	is := openIssuer(t, s.Config())
	if err := is.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := s.Configure(ctx); err != nil {
		t.Fatalf("Configure after restart: %v", err)
	}

	// Nothing secret reaches the log.
	log, err := os.ReadFile(filepath.Join(s.Dir, "vault.log"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(log, []byte(s.RootToken)) {
		t.Errorf("vault.log contains the root token")
	}
	for _, line := range bytes.Split(log, []byte("\n")) {
		if bytes.Contains(line, []byte("[WARN]")) || bytes.Contains(line, []byte("[ERROR]")) {
			t.Logf("vault.log: %s", line)
		}
	}
}

func TestStartDev_Invalid(t *testing.T) {
	for name, opts := range map[string]vault.DevOptions{
		"ErrNoBin":  {Dir: t.TempDir(), Port: 8200},
		"ErrNoDir":  {Bin: "vault", Port: 8200},
		"ErrNoPort": {Bin: "vault", Dir: t.TempDir()},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := vault.StartDev(context.Background(), opts); err == nil {
				t.Fatal("StartDev: want an error")
			}
		})
	}
}

// TestStartDevPortInUse checks that a port already taken is told through
// the error's chain, not only in Vault's log, so that a caller can choose
// another port.
func TestStartDevPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	_, err = vault.StartDev(context.Background(), vault.DevOptions{Bin: "vault", Dir: t.TempDir(), Port: port})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("StartDev on a taken port = %v; want an error wrapping EADDRINUSE", err)
	}
}
