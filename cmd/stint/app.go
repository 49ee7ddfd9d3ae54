package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/stint-broker/stint/approvals"
	"github.com/stint-broker/stint/approvals/governance"
	"github.com/stint-broker/stint/approvals/policy"
	slackapprovals "github.com/stint-broker/stint/approvals/slack"
	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/checkpoint"
	"github.com/stint-broker/stint/broker/identity"
	"github.com/stint-broker/stint/broker/users"
	"github.com/stint-broker/stint/leases"
	"github.com/stint-broker/stint/leases/vault"
	"github.com/stint-broker/stint/web"
)

// Main is a wired Stint: store, Vault issuer, services, HTTP server and jobs.
// End-to-end tests build it the same way the binary does.
type Main struct {
	Config Config
	Logger *slog.Logger
	// Getenv reads secrets named by the config; tests replace it.
	Getenv func(string) string
	// Now is the one clock of every service Open builds (useClock): lease
	// windows, key and token lifetimes, approval deadlines, risk buckets,
	// review deadlines, console sessions, Slack's request timestamps.
	// NewMain sets time.Now; tests replace it before Open.
	Now func() time.Time
	// VaultOptional lets Open proceed without Stint's Vault token, for
	// operator commands that mostly touch the store; calls that need Vault
	// then fail naming the variable to set. Such commands also skip audit
	// checkpoints (app_audit.go).
	VaultOptional bool
	// vaultMissing is set when Open went on without Vault (VaultOptional).
	vaultMissing bool
	// ReplicaID names this replica in logs, metrics and the claims it
	// holds; Open fills it in (replica.go) unless set.
	ReplicaID string
	// SlackOptional lets Open proceed without Slack when slack.enabled but
	// its tokens are not in the environment, for operator commands: they
	// record to the store, and the server's outbox tells Slack. Approvers
	// use `stint approvals` exactly when Slack is not at hand.
	SlackOptional bool

	DB     Store
	Issuer leases.Issuer
	Leases *leases.Service
	// Policy decides requests when policy.files is set (nil: roles'
	// auto_approve decides); SIGHUP reloads it.
	Policy *policy.Engine
	Agents *identity.Service
	// Users logs console users in and keeps their sessions
	// (app_console.go).
	Users *users.Service
	HTTP  *web.Server
	Cron  *cron.Cron

	// Metrics are the Prometheus metrics; the Vault issuer and the HTTP
	// lease service are instrumented with them (app_console.go).
	Metrics     *web.Metrics
	metricsHTTP *http.Server

	// Approvals runs human approval; Slack is set when slack.enabled
	// (app_approvals.go).
	Approvals *approvals.Service
	Slack     *slackapprovals.Slack

	// Risk scores requests, and the lease service contains the agents it
	// says to (nil with risk.disabled); Reviews runs access reviews and
	// hears of grants; Alerts delivers governance alerts
	// (app_governance.go).
	Risk    *governance.Risk
	Reviews *governance.Reviews
	Alerts  *governance.Alerts

	// Checkpoints signs the audit chain's head (audit.checkpoints.key_file;
	// nil without it); checkpointFile and checkpointKey are what
	// verification reads (app_audit.go).
	Checkpoints    *checkpoint.Emitter
	checkpointFile *checkpoint.File
	checkpointKey  ed25519.PublicKey

	wg sync.WaitGroup
}

// NewMain returns a Main for cfg that logs to logger.
func NewMain(cfg Config, logger *slog.Logger) *Main {
	return &Main{Config: cfg, Logger: logger, Getenv: os.Getenv, Now: time.Now}
}

// Open opens the store and Vault and builds the services. It starts nothing.
func (m *Main) Open(ctx context.Context) error {
	var err error
	m.ReplicaID = m.replicaID()
	if err := checkReplicaID(m.ReplicaID); err != nil {
		return fmt.Errorf("replica id: %w", err)
	}
	m.Logger = m.Logger.With("replica", m.ReplicaID)
	if m.DB, err = openConfiguredStore(ctx, m.Config.Store, m.Getenv); err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	warnClockSkew(m.DB, m.Logger)
	if m.Issuer == nil {
		token := m.Getenv(m.Config.Vault.TokenEnv)
		switch {
		case token == "" && m.VaultOptional:
			m.Issuer, m.vaultMissing = missingVault{env: m.Config.Vault.TokenEnv}, true
		case token == "":
			return fmt.Errorf("open vault: environment variable %s (vault.token_env) is empty", m.Config.Vault.TokenEnv)
		default:
			iss, err := vault.Open(vault.Config{Address: m.Config.Vault.Address, Token: token, Timeout: m.Config.Vault.Timeout})
			if err != nil {
				return fmt.Errorf("open vault: %w", err)
			}
			m.Issuer = iss
		}
	}
	if m.Now == nil {
		m.Now = time.Now
	}
	m.Metrics = web.NewReplicaMetrics(m.DB, m.Now, m.ReplicaID)
	observeCommits(m.DB, m.Metrics.ObserveStoreCommit)
	m.Issuer = &instrumentedIssuer{next: m.Issuer, metrics: m.Metrics}

	admins, err := m.adminTokens()
	if err != nil {
		return err
	}
	m.Agents = identity.NewService(m.DB, admins)
	m.Agents.KeyTTL, m.Agents.KeyMaxTTL = m.Config.Keys.DefaultTTL, m.Config.Keys.MaxTTL

	m.Leases = leases.NewService(m.DB, m.Issuer, m.Config.Roles, m.Logger)
	m.Leases.Credentials = m.Agents
	lc := m.Config.Leases
	m.Leases.RetryBase, m.Leases.RetryMax = lc.RetryBase, lc.RetryMax
	m.Leases.IssuingTimeout, m.Leases.OrphanGrace = lc.IssuingTimeout, lc.OrphanGrace
	if lc.ClaimTimeout > 0 {
		m.Leases.ClaimTimeout = lc.ClaimTimeout
	}
	if m.Config.Policy.Enabled() {
		if m.Policy, err = m.Config.Policy.Open(m.Logger); err != nil {
			return fmt.Errorf("load policy: %w", err)
		}
		m.Leases.Decider = m.Policy
	}

	m.HTTP = web.NewServer()
	m.HTTP.Leases = m.Leases
	m.HTTP.Agents = m.Agents
	m.HTTP.Logger = m.Logger
	if err := m.openIdentity(); err != nil {
		return err
	}
	m.openMCP()
	if err := m.openApprovals(); err != nil {
		return err
	}
	if err := m.openGovernance(); err != nil {
		return err
	}
	if err := m.openCheckpoints(); err != nil {
		return err
	}
	m.openConsole()
	m.useClock()
	return nil
}

// useClock gives every service Open built the one clock, m.Now, so that
// they all agree on what time it is (and a test moves them all at once).
func (m *Main) useClock() {
	now := m.Now
	m.Agents.Now, m.Leases.Now, m.HTTP.Now, m.Users.Now = now, now, now, now
	if m.Policy != nil {
		m.Policy.Now = now
	}
	if m.Approvals != nil {
		m.Approvals.Now = now
	}
	if m.Slack != nil {
		m.Slack.Now = now
	}
	if m.Risk != nil {
		m.Risk.Now = now
	}
	if m.Reviews != nil {
		m.Reviews.Now = now
	}
}

func (m *Main) adminTokens() ([]identity.AdminToken, error) {
	var out []identity.AdminToken
	if name := m.Config.Admin.TokenEnv; name != "" {
		if tok := m.Getenv(name); tok != "" {
			out = append(out, identity.NewAdminToken("env", tok))
		}
	}
	for _, t := range m.Config.Admin.Tokens {
		at, err := identity.ParseAdminTokenHash(t.Name, t.SHA256)
		if err != nil {
			return nil, err
		}
		out = append(out, at)
	}
	return out, nil
}

// Listen opens the HTTP listener unless it is open already. Run calls it;
// callers that need the address before Run (tests) call it first.
func (m *Main) Listen() error {
	if m.HTTP.Addr() != nil {
		return nil
	}
	if err := m.HTTP.Open(m.Config.Listen); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return nil
}

// Run serves HTTP, drives expiry and schedules housekeeping until ctx ends.
func (m *Main) Run(ctx context.Context) error {
	if err := m.Listen(); err != nil {
		return err
	}
	m.Logger.Info("stint serving", "addr", m.HTTP.URL(), "roles", len(m.Config.Roles), "vault", m.Config.Vault.Address, "store", m.Config.Store.Describe())
	if err := m.runConsole(ctx); err != nil {
		return err
	}
	m.startCheckpoints(ctx)

	m.runApprovals(ctx)
	m.wg.Go(func() {
		if err := m.Leases.Run(ctx); err != nil {
			m.Logger.Error("expiry loop stopped", "err", err)
		}
	})
	if m.Policy != nil {
		m.wg.Go(func() { m.reloadOnHangup(ctx) })
	}
	var err error
	if m.Cron, err = m.schedule(ctx); err != nil {
		return err
	}
	m.Cron.Start()
	<-ctx.Done()
	m.Logger.Info("stint stopping: finishing requests in flight and background work")
	return nil
}

// Close stops the server and jobs and closes the store.
func (m *Main) Close() error {
	var errs []error
	if m.HTTP != nil {
		shutdown, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		errs = append(errs, m.HTTP.Close(shutdown))
		cancel()
	}
	if m.Cron != nil {
		<-m.Cron.Stop().Done()
	}
	m.wg.Wait()
	m.releaseClaims()
	m.finalCheckpoint()
	errs = append(errs, m.closeApprovals())
	if c, ok := m.Issuer.(interface{ Close() error }); ok {
		errs = append(errs, c.Close())
	}
	errs = append(errs, m.closeConsole())
	if m.DB != nil {
		errs = append(errs, m.DB.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if m.Cron != nil { // it ran: say it is done
		m.Logger.Info("stint stopped")
	}
	return nil
}

// adminContext is the context for operator commands run on the server host:
// whoever can read the config and the store is an admin.
func adminContext(ctx context.Context) context.Context {
	name := "cli"
	if u := os.Getenv("USER"); u != "" {
		name = "cli:" + u
	}
	return broker.NewContextWithActor(ctx, broker.Actor{Kind: broker.ActorAdmin, Name: name, AuthMethod: "local"})
}
