package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// TestGroupRetriesWithSavepoints makes a write fail after it has changed the
// database, inside groups shared with writes that succeed: the failed
// write's changes must be gone and every other write committed, whether the
// group ran once without savepoints or again with them.
func TestGroupRetriesWithSavepoints(t *testing.T) {
	db, err := Open(t.Context(), filepath.Join(t.TempDir(), "stint.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.writer.Exec(`CREATE TABLE grouped_test (k TEXT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	errBoom := errors.New("boom")
	const n = 300
	errs := make([]error, n)
	var runs sync.Map // key -> times its fn ran
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			k := fmt.Sprint("k", i)
			errs[i] = db.grouped(t.Context(), func(ctx context.Context, tx *tx) error {
				c, _ := runs.LoadOrStore(k, new(int))
				*c.(*int)++
				if _, err := tx.ExecContext(ctx, `INSERT INTO grouped_test (k) VALUES (?)`, k); err != nil {
					return err
				}
				if i%10 == 4 {
					return errBoom // after its insert
				}
				return nil
			})
		})
	}
	wg.Wait()

	retried := 0
	for i := range n {
		k := fmt.Sprint("k", i)
		var got int
		if err := db.writer.QueryRow(`SELECT COUNT(*) FROM grouped_test WHERE k = ?`, k).Scan(&got); err != nil {
			t.Fatal(err)
		}
		want := 1
		if i%10 == 4 {
			want = 0
			if !errors.Is(errs[i], errBoom) {
				t.Errorf("write %d: err = %v, want boom", i, errs[i])
			}
		} else if errs[i] != nil {
			t.Errorf("write %d: %v", i, errs[i])
		}
		if got != want {
			t.Errorf("write %d: %d rows, want %d", i, got, want)
		}
		if c, _ := runs.Load(k); *c.(*int) > 1 {
			retried++
		}
	}
	groups, writes := db.groups.Load(), db.groupedWrites.Load()
	t.Logf("%d writes in %d groups; %d writes ran twice", writes, groups, retried)
	if writes <= groups || retried == 0 {
		t.Fatalf("%d writes in %d groups, %d retried: the savepoint path did not run", writes, groups, retried)
	}
}
