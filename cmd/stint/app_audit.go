package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/stint-broker/stint/broker/checkpoint"
)

// openCheckpoints loads the checkpoint keys (audit.checkpoints) and builds
// the emitter the server runs as a job. Operator commands (VaultOptional)
// skip it: they neither run jobs nor serve the console, and an unreadable
// key must not stop, say, a kill switch.
func (m *Main) openCheckpoints() error {
	cc := m.Config.Audit.Checkpoints
	if m.VaultOptional || !cc.Verifies() {
		return nil
	}
	pub, err := cc.PublicKey()
	if err != nil {
		return err
	}
	m.checkpointFile, m.checkpointKey = &checkpoint.File{Path: cc.File}, pub
	if !cc.Signs() {
		return nil
	}
	key, err := checkpoint.LoadPrivateKey(cc.KeyFile)
	if err != nil {
		return fmt.Errorf("audit.checkpoints.key_file: %w", err)
	}
	if !key.Public().(ed25519.PublicKey).Equal(pub) {
		return errors.New("audit.checkpoints: the public key (public_key_file, or key_file's .pub) is not the public half of key_file")
	}
	sinks := []checkpoint.Sink{m.checkpointFile}
	if cc.Log {
		sinks = append(sinks, &checkpoint.Log{Logger: m.Logger})
	}
	if w := cc.Webhook; w != nil {
		hook := &checkpoint.Webhook{URL: w.URL}
		if w.TokenEnv != "" {
			hook.Token = m.Getenv(w.TokenEnv)
		}
		sinks = append(sinks, hook)
	}
	m.Checkpoints = checkpoint.NewEmitter(m.DB, key, sinks...)
	return nil
}

// startCheckpoints resumes from the newest checkpoint in the file (so that
// a restart does not forget what was checkpointed) and writes the first
// checkpoint. Run calls it once the configuration is recorded.
func (m *Main) startCheckpoints(ctx context.Context) {
	if m.Checkpoints == nil {
		return
	}
	if err := m.Checkpoints.Resume(ctx, m.checkpointFile); err != nil {
		m.Logger.Error("audit checkpoints: the checkpoint file cannot be read; verification fails until it is repaired",
			"file", m.checkpointFile.Path, "err", err)
	}
	m.checkpoint(ctx)
}

// checkpoint is the checkpoint job: sign the chain's head if it moved.
func (m *Main) checkpoint(ctx context.Context) {
	cp, err := m.Checkpoints.Emit(ctx)
	switch {
	case errors.Is(err, checkpoint.ErrDiverged):
		// Someone deleted or rewrote audit events: say so loudly, every run.
		m.Logger.Error("AUDIT CHAIN TRUNCATED OR REWRITTEN: checkpoint refused; run stint audit verify", "err", err)
	case err != nil:
		m.Logger.Error("audit checkpoint", "err", err)
	case cp != nil:
		m.Logger.Debug("audit checkpoint written", "seq", cp.Seq)
	}
}

// finalCheckpoint signs the head once more at shutdown, after the HTTP
// server and the jobs have stopped.
func (m *Main) finalCheckpoint() {
	if m.Checkpoints == nil || m.Cron == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	m.checkpoint(ctx)
}
