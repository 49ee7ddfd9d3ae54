package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDevSecretPrivate: the admin token file stint dev keeps is 0600 when
// it is created, whatever the umask, and an older one that others could
// read is narrowed.
func TestDevSecretPrivate(t *testing.T) {
	old := syscall.Umask(0o022)
	t.Cleanup(func() { syscall.Umask(old) })
	path := filepath.Join(t.TempDir(), "admin-token")
	s, err := devSecret(path)
	if err != nil || !strings.HasPrefix(s, "stint_admin_") {
		t.Fatalf("devSecret = %q, %v", s, err)
	}
	wantPerm(t, path, 0o600)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	again, err := devSecret(path)
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
