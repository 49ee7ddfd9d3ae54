package checkpoint

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/stint-broker/stint/broker"
)

// ErrDiverged is wrapped by Emit's error when the chain no longer holds the
// last checkpoint signed: its newest events were deleted, or it was
// rewritten.
var ErrDiverged = errors.New("the audit chain no longer holds the last signed checkpoint")

// Emitter signs the chain's head and writes it to its sinks. It is the
// checkpoint job: call Emit on a schedule and at shutdown.
type Emitter struct {
	Store broker.AuditStore
	Key   ed25519.PrivateKey
	Sinks []Sink
	// Now stamps checkpoints; it defaults to time.Now.
	Now func() time.Time

	mu   sync.Mutex
	last *broker.AuditCheckpoint
}

// NewEmitter returns an Emitter that signs with key and writes to sinks.
func NewEmitter(store broker.AuditStore, key ed25519.PrivateKey, sinks ...Sink) *Emitter {
	return &Emitter{Store: store, Key: key, Sinks: sinks, Now: time.Now}
}

// Resume continues from the newest checkpoint in src signed with e's key,
// so that a restarted server still refuses to checkpoint a chain that lost
// what it checkpointed before. A source with no checkpoints yet (or no
// file) is a fresh start. It returns an error if src cannot be read; the
// Emitter then starts fresh.
func (e *Emitter) Resume(ctx context.Context, src broker.AuditCheckpointSource) error {
	list, err := src.AuditCheckpoints(ctx)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("resume audit checkpoints: %w", err)
	}
	pub := e.Key.Public().(ed25519.PublicKey)
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].Verify(pub) == nil {
			e.last = list[i]
			return nil
		}
	}
	return nil
}

// Last returns the last checkpoint signed or resumed from (nil if none).
func (e *Emitter) Last() *broker.AuditCheckpoint {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.last
}

// Emit signs the chain's head and writes the checkpoint to every sink,
// returning it. It does nothing (nil, nil) when the chain is empty or its
// head is the one checkpointed last. It refuses, with an error wrapping
// ErrDiverged, when the chain no longer holds the last checkpoint's event
// with its hash, and keeps refusing: a fresh checkpoint would cover the
// deletion. Sink errors are joined; the checkpoint counts as signed even if
// some sinks failed.
func (e *Emitter) Emit(ctx context.Context) (*broker.AuditCheckpoint, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	head, err := e.Store.AuditHead(ctx)
	if err != nil {
		return nil, fmt.Errorf("read audit head: %w", err)
	}
	if last := e.last; last != nil {
		if head != nil && head.Seq == last.Seq && head.Hash == last.Hash {
			return nil, nil
		}
		if head == nil || head.Seq < last.Seq {
			headSeq := int64(0)
			if head != nil {
				headSeq = head.Seq
			}
			return nil, fmt.Errorf("%w: the checkpoint signed at %s records event %d, but the chain ends at event %d (truncated); no checkpoint is signed until this is resolved",
				ErrDiverged, last.At.Format(time.RFC3339), last.Seq, headSeq)
		}
		hash, err := e.hashAt(ctx, last.Seq)
		if err != nil {
			return nil, err
		}
		if hash != last.Hash {
			return nil, fmt.Errorf("%w: event %d no longer has the hash the checkpoint signed at %s recorded (rewritten); no checkpoint is signed until this is resolved",
				ErrDiverged, last.Seq, last.At.Format(time.RFC3339))
		}
	}
	if head == nil {
		return nil, nil
	}
	cp := broker.SignAuditCheckpoint(e.Key, head, e.Now())
	e.last = cp
	var errs []error
	for _, s := range e.Sinks {
		if err := s.WriteCheckpoint(ctx, cp); err != nil {
			errs = append(errs, err)
		}
	}
	return cp, errors.Join(errs...)
}

// hashAt returns the hash of event seq, or "" if the chain lacks it.
func (e *Emitter) hashAt(ctx context.Context, seq int64) (string, error) {
	hash := ""
	stop := errors.New("stop")
	err := e.Store.ScanAuditEvents(ctx, broker.AuditFilter{AfterSeq: seq - 1}, func(ev *broker.AuditEvent) error {
		if ev.Seq == seq {
			hash = ev.Hash
		}
		return stop
	})
	if err != nil && !errors.Is(err, stop) {
		return "", fmt.Errorf("read audit event %d: %w", seq, err)
	}
	return hash, nil
}
