package broker

import (
	"errors"
	"fmt"
	"strings"
)

// TransitionActors says which kinds of actor may cause a lease transition.
// It is a set: a transition may be open to several kinds.
type TransitionActors uint8

// The kinds of actor that move leases between states. ActorKind.TransitionActors
// maps the kind of a caller (broker.Actor) to one of them.
const (
	// ByAgent is the lease's own agent: it activates, cancels, releases and
	// extends its leases.
	ByAgent TransitionActors = 1 << iota
	// ByApprover is a human approver deciding a pending lease.
	ByApprover
	// BySystem is Stint's own work: the expiry loop, approval timeouts, the
	// issuer, the revocation queue and the reconciler.
	BySystem
	// BySecurity is governance and security: admins, the kill switch,
	// containment and access reviews.
	BySecurity
)

// String lists the kinds in the set, e.g. "agent|system".
func (a TransitionActors) String() string {
	var names []string
	for _, k := range []struct {
		bit  TransitionActors
		name string
	}{{ByAgent, "agent"}, {ByApprover, "approver"}, {BySystem, "system"}, {BySecurity, "security"}} {
		if a&k.bit != 0 {
			names = append(names, k.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, "|")
}

// leaseTransitions is the lease state machine: for each state, the states a
// lease in it may move to and who may cause each move. A move to the same
// state is an update that changes fields but not the state (an approval
// short of the quorum, an extension, a failed revocation attempt). End
// states have no entry: nothing leaves them.
var leaseTransitions = map[LeaseState]map[LeaseState]TransitionActors{
	LeasePending: {
		LeasePending:  ByApprover | BySystem, // an approval short of the quorum; a new deadline or decision
		LeaseApproved: ByApprover,            // the quorum is reached
		LeaseRejected: ByApprover,            // an approver refused
		LeaseTimedOut: BySystem,              // no decision before DecideBy
		LeaseCanceled: ByAgent | BySecurity,  // the agent withdrew it, or an admin
		LeaseRevoked:  BySecurity,            // containment: nothing was minted
	},
	LeaseApproved: {
		LeaseApproved: BySystem | BySecurity, // a note, or a change of ActivateBy
		LeaseIssuing:  ByAgent,               // activation writes ahead
		LeaseLapsed:   BySystem,              // not activated before ActivateBy
		LeaseCanceled: ByAgent | BySecurity,  // the agent withdrew it, or an admin
		LeaseRevoked:  BySecurity,            // containment: nothing was minted
	},
	LeaseIssuing: {
		LeaseActive:   ByAgent,               // the credential was minted and handed out
		LeaseFailed:   BySystem,              // the mint failed, or never completed
		LeaseRevoking: BySystem | BySecurity, // minted but withheld, or contained while minting
	},
	LeaseActive: {
		LeaseActive:   ByAgent | BySystem,              // an extension, or the issuer capping the window
		LeaseRevoking: ByAgent | BySystem | BySecurity, // released, expired or revoked
	},
	LeaseRevoking: {
		LeaseRevoking: BySystem | BySecurity,           // a failed attempt, a retry, a credential recorded
		LeaseExpired:  BySystem,                        // Vault confirmed the revocation
		LeaseReleased: ByAgent | BySystem | BySecurity, // the agent's release, or an admin's (a lease, a task) confirmed
		LeaseRevoked:  BySystem | BySecurity,
	},
}

// LeaseTransitionActors returns who may move a lease from one state to
// another; zero if the move is not allowed.
func LeaseTransitionActors(from, to LeaseState) TransitionActors {
	return leaseTransitions[from][to]
}

// ErrLeaseTransition is the sentinel of a lease update that the state
// machine does not allow (errors.Is). The error that carries it is an
// *Error with code ETRANSITION.
var ErrLeaseTransition = errors.New("lease transition not allowed")

// ErrUnguardedLeaseUpdate is the sentinel of a lease update that names no
// expected state (an empty LeaseUpdate.From). Stores refuse such updates:
// every writer says what it expects the lease to be.
var ErrUnguardedLeaseUpdate = errors.New("lease update names no expected state")

// TransitionActors returns the kind of lease-state-machine actor an actor
// of kind k is, the rule for who may move a lease:
//   - an agent (ActorAgent) is ByAgent;
//   - an approver deciding a pending lease (ActorApprover) is ByApprover;
//   - Stint's own jobs (ActorSystem, SystemActor) are BySystem;
//   - admins (ActorAdmin), governance (GovernanceActor), containment and
//     the kill switch are BySecurity;
//   - a reviewer (ActorReviewer) and any other kind are none of them: they
//     may not move a lease at all.
func (k ActorKind) TransitionActors() TransitionActors {
	switch k {
	case ActorAgent:
		return ByAgent
	case ActorApprover:
		return ByApprover
	case ActorSystem:
		return BySystem
	case ActorAdmin:
		return BySecurity
	}
	return 0
}

// LeaseActorKind returns the kind of the actor recorded in lease history
// as actor ("kind:name", Actor.String).
func LeaseActorKind(actor string) ActorKind {
	kind, _, _ := strings.Cut(actor, ":")
	return ActorKind(kind)
}

// CheckLeaseTransition returns nil if a lease may move from one state to
// another (to == from for an update that keeps the state), and otherwise
// an ETRANSITION *Error that wraps ErrLeaseTransition. It does not say
// who may: CheckLeaseMove does.
func CheckLeaseTransition(from, to LeaseState) error {
	if LeaseTransitionActors(from, to) != 0 {
		return nil
	}
	msg := fmt.Sprintf("Lease is %s; it cannot become %s.", from, to)
	if from == to {
		msg = fmt.Sprintf("Lease is %s; it can no longer change.", from)
	}
	return &Error{Code: ETRANSITION, Message: msg, Err: ErrLeaseTransition}
}

// CheckLeaseMove returns nil if actor (as recorded in lease history,
// "kind:name") may move a lease from one state to another: the state
// machine allows the move, and allows it to the actor's kind
// (ActorKind.TransitionActors). Otherwise it returns an ETRANSITION *Error
// that wraps ErrLeaseTransition and names the move and the actor's kind.
// Every store calls it, through CheckLeaseUpdate or directly in its bulk
// paths, so that the rule does not depend on the caller.
func CheckLeaseMove(from, to LeaseState, actor string) error {
	if err := CheckLeaseTransition(from, to); err != nil {
		return err
	}
	allowed := LeaseTransitionActors(from, to)
	kind := LeaseActorKind(actor)
	if allowed&kind.TransitionActors() != 0 {
		return nil
	}
	return &Error{
		Code:    ETRANSITION,
		Message: fmt.Sprintf("Lease %s → %s is not allowed to actor kind %q; only %s may make it.", from, to, kind, allowed),
		Err:     ErrLeaseTransition,
	}
}

// CheckLeaseUpdate returns the error a store returns before applying upd
// to a lease in state cur: ErrUnguardedLeaseUpdate (wrapped) if upd names
// no expected state, ECONFLICT if cur is not one of them, and the error of
// CheckLeaseMove if the state machine does not allow the move, or not to
// the kind of upd.Actor.
func CheckLeaseUpdate(cur LeaseState, upd *LeaseUpdate) error {
	if len(upd.From) == 0 {
		return fmt.Errorf("update lease: %w", ErrUnguardedLeaseUpdate)
	}
	ok := false
	for _, s := range upd.From {
		ok = ok || s == cur
	}
	if !ok {
		return Errorf(ECONFLICT, "Lease is %s.", cur)
	}
	to := cur
	if upd.State != nil {
		to = *upd.State
	}
	return CheckLeaseMove(cur, to, upd.Actor)
}
