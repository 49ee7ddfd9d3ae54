package broker

import (
	"context"
	"strings"
	"time"
)

// LeaseState is where a lease is in its life. The README's "How a lease works"
// has the diagram; transition.go lists the moves between states.
type LeaseState string

// Lease states.
const (
	// LeasePending waits for human approvals.
	LeasePending LeaseState = "pending"
	// LeaseApproved has its approvals and waits for the agent to activate it.
	LeaseApproved LeaseState = "approved"
	// LeaseIssuing is the write-ahead mark: Stint is calling Vault to mint.
	// A row stuck here is resolved by the reconciler.
	LeaseIssuing LeaseState = "issuing"
	// LeaseActive holds a live credential until ExpiresAt.
	LeaseActive LeaseState = "active"
	// LeaseRevoking is waiting for Vault to confirm revocation; it sits in the
	// durable retry queue until Vault does, then moves to EndState.
	LeaseRevoking LeaseState = "revoking"

	// End states. Nothing leaves them.
	LeaseDenied   LeaseState = "denied"    // policy refused the request
	LeaseRejected LeaseState = "rejected"  // an approver refused it
	LeaseTimedOut LeaseState = "timed_out" // no decision in time
	LeaseLapsed   LeaseState = "lapsed"    // approved but not activated in time
	LeaseCanceled LeaseState = "canceled"  // the agent withdrew a pending request
	LeaseExpired  LeaseState = "expired"   // the window closed; credential revoked
	LeaseReleased LeaseState = "released"  // the agent finished early; credential revoked
	LeaseRevoked  LeaseState = "revoked"   // security pulled it; credential revoked
	LeaseFailed   LeaseState = "failed"    // minting failed; nothing is live
)

// Terminal reports whether s is an end state.
func (s LeaseState) Terminal() bool {
	switch s {
	case LeaseDenied, LeaseRejected, LeaseTimedOut, LeaseLapsed, LeaseCanceled,
		LeaseExpired, LeaseReleased, LeaseRevoked, LeaseFailed:
		return true
	}
	return false
}

// Live reports whether a credential may exist in Vault for a lease in s.
func (s LeaseState) Live() bool {
	return s == LeaseIssuing || s == LeaseActive || s == LeaseRevoking
}

// LeaseStates lists every state, for validating filters.
var LeaseStates = []LeaseState{
	LeasePending, LeaseApproved, LeaseIssuing, LeaseActive, LeaseRevoking,
	LeaseDenied, LeaseRejected, LeaseTimedOut, LeaseLapsed, LeaseCanceled,
	LeaseExpired, LeaseReleased, LeaseRevoked, LeaseFailed,
}

// ParseLeaseState returns the lease state named s, or EINVALID naming
// "state" with the states there are.
func ParseLeaseState(s string) (LeaseState, error) {
	for _, state := range LeaseStates {
		if string(state) == s {
			return state, nil
		}
	}
	names := make([]string, len(LeaseStates))
	for i, state := range LeaseStates {
		names[i] = string(state)
	}
	return "", FieldErrorf("state", "Unknown lease state %q; use one of %s.", s, strings.Join(names, ", "))
}

// Lease is one grant's whole life, from request to end. The credential itself
// is never part of it: it is returned to the agent once and never stored.
type Lease struct {
	ID            string     `json:"id"`
	AgentID       string     `json:"agent_id"`
	Agent         string     `json:"agent"` // the agent's name when it asked
	Role          string     `json:"role"`
	Task          string     `json:"task"`
	Justification string     `json:"justification"`
	TTL           Duration   `json:"ttl"` // the task window, extensions included
	State         LeaseState `json:"state"`
	// EndState is the end state a revoking lease moves to once Vault confirms.
	EndState LeaseState `json:"end_state,omitempty"`
	// Decision says why the lease was granted or denied.
	Decision string `json:"decision,omitempty"`
	// VaultPath is the Vault path the credential was minted from.
	VaultPath string `json:"vault_path,omitempty"`
	// VaultLeaseID identifies the minted credential in Vault: a lease id, or
	// "accessor:<accessor>" for a Vault token. It is not a secret.
	VaultLeaseID string `json:"vault_lease_id,omitempty"`
	// Username is the login name of the minted credential (a database
	// role's user), recorded at activation so that the target's own logs
	// lead back to the lease; empty for credentials without one. It is not
	// a secret.
	Username string `json:"username,omitempty"`

	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	ActivatedAt *time.Time `json:"activated_at,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	EndedAt     *time.Time `json:"ended_at,omitempty"`

	// AuthMethod is how the agent authenticated when it asked.
	AuthMethod string `json:"auth_method,omitempty"`
	// OnBehalfOf is the human the agent acted for (token exchange), if any.
	OnBehalfOf string `json:"on_behalf_of,omitempty"`
	// SourceIP is the address the request came from.
	SourceIP string `json:"source_ip,omitempty"`
	// RiskScore is the live risk score (0–100) at the lease's latest
	// decision: its request, or its latest extension. RiskFactors are its
	// parts (governance); the two always come from the same assessment.
	RiskScore   int          `json:"risk_score"`
	RiskFactors []RiskFactor `json:"risk_factors,omitempty"`
	// PolicyDecision is the policy's full answer: outcome, approvals needed,
	// approver group, policy ids and reasons.
	PolicyDecision *Decision `json:"policy_decision,omitempty"`
	// DecideBy is when a pending lease times out; ActivateBy is when an
	// approved lease lapses unless the agent activates it.
	DecideBy   *time.Time `json:"decide_by,omitempty"`
	ActivateBy *time.Time `json:"activate_by,omitempty"`
	// Breakglass marks an emergency grant that skipped approval.
	Breakglass bool `json:"breakglass,omitempty"`
	// Extensions counts granted window extensions.
	Extensions int `json:"extensions,omitempty"`
	// ContainmentID names the containment (kill switch) that ended the
	// lease, if one did.
	ContainmentID string `json:"containment_id,omitempty"`
	// Version changes with every update of the lease; LeaseUpdate.Base
	// relies on it.
	Version int64 `json:"-"`

	// Revocation queue: attempts so far, when to try next, the last error.
	RevokeAttempts int        `json:"revoke_attempts,omitempty"`
	NextRevokeAt   *time.Time `json:"next_revoke_at,omitempty"`
	RevokeError    string     `json:"revoke_error,omitempty"`
}

// LeaseEvent is one entry of a lease's history: a state change, or a note
// (such as a failed revocation attempt) with From == To. The history is
// part of the audit chain: each event is an audit event (lease.created,
// lease.state or lease.note, whose subject is the lease), and ID is its
// seq. Events are never updated or deleted.
type LeaseEvent struct {
	ID      int64      `json:"id"`
	LeaseID string     `json:"lease_id"`
	At      time.Time  `json:"at"`
	From    LeaseState `json:"from,omitempty"`
	To      LeaseState `json:"to"`
	// Actor is who caused it: "agent:<name>", "admin:<name>", "system:<job>"
	// (SystemActor), …
	Actor  string `json:"actor"`
	Reason string `json:"reason,omitempty"`
}

// AgentLeaseCount is how many leases an agent has, in all and live.
type AgentLeaseCount struct {
	Total, Live int
}

// LeaseFilter selects leases. Nil and empty fields do not filter.
type LeaseFilter struct {
	ID      *string
	AgentID *string
	Role    *string
	// Task selects the leases of one task (exact match).
	Task         *string
	States       []LeaseState
	VaultLeaseID *string
	// ContainmentID selects the leases a containment ended.
	ContainmentID *string
	CreatedBefore *time.Time
	// CreatedAfter selects leases created at or after it (the console's
	// time range, with CreatedBefore).
	CreatedAfter *time.Time
	// Owner selects leases of agents owned by this email address.
	Owner *string
	// Approver selects leases this approver (email) answered, either way.
	Approver *string

	Offset int
	Limit  int // 0 means no limit
	// NoTotal skips counting all matches: the total returned is then the
	// number of leases returned. For hot paths that only need a page.
	NoTotal bool
}

// LeaseUpdate changes a lease and records one event in the same transaction.
// Nil fields are left alone; a pointer to a zero time clears a time column.
type LeaseUpdate struct {
	// From guards the update: it applies only if the lease's current state is
	// one of these. It is required: stores refuse an update without it
	// (ErrUnguardedLeaseUpdate), and a move the lease state machine does
	// not allow (ErrLeaseTransition; transition.go).
	From []LeaseState
	// AgentActive guards the update too: it applies only while the lease's
	// agent is active (the store returns EFORBIDDEN otherwise). Every step
	// towards a live credential sets it, so that a lease of a suspended or
	// disabled agent never becomes active, whatever raced with the kill
	// switch.
	AgentActive bool

	State          *LeaseState
	EndState       *LeaseState
	Decision       *string
	VaultLeaseID   *string
	Username       *string
	ActivatedAt    *time.Time
	ExpiresAt      *time.Time
	EndedAt        *time.Time
	RevokeAttempts *int
	NextRevokeAt   *time.Time
	RevokeError    *string
	PolicyDecision *Decision
	// Risk replaces the lease's risk score and factors together, so that
	// the score is always the sum of the factors shown beside it.
	Risk       *RiskAssessment
	DecideBy   *time.Time
	ActivateBy *time.Time
	Extensions *int
	// TTL changes the recorded window, as an extension does.
	TTL *Duration

	// Actor and Reason are recorded on the event.
	Actor  string
	Reason string

	// Base is the lease as the caller last read or wrote it (optional).
	// While its Version is still the stored one, the store applies upd to
	// it instead of reading the lease again; otherwise it reads the lease as
	// without Base. The result is the same either way.
	Base *Lease
}

// LeaseStore persists leases and their history. Implementations keep every
// lease and every event forever.
type LeaseStore interface {
	// CreateLease inserts l and its first event (To == l.State) atomically.
	// Returns ECONFLICT if the id exists.
	CreateLease(ctx context.Context, l *Lease, actor, reason string) error
	// FindLeaseByID returns ENOTFOUND if no lease has the id.
	FindLeaseByID(ctx context.Context, id string) (*Lease, error)
	// FindLeases returns matching leases, newest first, and the total number of
	// matches ignoring Offset and Limit.
	FindLeases(ctx context.Context, filter LeaseFilter) ([]*Lease, int, error)
	// UpdateLease applies upd and appends an event (from the old state to the
	// new one) in one transaction. Returns ENOTFOUND if no lease has the id,
	// ECONFLICT if its state is not in upd.From, ETRANSITION (wrapping
	// ErrLeaseTransition) if CheckLeaseTransition refuses the move, and an
	// error wrapping ErrUnguardedLeaseUpdate if upd.From is empty.
	UpdateLease(ctx context.Context, id string, upd LeaseUpdate) (*Lease, error)
	// FindLeaseEvents returns the lease's events, oldest first.
	FindLeaseEvents(ctx context.Context, leaseID string) ([]*LeaseEvent, error)
	// FindLeaseEndings returns, for each lease among leaseIDs that has
	// begun to end, the event that began its end: its first move into
	// revoking or an end state (the actor is who ended it), or its creation
	// when it was created ended (a denial; From is then empty). Leases
	// that have not begun to end are absent.
	FindLeaseEndings(ctx context.Context, leaseIDs []string) (map[string]*LeaseEvent, error)

	// NextLeaseDeadline returns the earliest instant at which an active lease
	// expires, a revoking lease is due another attempt, a pending lease times
	// out (DecideBy) or an approved lease lapses (ActivateBy); ok is false if
	// there is none.
	NextLeaseDeadline(ctx context.Context) (t time.Time, ok bool, err error)
	// ClaimExpiredLeases moves up to limit active leases whose ExpiresAt is at
	// or before now to revoking (EndState expired, NextRevokeAt retryAt),
	// recording an event for each by actor for reason, and returns them,
	// earliest deadline first.
	ClaimExpiredLeases(ctx context.Context, now, retryAt time.Time, limit int, actor, reason string) ([]*Lease, error)
	// ClaimDueRevocations returns up to limit revoking leases whose
	// NextRevokeAt is at or before now, pushing their NextRevokeAt to retryAt so
	// that no other worker takes them meanwhile. It records no event.
	ClaimDueRevocations(ctx context.Context, now, retryAt time.Time, limit int) ([]*Lease, error)
	// EndRevocations moves revoking leases whose revocation Vault confirmed
	// to their EndState in one transaction: EndedAt is each one's confirmation
	// time, the retry fields are cleared, and an event by actor is recorded.
	// Leases that are no longer revoking are skipped. Returns the leases it
	// ended.
	EndRevocations(ctx context.Context, done []RevocationDone, actor, reason string) ([]*Lease, error)
	// LiveRoles returns, sorted and without repeats, the roles the agent
	// holds live leases on (issuing, active or revoking: a credential may
	// exist), leaving out the lease exceptLeaseID (may be empty).
	LiveRoles(ctx context.Context, agentID, exceptLeaseID string) ([]string, error)
	// TaskRoles returns, sorted and without repeats, the roles of the
	// agent's leases of task that are granted or about to be (pending,
	// approved, issuing or active). Risk scoring asks on every request of a
	// task, so it reads roles only, not whole leases.
	TaskRoles(ctx context.Context, agentID, task string) ([]string, error)
	// CountRefusals counts the agent's leases created at or after since
	// that policy denied or an approver rejected (risk scoring asks on every
	// request, so its cost must not grow with the agent's history).
	CountRefusals(ctx context.Context, agentID string, since time.Time) (int, error)
	// CountLeasesByState returns how many leases are in each state.
	CountLeasesByState(ctx context.Context) (map[LeaseState]int, error)
	// CountAgentLeases returns, for each agent of agentIDs that has
	// leases, how many it has in all and how many are live (issuing,
	// active, revoking); agents without leases are absent from the map.
	CountAgentLeases(ctx context.Context, agentIDs []string) (map[string]AgentLeaseCount, error)
	// EndOverdueLeases ends up to limit leases whose approval deadline is at
	// or before now: pending leases past DecideBy become timed_out, approved
	// leases past ActivateBy become lapsed (EndedAt now), each with an event
	// by actor for the reason reasons gives. It returns them, earliest deadline first
	// (a lease's DecideBy or ActivateBy). NextLeaseDeadline includes these
	// deadlines.
	EndOverdueLeases(ctx context.Context, now time.Time, limit int, actor string, reasons OverdueReasons) ([]*Lease, error)
}

// OverdueReasons are the reasons EndOverdueLeases records: TimedOut for a
// pending lease that times out, Lapsed for an approved lease that lapses.
type OverdueReasons struct {
	TimedOut, Lapsed string
}

// RevocationDone says Vault confirmed a lease's revocation at At.
type RevocationDone struct {
	LeaseID string
	At      time.Time
}

// Duration is a time.Duration that reads and writes JSON as a string such as
// "15m0s".
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Duration(d).String() + `"`), nil
}

// String returns the duration as time.Duration formats it.
func (d Duration) String() string { return time.Duration(d).String() }

// IdempotencyKey records that an agent's lease request sent with Key
// creates the lease LeaseID (of Role). See LeaseRequest.IdempotencyKey.
type IdempotencyKey struct {
	AgentID   string
	Key       string
	LeaseID   string
	Role      string
	CreatedAt time.Time
}

// IdempotencyStore persists idempotency keys. Every replica sharing the
// store sees the same keys, so a request is applied once whichever replica
// receives each copy.
type IdempotencyStore interface {
	// ClaimIdempotencyKey records k unless the agent already used k.Key,
	// and returns the record that holds: k itself when it was recorded,
	// else the earlier one. If the earlier one names the lease replace
	// (not empty), it is replaced by k (a claim whose lease was never
	// created).
	ClaimIdempotencyKey(ctx context.Context, k IdempotencyKey, replace string) (*IdempotencyKey, error)
	// ReleaseIdempotencyKey forgets the agent's key if it still names
	// leaseID: the request created nothing, so a copy of it may try again.
	ReleaseIdempotencyKey(ctx context.Context, agentID, key, leaseID string) error
}
