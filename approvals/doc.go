// Package approvals runs human approval of lease requests: who may answer
// a pending lease, the answers, and the notices that ask for them. Cedar
// evaluation is approvals/policy's; risk, access reviews and separation of
// duty are approvals/governance's.
//
// Service decides who may answer a pending lease under the
// separation-of-duty rules, hands checked answers to the lease service
// (broker.VerdictRecorder, which moves pending leases to approved or
// rejected: leases is the only writer of lease state), and delivers notices
// to a Notifier (approvals/slack).
//
// Decide is the one decision path for Slack, the API and the CLI. Only
// members of the lease's approver group decide it, never the agent's owner
// or the user it acts for (routing.go); each approver answers once, so N
// approvals are N distinct people; a denial rejects, the approval that
// completes the quorum approves with ActivateBy = now + the activation
// window (leases.Service.RecordVerdict). Every answer carries the Digest of the request the approver
// was shown; a changed request or a lease no longer pending refuses it. The
// store records the answer and the lease change in one transaction guarded by
// the lease's UpdatedAt and approval count, so concurrent answers re-read and
// re-decide rather than both counting as the last one.
//
// The outbox: the store writes a Notice with every event of a lease that
// needs approval, in the event's transaction. Run (DeliverNotices) sends
// them oldest first, one at a time per lease, rendering the lease as it is
// now: the first posts the approvers' message, later ones update it, and each
// state change is told to the agent's owner. Failures are retried with
// capped exponential backoff until delivered. Timeouts (pending → timed_out)
// and lapses (approved → lapsed) are the lease expiry loop's, which meets this
// package only through broker and the wiring in cmd.
package approvals
