package sqlite_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stint-broker/stint/broker/sqlite"
)

// wantMode fails tb unless path exists with exactly mode want.
func wantMode(tb testing.TB, path string, want fs.FileMode) {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		tb.Errorf("%s has mode %04o, want %04o", filepath.Base(path), got, want)
	}
}

// TestOpenPrivate: the database holds password hashes and every task text,
// so the database, its -wal and -shm files are 0600 and a state directory
// Open creates is 0700, whatever the umask allows.
func TestOpenPrivate(t *testing.T) {
	old := syscall.Umask(0o022) // the common default, which lets others read
	t.Cleanup(func() { syscall.Umask(old) })

	t.Run("New", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "state", "stint")
		path := filepath.Join(dir, "stint.db")
		db, err := sqlite.Open(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		MustCreateAgent(t, db, "etl-bot")
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			wantMode(t, p, 0o600)
		}
		wantMode(t, dir, 0o700)
		wantMode(t, filepath.Dir(dir), 0o700)
	})

	t.Run("Existing", func(t *testing.T) {
		// A database made by an earlier version, readable by everyone.
		path := filepath.Join(t.TempDir(), "stint.db")
		db, err := sqlite.Open(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		MustCreateAgent(t, db, "etl-bot")
		db.Close()
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			if err := os.Chmod(p, 0o644); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		}
		db, err = sqlite.Open(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		MustCreateAgent(t, db, "report-bot")
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			wantMode(t, p, 0o600)
		}
	})
}
