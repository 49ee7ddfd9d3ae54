package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/sqlite"
)

// TestGroupCommit drives concurrent lease writes through the group
// committer, a quarter of them bound to fail (a duplicate id, an unknown
// agent): each caller gets its own answer, failed writes leave nothing
// behind, the rest commit with their events, and the audit chain holds.
func TestGroupCommit(t *testing.T) {
	db := MustOpenPath(t, filepath.Join(t.TempDir(), "stint.db"))
	ctx := context.Background()
	now := time.Now().UTC()
	agent := &broker.Agent{ID: uuid.NewString(), Name: "etl-bot", Owner: "o@example.com", State: broker.AgentActive, CreatedAt: now, UpdatedAt: now}
	if err := db.CreateAgent(ctx, agent); err != nil {
		t.Fatal(err)
	}
	lease := func(id, agentID string) *broker.Lease {
		return &broker.Lease{ID: id, AgentID: agentID, Agent: "etl-bot", Role: "db-readonly", Task: "x",
			TTL: broker.Duration(time.Minute), State: broker.LeaseIssuing, CreatedAt: now, UpdatedAt: now}
	}
	existing := lease(uuid.NewString(), agent.ID)
	if err := db.CreateLease(ctx, existing, "agent:etl-bot", "first"); err != nil {
		t.Fatal(err)
	}

	// OnCommit hears of every commit with the writes it held.
	var (
		mu                sync.Mutex
		commits, observed int
		held              time.Duration
	)
	db.OnCommit = func(writes int, d time.Duration) {
		mu.Lock()
		commits, observed, held = commits+1, observed+writes, held+d
		mu.Unlock()
	}

	groups0, writes0 := sqlite.GroupStats(db)
	const n = 200
	errs := make([]error, n)
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			l := lease(uuid.NewString(), agent.ID)
			switch i % 8 {
			case 3:
				l.ID = existing.ID // conflict
			case 7:
				l.AgentID = uuid.NewString() // no such agent
			}
			ids[i] = l.ID
			if errs[i] = db.CreateLease(ctx, l, "agent:etl-bot", fmt.Sprint("write ", i)); errs[i] != nil {
				return
			}
			// And an update of each new lease, also grouped.
			active := broker.LeaseActive
			_, errs[i] = db.UpdateLease(ctx, l.ID, broker.LeaseUpdate{From: []broker.LeaseState{broker.LeaseIssuing}, State: &active, Actor: "agent:etl-bot", Reason: "minted"})
		})
	}
	wg.Wait()
	groups, writes := sqlite.GroupStats(db)
	if groups -= groups0; writes-writes0 <= groups {
		t.Fatalf("%d writes in %d commits: nothing was grouped", writes-writes0, groups)
	}
	t.Logf("%d writes in %d commits", writes-writes0, groups)
	// Each successful write is one create and one update; failed ones were
	// rolled back and are not counted.
	if want := 2 * (n - n/8*2); observed != want || commits == 0 || commits >= want || held <= 0 {
		t.Fatalf("OnCommit saw %d writes in %d commits holding the writer %v; want %d writes, grouped", observed, commits, held, want)
	}

	for i := range n {
		switch want := map[int]string{3: broker.ECONFLICT, 7: broker.ENOTFOUND}[i%8]; {
		case want != "" && broker.ErrorCode(errs[i]) != want:
			t.Fatalf("write %d: err = %v, want %s", i, errs[i], want)
		case want == "" && errs[i] != nil:
			t.Fatalf("write %d: %v", i, errs[i])
		case want == "":
			l, err := db.FindLeaseByID(ctx, ids[i])
			if err != nil || l.State != broker.LeaseActive {
				t.Fatalf("write %d: lease %v, %v; want active", i, l, err)
			}
			evs, _ := db.FindLeaseEvents(ctx, ids[i])
			if len(evs) != 2 {
				t.Fatalf("write %d: %d events, want 2", i, len(evs))
			}
		}
	}
	// The conflicting writes left the existing lease and its history alone.
	if evs, _ := db.FindLeaseEvents(ctx, existing.ID); len(evs) != 1 {
		t.Fatalf("existing lease has %d events, want 1", len(evs))
	}
	_, total, err := db.FindLeases(ctx, broker.LeaseFilter{})
	if want := 1 + n - n/8*2; err != nil || total != want {
		t.Fatalf("%d leases stored (%v), want %d", total, err, want)
	}
	v, err := broker.VerifyAuditChain(ctx, db, nil, nil)
	if err != nil || !v.OK {
		t.Fatalf("audit chain after grouped writes: %+v, %v", v, err)
	}
}

// TestBackgroundCheckpoint writes leases and waits for the background
// checkpointer to copy the WAL into the database file: the WAL file shrinks
// back (the next write starts it over) and the data reads back the same
// after the database is closed and opened again.
func TestBackgroundCheckpoint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stint.db")
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now().UTC()
	agent := &broker.Agent{ID: uuid.NewString(), Name: "etl-bot", Owner: "o@example.com", State: broker.AgentActive, CreatedAt: now, UpdatedAt: now}
	if err := db.CreateAgent(ctx, agent); err != nil {
		t.Fatal(err)
	}
	write := func(n int) {
		for range n {
			l := &broker.Lease{ID: uuid.NewString(), AgentID: agent.ID, Agent: "etl-bot", Role: "db-readonly", Task: "x",
				TTL: broker.Duration(time.Minute), State: broker.LeaseIssuing}
			if err := db.CreateLease(ctx, l, "agent:etl-bot", "requested"); err != nil {
				t.Fatal(err)
			}
		}
	}
	walSize := func() int64 {
		fi, err := os.Stat(path + "-wal")
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	write(500)
	grown, ran := walSize(), sqlite.Checkpoints(db)
	// Wait for a checkpoint after the writes, then for the checkpointer to
	// go quiet (one that began before the last write runs once more).
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n := sqlite.Checkpoints(db); n > ran {
			time.Sleep(3 * 100 * time.Millisecond) // three checkpoint ticks
			if sqlite.Checkpoints(db) == n {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the background checkpointer did not finish in 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The WAL file keeps its size, but writes start over at its head: a
	// few more leases must not grow it.
	write(5)
	if after := walSize(); after > grown {
		t.Fatalf("WAL grew from %d to %d bytes after a checkpoint: it did not start over", grown, after)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = MustOpenPath(t, path)
	if _, total, err := db.FindLeases(ctx, broker.LeaseFilter{}); err != nil || total != 505 {
		t.Fatalf("after reopening: %d leases, %v; want 505", total, err)
	}
	if v, err := broker.VerifyAuditChain(ctx, db, nil, nil); err != nil || !v.OK {
		t.Fatalf("audit chain after checkpoints: %+v, %v", v, err)
	}
}
