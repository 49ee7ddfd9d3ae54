package web

import (
	"github.com/labstack/echo/v4"

	"github.com/stint-broker/stint/broker"
)

// registerSlackRoutes adds Slack's interactivity endpoint. It is public (no
// bearer token): the handler verifies Slack's v0 request signature over the
// raw body before it reads anything, and refuses stale timestamps. web only
// forwards the request; approvals/slack owns the protocol.
func (s *Server) registerSlackRoutes(e *echo.Echo) {
	e.POST("/slack/interactions", s.handleSlackInteractions)
}

// handleSlackInteractions handles "POST /slack/interactions" by passing the
// untouched request to SlackInteractions.
func (s *Server) handleSlackInteractions(c echo.Context) error {
	if s.SlackInteractions == nil {
		return broker.Errorf(broker.ENOTFOUND, "Slack is not enabled on this server.")
	}
	s.SlackInteractions.ServeHTTP(c.Response(), c.Request())
	return nil
}
