package web

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/stint-broker/stint/broker"
)

// registerRoleRoutes adds the role catalogue: what the caller may request.
func (s *Server) registerRoleRoutes(g *echo.Group) {
	g.GET("/roles", s.handleRoleIndex)
}

// handleRoleIndex handles "GET /v1/roles": the roles the caller may request,
// by name, with their windows and sensitivity. It never shows Vault paths or
// connection details.
func (s *Server) handleRoleIndex(c echo.Context) error {
	roles, err := s.Leases.Roles(c.Request().Context())
	if err != nil {
		return err
	}
	resp := rolesResponse{Roles: make([]roleResponse, 0, len(roles))}
	for _, r := range roles {
		resp.Roles = append(resp.Roles, roleResponse{
			Name:        r.Name,
			Description: r.Description,
			Kind:        r.Kind,
			Sensitivity: r.Sensitivity,
			DefaultTTL:  r.DefaultTTL.String(),
			MinTTL:      r.MinWindow().String(),
			MaxTTL:      r.MaxTTL.String(),
			AutoApprove: r.AutoApprove,
			MCP:         roleMCPResponse{InlineSecret: r.MCP.InlineSecret},
		})
	}
	return c.JSON(http.StatusOK, resp)
}

// rolesResponse is the body of "GET /v1/roles". TTLs read like "15m0s".
type rolesResponse struct {
	Roles []roleResponse `json:"roles"`
}

type roleResponse struct {
	Name        string                `json:"name"`
	Description string                `json:"description"`
	Kind        broker.CredentialKind `json:"kind"`
	Sensitivity broker.Sensitivity    `json:"sensitivity"`
	DefaultTTL  string                `json:"default_ttl"`
	// MinTTL is the shortest window a request may ask for.
	MinTTL      string `json:"min_ttl"`
	MaxTTL      string `json:"max_ttl"`
	AutoApprove bool   `json:"auto_approve"`
	// MCP says how the MCP tools hand the credential over.
	MCP roleMCPResponse `json:"mcp"`
}

type roleMCPResponse struct {
	// InlineSecret: the MCP tools return this role's secret in the tool
	// result (configured per role), instead of keeping it out of the model.
	InlineSecret bool `json:"inline_secret"`
}
