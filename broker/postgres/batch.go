package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// maxGroup bounds how many writes share one transaction.
const maxGroup = 64

// groupOp is one caller's part of a group commit.
type groupOp struct {
	ctx  context.Context
	fn   func(ctx context.Context, tx *tx) error
	done chan groupMsg
}

// groupMsg answers a queued write: its result, or that its caller now leads
// the group commit.
type groupMsg struct {
	err  error
	lead bool
}

// groupQueue holds the writes waiting for a group commit and who leads it.
type groupQueue struct {
	mu      sync.Mutex
	ops     []*groupOp
	leading bool // a caller is committing, or about to
	closed  bool
	idle    *sync.Cond // signalled when leading becomes false
}

// errClosed answers writes queued after Close.
var errClosed = errors.New("postgres: store is closed")

// grouped runs fn in a write transaction that it may share with writes of
// other goroutines of this process arriving at the same time (group
// commit): every write transaction appends to the audit chain, whose head
// row is held from the append to the end of the commit (its WAL flush), so
// writes on one database commit one after another however many
// connections they use; committed together, concurrent lease writes cost
// little more than one. A group that PostgreSQL aborts to break a deadlock
// or a serialization conflict runs again, each write in a new group, a few
// times. An error rolls back that fn's changes only, and is returned to its
// caller alone (commitGroup). A failed commit fails every write of the
// group. fn may run more than once, each time in a new transaction: it must
// leave nothing behind but its writes and, once it succeeds, its result.
//
// The callers commit, not a goroutine of the store's own: the first caller
// to find nobody committing leads, committing every write queued by then,
// its own first; when it is done, it hands the lead to the oldest write
// still waiting. A lone write therefore runs on its caller's goroutine, and
// no goroutine commits for long: one that did would be preempted under load
// and wait behind every runnable goroutine while no one committed.
func (db *DB) grouped(ctx context.Context, fn func(ctx context.Context, tx *tx) error) error {
	for attempt := 0; ; attempt++ {
		err := db.groupedOnce(ctx, fn)
		if err == nil || attempt >= 4 || !retryable(err) || ctx.Err() != nil {
			return err
		}
	}
}

func (db *DB) groupedOnce(ctx context.Context, fn func(ctx context.Context, tx *tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	op := &groupOp{ctx: ctx, fn: fn, done: make(chan groupMsg, 1)}
	q := &db.queue
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return errClosed
	}
	q.ops = append(q.ops, op)
	lead := !q.leading
	q.leading = true
	q.mu.Unlock()
	// Once queued, the op runs (or fails on its context) and answers.
	for {
		if lead {
			db.lead()
		}
		m := <-op.done
		if p, ok := m.err.(*opPanic); ok {
			panic(p.value)
		}
		if !m.lead {
			return m.err
		}
		lead = true
	}
}

// lead commits the writes queued now (up to maxGroup, oldest first) as one
// group, then hands the lead to the oldest write still waiting, if any.
func (db *DB) lead() {
	q := &db.queue
	q.mu.Lock()
	n := min(len(q.ops), maxGroup)
	ops := make([]*groupOp, n)
	copy(ops, q.ops)
	rest := copy(q.ops, q.ops[n:])
	clear(q.ops[rest:]) // no stale references to answered writes
	q.ops = q.ops[:rest]
	q.mu.Unlock()

	db.groups.Add(1)
	db.groupedWrites.Add(int64(len(ops)))
	defer db.handOff() // even if a write panics: the others must not wait forever
	db.commitGroup(ops)
}

// handOff passes the lead to the oldest write waiting, or ends it.
func (db *DB) handOff() {
	q := &db.queue
	q.mu.Lock()
	if len(q.ops) == 0 {
		q.leading = false
		q.idle.Broadcast()
		q.mu.Unlock()
		return
	}
	next := q.ops[0]
	q.mu.Unlock()
	next.done <- groupMsg{lead: true}
}

// closeGroups refuses new writes and waits for the queued ones to commit.
func (db *DB) closeGroups() {
	q := &db.queue
	q.mu.Lock()
	q.closed = true
	for q.leading {
		q.idle.Wait()
	}
	q.mu.Unlock()
}

// commitGroup runs ops in one transaction and answers each. Optimistically,
// every write succeeds: they run one after another with nothing between
// them. Only when one fails does the group run again with a savepoint
// around each write, so that the failed write's changes alone are undone (a
// savepoint per write costs two statements and a copy of every page the
// write changes, on every group, for a failure that is rare).
//
// A write that panics fails like a write that returns an error (runOp),
// and its caller panics with the same value (grouped). Should the group
// commit itself panic, every write of the group fails with errGroupPanic
// and the panic goes on in the goroutine that led it.
func (db *DB) commitGroup(ops []*groupOp) {
	results := make([]error, len(ops))
	panicked := true
	defer func() {
		for i, op := range ops {
			if panicked {
				results[i] = errGroupPanic
			}
			op.done <- groupMsg{err: results[i]}
		}
	}()
	if !db.runGroup(ops, results, false) && len(ops) > 1 {
		clear(results)
		db.runGroup(ops, results, true)
	}
	panicked = false
}

// errGroupPanic answers the writes of a group whose commit panicked.
var errGroupPanic = errors.New("postgres: the group commit panicked; nothing was written")

// opPanic is the result of a write that panicked: its caller panics again
// with value.
type opPanic struct{ value any }

func (p *opPanic) Error() string { return fmt.Sprintf("postgres: write panicked: %v", p.value) }

// runOp runs op's write in tx; a panic becomes an *opPanic.
func runOp(ctx context.Context, op *groupOp, tx *tx) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &opPanic{value: v}
		}
	}()
	return op.fn(ctx, tx)
}

// runGroup runs ops in one transaction, commits it and records each op's
// result. Without savepoints, a failed write rolls the whole transaction
// back and runGroup returns false at once; results then hold that write's
// error and those of the writes before it.
func (db *DB) runGroup(ops []*groupOp, results []error, savepoints bool) bool {
	tx, err := db.begin(context.Background())
	if err != nil {
		for i := range results {
			results[i] = err
		}
		return true
	}
	defer tx.Rollback()
	for i, op := range ops {
		if err := op.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		// A write runs to its end once started (it takes microseconds):
		// interrupting it would fail the whole group's first run.
		ctx := context.WithoutCancel(op.ctx)
		if !savepoints {
			if results[i] = runOp(ctx, op, tx); results[i] != nil {
				return false
			}
			continue
		}
		if _, err := tx.ExecContext(ctx, `SAVEPOINT grouped_write`); err != nil {
			results[i] = fmt.Errorf("savepoint: %w", err)
			continue
		}
		mark := tx.markEvents()
		if results[i] = runOp(ctx, op, tx); results[i] != nil {
			// Undo this write only.
			if _, err := tx.ExecContext(context.Background(), `ROLLBACK TO grouped_write`); err != nil {
				db.failGroup(results, fmt.Errorf("rollback to savepoint: %w", err))
				return true
			}
			tx.restoreEvents(mark)
		}
		if _, err := tx.ExecContext(context.Background(), `RELEASE grouped_write`); err != nil {
			db.failGroup(results, fmt.Errorf("release savepoint: %w", err))
			return true
		}
	}
	tx.writes = 0
	for _, err := range results {
		if err == nil {
			tx.writes++
		}
	}
	if tx.writes == 0 {
		return true // every write failed: nothing to commit
	}
	if err := tx.Commit(); err != nil {
		db.failGroup(results, fmt.Errorf("commit: %w", err))
	}
	return true
}

// failGroup marks every write that had succeeded as failed with err: the
// transaction they shared did not commit.
func (db *DB) failGroup(results []error, err error) {
	for i := range results {
		if results[i] == nil {
			results[i] = err
		}
	}
}

// eventsMark is what a savepoint must restore of the transaction's queued
// audit and lease events.
type eventsMark struct{ audits, leaseEvents int }

func (t *tx) markEvents() eventsMark { return eventsMark{len(t.audits), len(t.leaseEvents)} }

// restoreEvents drops the events a rolled-back savepoint queued.
func (t *tx) restoreEvents(m eventsMark) {
	clear(t.audits[m.audits:])
	t.audits = t.audits[:m.audits]
	clear(t.leaseEvents[m.leaseEvents:])
	t.leaseEvents = t.leaseEvents[:m.leaseEvents]
}
