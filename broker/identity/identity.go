// Package identity registers agents and authenticates callers: agents with
// ephemeral API keys (stored only as SHA-256 hashes, expiring), client
// certificates (Stint's enrolment CA or SPIFFE X.509-SVIDs), and OAuth 2.0
// access tokens that Stint issues at its token endpoint (client_secret_basic,
// client_secret_post, private_key_jwt, tls_client_auth; RFC 8693 token
// exchange); admins with
// tokens whose hashes come from configuration or the environment. It also
// enforces per-agent request rates and counts failed authentications.
package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
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

	// Identity keeps issued certificates and used assertion ids; NewService
	// takes it from the store when the store implements it.
	Identity broker.IdentityStore
	// CA is the enrolment CA; nil disables enrolment and Stint-issued
	// certificates.
	CA *CA
	// SPIFFE are the trust bundles whose X.509-SVIDs authenticate agents
	// mapped to their SPIFFE IDs.
	SPIFFE []*TrustBundle
	// CertTTL is the default lifetime of an enrolled certificate; CertMaxTTL
	// caps requested ones.
	CertTTL    time.Duration
	CertMaxTTL time.Duration
	// OAuth enables the token endpoint and access tokens; nil disables them.
	OAuth *OAuth
	// Limits caps each agent's request rate; nil disables it.
	Limits *RateLimiter
	// Failures counts failed authentications.
	Failures *FailureCounter
	// Logger receives warnings; never a secret.
	Logger *slog.Logger
}

// NewService returns a service with a 24 h default and 30 day maximum key TTL.
func NewService(store broker.AgentStore, admins []AdminToken) *Service {
	s := &Service{
		Store: store, Now: time.Now, KeyTTL: 24 * time.Hour, KeyMaxTTL: 30 * 24 * time.Hour,
		AdminTokens: admins, SeenEvery: time.Minute,
		CertTTL: 24 * time.Hour, CertMaxTTL: 7 * 24 * time.Hour,
		Failures: NewFailureCounter(), Logger: slog.New(slog.DiscardHandler),
	}
	s.Identity, _ = store.(broker.IdentityStore)
	// Failed authentications are counted in the store when it can, so
	// that every replica sees them.
	s.Failures.Store, _ = store.(broker.AuthFailureStore)
	return s
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
	if na.AuthMethods == nil {
		na.AuthMethods = broker.DefaultAuthMethods()
	}
	a := &broker.Agent{
		ID: uuid.Must(uuid.NewV7()).String(), Name: na.Name, Owner: strings.ToLower(na.Owner),
		Labels: na.Labels, State: broker.AgentActive, CreatedAt: now, UpdatedAt: now,
		AuthMethods: na.AuthMethods,
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
			return nil, "", nil, &broker.Error{Code: broker.ECONFLICT, Field: "name", Message: fmt.Sprintf("An agent named %q already exists.", a.Name)}
		}
		return nil, "", nil, fmt.Errorf("create agent: %w", err)
	}
	if !a.Allows(broker.AuthAPIKey) {
		// A key the agent may not use would only be refused.
		return a, "", nil, nil
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
		return "", nil, broker.Errorf(broker.ECONFLICT, "Agent %s is disabled for good; register a new agent instead.", a.Name)
	}
	if !a.Allows(broker.AuthAPIKey) {
		return "", nil, broker.Errorf(broker.ECONFLICT, "Agent %s may not use API keys (auth methods: %s); allow api_key first.", a.Name, strings.Join(a.AuthMethods, ", "))
	}
	if ttl, err = s.keyTTL(ttl); err != nil {
		return "", nil, err
	}
	if _, err := s.Store.RevokeAPIKeys(ctx, a.ID, s.Now().UTC()); err != nil {
		return "", nil, fmt.Errorf("revoke old keys: %w", err)
	}
	return s.newKey(ctx, a.ID, ttl)
}

// RevokeAgentCredentials revokes the agent's API keys and Stint-issued
// certificates: a disabled agent's never work again, even if it is
// re-activated. It implements leases.AgentCredentials, which a containment
// that disables the agent calls.
func (s *Service) RevokeAgentCredentials(ctx context.Context, agentID, reason string) error {
	now := s.Now().UTC()
	if _, err := s.Store.RevokeAPIKeys(ctx, agentID, now); err != nil {
		return fmt.Errorf("revoke keys: %w", err)
	}
	if s.Identity != nil {
		if _, err := s.Identity.RevokeCertificates(ctx, agentID, "", now, reason); err != nil {
			return fmt.Errorf("revoke certificates: %w", err)
		}
	}
	return nil
}

// ActivateAgent implements broker.AgentService. It only re-activates:
// suspending and disabling are containments (leases.Service.ContainAgent),
// which end the agent's live leases in the same transaction, so that no
// caller can take an agent out of service and leave its credentials alive.
func (s *Service) ActivateAgent(ctx context.Context, agentID string) (*broker.Agent, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	// The store refuses, in the same transaction, to move a disabled agent
	// to any other state: disabling is final.
	return s.Store.UpdateAgent(ctx, agentID, broker.AgentUpdate{State: new(broker.AgentActive)})
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

// Authenticate implements broker.AgentService: an API key or an admin token.
// It neither counts failures nor applies rate limits; AuthenticateRequest,
// which the HTTP API uses, does both.
func (s *Service) Authenticate(ctx context.Context, secret string) (broker.Actor, error) {
	actor, _, err := s.authenticateSecret(ctx, secret, s.Now().UTC())
	return actor, err
}

// authenticateSecret resolves an API key or admin token. On failure it also
// returns the id of the agent the key belonged to, when it found one.
func (s *Service) authenticateSecret(ctx context.Context, secret string, now time.Time) (broker.Actor, string, error) {
	unauthorized := broker.Errorf(broker.EUNAUTHORIZED, "Invalid or expired credentials.")
	if secret == "" {
		return broker.Actor{}, "", broker.Errorf(broker.EUNAUTHORIZED, "Authentication required: send Authorization: Bearer <key>.")
	}
	if !strings.HasPrefix(secret, KeyPrefix) {
		sum := sha256.Sum256([]byte(secret))
		for _, t := range s.AdminTokens {
			if subtle.ConstantTimeCompare(sum[:], t.Hash[:]) == 1 {
				return broker.Actor{Kind: broker.ActorAdmin, Name: t.Name, AuthMethod: broker.AuthAdminToken}, "", nil
			}
		}
		return broker.Actor{}, "", unauthorized
	}
	k, a, err := s.Store.FindAgentByAPIKeyHash(ctx, hashKey(secret))
	if broker.ErrorCode(err) == broker.ENOTFOUND {
		return broker.Actor{}, "", unauthorized
	} else if err != nil {
		return broker.Actor{}, "", fmt.Errorf("find key: %w", err)
	}
	if !k.Usable(now) {
		return broker.Actor{}, k.AgentID, unauthorized
	}
	if err := admit(a, broker.AuthAPIKey); err != nil {
		return broker.Actor{}, a.ID, err
	}
	s.touch(ctx, a, now)
	return broker.Actor{Kind: broker.ActorAgent, Name: a.Name, AgentID: a.ID, AuthMethod: broker.AuthAPIKey, Agent: a}, "", nil
}

// admit refuses an agent that is not active or may not use method.
func admit(a *broker.Agent, method string) error {
	if a.State != broker.AgentActive {
		return broker.Errorf(broker.EUNAUTHORIZED, "Agent %s is %s.", a.Name, a.State)
	}
	if !a.Allows(method) {
		return broker.Errorf(broker.EUNAUTHORIZED, "Agent %s may not authenticate with %s.", a.Name, method)
	}
	return nil
}

// touch records that the agent was seen, at most every SeenEvery. A failed
// write is logged, not fatal: the caller did authenticate.
func (s *Service) touch(ctx context.Context, a *broker.Agent, now time.Time) {
	if a.LastSeenAt != nil && now.Sub(*a.LastSeenAt) < s.SeenEvery {
		return
	}
	if _, err := s.Store.UpdateAgent(ctx, a.ID, broker.AgentUpdate{LastSeenAt: &now}); err != nil {
		s.Logger.Warn("record agent last seen", "agent", a.Name, "err", err)
	}
}
