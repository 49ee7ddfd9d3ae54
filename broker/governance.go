package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Governance keeps privileges narrow and reviewed while agents work: a live
// risk score on every request, separation of duty between conflicting roles,
// extra safeguards on privileged roles, break-glass grants, window
// extensions and periodic access reviews. The approvals package holds the
// rules; the lease service meets them through the interfaces below.

// Risk factor names, as RiskFactor.Name carries them.
const (
	// RiskRate is the agent's request rate against its own exponentially
	// weighted moving average (a z-score).
	RiskRate = "rate"
	// RiskBurst is many requests within the last minute.
	RiskBurst = "burst"
	// RiskFirstUse is the agent's first request for the role.
	RiskFirstUse = "first_use"
	// RiskUnusualHour is a request at an hour the agent rarely works.
	RiskUnusualHour = "unusual_hour"
	// RiskDenials is the agent's denied and rejected requests in the last hour.
	RiskDenials = "denials"
	// RiskAuthFailures is failed authentications in the last hour that named
	// the agent (its key, client id or certificate); anonymous failures from
	// its address do not count.
	RiskAuthFailures = "auth_failures"
	// RiskTTL is a requested window much longer than the agent usually asks.
	RiskTTL = "ttl"
	// RiskTaskRoles is a task under which the agent already holds live
	// leases of several other roles: privileges gathering under one task.
	RiskTaskRoles = "task_roles"
)

// RiskFactor is one part of a risk score: what was seen and how many points
// it added.
type RiskFactor struct {
	Name   string `json:"name"`
	Points int    `json:"points"`
	// Detail says what was measured, e.g. "14 requests in the last minute".
	Detail string `json:"detail"`
}

// RiskAssessment is a live risk score (0–100, the capped sum of its
// factors' points) with the factors that produced it. Factors that added no
// points are left out.
type RiskAssessment struct {
	Score   int          `json:"score"`
	Factors []RiskFactor `json:"factors,omitempty"`
	// Contain is the scorer's decision that this score crossed the revoke
	// threshold: the request is denied and the agent contained (suspended,
	// its live leases revoked). The scorer only decides; the lease service
	// acts, after the decision, through its kill switch.
	Contain bool `json:"contain,omitempty"`
}

// Summary renders the assessment in one line, such as
// "62 (burst +25: 12 requests in the last minute; rate +30: …)".
func (r RiskAssessment) Summary() string {
	if len(r.Factors) == 0 {
		return fmt.Sprintf("%d", r.Score)
	}
	parts := make([]string, len(r.Factors))
	for i, f := range r.Factors {
		parts[i] = fmt.Sprintf("%s +%d: %s", f.Name, f.Points, f.Detail)
	}
	return fmt.Sprintf("%d (%s)", r.Score, strings.Join(parts, "; "))
}

// RiskScorer scores requests. approvals/governance.Risk implements it from the lease
// history and in-memory per-agent patterns. It has no effect beyond
// remembering requests in those patterns: it never changes an agent or a
// lease, and never calls the lease service.
type RiskScorer interface {
	// ScoreRequest returns the live risk score of req (Agent, Role, TTL,
	// Task, Time and SourceIP are read), with Contain set when it crossed
	// the revoke threshold, and counts the request in the agent's pattern.
	// An error means the score is unknown; callers fail closed.
	ScoreRequest(ctx context.Context, req DecisionRequest) (RiskAssessment, error)
	// ScoreAgent returns an agent's score between requests (its request
	// rate and bursts so far, recent denials, failed authentications), with
	// Contain as ScoreRequest sets it. It counts nothing.
	ScoreAgent(ctx context.Context, agentID string, now time.Time) (RiskAssessment, error)
}

// Privileged reports whether s is high or critical: such roles are never
// granted without two distinct approvers (break-glass aside), need strong
// agent authentication and a capped window, and their owners hear of every
// grant.
func (s Sensitivity) Privileged() bool {
	return s == SensitivityHigh || s == SensitivityCritical
}

// StrongAuth reports whether method proves possession of a key (a client
// certificate or a signed client assertion), which privileged roles require.
func StrongAuth(method string) bool {
	return method == AuthMTLS || method == AuthPrivateKeyJWT
}

// Breakglass says whether a role may be granted in an emergency without
// approval, and for how long at most.
type Breakglass struct {
	Allowed bool `json:"allowed" yaml:"allowed"`
	// MaxTTL caps a break-glass window; it must be positive and at most the
	// role's max_ttl when Allowed.
	MaxTTL time.Duration `json:"max_ttl,omitempty" yaml:"max_ttl"`
}

// ConflictSets are separation-of-duty rules: each set names roles no agent
// may hold live leases on at the same time (any two of a set conflict).
type ConflictSets [][]string

// ConflictsWith returns the roles that conflict with role, sorted, without
// duplicates.
func (c ConflictSets) ConflictsWith(role string) []string {
	var out []string
	for _, set := range c {
		if !slices.Contains(set, role) {
			continue
		}
		for _, r := range set {
			if r != role && !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
	}
	slices.Sort(out)
	return out
}

// ErrDutyConflict is the sentinel of a refusal for separation of duty
// (errors.Is): the agent holds a live lease on a conflicting role, or the
// conflict cannot be checked. The error that carries it is an ECONFLICT
// *Error whose message says which lease is in the way.
var ErrDutyConflict = errors.New("separation of duty")

// DutyConflict returns the ECONFLICT error, wrapping ErrDutyConflict, of an
// agent that holds the live lease heldID on role held, which conflicts with
// role.
func DutyConflict(agent, heldID, held, role string) error {
	return &Error{
		Code: ECONFLICT,
		Message: fmt.Sprintf("Separation of duty: agent %s holds a live lease (%s) on role %s, which conflicts with role %s; release it first.",
			agent, heldID, held, role),
		Err: ErrDutyConflict,
	}
}

// LeaseGuard writes the lease changes that separation of duty and window
// extensions must make atomically. The SQLite store implements it.
type LeaseGuard interface {
	// CreateLeaseExclusive is CreateLease that first checks, in the same
	// transaction, that l's agent holds no live lease (issuing, active or
	// revoking) on any of conflicts. Returns ECONFLICT naming the held role,
	// wrapping ErrDutyConflict, if it does, and as CreateLease otherwise.
	CreateLeaseExclusive(ctx context.Context, l *Lease, actor, reason string, conflicts []string) error
	// UpdateLeaseExclusive is UpdateLease with the same check for the
	// lease's agent (excluding the lease itself). Returns ECONFLICT naming
	// the held role, wrapping ErrDutyConflict, and as UpdateLease otherwise.
	UpdateLeaseExclusive(ctx context.Context, id string, upd LeaseUpdate, conflicts []string) (*Lease, error)
	// UpdateLeaseIfExpires is UpdateLease guarded also by the lease's
	// current ExpiresAt, which must equal expires: of two concurrent window
	// extensions only one applies. Returns ECONFLICT if the lease's state is
	// not in upd.From or its window moved.
	UpdateLeaseIfExpires(ctx context.Context, id string, expires time.Time, upd LeaseUpdate) (*Lease, error)
	// RoleExcluded reports whether an access review removed role from the
	// agent (see RoleExclusion).
	RoleExcluded(ctx context.Context, agentID, role string) (bool, error)
}

// GrantObserver hears of every lease the lease service activates, after
// the credential is minted, to tell privileged roles' owners, raise the
// break-glass alert and open its post-review. It must not block for long
// and never fails the grant: it reports its own errors.
type GrantObserver interface {
	LeaseGranted(ctx context.Context, l *Lease, role *Role)
}

// Alert severities.
const (
	SeverityCritical = "critical"
	SeverityWarning  = "warning"
	SeverityInfo     = "info"
)

// Alert audiences.
const (
	// AudienceSecurity is the security team's channel.
	AudienceSecurity = "security"
	// AudienceOwner is the agent's owner, directly.
	AudienceOwner = "owner"
)

// Alert is a message governance sends to humans: a break-glass grant, a risk
// containment, a privileged grant told to the owner, an access review to
// attest. It never holds a credential.
type Alert struct {
	// Kind is what happened, such as "breakglass" or "risk_containment".
	Kind     string `json:"kind"`
	Severity string `json:"severity"`
	Audience string `json:"audience"`
	// Owner is the agent owner's email, for AudienceOwner.
	Owner   string `json:"owner,omitempty"`
	AgentID string `json:"agent_id,omitempty"`
	Agent   string `json:"agent,omitempty"`
	LeaseID string `json:"lease_id,omitempty"`
	Role    string `json:"role,omitempty"`
	// ReviewID is set for alerts about a review.
	ReviewID string `json:"review_id,omitempty"`
	Message  string `json:"message"`
	// Risk is the assessment behind a risk alert.
	Risk *RiskAssessment `json:"risk,omitempty"`
}

// Alerter delivers alerts (Slack, when configured). Governance also logs
// every alert and records it in the audit log, so an alerter that fails
// loses nothing that security can't find.
type Alerter interface {
	// Alert delivers a. It may be called again after a failure.
	Alert(ctx context.Context, a Alert) error
}

// Audit kinds recorded by governance. Subject is the lease id, the agent id
// or the review id, as the kind says.
const (
	// AuditBreakglass records a break-glass grant (subject: lease id).
	AuditBreakglass = "governance.breakglass"
	// AuditPrivilegedGrant records a privileged grant told to the owner
	// (subject: lease id).
	AuditPrivilegedGrant = "governance.privileged_grant"
	// AuditRiskContainment records a risk score over the revoke threshold:
	// the agent suspended and its leases revoked (subject: agent id).
	AuditRiskContainment = "governance.risk_containment"
	// AuditExtension records a window extension's decision (subject: lease id).
	AuditExtension = "governance.extension"
	// AuditReviewOpened, AuditReviewAttested, AuditReviewClosed,
	// AuditReviewSuspended, AuditReviewDisabled and AuditReviewEscalated
	// record the life of an access review (subject: review id).
	AuditReviewOpened    = "review.opened"
	AuditReviewAttested  = "review.attested"
	AuditReviewClosed    = "review.closed"
	AuditReviewSuspended = "review.agent_suspended"
	AuditReviewDisabled  = "review.agent_disabled"
	AuditReviewEscalated = "review.escalated"
)

// ReviewKind says why a review exists.
type ReviewKind string

// Review kinds.
const (
	// ReviewAccess is a periodic access review: the owner attests, role by
	// role, that the agent still needs what it may request.
	ReviewAccess ReviewKind = "access"
	// ReviewBreakglass is the post-review of a break-glass grant, which the
	// owner closes with a note.
	ReviewBreakglass ReviewKind = "breakglass"
)

// ReviewState is where a review is.
type ReviewState string

// Review states.
const (
	ReviewOpen   ReviewState = "open"
	ReviewClosed ReviewState = "closed"
)

// ReviewVerdict is an owner's answer for one role.
type ReviewVerdict string

// Review verdicts.
const (
	// VerdictKeep keeps the role requestable.
	VerdictKeep ReviewVerdict = "keep"
	// VerdictRemove removes the role from the agent: its live leases on the
	// role are revoked and it may not request it again (a RoleExclusion),
	// whatever its labels say.
	VerdictRemove ReviewVerdict = "remove"
)

// Review is one attestation the agent's owner owes: a periodic access review
// (one item per role the agent may request) or a break-glass post-review.
// An access review left open past DueAt suspends the agent (no new leases,
// live leases revoked); still open Grace later, it disables the agent. An
// overdue break-glass post-review is escalated to security.
type Review struct {
	ID    string      `json:"id"`
	Kind  ReviewKind  `json:"kind"`
	State ReviewState `json:"state"`
	// Campaign groups the reviews one run opened, such as "2026-04-01".
	Campaign string `json:"campaign,omitempty"`
	AgentID  string `json:"agent_id"`
	Agent    string `json:"agent"`
	Owner    string `json:"owner"`
	// LeaseID is the break-glass lease under review.
	LeaseID string `json:"lease_id,omitempty"`
	// Inactive flags an agent with no lease in the configured number of
	// days: a candidate for deprovisioning.
	Inactive bool `json:"inactive,omitempty"`
	// LastLeaseAt is the agent's most recent lease request, if any.
	LastLeaseAt *time.Time `json:"last_lease_at,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	DueAt       time.Time  `json:"due_at"`
	ClosedAt    *time.Time `json:"closed_at,omitempty"`
	ClosedBy    string     `json:"closed_by,omitempty"`
	Note        string     `json:"note,omitempty"`
	// SuspendedAt, DisabledAt and EscalatedAt record enforcement of an
	// overdue review.
	SuspendedAt *time.Time    `json:"suspended_at,omitempty"`
	DisabledAt  *time.Time    `json:"disabled_at,omitempty"`
	EscalatedAt *time.Time    `json:"escalated_at,omitempty"`
	Items       []*ReviewItem `json:"items"`
}

// Attested reports whether every item has a verdict.
func (r *Review) Attested() bool {
	for _, it := range r.Items {
		if it.Verdict == "" {
			return false
		}
	}
	return true
}

// Item returns the review's item for role, or nil.
func (r *Review) Item(role string) *ReviewItem {
	for _, it := range r.Items {
		if it.Role == role {
			return it
		}
	}
	return nil
}

// ReviewItem is one role of an access review, with the evidence the owner
// decides on.
type ReviewItem struct {
	Role string `json:"role"`
	// LastLeaseAt is when the agent last held a lease on the role (its
	// activation), if ever; LeaseCount counts its activated leases.
	LastLeaseAt *time.Time `json:"last_lease_at,omitempty"`
	LeaseCount  int        `json:"lease_count"`
	// NeverUsed is true if the agent never held a lease on the role.
	NeverUsed bool `json:"never_used"`
	// Verdict, AttestedBy, AttestedAt and Note are the attestation that set
	// the item's current verdict: the first with that verdict. A remove
	// verdict is final.
	Verdict    ReviewVerdict `json:"verdict,omitempty"`
	AttestedBy string        `json:"attested_by,omitempty"`
	AttestedAt *time.Time    `json:"attested_at,omitempty"`
	Note       string        `json:"note,omitempty"`
	// Attestations are every attestation of the item, oldest first: the
	// owner's and an admin's are both kept, neither erases the other.
	Attestations []*ReviewAttestation `json:"attestations,omitempty"`
}

// ReviewAttestation is one attester's verdict on one item of an access
// review.
type ReviewAttestation struct {
	Verdict ReviewVerdict `json:"verdict"`
	By      string        `json:"by"`
	At      time.Time     `json:"at"`
	Note    string        `json:"note,omitempty"`
}

// ReviewFilter selects reviews. Nil fields do not filter.
type ReviewFilter struct {
	ID       *string
	Kind     *ReviewKind
	State    *ReviewState
	AgentID  *string
	Owner    *string
	Campaign *string
	// DueBefore selects reviews due before it.
	DueBefore *time.Time

	Offset int
	Limit  int // 0 means no limit
}

// ReviewUpdate changes a review. Nil fields are left alone.
type ReviewUpdate struct {
	State       *ReviewState
	ClosedAt    *time.Time
	ClosedBy    *string
	Note        *string
	SuspendedAt *time.Time
	DisabledAt  *time.Time
	EscalatedAt *time.Time
	// Item, if set, records an attestation of the item with its role
	// (Verdict, AttestedBy, AttestedAt, Note): it is appended to the item's
	// attestations, and becomes the item's verdict fields when it changes
	// the verdict (or is the first).
	Item *ReviewItem
}

// RoleExclusion records that an access review removed a role from an
// agent: the agent may not request the role again, whatever its labels.
type RoleExclusion struct {
	AgentID  string    `json:"agent_id"`
	Role     string    `json:"role"`
	ReviewID string    `json:"review_id"`
	By       string    `json:"by"`
	At       time.Time `json:"at"`
}

// ReviewStore persists reviews and role exclusions.
type ReviewStore interface {
	// CreateReview inserts r and its items. It assigns an ID when empty.
	// Returns ECONFLICT if the agent already has an open review of the kind
	// for the same lease (one open access review per agent).
	CreateReview(ctx context.Context, r *Review) error
	// FindReviewByID returns ENOTFOUND if no review has the id.
	FindReviewByID(ctx context.Context, id string) (*Review, error)
	// FindReviews returns matching reviews with their items, newest first,
	// and the total ignoring Offset and Limit.
	FindReviews(ctx context.Context, filter ReviewFilter) ([]*Review, int, error)
	// UpdateReview applies upd. Returns ENOTFOUND if no review has the id,
	// and ECONFLICT if the review is closed and upd changes an item or
	// closes it again, or if upd.Item names a role the review lacks.
	UpdateReview(ctx context.Context, id string, upd ReviewUpdate) (*Review, error)
	// ExcludeRole records x (idempotently).
	ExcludeRole(ctx context.Context, x *RoleExclusion) error
	// FindRoleExclusions returns the agent's exclusions, by role.
	FindRoleExclusions(ctx context.Context, agentID string) ([]*RoleExclusion, error)
}

// ReviewService runs access reviews for the API and the CLI. Admins see
// every review; an approver sees and attests the reviews of agents it owns.
type ReviewService interface {
	// FindReviews returns the reviews the caller may see, newest first.
	// Returns EFORBIDDEN for agents.
	FindReviews(ctx context.Context, filter ReviewFilter) ([]*Review, int, error)
	// FindReview returns ENOTFOUND if the review does not exist, and
	// EFORBIDDEN if it is not the caller's (an approver who does not own
	// the agent).
	FindReview(ctx context.Context, id string) (*Review, error)
	// Attest records the caller's verdict for one role of an open access
	// review, next to earlier attestations (an admin's does not erase the
	// owner's); once every role has a verdict the review closes. Returns
	// ENOTFOUND if the review does not exist, EFORBIDDEN if it is not the
	// caller's to attest, EINVALID for an unknown verdict or a role the
	// review lacks, ECONFLICT if the review is closed or is not an access
	// review, or if the verdict is keep for a role already removed (a
	// removal is final).
	Attest(ctx context.Context, id, role string, verdict ReviewVerdict, note string) (*Review, error)
	// CloseBreakglass closes a break-glass post-review with the owner's
	// note, which is required. Errors as Attest.
	CloseBreakglass(ctx context.Context, id, note string) (*Review, error)
	// RunReviews opens an access review for every active agent that has
	// none open (admins only). Returns the reviews it opened.
	RunReviews(ctx context.Context) ([]*Review, error)
}
