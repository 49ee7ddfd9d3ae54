package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/stint-broker/stint/web"
	mcptools "github.com/stint-broker/stint/web/mcp"
)

// MCPConfig turns on the streamable HTTP MCP endpoint (/mcp): an OAuth
// protected resource whose access tokens Stint's own token endpoint issues
// for the resource oauth.issuer + "/mcp". `stint mcp` (stdio) needs none of
// it.
type MCPConfig struct {
	// Enabled serves /mcp and its protected resource metadata; it needs
	// oauth.enabled.
	Enabled bool `yaml:"enabled"`
	// MaxWait caps how long request_access and lease_status wait for a
	// human approval before answering pending.
	MaxWait time.Duration `yaml:"max_wait"`
}

func defaultMCPConfig() MCPConfig { return MCPConfig{MaxWait: mcptools.DefaultMaxWait} }

// validateMCPConfig checks the mcp section.
func (c *Config) validateMCPConfig() error {
	m := c.MCP
	switch {
	case !m.Enabled:
		return nil
	case !c.OAuth.Enabled:
		return errors.New("mcp.enabled needs oauth.enabled: the MCP endpoint takes only access tokens Stint's token endpoint issues for it")
	case m.MaxWait <= 0 || m.MaxWait > 5*time.Minute:
		return fmt.Errorf("mcp.max_wait %s must be positive and at most 5m", m.MaxWait)
	}
	return nil
}

// openMCP wires the MCP endpoint into the HTTP server and lets the token
// endpoint issue tokens for it. It runs after openIdentity.
func (m *Main) openMCP() {
	mc := m.Config.MCP
	if !mc.Enabled || m.Agents.OAuth == nil {
		return
	}
	resource := web.MCPResource(m.Config.OAuth.Issuer)
	if m.Agents.OAuth.Resources == nil {
		m.Agents.OAuth.Resources = map[string][]string{}
	}
	m.Agents.OAuth.Resources[resource] = mcptools.Scopes
	m.HTTP.MCP = &web.MCPEndpoint{Resource: resource, AuthorizationServer: m.Config.OAuth.Issuer, MaxWait: mc.MaxWait, Version: Version}
}
