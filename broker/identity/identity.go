// Package identity registers agents and authenticates callers: agents with
// ephemeral API keys (stored only as SHA-256 hashes, expiring), admins with
// tokens whose hashes come from configuration or the environment.
package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/stint-broker/stint/broker"
)

// KeyPrefix starts every agent API key, so that leaked keys are easy to find
// with secret scanners.
const KeyPrefix = "stint_ak_"

// AdminToken is an admin credential known by its SHA-256 hash.
type AdminToken struct {
	Name string
	Hash [sha256.Size]byte
}

// NewAdminToken hashes a clear admin token for comparison.
func NewAdminToken(name, token string) AdminToken {
	return AdminToken{Name: name, Hash: sha256.Sum256([]byte(token))}
}

// ParseAdminTokenHash builds an AdminToken from a hex SHA-256 hash.
func ParseAdminTokenHash(name, hexHash string) (AdminToken, error) {
	b, err := hex.DecodeString(hexHash)
	if err != nil || len(b) != sha256.Size {
		return AdminToken{}, fmt.Errorf("admin token %q: sha256 must be 64 hex characters", name)
	}
	t := AdminToken{Name: name}
	copy(t.Hash[:], b)
	return t, nil
}

// Service implements broker.AgentService.
type Service struct {
	Store broker.AgentStore
	// Now is the clock; tests replace it.
	Now func() time.Time
	// KeyTTL is the default API key lifetime; KeyMaxTTL caps requested ones.
	KeyTTL    time.Duration
	KeyMaxTTL time.Duration
	// AdminTokens authenticate admins.
	AdminTokens []AdminToken
	// SeenEvery throttles last-seen writes: an agent's LastSeenAt is updated
	// at most this often.
	SeenEvery time.Duration
}

// NewService returns a service with a 24 h default and 30 day maximum key TTL.
func NewService(store broker.AgentStore, admins []AdminToken) *Service {
	return &Service{
		Store: store, Now: time.Now, KeyTTL: 24 * time.Hour, KeyMaxTTL: 30 * 24 * time.Hour,
		AdminTokens: admins, SeenEvery: time.Minute,
	}
}

func requireAdmin(ctx context.Context) error {
	a, ok := broker.ActorFromContext(ctx)
	if !ok {
		return broker.Errorf(broker.EUNAUTHORIZED, "Authentication required.")
	} else if !a.IsAdmin() {
		return broker.Errorf(broker.EFORBIDDEN, "Only admins manage agents.")
	}
	return nil
}

// CreateAgent implements broker.AgentService.
func (s *Service) CreateAgent(ctx context.Context, na broker.NewAgent) (*broker.Agent, string, *broker.APIKey, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, "", nil, err
	}
	if na.Labels == nil {
		na.Labels = map[string]string{}
	}
	now := s.Now().UTC()
	a := &broker.Agent{
		ID: uuid.Must(uuid.NewV7()).String(), Name: na.Name, Owner: strings.ToLower(na.Owner),
		Labels: na.Labels, State: broker.AgentActive, CreatedAt: now, UpdatedAt: now,
	}
	if err := a.Validate(); err != nil {
		return nil, "", nil, err
	}
	ttl, err := s.keyTTL(na.KeyTTL)
	if err != nil {
		return nil, "", nil, err
	}
	if err := s.Store.CreateAgent(ctx, a); err != nil {
		if broker.ErrorCode(err) == broker.ECONFLICT {
			return nil, "", nil, broker.FieldErrorf("name", "An agent named %q already exists.", a.Name)
		}
		return nil, "", nil, fmt.Errorf("create agent: %w", err)
	}
	secret, key, err := s.newKey(ctx, a.ID, ttl)
	if err != nil {
		return nil, "", nil, err
	}
	return a, secret, key, nil
}

func (s *Service) keyTTL(ttl time.Duration) (time.Duration, error) {
	switch {
	case ttl == 0:
		return s.KeyTTL, nil
	case ttl < time.Minute:
		return 0, broker.FieldErrorf("key_ttl", "Key TTL must be at least 1m.")
	case ttl > s.KeyMaxTTL:
		return 0, broker.FieldErrorf("key_ttl", "Key TTL %s exceeds the maximum of %s.", ttl, s.KeyMaxTTL)
	}
	return ttl, nil
}

// newKey creates and stores a key; the clear key is returned only here.
func (s *Service) newKey(ctx context.Context, agentID string, ttl time.Duration) (string, *broker.APIKey, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", nil, fmt.Errorf("generate key: %w", err)
	}
	secret := KeyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	now := s.Now().UTC()
	k := &broker.APIKey{
		ID: uuid.Must(uuid.NewV7()).String(), AgentID: agentID, Prefix: secret[:len(KeyPrefix)+6],
		Hash: hashKey(secret), CreatedAt: now, ExpiresAt: now.Add(ttl),
	}
	if err := s.Store.CreateAPIKey(ctx, k); err != nil {
		return "", nil, fmt.Errorf("store key: %w", err)
	}
	return secret, k, nil
}

func hashKey(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// RotateKey implements broker.AgentService.
func (s *Service) RotateKey(ctx context.Context, agentID string, ttl time.Duration) (string, *broker.APIKey, error) {
	if err := requireAdmin(ctx); err != nil {
		return "", nil, err
	}
	a, err := s.Store.FindAgentByID(ctx, agentID)
	if err != nil {
		return "", nil, err
	}
	if a.State == broker.AgentDisabled {
		return "", nil, broker.Errorf(broker.ECONFLICT, "Agent %s is disabled; activate it first.", a.Name)
	}
	if ttl, err = s.keyTTL(ttl); err != nil {
		return "", nil, err
	}
	if _, err := s.Store.RevokeAPIKeys(ctx, a.ID, s.Now().UTC()); err != nil {
		return "", nil, fmt.Errorf("revoke old keys: %w", err)
	}
	return s.newKey(ctx, a.ID, ttl)
}

// SetAgentState implements broker.AgentService.
func (s *Service) SetAgentState(ctx context.Context, agentID string, state broker.AgentState) (*broker.Agent, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	switch state {
	case broker.AgentActive, broker.AgentSuspended, broker.AgentDisabled:
	default:
		return nil, broker.FieldErrorf("state", "State must be active, suspended or disabled.")
	}
	a, err := s.Store.UpdateAgent(ctx, agentID, broker.AgentUpdate{State: &state})
	if err != nil {
		return nil, err
	}
	if state == broker.AgentDisabled {
		// A disabled agent's keys never work again, even if it is re-activated.
		if _, err := s.Store.RevokeAPIKeys(ctx, a.ID, s.Now().UTC()); err != nil {
			return nil, fmt.Errorf("revoke keys: %w", err)
		}
	}
	return a, nil
}

// FindAgent implements broker.AgentService.
func (s *Service) FindAgent(ctx context.Context, idOrName string) (*broker.Agent, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	if _, err := uuid.Parse(idOrName); err == nil {
		return s.Store.FindAgentByID(ctx, idOrName)
	}
	return s.Store.FindAgentByName(ctx, idOrName)
}

// FindAgents implements broker.AgentService.
func (s *Service) FindAgents(ctx context.Context, filter broker.AgentFilter) ([]*broker.Agent, int, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, 0, err
	}
	return s.Store.FindAgents(ctx, filter)
}

// Authenticate implements broker.AgentService.
func (s *Service) Authenticate(ctx context.Context, secret string) (broker.Actor, error) {
	unauthorized := broker.Errorf(broker.EUNAUTHORIZED, "Invalid or expired credentials.")
	if secret == "" {
		return broker.Actor{}, broker.Errorf(broker.EUNAUTHORIZED, "Authentication required: send Authorization: Bearer <key>.")
	}
	if !strings.HasPrefix(secret, KeyPrefix) {
		sum := sha256.Sum256([]byte(secret))
		for _, t := range s.AdminTokens {
			if subtle.ConstantTimeCompare(sum[:], t.Hash[:]) == 1 {
				return broker.Actor{Kind: broker.ActorAdmin, Name: t.Name, AuthMethod: "admin_token"}, nil
			}
		}
		return broker.Actor{}, unauthorized
	}
	k, err := s.Store.FindAPIKeyByHash(ctx, hashKey(secret))
	if broker.ErrorCode(err) == broker.ENOTFOUND {
		return broker.Actor{}, unauthorized
	} else if err != nil {
		return broker.Actor{}, fmt.Errorf("find key: %w", err)
	}
	now := s.Now().UTC()
	if !k.Usable(now) {
		return broker.Actor{}, unauthorized
	}
	a, err := s.Store.FindAgentByID(ctx, k.AgentID)
	if err != nil {
		return broker.Actor{}, fmt.Errorf("find agent: %w", err)
	}
	if a.State != broker.AgentActive {
		return broker.Actor{}, broker.Errorf(broker.EUNAUTHORIZED, "Agent %s is %s.", a.Name, a.State)
	}
	if a.LastSeenAt == nil || now.Sub(*a.LastSeenAt) >= s.SeenEvery {
		if _, err := s.Store.UpdateAgent(ctx, a.ID, broker.AgentUpdate{LastSeenAt: &now}); err != nil {
			return broker.Actor{}, fmt.Errorf("record last seen: %w", err)
		}
	}
	return broker.Actor{Kind: broker.ActorAgent, Name: a.Name, AgentID: a.ID, AuthMethod: "api_key"}, nil
}
