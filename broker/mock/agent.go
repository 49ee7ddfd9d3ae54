package mock

import (
	"context"
	"time"

	"github.com/stint-broker/stint/broker"
)

var _ broker.AgentService = (*AgentService)(nil)

// AgentService is a mock of broker.AgentService.
type AgentService struct {
	CreateAgentFn   func(ctx context.Context, na broker.NewAgent) (*broker.Agent, string, *broker.APIKey, error)
	RotateKeyFn     func(ctx context.Context, agentID string, ttl time.Duration) (string, *broker.APIKey, error)
	ActivateAgentFn func(ctx context.Context, agentID string) (*broker.Agent, error)
	FindAgentFn     func(ctx context.Context, idOrName string) (*broker.Agent, error)
	FindAgentsFn    func(ctx context.Context, filter broker.AgentFilter) ([]*broker.Agent, int, error)
	AuthenticateFn  func(ctx context.Context, secret string) (broker.Actor, error)
}

// CreateAgent implements broker.AgentService by calling CreateAgentFn.
func (s *AgentService) CreateAgent(ctx context.Context, na broker.NewAgent) (*broker.Agent, string, *broker.APIKey, error) {
	return s.CreateAgentFn(ctx, na)
}

// RotateKey implements broker.AgentService by calling RotateKeyFn.
func (s *AgentService) RotateKey(ctx context.Context, agentID string, ttl time.Duration) (string, *broker.APIKey, error) {
	return s.RotateKeyFn(ctx, agentID, ttl)
}

// ActivateAgent implements broker.AgentService by calling ActivateAgentFn.
func (s *AgentService) ActivateAgent(ctx context.Context, agentID string) (*broker.Agent, error) {
	return s.ActivateAgentFn(ctx, agentID)
}

// FindAgent implements broker.AgentService by calling FindAgentFn.
func (s *AgentService) FindAgent(ctx context.Context, idOrName string) (*broker.Agent, error) {
	return s.FindAgentFn(ctx, idOrName)
}

// FindAgents implements broker.AgentService by calling FindAgentsFn.
func (s *AgentService) FindAgents(ctx context.Context, filter broker.AgentFilter) ([]*broker.Agent, int, error) {
	return s.FindAgentsFn(ctx, filter)
}

// Authenticate implements broker.AgentService by calling AuthenticateFn.
func (s *AgentService) Authenticate(ctx context.Context, secret string) (broker.Actor, error) {
	return s.AuthenticateFn(ctx, secret)
}
