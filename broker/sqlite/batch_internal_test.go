package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stint-broker/stint/broker"
)

// openGroupTest opens the store at path with a table grouped_test (k TEXT
// PRIMARY KEY) for writes to fill.
func openGroupTest(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.writer.Exec(`CREATE TABLE grouped_test (k TEXT PRIMARY KEY)`); err != nil {
		db.Close()
		t.Fatal(err)
	}
	return db
}

// waitWithin waits for wg, failing t with msg after 10 seconds.
func waitWithin(t *testing.T, wg *sync.WaitGroup, msg string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal(msg)
	}
}

// TestGroupRetriesWithSavepoints makes a write fail after it has changed the
// database, inside groups shared with writes that succeed: the failed
// write's changes must be gone and every other write committed, whether the
// group ran once without savepoints or again with them.
func TestGroupRetriesWithSavepoints(t *testing.T) {
	db := openGroupTest(t, filepath.Join(t.TempDir(), "stint.db"))
	defer db.Close()
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

// TestChainCache checks that write transactions take the audit chain's
// head from memory while no other connection writes, and read it again
// once one has: a second handle on the same file stands in for another
// process.
func TestChainCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stint.db")
	db, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	other, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx := t.Context()
	agent := &broker.Agent{ID: uuid.NewString(), Name: "etl-bot", Owner: "o@example.com", State: broker.AgentActive}
	if err := db.CreateAgent(ctx, agent); err != nil {
		t.Fatal(err)
	}
	create := func(d *DB) *broker.Lease {
		t.Helper()
		l := &broker.Lease{ID: uuid.NewString(), AgentID: agent.ID, Agent: agent.Name, Role: "db-readonly", Task: "x",
			TTL: broker.Duration(time.Minute), State: broker.LeaseIssuing}
		if err := d.CreateLease(ctx, l, "agent:etl-bot", "requested"); err != nil {
			t.Fatal(err)
		}
		return l
	}
	cached := func(d *DB) (bool, int64) {
		d.chain.mu.Lock()
		defer d.chain.mu.Unlock()
		if !d.chain.valid || d.chain.head == nil {
			return false, 0
		}
		return true, d.chain.head.Seq
	}
	head := func() int64 {
		h, err := db.AuditHead(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return h.Seq
	}

	misses := func(d *DB) int64 {
		d.chain.mu.Lock()
		defer d.chain.mu.Unlock()
		return d.chain.misses
	}

	l := create(db)
	if ok, seq := cached(db); !ok || seq != head() {
		t.Fatalf("after a write: cache valid %v at seq %d, head %d", ok, seq, head())
	}
	// Writes through this handle keep it current, without reading it.
	before := misses(db)
	if _, err := db.UpdateLease(ctx, l.ID, broker.LeaseUpdate{From: []broker.LeaseState{broker.LeaseIssuing}, State: new(broker.LeaseActive), Actor: "agent:etl-bot", Reason: "minted"}); err != nil {
		t.Fatal(err)
	}
	if ok, seq := cached(db); !ok || seq != head() {
		t.Fatalf("after an update: cache valid %v at seq %d, head %d", ok, seq, head())
	}
	if m := misses(db); m != before {
		t.Fatalf("an update through the same handle read the chain (%d misses, was %d)", m, before)
	}
	// Another connection appends: the first handle's cache is stale, and
	// its next write must notice (data_version) instead of reusing it.
	create(other)
	create(other)
	stale, _ := cached(db)
	if _, seq := cached(db); !stale || seq >= head() {
		t.Fatalf("the other handle's writes did not leave this cache behind (seq %d, head %d)", seq, head())
	}
	before = misses(db)
	create(db)
	if m := misses(db); m != before+1 {
		t.Fatalf("the write after another connection's did not read the chain (%d misses, was %d)", m, before)
	}
	if ok, seq := cached(db); !ok || seq != head() {
		t.Fatalf("after writing past another connection's writes: cache valid %v at seq %d, head %d", ok, seq, head())
	}
	// An audit event that is not a lease event moves the head too.
	if err := db.Record(ctx, broker.AuditEvent{Kind: "test.note", Actor: "system:test", Subject: "x"}); err != nil {
		t.Fatal(err)
	}
	if ok, seq := cached(db); !ok || seq != head() {
		t.Fatalf("after Record: cache valid %v at seq %d, head %d", ok, seq, head())
	}
	create(db)
	v, err := broker.VerifyAuditChain(ctx, db, nil, nil)
	if err != nil || !v.OK {
		t.Fatalf("audit chain: %+v, %v", v, err)
	}
	if n := head(); n != 8 { // agent, 5 creations, 1 update, 1 note
		t.Fatalf("chain head seq %d, want 8", n)
	}
}

// TestGroupCloseAndCancel closes the store while writes are queued and
// being committed: each write either commits (and is there after reopening)
// or is refused with errClosed, none hangs, and Close returns only after
// the queued ones are done. A write whose context ended before it ran fails
// with that context's error and leaves nothing.
func TestGroupCloseAndCancel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stint.db")
	db := openGroupTest(t, path)
	insert := func(ctx context.Context, k string) error {
		return db.grouped(ctx, func(ctx context.Context, tx *tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO grouped_test (k) VALUES (?)`, k)
			return err
		})
	}

	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	if err := insert(canceled, "canceled"); !errors.Is(err, context.Canceled) {
		t.Fatalf("write with a cancelled context: %v, want context.Canceled", err)
	}

	const n = 400
	errs := make([]error, n)
	var wg sync.WaitGroup
	started := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			if i == n/4 {
				close(started)
			}
			errs[i] = insert(t.Context(), fmt.Sprint("k", i))
		})
	}
	<-started
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// Close has returned: no write may still be committing.
	db.queue.mu.Lock()
	leading, queued := db.queue.leading, len(db.queue.ops)
	db.queue.mu.Unlock()
	if leading || queued != 0 {
		t.Fatalf("after Close: leading=%v with %d writes queued", leading, queued)
	}
	waitWithin(t, &wg, "writes still waiting 10s after Close")

	db, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	committed, refused := 0, 0
	for i := range n {
		var got int
		if err := db.writer.QueryRow(`SELECT COUNT(*) FROM grouped_test WHERE k = ?`, fmt.Sprint("k", i)).Scan(&got); err != nil {
			t.Fatal(err)
		}
		switch {
		case errs[i] == nil && got == 1:
			committed++
		case errors.Is(errs[i], errClosed) && got == 0:
			refused++
		default:
			t.Errorf("write %d: err %v, %d rows", i, errs[i], got)
		}
	}
	var got int
	if err := db.writer.QueryRow(`SELECT COUNT(*) FROM grouped_test WHERE k = 'canceled'`).Scan(&got); err != nil || got != 0 {
		t.Errorf("the cancelled write left %d rows (%v)", got, err)
	}
	t.Logf("%d writes committed, %d refused after Close", committed, refused)
	if committed == 0 {
		t.Error("no write committed before Close")
	}
}

// TestGroupPanic makes one write of a group panic: its caller, and only
// it, panics with the same value, its write leaves nothing, every other
// write commits, and later writes go on: the lead of the group commit was
// handed on.
func TestGroupPanic(t *testing.T) {
	db := openGroupTest(t, filepath.Join(t.TempDir(), "stint.db"))
	defer db.Close()
	insert := func(k string, boom bool) error {
		return db.grouped(t.Context(), func(ctx context.Context, tx *tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO grouped_test (k) VALUES (?)`, k); err != nil {
				return err
			}
			if boom {
				panic("boom")
			}
			return nil
		})
	}
	rows := func(k string) int {
		var n int
		if err := db.writer.QueryRow(`SELECT COUNT(*) FROM grouped_test WHERE k = ?`, k).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	const n, boom = 200, 100
	errs := make([]error, n)
	panics := make([]any, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			defer func() { panics[i] = recover() }()
			errs[i] = insert(fmt.Sprint("k", i), i == boom)
		})
	}
	waitWithin(t, &wg, "writes still waiting 10s after one panicked")
	for i := range n {
		got := rows(fmt.Sprint("k", i))
		switch {
		case i == boom:
			if panics[i] != "boom" || got != 0 {
				t.Errorf("the panicking write: its caller recovered %v, %d rows; want the panic and none", panics[i], got)
			}
		case panics[i] != nil || errs[i] != nil || got != 1:
			t.Errorf("write %d: panic %v, err %v, %d rows; want it committed", i, panics[i], errs[i], got)
		}
	}
	groups, writes := db.groups.Load(), db.groupedWrites.Load()
	t.Logf("%d writes in %d groups", writes, groups)
	if err := insert("after", false); err != nil || rows("after") != 1 {
		t.Fatalf("a write after the panic: %v, %d rows", err, rows("after"))
	}
}
