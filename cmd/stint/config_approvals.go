package main

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// ApprovalConfig times the human-approval flow.
type ApprovalConfig struct {
	// PendingTimeout is how long a lease waits for its approvals before it
	// ends timed_out (default 1h).
	PendingTimeout time.Duration `yaml:"pending_timeout"`
	// ActivateWithin is how long an approved lease waits for its agent to
	// activate it before it ends lapsed (default 15m). The task window starts
	// at activation.
	ActivateWithin time.Duration `yaml:"activate_within"`
	// RetryBase and RetryMax bound the backoff of the notification outbox
	// (Slack messages are retried until delivered; defaults 2s and 5m).
	RetryBase time.Duration `yaml:"retry_base"`
	RetryMax  time.Duration `yaml:"retry_max"`
	// NoticeRetention is how long delivered outbox notices are kept before
	// an hourly job deletes them (default 720h, 30 days; 0 keeps them).
	// Undelivered notices are never deleted, and the lease's history and
	// the audit log keep every change either way.
	NoticeRetention time.Duration `yaml:"notice_retention"`
}

// SlackConfig connects approvals to Slack. Tokens come from the environment
// variables it names, never from the file.
type SlackConfig struct {
	// Enabled turns Slack on; without it approvers use `stint approvals` or
	// the API.
	Enabled bool `yaml:"enabled"`
	// BotTokenEnv names the variable holding the bot token (xoxb-; scopes
	// chat:write, users:read, users:read.email, im:write). Default
	// SLACK_BOT_TOKEN.
	BotTokenEnv string `yaml:"bot_token_env"`
	// SigningSecretEnv names the variable holding the app's signing secret,
	// which verifies POST /slack/interactions. Default SLACK_SIGNING_SECRET.
	SigningSecretEnv string `yaml:"signing_secret_env"`
	// SocketMode receives interactions over a Socket Mode connection instead
	// of POST /slack/interactions, for installs without a public URL.
	SocketMode bool `yaml:"socket_mode"`
	// AppTokenEnv names the variable holding the app-level token (xapp-,
	// connections:write) that Socket Mode needs. Default SLACK_APP_TOKEN.
	AppTokenEnv string `yaml:"app_token_env"`
	// Channels maps role names to the channel (id or name) their requests
	// are posted to; DefaultChannel takes every other role.
	Channels       map[string]string `yaml:"channels"`
	DefaultChannel string            `yaml:"default_channel"`
	// SecurityChannel receives governance alerts (break-glass, risk
	// containment, overdue reviews); default_channel when unset.
	SecurityChannel string `yaml:"security_channel"`
	// TeamID, if set, refuses interactions from other workspaces.
	TeamID string `yaml:"team_id"`
	// APIURL overrides Slack's Web API URL (for tests; must end in "/").
	APIURL string `yaml:"api_url"`
	// Timeout bounds each Slack API call (default 10s).
	Timeout time.Duration `yaml:"timeout"`
}

func defaultApprovalConfig() ApprovalConfig {
	return ApprovalConfig{PendingTimeout: time.Hour, ActivateWithin: 15 * time.Minute, RetryBase: 2 * time.Second, RetryMax: 5 * time.Minute,
		NoticeRetention: 30 * 24 * time.Hour}
}

func defaultSlackConfig() SlackConfig {
	return SlackConfig{
		BotTokenEnv: "SLACK_BOT_TOKEN", SigningSecretEnv: "SLACK_SIGNING_SECRET", AppTokenEnv: "SLACK_APP_TOKEN",
		Timeout: 10 * time.Second,
	}
}

// validateApprovals checks the approvers, approval and slack sections.
func (c *Config) validateApprovals() error {
	a := c.Approval
	switch {
	case a.PendingTimeout <= 0:
		return errors.New("approval.pending_timeout must be positive")
	case a.ActivateWithin <= 0:
		return errors.New("approval.activate_within must be positive")
	case a.RetryBase <= 0 || a.RetryMax < a.RetryBase:
		return errors.New("approval.retry_base must be positive and at most approval.retry_max")
	case a.NoticeRetention < 0:
		return errors.New("approval.notice_retention must not be negative (0 keeps delivered notices)")
	}
	for i, ap := range c.Approvers {
		if ap == nil {
			return fmt.Errorf("approvers[%d] is empty", i)
		}
	}
	s := c.Slack
	if !s.Enabled {
		return nil
	}
	switch {
	case s.BotTokenEnv == "":
		return errors.New("slack.bot_token_env is required when slack.enabled")
	case !s.SocketMode && s.SigningSecretEnv == "":
		return errors.New("slack.signing_secret_env is required unless slack.socket_mode")
	case s.SocketMode && s.AppTokenEnv == "":
		return errors.New("slack.app_token_env is required with slack.socket_mode")
	case s.DefaultChannel == "" && len(s.Channels) == 0:
		return errors.New("slack: set default_channel or channels")
	case s.APIURL != "" && !strings.HasSuffix(s.APIURL, "/"):
		return errors.New("slack.api_url must end in /")
	case s.Timeout <= 0:
		return errors.New("slack.timeout must be positive")
	}
	roles := map[string]bool{}
	for _, r := range c.Roles {
		if r != nil {
			roles[r.Name] = true
		}
	}
	for role := range s.Channels {
		if !roles[role] {
			return fmt.Errorf("slack.channels: role %q is not defined", role)
		}
	}
	return nil
}
