package broker

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"
)

// AuditCheckpoint is a signed statement that the audit chain's head was the
// event Seq, with hash Hash, at time At. The chain alone cannot show that
// its newest events were deleted (a shorter chain is still a valid chain);
// checkpoints written outside the database can. Stint signs one with its
// Ed25519 checkpoint key whenever the head has moved (on a schedule, at
// start and at shutdown) and writes it to sinks outside the store (an
// append-only JSON-lines file, the log stream, a webhook). Verification
// (VerifyAudit) then requires the chain to hold every checkpointed event
// with the checkpointed hash, and to be no shorter than the newest
// checkpoint.
//
// The signature covers the concatenation of these netstrings (as defined on
// AuditEvent), in order:
//
//	"stint-audit-checkpoint-v1"   the format version
//	Seq                           decimal
//	Hash                          64 lower-case hex digits
//	At                            Unix time in nanoseconds, decimal
//	KeyID
//
// Sig is the standard (padded) base64 of the Ed25519 signature.
type AuditCheckpoint struct {
	Seq  int64     `json:"seq"`
	Hash string    `json:"hash"`
	At   time.Time `json:"at"`
	// KeyID names the signing key (AuditKeyID of its public key), so that a
	// verifier holding another key says so instead of "forged".
	KeyID string `json:"key_id"`
	Sig   string `json:"sig"`
}

// auditCheckpointFormat names the signed encoding; a new one gets a new name.
const auditCheckpointFormat = "stint-audit-checkpoint-v1"

// ErrAuditCheckpointMalformed is wrapped by the errors of checkpoint sources
// for a record that is not a well-formed checkpoint. Stint writes every
// record itself, so a malformed one was altered or forged.
var ErrAuditCheckpointMalformed = errors.New("malformed audit checkpoint")

// AuditKeyID returns the name of an Ed25519 checkpoint key: "ed25519:" and
// the first 16 hex digits of the SHA-256 of the public key.
func AuditKeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "ed25519:" + hex.EncodeToString(sum[:8])
}

// signedContent returns the bytes Sig signs.
func (c *AuditCheckpoint) signedContent() []byte {
	buf := make([]byte, 0, 160)
	for _, field := range [...]string{auditCheckpointFormat, strconv.FormatInt(c.Seq, 10), c.Hash,
		strconv.FormatInt(c.At.UnixNano(), 10), c.KeyID} {
		buf = appendNetstring(buf, field)
	}
	return buf
}

// SignAuditCheckpoint returns the checkpoint of head at time at, signed with
// key.
func SignAuditCheckpoint(key ed25519.PrivateKey, head *AuditEvent, at time.Time) *AuditCheckpoint {
	c := &AuditCheckpoint{Seq: head.Seq, Hash: head.Hash, At: at.UTC(), KeyID: AuditKeyID(key.Public().(ed25519.PublicKey))}
	c.Sig = base64.StdEncoding.EncodeToString(ed25519.Sign(key, c.signedContent()))
	return c
}

// Verify checks c's signature with pub. It returns an error that says what
// is wrong: another key's checkpoint, or a signature that does not verify
// (the checkpoint was altered or forged).
func (c *AuditCheckpoint) Verify(pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return errors.New("no valid Ed25519 public key to verify checkpoints with")
	}
	if want := AuditKeyID(pub); c.KeyID != want {
		return fmt.Errorf("it names key %s, not the configured key %s", c.KeyID, want)
	}
	sig, err := base64.StdEncoding.DecodeString(c.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize || !ed25519.Verify(pub, c.signedContent(), sig) {
		return errors.New("its signature does not verify with the configured key: it was altered or forged")
	}
	return nil
}

// LogValue implements slog.LogValuer: a checkpoint logs as a group with the
// JSON names, so that checkpoints can be collected from the log stream.
func (c *AuditCheckpoint) LogValue() slog.Value {
	return slog.GroupValue(slog.Int64("seq", c.Seq), slog.String("hash", c.Hash),
		slog.String("at", c.At.UTC().Format(time.RFC3339Nano)), slog.String("key_id", c.KeyID), slog.String("sig", c.Sig))
}

// ParseAuditCheckpoint reads one checkpoint in its JSON form (one line of a
// checkpoint file). It is strict: unknown or missing fields, a hash that is
// not 64 lower-case hex digits or a seq below 1 are errors wrapping
// ErrAuditCheckpointMalformed.
func ParseAuditCheckpoint(data []byte) (*AuditCheckpoint, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c AuditCheckpoint
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAuditCheckpointMalformed, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: text after the checkpoint", ErrAuditCheckpointMalformed)
	}
	switch {
	case c.Seq < 1:
		return nil, fmt.Errorf("%w: seq must be at least 1", ErrAuditCheckpointMalformed)
	case !isLowerHex(c.Hash, 64):
		return nil, fmt.Errorf("%w: hash must be 64 lower-case hex digits", ErrAuditCheckpointMalformed)
	case c.At.IsZero() || c.KeyID == "" || c.Sig == "":
		return nil, fmt.Errorf("%w: at, key_id and sig are required", ErrAuditCheckpointMalformed)
	}
	return &c, nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

// AuditCheckpointSource reads back the checkpoints a sink kept outside the
// store (a checkpoint file, or a copy of it).
type AuditCheckpointSource interface {
	// AuditCheckpoints returns every checkpoint recorded, oldest first.
	// Returns an error wrapping ErrAuditCheckpointMalformed if a record is
	// not a well-formed checkpoint, and another error if the records
	// cannot be read at all.
	AuditCheckpoints(ctx context.Context) ([]*AuditCheckpoint, error)
}
