package broker

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// Audit event kinds. A kind is a dotted lower-case name; packages may record
// kinds not listed here (ValidAuditKind says which names are allowed), and
// readers filter on a kind or on a prefix such as "lease.".
const (
	// AuditLeaseCreated records a new lease: the request, the agent, how it
	// authenticated, the risk score and the policy decision (policy ids and
	// reasons). Subject is the lease id.
	AuditLeaseCreated = "lease.created"
	// AuditLeaseState records a lease changing state (details: from, to,
	// reason). Actor is who caused it: "agent:…", "admin:…", "approver:…",
	// "system:expiry", … Subject is the lease id.
	AuditLeaseState = "lease.state"
	// AuditLeaseNote records an event of a lease that did not change its
	// state, such as a failed revocation attempt or one approval of several.
	AuditLeaseNote = "lease.note"

	// AuditApproval records an approver's answer (details: verdict, digest,
	// via, reason). The approvals package records it; Subject is the lease id.
	AuditApproval = "approval.recorded"
	// AuditDecision records a policy decision made outside a lease's creation
	// (such as a window extension): outcome, policy ids, reasons.
	AuditDecision = "policy.decision"

	// AuditAuthFailed records a failed authentication: source IP, the
	// method, and for API keys the key's public prefix only, never the secret.
	AuditAuthFailed = "auth.failed"

	// Admin actions on agents, recorded by the store in the transaction
	// that makes them, with the actor of the context. Subject is the agent
	// id. AuditAgentUpdated covers state (suspend, disable, activate), owner
	// and labels; last-seen times are not audited.
	AuditAgentCreated     = "agent.created"
	AuditAgentUpdated     = "agent.updated"
	AuditAgentKeyCreated  = "agent.key_created"  // details: key id, public prefix, expiry
	AuditAgentKeysRevoked = "agent.keys_revoked" // a rotation, suspension or disabling
	// AuditAgentLeasesRevoked records the kill switch: every live lease of
	// an agent pulled at once (each lease's own change is recorded too).
	AuditAgentLeasesRevoked = "agent.leases_revoked"

	// Console users and their sessions. Subject is the user's name.
	AuditUserCreated     = "user.created"
	AuditUserDisabled    = "user.disabled"
	AuditUserLogin       = "user.login"
	AuditUserLoginFailed = "user.login_failed"
	AuditUserLogout      = "user.logout"

	// AuditConfigLoaded records the configuration a server started with
	// (details: the file and its SHA-256); AuditConfigReloaded and
	// AuditPolicyReloaded record reloads.
	AuditConfigLoaded   = "config.loaded"
	AuditConfigReloaded = "config.reloaded"
	AuditPolicyReloaded = "policy.reloaded"
)

// AuditEvent is one entry of the audit log: an append-only hash chain of
// everything that happened (every lease state change, every decision, every
// failed authentication, every admin action, every configuration or policy
// reload). Events are never updated or deleted; retention means export and
// archive.
//
// Each event holds the hash of the one before it (PrevHash) and its own Hash
// over PrevHash and its canonical content, so that editing, deleting or
// reordering any event breaks the chain from that point on (see
// VerifyAuditChain). The canonical content, fixed by version 1 of the format,
// is the concatenation of these netstrings (the decimal byte length of the
// value, ':', the value's bytes, ','), in order:
//
//	"stint-audit-v1"   the format version
//	Seq                decimal, no sign or leading zeros ("1", "2", …)
//	At                 Unix time in nanoseconds, decimal (may be negative)
//	Kind
//	Actor
//	Subject
//	Details            the JSON text exactly as stored
//
// and Hash = lower-case hex of SHA-256( the 32 bytes PrevHash decodes to ||
// canonical content ). The first event's PrevHash is GenesisHash (64 zeros).
// Details is always a JSON object in canonical form: compact, object keys
// sorted, as CanonicalDetails produces it; the hash covers its exact bytes,
// so a verifier never re-encodes it.
type AuditEvent struct {
	// Seq numbers events 1, 2, 3, … without gaps. The store assigns it.
	Seq int64 `json:"seq"`
	// At is when it happened, in UTC. The store stamps it when zero.
	At   time.Time `json:"at"`
	Kind string    `json:"kind"`
	// Actor is who did it, in the form lease history uses: "agent:etl",
	// "admin:alice", "user:bob", "system:expiry", "anonymous".
	Actor string `json:"actor"`
	// Subject is what it was done to: a lease id, an agent id, a user name;
	// empty for events about the server itself.
	Subject string `json:"subject,omitempty"`
	// Details is a JSON object with the kind's particulars. It never holds a
	// credential, an API key, a token or a password.
	Details json.RawMessage `json:"details"`
	// PrevHash and Hash chain the events; the store computes both.
	PrevHash string `json:"prev_hash"`
	Hash     string `json:"hash"`
}

// GenesisHash is the PrevHash of the first event of a chain.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// auditFormat names the canonical encoding; a new encoding gets a new name.
const auditFormat = "stint-audit-v1"

// ComputeHash returns the hash e must carry given its PrevHash and content,
// as defined on AuditEvent. It returns "" if PrevHash is not 64 hex digits.
func (e *AuditEvent) ComputeHash() string {
	prev, err := hex.DecodeString(e.PrevHash)
	if err != nil || len(prev) != sha256.Size {
		return ""
	}
	h := sha256.New()
	h.Write(prev)
	buf := make([]byte, 0, 256+len(e.Details))
	for _, field := range [...]string{auditFormat, strconv.FormatInt(e.Seq, 10),
		strconv.FormatInt(e.At.UnixNano(), 10), e.Kind, e.Actor, e.Subject} {
		buf = appendNetstring(buf, field)
	}
	buf = strconv.AppendInt(buf, int64(len(e.Details)), 10)
	buf = append(buf, ':')
	buf = append(buf, e.Details...)
	buf = append(buf, ',')
	h.Write(buf)
	return hex.EncodeToString(h.Sum(nil))
}

func appendNetstring(buf []byte, s string) []byte {
	buf = strconv.AppendInt(buf, int64(len(s)), 10)
	buf = append(buf, ':')
	buf = append(buf, s...)
	return append(buf, ',')
}

// Seal sets e's Seq and PrevHash to follow prev (nil for the first event) and
// computes its Hash. Stores call it inside the transaction that appends e.
func (e *AuditEvent) Seal(prev *AuditEvent) {
	e.Seq, e.PrevHash = 1, GenesisHash
	if prev != nil {
		e.Seq, e.PrevHash = prev.Seq+1, prev.Hash
	}
	e.Hash = e.ComputeHash()
}

// ValidAuditKind reports whether kind is usable: 1 to 64 characters of a-z,
// 0-9, '_' and '.', starting with a letter.
func ValidAuditKind(kind string) bool {
	if len(kind) == 0 || len(kind) > 64 {
		return false
	}
	for i, r := range kind {
		switch {
		case r >= 'a' && r <= 'z':
		case i > 0 && (r >= '0' && r <= '9' || r == '_' || r == '.'):
		default:
			return false
		}
	}
	return true
}

// CanonicalDetails returns raw, which must be a JSON object (or empty, which
// means "{}"), in canonical form: compact, keys sorted, numbers as written.
// Returns EINVALID if raw is not a JSON object.
func CanonicalDetails(raw []byte) (json.RawMessage, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return json.RawMessage("{}"), nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil || v == nil {
		return nil, FieldErrorf("details", "Audit details must be a JSON object.")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, FieldErrorf("details", "Audit details must be a single JSON object.")
	}
	out, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode audit details: %w", err)
	}
	return out, nil
}

// AuditDetails encodes v (a map or a struct) as canonical audit details. It
// panics if v cannot be encoded as a JSON object, which is a programming
// error.
func AuditDetails(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("broker.AuditDetails: %v", err))
	}
	out, err := CanonicalDetails(b)
	if err != nil {
		panic(fmt.Sprintf("broker.AuditDetails: %v", err))
	}
	return out
}

// AuditLog is where packages record audit events. The approvals, identity
// and web packages hold one; the store implements it.
type AuditLog interface {
	// Record appends e to the chain. The store assigns Seq, PrevHash and
	// Hash, stamps At when zero and canonicalizes Details. Appends are
	// serialized: concurrent calls form one chain. Returns EINVALID if Kind is
	// not a valid kind or Details is not a JSON object.
	Record(ctx context.Context, e AuditEvent) error
}

// AuditFilter selects audit events. Nil and empty fields do not filter.
type AuditFilter struct {
	// Since and Until bound At: Since <= At < Until.
	Since *time.Time
	Until *time.Time
	// Kind matches a kind exactly, or every kind under a prefix ending in
	// '.', such as "lease.".
	Kind    *string
	Actor   *string
	Subject *string
	// AfterSeq selects events with Seq > AfterSeq (resuming an export).
	AfterSeq int64

	Offset int
	Limit  int // 0 means no limit
}

// AuditStore keeps the audit chain.
type AuditStore interface {
	AuditLog
	AuditReader
}

// AuditReader reads the audit chain; it cannot append to it.
type AuditReader interface {
	// FindAuditEvents returns one page of matching events, newest first, and
	// the total number of matches ignoring Offset and Limit.
	FindAuditEvents(ctx context.Context, filter AuditFilter) ([]*AuditEvent, int, error)
	// ScanAuditEvents calls fn for every matching event, oldest first, from
	// one consistent snapshot, ignoring Offset and Limit; it stops at and
	// returns the first error fn returns. It streams: memory does not grow
	// with the number of events.
	ScanAuditEvents(ctx context.Context, filter AuditFilter, fn func(*AuditEvent) error) error
	// AuditHead returns the last event of the chain, or nil if it is empty.
	AuditHead(ctx context.Context) (*AuditEvent, error)
}

// AuditBreak says why a chain is broken.
type AuditBreak string

// Chain breaks, as VerifyAuditChain names them.
const (
	// AuditSeqGap: an event is missing (deleted) or numbered out of order.
	AuditSeqGap AuditBreak = "seq_gap"
	// AuditPrevMismatch: PrevHash is not the previous event's Hash: an
	// event before it was deleted, or events were reordered.
	AuditPrevMismatch AuditBreak = "prev_mismatch"
	// AuditHashMismatch: the event's content does not hash to its Hash: it
	// was edited.
	AuditHashMismatch AuditBreak = "hash_mismatch"
	// AuditAnchorMismatch: the event does not carry the hash an anchor
	// recorded earlier (the chain was rewritten from there on), or the
	// anchored event is gone (the chain was truncated).
	AuditAnchorMismatch AuditBreak = "anchor_mismatch"
)

// Chain breaks that only checkpoints (AuditCheckpoint) reveal, and the
// verdict when they cannot be checked.
const (
	// AuditTruncated: the chain ends before the newest signed checkpoint:
	// its newest events were deleted.
	AuditTruncated AuditBreak = "truncated"
	// AuditCheckpointMismatch: a checkpointed event does not carry the hash
	// its signed checkpoint recorded (or two checkpoints disagree about it):
	// the chain was rewritten from there on.
	AuditCheckpointMismatch AuditBreak = "checkpoint_mismatch"
	// AuditCheckpointInvalid: a checkpoint is malformed, its signature does
	// not verify, or the newest one was signed by another key: the
	// checkpoints were altered or forged.
	AuditCheckpointInvalid AuditBreak = "checkpoint_invalid"
	// AuditCheckpointUnavailable: checkpoints are configured but none could
	// be read (no file, no checkpoint yet, no key). This is no verdict on the
	// chain: its head could not be checked.
	AuditCheckpointUnavailable AuditBreak = "checkpoint_unavailable"
)

// AuditVerification is the result of walking the chain.
type AuditVerification struct {
	// OK is true if every link holds (and, with checkpoints, the chain holds
	// every signed checkpoint and is not shorter than the newest).
	OK bool `json:"ok"`
	// Checked is how many events were checked.
	Checked int64 `json:"checked"`
	// Head is the last event checked (nil for an empty chain). Recording its
	// Seq and Hash elsewhere (an anchor) lets a later verification detect a
	// rewritten or truncated chain, which the chain alone cannot.
	Head *AuditEvent `json:"head,omitempty"`
	// BrokenAt is the Seq of the first broken link (for a truncation, the
	// first missing event; 0 when no event is at fault, as for an invalid
	// checkpoint); Break and Reason say why.
	BrokenAt int64      `json:"broken_at,omitempty"`
	Break    AuditBreak `json:"break,omitempty"`
	Reason   string     `json:"reason,omitempty"`
	// AnchorsMatched is how many anchors the chain held with their
	// recorded hashes.
	AnchorsMatched int `json:"anchors_matched"`
	// Checkpoint is the newest signed checkpoint, when checkpoints were
	// checked; CheckpointsMatched is how many distinct checkpointed events
	// the chain held with their signed hashes, and CheckpointsSkipped how
	// many older checkpoints were signed by another (earlier) key and not
	// checked.
	Checkpoint         *AuditCheckpoint `json:"checkpoint,omitempty"`
	CheckpointsMatched int              `json:"checkpoints_matched,omitempty"`
	CheckpointsSkipped int              `json:"checkpoints_skipped,omitempty"`
	// VerifiedAt is when the walk ended.
	VerifiedAt time.Time `json:"verified_at"`
}

// AuditVerifyOptions says what VerifyAudit checks besides the chain's links.
type AuditVerifyOptions struct {
	// Anchors are seq → hash pairs recorded earlier by hand.
	Anchors map[int64]string
	// Checkpoints, when set, is read before the walk; CheckpointKey is the
	// public key its checkpoints must be signed with.
	Checkpoints   AuditCheckpointSource
	CheckpointKey ed25519.PublicKey
	// Progress, if not nil, is called with the number of events checked
	// every 10,000 events.
	Progress func(checked int64)
}

// VerifyAuditChain walks the whole chain, oldest first, and reports the first
// broken link: a seq gap (an event deleted), a PrevHash that is not the
// previous event's hash (deleted or reordered), a hash that does not match the
// content (edited), or an event whose hash differs from an anchor (seq → hash
// recorded earlier). progress, if not nil, is called with the number of events
// checked every 10,000 events. It returns an error only if the store cannot
// be read. VerifyAudit also checks signed checkpoints.
func VerifyAuditChain(ctx context.Context, s AuditReader, anchors map[int64]string, progress func(checked int64)) (*AuditVerification, error) {
	return VerifyAudit(ctx, s, AuditVerifyOptions{Anchors: anchors, Progress: progress})
}

// VerifyAudit walks the whole chain as VerifyAuditChain does and, with
// opts.Checkpoints, also checks the signed checkpoints kept outside the
// store: each must verify with opts.CheckpointKey (older ones signed by
// another key are skipped; the newest must be signed by this key), the
// chain must hold every checkpointed event with its signed hash, and it
// must reach the newest checkpoint's seq, so that deleting the newest
// events (which leaves a valid, shorter chain) fails as AuditTruncated.
// The checkpoints are read before the chain, so that one written during the
// walk cannot be mistaken for a truncation. Breaks of the chain itself are
// reported first. It returns an error only if the store cannot be read; a
// checkpoint source that cannot be read gives AuditCheckpointUnavailable.
func VerifyAudit(ctx context.Context, s AuditReader, opts AuditVerifyOptions) (*AuditVerification, error) {
	v := &AuditVerification{OK: true}
	var cps *checkpointSet
	var cpFault *AuditVerification // a checkpoint problem found before the walk
	if opts.Checkpoints != nil {
		cps, cpFault = readCheckpoints(ctx, opts.Checkpoints, opts.CheckpointKey)
		if cps != nil {
			v.Checkpoint, v.CheckpointsSkipped = cps.newest, cps.skipped
		}
	}
	var prev *AuditEvent
	errBroken := errors.New("broken")
	broke := func(e *AuditEvent, kind AuditBreak, format string, args ...any) error {
		v.OK, v.BrokenAt, v.Break, v.Reason = false, e.Seq, kind, fmt.Sprintf(format, args...)
		return errBroken
	}
	err := s.ScanAuditEvents(ctx, AuditFilter{}, func(e *AuditEvent) error {
		wantSeq, wantPrev := int64(1), GenesisHash
		if prev != nil {
			wantSeq, wantPrev = prev.Seq+1, prev.Hash
		}
		switch {
		case e.Seq != wantSeq:
			return broke(e, AuditSeqGap, "event %d follows event %d: %d event(s) missing (deleted) or renumbered", e.Seq, wantSeq-1, e.Seq-wantSeq)
		case e.PrevHash != wantPrev:
			return broke(e, AuditPrevMismatch, "prev_hash of event %d is not the hash of event %d: an event was deleted or events were reordered", e.Seq, wantSeq-1)
		case e.ComputeHash() != e.Hash:
			return broke(e, AuditHashMismatch, "the content of event %d does not match its hash: it was edited", e.Seq)
		}
		if want, ok := opts.Anchors[e.Seq]; ok {
			if want != e.Hash {
				return broke(e, AuditAnchorMismatch, "event %d has hash %s, but the anchor recorded %s: the chain was rewritten", e.Seq, short(e.Hash), short(want))
			}
			v.AnchorsMatched++
		}
		if cps != nil {
			if cp, ok := cps.bySeq[e.Seq]; ok {
				if cp.Hash != e.Hash {
					return broke(e, AuditCheckpointMismatch, "event %d has hash %s, but the checkpoint signed at %s recorded %s: the chain was rewritten from there on",
						e.Seq, short(e.Hash), cp.At.Format(time.RFC3339), short(cp.Hash))
				}
				v.CheckpointsMatched++
			}
		}
		prev = e
		v.Checked++
		if opts.Progress != nil && v.Checked%10000 == 0 {
			opts.Progress(v.Checked)
		}
		return nil
	})
	if err != nil && !errors.Is(err, errBroken) {
		return nil, fmt.Errorf("verify audit chain: %w", err)
	}
	v.Head, v.VerifiedAt = prev, time.Now().UTC()
	if !v.OK {
		return v, nil
	}
	for seq := range opts.Anchors {
		if prev == nil || seq > prev.Seq {
			v.OK, v.BrokenAt, v.Break = false, seq, AuditAnchorMismatch
			v.Reason = fmt.Sprintf("anchored event %d is missing: the chain was truncated", seq)
			return v, nil
		}
	}
	if cpFault != nil {
		v.OK, v.BrokenAt, v.Break, v.Reason = false, cpFault.BrokenAt, cpFault.Break, cpFault.Reason
		return v, nil
	}
	if cps != nil {
		headSeq := int64(0)
		if prev != nil {
			headSeq = prev.Seq
		}
		if top := cps.highest; top.Seq > headSeq {
			v.OK, v.BrokenAt, v.Break = false, headSeq+1, AuditTruncated
			v.Reason = fmt.Sprintf("the checkpoint signed at %s records event %d (hash %s), but the chain ends at event %d: %d event(s) were deleted from its end",
				top.At.Format(time.RFC3339), top.Seq, short(top.Hash), headSeq, top.Seq-headSeq)
		}
	}
	return v, nil
}

// checkpointSet is the checkpoints a verification holds the chain to.
type checkpointSet struct {
	bySeq   map[int64]*AuditCheckpoint // verified checkpoints by seq
	newest  *AuditCheckpoint           // the last one recorded
	highest *AuditCheckpoint           // the one with the highest seq
	skipped int                        // older ones signed by another key
}

// readCheckpoints reads and checks the signatures of src's checkpoints. It
// returns the set to hold the chain to (nil if none can be used) and, for a
// checkpoint problem, the verdict to report if the chain itself holds.
func readCheckpoints(ctx context.Context, src AuditCheckpointSource, key ed25519.PublicKey) (*checkpointSet, *AuditVerification) {
	fault := func(kind AuditBreak, seq int64, format string, args ...any) *AuditVerification {
		return &AuditVerification{Break: kind, BrokenAt: seq, Reason: fmt.Sprintf(format, args...)}
	}
	if len(key) != ed25519.PublicKeySize {
		return nil, fault(AuditCheckpointUnavailable, 0, "checkpoints are configured but no Ed25519 public key was given to verify them")
	}
	list, err := src.AuditCheckpoints(ctx)
	switch {
	case errors.Is(err, ErrAuditCheckpointMalformed):
		return nil, fault(AuditCheckpointInvalid, 0, "the checkpoints were altered: %v", err)
	case err != nil:
		return nil, fault(AuditCheckpointUnavailable, 0, "the checkpoints could not be read, so the chain's head is unchecked: %v", err)
	case len(list) == 0:
		return nil, fault(AuditCheckpointUnavailable, 0, "no checkpoint has been recorded yet, so the chain's head is unchecked")
	}
	set := &checkpointSet{bySeq: map[int64]*AuditCheckpoint{}, newest: list[len(list)-1]}
	keyID := AuditKeyID(key)
	for i, cp := range list {
		if cp.KeyID != keyID && i < len(list)-1 {
			set.skipped++ // signed before a key rotation
			continue
		}
		if err := cp.Verify(key); err != nil {
			which := fmt.Sprintf("checkpoint %d of %d (seq %d)", i+1, len(list), cp.Seq)
			if i == len(list)-1 {
				which = fmt.Sprintf("the newest checkpoint (seq %d)", cp.Seq)
			}
			return set, fault(AuditCheckpointInvalid, 0, "%s is refused: %v", which, err)
		}
		if other, ok := set.bySeq[cp.Seq]; ok && other.Hash != cp.Hash {
			return set, fault(AuditCheckpointMismatch, cp.Seq, "the checkpoints signed at %s and %s record different hashes for event %d: the chain was rewritten between them",
				other.At.Format(time.RFC3339), cp.At.Format(time.RFC3339), cp.Seq)
		}
		set.bySeq[cp.Seq] = cp
		if set.highest == nil || cp.Seq > set.highest.Seq {
			set.highest = cp
		}
	}
	return set, nil
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12] + "…"
	}
	return h
}
