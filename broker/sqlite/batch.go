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
// one. Each fn runs inside its own savepoint: an error rolls back that fn's
// changes only, and fn's error is returned to its caller alone. A failed
// commit fails every write of the group. A lone write runs without a
// savepoint, exactly as a plain transaction.
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

// commitGroup runs ops in one transaction and answers each.
func (db *DB) commitGroup(ops []*groupOp) {
	results := make([]error, len(ops))
	answer := func() {
		for i, op := range ops {
			op.done <- results[i]
		}
	}
	defer answer()
	tx, err := db.begin(context.Background())
	if err != nil {
		for i := range results {
			results[i] = err
		}
		return
	}
	defer tx.Rollback()

	if len(ops) == 1 {
		if err := ops[0].ctx.Err(); err != nil {
			results[0] = err
			return
		}
		if results[0] = ops[0].fn(ops[0].ctx, tx); results[0] != nil {
			return
		}
	} else {
		for i, op := range ops {
			if err := op.ctx.Err(); err != nil {
				results[i] = err
				continue
			}
			if _, err := tx.ExecContext(op.ctx, `SAVEPOINT grouped_write`); err != nil {
				results[i] = fmt.Errorf("savepoint: %w", err)
				continue
			}
			if results[i] = op.fn(op.ctx, tx); results[i] != nil {
				// Undo this write only; the background context, because the
				// op's own may be what failed it.
				if _, err := tx.ExecContext(context.Background(), `ROLLBACK TO grouped_write`); err != nil {
					db.failGroup(results, fmt.Errorf("rollback to savepoint: %w", err))
					return
				}
			}
			if _, err := tx.ExecContext(context.Background(), `RELEASE grouped_write`); err != nil {
				db.failGroup(results, fmt.Errorf("release savepoint: %w", err))
				return
			}
		}
	}
	if err := tx.Commit(); err != nil {
		db.failGroup(results, fmt.Errorf("commit: %w", err))
	}
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
