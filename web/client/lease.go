package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/stint-broker/stint/broker"
)

// Lease states, as Lease.State carries them.
const (
	StatePending  = "pending"
	StateApproved = "approved"
	StateIssuing  = "issuing"
	StateActive   = "active"
	StateRevoking = "revoking"
	StateDenied   = "denied"
	StateRejected = "rejected"
	StateTimedOut = "timed_out"
	StateLapsed   = "lapsed"
	StateExpired  = "expired"
	StateReleased = "released"
	StateRevoked  = "revoked"
	StateFailed   = "failed"
	StateCanceled = "canceled"
)

// Lease is one grant's whole life, from request to end, as the API shows it.
// Times are UTC; optional times are nil until they happen.
type Lease struct {
	ID            string `json:"id"`
	State         string `json:"state"`
	EndState      string `json:"end_state,omitempty"`
	Role          string `json:"role"`
	Agent         string `json:"agent"`
	AgentID       string `json:"agent_id"`
	Task          string `json:"task"`
	Justification string `json:"justification"`
	// TTL is the window, such as "15m0s" (extensions included).
	TTL         string     `json:"ttl"`
	Decision    string     `json:"decision,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	ActivatedAt *time.Time `json:"activated_at,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	// ExpiresIn is the whole seconds left in an active lease's window.
	ExpiresIn *int64     `json:"expires_in,omitempty"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
	// DecideBy is when a pending lease times out; ActivateBy is when an
	// approved lease lapses unless activated.
	DecideBy   *time.Time `json:"decide_by,omitempty"`
	ActivateBy *time.Time `json:"activate_by,omitempty"`
	// PolicyDecision is what policy decided and why.
	PolicyDecision *broker.Decision    `json:"policy_decision,omitempty"`
	RiskScore      int                 `json:"risk_score"`
	RiskFactors    []broker.RiskFactor `json:"risk_factors,omitempty"`
	Breakglass     bool                `json:"breakglass,omitempty"`
	Extensions     int                 `json:"extensions,omitempty"`
	// AuthMethod is how the agent authenticated when it asked.
	AuthMethod string `json:"auth_method,omitempty"`
	// Username is the minted credential's login name; not a secret.
	Username string `json:"username,omitempty"`

	// Shown to admins only.
	VaultPath      string     `json:"vault_path,omitempty"`
	VaultLeaseID   string     `json:"vault_lease_id,omitempty"`
	RevokeAttempts int        `json:"revoke_attempts,omitempty"`
	NextRevokeAt   *time.Time `json:"next_revoke_at,omitempty"`
	RevokeError    string     `json:"revoke_error,omitempty"`

	// Credential is set only in the Lease that RequestLease (auto-approved)
	// or ActivateLease returned: the one time the server shows it.
	Credential *Credential `json:"credential,omitempty"`
}

// Ended reports whether the lease reached an end state (or is being
// revoked).
func (l *Lease) Ended() bool {
	switch l.State {
	case StatePending, StateApproved, StateIssuing, StateActive:
		return false
	}
	return true
}

// LeaseRequest is the body of RequestLease.
type LeaseRequest struct {
	// Role is the role to lease (required); Roles lists them.
	Role string `json:"role"`
	// TTL is the window, such as "15m"; empty means the role's default.
	TTL string `json:"ttl,omitempty"`
	// Task says what the access is for (required).
	Task string `json:"task"`
	// Justification says why the task needs it.
	Justification string `json:"justification,omitempty"`
	// Breakglass asks for an emergency grant without approval, with
	// BreakglassReason (roles that allow it).
	Breakglass       bool   `json:"breakglass,omitempty"`
	BreakglassReason string `json:"breakglass_reason,omitempty"`
	// IdempotencyKey makes the request safe to send again: a repeat with
	// the same key returns the first request's lease, without a credential.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

// RequestLease asks for a lease. An auto-approved request comes back active,
// with its Credential; one that needs approval comes back pending (see
// AwaitDecision and ActivateLease). A denial is an *Error with CodeDenied.
func (c *Client) RequestLease(ctx context.Context, req LeaseRequest) (*Lease, error) {
	var l Lease
	if _, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/leases", body: req}, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// LeaseFilter selects leases for Leases. Zero fields select everything.
type LeaseFilter struct {
	// States are lease states (any of them).
	States []string
	Role   string
	// Agent is an agent's name or id (admins; an agent sees its own only).
	Agent string
	// Task selects the leases of one task.
	Task          string
	Limit, Offset int
}

// LeasePage is one page of Leases.
type LeasePage struct {
	Leases []*Lease `json:"leases"`
	Total  int      `json:"total"`
	Limit  int      `json:"limit"`
	Offset int      `json:"offset"`
}

// Leases lists leases, newest first: an agent sees its own, an admin all.
func (c *Client) Leases(ctx context.Context, f LeaseFilter) (*LeasePage, error) {
	q := url.Values{}
	if len(f.States) > 0 {
		q.Set("state", strings.Join(f.States, ","))
	}
	setIf(q, "role", f.Role)
	setIf(q, "agent", f.Agent)
	setIf(q, "task", f.Task)
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.Offset > 0 {
		q.Set("offset", strconv.Itoa(f.Offset))
	}
	var p LeasePage
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/leases", query: q}, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

func setIf(q url.Values, k, v string) {
	if v != "" {
		q.Set(k, v)
	}
}

// Lease returns one lease, never its credential.
func (c *Client) Lease(ctx context.Context, id string) (*Lease, error) {
	return c.leaseCall(ctx, http.MethodGet, id, "", nil)
}

// MaxWait is the longest long poll the server serves.
const MaxWait = 60 * time.Second

// WaitLease long-polls a pending lease: the server answers when its state
// changes or after wait (at most MaxWait), with the lease as it is then.
// A lease that is not pending comes back at once.
func (c *Client) WaitLease(ctx context.Context, id string, wait time.Duration) (*Lease, error) {
	if wait <= 0 || wait > MaxWait {
		wait = MaxWait
	}
	var l Lease
	_, err := c.do(ctx, request{
		method:  http.MethodGet,
		path:    "/v1/leases/" + pathEscape(id),
		query:   url.Values{"wait": {strconv.FormatInt(int64(wait/time.Second), 10) + "s"}},
		timeout: wait + c.timeout,
	}, &l)
	if err != nil {
		return nil, err
	}
	return &l, nil
}

// AwaitDecision waits, one long poll after another, until the lease is no
// longer pending (approved, rejected, timed out, canceled …) or ctx ends.
// progress, if not nil, is called with the lease after every poll that
// left it pending.
func (c *Client) AwaitDecision(ctx context.Context, id string, progress func(*Lease)) (*Lease, error) {
	for {
		l, err := c.WaitLease(ctx, id, 30*time.Second)
		if err != nil {
			return nil, err
		}
		if l.State != StatePending {
			return l, nil
		}
		if progress != nil {
			progress(l)
		}
		if err := ctx.Err(); err != nil {
			return l, err
		}
	}
}

// LeaseEvent is one step of a lease's history.
type LeaseEvent struct {
	ID      int64     `json:"id"`
	LeaseID string    `json:"lease_id"`
	At      time.Time `json:"at"`
	From    string    `json:"from,omitempty"`
	To      string    `json:"to"`
	Actor   string    `json:"actor"`
	Reason  string    `json:"reason,omitempty"`
}

// LeaseEvents returns the lease's history, oldest first.
func (c *Client) LeaseEvents(ctx context.Context, id string) ([]*LeaseEvent, error) {
	var out struct {
		Events []*LeaseEvent `json:"events"`
	}
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/leases/" + pathEscape(id) + "/events"}, &out); err != nil {
		return nil, err
	}
	return out.Events, nil
}

// ActivateLease mints an approved lease's credential: the lease comes back
// active with its Credential, shown this once. A second activation is an
// *Error with CodeConflict.
func (c *Client) ActivateLease(ctx context.Context, id string) (*Lease, error) {
	return c.leaseCall(ctx, http.MethodPost, id, "/activate", nil)
}

// CancelLease withdraws a pending or approved lease.
func (c *Client) CancelLease(ctx context.Context, id string) (*Lease, error) {
	return c.leaseCall(ctx, http.MethodPost, id, "/cancel", nil)
}

// ReleaseLease ends a lease now: its credential is revoked in Vault. The
// lease comes back released, or revoking if the server's retry queue took
// the revocation over.
func (c *Client) ReleaseLease(ctx context.Context, id string) (*Lease, error) {
	return c.leaseCall(ctx, http.MethodDelete, id, "", nil)
}

// ExtendLease asks to lengthen an active lease's window by ttl (empty: the
// role's default). A refusal is an *Error: CodeDenied (the lease expires as
// planned) or CodeConflict (too early, at the role's limits, not active).
func (c *Client) ExtendLease(ctx context.Context, id, ttl string) (*Lease, error) {
	return c.leaseCall(ctx, http.MethodPost, id, "/extend", map[string]string{"ttl": ttl})
}

// RevokeLease revokes any lease with a reason for its history (admins).
func (c *Client) RevokeLease(ctx context.Context, id, reason string) (*Lease, error) {
	return c.leaseCall(ctx, http.MethodPost, id, "/revoke", map[string]string{"reason": reason})
}

func (c *Client) leaseCall(ctx context.Context, method, id, suffix string, body any) (*Lease, error) {
	var l Lease
	if _, err := c.do(ctx, request{method: method, path: "/v1/leases/" + pathEscape(id) + suffix, body: body}, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// Role is a role the caller may request.
type Role struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Kind is database, token or generic.
	Kind        string `json:"kind"`
	Sensitivity string `json:"sensitivity"`
	// DefaultTTL, MinTTL and MaxTTL read like "15m0s".
	DefaultTTL  string `json:"default_ttl"`
	MinTTL      string `json:"min_ttl"`
	MaxTTL      string `json:"max_ttl"`
	AutoApprove bool   `json:"auto_approve"`
	// MaxExtensions is how many times a lease's window may be extended.
	MaxExtensions int `json:"max_extensions,omitempty"`
	// Env maps environment variable names to credential fields: how
	// `stint exec` hands this role's credential to a command, beside the
	// defaults for its kind.
	Env map[string]string `json:"env,omitempty"`
	// MCP says how the MCP tools hand the credential over.
	MCP RoleMCP `json:"mcp"`
}

// RoleMCP configures the MCP tools for a role.
type RoleMCP struct {
	// InlineSecret: the MCP tools return the secret in the tool result.
	InlineSecret bool `json:"inline_secret"`
}

// Preview is what a lease request would get now (PreviewLease).
type Preview struct {
	Role string `json:"role"`
	TTL  string `json:"ttl"`
	// Outcome is approve (granted at once), approvals (needs Approvals
	// from ApproverGroup) or deny.
	Outcome       string   `json:"outcome"`
	Approvals     int      `json:"approvals,omitempty"`
	ApproverGroup string   `json:"approver_group,omitempty"`
	PolicyIDs     []string `json:"policy_ids,omitempty"`
	Reasons       []string `json:"reasons,omitempty"`
}

// PreviewLease asks what req would get now, a dry run of policy: nothing
// is created. Only Role, TTL, Task, Justification and Breakglass count.
func (c *Client) PreviewLease(ctx context.Context, req LeaseRequest) (*Preview, error) {
	body := struct {
		Role          string `json:"role"`
		TTL           string `json:"ttl,omitempty"`
		Task          string `json:"task,omitempty"`
		Justification string `json:"justification,omitempty"`
		Breakglass    bool   `json:"breakglass,omitempty"`
	}{req.Role, req.TTL, req.Task, req.Justification, req.Breakglass}
	var p Preview
	if _, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/leases/preview", body: body}, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// MCPCall is one tool call of an MCP server running beside the agent, for
// the audit log (RecordMCPCall).
type MCPCall struct {
	Tool     string `json:"tool"`
	Client   string `json:"client,omitempty"`
	Session  string `json:"session,omitempty"`
	LeaseID  string `json:"lease_id,omitempty"`
	Delivery string `json:"delivery,omitempty"`
	Error    string `json:"error,omitempty"`
}

// RecordMCPCall records a tool call in the server's audit log.
func (c *Client) RecordMCPCall(ctx context.Context, call MCPCall) error {
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/mcp/calls", body: call}, nil)
	return err
}

// Roles lists the roles the caller may request.
func (c *Client) Roles(ctx context.Context) ([]*Role, error) {
	var out struct {
		Roles []*Role `json:"roles"`
	}
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/roles"}, &out); err != nil {
		return nil, err
	}
	return out.Roles, nil
}

// Identity is who the server takes the caller for.
type Identity struct {
	// Kind is agent, admin or approver.
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	AgentID    string `json:"agent_id,omitempty"`
	AuthMethod string `json:"auth_method,omitempty"`
	SourceIP   string `json:"source_ip,omitempty"`
}

// Whoami returns the authenticated caller.
func (c *Client) Whoami(ctx context.Context) (*Identity, error) {
	var id Identity
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/whoami"}, &id); err != nil {
		return nil, err
	}
	return &id, nil
}
