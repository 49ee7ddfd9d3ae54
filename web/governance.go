package web

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/stint-broker/stint/broker"
)

// Pages of review lists.
const (
	defaultReviewPage = 50
	maxReviewPage     = 500
)

// registerGovernanceRoutes adds window extensions and access reviews.
func (s *Server) registerGovernanceRoutes(g *echo.Group) {
	// Agents: lengthen the window of an active lease.
	g.POST("/leases/:id/extend", s.handleLeaseExtend)

	// Owners (approver tokens) and admins: access reviews and break-glass
	// post-reviews.
	g.GET("/reviews", s.handleReviewIndex)
	g.GET("/reviews/:id", s.handleReviewView)
	g.POST("/reviews/:id/attest", s.handleReviewAttest)
	g.POST("/reviews/:id/close", s.handleReviewClose)
	g.POST("/reviews/run", s.handleReviewRun, requireAdmin)
}

// handleLeaseExtend handles "POST /v1/leases/:id/extend" {"ttl"}: the
// agent asks for ttl more (empty: the role's default). It answers 200 with
// the lease and its new expires_at; a refusal is 403 "denied" (the lease
// expires as planned) or 409 (too early, at the role's limits, not active).
func (s *Server) handleLeaseExtend(c echo.Context) error {
	var req extendRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	} else if err := broker.CheckLen("ttl", req.TTL, 32); err != nil {
		return err
	}
	lease, err := s.Leases.ExtendLease(c.Request().Context(), c.Param("id"), req.TTL)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newLeaseResponse(lease, actorOf(c), s.Now()))
}

// extendRequest is the body of "POST /v1/leases/:id/extend".
type extendRequest struct {
	TTL string `json:"ttl"`
}

// reviews returns the review service, or ENOTFOUND when none is wired.
func (s *Server) reviews() (broker.ReviewService, error) {
	if s.Reviews == nil {
		return nil, broker.Errorf(broker.ENOTFOUND, "Access reviews are not enabled on this server.")
	}
	return s.Reviews, nil
}

// handleReviewIndex handles "GET /v1/reviews?state=&kind=&agent=&limit=&offset=":
// admins see every review, an approver the reviews of agents it owns.
// agent is an agent id.
func (s *Server) handleReviewIndex(c echo.Context) error {
	svc, err := s.reviews()
	if err != nil {
		return err
	}
	var filter broker.ReviewFilter
	switch v := broker.ReviewState(c.QueryParam("state")); v {
	case "":
	case broker.ReviewOpen, broker.ReviewClosed:
		filter.State = &v
	default:
		return broker.FieldErrorf("state", "Unknown review state %q; use open or closed.", v)
	}
	switch v := broker.ReviewKind(c.QueryParam("kind")); v {
	case "":
	case broker.ReviewAccess, broker.ReviewBreakglass:
		filter.Kind = &v
	default:
		return broker.FieldErrorf("kind", "Unknown review kind %q; use access or breakglass.", v)
	}
	if v := c.QueryParam("agent"); v != "" {
		filter.AgentID = &v
	}
	if filter.Limit, filter.Offset, err = pageQuery(c, defaultReviewPage, maxReviewPage); err != nil {
		return err
	}
	reviews, total, err := svc.FindReviews(c.Request().Context(), filter)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, findReviewsResponse{Reviews: reviews, Total: total, Limit: filter.Limit, Offset: filter.Offset})
}

// findReviewsResponse is the body of "GET /v1/reviews". Reviews are
// broker.Review as JSON: id, kind, state, agent, owner, due_at, items with
// their evidence (last_lease_at, lease_count, never_used) and verdicts.
type findReviewsResponse struct {
	Reviews []*broker.Review `json:"reviews"`
	Total   int              `json:"total"`
	Limit   int              `json:"limit"`
	Offset  int              `json:"offset"`
}

// handleReviewView handles "GET /v1/reviews/:id".
func (s *Server) handleReviewView(c echo.Context) error {
	svc, err := s.reviews()
	if err != nil {
		return err
	}
	r, err := svc.FindReview(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, r)
}

// handleReviewAttest handles "POST /v1/reviews/:id/attest"
// {"role","verdict":"keep"|"remove","note"}; the last verdict closes the
// review.
func (s *Server) handleReviewAttest(c echo.Context) error {
	svc, err := s.reviews()
	if err != nil {
		return err
	}
	var req attestRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	} else if err := firstError(
		checkRequired("role", req.Role),
		checkRequired("verdict", req.Verdict),
		broker.CheckLen("note", req.Note, broker.MaxReviewNoteLen),
	); err != nil {
		return err
	}
	r, err := svc.Attest(c.Request().Context(), c.Param("id"), req.Role, broker.ReviewVerdict(req.Verdict), req.Note)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, r)
}

// attestRequest is the body of "POST /v1/reviews/:id/attest".
type attestRequest struct {
	Role    string `json:"role"`
	Verdict string `json:"verdict"`
	Note    string `json:"note"`
}

// handleReviewClose handles "POST /v1/reviews/:id/close" {"note"}: the
// owner closes a break-glass post-review.
func (s *Server) handleReviewClose(c echo.Context) error {
	svc, err := s.reviews()
	if err != nil {
		return err
	}
	var req closeReviewRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	} else if err := firstError(checkRequired("note", req.Note), broker.CheckLen("note", req.Note, broker.MaxReviewNoteLen)); err != nil {
		return err
	}
	r, err := svc.CloseBreakglass(c.Request().Context(), c.Param("id"), req.Note)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, r)
}

// closeReviewRequest is the body of "POST /v1/reviews/:id/close".
type closeReviewRequest struct {
	Note string `json:"note"`
}

// handleReviewRun handles "POST /v1/reviews/run" (admin): open access
// reviews now rather than on reviews.schedule.
func (s *Server) handleReviewRun(c echo.Context) error {
	svc, err := s.reviews()
	if err != nil {
		return err
	}
	opened, err := svc.RunReviews(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, findReviewsResponse{Reviews: opened, Total: len(opened)})
}
