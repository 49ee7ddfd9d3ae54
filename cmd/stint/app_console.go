package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/users"
	"github.com/stint-broker/stint/web/console"
)

// openConsole wires the audit log, the metrics and the console into the
// HTTP server. Open calls it once the services exist.
func (m *Main) openConsole() {
	m.HTTP.Audit = m.DB
	m.HTTP.Metrics = m.Metrics
	m.HTTP.Leases = &instrumentedLeases{LeaseService: m.HTTP.Leases, metrics: m.Metrics}
	if h := m.Config.Metrics.TokenSHA256; h != "" {
		var sum [sha256.Size]byte
		b, _ := hex.DecodeString(h) // Validate checked it
		copy(sum[:], b)
		m.Metrics.TokenHash = &sum
	}
	m.Users = users.NewService(m.DB)
	if c := m.Config.Console; c.Enabled {
		m.Users.SessionTTL, m.Users.IdleTimeout = c.SessionTTL, c.IdleTimeout
		m.HTTP.Console = &console.Console{
			Reader:        m.DB,
			Users:         m.Users,
			SecureCookies: c.SecureCookies,
		}
		if m.checkpointFile != nil {
			// The console's verify checks the signed checkpoints too.
			m.HTTP.Console.Checkpoints, m.HTTP.Console.CheckpointKey = m.checkpointFile, m.checkpointKey
		}
		if o := c.OIDC; o != nil {
			m.HTTP.Console.OIDC = &console.OIDC{
				Issuer: o.Issuer, ClientID: o.ClientID, ClientSecret: os.Getenv(o.ClientSecretEnv),
				RedirectURL: o.RedirectURL, Scopes: o.Scopes,
			}
		}
	}
}

// runConsole records the configuration the server runs with, starts the
// metrics listener if one is configured, and sweeps expired console
// sessions every ten minutes until ctx ends.
func (m *Main) runConsole(ctx context.Context) error {
	if err := m.recordConfig(ctx, broker.AuditConfigLoaded); err != nil {
		return err
	}
	if addr := m.Config.Metrics.Listen; addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen for metrics on %s (metrics.listen): %w", addr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", m.Metrics.Handler())
		m.metricsHTTP = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
		// Not in m.wg: Close shuts this server down after waiting for the
		// group.
		srv := m.metricsHTTP
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				m.Logger.Error("metrics listener stopped", "err", err)
			}
		}()
		m.Logger.Info("metrics serving", "addr", ln.Addr().String())
	}
	m.wg.Go(func() {
		t := time.NewTicker(10 * time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if n, err := m.Users.DeleteExpiredSessions(ctx); err != nil {
					m.Logger.Error("sweep console sessions", "err", err)
				} else if n > 0 {
					m.Logger.Debug("swept console sessions", "sessions", n)
				}
			}
		}
	})
	return nil
}

// recordConfig records the configuration in the audit log: its SHA-256 and
// what it grants (roles), so that a reviewer sees every change of it. The
// configuration holds no secrets (only token hashes and variable names).
func (m *Main) recordConfig(ctx context.Context, kind string) error {
	b, err := yaml.Marshal(m.Config)
	if err != nil {
		return fmt.Errorf("encode config for the audit log: %w", err)
	}
	sum := sha256.Sum256(b)
	roles := make([]string, len(m.Config.Roles))
	for i, r := range m.Config.Roles {
		roles[i] = r.Name
	}
	return m.DB.Record(ctx, broker.AuditEvent{Kind: kind, Actor: broker.SystemActor(broker.JobServe).String(), Details: broker.AuditDetails(map[string]any{
		"config_sha256": hex.EncodeToString(sum[:]), "roles": roles, "listen": m.Config.Listen,
		"console": m.Config.Console.Enabled, "console_sso": m.Config.Console.Enabled && m.Config.Console.OIDC != nil, "version": Version,
	})})
}

// closeConsole stops the metrics listener.
func (m *Main) closeConsole() error {
	if m.metricsHTTP == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := m.metricsHTTP.Shutdown(ctx)
	m.metricsHTTP = nil
	return err
}
