package broker

import (
	"context"
	"slices"
	"strings"
	"time"
)

// ActorApprover is the kind of a human approver calling the API with an
// approver token. Approvers decide pending leases; they cannot request,
// read or end leases otherwise.
const ActorApprover ActorKind = "approver"

// Verdict is an approver's answer to a pending lease.
type Verdict string

// Verdicts.
const (
	VerdictApprove Verdict = "approve"
	VerdictDeny    Verdict = "deny"
)

// Approver is a human who may decide pending leases, defined in the
// configuration. An approver decides only for the groups it belongs to, never
// for an agent it owns, and never for a request made on its own behalf.
type Approver struct {
	// Email identifies the approver; it is compared case-insensitively with
	// agent owners and on-behalf-of users.
	Email string `json:"email" yaml:"email"`
	// Name is shown in Slack messages and history.
	Name string `json:"name" yaml:"name"`
	// Groups are the approver groups (a Decision's ApproverGroup) it belongs to.
	Groups []string `json:"groups" yaml:"groups"`
	// SlackUserID maps a Slack user to this approver without a users.info
	// lookup. Optional.
	SlackUserID string `json:"slack_user_id,omitempty" yaml:"slack_user_id"`
	// TokenSHA256 is the hex SHA-256 of the approver's API token, for the
	// approver API and CLI. Optional; the token itself is never configured.
	TokenSHA256 string `json:"-" yaml:"token_sha256"`
}

// InGroup reports whether the approver belongs to group.
func (a *Approver) InGroup(group string) bool {
	return group != "" && slices.Contains(a.Groups, group)
}

// Is reports whether the approver is the person with the email address.
func (a *Approver) Is(email string) bool {
	return email != "" && strings.EqualFold(strings.TrimSpace(a.Email), strings.TrimSpace(email))
}

// Approval is one approver's recorded answer to a pending lease. Approvals
// are never updated or deleted; each approver answers a lease at most once.
type Approval struct {
	ID      int64  `json:"id"`
	LeaseID string `json:"lease_id"`
	// Approver is the approver's email; ApproverName its display name.
	Approver     string  `json:"approver"`
	ApproverName string  `json:"approver_name,omitempty"`
	Verdict      Verdict `json:"verdict"`
	// Reason is the approver's optional explanation (denials).
	Reason string `json:"reason,omitempty"`
	// Digest is the request digest the approver was shown and decided on.
	Digest string `json:"digest"`
	// Via is where the answer came from: "slack", "api" or "cli".
	Via string    `json:"via"`
	At  time.Time `json:"at"`
}

// Notice is one entry of the approval outbox: a change of a lease that needs
// approval, which the approvers' Slack message and the agent's owner must
// hear about. The store writes a notice with every event of such a lease, in
// the same transaction, so nothing is lost while Slack is unreachable.
type Notice struct {
	ID      int64  `json:"id"`
	LeaseID string `json:"lease_id"`
	// EventID is the lease event that caused the notice (its audit seq; a
	// lease_events id for notices from before schema version 10); From and To are its
	// states (equal for a note such as a recorded approval).
	EventID       int64      `json:"event_id"`
	From          LeaseState `json:"from,omitempty"`
	To            LeaseState `json:"to"`
	Attempts      int        `json:"attempts"`
	NextAttemptAt time.Time  `json:"next_attempt_at"`
	LastError     string     `json:"last_error,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	SentAt        *time.Time `json:"sent_at,omitempty"`
}

// ApprovalMessage says where the approvers' message of a lease lives, so that
// it can be updated on every state change.
type ApprovalMessage struct {
	LeaseID  string    `json:"lease_id"`
	Channel  string    `json:"channel"`
	TS       string    `json:"ts"`
	PostedAt time.Time `json:"posted_at"`
}

// ApprovalStore persists approvals and the notification outbox.
type ApprovalStore interface {
	// RecordApproval inserts a and applies upd to a's lease (appending its
	// event) in one transaction, provided the lease is pending, its UpdatedAt
	// still equals seen and it has exactly prior approvals: a concurrent
	// change makes the caller re-read and re-decide. It sets a.ID. Returns
	// ENOTFOUND if the lease does not exist and ECONFLICT if it is not
	// pending, its DecideBy is at or before a.At (zero a.At means now: an
	// answer after the deadline is refused even if the lease has not been
	// timed out yet), changed since seen, or the approver has already
	// answered it.
	RecordApproval(ctx context.Context, a *Approval, seen time.Time, prior int, upd LeaseUpdate) (*Lease, error)
	// FindApprovals returns a lease's approvals, oldest first.
	FindApprovals(ctx context.Context, leaseID string) ([]*Approval, error)

	// ClaimNotices returns up to limit unsent notices that are due at now —
	// never tried, or NextAttemptAt at or before now — taking only the oldest
	// unsent notice of each lease so that a lease's notices go out in order.
	// It pushes their NextAttemptAt to retryAt so that no other worker takes
	// them meanwhile.
	ClaimNotices(ctx context.Context, now, retryAt time.Time, limit int) ([]*Notice, error)
	// CompleteNotice marks a notice sent at at. Returns ENOTFOUND.
	CompleteNotice(ctx context.Context, id int64, at time.Time) error
	// RetryNotice records a failed attempt: attempts, the next attempt and
	// the error text. Returns ENOTFOUND.
	RetryNotice(ctx context.Context, id int64, attempts int, next time.Time, lastError string) error
	// FindNotices returns a lease's notices, oldest first.
	FindNotices(ctx context.Context, leaseID string) ([]*Notice, error)
	// CountUnsentNotices returns how many notices wait to be sent.
	CountUnsentNotices(ctx context.Context) (int, error)
	// PruneNotices deletes the notices sent before sentBefore and returns
	// how many. Unsent notices stay, however old. (Notices are the outbox,
	// not history: the lease's events and the audit chain keep that.)
	PruneNotices(ctx context.Context, sentBefore time.Time) (int, error)

	// SetApprovalMessage records where a lease's approval message was posted.
	SetApprovalMessage(ctx context.Context, m *ApprovalMessage) error
	// FindApprovalMessage returns ENOTFOUND if the lease has no message yet.
	FindApprovalMessage(ctx context.Context, leaseID string) (*ApprovalMessage, error)
}

// VerdictRecorder records approvers' verdicts on pending leases. It is the
// lease service's side of human approval: the approval workflow decides who
// may answer and what they were shown, and hands the answer here, so that
// the lease service stays the only writer of lease state.
type VerdictRecorder interface {
	// RecordVerdict records a, an approver's answer to the pending lease l
	// as read together with its earlier approvals existing, and moves the
	// lease as the quorum says: a denial rejects it; the approval that
	// completes the quorum (l.PolicyDecision.Approvals distinct
	// approvers) approves it, to be activated within the activation
	// window; any other approval is a note in its history. It sets a.ID
	// and returns the lease as updated. Returns ENOTFOUND if the lease does
	// not exist; ECONFLICT if it is no longer pending, changed since l and
	// existing were read, or a comes at or after its DecideBy.
	RecordVerdict(ctx context.Context, l *Lease, existing []*Approval, a *Approval) (*Lease, error)
}

// PendingApproval is a lease awaiting human approval as an approver sees it.
type PendingApproval struct {
	Lease *Lease `json:"lease"`
	// Owner is the agent's owner, who may not approve it.
	Owner string `json:"owner"`
	// Digest binds an answer to this exact request; send it back with it.
	Digest    string      `json:"digest"`
	Needed    int         `json:"needed"`
	Approvals []*Approval `json:"approvals"`
}

// ApprovalService lets approvers decide pending leases. The approver is the
// Actor in the context (ActorApprover); Slack and the CLI resolve theirs and
// call the same rules.
type ApprovalService interface {
	// FindPendingApprovals returns the pending leases the caller may decide,
	// oldest first. Returns EFORBIDDEN for callers that are not approvers.
	FindPendingApprovals(ctx context.Context) ([]*PendingApproval, error)
	// Approve records the caller's approval of the lease as shown with digest;
	// with enough approvals the lease becomes approved. Answering twice the
	// same way is not an error. Returns ENOTFOUND if the lease does not exist
	// or the caller may not decide it; EFORBIDDEN if the caller owns the agent,
	// is the user it acts for, or is not in the approver group; ECONFLICT if
	// the lease is no longer pending, the request changed since the digest was
	// taken, or the caller already answered otherwise.
	Approve(ctx context.Context, leaseID, digest string) (*Lease, error)
	// Deny records the caller's refusal, with an optional reason; the lease
	// becomes rejected. Errors as Approve.
	Deny(ctx context.Context, leaseID, digest, reason string) (*Lease, error)
}

// CheckDecideBy returns ECONFLICT if an answer given at at comes too late for
// the pending lease l: at or after its DecideBy, when the lease times out.
func CheckDecideBy(l *Lease, at time.Time) error {
	if l.DecideBy != nil && !at.Before(*l.DecideBy) {
		return Errorf(ECONFLICT, "The request timed out at %s, before this answer; it can no longer be approved or denied.",
			l.DecideBy.UTC().Format(time.RFC3339))
	}
	return nil
}
