package broker

import (
	"context"
	"time"
)

// Containment is the kill switch pulled on one agent: every live lease of
// the agent (of one role, when Role is set) is marked to end, and the agent
// is suspended or disabled, in one store transaction, before Vault is asked
// to revoke anything. From then on no lease of the agent can become active,
// and the revocation queue owns ending the marked leases: it retries with
// backoff, never gives up and survives restarts. Progress says how far it
// got.
type Containment struct {
	ID      string `json:"id"`
	AgentID string `json:"agent_id"`
	Agent   string `json:"agent"`
	// AgentState is the state the agent was put in (suspended or
	// disabled); empty when its state was left alone (revoke-all).
	AgentState AgentState `json:"agent_state,omitempty"`
	// Role limits the containment to the agent's leases on one role (an
	// access review's removal); empty means every role.
	Role      string    `json:"role,omitempty"`
	Actor     string    `json:"actor"`
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`

	// Progress is read from the leases each time the containment is read.
	Progress ContainmentProgress `json:"progress"`
}

// ContainmentProgress counts a containment's leases.
type ContainmentProgress struct {
	// Total is how many leases the containment ends.
	Total int `json:"total"`
	// Ended have reached their end state: Vault confirmed the revocation,
	// or nothing had been minted (pending and approved leases).
	Ended int `json:"ended"`
	// Revoking wait for Vault to confirm; Failing of them had their last
	// attempt fail (Errors says why).
	Revoking int `json:"revoking"`
	Failing  int `json:"failing"`
	// Errors are the distinct last errors of the failing leases, most
	// frequent first.
	Errors []ContainmentError `json:"errors,omitempty"`
	// NextAttemptAt is the earliest next revocation attempt of a failing
	// lease.
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
}

// Done reports whether every lease of the containment has ended.
func (p ContainmentProgress) Done() bool { return p.Ended == p.Total }

// ContainmentError is one revocation error and how many leases last failed
// with it.
type ContainmentError struct {
	Error  string `json:"error"`
	Leases int    `json:"leases"`
}

// ContainOptions are the parts of a containment that the lease service
// decides and the store applies in the containment's transaction.
type ContainOptions struct {
	// AgentUpdate, if set, is applied to the agent (its state, the instant
	// its tokens stop working, its OAuth credentials).
	AgentUpdate *AgentUpdate
	// MintGraceUntil is when a lease that was issuing (a mint in flight)
	// becomes due for the revocation queue if its minter has not recorded
	// the credential by then: the minter hands it over as soon as Vault
	// answers, and a minter that died leaves the reconciler to find the
	// credential.
	MintGraceUntil time.Time
	// MintingReason, if set, is the reason recorded on leases that were
	// issuing, in place of the containment's Reason: the caller says what
	// becomes of a credential being minted.
	MintingReason string
}

// ContainmentStore persists containments.
type ContainmentStore interface {
	// ContainAgent records c (ID, AgentID, AgentState, Role, Actor, Reason;
	// it sets Agent and CreatedAt) and, in the same transaction, applies
	// opts.AgentUpdate to the agent and marks every live lease of the agent
	// (of c.Role when set) to end, each with an event by c.Actor for
	// c.Reason (opts.MintingReason for issuing leases, when set):
	//   - pending and approved leases end revoked at once (nothing was
	//     minted);
	//   - active leases become revoking (EndState revoked), due at once;
	//   - issuing leases become revoking (EndState revoked), due at
	//     opts.MintGraceUntil;
	//   - revoking leases keep their EndState and are made due at once.
	// It returns c with its progress. Returns ENOTFOUND if the agent does
	// not exist.
	ContainAgent(ctx context.Context, c *Containment, opts ContainOptions) (*Containment, error)
	// FindContainmentByID returns the containment with its progress.
	// Returns ENOTFOUND if none has the id.
	FindContainmentByID(ctx context.Context, id string) (*Containment, error)
	// FindContainments returns the agent's containments, newest first, at
	// most limit (0: all), each with its progress.
	FindContainments(ctx context.Context, agentID string, limit int) ([]*Containment, error)
}
