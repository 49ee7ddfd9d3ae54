package slack

import (
	"fmt"
	"log/slog"

	"github.com/stint-broker/stint/broker"
)

// configFields is Config without its methods, for Format.
type configFields Config

// Format implements fmt.Formatter: every verb renders the configuration
// with the bot token, app token and signing secret redacted.
func (c Config) Format(f fmt.State, verb rune) {
	c.BotToken, c.AppToken = broker.RedactString(c.BotToken), broker.RedactString(c.AppToken)
	c.SigningSecret = broker.RedactString(c.SigningSecret)
	fmt.Fprintf(f, fmt.FormatString(f, verb), configFields(c))
}

// LogValue implements slog.LogValuer without the tokens and the signing
// secret.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("bot_token", broker.RedactString(c.BotToken)),
		slog.String("signing_secret", broker.RedactString(c.SigningSecret)),
		slog.Bool("socket_mode", c.SocketMode),
		slog.String("app_token", broker.RedactString(c.AppToken)),
		slog.String("default_channel", c.DefaultChannel),
		slog.String("security_channel", c.SecurityChannel),
		slog.String("team_id", c.TeamID),
		slog.String("api_url", c.APIURL),
		slog.Duration("timeout", c.Timeout),
	)
}
