package approvals

import (
	"sort"

	"github.com/stint-broker/stint/broker"
)

// mayDecide applies separation of duty: only members of the lease's approver
// group decide it, never the agent's owner, never the user the agent acts
// for. Returns EFORBIDDEN saying which rule refused.
func mayDecide(ap *broker.Approver, l *broker.Lease, agent *broker.Agent) error {
	group := ""
	if l.PolicyDecision != nil {
		group = l.PolicyDecision.ApproverGroup
	}
	switch {
	case !ap.InGroup(group):
		return broker.Errorf(broker.EFORBIDDEN, "You are not in approver group %q, which decides this request.", group)
	case ap.Is(agent.Owner):
		return broker.Errorf(broker.EFORBIDDEN, "You own agent %s; someone else must approve its requests.", agent.Name)
	case ap.Is(l.OnBehalfOf):
		return broker.Errorf(broker.EFORBIDDEN, "The agent asked on your behalf; someone else must approve it.")
	}
	return nil
}

// EligibleApprovers returns the names (or emails) of the approvers who may
// decide l, sorted: members of its group other than the owner and the
// on-behalf-of user. Messages show them, and fewer of them than the
// approvals needed means the request can only time out.
func (s *Service) EligibleApprovers(l *broker.Lease, agent *broker.Agent) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []string
	for _, a := range s.approvers {
		if mayDecide(a, l, agent) == nil {
			name := a.Name
			if name == "" {
				name = a.Email
			}
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}
