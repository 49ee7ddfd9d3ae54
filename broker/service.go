package broker

import (
	"context"
	"time"
)

// LeaseRequest is what an agent asks for.
type LeaseRequest struct {
	Role string
	// TTL is the requested window, such as "15m"; empty means the role's default.
	TTL           string
	Task          string
	Justification string
	// Breakglass asks for an emergency grant without approval, for roles
	// that allow it; BreakglassReason is then required.
	Breakglass       bool
	BreakglassReason string
	// IdempotencyKey, when set, makes the request safe to send again: the
	// first request with a key creates the lease, and every later one by
	// the same agent with the same key returns that lease (without a
	// credential) instead of creating another. Keys are per agent.
	IdempotencyKey string
	// Deferred asks that a request granted at once wait in state approved
	// for ActivateLease, as after a human approval, instead of minting now:
	// for callers that hand the credential to another process (stint exec
	// --lease). Policy decides exactly as without it.
	Deferred bool
}

// LeasePreview is what a lease request would get now, decided without
// recording, scoring into the history or minting anything.
type LeasePreview struct {
	Role *Role
	// Window is the window the request would get.
	Window time.Duration
	// Decision is policy's answer with the governance rules applied.
	Decision Decision
}

// LeaseService runs the lease lifecycle for callers identified by the Actor in
// the context. Agents see and act on only their own leases (others answer
// ENOTFOUND); admins see all.
type LeaseService interface {
	// RequestLease decides the request and, when it is granted at once, mints
	// the credential and returns it with the active lease. Returns EINVALID
	// naming the field at fault, ENOTFOUND for an unknown or ineligible role,
	// EDENIED if the decision is negative, and EUNAVAILABLE if Vault cannot be
	// reached (the lease then ends failed and nothing is live).
	RequestLease(ctx context.Context, req LeaseRequest) (*Lease, *Credential, error)
	// FindLeaseByID returns ENOTFOUND if the lease does not exist or the caller
	// may not see it.
	FindLeaseByID(ctx context.Context, id string) (*Lease, error)
	// WaitLease is FindLeaseByID that, while the lease is pending, waits up to
	// wait for it to change state (approved, rejected, timed out, canceled)
	// and returns it as it then is. Errors as FindLeaseByID.
	WaitLease(ctx context.Context, id string, wait time.Duration) (*Lease, error)
	// ActivateLease mints the credential of the caller's approved lease and
	// returns it with the active lease; the window starts now. Only the agent
	// that asked may activate. Returns ENOTFOUND as FindLeaseByID, ECONFLICT
	// if the lease is not approved (still pending, already active or ended,
	// or past its activation deadline), EFORBIDDEN if the agent is no longer
	// active, and EUNAVAILABLE if Vault cannot be reached (the lease then ends
	// failed).
	ActivateLease(ctx context.Context, id string) (*Lease, *Credential, error)
	// CancelLease withdraws the caller's pending or approved lease (state
	// canceled). Returns ENOTFOUND as FindLeaseByID and ECONFLICT if the lease
	// is in any other state.
	CancelLease(ctx context.Context, id string) (*Lease, error)
	// FindLeases returns leases visible to the caller, newest first, and the total.
	FindLeases(ctx context.Context, filter LeaseFilter) ([]*Lease, int, error)
	// FindLeaseEvents returns a visible lease's history, oldest first.
	FindLeaseEvents(ctx context.Context, id string) ([]*LeaseEvent, error)
	// ReleaseLease ends the caller's live lease early. It returns once Vault
	// has revoked the credential (state released), or with state revoking if
	// Vault failed and the retry queue took over. Returns ECONFLICT if the
	// lease has already ended.
	ReleaseLease(ctx context.Context, id string) (*Lease, error)
	// RevokeLease is ReleaseLease for admins, with a reason; the end state is
	// revoked. Returns EFORBIDDEN for non-admins.
	RevokeLease(ctx context.Context, id, reason string) (*Lease, error)
	// ReleaseTask ends every live lease of a task that the caller holds (an
	// admin: of every agent): active leases are released as ReleaseLease
	// does, pending and approved ones canceled. It returns the task's live
	// leases in their new states: ended, revoking while Vault has not
	// confirmed, or issuing if a credential was being minted at that moment
	// (call again). Returns EINVALID if task is empty; EFORBIDDEN for callers
	// that are neither agents nor admins.
	ReleaseTask(ctx context.Context, task string) ([]*Lease, error)
	// RevokeTask is ReleaseTask for admins, with a reason, across every
	// agent: the end state is revoked (canceled for leases not yet minted).
	// Returns EFORBIDDEN unless the caller is an admin; EINVALID if task or
	// reason is empty.
	RevokeTask(ctx context.Context, task, reason string) ([]*Lease, error)
	// ContainAgent is the kill switch: in one store transaction it suspends
	// or disables the agent (or leaves its state alone) and marks every live
	// lease of it (of req.Role, when set) to end; the revocation queue then
	// ends them, retrying until Vault confirms. It returns at once with the
	// progress so far. Returns EFORBIDDEN for non-admins, EINVALID naming
	// reason or state, ENOTFOUND if the agent does not exist.
	ContainAgent(ctx context.Context, req ContainRequest) (*Containment, error)
	// WaitContainment returns a containment with its progress, waiting up
	// to wait for every lease of it to end. Returns ENOTFOUND if there is
	// none with the id or the caller is not an admin.
	WaitContainment(ctx context.Context, id string, wait time.Duration) (*Containment, error)
	// FindContainments returns the agent's containments, newest first, at
	// most limit (0: all); non-admins see none.
	FindContainments(ctx context.Context, agentID string, limit int) ([]*Containment, error)
	// ExtendLease lengthens the caller's active lease's window by ttl (such
	// as "15m"), if policy (action extend) grants it at once, at least half
	// of the window has passed, and the role's max_extensions and
	// max_total_ttl allow it; Vault's lease is renewed to match. Only the
	// agent that holds the lease may extend it. Returns ENOTFOUND as
	// FindLeaseByID, EINVALID naming ttl, ECONFLICT if the lease is not
	// active, too early, or at its limits, EDENIED if policy refuses (the
	// lease then expires as planned), and EUNAVAILABLE if Vault cannot be
	// reached.
	ExtendLease(ctx context.Context, id, ttl string) (*Lease, error)
	// Roles returns the roles the caller may request, by name.
	Roles(ctx context.Context) ([]*Role, error)
	// PreviewLease answers what RequestLease would decide for the calling
	// agent's request now (a dry run): the resolved window and policy's
	// decision, with the governance rules applied. Nothing is recorded or
	// minted. Returns EFORBIDDEN for a non-agent or an agent that is not
	// active, and EINVALID naming role or ttl as RequestLease does.
	PreviewLease(ctx context.Context, req LeaseRequest) (*LeasePreview, error)
	// Ready returns an error if the store or Vault cannot be reached.
	Ready(ctx context.Context) error
}

// ContainRequest asks for a containment (LeaseService.ContainAgent).
type ContainRequest struct {
	AgentID string
	// State is AgentSuspended or AgentDisabled, or empty to leave the
	// agent's state alone and only end its leases (revoke-all).
	State AgentState
	// Role, if set, limits the containment to the agent's leases on it
	// (with an empty State).
	Role string
	// Reason is why, recorded on the containment and on every lease it
	// ends after what was done ("agent suspended: " + Reason). Required
	// when State is empty.
	Reason string
	// KeepDisabled makes suspending a disabled agent end its live leases
	// and leave it disabled, rather than fail with ECONFLICT (disabling is
	// final): governance suspends agents whatever an admin did before.
	KeepDisabled bool
}

// NewAgent is what an operator gives to register an agent.
type NewAgent struct {
	Name   string
	Owner  string
	Labels map[string]string
	// KeyTTL is the API key's lifetime; zero means the configured default.
	KeyTTL time.Duration
	// AuthMethods are the methods the agent may use; nil means api_key only.
	AuthMethods []string
}

// AgentService registers agents and authenticates callers.
type AgentService interface {
	// CreateAgent registers an agent and returns it with its first API key,
	// which is shown only now. An agent whose auth methods leave out api_key
	// gets no key (the string is empty and the *APIKey nil). Returns EINVALID
	// or ECONFLICT (name taken, with Field "name").
	CreateAgent(ctx context.Context, na NewAgent) (*Agent, string, *APIKey, error)
	// RotateKey revokes the agent's keys and returns a new one. A zero ttl
	// means the configured default. Returns ENOTFOUND or ECONFLICT (disabled,
	// or its auth methods leave out api_key).
	RotateKey(ctx context.Context, agentID string, ttl time.Duration) (string, *APIKey, error)
	// ActivateAgent re-activates a suspended agent. There is no way to
	// suspend or disable an agent here: that is the kill switch,
	// LeaseService.ContainAgent, which ends its live leases in the same
	// transaction. Returns ECONFLICT for a disabled agent (disabling is
	// final), ENOTFOUND.
	ActivateAgent(ctx context.Context, agentID string) (*Agent, error)
	// FindAgent looks an agent up by id or by name. Returns ENOTFOUND.
	FindAgent(ctx context.Context, idOrName string) (*Agent, error)
	// FindAgents lists agents.
	FindAgents(ctx context.Context, filter AgentFilter) ([]*Agent, int, error)
	// Authenticate resolves a bearer secret (an agent API key or an admin
	// token) to an actor. Returns EUNAUTHORIZED for anything unusable.
	Authenticate(ctx context.Context, secret string) (Actor, error)
}
