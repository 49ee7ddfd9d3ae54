package leases

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/stint-broker/stint/broker"
)

// VerdictStore records an approver's answer and the lease change it brings
// about in one transaction (broker.ApprovalStore.RecordApproval).
type VerdictStore interface {
	RecordApproval(ctx context.Context, a *broker.Approval, seen time.Time, prior int, upd broker.LeaseUpdate) (*broker.Lease, error)
}

var _ broker.VerdictRecorder = (*Service)(nil)

// RecordVerdict implements broker.VerdictRecorder. The approvals service
// calls it once it has checked that the approver may decide l and was shown
// the request as it stands.
func (s *Service) RecordVerdict(ctx context.Context, l *broker.Lease, existing []*broker.Approval, a *broker.Approval) (*broker.Lease, error) {
	if s.Approvals == nil {
		return nil, fmt.Errorf("record verdict on lease %s: the store records no approvals", l.ID)
	}
	if l.PolicyDecision == nil || l.PolicyDecision.Outcome != broker.OutcomeApprovals {
		return nil, broker.Errorf(broker.ECONFLICT, "This lease does not need approval.")
	}
	now := s.Now().UTC()
	if a.At.IsZero() {
		a.At = now
	}
	upd := tally(l, existing, a, a.At, s.ActivateWithin)
	updated, err := s.Approvals.RecordApproval(ctx, a, l.UpdatedAt, len(existing), upd)
	if err != nil {
		return nil, err
	}
	if updated.State != l.State {
		s.LeaseChanged(l.ID)
	}
	return updated, nil
}

// tally returns the lease update that recording a brings about: any denial
// rejects the lease; the approval that completes the quorum (the decision's
// Approvals, from distinct approvers) approves it, to be activated within
// activateWithin; any other approval is a note in the history. The update
// expects the lease pending.
func tally(l *broker.Lease, existing []*broker.Approval, a *broker.Approval, now time.Time, activateWithin time.Duration) broker.LeaseUpdate {
	pending := []broker.LeaseState{broker.LeasePending}
	actor := broker.Actor{Kind: broker.ActorApprover, Name: a.Approver}.String()
	if a.Verdict == broker.VerdictDeny {
		reason := "denied by " + a.Approver
		if a.Reason != "" {
			reason += ": " + a.Reason
		}
		return broker.LeaseUpdate{From: pending, State: new(broker.LeaseRejected), EndedAt: &now, Actor: actor, Reason: reason}
	}
	var by []string
	for _, e := range existing {
		if e.Verdict == broker.VerdictApprove {
			by = append(by, e.Approver)
		}
	}
	by = append(by, a.Approver)
	need := max(l.PolicyDecision.Approvals, 1)
	if len(by) < need {
		return broker.LeaseUpdate{From: pending, Actor: actor, Reason: fmt.Sprintf("approved by %s (%d of %d)", a.Approver, len(by), need)}
	}
	activateBy := now.Add(activateWithin)
	return broker.LeaseUpdate{
		From: pending, State: new(broker.LeaseApproved), ActivateBy: &activateBy, Actor: actor,
		Reason: fmt.Sprintf("approved by %s (%d of %d); activate by %s", strings.Join(by, ", "), len(by), need, activateBy.UTC().Format(time.RFC3339)),
	}
}
