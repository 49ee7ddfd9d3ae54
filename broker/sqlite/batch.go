package sqlite

import (
	"context"
	"errors"
	"fmt"
)

// maxGroup bounds how many writes share one transaction.
const maxGroup = 64

// groupOp is one caller's part of a group commit.
type groupOp struct {
	ctx  context.Context
	fn   func(ctx context.Context, tx *tx) error
	done chan error
}

// errClosed answers writes queued after Close.
var errClosed = errors.New("sqlite: database is closed")

// grouped runs fn in a write transaction that it may share with writes of
// other goroutines arriving at the same time (group commit): SQLite has one
// writer, and on this hardware a commit's cost is mostly one write per dirty
// page, so concurrent lease writes committed together cost little more than
// one. An error rolls back that fn's changes only, and is returned to its
// caller alone (commitGroup). A failed commit fails every write of the
// group. fn may run more than once, each time in a new transaction: it must
// leave nothing behind but its writes and, once it succeeds, its result.
func (db *DB) grouped(ctx context.Context, fn func(ctx context.Context, tx *tx) error) error {
	op := &groupOp{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case db.groupCh <- op:
	case <-ctx.Done():
		return ctx.Err()
	case <-db.closing:
		return errClosed
	}
	// Once queued, the op runs (or fails on its context) and answers.
	return <-op.done
}

// runGroups is the group committer: it takes the first waiting write, adds
// every other one already waiting, and commits them together.
func (db *DB) runGroups() {
	defer close(db.groupsDone)
	for {
		var first *groupOp
		select {
		case first = <-db.groupCh:
		case <-db.closing:
			return
		}
		ops := []*groupOp{first}
	drain:
		for len(ops) < maxGroup {
			select {
			case op := <-db.groupCh:
				ops = append(ops, op)
			default:
				break drain
			}
		}
		db.groups.Add(1)
		db.groupedWrites.Add(int64(len(ops)))
		db.commitGroup(ops)
	}
}

// commitGroup runs ops in one transaction and answers each. Optimistically,
// every write succeeds: they run one after another with nothing between
// them. Only when one fails does the group run again with a savepoint
// around each write, so that the failed write's changes alone are undone (a
// savepoint per write costs two statements and a copy of every page the
// write changes, on every group, for a failure that is rare).
func (db *DB) commitGroup(ops []*groupOp) {
	results := make([]error, len(ops))
	defer func() {
		for i, op := range ops {
			op.done <- results[i]
		}
	}()
	if !db.runGroup(ops, results, false) && len(ops) > 1 {
		clear(results)
		db.runGroup(ops, results, true)
	}
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
		if !savepoints {
			if results[i] = op.fn(op.ctx, tx); results[i] != nil {
				return false
			}
			continue
		}
		if _, err := tx.ExecContext(op.ctx, `SAVEPOINT grouped_write`); err != nil {
			results[i] = fmt.Errorf("savepoint: %w", err)
			continue
		}
		mark := tx.markChain()
		if results[i] = op.fn(op.ctx, tx); results[i] != nil {
			// Undo this write only; the background context, because the
			// op's own may be what failed it.
			if _, err := tx.ExecContext(context.Background(), `ROLLBACK TO grouped_write`); err != nil {
				db.failGroup(results, fmt.Errorf("rollback to savepoint: %w", err))
				return true
			}
			tx.restoreChain(mark)
		}
		if _, err := tx.ExecContext(context.Background(), `RELEASE grouped_write`); err != nil {
			db.failGroup(results, fmt.Errorf("release savepoint: %w", err))
			return true
		}
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
