package sqlite

import (
	"context"
	"fmt"
	"sync"

	"github.com/stint-broker/stint/broker"
)

// chainCache remembers, between write transactions, the audit chain's head
// and the highest lease event the chain mirrors, so that a transaction
// appending to the chain need not read them (three statements out of a
// grant's dozen). It is valid only while no other connection has written
// the database since: PRAGMA data_version, read inside the write
// transaction (which holds SQLite's write lock), tells. Readers never
// write, so only another process (stint CLI commands on the same file)
// invalidates it. Were it wrong anyway, the chain could not fork silently:
// seq is the primary key and lease_event_id is unique, so a stale head or
// mark fails the transaction.
type chainCache struct {
	mu          sync.Mutex
	valid       bool
	dataVersion int64
	head        *broker.AuditEvent // Seq and Hash; nil for an empty chain
	mirrored    int64              // highest lease_event_id in the chain
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
	// events are the lease events written through insertLeaseEvent, in
	// order; untracked is set when lease events were written otherwise.
	events    []broker.LeaseEvent
	untracked bool
	// head is the chain's head after this transaction's appends (nil
	// until it appends); mirrored is the highest lease event the chain
	// mirrors once it synced (mirroredKnown).
	head          *broker.AuditEvent
	mirrored      int64
	mirroredKnown bool
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
	c.base = chainCache{valid: c.cache.valid, dataVersion: c.cache.dataVersion, head: c.cache.head, mirrored: c.cache.mirrored}
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

// unmirrored returns the lease events this transaction must mirror, from
// memory when every one of them is known here and they follow the chain's
// mark; ok is false when the caller must read them.
func (t *tx) unmirrored(ctx context.Context) (events []*broker.LeaseEvent, ok bool, err error) {
	c := &t.chain
	if c.untracked || len(c.events) == 0 {
		return nil, false, nil
	}
	if err := t.checkChain(ctx); err != nil {
		return nil, false, err
	}
	if !c.usable {
		return nil, false, nil
	}
	next := c.base.mirrored + 1
	if c.mirroredKnown {
		next = c.mirrored + 1
	}
	events = make([]*broker.LeaseEvent, len(c.events))
	for i := range c.events {
		if c.events[i].ID != next+int64(i) {
			return nil, false, nil
		}
		events[i] = &c.events[i]
	}
	return events, true, nil
}

// appended records the chain's new head after this transaction's appends.
func (t *tx) appended(head *broker.AuditEvent) {
	t.chain.head = &broker.AuditEvent{Seq: head.Seq, Hash: head.Hash}
}

// synced records that the chain now mirrors every lease event up to id,
// and that the events tracked so far are mirrored.
func (t *tx) synced(id int64) {
	c := &t.chain
	c.mirrored, c.mirroredKnown = id, true
	c.events = c.events[:0]
}

// chainMark is what a savepoint must restore of the chain state.
type chainMark struct {
	events                   int
	untracked                bool
	head                     *broker.AuditEvent
	mirrored                 int64
	mirroredKnown, unaudited bool
}

func (t *tx) markChain() chainMark {
	c := &t.chain
	return chainMark{len(c.events), c.untracked, c.head, c.mirrored, c.mirroredKnown, t.unaudited}
}

// restoreChain undoes what a rolled-back savepoint did to the chain state.
func (t *tx) restoreChain(m chainMark) {
	c := &t.chain
	c.events, c.untracked, c.head, c.mirrored, c.mirroredKnown = c.events[:m.events], m.untracked, m.head, m.mirrored, m.mirroredKnown
	t.unaudited = m.unaudited
}

// committed updates the cache after the transaction committed: with the
// head and mark it left when it knows both, else it forgets the cache.
func (t *tx) committed() {
	c := &t.chain
	if c.cache == nil || c.head == nil {
		return // the chain did not change
	}
	c.cache.mu.Lock()
	defer c.cache.mu.Unlock()
	mirrored, known := c.mirrored, c.mirroredKnown
	if !known && c.usable {
		mirrored, known = c.base.mirrored, true
	}
	if !c.checked || !known {
		c.cache.valid = false
		return
	}
	c.cache.valid, c.cache.dataVersion, c.cache.head, c.cache.mirrored = true, c.dataVersion, c.head, mirrored
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
