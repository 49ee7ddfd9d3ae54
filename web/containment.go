package web

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/stint-broker/stint/broker"
)

// Waits of the containment endpoints: how long an answer waits for Vault to
// confirm every revocation before it answers 202 with the progress.
const (
	defaultContainmentWait = 5 * time.Second
)

// handleContainmentView handles "GET /v1/containments/:id" (admin): a
// containment's progress. With ?wait=D (at most 10s) it waits for the
// containment to complete. 200 once every lease ended, 202 while some wait
// for Vault.
func (s *Server) handleContainmentView(c echo.Context) error {
	wait := time.Duration(0)
	if c.QueryParam("wait") != "" {
		var err error
		if wait, err = containmentWait(c); err != nil {
			return err
		}
	}
	cnt, err := s.Leases.WaitContainment(c.Request().Context(), c.Param("id"), wait)
	if err != nil {
		return err
	}
	return c.JSON(containmentStatus(c, cnt), newContainmentResponse(cnt))
}

// handleAgentContainmentIndex handles "GET /v1/agents/:id/containments"
// (admin): the agent's containments, newest first, with their progress.
func (s *Server) handleAgentContainmentIndex(c echo.Context) error {
	ctx := c.Request().Context()
	agent, err := s.Agents.FindAgent(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	cs, err := s.Leases.FindContainments(ctx, agent.ID, 100)
	if err != nil {
		return err
	}
	resp := containmentsEnvelope{Containments: make([]containmentResponse, len(cs))}
	for i, cnt := range cs {
		resp.Containments[i] = newContainmentResponse(cnt)
	}
	return c.JSON(http.StatusOK, resp)
}

// containmentsEnvelope wraps a list of containments.
type containmentsEnvelope struct {
	Containments []containmentResponse `json:"containments"`
}

// containmentResponse is the JSON shape of a containment: what was pulled,
// by whom and why, and how far the revocation queue got.
type containmentResponse struct {
	ID         string                     `json:"id"`
	AgentID    string                     `json:"agent_id"`
	Agent      string                     `json:"agent"`
	AgentState broker.AgentState          `json:"agent_state,omitempty"`
	Role       string                     `json:"role,omitempty"`
	Actor      string                     `json:"actor"`
	Reason     string                     `json:"reason"`
	CreatedAt  time.Time                  `json:"created_at"`
	Done       bool                       `json:"done"`
	Progress   broker.ContainmentProgress `json:"progress"`
	// Leases and Self are where to follow it: the leases it ends, and
	// this containment.
	Leases string `json:"leases_url"`
	Self   string `json:"url"`
}

func newContainmentResponse(c *broker.Containment) containmentResponse {
	return containmentResponse{
		ID: c.ID, AgentID: c.AgentID, Agent: c.Agent, AgentState: c.AgentState, Role: c.Role,
		Actor: c.Actor, Reason: c.Reason, CreatedAt: c.CreatedAt.UTC(),
		Done: c.Progress.Done(), Progress: c.Progress,
		Leases: "/v1/leases?containment=" + c.ID,
		Self:   "/v1/containments/" + c.ID,
	}
}

// containmentWait reads ?wait for the containment endpoints.
func containmentWait(c echo.Context) (time.Duration, error) {
	switch c.QueryParam("wait") {
	case "":
		return defaultContainmentWait, nil
	case "0", "0s":
		return 0, nil // answer at once
	}
	wait, err := parseDuration("wait", c.QueryParam("wait"))
	if err != nil {
		return 0, err
	}
	if wait > broker.MaxContainmentWait {
		return 0, broker.FieldErrorf("wait", "Query parameter \"wait\" must be at most %s.", broker.MaxContainmentWait)
	}
	return wait, nil
}

// containmentStatus is 200 once Vault confirmed every revocation of the
// containment, else 202 with a Location to follow.
func containmentStatus(c echo.Context, cnt *broker.Containment) int {
	if cnt.Progress.Done() {
		return http.StatusOK
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/containments/"+cnt.ID)
	return http.StatusAccepted
}

func ptr[T any](v T) *T { return &v }
