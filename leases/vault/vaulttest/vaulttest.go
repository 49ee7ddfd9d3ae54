// Package vaulttest starts the real services that leases/vault tests need: a
// development Vault server (bin/vault, built by make devvault) and the local
// PostgreSQL server.
//
// Outside CI a missing service skips the test with a message saying how to
// provide it; under CI (CI=true) it fails the test.
package vaulttest

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stint-broker/stint/leases/vault"
)

// DefaultPGDSN is the PostgreSQL DSN used when STINT_TEST_PG_DSN is unset.
const DefaultPGDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Start starts a development Vault server in a temporary directory on a free
// port, configured against the PostgreSQL of PGDSN, and stops it when the
// test ends. The binary is STINT_TEST_VAULT_BIN, or bin/vault found by walking
// up from the working directory.
func Start(tb testing.TB) *vault.DevServer {
	tb.Helper()
	dsn := PGDSN(tb)
	bin := vaultBin(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var s *vault.DevServer
		s, err = vault.StartDev(ctx, vault.DevOptions{Bin: bin, Dir: tb.TempDir(), Port: freePort(tb), PGDSN: dsn})
		if err == nil {
			tb.Cleanup(func() {
				revokeAll(tb, s)
				if err := s.Close(); err != nil {
					tb.Errorf("stop dev vault: %v", err)
				}
				if tb.Failed() {
					if b, err := os.ReadFile(filepath.Join(s.Dir, "vault.log")); err == nil {
						tb.Logf("vault.log:\n%s", tail(b, 4000))
					}
				}
			})
			return s
		}
		// Another process may have taken the free port meanwhile.
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	tb.Fatalf("start dev vault: %v", err)
	return nil
}

// revokeAll revokes what a test left minted under the development roles, so
// that no PostgreSQL role outlives the test's Vault server.
func revokeAll(tb testing.TB, s *vault.DevServer) {
	tb.Helper()
	is, err := vault.Open(s.Config())
	if err != nil {
		return
	}
	defer is.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if is.Ping(ctx) != nil {
		return // stopped or sealed by the test
	}
	issued, err := is.ListIssued(ctx, vault.DevRoles())
	if err != nil {
		tb.Logf("list what the test left in vault: %v", err)
		return
	}
	for _, c := range issued {
		if err := is.Revoke(ctx, c.VaultLeaseID); err != nil {
			tb.Logf("revoke what the test left in vault: %v", err)
		}
	}
}

// PGDSN returns the PostgreSQL admin DSN for tests (STINT_TEST_PG_DSN, or
// DefaultPGDSN) after checking that the server answers.
func PGDSN(tb testing.TB) string {
	tb.Helper()
	dsn := os.Getenv("STINT_TEST_PG_DSN")
	if dsn == "" {
		dsn = DefaultPGDSN
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err == nil {
		err = conn.Ping(ctx)
		conn.Close(ctx)
	}
	if err != nil {
		missing(tb, "PostgreSQL at %s is unreachable (%v): start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` or set STINT_TEST_PG_DSN", redact(dsn), err)
	}
	return dsn
}

// missing skips the test, or fails it under CI.
func missing(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf(format, args...)
	}
	tb.Skipf(format, args...)
}

// vaultBin finds the Vault server binary.
func vaultBin(tb testing.TB) string {
	tb.Helper()
	if bin := os.Getenv("STINT_TEST_VAULT_BIN"); bin != "" {
		if !executable(bin) {
			missing(tb, "STINT_TEST_VAULT_BIN=%s is not an executable file: run `make devvault`", bin)
		}
		return bin
	}
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatalf("find vault binary: %v", err)
	}
	for {
		if bin := filepath.Join(dir, "bin", "vault"); executable(bin) {
			return bin
		}
		// Stop at the module root (a nested module such as cmd/devvault
		// is never on the way up from Stint's packages).
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	missing(tb, "no Vault server binary: run `make devvault` to build bin/vault, or set STINT_TEST_VAULT_BIN")
	return ""
}

func executable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		tb.Fatalf("find a free port: unexpected address %v", l.Addr())
	}
	return addr.Port
}

// redact hides the password of a DSN.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	return u.Redacted()
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
