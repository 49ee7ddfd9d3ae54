package slack

import (
	"context"
	"fmt"
	"strings"

	"github.com/slack-go/slack"

	"github.com/stint-broker/stint/broker"
)

var _ broker.Alerter = (*Slack)(nil)

// Alert implements broker.Alerter: security alerts (break-glass grants, risk
// containment, overdue reviews) go to Config.SecurityChannel (the default
// channel when unset); owner alerts go to the agent owner as a direct
// message. An owner Slack does not know is logged and skipped, since retrying
// cannot help; governance has already logged and audited the alert.
func (s *Slack) Alert(ctx context.Context, a broker.Alert) error {
	text, blocks := alertMessage(a)
	target := s.Config.SecurityChannel
	if target == "" {
		target = s.Config.DefaultChannel
	}
	if a.Audience == broker.AudienceOwner && a.Owner != "" {
		id, err := s.ownerID(ctx, a.Owner)
		if isPermanent(err) {
			s.Logger.Warn("alert owner not found in slack; not notified", "kind", a.Kind, "owner", a.Owner, "err", err)
			return nil
		} else if err != nil {
			return fmt.Errorf("users.lookupByEmail: %w", err)
		}
		target = id
	}
	if target == "" {
		return fmt.Errorf("slack alert %s: no security_channel or default_channel configured", a.Kind)
	}
	if _, _, err := s.api.PostMessageContext(ctx, target, slack.MsgOptionText(text, false), slack.MsgOptionBlocks(blocks...)); err != nil {
		return fmt.Errorf("chat.postMessage alert: %w", err)
	}
	return nil
}

// alertMessage renders an alert: a loud header, the message, and the facts a
// responder needs first (agent, role, lease, risk parts).
func alertMessage(a broker.Alert) (string, []slack.Block) {
	icon := ":warning:"
	if a.Severity == "critical" || a.Audience == broker.AudienceSecurity {
		icon = ":rotating_light:"
	}
	title := fmt.Sprintf("%s Stint alert: %s", icon, strings.ReplaceAll(a.Kind, "_", " "))
	var facts []*slack.TextBlockObject
	add := func(label, v string) {
		if v != "" {
			facts = append(facts, slack.NewTextBlockObject(slack.MarkdownType, fmt.Sprintf("*%s*\n%s", label, escape(v)), false, false))
		}
	}
	add("Severity", a.Severity)
	add("Agent", a.Agent)
	add("Owner", a.Owner)
	add("Role", a.Role)
	add("Lease", a.LeaseID)
	add("Review", a.ReviewID)
	if a.Risk != nil {
		add("Risk score", fmt.Sprint(a.Risk.Score))
	}
	blocks := []slack.Block{
		slack.NewHeaderBlock(slack.NewTextBlockObject(slack.PlainTextType, truncate(title, 150), true, false)),
		slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, escape(a.Message), false, false), nil, nil),
	}
	if len(facts) > 0 {
		blocks = append(blocks, slack.NewSectionBlock(nil, facts[:min(len(facts), 10)], nil))
	}
	return broker.EscapeControl(title + ": " + a.Message), blocks
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
