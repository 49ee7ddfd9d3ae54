package web

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/stint-broker/stint/broker"
)

// registerApprovalRoutes adds the human-approval endpoints. Agents activate
// or cancel their approved leases; approvers (approver tokens) list and
// decide pending leases.
func (s *Server) registerApprovalRoutes(g *echo.Group) {
	// Agents: mint an approved lease's credential, or withdraw the request.
	g.POST("/leases/:id/activate", s.handleLeaseActivate)
	g.POST("/leases/:id/cancel", s.handleLeaseCancel)

	// Approvers: what waits for me, and my answers.
	g.GET("/approvals", s.handleApprovalIndex)
	g.POST("/leases/:id/approve", s.handleLeaseApprove)
	g.POST("/leases/:id/deny", s.handleLeaseDeny)
}

// isLongPoll reports whether the request is "GET /v1/leases/:id?wait=…",
// which outlives the request timeout by design: it sets its own deadline.
func isLongPoll(c echo.Context) bool {
	return c.Request().Method == http.MethodGet && c.Path() == "/v1/leases/:id" && c.QueryParam("wait") != ""
}

// waitLease serves the long poll of "GET /v1/leases/:id?wait=30s": while the
// lease is pending it waits up to wait (at most 60s) for its state to change.
// It extends the connection's write deadline to fit.
func (s *Server) waitLease(c echo.Context) (*broker.Lease, error) {
	wait, err := parseDuration("wait", c.QueryParam("wait"))
	if err != nil {
		return nil, err
	}
	if wait > broker.MaxLeaseWait {
		return nil, broker.FieldErrorf("wait", "Query parameter \"wait\" must be at most %s.", broker.MaxLeaseWait)
	}
	// The server's WriteTimeout is shorter than the longest wait; a write
	// deadline set here overrides it for this response only.
	_ = http.NewResponseController(c.Response()).SetWriteDeadline(time.Now().Add(wait + s.RequestTimeout))
	ctx, cancel := context.WithTimeout(c.Request().Context(), wait+s.RequestTimeout)
	defer cancel()
	return s.Leases.WaitLease(ctx, c.Param("id"), wait)
}

// handleLeaseActivate handles "POST /v1/leases/:id/activate": the agent
// mints its approved lease's credential. It answers 201 with the active lease
// and the credential, the only time the credential is shown; a second
// activation is 409.
func (s *Server) handleLeaseActivate(c echo.Context) error {
	lease, cred, err := s.Leases.ActivateLease(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	if cred == nil {
		return errors.New("activate lease: the service returned no credential")
	}
	resp := newLeaseResponse(lease, actorOf(c), s.Now())
	resp.Credential = cred.Reveal()
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusCreated, resp)
}

// handleLeaseCancel handles "POST /v1/leases/:id/cancel": the agent
// withdraws its pending or approved lease.
func (s *Server) handleLeaseCancel(c echo.Context) error {
	lease, err := s.Leases.CancelLease(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newLeaseResponse(lease, actorOf(c), s.Now()))
}

// approvals returns the approval service, or ENOTFOUND when human approval
// is off.
func (s *Server) approvals() (broker.ApprovalService, error) {
	if s.Approvals == nil {
		return nil, broker.Errorf(broker.ENOTFOUND, "Human approval is not enabled on this server.")
	}
	return s.Approvals, nil
}

// handleApprovalIndex handles "GET /v1/approvals": the pending leases the
// calling approver may decide, oldest first, each with the digest to send
// back with an answer.
func (s *Server) handleApprovalIndex(c echo.Context) error {
	svc, err := s.approvals()
	if err != nil {
		return err
	}
	pending, err := svc.FindPendingApprovals(c.Request().Context())
	if err != nil {
		return err
	}
	resp := findApprovalsResponse{Approvals: make([]pendingApprovalResponse, 0, len(pending))}
	actor, now := actorOf(c), s.Now()
	for _, p := range pending {
		r := pendingApprovalResponse{
			Lease:     newLeaseResponse(p.Lease, actor, now),
			Owner:     p.Owner,
			Digest:    p.Digest,
			Needed:    p.Needed,
			Approvals: make([]approvalResponse, 0, len(p.Approvals)),
			DecideBy:  formatTimePtr(p.Lease.DecideBy),
		}
		if d := p.Lease.PolicyDecision; d != nil {
			r.ApproverGroup, r.PolicyIDs, r.Reasons = d.ApproverGroup, d.PolicyIDs, d.Reasons
		}
		for _, a := range p.Approvals {
			if a.Verdict == broker.VerdictApprove {
				r.Given++
			}
			r.Approvals = append(r.Approvals, approvalResponse{
				Approver: a.Approver, Verdict: a.Verdict, Reason: a.Reason, Via: a.Via, At: formatTime(a.At),
			})
		}
		resp.Approvals = append(resp.Approvals, r)
	}
	return c.JSON(http.StatusOK, resp)
}

// findApprovalsResponse is the body of "GET /v1/approvals".
type findApprovalsResponse struct {
	Approvals []pendingApprovalResponse `json:"approvals"`
}

type pendingApprovalResponse struct {
	Lease         leaseResponse      `json:"lease"`
	Owner         string             `json:"owner"`
	Digest        string             `json:"digest"`
	ApproverGroup string             `json:"approver_group"`
	Needed        int                `json:"needed"`
	Given         int                `json:"given"`
	PolicyIDs     []string           `json:"policy_ids,omitempty"`
	Reasons       []string           `json:"reasons,omitempty"`
	DecideBy      string             `json:"decide_by,omitempty"`
	Approvals     []approvalResponse `json:"approvals"`
}

type approvalResponse struct {
	Approver string         `json:"approver"`
	Verdict  broker.Verdict `json:"verdict"`
	Reason   string         `json:"reason,omitempty"`
	Via      string         `json:"via"`
	At       string         `json:"at"`
}

// handleLeaseApprove handles "POST /v1/leases/:id/approve" (approvers):
// {"digest": "..."} from GET /v1/approvals. Answering twice is not an error.
func (s *Server) handleLeaseApprove(c echo.Context) error {
	var req decideRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	} else if err := req.validate(); err != nil {
		return err
	}
	svc, err := s.approvals()
	if err != nil {
		return err
	}
	if req.Reason != "" {
		return broker.FieldErrorf("reason", "Only a denial takes a reason.")
	}
	lease, err := svc.Approve(c.Request().Context(), c.Param("id"), req.Digest)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newLeaseResponse(lease, actorOf(c), s.Now()))
}

// handleLeaseDeny handles "POST /v1/leases/:id/deny" (approvers):
// {"digest": "...", "reason": "..."}; the reason is optional.
func (s *Server) handleLeaseDeny(c echo.Context) error {
	var req decideRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	} else if err := req.validate(); err != nil {
		return err
	}
	svc, err := s.approvals()
	if err != nil {
		return err
	}
	lease, err := svc.Deny(c.Request().Context(), c.Param("id"), req.Digest, req.Reason)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newLeaseResponse(lease, actorOf(c), s.Now()))
}

// decideRequest is the body of the approve and deny endpoints.
type decideRequest struct {
	Digest string `json:"digest"`
	Reason string `json:"reason"`
}

func (r *decideRequest) validate() error {
	return firstError(
		checkRequired("digest", r.Digest),
		broker.CheckLen("digest", r.Digest, 128),
		broker.CheckLen("reason", r.Reason, broker.MaxReasonLen),
	)
}
