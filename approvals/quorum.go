package approvals

import (
	"fmt"
	"strings"
	"time"

	"github.com/stint-broker/stint/broker"
)

// tally returns the lease update that recording a brings about: any denial
// rejects the lease; the approval that completes the quorum (the decision's
// Approvals, from distinct approvers) approves it, to be activated within
// activateWithin; any other approval is a note in the history.
func tally(l *broker.Lease, existing []*broker.Approval, a *broker.Approval, now time.Time, activateWithin time.Duration) broker.LeaseUpdate {
	actor := "approver:" + a.Approver
	if a.Verdict == broker.VerdictDeny {
		reason := "denied by " + a.Approver
		if a.Reason != "" {
			reason += ": " + a.Reason
		}
		state := broker.LeaseRejected
		return broker.LeaseUpdate{State: &state, EndedAt: &now, Actor: actor, Reason: reason}
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
		return broker.LeaseUpdate{Actor: actor, Reason: fmt.Sprintf("approved by %s (%d of %d)", a.Approver, len(by), need)}
	}
	state, by2 := broker.LeaseApproved, now.Add(activateWithin)
	return broker.LeaseUpdate{
		State: &state, ActivateBy: &by2, Actor: actor,
		Reason: fmt.Sprintf("approved by %s (%d of %d); activate by %s", strings.Join(by, ", "), len(by), need, by2.UTC().Format(time.RFC3339)),
	}
}

// Given counts the approvals (not denials) among approvals.
func Given(approvals []*broker.Approval) int {
	n := 0
	for _, a := range approvals {
		if a.Verdict == broker.VerdictApprove {
			n++
		}
	}
	return n
}
