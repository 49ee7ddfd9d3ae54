package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/modelcontextprotocol/go-sdk/auth"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/stint-broker/stint/broker"
	mcptools "github.com/stint-broker/stint/web/mcp"
)

// MCP endpoint paths. The protected resource metadata (RFC 9728) is served
// both at the path-inserted well-known URI of /mcp and at the root one, so
// that clients of every MCP revision find it.
const (
	mcpPath             = "/mcp"
	mcpMetadataPath     = "/.well-known/oauth-protected-resource"
	mcpMetadataPathMCP  = mcpMetadataPath + mcpPath
	mcpActorTokenInfoID = "stint.actor"
)

// AuditMCPToolCall records one MCP tool call: the tool, the transport
// (http or stdio), the MCP client's name and session, the lease it acted
// on (Subject) and how a credential was delivered (file, exec or inline).
const AuditMCPToolCall = "mcp.tool_call"

// MCPEndpoint configures the streamable HTTP MCP endpoint (/mcp). It needs
// Server.OAuth and Server.Auth: the endpoint is an OAuth protected resource
// whose tokens Stint's own token endpoint issues.
type MCPEndpoint struct {
	// Resource is the endpoint's canonical URI, such as
	// "https://stint.example.com/mcp": the audience its access tokens must
	// carry (RFC 8707) and the resource of its metadata.
	Resource string
	// AuthorizationServer is the issuer of those tokens: Stint's own.
	AuthorizationServer string
	// MaxWait caps how long a tool waits for a human approval.
	MaxWait time.Duration
	// Version is shown to MCP clients.
	Version string
}

// MCPResource returns the canonical URI of the MCP endpoint of a server
// whose public base URL is base (the OAuth issuer).
func MCPResource(base string) string { return strings.TrimSuffix(base, "/") + mcpPath }

// registerMCPRoutes adds the MCP endpoint and its protected resource
// metadata when s.MCP is set.
func (s *Server) registerMCPRoutes(e *echo.Echo) {
	if s.MCP == nil {
		return
	}
	if s.Auth == nil {
		panic("web: MCP needs Auth (access tokens for the MCP resource)")
	}
	tools := mcptools.NewServer(mcptools.Config{
		Leases:    s.Leases,
		Transport: "http",
		Authorize: s.authorizeMCPTool,
		Record:    s.recordMCPCall,
		MaxWait:   s.MCP.MaxWait,
		Version:   s.MCP.Version,
		Logger:    s.Logger,
	})
	streamable := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return tools }, &sdk.StreamableHTTPOptions{
		// Any replica can serve any call: no session lives in memory.
		Stateless: true,
		Logger:    s.Logger,
		// Every request must carry an access token in the Authorization
		// header, which a rebound or cross-origin browser page cannot
		// send; the Host check would only refuse deployments behind a
		// local reverse proxy.
		DisableLocalhostProtection: true,
	})
	// The SDK puts the token's holder on each tool call (RequestExtra);
	// handleMCP has authenticated it already.
	h := auth.RequireBearerToken(func(_ context.Context, _ string, req *http.Request) (*auth.TokenInfo, error) {
		actor, ok := broker.ActorFromContext(req.Context())
		if !ok {
			return nil, auth.ErrInvalidToken
		}
		return &auth.TokenInfo{UserID: actor.AgentID, Scopes: actor.Scopes, Extra: map[string]any{mcpActorTokenInfoID: actor}}, nil
	}, &auth.RequireBearerTokenOptions{AllowMissingExpiration: true})(streamable)

	mcp := func(c echo.Context) error { return s.handleMCP(c, h) }
	e.POST(mcpPath, mcp)
	e.GET(mcpPath, mcp)
	e.DELETE(mcpPath, mcp)
	e.GET(mcpMetadataPathMCP, s.handleMCPMetadata)
	e.GET(mcpMetadataPath, s.handleMCPMetadata)
}

// mcpMetadataURL is the URL of the endpoint's protected resource metadata.
func (s *Server) mcpMetadataURL() string {
	return strings.TrimSuffix(s.MCP.Resource, mcpPath) + mcpMetadataPathMCP
}

// handleMCPMetadata handles "GET /.well-known/oauth-protected-resource[/mcp]":
// the RFC 9728 protected resource metadata of the MCP endpoint.
func (s *Server) handleMCPMetadata(c echo.Context) error {
	return c.JSON(http.StatusOK, mcpMetadataResponse{
		Resource:               s.MCP.Resource,
		AuthorizationServers:   []string{s.MCP.AuthorizationServer},
		ScopesSupported:        mcptools.Scopes,
		BearerMethodsSupported: []string{"header"},
		ResourceName:           "Stint MCP",
	})
}

// mcpMetadataResponse is the body of the protected resource metadata.
type mcpMetadataResponse struct {
	Resource               string   `json:"resource"`
	AuthorizationServers   []string `json:"authorization_servers"`
	ScopesSupported        []string `json:"scopes_supported"`
	BearerMethodsSupported []string `json:"bearer_methods_supported"`
	ResourceName           string   `json:"resource_name"`
}

// handleMCP handles "/mcp": it authenticates the access token (issued for
// this resource only), checks a tool call's scope before the SDK sees it,
// and passes the request to the streamable HTTP handler with the agent on
// its context. The client's token goes no further.
func (s *Server) handleMCP(c echo.Context, h http.Handler) error {
	req := c.Request()
	secret, ok := bearerSecret(req.Header.Get(echo.HeaderAuthorization))
	if !ok {
		s.recordAuthFailure(c, "", "no bearer token for the MCP endpoint")
		return &mcpAuthError{status: http.StatusUnauthorized,
			err: broker.Errorf(broker.EUNAUTHORIZED, "Send a Stint access token issued for %s as \"Authorization: Bearer <token>\".", s.MCP.Resource)}
	}
	actor, err := s.Auth.AuthenticateRequest(req.Context(), broker.AuthRequest{
		Bearer: secret, PeerCertificates: peerCertificates(req), SourceIP: c.RealIP(), Resource: s.MCP.Resource,
	})
	if err == nil && (actor.Kind != broker.ActorAgent || len(actor.Scopes) == 0) {
		// Only agents' access tokens for this resource carry scopes.
		err = broker.Errorf(broker.EUNAUTHORIZED, "Only an agent's access token issued for %s is accepted here.", s.MCP.Resource)
	}
	switch broker.ErrorCode(err) {
	case "":
	case broker.ETOOMANY, broker.EUNAVAILABLE, broker.EINTERNAL:
		return err
	default:
		s.recordAuthFailure(c, secret, broker.ErrorMessage(err))
		msg := err
		if broker.ErrorCode(err) != broker.EUNAUTHORIZED {
			msg = broker.Errorf(broker.EUNAUTHORIZED, "The access token is invalid, expired or revoked.")
		}
		return &mcpAuthError{status: http.StatusUnauthorized, errorCode: "invalid_token", err: msg}
	}
	actor.SourceIP = c.RealIP()
	c.Set(actorKey, actor.String())
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")

	if req.Method == http.MethodPost {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return err // the body limit tripped
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		if missing := missingScopes(body, actor.Scopes); len(missing) > 0 {
			return &mcpAuthError{status: http.StatusForbidden, errorCode: "insufficient_scope", scope: strings.Join(missing, " "),
				err: broker.Errorf(broker.EFORBIDDEN, "The access token lacks scope %s; ask the token endpoint for it.", strings.Join(missing, " "))}
		}
	}

	// A tool may wait for a human approval: the request outlives the
	// server's usual timeouts by that much, and no more.
	wait := s.MCP.MaxWait
	if wait <= 0 {
		wait = mcptools.DefaultMaxWait
	}
	_ = http.NewResponseController(c.Response()).SetWriteDeadline(time.Now().Add(wait + s.RequestTimeout))
	ctx, cancel := context.WithTimeout(broker.NewContextWithActor(req.Context(), actor), wait+s.RequestTimeout)
	defer cancel()
	req = req.WithContext(ctx)
	// The SDK reads the bearer token itself only to hand its holder over.
	h.ServeHTTP(c.Response(), req)
	return nil
}

// missingScopes returns the scopes that the tool calls in a JSON-RPC body
// (one message or a batch) need and have is missing. A body that does not
// parse needs none here: the SDK answers it.
func missingScopes(body []byte, have []string) []string {
	type call struct {
		Method string `json:"method"`
		Params struct {
			Name string `json:"name"`
		} `json:"params"`
	}
	var calls []call
	if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && trimmed[0] == '[' {
		if json.Unmarshal(trimmed, &calls) != nil {
			return nil
		}
	} else {
		var one call
		if json.Unmarshal(trimmed, &one) != nil {
			return nil
		}
		calls = []call{one}
	}
	var missing []string
	for _, c := range calls {
		if c.Method != "tools/call" {
			continue
		}
		if need, ok := mcptools.ToolScopes[c.Params.Name]; ok && !slices.Contains(have, need) && !slices.Contains(missing, need) {
			missing = append(missing, need)
		}
	}
	return missing
}

// authorizeMCPTool is the tools' Authorize over HTTP: the caller is the
// agent handleMCP authenticated, and the tool's scope is checked again.
func (s *Server) authorizeMCPTool(ctx context.Context, req *sdk.CallToolRequest, scope string) (context.Context, error) {
	if req.Extra == nil || req.Extra.TokenInfo == nil {
		return nil, broker.Errorf(broker.EUNAUTHORIZED, "No access token reached the tool.")
	}
	actor, ok := req.Extra.TokenInfo.Extra[mcpActorTokenInfoID].(broker.Actor)
	if !ok {
		return nil, broker.Errorf(broker.EUNAUTHORIZED, "No access token reached the tool.")
	}
	if !slices.Contains(actor.Scopes, scope) {
		return nil, broker.Errorf(broker.EFORBIDDEN, "The access token lacks scope %s, which this tool needs.", scope)
	}
	return broker.NewContextWithActor(ctx, actor), nil
}

// recordMCPCall writes a tool call to the audit log.
func (s *Server) recordMCPCall(ctx context.Context, call mcptools.Call) {
	if s.Audit == nil {
		return
	}
	actor := "anonymous"
	if a, ok := broker.ActorFromContext(ctx); ok {
		actor = a.String()
	}
	if err := s.Audit.Record(ctx, mcpCallEvent(actor, call)); err != nil {
		s.Logger.Error("record mcp tool call", "tool", call.Tool, "lease_id", call.LeaseID, "err", err)
	}
}

// mcpCallEvent is the audit event of a tool call.
func mcpCallEvent(actor string, call mcptools.Call) broker.AuditEvent {
	d := map[string]any{"tool": call.Tool, "transport": call.Transport, "client": call.Client, "session": call.Session}
	if call.Delivery != "" {
		d["delivery"] = call.Delivery
	}
	if call.Error != "" {
		d["error"] = call.Error
	}
	details, _ := json.Marshal(d)
	return broker.AuditEvent{Kind: AuditMCPToolCall, Actor: actor, Subject: call.LeaseID, Details: details}
}

// mcpAuthError is a refusal at the MCP endpoint. handleError renders it
// with the Bearer challenge the MCP authorization specification asks for:
// resource_metadata names the metadata, scope the scopes needed, and error
// says why a token was refused (RFC 6750 §3).
type mcpAuthError struct {
	status    int
	errorCode string // "", "invalid_token" or "insufficient_scope"
	scope     string // defaults to every MCP scope
	err       error
}

func (e *mcpAuthError) Error() string { return e.err.Error() }
func (e *mcpAuthError) Unwrap() error { return e.err }

// writeMCPAuthError renders an mcpAuthError; handleError calls it.
func (s *Server) writeMCPAuthError(c echo.Context, e *mcpAuthError) {
	scope := e.scope
	if scope == "" {
		scope = strings.Join(mcptools.Scopes, " ")
	}
	challenge := fmt.Sprintf(`Bearer resource_metadata=%q, scope=%q`, s.mcpMetadataURL(), scope)
	if e.errorCode != "" {
		challenge += fmt.Sprintf(`, error=%q, error_description=%q`, e.errorCode, strings.ReplaceAll(broker.ErrorMessage(e.err), `"`, "'"))
	}
	h := c.Response().Header()
	h.Set(echo.HeaderWWWAuthenticate, challenge)
	h.Set(echo.HeaderCacheControl, "no-store")
	body := map[string]string{"error": e.errorCode, "error_description": broker.ErrorMessage(e.err)}
	if e.errorCode == "" {
		body["error"] = "unauthorized"
	}
	if err := c.JSON(e.status, body); err != nil && !errors.Is(err, context.Canceled) {
		s.Logger.Warn("write mcp auth error", "err", err)
	}
}

// registerMCPCallRoutes adds the endpoint through which `stint mcp`
// (stdio, beside the agent) records its tool calls in the audit log.
func (s *Server) registerMCPCallRoutes(g *echo.Group) {
	g.POST("/mcp/calls", s.handleMCPCallCreate)
}

// handleMCPCallCreate handles "POST /v1/mcp/calls": an agent records one
// tool call of its stdio MCP server (tool, client, session, lease, delivery,
// error). The lease changes the call made are recorded by the lease service
// itself; this adds what only the MCP server knows. It answers 204.
func (s *Server) handleMCPCallCreate(c echo.Context) error {
	actor := actorOf(c)
	if actor.Kind != broker.ActorAgent {
		return broker.Errorf(broker.EFORBIDDEN, "Only agents record MCP tool calls.")
	}
	var req mcpCallRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if _, ok := mcptools.ToolScopes[req.Tool]; !ok {
		return broker.FieldErrorf("tool", "Unknown MCP tool %q.", req.Tool)
	}
	switch req.Delivery {
	case "", mcptools.DeliveryFile, mcptools.DeliveryExec, mcptools.DeliveryInline:
	default:
		return broker.FieldErrorf("delivery", "Delivery must be file, exec or inline, not %q.", req.Delivery)
	}
	for _, f := range [...]struct {
		name, value string
		max         int
	}{{"client", req.Client, 200}, {"session", req.Session, 200}, {"lease_id", req.LeaseID, 64}, {"error", req.Error, 2000}} {
		if err := firstError(broker.CheckLen(f.name, f.value, f.max), broker.CheckText(f.name, f.value)); err != nil {
			return err
		}
	}
	if s.Audit != nil {
		if err := s.Audit.Record(c.Request().Context(), mcpCallEvent(actor.String(), mcptools.Call{
			Tool: req.Tool, Transport: "stdio", Client: req.Client, Session: req.Session,
			LeaseID: req.LeaseID, Delivery: req.Delivery, Error: req.Error,
		})); err != nil {
			return fmt.Errorf("record mcp tool call: %w", err)
		}
	}
	return c.NoContent(http.StatusNoContent)
}

// mcpCallRequest is the body of "POST /v1/mcp/calls".
type mcpCallRequest struct {
	Tool     string `json:"tool"`
	Client   string `json:"client"`
	Session  string `json:"session"`
	LeaseID  string `json:"lease_id"`
	Delivery string `json:"delivery"`
	Error    string `json:"error"`
}
