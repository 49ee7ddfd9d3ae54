package web

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/stint-broker/stint/broker"
)

// registerHealthRoutes adds the unauthenticated probes, and robots.txt.
func (s *Server) registerHealthRoutes(e *echo.Echo) {
	e.GET("/healthz", s.handleHealthz)
	e.GET("/readyz", s.handleReadyz)
	e.GET("/robots.txt", handleRobots)
}

// handleRobots handles "GET /robots.txt": nothing here is for crawlers.
func handleRobots(c echo.Context) error {
	return c.String(http.StatusOK, "User-agent: *\nDisallow: /\n")
}

// handleHealthz handles "GET /healthz": the process is up and serving.
func (s *Server) handleHealthz(c echo.Context) error {
	return c.JSON(http.StatusOK, statusResponse{Status: "ok"})
}

// readyTimeout bounds the readiness checks: a store or a Vault that
// accepts connections but does not answer (frozen, or cut off by a
// firewall that drops packets) makes /readyz answer 503 within it, before
// a load balancer's probe gives up on its own.
const readyTimeout = 3 * time.Second

// handleReadyz handles "GET /readyz": 200 when the store and Vault can be
// reached, otherwise 503 with a reason safe to show (the detail is logged).
// It asks them on every call, so that it turns 200 again as soon as they
// are back.
func (s *Server) handleReadyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), readyTimeout)
	defer cancel()
	if err := s.Leases.Ready(ctx); err != nil {
		s.Logger.WarnContext(ctx, "not ready", "request_id", requestID(c), "err", err)
		msg := "Stint cannot reach its store or Vault; try again shortly."
		if broker.ErrorCode(err) != broker.EINTERNAL {
			msg = broker.ErrorMessage(err)
		}
		return broker.Errorf(broker.EUNAVAILABLE, "%s", msg)
	}
	return c.JSON(http.StatusOK, statusResponse{Status: "ok"})
}

// statusResponse is the body of the probes' successful answers.
type statusResponse struct {
	Status string `json:"status"`
}
