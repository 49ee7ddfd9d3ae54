package leases

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/stint-broker/stint/broker"
)

// Store is what the lease service needs from persistence.
type Store interface {
	broker.LeaseStore
	broker.AgentStore
	broker.ContainmentStore
	broker.IdempotencyStore
	// Ping returns an error if the store cannot be reached.
	Ping(ctx context.Context) error
}

// The system actors this service records in lease history.
var (
	actorExpiry          = broker.SystemActor(broker.JobExpiry).String()
	actorApprovalTimeout = broker.SystemActor(broker.JobApprovalTimeout).String()
	actorIssuer          = broker.SystemActor(broker.JobIssuer).String()
	actorRevocationQueue = broker.SystemActor(broker.JobRevocationQueue).String()
	actorReconciler      = broker.SystemActor(broker.JobReconciler).String()
)

// Service implements broker.LeaseService. Set the exported fields, then call
// NewService's result's Run in a goroutine to drive expiry and revocation.
type Service struct {
	Store  Store
	Issuer Issuer
	Logger *slog.Logger
	// Decider decides requests (the approvals package's policy). Nil keeps
	// the built-in rule: eligible agents get auto_approve roles, nothing else.
	Decider broker.Decider
	// PendingTimeout is how long a lease may wait for approvals before it
	// ends timed_out (DecideBy).
	PendingTimeout time.Duration
	// ActivateWithin is how long a deferred grant (LeaseRequest.Deferred)
	// waits in state approved for its agent to activate it (ActivateBy).
	ActivateWithin time.Duration
	// OnChange, if set, is called with a lease's id after this service moves
	// it to a new state, so that approvals can notify (it must not block).
	OnChange func(leaseID string)

	// Now is the clock; tests replace it.
	Now func() time.Time

	// RetryBase and RetryMax bound the revocation queue's exponential backoff.
	RetryBase time.Duration
	RetryMax  time.Duration
	// ClaimTimeout is how long a claimed revocation is hidden from other
	// workers; a worker that dies mid-revoke is retried after it.
	ClaimTimeout time.Duration
	// MaxSleep caps the expiry loop's timer, as a safety net for clock steps
	// and for leases written by another process (a containment from the
	// CLI is picked up within it).
	MaxSleep time.Duration
	// BatchSize is how many due leases one claim takes.
	BatchSize int
	// Workers is how many revocations run at once.
	Workers int
	// IssuingTimeout is how long a lease may stay issuing before the
	// reconciler fails it.
	IssuingTimeout time.Duration
	// OrphanGrace is how old an unknown Vault credential must be before the
	// reconciler revokes it (younger ones may be a mint in flight).
	OrphanGrace time.Duration

	roles  []*broker.Role
	byRole map[string]*broker.Role
	wake   chan struct{}
	// sleepsUntil is when the expiry loop's timer fires, in Unix
	// nanoseconds; 0 while the loop is not sleeping (or not running), when
	// every wake-up request pokes it (expiry.go).
	sleepsUntil atomic.Int64
	mu          sync.Mutex // guards roles and byRole

	changeMu sync.Mutex
	changed  chan struct{} // closed and replaced by LeaseChanged; wakes WaitLease

	// MaxLiveLeases caps each agent's outstanding leases (pending,
	// approved, issuing, active, revoking); a request over it gets ETOOMANY
	// with Retry-After (limits.go). Zero means no cap.
	MaxLiveLeases int
	slotLocks     sync.Map // agent id → *sync.Mutex
	// Cap enforces MaxLiveLeases in the store, in the transaction that
	// creates the lease, so that replicas on one store cannot together
	// exceed it; NewService sets it when the store implements it. Without
	// it, the cap holds within this process only.
	Cap broker.LeaseCapStore
	// Approvals records approvers' verdicts with the lease change each
	// brings about (RecordVerdict, approval.go); NewService sets it when the
	// store implements it.
	Approvals VerdictStore

	// Governance (governance.go, breakglass.go, extend.go). Risk scores
	// every request (nil: 0). Guard makes leases live under separation of
	// duty and applies extensions atomically; NewService sets it when the
	// store implements it. Grants hears of every activation (owner notices,
	// break-glass alerts and post-reviews). Renewer renews Vault leases for
	// extensions (nil: extensions are refused). Privileged, when set,
	// enforces the safeguards on high and critical roles.
	Risk       broker.RiskScorer
	Guard      broker.LeaseGuard
	Grants     broker.GrantObserver
	Renewer    Renewer
	Privileged *PrivilegedRules
	conflicts  broker.ConflictSets // guarded by mu; SetConflicts
	// Credentials ends a disabled agent's keys and certificates
	// (contain.go); nil leaves them to expire.
	Credentials AgentCredentials
	// Alerts tells security about risk containments (risk.go); nil only
	// logs them.
	Alerts Alerter

	// Claims hands the revocations this service claimed back to the store
	// when it stops (ReleaseClaims, claims.go); NewService sets it when the
	// store implements it. claims maps a lease id to the NextRevokeAt of
	// this service's claim of it.
	Claims   broker.RevocationClaimStore
	claimsMu sync.Mutex
	claims   map[string]time.Time
}

// NewService returns a service with default settings for the given roles.
func NewService(store Store, issuer Issuer, roles []*broker.Role, logger *slog.Logger) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		Store:          store,
		Issuer:         issuer,
		Logger:         logger,
		Now:            time.Now,
		RetryBase:      2 * time.Second,
		RetryMax:       30 * time.Second,
		ClaimTimeout:   30 * time.Second,
		MaxSleep:       5 * time.Second,
		BatchSize:      500,
		Workers:        16,
		IssuingTimeout: time.Minute,
		OrphanGrace:    time.Minute,
		PendingTimeout: time.Hour,
		ActivateWithin: 15 * time.Minute,
		wake:           make(chan struct{}, 1),
		changed:        make(chan struct{}),
	}
	s.SetRoles(roles)
	if g, ok := store.(broker.LeaseGuard); ok {
		s.Guard = g
	}
	s.Cap, _ = store.(broker.LeaseCapStore)
	s.Claims, _ = store.(broker.RevocationClaimStore)
	s.Approvals, _ = store.(VerdictStore)
	return s
}

// SetRoles replaces the requestable roles (on start and on reload).
func (s *Service) SetRoles(roles []*broker.Role) {
	byRole := make(map[string]*broker.Role, len(roles))
	for _, r := range roles {
		byRole[r.Name] = r
	}
	sorted := append([]*broker.Role(nil), roles...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	s.mu.Lock()
	s.roles, s.byRole = sorted, byRole
	s.mu.Unlock()
}

func (s *Service) role(name string) *broker.Role {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byRole[name]
}

func (s *Service) allRoles() []*broker.Role {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.roles
}

// Poke wakes the expiry loop so it recomputes its next deadline.
func (s *Service) Poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func actorFrom(ctx context.Context) (broker.Actor, error) {
	a, ok := broker.ActorFromContext(ctx)
	if !ok {
		return broker.Actor{}, broker.Errorf(broker.EUNAUTHORIZED, "Authentication required.")
	}
	return a, nil
}

// RequestLease implements broker.LeaseService.
func (s *Service) RequestLease(ctx context.Context, req broker.LeaseRequest) (*broker.Lease, *broker.Credential, error) {
	actor, err := actorFrom(ctx)
	if err != nil {
		return nil, nil, err
	}
	if actor.Kind != broker.ActorAgent {
		return nil, nil, broker.Errorf(broker.EFORBIDDEN, "Only agents request leases.")
	}
	switch {
	case req.Role == "":
		return nil, nil, broker.FieldErrorf("role", "Role is required.")
	case strings.TrimSpace(req.Task) == "":
		return nil, nil, broker.FieldErrorf("task", "Task is required: say what the access is for.")
	}
	// Approvers read these in terminals, Slack and the console.
	for _, f := range [...]struct {
		name, text string
		max        int
	}{
		{"task", req.Task, broker.MaxTaskLen},
		{"justification", req.Justification, broker.MaxJustificationLen},
		{"breakglass_reason", req.BreakglassReason, broker.MaxBreakglassReasonLen},
	} {
		if err := broker.CheckLen(f.name, f.text, f.max); err != nil {
			return nil, nil, err
		}
	}
	if err := checkIdempotencyKey(req); err != nil {
		return nil, nil, err
	}
	agent := actor.Agent
	if agent == nil || agent.ID != actor.AgentID {
		if agent, err = s.Store.FindAgentByID(ctx, actor.AgentID); err != nil {
			return nil, nil, fmt.Errorf("find agent: %w", err)
		}
	}
	role, window, err := s.requestable(agent, req) // approve.go
	if err != nil {
		return nil, nil, err
	}
	id := uuid.Must(uuid.NewV7()).String()
	created := false // whether the lease row exists; a held key is let go otherwise
	if req.IdempotencyKey != "" {
		// A copy of a request already seen returns its lease; a new key
		// is held for this request until the lease exists (idempotency.go).
		prior, claimed, err := s.claimIdempotencyKey(ctx, agent, req, id)
		if err != nil || !claimed {
			return prior, nil, err
		}
		defer func() {
			if !created {
				s.forgetIdempotencyKey(ctx, agent.ID, req.IdempotencyKey, id)
			}
		}()
	}
	release, err := s.reserveLeaseSlot(ctx, agent)
	if err != nil {
		return nil, nil, err
	}
	defer release()

	now := s.Now().UTC()
	l := &broker.Lease{
		ID:            id,
		AgentID:       agent.ID,
		Agent:         agent.Name,
		Role:          role.Name,
		Task:          req.Task,
		Justification: req.Justification,
		TTL:           broker.Duration(window),
		VaultPath:     role.Vault.Path,
		AuthMethod:    actor.AuthMethod,
		OnBehalfOf:    actor.OnBehalfOf,
		SourceIP:      actor.SourceIP,
		CreatedAt:     now,
		UpdatedAt:     now,
	}

	risk, err := s.scoreRisk(ctx, broker.DecisionRequest{Action: broker.ActionRequest, Agent: agent, Role: role, TTL: window,
		Task: req.Task, Time: now, Breakglass: req.Breakglass}, actor)
	if err != nil {
		return nil, nil, err
	}
	decision, err := s.decide(ctx, agent, role, window, req, actor, now, risk)
	if err != nil {
		return nil, nil, err
	}
	l.PolicyDecision, l.RiskScore, l.RiskFactors = &decision, risk.Score, risk.Factors
	l.Breakglass = req.Breakglass && decision.Outcome == broker.OutcomeApprove
	l.Decision = decisionText(decision)
	switch {
	case decision.Outcome == broker.OutcomeApprove && req.Deferred:
		// Granted, but the credential is minted when the agent activates
		// the lease (from the process that will use it).
		l.State = broker.LeaseApproved
		l.ActivateBy = ptr(now.Add(s.ActivateWithin))
	case decision.Outcome == broker.OutcomeApprove:
		l.State = broker.LeaseIssuing
	case decision.Outcome == broker.OutcomeApprovals:
		l.State = broker.LeasePending
		l.DecideBy = ptr(now.Add(s.PendingTimeout))
	default:
		l.State = broker.LeaseDenied
	}
	switch l.State {
	case broker.LeaseDenied:
		l.EndedAt = &now
		if err := s.Store.CreateLease(ctx, l, actor.String(), l.Decision); err != nil {
			return nil, nil, fmt.Errorf("record denied lease: %w", err)
		}
		created = true
		s.Logger.Info("lease denied", "lease_id", l.ID, "agent", l.Agent, "role", l.Role, "reason", l.Decision)
		if risk.Contain {
			// The request is denied and on record; containing the agent
			// is the next step, not part of scoring.
			s.containRisk(ctx, agent.ID, risk, "request for role "+role.Name)
		}
		return l, nil, broker.Errorf(broker.EDENIED, "Request denied: %s.", l.Decision)
	case broker.LeasePending:
		if err := s.createCapped(ctx, l, actor.String(), l.Decision, nil); broker.ErrorCode(err) == broker.ETOOMANY {
			return nil, nil, err
		} else if err != nil {
			return nil, nil, fmt.Errorf("record pending lease: %w", err)
		}
		created = true
		s.Logger.Info("lease pending approval", "lease_id", l.ID, "agent", l.Agent, "role", l.Role,
			"approvals", decision.Approvals, "group", decision.ApproverGroup, "decide_by", l.DecideBy)
		s.LeaseChanged(l.ID)
		return l, nil, nil
	case broker.LeaseApproved:
		if err := s.Store.CreateLease(ctx, l, actor.String(), l.Decision+"; the credential is minted when the agent activates the lease"); err != nil {
			return nil, nil, fmt.Errorf("record approved lease: %w", err)
		}
		created = true
		s.Logger.Info("lease approved for later activation", "lease_id", l.ID, "agent", l.Agent, "role", l.Role, "activate_by", l.ActivateBy)
		s.LeaseChanged(l.ID)
		return l, nil, nil
	}

	// Write ahead: the lease exists before Vault is asked to mint. With
	// conflicting roles, separation of duty is checked in the same
	// transaction (governance.go).
	err = s.createLive(ctx, l, actor.String(), l.Decision)
	if broker.ErrorCode(err) == broker.ETOOMANY {
		return nil, nil, err
	}
	if broker.ErrorCode(err) == broker.EDENIED {
		created = true // recorded denied
		return l, nil, err
	} else if err != nil {
		return nil, nil, fmt.Errorf("record lease intent: %w", err)
	}
	created = true
	release() // the lease counts against the cap now; minting needs no lock
	return s.activate(ctx, l, role, actor)
}

// activate mints the credential for an issuing lease and makes it active.
func (s *Service) activate(ctx context.Context, l *broker.Lease, role *broker.Role, actor broker.Actor) (*broker.Lease, *broker.Credential, error) {
	window := time.Duration(l.TTL)
	grant, err := s.Issuer.Issue(ctx, IssueRequest{LeaseID: l.ID, Agent: l.Agent, Role: role, Window: window})
	if err != nil {
		reason := "mint failed"
		if errors.Is(err, ErrUnavailable) {
			reason = "mint failed: Vault unreachable"
		}
		// Mint failed: nothing is live (a mint that did land unseen is the
		// reconciler's to find). Use a fresh context: the caller's may be done.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, uerr := s.Store.UpdateLease(fctx, l.ID, broker.LeaseUpdate{
			From: []broker.LeaseState{broker.LeaseIssuing}, State: ptr(broker.LeaseFailed),
			EndedAt: ptr(s.Now().UTC()), Actor: actorIssuer, Reason: reason,
		}); uerr != nil {
			s.Logger.Error("record failed mint", "lease_id", l.ID, "err", uerr)
		}
		s.Logger.Warn("mint failed", "lease_id", l.ID, "agent", l.Agent, "role", l.Role, "err", err)
		if errors.Is(err, ErrUnavailable) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("mint lease %s: %w", l.ID, err)
	}

	activated := s.Now().UTC()
	expires := activated.Add(window)
	updated, err := s.Store.UpdateLease(ctx, l.ID, broker.LeaseUpdate{
		From:         []broker.LeaseState{broker.LeaseIssuing},
		AgentActive:  true, // a contained agent's credential never leaves
		State:        ptr(broker.LeaseActive),
		VaultLeaseID: &grant.VaultLeaseID,
		Username:     &grant.Username,
		ActivatedAt:  &activated,
		ExpiresAt:    &expires,
		Actor:        actor.String(),
		Reason:       "credential minted",
		Base:         l, // as written ahead: the store need not read it again
	})
	if err != nil {
		// The credential must not leave without its Vault id on record, nor
		// reach an agent that was contained while Vault minted: the
		// revocation queue takes it (contain.go).
		return nil, nil, s.handOver(ctx, l, grant.VaultLeaseID, err)
	}
	s.activated(updated)
	s.granted(ctx, updated, role) // governance.go

	credExpires := expires
	if grant.LeaseDuration > 0 {
		if v := activated.Add(grant.LeaseDuration); v.Before(credExpires) {
			credExpires = v
		}
	}
	cred := &broker.Credential{
		Kind:          role.Kind,
		Data:          grant.Data,
		Connection:    role.Connection,
		LeaseDuration: int(grant.LeaseDuration / time.Second),
		ExpiresAt:     credExpires,
	}
	s.Logger.Info("lease active", "lease_id", l.ID, "agent", l.Agent, "role", l.Role, "expires_at", expires)
	return updated, cred, nil
}

// FindLeaseByID implements broker.LeaseService.
func (s *Service) FindLeaseByID(ctx context.Context, id string) (*broker.Lease, error) {
	actor, err := actorFrom(ctx)
	if err != nil {
		return nil, err
	}
	l, err := s.Store.FindLeaseByID(ctx, id)
	if err != nil {
		return nil, err
	}
	if !actor.IsAdmin() && l.AgentID != actor.AgentID {
		// Not found rather than forbidden: an agent cannot probe others' leases.
		return nil, broker.Errorf(broker.ENOTFOUND, "Lease not found.")
	}
	return l, nil
}

// FindLeases implements broker.LeaseService.
func (s *Service) FindLeases(ctx context.Context, filter broker.LeaseFilter) ([]*broker.Lease, int, error) {
	actor, err := actorFrom(ctx)
	if err != nil {
		return nil, 0, err
	}
	if !actor.IsAdmin() {
		if filter.AgentID != nil && *filter.AgentID != actor.AgentID {
			return []*broker.Lease{}, 0, nil
		}
		filter.AgentID = &actor.AgentID
	}
	return s.Store.FindLeases(ctx, filter)
}

// FindLeaseEvents implements broker.LeaseService.
func (s *Service) FindLeaseEvents(ctx context.Context, id string) ([]*broker.LeaseEvent, error) {
	if _, err := s.FindLeaseByID(ctx, id); err != nil {
		return nil, err
	}
	return s.Store.FindLeaseEvents(ctx, id)
}

// ReleaseLease implements broker.LeaseService.
func (s *Service) ReleaseLease(ctx context.Context, id string) (*broker.Lease, error) {
	actor, err := actorFrom(ctx)
	if err != nil {
		return nil, err
	}
	l, err := s.FindLeaseByID(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.end(ctx, l, broker.LeaseReleased, actor.String(), "released by the agent")
}

// RevokeLease implements broker.LeaseService.
func (s *Service) RevokeLease(ctx context.Context, id, reason string) (*broker.Lease, error) {
	actor, err := actorFrom(ctx)
	if err != nil {
		return nil, err
	}
	if !actor.IsAdmin() {
		return nil, broker.Errorf(broker.EFORBIDDEN, "Only admins revoke leases; agents release their own.")
	}
	if strings.TrimSpace(reason) == "" {
		return nil, broker.FieldErrorf("reason", "A reason is required to revoke a lease.")
	}
	if err := broker.CheckLen("reason", reason, broker.MaxReasonLen); err != nil {
		return nil, err
	}
	l, err := s.Store.FindLeaseByID(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.end(ctx, l, broker.LeaseRevoked, actor.String(), reason)
}

// end moves an active lease to revoking and tries to revoke it at once. It
// returns the lease in endState if Vault confirmed, or in revoking if the
// retry queue took over.
func (s *Service) end(ctx context.Context, l *broker.Lease, endState broker.LeaseState, actor, reason string) (*broker.Lease, error) {
	if l.State != broker.LeaseActive {
		return nil, broker.Errorf(broker.ECONFLICT, "Lease is %s, not active.", l.State)
	}
	now := s.Now().UTC()
	l, err := s.Store.UpdateLease(ctx, l.ID, broker.LeaseUpdate{
		From:         []broker.LeaseState{broker.LeaseActive},
		State:        ptr(broker.LeaseRevoking),
		EndState:     &endState,
		NextRevokeAt: ptr(now.Add(s.ClaimTimeout)), // the queue's safety net if we die mid-revoke
		Actor:        actor,
		Reason:       reason,
	})
	if err != nil {
		return nil, err
	}
	s.holdClaims(l)
	// Revocation must finish even if the caller goes away.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	done, err := s.attemptRevoke(rctx, l, actor)
	if err == nil {
		s.dropClaims(l.ID)
	}
	return done, err
}

// attemptRevoke revokes a revoking lease's credential once. On success the
// lease moves to its end state; on failure it stays revoking with its next
// attempt scheduled by backoff.
func (s *Service) attemptRevoke(ctx context.Context, l *broker.Lease, actor string) (*broker.Lease, error) {
	err := s.Issuer.Revoke(ctx, l.VaultLeaseID)
	now := s.Now().UTC()
	if err == nil {
		done, uerr := s.Store.UpdateLease(ctx, l.ID, broker.LeaseUpdate{
			From:         []broker.LeaseState{broker.LeaseRevoking},
			State:        &l.EndState,
			EndedAt:      &now,
			NextRevokeAt: &time.Time{},
			RevokeError:  ptr(""),
			Actor:        actor,
			Reason:       "revocation confirmed by Vault",
		})
		if uerr != nil {
			return nil, fmt.Errorf("record revocation: %w", uerr)
		}
		s.Logger.Info("lease ended", "lease_id", l.ID, "agent", l.Agent, "role", l.Role, "state", done.State)
		return done, nil
	}

	return s.queueRetry(ctx, l, err)
}

// queueRetry records a failed revocation attempt and schedules the next one
// by backoff. The lease stays revoking.
func (s *Service) queueRetry(ctx context.Context, l *broker.Lease, err error) (*broker.Lease, error) {
	now := s.Now().UTC()
	attempts := l.RevokeAttempts + 1
	next := now.Add(broker.Backoff(s.RetryBase, s.RetryMax, attempts))
	msg := broker.RetryErrorText(err)
	s.Logger.Warn("revocation failed; queued for retry", "lease_id", l.ID, "agent", l.Agent, "role", l.Role,
		"attempt", attempts, "next_attempt", next, "err", err)
	queued, uerr := s.Store.UpdateLease(ctx, l.ID, broker.LeaseUpdate{
		From:           []broker.LeaseState{broker.LeaseRevoking},
		RevokeAttempts: &attempts,
		NextRevokeAt:   &next,
		RevokeError:    &msg,
		Actor:          actorRevocationQueue,
		Reason:         fmt.Sprintf("revocation attempt %d failed: %s", attempts, msg),
	})
	if uerr != nil {
		return nil, fmt.Errorf("record failed revocation: %w", uerr)
	}
	s.Poke()
	return queued, nil
}

// Roles implements broker.LeaseService.
func (s *Service) Roles(ctx context.Context) ([]*broker.Role, error) {
	actor, err := actorFrom(ctx)
	if err != nil {
		return nil, err
	}
	all := s.allRoles()
	if actor.IsAdmin() {
		return all, nil
	}
	agent, err := s.Store.FindAgentByID(ctx, actor.AgentID)
	if err != nil {
		return nil, fmt.Errorf("find agent: %w", err)
	}
	out := make([]*broker.Role, 0, len(all))
	for _, r := range all {
		if r.EligibleFor(agent) {
			out = append(out, r)
		}
	}
	return out, nil
}

// Ready implements broker.LeaseService.
func (s *Service) Ready(ctx context.Context) error {
	if err := s.Store.Ping(ctx); err != nil {
		return broker.Errorf(broker.EUNAVAILABLE, "The store is unreachable.")
	}
	if err := s.Issuer.Ping(ctx); err != nil {
		return broker.Errorf(broker.EUNAVAILABLE, "Vault is unreachable or sealed.")
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
