package leases

import (
	"context"
	"strings"

	"github.com/stint-broker/stint/broker"
)

// taskLive are the states of a task's leases that ReleaseTask and
// RevokeTask look at: everything not yet ended.
var taskLive = []broker.LeaseState{
	broker.LeasePending, broker.LeaseApproved, broker.LeaseIssuing, broker.LeaseActive, broker.LeaseRevoking,
}

// ReleaseTask implements broker.LeaseService.
func (s *Service) ReleaseTask(ctx context.Context, task string) ([]*broker.Lease, error) {
	return s.endTask(ctx, task, false, "")
}

// RevokeTask implements broker.LeaseService.
func (s *Service) RevokeTask(ctx context.Context, task, reason string) ([]*broker.Lease, error) {
	return s.endTask(ctx, task, true, reason)
}

// endTask ends the task's live leases one by one. Each step is the one a
// single lease would take, so a lease that changes state meanwhile (its
// window closed, an approver answered) is read again and reported as it is.
func (s *Service) endTask(ctx context.Context, task string, revoke bool, reason string) ([]*broker.Lease, error) {
	actor, err := actorFrom(ctx)
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(task) == "" {
		return nil, broker.FieldErrorf("task", "Name the task.")
	}
	switch {
	case revoke && !actor.IsAdmin():
		return nil, broker.Errorf(broker.EFORBIDDEN, "Only admins revoke a task's leases; agents release their own.")
	case !actor.IsAdmin() && (actor.Kind != broker.ActorAgent || actor.AgentID == ""):
		return nil, broker.Errorf(broker.EFORBIDDEN, "Only agents and admins release a task's leases.")
	case revoke && strings.TrimSpace(reason) == "":
		return nil, broker.FieldErrorf("reason", "A reason is required to revoke a task's leases.")
	}
	if err := broker.CheckLen("task", task, broker.MaxTaskLen); err != nil {
		return nil, err
	}
	if err := broker.CheckLen("reason", reason, broker.MaxReasonLen); err != nil {
		return nil, err
	}

	filter := broker.LeaseFilter{Task: &task, States: taskLive, NoTotal: true}
	if !actor.IsAdmin() {
		filter.AgentID = &actor.AgentID
	}
	live, _, err := s.Store.FindLeases(ctx, filter)
	if err != nil {
		return nil, err
	}
	endState, why := broker.LeaseReleased, "released with its task"
	if actor.IsAdmin() {
		why = "released with its task by an admin"
	}
	if revoke {
		endState, why = broker.LeaseRevoked, "revoked with its task: "+reason
	}
	out := make([]*broker.Lease, 0, len(live))
	for _, l := range live {
		var ended *broker.Lease
		switch l.State {
		case broker.LeaseActive:
			ended, err = s.end(ctx, l, endState, actor.String(), why)
		case broker.LeasePending, broker.LeaseApproved:
			ended, err = s.cancelForTask(ctx, l, actor, why)
		default:
			ended = l // revoking already, or being minted right now
		}
		if broker.ErrorCode(err) == broker.ECONFLICT {
			ended, err = s.Store.FindLeaseByID(ctx, l.ID)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, ended)
	}
	s.Logger.Info("task leases ended", "task", task, "leases", len(out), "revoke", revoke, "actor", actor.String())
	return out, nil
}

// cancelForTask ends a pending or approved lease of a task: nothing was
// minted, so there is nothing to revoke.
func (s *Service) cancelForTask(ctx context.Context, l *broker.Lease, actor broker.Actor, reason string) (*broker.Lease, error) {
	now := s.Now().UTC()
	l, err := s.Store.UpdateLease(ctx, l.ID, broker.LeaseUpdate{
		From:    []broker.LeaseState{broker.LeasePending, broker.LeaseApproved},
		State:   ptr(broker.LeaseCanceled),
		EndedAt: &now,
		Actor:   actor.String(),
		Reason:  reason,
	})
	if err != nil {
		return nil, err
	}
	s.LeaseChanged(l.ID)
	return l, nil
}
