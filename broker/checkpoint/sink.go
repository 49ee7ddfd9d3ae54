package checkpoint

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/stint-broker/stint/broker"
)

// Sink is where signed checkpoints go.
type Sink interface {
	// WriteCheckpoint records cp outside the store.
	WriteCheckpoint(ctx context.Context, cp *broker.AuditCheckpoint) error
}

// Log writes each checkpoint to the log stream as an info record
// "audit checkpoint" whose "checkpoint" group holds the checkpoint's JSON
// fields, so that a log collector off the host keeps them and a file for
// verification can be rebuilt from it (with the JSON log format:
// jq -c 'select(.msg=="audit checkpoint") | .checkpoint').
type Log struct {
	Logger *slog.Logger
}

// WriteCheckpoint implements Sink.
func (l *Log) WriteCheckpoint(ctx context.Context, cp *broker.AuditCheckpoint) error {
	l.Logger.LogAttrs(ctx, slog.LevelInfo, "audit checkpoint", slog.Any("checkpoint", cp))
	return nil
}

// Webhook POSTs each checkpoint as a JSON object (the checkpoint file's
// line) to URL; any status but 2xx is an error. The checkpoint is signed, so
// the receiver can verify it with the public key; Token, if set, is sent as
// "Authorization: Bearer" so that it can also tell Stint from others.
type Webhook struct {
	URL   string
	Token string
	// Client defaults to one with a 10-second timeout.
	Client *http.Client
}

// WriteCheckpoint implements Sink.
func (w *Webhook) WriteCheckpoint(ctx context.Context, cp *broker.AuditCheckpoint) error {
	body, err := json.Marshal(cp)
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("checkpoint webhook: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if w.Token != "" {
		req.Header.Set("Authorization", "Bearer "+w.Token)
	}
	hc := w.Client
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("checkpoint webhook: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("checkpoint webhook %s answered %s", req.URL.Redacted(), resp.Status)
	}
	return nil
}
