package slack_test

import (
	"testing"

	"github.com/stint-broker/stint/approvals/slack"
	"github.com/stint-broker/stint/broker/secrettest"
)

func TestConfigNeverRendered(t *testing.T) {
	cfg := slack.Config{BotToken: "xoxb-s3cret", SigningSecret: "signing-s3cret", AppToken: "xapp-s3cret", DefaultChannel: "#access"}
	secrettest.AssertHidden(t, cfg, "xoxb-s3cret", "signing-s3cret", "xapp-s3cret")
	secrettest.AssertHidden(t, &cfg, "xoxb-s3cret", "signing-s3cret", "xapp-s3cret")
}
