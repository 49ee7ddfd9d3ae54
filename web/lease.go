package web

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/stint-broker/stint/broker"
)

// Pages of lease lists.
const (
	defaultLeaseLimit = 50
	maxLeaseLimit     = 500
)

// registerLeaseRoutes adds the lease endpoints. Agents request, read and
// release their own leases; admins see every lease and revoke any.
func (s *Server) registerLeaseRoutes(g *echo.Group) {
	g.POST("/leases", s.handleLeaseCreate)
	g.POST("/leases/preview", s.handleLeasePreview)
	g.GET("/leases", s.handleLeaseIndex)
	g.GET("/leases/:id", s.handleLeaseView)
	g.GET("/leases/:id/events", s.handleLeaseEvents)
	g.DELETE("/leases/:id", s.handleLeaseRelease)

	// Admin only: pull a lease with a reason for the record.
	g.POST("/leases/:id/revoke", s.handleLeaseRevoke, requireAdmin)
}

// leaseResponse is the JSON shape of a lease. Times are RFC 3339 in UTC. The
// Vault and revocation-queue fields are shown to admins only. Credential is set
// only in the response that activated the lease.
type leaseResponse struct {
	ID            string            `json:"id"`
	State         broker.LeaseState `json:"state"`
	EndState      broker.LeaseState `json:"end_state,omitempty"`
	Role          string            `json:"role"`
	Agent         string            `json:"agent"`
	AgentID       string            `json:"agent_id"`
	Task          string            `json:"task"`
	Justification string            `json:"justification"`
	TTL           string            `json:"ttl"`
	Decision      string            `json:"decision,omitempty"`
	CreatedAt     string            `json:"created_at"`
	UpdatedAt     string            `json:"updated_at"`
	ActivatedAt   string            `json:"activated_at,omitempty"`
	ExpiresAt     string            `json:"expires_at,omitempty"`
	// ExpiresIn is the whole seconds left in an active lease's window.
	ExpiresIn *int64 `json:"expires_in,omitempty"`
	EndedAt   string `json:"ended_at,omitempty"`
	// DecideBy is when a pending lease times out; ActivateBy is when an
	// approved lease lapses unless the agent activates it.
	DecideBy   string `json:"decide_by,omitempty"`
	ActivateBy string `json:"activate_by,omitempty"`
	// PolicyDecision is what policy decided: outcome, approvals needed and
	// from which group, policy ids and reasons.
	PolicyDecision *broker.Decision `json:"policy_decision,omitempty"`
	// RiskScore is the live risk score (0-100) at the lease's latest
	// decision (its request or its latest extension), and RiskFactors its
	// parts.
	RiskScore   int                 `json:"risk_score"`
	RiskFactors []broker.RiskFactor `json:"risk_factors,omitempty"`
	// Breakglass marks an emergency grant; Extensions counts window
	// extensions.
	Breakglass bool `json:"breakglass,omitempty"`
	Extensions int  `json:"extensions,omitempty"`
	// AuthMethod is how the agent authenticated when it asked: api_key,
	// mtls, client_secret or private_key_jwt.
	AuthMethod string `json:"auth_method,omitempty"`

	// Username is the minted credential's login name (a database user),
	// recorded at activation; not a secret.
	Username string `json:"username,omitempty"`

	VaultPath      string `json:"vault_path,omitempty"`
	VaultLeaseID   string `json:"vault_lease_id,omitempty"`
	RevokeAttempts int    `json:"revoke_attempts,omitempty"`
	NextRevokeAt   string `json:"next_revoke_at,omitempty"`
	RevokeError    string `json:"revoke_error,omitempty"`

	Credential map[string]any `json:"credential,omitempty"`
}

// newLeaseResponse renders l for actor at now.
func newLeaseResponse(l *broker.Lease, actor broker.Actor, now time.Time) leaseResponse {
	r := leaseResponse{
		ID:             l.ID,
		State:          l.State,
		EndState:       l.EndState,
		Role:           l.Role,
		Agent:          l.Agent,
		AgentID:        l.AgentID,
		Task:           l.Task,
		Justification:  l.Justification,
		TTL:            l.TTL.String(),
		Decision:       l.Decision,
		CreatedAt:      formatTime(l.CreatedAt),
		UpdatedAt:      formatTime(l.UpdatedAt),
		ActivatedAt:    formatTimePtr(l.ActivatedAt),
		ExpiresAt:      formatTimePtr(l.ExpiresAt),
		EndedAt:        formatTimePtr(l.EndedAt),
		DecideBy:       formatTimePtr(l.DecideBy),
		ActivateBy:     formatTimePtr(l.ActivateBy),
		PolicyDecision: l.PolicyDecision,
		RiskScore:      l.RiskScore,
		RiskFactors:    l.RiskFactors,
		Breakglass:     l.Breakglass,
		Extensions:     l.Extensions,
		AuthMethod:     l.AuthMethod,
		Username:       l.Username,
	}
	if l.State == broker.LeaseActive && l.ExpiresAt != nil {
		left := max(int64(l.ExpiresAt.Sub(now)/time.Second), 0)
		r.ExpiresIn = &left
	}
	if actor.IsAdmin() {
		r.VaultPath = l.VaultPath
		r.VaultLeaseID = l.VaultLeaseID
		r.RevokeAttempts = l.RevokeAttempts
		r.NextRevokeAt = formatTimePtr(l.NextRevokeAt)
		r.RevokeError = l.RevokeError
	}
	return r
}

func (s *Server) newLeaseResponses(c echo.Context, leases []*broker.Lease) []leaseResponse {
	actor, now := actorOf(c), s.Now()
	out := make([]leaseResponse, 0, len(leases))
	for _, l := range leases {
		out = append(out, newLeaseResponse(l, actor, now))
	}
	return out
}

// handleLeaseCreate handles "POST /v1/leases". An auto-approved request
// answers 201 with the active lease and its credential, the only time the
// credential is ever shown; a request that needs approval answers 202 with
// the pending lease.
func (s *Server) handleLeaseCreate(c echo.Context) error {
	var req createLeaseRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	} else if err := req.validate(); err != nil {
		return err
	}

	lease, cred, err := s.Leases.RequestLease(c.Request().Context(), broker.LeaseRequest{
		Role:             req.Role,
		TTL:              req.TTL,
		Task:             req.Task,
		Justification:    req.Justification,
		Breakglass:       req.Breakglass,
		BreakglassReason: req.BreakglassReason,
		IdempotencyKey:   req.IdempotencyKey,
	})
	if err != nil {
		return err
	} else if lease == nil {
		return errors.New("request lease: the service returned no lease")
	}

	resp := newLeaseResponse(lease, actorOf(c), s.Now())
	c.Response().Header().Set(echo.HeaderLocation, "/v1/leases/"+url.PathEscape(lease.ID))
	if cred == nil {
		if lease.State != broker.LeasePending && req.IdempotencyKey != "" {
			// A repeated request: the lease as it is now, no credential.
			return c.JSON(http.StatusOK, resp)
		}
		return c.JSON(http.StatusAccepted, resp)
	}
	resp.Credential = cred.Reveal()
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusCreated, resp)
}

// createLeaseRequest is the body of "POST /v1/leases". TTL is passed through
// as given: the role decides what it allows.
type createLeaseRequest struct {
	Role          string `json:"role"`
	TTL           string `json:"ttl"`
	Task          string `json:"task"`
	Justification string `json:"justification"`
	// Breakglass asks for an emergency grant without approval (roles with
	// breakglass.allowed); BreakglassReason is then required.
	Breakglass       bool   `json:"breakglass"`
	BreakglassReason string `json:"breakglass_reason"`
	// IdempotencyKey makes the request safe to send again: a repeat with
	// the same key returns the first request's lease (200, no credential).
	IdempotencyKey string `json:"idempotency_key"`
}

func (r *createLeaseRequest) validate() error {
	var reason error
	if r.Breakglass {
		reason = checkRequired("breakglass_reason", r.BreakglassReason)
	}
	return firstError(
		checkRequired("role", r.Role),
		checkRequired("task", r.Task),
		broker.CheckLen("task", r.Task, broker.MaxTaskLen),
		broker.CheckLen("justification", r.Justification, broker.MaxJustificationLen),
		reason,
		broker.CheckLen("breakglass_reason", r.BreakglassReason, broker.MaxBreakglassReasonLen),
		broker.CheckLen("idempotency_key", r.IdempotencyKey, broker.MaxIdempotencyKeyLen),
	)
}

// handleLeasePreview handles "POST /v1/leases/preview": what a lease
// request with this body would get now (a dry run of policy), without
// creating a lease. It answers 200 with the decision.
func (s *Server) handleLeasePreview(c echo.Context) error {
	var req previewLeaseRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	} else if err := firstError(
		checkRequired("role", req.Role),
		broker.CheckLen("task", req.Task, broker.MaxTaskLen),
		broker.CheckLen("justification", req.Justification, broker.MaxJustificationLen),
	); err != nil {
		return err
	}
	p, err := s.Leases.PreviewLease(c.Request().Context(), broker.LeaseRequest{
		Role: req.Role, TTL: req.TTL, Task: req.Task, Justification: req.Justification, Breakglass: req.Breakglass,
	})
	if err != nil {
		return err
	}
	d := p.Decision
	return c.JSON(http.StatusOK, previewLeaseResponse{Role: p.Role.Name, TTL: p.Window.String(), Outcome: d.Outcome,
		Approvals: d.Approvals, ApproverGroup: d.ApproverGroup, PolicyIDs: d.PolicyIDs, Reasons: d.Reasons})
}

// previewLeaseRequest is the body of "POST /v1/leases/preview": the fields
// of a lease request that policy reads.
type previewLeaseRequest struct {
	Role          string `json:"role"`
	TTL           string `json:"ttl"`
	Task          string `json:"task"`
	Justification string `json:"justification"`
	Breakglass    bool   `json:"breakglass"`
}

// previewLeaseResponse is the answer of "POST /v1/leases/preview".
// Outcome is approve (granted at once), approvals (needs Approvals from
// ApproverGroup) or deny.
type previewLeaseResponse struct {
	Role          string         `json:"role"`
	TTL           string         `json:"ttl"`
	Outcome       broker.Outcome `json:"outcome"`
	Approvals     int            `json:"approvals,omitempty"`
	ApproverGroup string         `json:"approver_group,omitempty"`
	PolicyIDs     []string       `json:"policy_ids,omitempty"`
	Reasons       []string       `json:"reasons,omitempty"`
}

// handleLeaseIndex handles "GET /v1/leases?state=&role=&task=&agent=&limit=&offset=".
// state may repeat or hold a comma-separated list; agent is an agent's name
// or id. Agents see only their own leases.
func (s *Server) handleLeaseIndex(c echo.Context) error {
	filter, ok, err := s.leaseFilter(c)
	if err != nil {
		return err
	}
	resp := findLeasesResponse{Leases: []leaseResponse{}, Limit: filter.Limit, Offset: filter.Offset}
	if !ok {
		// The agent filter names nobody the caller can see.
		return c.JSON(http.StatusOK, resp)
	}
	leases, total, err := s.Leases.FindLeases(c.Request().Context(), filter)
	if err != nil {
		return err
	}
	resp.Leases, resp.Total = s.newLeaseResponses(c, leases), total
	return c.JSON(http.StatusOK, resp)
}

// findLeasesResponse is the body of "GET /v1/leases".
type findLeasesResponse struct {
	Leases []leaseResponse `json:"leases"`
	Total  int             `json:"total"`
	Limit  int             `json:"limit"`
	Offset int             `json:"offset"`
}

// leaseFilter reads the lease list's query parameters. ok is false when the
// agent parameter names no agent the caller may see, so nothing can match.
func (s *Server) leaseFilter(c echo.Context) (filter broker.LeaseFilter, ok bool, err error) {
	for _, v := range c.QueryParams()["state"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name == "" {
				continue // "?state=" filters nothing
			}
			state, err := broker.ParseLeaseState(name)
			if err != nil {
				return filter, false, err
			}
			filter.States = append(filter.States, state)
		}
	}
	if role := c.QueryParam("role"); role != "" {
		filter.Role = &role
	}
	if task := c.QueryParam("task"); task != "" {
		if err := broker.CheckLen("task", task, broker.MaxTaskLen); err != nil {
			return filter, false, err
		}
		filter.Task = &task
	}
	if id := c.QueryParam("containment"); id != "" {
		filter.ContainmentID = &id // agents see only their own leases anyway
	}
	if filter.Limit, filter.Offset, err = pageQuery(c, defaultLeaseLimit, maxLeaseLimit); err != nil {
		return filter, false, err
	}

	agent := c.QueryParam("agent")
	if agent == "" {
		return filter, true, nil
	}
	actor := actorOf(c)
	if !actor.IsAdmin() {
		// An agent can only ever see its own leases; answering the same for
		// every other name keeps other agents' existence private.
		if agent != actor.Name && agent != actor.AgentID {
			return filter, false, nil
		}
		filter.AgentID = &actor.AgentID
		return filter, true, nil
	}
	a, err := s.Agents.FindAgent(c.Request().Context(), agent)
	if broker.ErrorCode(err) == broker.ENOTFOUND {
		return filter, false, nil
	} else if err != nil {
		return filter, false, err
	}
	filter.AgentID = &a.ID
	return filter, true, nil
}

// handleLeaseView handles "GET /v1/leases/:id". It never returns the
// credential. With ?wait=30s (at most 60s) it long-polls a pending lease:
// it answers when the state changes or the wait is over (approval.go).
func (s *Server) handleLeaseView(c echo.Context) error {
	var lease *broker.Lease
	var err error
	if c.QueryParam("wait") != "" {
		lease, err = s.waitLease(c)
	} else {
		lease, err = s.Leases.FindLeaseByID(c.Request().Context(), c.Param("id"))
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newLeaseResponse(lease, actorOf(c), s.Now()))
}

// handleLeaseEvents handles "GET /v1/leases/:id/events": the lease's history,
// oldest first.
func (s *Server) handleLeaseEvents(c echo.Context) error {
	events, err := s.Leases.FindLeaseEvents(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	resp := leaseEventsResponse{Events: make([]leaseEventResponse, 0, len(events))}
	for _, e := range events {
		resp.Events = append(resp.Events, leaseEventResponse{
			ID:      e.ID,
			LeaseID: e.LeaseID,
			At:      formatTime(e.At),
			From:    e.From,
			To:      e.To,
			Actor:   e.Actor,
			Reason:  e.Reason,
		})
	}
	return c.JSON(http.StatusOK, resp)
}

// leaseEventsResponse is the body of "GET /v1/leases/:id/events".
type leaseEventsResponse struct {
	Events []leaseEventResponse `json:"events"`
}

type leaseEventResponse struct {
	ID      int64             `json:"id"`
	LeaseID string            `json:"lease_id"`
	At      string            `json:"at"`
	From    broker.LeaseState `json:"from,omitempty"`
	To      broker.LeaseState `json:"to"`
	Actor   string            `json:"actor"`
	Reason  string            `json:"reason,omitempty"`
}

// handleLeaseRelease handles "DELETE /v1/leases/:id": the agent is done
// early. It answers 200 once Vault has revoked the credential, or 202 with
// state "revoking" if the retry queue took the revocation over.
func (s *Server) handleLeaseRelease(c echo.Context) error {
	lease, err := s.Leases.ReleaseLease(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(endedStatus(lease), newLeaseResponse(lease, actorOf(c), s.Now()))
}

// handleLeaseRevoke handles "POST /v1/leases/:id/revoke" (admin). Like
// release, it answers 200 once revoked, 202 while revoking.
func (s *Server) handleLeaseRevoke(c echo.Context) error {
	var req revokeRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	} else if err := req.validate(); err != nil {
		return err
	}
	lease, err := s.Leases.RevokeLease(c.Request().Context(), c.Param("id"), req.Reason)
	if err != nil {
		return err
	}
	return c.JSON(endedStatus(lease), newLeaseResponse(lease, actorOf(c), s.Now()))
}

// revokeRequest is the body of the revoke endpoints: the reason is recorded
// in the lease history.
type revokeRequest struct {
	Reason string `json:"reason"`
}

func (r *revokeRequest) validate() error {
	return firstError(
		checkRequired("reason", r.Reason),
		broker.CheckLen("reason", r.Reason, broker.MaxReasonLen),
	)
}

// endedStatus is 202 while a lease's revocation waits in the retry queue and
// 200 once it is done.
func endedStatus(l *broker.Lease) int {
	if l.State == broker.LeaseRevoking {
		return http.StatusAccepted
	}
	return http.StatusOK
}
