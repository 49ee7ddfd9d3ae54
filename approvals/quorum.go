package approvals

import (
	"github.com/stint-broker/stint/broker"
)

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
