package main

import (
	"context"
	"fmt"
	"time"

	"github.com/stint-broker/stint/approvals"
	slackapprovals "github.com/stint-broker/stint/approvals/slack"
	"github.com/stint-broker/stint/broker"
)

// openApprovals builds the approval service and, when enabled, Slack, and
// wires them to the lease service and the HTTP API: leases and approvals
// meet only here. Approvals hand checked answers to the lease service
// (Verdicts), the only writer of lease state; the lease service tells
// approvals of every change (OnChange).
func (m *Main) openApprovals() error {
	svc, err := approvals.NewService(m.DB, m.Config.Approvers, m.Config.Roles, m.Logger)
	if err != nil {
		return fmt.Errorf("approvers: %w", err)
	}
	ac := m.Config.Approval
	svc.RetryBase, svc.RetryMax = ac.RetryBase, ac.RetryMax
	m.Leases.PendingTimeout, m.Leases.ActivateWithin = ac.PendingTimeout, ac.ActivateWithin
	m.Leases.OnChange = svc.LeaseChanged
	svc.Verdicts = m.Leases
	m.Approvals = svc

	if sc := m.Config.Slack; sc.Enabled && !m.slackSkipped() {
		cfg := slackapprovals.Config{
			BotToken:        m.Getenv(sc.BotTokenEnv),
			SocketMode:      sc.SocketMode,
			Channels:        sc.Channels,
			DefaultChannel:  sc.DefaultChannel,
			SecurityChannel: sc.SecurityChannel,
			TeamID:          sc.TeamID,
			APIURL:          sc.APIURL,
			Timeout:         sc.Timeout,
		}
		if sc.SocketMode {
			cfg.AppToken = m.Getenv(sc.AppTokenEnv)
		} else {
			cfg.SigningSecret = m.Getenv(sc.SigningSecretEnv)
		}
		sl, err := slackapprovals.Open(cfg, svc, m.Logger)
		if err != nil {
			return fmt.Errorf("open slack (tokens from %s, %s, %s): %w", sc.BotTokenEnv, sc.SigningSecretEnv, sc.AppTokenEnv, err)
		}
		// Deliveries share the store's replay cache of one-time ids with
		// token exchange, under an issuer reserved for them (configuration
		// refuses it as a trusted issuer): every replica sees each
		// interaction once.
		sl.Deliveries = func(ctx context.Context, id string, expires time.Time) error {
			return m.DB.UseSubjectToken(ctx, slackDeliveryIssuer, id, expires, time.Now())
		}
		svc.Notifier = sl
		m.Slack = sl
		if !sc.SocketMode {
			m.HTTP.SlackInteractions = sl
		}
	}
	m.HTTP.Approvals = svc
	// The server authenticates through HTTP.Auth (openIdentity sets it to
	// the identity service); approver tokens must be known there, or they
	// are refused on every route.
	var next broker.Authenticator = m.Agents
	if m.HTTP.Auth != nil {
		next = m.HTTP.Auth
	}
	m.HTTP.Auth = approverAuthenticator{Authenticator: next, approvals: svc}
	return nil
}

// slackSkipped reports whether Open goes on without Slack: the command may
// (SlackOptional) and a token Slack needs is not in the environment.
func (m *Main) slackSkipped() bool {
	sc := m.Config.Slack
	if !m.SlackOptional {
		return false
	}
	missing := m.Getenv(sc.BotTokenEnv) == ""
	if sc.SocketMode {
		missing = missing || m.Getenv(sc.AppTokenEnv) == ""
	} else {
		missing = missing || m.Getenv(sc.SigningSecretEnv) == ""
	}
	if missing {
		m.Logger.Debug("slack tokens not set; this command runs without slack", "bot_token_env", sc.BotTokenEnv)
	}
	return missing
}

// runApprovals starts the outbox and, in Socket Mode, the Slack connection.
func (m *Main) runApprovals(ctx context.Context) {
	m.wg.Go(func() {
		if err := m.Approvals.Run(ctx); err != nil {
			m.Logger.Error("approval outbox stopped", "err", err)
		}
	})
	if m.Slack != nil && m.Config.Slack.SocketMode {
		m.wg.Go(func() {
			if err := m.Slack.RunSocketMode(ctx); err != nil {
				m.Logger.Error("slack socket mode stopped", "err", err)
			}
		})
	}
}

// closeApprovals waits for Slack replies in flight.
func (m *Main) closeApprovals() error {
	if m.Slack != nil {
		return m.Slack.Close()
	}
	return nil
}

// approverAuthenticator lets approver tokens authenticate on the API next
// to agent keys, admin tokens, access tokens and client certificates:
// approvers are configured, not stored.
type approverAuthenticator struct {
	broker.Authenticator
	approvals *approvals.Service
}

// AuthenticateRequest implements broker.Authenticator: a bearer secret that
// is an approver token makes an approver; anything else goes to the
// identity service. A request for a protected resource (the MCP endpoint)
// takes only access tokens issued for it, never an approver token.
func (a approverAuthenticator) AuthenticateRequest(ctx context.Context, req broker.AuthRequest) (broker.Actor, error) {
	if req.Bearer != "" && req.Resource == "" {
		if actor, ok := a.approvals.AuthenticateApprover(req.Bearer); ok {
			actor.SourceIP = req.SourceIP
			return actor, nil
		}
	}
	return a.Authenticator.AuthenticateRequest(ctx, req)
}

// slackDeliveryIssuer is the issuer under which Slack interactions are
// recorded in the store's replay cache of one-time ids.
const slackDeliveryIssuer = "slack:interaction"
