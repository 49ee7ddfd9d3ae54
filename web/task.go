package web

import (
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"

	"github.com/stint-broker/stint/broker"
)

// registerTaskRoutes adds the task endpoints: every live lease of one task
// ended in one call. The leases of a task are listed by
// "GET /v1/leases?task=".
func (s *Server) registerTaskRoutes(g *echo.Group) {
	// An agent releases its own leases of the task; an admin every agent's.
	g.POST("/tasks/:task/release", s.handleTaskRelease)

	// Admin only: revoke every agent's leases of the task, with a reason.
	g.POST("/tasks/:task/revoke", s.handleTaskRevoke, requireAdmin)
}

// taskLeasesResponse is the answer of the task endpoints: the task's live
// leases in their new states.
type taskLeasesResponse struct {
	Task   string          `json:"task"`
	Leases []leaseResponse `json:"leases"`
}

// handleTaskRelease handles "POST /v1/tasks/:task/release". It answers 200
// once every lease it ended is done, 202 while some revocation waits in the
// retry queue or a credential was being minted (call again).
func (s *Server) handleTaskRelease(c echo.Context) error {
	task, err := taskParam(c)
	if err != nil {
		return err
	}
	ended, err := s.Leases.ReleaseTask(c.Request().Context(), task)
	if err != nil {
		return err
	}
	return s.taskLeases(c, task, ended)
}

// handleTaskRevoke handles "POST /v1/tasks/:task/revoke" (admin): like
// release, across every agent, with a reason for each lease's history.
func (s *Server) handleTaskRevoke(c echo.Context) error {
	task, err := taskParam(c)
	if err != nil {
		return err
	}
	var req revokeRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	} else if err := req.validate(); err != nil {
		return err
	}
	ended, err := s.Leases.RevokeTask(c.Request().Context(), task, req.Reason)
	if err != nil {
		return err
	}
	return s.taskLeases(c, task, ended)
}

func (s *Server) taskLeases(c echo.Context, task string, ended []*broker.Lease) error {
	status := http.StatusOK
	for _, l := range ended {
		if l.State == broker.LeaseRevoking || l.State == broker.LeaseIssuing {
			status = http.StatusAccepted
		}
	}
	return c.JSON(status, taskLeasesResponse{Task: task, Leases: s.newLeaseResponses(c, ended)})
}

// taskParam reads the task path parameter. Task names are free text: echo
// leaves a parameter escaped when the path holds an escaped "/" (the
// request's RawPath is set), so it is unescaped here.
func taskParam(c echo.Context) (string, error) {
	task := c.Param("task")
	if c.Request().URL.RawPath != "" {
		var err error
		if task, err = url.PathUnescape(task); err != nil {
			return "", broker.FieldErrorf("task", "The task in the path is not valid URL encoding.")
		}
	}
	return task, firstError(checkRequired("task", task), broker.CheckLen("task", task, broker.MaxTaskLen))
}
