package slack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/stint-broker/stint/approvals"
	"github.com/stint-broker/stint/broker"
)

var _ approvals.Notifier = (*Slack)(nil)

// Config says how to reach Slack. Tokens come from the environment through
// cmd; they are never logged.
type Config struct {
	// BotToken (xoxb-) posts and updates messages. Scopes: chat:write,
	// users:read, users:read.email, im:write.
	BotToken string
	// SigningSecret verifies interaction requests (HTTP transport).
	SigningSecret string
	// SocketMode receives interactions over a Socket Mode connection instead
	// of POST /slack/interactions; it needs AppToken (xapp-, connections:write).
	SocketMode bool
	AppToken   string
	// Channels maps role names to the channel their requests are posted to;
	// DefaultChannel takes the rest.
	Channels       map[string]string
	DefaultChannel string
	// SecurityChannel receives governance alerts (break-glass grants, risk
	// containment, overdue reviews); DefaultChannel when unset.
	SecurityChannel string
	// TeamID, if set, refuses interactions from any other workspace.
	TeamID string
	// APIURL overrides Slack's Web API base URL (tests); it ends in "/".
	APIURL string
	// Timeout bounds each Slack API call.
	Timeout time.Duration
}

// Approvals is what the adapter needs from the approval service: mapping
// Slack users to approvers and the one decision path.
type Approvals interface {
	ApproverByEmail(email string) *broker.Approver
	ApproverBySlackID(id string) *broker.Approver
	Decide(ctx context.Context, ap *broker.Approver, ans approvals.Answer) (*approvals.Outcome, error)
}

// Slack posts approval requests to channels, updates them on every change,
// DMs agents' owners, and turns Approve and Deny clicks into decisions. It
// implements approvals.Notifier and, for the HTTP transport, http.Handler.
type Slack struct {
	Config    Config
	Approvals Approvals
	Logger    *slog.Logger
	// Now is the clock that judges request timestamps; tests replace it.
	Now func() time.Time
	// Deliveries, when set, records each interaction (by its workspace,
	// user and trigger id) the first time any replica on the store receives it,
	// until expires, and returns ECONFLICT for a delivery seen before: a
	// click that reaches two replicas, or that Slack delivers again, is
	// handled once and answered once. Nil handles every delivery (deciding
	// is idempotent anyway; a repeat only tells the approver so).
	Deliveries func(ctx context.Context, id string, expires time.Time) error

	api *slack.Client

	mu    sync.Mutex
	users map[string]cachedEmail // Slack user id → email, from users.info
	ims   map[string]string      // owner email → Slack user id, from users.lookupByEmail

	socketOnce sync.Once
	socket     *socketmode.Client
	handler    *socketmode.SocketmodeHandler
	// async tracks ephemeral replies in flight, so Close can wait for them.
	async sync.WaitGroup
}

type cachedEmail struct {
	email string
	at    time.Time
}

// userCacheTTL bounds how long a users.info answer is trusted.
const userCacheTTL = 10 * time.Minute

// Open checks cfg and returns a Slack ready to post. It does not call Slack:
// an unreachable Slack must not stop Stint from starting.
func Open(cfg Config, ap Approvals, logger *slog.Logger) (*Slack, error) {
	switch {
	case cfg.BotToken == "":
		return nil, errors.New("slack: a bot token is required")
	case !cfg.SocketMode && cfg.SigningSecret == "":
		return nil, errors.New("slack: a signing secret is required to verify interactions (or use socket mode)")
	case cfg.SocketMode && cfg.AppToken == "":
		return nil, errors.New("slack: socket mode needs an app-level token (xapp-)")
	case cfg.DefaultChannel == "" && len(cfg.Channels) == 0:
		return nil, errors.New("slack: set default_channel or channels")
	case ap == nil:
		return nil, errors.New("slack: the approval service is required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts := []slack.Option{slack.OptionHTTPClient(&http.Client{Timeout: cfg.Timeout})}
	if cfg.APIURL != "" {
		opts = append(opts, slack.OptionAPIURL(cfg.APIURL))
	}
	if cfg.AppToken != "" {
		opts = append(opts, slack.OptionAppLevelToken(cfg.AppToken))
	}
	return &Slack{
		Config:    cfg,
		Approvals: ap,
		Logger:    logger,
		Now:       time.Now,
		api:       slack.New(cfg.BotToken, opts...),
		users:     map[string]cachedEmail{},
		ims:       map[string]string{},
	}, nil
}

// Close waits for replies still being sent.
func (s *Slack) Close() error {
	s.async.Wait()
	return nil
}

// channel returns where requests for role are posted.
func (s *Slack) channel(role string) string {
	if c, ok := s.Config.Channels[role]; ok && c != "" {
		return c
	}
	return s.Config.DefaultChannel
}

// PostRequest implements approvals.Notifier.
func (s *Slack) PostRequest(ctx context.Context, r *approvals.Request) (*broker.ApprovalMessage, error) {
	ch := s.channel(r.Lease.Role)
	if ch == "" {
		return nil, fmt.Errorf("no channel for role %s: set slack.channels or slack.default_channel", r.Lease.Role)
	}
	channel, ts, err := s.api.PostMessageContext(ctx, ch,
		slack.MsgOptionText(summary(r), false),
		slack.MsgOptionBlocks(requestBlocks(r)...))
	if err != nil {
		return nil, fmt.Errorf("chat.postMessage: %w", err)
	}
	s.Logger.Info("approval request posted to slack", "lease_id", r.Lease.ID, "channel", channel, "ts", ts)
	return &broker.ApprovalMessage{LeaseID: r.Lease.ID, Channel: channel, TS: ts}, nil
}

// UpdateRequest implements approvals.Notifier.
func (s *Slack) UpdateRequest(ctx context.Context, m *broker.ApprovalMessage, r *approvals.Request) error {
	if _, _, _, err := s.api.UpdateMessageContext(ctx, m.Channel, m.TS,
		slack.MsgOptionText(summary(r), false),
		slack.MsgOptionBlocks(requestBlocks(r)...)); err != nil {
		return fmt.Errorf("chat.update: %w", err)
	}
	return nil
}

// NotifyOwner implements approvals.Notifier: a direct message to the agent's
// owner, found by a configured approver's Slack id or users.lookupByEmail.
// An owner Slack does not know is logged and skipped: retrying cannot help.
func (s *Slack) NotifyOwner(ctx context.Context, r *approvals.Request) error {
	owner := r.Agent.Owner
	id, err := s.ownerID(ctx, owner)
	if isPermanent(err) {
		s.Logger.Warn("agent owner not found in slack; not notified", "lease_id", r.Lease.ID, "owner", owner, "err", err)
		return nil
	} else if err != nil {
		return fmt.Errorf("users.lookupByEmail: %w", err)
	}
	if _, _, err := s.api.PostMessageContext(ctx, id, slack.MsgOptionText(ownerText(r), false)); err != nil {
		if isPermanent(err) {
			s.Logger.Warn("cannot message agent owner in slack", "lease_id", r.Lease.ID, "owner", owner, "err", err)
			return nil
		}
		return fmt.Errorf("chat.postMessage to owner: %w", err)
	}
	return nil
}

// ownerID returns the Slack user id of the person with email.
func (s *Slack) ownerID(ctx context.Context, email string) (string, error) {
	if ap := s.Approvals.ApproverByEmail(email); ap != nil && ap.SlackUserID != "" {
		return ap.SlackUserID, nil
	}
	key := strings.ToLower(email)
	s.mu.Lock()
	id, ok := s.ims[key]
	s.mu.Unlock()
	if ok {
		return id, nil
	}
	u, err := s.api.GetUserByEmailContext(ctx, email)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.ims[key] = u.ID
	s.mu.Unlock()
	return u.ID, nil
}

// isPermanent reports whether a Slack API error will not go away by retrying
// (an unknown user, a channel the bot cannot post to).
func isPermanent(err error) bool {
	var se slack.SlackErrorResponse
	if !errors.As(err, &se) {
		return false
	}
	switch se.Err {
	case "users_not_found", "user_not_found", "cannot_dm_bot", "user_disabled", "not_allowed_token_type":
		return true
	}
	return false
}

// approver maps a Slack user to a configured approver: by slack_user_id, or
// by the email users.info reports. An email match is refused if that
// approver is pinned to another Slack user id.
func (s *Slack) approver(ctx context.Context, userID string) (*broker.Approver, error) {
	if ap := s.Approvals.ApproverBySlackID(userID); ap != nil {
		return ap, nil
	}
	s.mu.Lock()
	c, ok := s.users[userID]
	s.mu.Unlock()
	if !ok || s.Now().Sub(c.at) > userCacheTTL {
		u, err := s.api.GetUserInfoContext(ctx, userID)
		if err != nil {
			return nil, fmt.Errorf("users.info %s: %w", userID, err)
		}
		c = cachedEmail{email: u.Profile.Email, at: s.Now()}
		s.mu.Lock()
		s.users[userID] = c
		s.mu.Unlock()
	}
	ap := s.Approvals.ApproverByEmail(c.email)
	if ap == nil || c.email == "" || (ap.SlackUserID != "" && ap.SlackUserID != userID) {
		return nil, nil
	}
	return ap, nil
}
