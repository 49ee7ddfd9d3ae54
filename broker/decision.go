package broker

import (
	"context"
	"time"
)

// Outcome is what a decision says about a request.
type Outcome string

// Outcomes.
const (
	// OutcomeDeny refuses the request: a forbid matched, nothing permitted it,
	// or evaluation failed (fail closed).
	OutcomeDeny Outcome = "deny"
	// OutcomeApprove grants the request at once.
	OutcomeApprove Outcome = "approve"
	// OutcomeApprovals needs Approvals distinct humans from ApproverGroup.
	OutcomeApprovals Outcome = "approvals"
)

// Action is what a decision is asked about.
type Action string

// Actions.
const (
	ActionRequest Action = "request" // a new lease
	ActionExtend  Action = "extend"  // a longer window for a live lease
)

// DecisionRequest is everything policy may consider about one request.
type DecisionRequest struct {
	Action Action
	Agent  *Agent
	Role   *Role
	// TTL is the requested window.
	TTL           time.Duration
	Task          string
	Justification string
	// AuthMethod is how the agent authenticated (api_key, mtls, …).
	AuthMethod string
	// OnBehalfOf is the human the agent acts for (token exchange), if any.
	OnBehalfOf string
	SourceIP   string
	// Time is when the request was made; policy sees its hour and weekday in
	// the configured time zone.
	Time time.Time
	// RiskScore is the live risk score, 0–100.
	RiskScore int
	// ActiveRoles are the roles the agent holds live leases on.
	ActiveRoles []string
	// Breakglass is true for an emergency request (see Role.Breakglass).
	Breakglass bool
	// DryRun is true for a preview (LeaseService.PreviewLease): it is
	// decided and scored as the request would be, and the risk scorer
	// counts it nowhere. Policy does not see it.
	DryRun bool
}

// Decision is the answer of policy to a DecisionRequest, with the policy ids
// and reasons that produced it. Approvers and the console show them.
type Decision struct {
	Outcome Outcome `json:"outcome"`
	// Approvals is how many distinct approvers must approve (OutcomeApprovals).
	Approvals int `json:"approvals,omitempty"`
	// ApproverGroup names the group approvers come from.
	ApproverGroup string `json:"approver_group,omitempty"`
	// PolicyIDs are the policies that determined the outcome.
	PolicyIDs []string `json:"policy_ids,omitempty"`
	// Reasons explain the outcome in words.
	Reasons []string `json:"reasons,omitempty"`
}

// Decider decides requests. approvals/policy implements it with Cedar; it
// must fail closed: an evaluation error yields OutcomeDeny with the reason,
// never an error that a caller might treat as approval.
type Decider interface {
	Decide(ctx context.Context, req DecisionRequest) (Decision, error)
}
