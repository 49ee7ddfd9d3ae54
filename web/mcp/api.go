package mcp

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/web/client"
)

// API is Leases over Stint's HTTP API, as the agent the client
// authenticates: what `stint mcp` (stdio) serves the tools with.
type API struct {
	Client *client.Client
	// Session names this MCP server's run in the audit log.
	Session string
}

var _ Leases = (*API)(nil)

// Roles implements Leases.
func (a *API) Roles(ctx context.Context) ([]*broker.Role, error) {
	rs, err := a.Client.Roles(ctx)
	if err != nil {
		return nil, apiError(err)
	}
	out := make([]*broker.Role, 0, len(rs))
	for _, r := range rs {
		role := &broker.Role{Name: r.Name, Description: r.Description, Kind: broker.CredentialKind(r.Kind),
			Sensitivity: broker.Sensitivity(r.Sensitivity), AutoApprove: r.AutoApprove, MCP: broker.RoleMCP{InlineSecret: r.MCP.InlineSecret}}
		role.DefaultTTL, _ = time.ParseDuration(r.DefaultTTL)
		role.MinTTL, _ = time.ParseDuration(r.MinTTL)
		role.MaxTTL, _ = time.ParseDuration(r.MaxTTL)
		out = append(out, role)
	}
	return out, nil
}

// PreviewLease implements Leases.
func (a *API) PreviewLease(ctx context.Context, req broker.LeaseRequest) (*broker.LeasePreview, error) {
	p, err := a.Client.PreviewLease(ctx, client.LeaseRequest{Role: req.Role, TTL: req.TTL, Task: req.Task, Justification: req.Justification, Breakglass: req.Breakglass})
	if err != nil {
		return nil, apiError(err)
	}
	window, _ := time.ParseDuration(p.TTL)
	return &broker.LeasePreview{Role: &broker.Role{Name: p.Role}, Window: window, Decision: broker.Decision{
		Outcome: broker.Outcome(p.Outcome), Approvals: p.Approvals, ApproverGroup: p.ApproverGroup, PolicyIDs: p.PolicyIDs, Reasons: p.Reasons,
	}}, nil
}

// RequestLease implements Leases. The API has no deferred requests: a
// granted request comes back active with its credential.
func (a *API) RequestLease(ctx context.Context, req broker.LeaseRequest) (*broker.Lease, *broker.Credential, error) {
	if req.Deferred {
		return nil, nil, errors.New("request lease: the HTTP API does not defer activation")
	}
	l, err := a.Client.RequestLease(ctx, client.LeaseRequest{Role: req.Role, TTL: req.TTL, Task: req.Task,
		Justification: req.Justification, IdempotencyKey: req.IdempotencyKey})
	if err != nil {
		return nil, nil, apiError(err)
	}
	return a.withCredential(ctx, l)
}

// FindLeaseByID implements Leases.
func (a *API) FindLeaseByID(ctx context.Context, id string) (*broker.Lease, error) {
	l, err := a.Client.Lease(ctx, id)
	if err != nil {
		return nil, apiError(err)
	}
	return lease(l), nil
}

// WaitLease implements Leases.
func (a *API) WaitLease(ctx context.Context, id string, wait time.Duration) (*broker.Lease, error) {
	l, err := a.Client.WaitLease(ctx, id, max(wait, time.Second))
	if err != nil {
		return nil, apiError(err)
	}
	return lease(l), nil
}

// ActivateLease implements Leases.
func (a *API) ActivateLease(ctx context.Context, id string) (*broker.Lease, *broker.Credential, error) {
	l, err := a.Client.ActivateLease(ctx, id)
	if err != nil {
		return nil, nil, apiError(err)
	}
	return a.withCredential(ctx, l)
}

// ReleaseLease implements Leases.
func (a *API) ReleaseLease(ctx context.Context, id string) (*broker.Lease, error) {
	l, err := a.Client.ReleaseLease(ctx, id)
	if err != nil {
		return nil, apiError(err)
	}
	return lease(l), nil
}

// CancelLease implements Leases.
func (a *API) CancelLease(ctx context.Context, id string) (*broker.Lease, error) {
	l, err := a.Client.CancelLease(ctx, id)
	if err != nil {
		return nil, apiError(err)
	}
	return lease(l), nil
}

// ExtendLease implements Leases.
func (a *API) ExtendLease(ctx context.Context, id, ttl string) (*broker.Lease, error) {
	l, err := a.Client.ExtendLease(ctx, id, ttl)
	if err != nil {
		return nil, apiError(err)
	}
	return lease(l), nil
}

// FindLeases implements Leases.
func (a *API) FindLeases(ctx context.Context, filter broker.LeaseFilter) ([]*broker.Lease, int, error) {
	f := client.LeaseFilter{Limit: filter.Limit, Offset: filter.Offset}
	for _, s := range filter.States {
		f.States = append(f.States, string(s))
	}
	if filter.Role != nil {
		f.Role = *filter.Role
	}
	p, err := a.Client.Leases(ctx, f)
	if err != nil {
		return nil, 0, apiError(err)
	}
	out := make([]*broker.Lease, 0, len(p.Leases))
	for _, l := range p.Leases {
		out = append(out, lease(l))
	}
	return out, p.Total, nil
}

// Record sends a tool call to the server's audit log; it is Config.Record
// for `stint mcp`. A failure is returned for the caller to log: the tool
// call itself has happened.
func (a *API) Record(ctx context.Context, call Call) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return a.Client.RecordMCPCall(ctx, client.MCPCall{Tool: call.Tool, Client: call.Client, Session: a.Session,
		LeaseID: call.LeaseID, Delivery: call.Delivery, Error: call.Error})
}

// withCredential converts a lease and, if the answer carried one, its
// credential, whose kind comes from the role.
func (a *API) withCredential(ctx context.Context, l *client.Lease) (*broker.Lease, *broker.Credential, error) {
	bl := lease(l)
	if l.Credential == nil {
		return bl, nil, nil
	}
	kind := broker.KindGeneric
	roles, err := a.Roles(ctx)
	if err != nil {
		// The credential is live but cannot be delivered: give it back.
		a.Client.ReleaseLease(context.WithoutCancel(ctx), l.ID)
		return nil, nil, fmt.Errorf("find the kind of role %s: %w", l.Role, err)
	}
	for _, r := range roles {
		if r.Name == l.Role {
			kind = r.Kind
		}
	}
	return bl, credential(kind, l.Credential.Reveal()), nil
}

// credential rebuilds the API's credential fields as a broker.Credential.
func credential(kind broker.CredentialKind, fields map[string]any) *broker.Credential {
	c := &broker.Credential{Kind: kind, Data: map[string]any{}}
	for k, v := range fields {
		switch k {
		case "lease_duration":
			if f, ok := v.(float64); ok {
				c.LeaseDuration = int(f)
			}
		case "expires_at":
			if s, ok := v.(string); ok {
				c.ExpiresAt, _ = time.Parse(time.RFC3339, s)
			}
		case "host", "port", "database":
			if kind != broker.KindDatabase {
				c.Data[k] = v
				continue
			}
			if c.Connection == nil {
				c.Connection = &broker.Connection{}
			}
			switch k {
			case "host":
				c.Connection.Host = fmt.Sprint(v)
			case "port":
				c.Connection.Port, _ = strconv.Atoi(fmt.Sprint(v))
			default:
				c.Connection.Database = fmt.Sprint(v)
			}
		default:
			c.Data[k] = v
		}
	}
	return c
}

// lease converts the API's lease.
func lease(l *client.Lease) *broker.Lease {
	ttl, _ := time.ParseDuration(l.TTL)
	return &broker.Lease{
		ID: l.ID, AgentID: l.AgentID, Agent: l.Agent, Role: l.Role, Task: l.Task, Justification: l.Justification,
		TTL: broker.Duration(ttl), State: broker.LeaseState(l.State), EndState: broker.LeaseState(l.EndState),
		Decision: l.Decision, Username: l.Username, CreatedAt: l.CreatedAt, UpdatedAt: l.UpdatedAt,
		ActivatedAt: l.ActivatedAt, ExpiresAt: l.ExpiresAt, EndedAt: l.EndedAt, DecideBy: l.DecideBy, ActivateBy: l.ActivateBy,
		PolicyDecision: l.PolicyDecision, Extensions: l.Extensions,
	}
}

// apiError turns the client's errors into broker errors, so that the tools
// show the server's message: an answer keeps its code, message and field;
// an unreachable server is EUNAVAILABLE.
func apiError(err error) error {
	if e, ok := client.AsError(err); ok {
		be := &broker.Error{Code: e.Code, Message: e.Message, Field: e.Field, RetryAfter: e.RetryAfter}
		if be.Message == "" {
			be.Message = fmt.Sprintf("The Stint server answered %d.", e.Status)
		}
		return be
	}
	var ue *client.UnreachableError
	if errors.As(err, &ue) {
		return broker.Errorf(broker.EUNAVAILABLE, "The Stint server at %s cannot be reached.", ue.URL)
	}
	return err
}
