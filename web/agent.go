package web

import (
	"net/http"
	"net/url"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/stint-broker/stint/broker"
)

// Limits on the agent list.
const (
	defaultAgentLimit = 50
	maxAgentLimit     = 500
)

// registerAgentRoutes adds the agent endpoints. Any caller may ask who it is;
// everything else is for admins: register agents, rotate their keys, change
// their state and pull their access. :id is an agent's id or name.
func (s *Server) registerAgentRoutes(g *echo.Group) {
	g.GET("/whoami", s.handleWhoami)

	// Admin only.
	g.POST("/agents", s.handleAgentCreate, requireAdmin)
	g.GET("/agents", s.handleAgentIndex, requireAdmin)
	g.GET("/agents/:id", s.handleAgentView, requireAdmin)
	g.POST("/agents/:id/rotate-key", s.handleAgentRotateKey, requireAdmin)
	g.POST("/agents/:id/suspend", s.handleAgentSuspend, requireAdmin)
	g.POST("/agents/:id/disable", s.handleAgentDisable, requireAdmin)
	g.POST("/agents/:id/activate", s.handleAgentActivate, requireAdmin)
	g.POST("/agents/:id/revoke-all", s.handleAgentRevokeAll, requireAdmin)
	g.GET("/agents/:id/containments", s.handleAgentContainmentIndex, requireAdmin)
	g.GET("/containments/:id", s.handleContainmentView, requireAdmin)
}

// handleWhoami handles "GET /v1/whoami": the authenticated actor.
func (s *Server) handleWhoami(c echo.Context) error {
	a := actorOf(c)
	return c.JSON(http.StatusOK, whoamiResponse{
		Kind:       a.Kind,
		Name:       a.Name,
		AgentID:    a.AgentID,
		AuthMethod: a.AuthMethod,
		SourceIP:   a.SourceIP,
	})
}

// whoamiResponse is the body of "GET /v1/whoami".
type whoamiResponse struct {
	Kind       broker.ActorKind `json:"kind"`
	Name       string           `json:"name"`
	AgentID    string           `json:"agent_id,omitempty"`
	AuthMethod string           `json:"auth_method,omitempty"`
	SourceIP   string           `json:"source_ip,omitempty"`
}

// agentResponse is the JSON shape of an agent. Times are RFC 3339 in UTC.
type agentResponse struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	Owner      string            `json:"owner"`
	Labels     map[string]string `json:"labels"`
	State      broker.AgentState `json:"state"`
	CreatedAt  string            `json:"created_at"`
	UpdatedAt  string            `json:"updated_at"`
	LastSeenAt string            `json:"last_seen_at,omitempty"`
	// AuthMethods are the methods the agent may authenticate with.
	AuthMethods []string `json:"auth_methods"`
	// SPIFFEID is the SPIFFE ID mapped to the agent, if any.
	SPIFFEID string `json:"spiffe_id,omitempty"`
	// HasClientSecret and HasPublicJWK say whether OAuth client credentials
	// are registered; the credentials themselves are never shown.
	HasClientSecret bool `json:"has_client_secret"`
	HasPublicJWK    bool `json:"has_public_jwk"`
}

func newAgentResponse(a *broker.Agent) agentResponse {
	labels := a.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	methods := a.AuthMethods
	if methods == nil {
		methods = []string{}
	}
	return agentResponse{
		ID:         a.ID,
		Name:       a.Name,
		Owner:      a.Owner,
		Labels:     labels,
		State:      a.State,
		CreatedAt:  formatTime(a.CreatedAt),
		UpdatedAt:  formatTime(a.UpdatedAt),
		LastSeenAt: formatTimePtr(a.LastSeenAt),

		AuthMethods:     methods,
		SPIFFEID:        a.SPIFFEID,
		HasClientSecret: a.ClientSecretHash != "",
		HasPublicJWK:    a.PublicJWKS != "",
	}
}

// apiKeyResponse describes an API key without revealing it.
type apiKeyResponse struct {
	ID        string `json:"id"`
	Prefix    string `json:"prefix"`
	CreatedAt string `json:"created_at"`
	ExpiresAt string `json:"expires_at"`
}

func newAPIKeyResponse(k *broker.APIKey) apiKeyResponse {
	return apiKeyResponse{ID: k.ID, Prefix: k.Prefix, CreatedAt: formatTime(k.CreatedAt), ExpiresAt: formatTime(k.ExpiresAt)}
}

// handleAgentCreate handles "POST /v1/agents" (admin). It answers 201 with
// the agent and its first API key, which is never shown again (none if the
// agent may not use api_key), and 409 if the name is taken.
func (s *Server) handleAgentCreate(c echo.Context) error {
	var req createAgentRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	keyTTL, err := req.validate()
	if err != nil {
		return err
	}
	agent, key, apiKey, err := s.Agents.CreateAgent(c.Request().Context(), broker.NewAgent{
		Name:   req.Name,
		Owner:  req.Owner,
		Labels: req.Labels,
		KeyTTL: keyTTL,

		AuthMethods: req.AuthMethods,
	})
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set(echo.HeaderCacheControl, "no-store")
	h.Set(echo.HeaderLocation, "/v1/agents/"+url.PathEscape(agent.ID))
	resp := createAgentResponse{Agent: newAgentResponse(agent), APIKey: key}
	if apiKey != nil {
		k := newAPIKeyResponse(apiKey)
		resp.Key = &k
	}
	return c.JSON(http.StatusCreated, resp)
}

// createAgentRequest is the body of "POST /v1/agents". KeyTTL is a duration
// such as "24h"; empty means the configured default.
type createAgentRequest struct {
	Name   string            `json:"name"`
	Owner  string            `json:"owner"`
	Labels map[string]string `json:"labels"`
	KeyTTL string            `json:"key_ttl"`
	// AuthMethods are the methods the agent may use; omitted means api_key.
	AuthMethods []string `json:"auth_methods"`
}

func (r *createAgentRequest) validate() (keyTTL time.Duration, err error) {
	if err := firstError(checkRequired("name", r.Name), checkRequired("owner", r.Owner)); err != nil {
		return 0, err
	}
	return parseDuration("key_ttl", r.KeyTTL)
}

// createAgentResponse is the answer to "POST /v1/agents". APIKey is the
// secret itself, shown only here; both it and Key are absent for an agent
// whose auth methods leave out api_key.
type createAgentResponse struct {
	Agent  agentResponse   `json:"agent"`
	APIKey string          `json:"api_key,omitempty"`
	Key    *apiKeyResponse `json:"key,omitempty"`
}

// handleAgentIndex handles "GET /v1/agents?state=&name=&limit=&offset="
// (admin).
func (s *Server) handleAgentIndex(c echo.Context) error {
	var filter broker.AgentFilter
	if v := c.QueryParam("state"); v != "" {
		state := broker.AgentState(v)
		switch state {
		case broker.AgentActive, broker.AgentSuspended, broker.AgentDisabled:
		default:
			return broker.FieldErrorf("state", "Unknown agent state %q; use active, suspended or disabled.", v)
		}
		filter.State = &state
	}
	if v := c.QueryParam("name"); v != "" {
		filter.Name = &v
	}
	var err error
	if filter.Limit, filter.Offset, err = pageQuery(c, defaultAgentLimit, maxAgentLimit); err != nil {
		return err
	}

	agents, total, err := s.Agents.FindAgents(c.Request().Context(), filter)
	if err != nil {
		return err
	}
	resp := findAgentsResponse{Agents: make([]agentResponse, 0, len(agents)), Total: total, Limit: filter.Limit, Offset: filter.Offset}
	for _, a := range agents {
		resp.Agents = append(resp.Agents, newAgentResponse(a))
	}
	return c.JSON(http.StatusOK, resp)
}

// findAgentsResponse is the body of "GET /v1/agents".
type findAgentsResponse struct {
	Agents []agentResponse `json:"agents"`
	Total  int             `json:"total"`
	Limit  int             `json:"limit"`
	Offset int             `json:"offset"`
}

// handleAgentView handles "GET /v1/agents/:id" (admin).
func (s *Server) handleAgentView(c echo.Context) error {
	agent, err := s.Agents.FindAgent(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newAgentResponse(agent))
}

// handleAgentRotateKey handles "POST /v1/agents/:id/rotate-key" (admin): the
// agent's keys stop working and a new one is returned, once.
func (s *Server) handleAgentRotateKey(c echo.Context) error {
	var req rotateKeyRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	ttl, err := parseDuration("ttl", req.TTL)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	agent, err := s.Agents.FindAgent(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	key, apiKey, err := s.Agents.RotateKey(ctx, agent.ID, ttl)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, rotateKeyResponse{APIKey: key, Key: newAPIKeyResponse(apiKey)})
}

// rotateKeyRequest is the body of "POST /v1/agents/:id/rotate-key"; an empty
// TTL means the configured default.
type rotateKeyRequest struct {
	TTL string `json:"ttl"`
}

// rotateKeyResponse carries the new key, shown only here.
type rotateKeyResponse struct {
	APIKey string         `json:"api_key"`
	Key    apiKeyResponse `json:"key"`
}

// handleAgentSuspend handles "POST /v1/agents/:id/suspend" (admin).
func (s *Server) handleAgentSuspend(c echo.Context) error {
	return s.setAgentState(c, broker.AgentSuspended)
}

// handleAgentDisable handles "POST /v1/agents/:id/disable" (admin).
func (s *Server) handleAgentDisable(c echo.Context) error {
	return s.setAgentState(c, broker.AgentDisabled)
}

// handleAgentActivate handles "POST /v1/agents/:id/activate" (admin): a
// suspended agent is active again; a disabled one stays disabled (409).
func (s *Server) handleAgentActivate(c echo.Context) error {
	return s.setAgentState(c, broker.AgentActive)
}

// setAgentState moves the agent to state. Suspending or disabling is a
// containment (the kill switch, LeaseService.ContainAgent): in one store
// transaction the agent changes state and every live lease of it is marked
// to end, for the optional reason from the body; the revocation queue ends
// them. The
// answer waits up to ?wait (default 5s) for Vault to confirm every
// revocation: 200 if it did, 202 with the progress and a Location to follow
// if not. Re-activating answers 200 with the agent.
func (s *Server) setAgentState(c echo.Context, state broker.AgentState) error {
	var req agentStateRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	} else if err := broker.CheckLen("reason", req.Reason, broker.MaxReasonLen); err != nil {
		return err
	}
	wait, err := containmentWait(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	agent, err := s.Agents.FindAgent(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	if state == broker.AgentActive {
		if agent, err = s.Agents.ActivateAgent(ctx, agent.ID); err != nil {
			return err
		}
		return c.JSON(http.StatusOK, agentStateResponse{Agent: newAgentResponse(agent)})
	}
	cnt, err := s.Leases.ContainAgent(ctx, broker.ContainRequest{AgentID: agent.ID, State: state, Reason: req.Reason})
	if err != nil {
		return err
	}
	if cnt, err = s.Leases.WaitContainment(ctx, cnt.ID, wait); err != nil {
		return err
	}
	if agent, err = s.Agents.FindAgent(ctx, agent.ID); err != nil {
		return err
	}
	resp := agentStateResponse{Agent: newAgentResponse(agent), Containment: ptr(newContainmentResponse(cnt))}
	return c.JSON(containmentStatus(c, cnt), resp)
}

// agentStateRequest is the optional body of the state endpoints.
type agentStateRequest struct {
	Reason string `json:"reason"`
}

// agentStateResponse is the answer to the state endpoints: the agent, and,
// when suspending or disabling it, the containment that ends its leases.
type agentStateResponse struct {
	Agent       agentResponse        `json:"agent"`
	Containment *containmentResponse `json:"containment,omitempty"`
}

// handleAgentRevokeAll handles "POST /v1/agents/:id/revoke-all" (admin): the
// kill switch for one agent's live leases; the agent stays active. It
// answers as the state endpoints do: 200 once Vault confirmed every
// revocation within ?wait, else 202 with the progress.
func (s *Server) handleAgentRevokeAll(c echo.Context) error {
	var req revokeRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	} else if err := req.validate(); err != nil {
		return err
	}
	wait, err := containmentWait(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	agent, err := s.Agents.FindAgent(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	cnt, err := s.Leases.ContainAgent(ctx, broker.ContainRequest{AgentID: agent.ID, Reason: req.Reason})
	if err != nil {
		return err
	}
	if cnt, err = s.Leases.WaitContainment(ctx, cnt.ID, wait); err != nil {
		return err
	}
	return c.JSON(containmentStatus(c, cnt), newContainmentResponse(cnt))
}

// leasesEnvelope wraps a list of leases.
type leasesEnvelope struct {
	Leases []leaseResponse `json:"leases"`
}
