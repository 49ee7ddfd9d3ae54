package sqlite

import (
	"context"
	"fmt"
	"sync"

	"github.com/stint-broker/stint/broker"
)

// chainCache remembers, between write transactions, the audit chain's head,
// so that a transaction appending to the chain need not read it. It is
// valid only while no other connection has written the database since:
// PRAGMA data_version, read inside the write transaction (which holds
// SQLite's write lock), tells. Readers never write, so only another process
// (stint CLI commands on the same file) invalidates it. Were it wrong
// anyway, the chain could not fork silently: seq is the primary key, so a
// stale head fails the transaction.
type chainCache struct {
	mu          sync.Mutex
	valid       bool
	dataVersion int64
	head        *broker.AuditEvent // Seq and Hash; nil for an empty chain
	misses      int64              // chain reads the cache could not spare (tests)
}

// chainState is a write transaction's view of the chain.
type chainState struct {
	cache *chainCache
	// checked is set once the transaction compared data_version with the
	// cache; usable tells the outcome, and base is the cache it saw.
	checked, usable bool
	dataVersion     int64
	base            chainCache
	// head is the chain's head after this transaction's appends (nil
	// until it appends).
	head *broker.AuditEvent
}

// checkChain reads data_version once and decides whether the cache holds.
func (t *tx) checkChain(ctx context.Context) error {
	c := &t.chain
	if c.checked || c.cache == nil {
		return nil
	}
	if err := t.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&c.dataVersion); err != nil {
		return fmt.Errorf("read data version: %w", err)
	}
	c.checked = true
	c.cache.mu.Lock()
	c.base = chainCache{valid: c.cache.valid, dataVersion: c.cache.dataVersion, head: c.cache.head}
	c.cache.mu.Unlock()
	c.usable = c.base.valid && c.base.dataVersion == c.dataVersion
	if !c.usable {
		c.cache.mu.Lock()
		c.cache.misses++
		c.cache.mu.Unlock()
	}
	return nil
}

// chainHead returns the chain's head as this transaction sees it, from
// memory when it can; ok is false when the caller must read it.
func (t *tx) chainHead(ctx context.Context) (head *broker.AuditEvent, ok bool, err error) {
	c := &t.chain
	if c.head != nil {
		return c.head, true, nil
	}
	if err := t.checkChain(ctx); err != nil {
		return nil, false, err
	}
	if c.usable {
		return c.base.head, true, nil
	}
	return nil, false, nil
}

// appended records the chain's new head after this transaction's appends.
func (t *tx) appended(head *broker.AuditEvent) {
	t.chain.head = &broker.AuditEvent{Seq: head.Seq, Hash: head.Hash}
}

// chainMark is what a savepoint must restore of the transaction's chain
// state: its head and the lease events waiting for Commit.
type chainMark struct {
	head        *broker.AuditEvent
	leaseEvents int
}

func (t *tx) markChain() chainMark {
	return chainMark{t.chain.head, len(t.leaseEvents)}
}

// restoreChain undoes what a rolled-back savepoint did to the chain state.
func (t *tx) restoreChain(m chainMark) {
	t.chain.head = m.head
	clear(t.leaseEvents[m.leaseEvents:])
	t.leaseEvents = t.leaseEvents[:m.leaseEvents]
}

// committed updates the cache after the transaction committed: with the
// head it left when it checked the cache, else it forgets the cache.
func (t *tx) committed() {
	c := &t.chain
	if c.cache == nil || c.head == nil {
		return // the chain did not change
	}
	c.cache.mu.Lock()
	defer c.cache.mu.Unlock()
	if !c.checked {
		c.cache.valid = false
		return
	}
	c.cache.valid, c.cache.dataVersion, c.cache.head = true, c.dataVersion, c.head
}

// forgetChain drops the cache (after a failed commit, whose outcome is
// uncertain).
func (t *tx) forgetChain() {
	if c := t.chain.cache; c != nil {
		c.mu.Lock()
		c.valid = false
		c.mu.Unlock()
	}
}
