package broker

import "context"

// ActorKind says what sort of caller an Actor is.
type ActorKind string

// Actor kinds.
const (
	ActorAgent  ActorKind = "agent"
	ActorAdmin  ActorKind = "admin"
	ActorSystem ActorKind = "system"
)

// Actor is the authenticated caller of a service method. Agents may act only
// on their own leases; admins on all; the system runs jobs.
type Actor struct {
	Kind ActorKind
	// Name is the agent's name, the admin's name, or the system job's name.
	Name string
	// AgentID is set for agents.
	AgentID string
	// AuthMethod is how the caller authenticated, e.g. "api_key" or "admin_token".
	AuthMethod string
	// SourceIP is the caller's address, when known.
	SourceIP string
	// OnBehalfOf is the human an agent acts for, from an RFC 8693 token
	// exchange; empty when the agent acts for itself. It is the user's email
	// when OnBehalfOfVerified, else the identity provider's id for the user.
	OnBehalfOf string
	// OnBehalfOfVerified says OnBehalfOf is an email address the identity
	// provider verified: the identity approvers have, so separation of duty
	// can keep the user from approving requests made on their behalf.
	// Without it, a delegated request that needs approval is refused.
	OnBehalfOfVerified bool
	// Scopes are the scopes of the access token the actor presented for a
	// protected resource (AuthRequest.Resource); empty otherwise.
	Scopes []string
	// Agent is the agent's record as authentication read it, found active,
	// so that the request need not read it again; nil when unknown.
	Agent *Agent
}

// String renders the actor as recorded in lease history, e.g. "agent:etl-bot".
func (a Actor) String() string { return string(a.Kind) + ":" + a.Name }

// IsAdmin reports whether the actor is an admin.
func (a Actor) IsAdmin() bool { return a.Kind == ActorAdmin }

type actorKey struct{}

// NewContextWithActor returns a context carrying the actor.
func NewContextWithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFromContext returns the actor carried by ctx; ok is false if none.
func ActorFromContext(ctx context.Context) (a Actor, ok bool) {
	a, ok = ctx.Value(actorKey{}).(Actor)
	return a, ok
}

// SystemJob names one of Stint's own jobs, the system actors of lease
// history and the audit chain ("system:<job>").
type SystemJob string

// Stint's own jobs.
const (
	// JobExpiry closes task windows: active → revoking when ExpiresAt passes.
	JobExpiry SystemJob = "expiry"
	// JobApprovalTimeout ends pending leases past DecideBy and approved
	// leases past ActivateBy.
	JobApprovalTimeout SystemJob = "approval-timeout"
	// JobIssuer records what minting did: failures, withheld credentials,
	// windows capped or undone.
	JobIssuer SystemJob = "issuer"
	// JobRevocationQueue retries revocations until Vault confirms them.
	JobRevocationQueue SystemJob = "revocation-queue"
	// JobReconciler fails leases stuck in issuing and revokes credentials
	// no live lease holds.
	JobReconciler SystemJob = "reconciler"
	// JobGovernance raises access-review and break-glass alerts.
	JobGovernance SystemJob = "governance"
	// JobServe is the server itself (start and stop events).
	JobServe SystemJob = "serve"
)

// SystemActor is the actor recorded for work done by one of Stint's own
// jobs; its String is "system:<job>".
func SystemActor(job SystemJob) Actor { return Actor{Kind: ActorSystem, Name: string(job)} }

// GovernanceActor is the actor of the containments Stint's governance
// starts on its own (a risk score over the revoke threshold, an access
// review past its deadline): an admin named "governance", since only admins
// pull the kill switch. Lease history and the audit log record it as
// "admin:governance".
func GovernanceActor() Actor {
	return Actor{Kind: ActorAdmin, Name: "governance", AuthMethod: "local"}
}
