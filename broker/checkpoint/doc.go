// Package checkpoint signs the audit chain's head and writes the signed
// checkpoints (broker.AuditCheckpoint) to sinks outside the store: an
// append-only JSON-lines file (which verification reads back), the log
// stream and a webhook.
//
// The Emitter is the periodic job: it signs the head whenever it has moved,
// and refuses to sign once the chain no longer holds the last checkpoint it
// signed (the chain was truncated or rewritten), so that a truncation is
// never covered by a fresh checkpoint. Keys are Ed25519, kept as PEM files:
// the private key PKCS #8 ("PRIVATE KEY", mode 0600), the public key PKIX
// ("PUBLIC KEY").
package checkpoint
