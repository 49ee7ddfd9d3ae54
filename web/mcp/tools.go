package mcp

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/stint-broker/stint/broker"
)

// What list_roles says a request would get.
const (
	WouldAutoApprove   = "auto_approve"
	WouldNeedApproval  = "needs_approval"
	WouldDeny          = "deny"
	WouldUnknown       = "unknown"
	maxWaitSecondsText = "at most the server's bound"
)

// ListRolesIn is the input of list_roles.
type ListRolesIn struct {
	Task          string `json:"task,omitempty" jsonschema:"optional: the task you would request access for, so that policy judges it as in a real request"`
	Justification string `json:"justification,omitempty" jsonschema:"optional: why you would need the access"`
}

// ListRolesOut is the output of list_roles.
type ListRolesOut struct {
	Roles []RoleInfo `json:"roles"`
}

// RoleInfo is one role as list_roles shows it.
type RoleInfo struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Kind        string `json:"kind" jsonschema:"what the credential is: database (username and password), token (a Vault token) or generic"`
	Sensitivity string `json:"sensitivity" jsonschema:"low, medium, high or critical"`
	DefaultTTL  string `json:"default_ttl" jsonschema:"the window when ttl is not given"`
	MinTTL      string `json:"min_ttl"`
	MaxTTL      string `json:"max_ttl"`
	// Would is what a request with the default ttl would get now.
	Would          string   `json:"would" jsonschema:"what a request would get now: auto_approve, needs_approval or deny (unknown if it could not be asked now)"`
	Approvals      int      `json:"approvals,omitempty" jsonschema:"how many human approvals a request needs"`
	ApproverGroup  string   `json:"approver_group,omitempty"`
	Reasons        []string `json:"reasons,omitempty" jsonschema:"why policy decided so"`
	InlineSecret   bool     `json:"inline_secret,omitempty" jsonschema:"true if this role's secret is returned in the tool result"`
	PreviewProblem string   `json:"preview_problem,omitempty" jsonschema:"why no decision could be previewed"`
}

func (t *tools) listRoles(ctx context.Context, _ *sdk.CallToolRequest, in ListRolesIn, call *Call) (ListRolesOut, error) {
	roles, err := t.Leases.Roles(ctx)
	if err != nil {
		return ListRolesOut{}, err
	}
	task := in.Task
	if strings.TrimSpace(task) == "" {
		task = "preview of the roles this agent may request"
	}
	out := ListRolesOut{Roles: make([]RoleInfo, 0, len(roles))}
	for _, r := range roles {
		info := RoleInfo{
			Name: r.Name, Description: r.Description, Kind: string(r.Kind), Sensitivity: string(r.Sensitivity),
			DefaultTTL: r.DefaultTTL.String(), MinTTL: r.MinWindow().String(), MaxTTL: r.MaxTTL.String(),
			InlineSecret: r.MCP.InlineSecret,
		}
		p, err := t.Leases.PreviewLease(ctx, broker.LeaseRequest{Role: r.Name, Task: task, Justification: in.Justification})
		switch code := broker.ErrorCode(err); {
		case err == nil:
			info.Would, info.Reasons = would(p.Decision), p.Decision.Reasons
			info.Approvals, info.ApproverGroup = p.Decision.Approvals, p.Decision.ApproverGroup
		case code == broker.EINVALID:
			info.Would, info.PreviewProblem = WouldDeny, modelMessage(err)
		case code == broker.ETOOMANY || code == broker.EUNAVAILABLE:
			// One preview per role can outrun the agent's rate limit:
			// the roles are still worth listing.
			info.Would, info.PreviewProblem = WouldUnknown, modelMessage(err)
		default:
			return ListRolesOut{}, err
		}
		out.Roles = append(out.Roles, info)
	}
	return out, nil
}

func would(d broker.Decision) string {
	switch d.Outcome {
	case broker.OutcomeApprove:
		return WouldAutoApprove
	case broker.OutcomeApprovals:
		return WouldNeedApproval
	}
	return WouldDeny
}

// RequestAccessIn is the input of request_access.
type RequestAccessIn struct {
	Role           string `json:"role" jsonschema:"the role to request, as list_roles names it"`
	TTL            string `json:"ttl,omitempty" jsonschema:"how long you need the access, such as 15m or 1h; between the role's min_ttl and max_ttl; default: the role's default_ttl"`
	Task           string `json:"task" jsonschema:"what you will do with the access (at most 500 characters)"`
	Justification  string `json:"justification" jsonschema:"why the task needs this access (at most 2000 characters)"`
	IdempotencyKey string `json:"idempotency_key" jsonschema:"a unique key you choose for this request (such as a UUID); send the same key when retrying so the access is granted once"`
	WaitSeconds    *int   `json:"wait_seconds,omitempty" jsonschema:"how long to wait for a human approval before returning pending, in seconds (0 returns at once; default 30; capped by the server)"`
}

// LeaseOut is a lease as the tools show it: its state, its window and how
// to use its credential. It holds a secret only when ContainsSecret.
type LeaseOut struct {
	LeaseID    string `json:"lease_id"`
	Role       string `json:"role"`
	State      string `json:"state" jsonschema:"pending, approved, active, revoking, released, expired, revoked, denied, rejected, timed_out, lapsed, canceled or failed"`
	Decision   string `json:"decision,omitempty" jsonschema:"why the request was granted, denied or sent to approvers"`
	TTL        string `json:"ttl"`
	ExpiresAt  string `json:"expires_at,omitempty"`
	ExpiresIn  *int64 `json:"expires_in_seconds,omitempty"`
	DecideBy   string `json:"decide_by,omitempty" jsonschema:"when a pending request times out"`
	ActivateBy string `json:"activate_by,omitempty" jsonschema:"when an approved lease lapses unless activated"`
	Username   string `json:"username,omitempty" jsonschema:"the login name of the credential (not a secret)"`

	Delivery         string `json:"delivery,omitempty" jsonschema:"how the credential was handed over: file, exec or inline"`
	CredentialFile   string `json:"credential_file,omitempty" jsonschema:"the private file holding the credential; do not print it"`
	CredentialFormat string `json:"credential_format,omitempty" jsonschema:"pg_service (a libpq service file) or env (shell variable assignments)"`
	Usage            string `json:"usage,omitempty" jsonschema:"how to use the credential"`
	ExecCommand      string `json:"exec_command,omitempty" jsonschema:"the command that runs a program with the credential; replace <command>"`

	// ContainsSecret says Secret holds the credential itself.
	ContainsSecret bool           `json:"contains_secret" jsonschema:"true only if this result contains the secret itself"`
	Secret         map[string]any `json:"secret,omitempty"`
	// Next says what the model should do next.
	Next string `json:"next"`
}

func (t *tools) requestAccess(ctx context.Context, req *sdk.CallToolRequest, in RequestAccessIn, call *Call) (LeaseOut, error) {
	if err := firstProblem(
		required("role", in.Role), required("task", in.Task), required("justification", in.Justification),
		required("idempotency_key", in.IdempotencyKey),
	); err != nil {
		return LeaseOut{}, err
	}
	wait, err := t.wait(in.WaitSeconds)
	if err != nil {
		return LeaseOut{}, err
	}
	role, err := t.role(ctx, in.Role)
	if err != nil {
		return LeaseOut{}, err
	}
	inline := role.MCP.InlineSecret
	l, cred, err := t.Leases.RequestLease(ctx, broker.LeaseRequest{
		Role: in.Role, TTL: in.TTL, Task: in.Task, Justification: in.Justification,
		IdempotencyKey: in.IdempotencyKey,
		// Over HTTP the credential is minted where it is used, by stint exec.
		Deferred: t.Files == nil && !inline,
	})
	if l != nil {
		call.LeaseID = l.ID
	}
	if err != nil {
		return LeaseOut{}, err
	}
	if l.State == broker.LeasePending && wait > 0 {
		if l, err = t.waitApproval(ctx, req, l, wait); err != nil {
			return LeaseOut{}, err
		}
	}
	return t.deliver(ctx, l, cred, role, call)
}

// LeaseStatusIn is the input of lease_status.
type LeaseStatusIn struct {
	LeaseID     string `json:"lease_id" jsonschema:"the lease_id that request_access returned"`
	WaitSeconds *int   `json:"wait_seconds,omitempty" jsonschema:"for a pending lease, how long to wait for the decision, in seconds (default 0)"`
}

func (t *tools) leaseStatus(ctx context.Context, req *sdk.CallToolRequest, in LeaseStatusIn, call *Call) (LeaseOut, error) {
	if err := required("lease_id", in.LeaseID); err != nil {
		return LeaseOut{}, err
	}
	call.LeaseID = in.LeaseID
	wait := time.Duration(0)
	if in.WaitSeconds != nil {
		var err error
		if wait, err = t.wait(in.WaitSeconds); err != nil {
			return LeaseOut{}, err
		}
	}
	l, err := t.Leases.FindLeaseByID(ctx, in.LeaseID)
	if err != nil {
		return LeaseOut{}, err
	}
	if l.State == broker.LeasePending && wait > 0 {
		if l, err = t.waitApproval(ctx, req, l, wait); err != nil {
			return LeaseOut{}, err
		}
	}
	role, err := t.role(ctx, l.Role)
	if err != nil && broker.ErrorCode(err) != broker.EINVALID {
		return LeaseOut{}, err
	}
	return t.deliver(ctx, l, nil, role, call)
}

// LeaseIn is the input of release_access.
type LeaseIn struct {
	LeaseID string `json:"lease_id" jsonschema:"the lease_id that request_access returned"`
}

func (t *tools) releaseAccess(ctx context.Context, _ *sdk.CallToolRequest, in LeaseIn, call *Call) (LeaseOut, error) {
	if err := required("lease_id", in.LeaseID); err != nil {
		return LeaseOut{}, err
	}
	call.LeaseID = in.LeaseID
	l, err := t.Leases.FindLeaseByID(ctx, in.LeaseID)
	if err != nil {
		return LeaseOut{}, err
	}
	switch {
	case l.State == broker.LeasePending || l.State == broker.LeaseApproved:
		l, err = t.Leases.CancelLease(ctx, l.ID)
	case l.State == broker.LeaseActive:
		l, err = t.Leases.ReleaseLease(ctx, l.ID)
	}
	if err != nil {
		return LeaseOut{}, err
	}
	if t.Files != nil && l.State != broker.LeaseActive {
		if err := t.Files.Remove(l.ID); err != nil {
			return LeaseOut{}, err
		}
	}
	out := leaseOut(l)
	switch {
	case l.State == broker.LeaseRevoking:
		out.Next = "The credential is being revoked; Stint retries until it is gone. Nothing more to do."
	case l.State.Terminal():
		out.Next = "The lease has ended (" + string(l.State) + "); its credential no longer works. Nothing more to do."
	}
	return out, nil
}

// ExtendAccessIn is the input of extend_access.
type ExtendAccessIn struct {
	LeaseID string `json:"lease_id" jsonschema:"the active lease to extend"`
	TTL     string `json:"ttl" jsonschema:"how much longer, such as 15m"`
}

func (t *tools) extendAccess(ctx context.Context, _ *sdk.CallToolRequest, in ExtendAccessIn, call *Call) (LeaseOut, error) {
	if err := firstProblem(required("lease_id", in.LeaseID), required("ttl", in.TTL)); err != nil {
		return LeaseOut{}, err
	}
	call.LeaseID = in.LeaseID
	l, err := t.Leases.ExtendLease(ctx, in.LeaseID, in.TTL)
	if err != nil {
		return LeaseOut{}, err
	}
	out := leaseOut(l)
	if p, ok := t.filePath(l.ID); ok {
		out.Delivery, out.CredentialFile = DeliveryFile, p
	}
	out.Next = "The window now ends at " + out.ExpiresAt + "; the credential is unchanged. Release the access when the task is done."
	return out, nil
}

// ListMyLeasesIn is the input of list_my_leases.
type ListMyLeasesIn struct {
	All   bool `json:"all,omitempty" jsonschema:"include ended leases"`
	Limit int  `json:"limit,omitempty" jsonschema:"at most this many leases (1-100, default 20)"`
}

// ListMyLeasesOut is the output of list_my_leases.
type ListMyLeasesOut struct {
	Leases []LeaseOut `json:"leases"`
	Total  int        `json:"total"`
}

func (t *tools) listMyLeases(ctx context.Context, _ *sdk.CallToolRequest, in ListMyLeasesIn, _ *Call) (ListMyLeasesOut, error) {
	limit := in.Limit
	switch {
	case limit == 0:
		limit = 20
	case limit < 1 || limit > 100:
		return ListMyLeasesOut{}, broker.FieldErrorf("limit", "limit must be between 1 and 100, not %d.", limit)
	}
	filter := broker.LeaseFilter{Limit: limit}
	if !in.All {
		filter.States = []broker.LeaseState{broker.LeasePending, broker.LeaseApproved, broker.LeaseIssuing, broker.LeaseActive, broker.LeaseRevoking}
	}
	leases, total, err := t.Leases.FindLeases(ctx, filter)
	if err != nil {
		return ListMyLeasesOut{}, err
	}
	out := ListMyLeasesOut{Leases: make([]LeaseOut, 0, len(leases)), Total: total}
	for _, l := range leases {
		o := leaseOut(l)
		if p, ok := t.filePath(l.ID); ok {
			o.Delivery, o.CredentialFile = DeliveryFile, p
		}
		out.Leases = append(out.Leases, o)
	}
	return out, nil
}

// role returns the caller's role by name, or EINVALID naming the roles it
// may request.
func (t *tools) role(ctx context.Context, name string) (*broker.Role, error) {
	roles, err := t.Leases.Roles(ctx)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(roles))
	for _, r := range roles {
		if r.Name == name {
			return r, nil
		}
		names = append(names, r.Name)
	}
	if len(names) == 0 {
		return nil, broker.FieldErrorf("role", "Role %q does not exist or you may not request it; you may request no role at all.", name)
	}
	return nil, broker.FieldErrorf("role", "Role %q does not exist or you may not request it; roles you may request: %s (see list_roles).", name, strings.Join(names, ", "))
}

// wait resolves wait_seconds.
func (t *tools) wait(secs *int) (time.Duration, error) {
	if secs == nil {
		return min(defaultWait, t.MaxWait), nil
	}
	limit := int(t.MaxWait / time.Second)
	if *secs < 0 || *secs > limit {
		return 0, broker.FieldErrorf("wait_seconds", "wait_seconds must be between 0 and %d, not %d.", limit, *secs)
	}
	return time.Duration(*secs) * time.Second, nil
}

// waitApproval waits up to wait for a pending lease's decision, sending a
// progress notification every ProgressEvery when the client asked for
// progress. It returns the lease as it then is.
func (t *tools) waitApproval(ctx context.Context, req *sdk.CallToolRequest, l *broker.Lease, wait time.Duration) (*broker.Lease, error) {
	start := time.Now()
	deadline := start.Add(wait)
	var token any
	if req != nil && req.Params != nil {
		token = req.Params.GetProgressToken()
	}
	for l.State == broker.LeasePending {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			break
		}
		if token != nil && req.Session != nil {
			msg := "Waiting for a human to approve the request"
			if d := l.PolicyDecision; d != nil && d.Approvals > 0 {
				msg = fmt.Sprintf("Waiting for %d approval(s) from %s", d.Approvals, d.ApproverGroup)
			}
			if l.DecideBy != nil {
				msg += "; the request times out at " + l.DecideBy.UTC().Format(time.RFC3339)
			}
			_ = req.Session.NotifyProgress(ctx, &sdk.ProgressNotificationParams{
				ProgressToken: token, Message: msg,
				Progress: time.Since(start).Seconds(), Total: wait.Seconds(),
			})
		}
		next, err := t.Leases.WaitLease(ctx, l.ID, min(left, t.ProgressEvery))
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return nil, err
		}
		l = next
	}
	return l, nil
}

// deliver renders l for the model and hands over its credential: cred if
// the request minted one, or, over stdio, the one activating an approved
// lease mints now.
func (t *tools) deliver(ctx context.Context, l *broker.Lease, cred *broker.Credential, role *broker.Role, call *Call) (LeaseOut, error) {
	inline := role != nil && role.MCP.InlineSecret
	if cred == nil && l.State == broker.LeaseApproved && (t.Files != nil || inline) {
		var err error
		if l, cred, err = t.Leases.ActivateLease(ctx, l.ID); err != nil {
			return LeaseOut{}, err
		}
	}
	out := leaseOut(l)
	switch {
	case cred != nil && inline:
		call.Delivery = DeliveryInline
		out.Delivery, out.ContainsSecret, out.Secret = DeliveryInline, true, cred.Reveal()
		out.Next = "This result CONTAINS A SECRET (role " + l.Role + " is configured to return it): use it only for the task, never repeat it, and call release_access when done."
	case cred != nil && t.Files != nil:
		f, err := t.Files.Write(l, cred)
		if err != nil {
			// The credential cannot reach the agent: give it back at once.
			if _, rerr := t.Leases.ReleaseLease(context.WithoutCancel(ctx), l.ID); rerr != nil {
				t.Logger.Error("release undeliverable lease", "lease_id", l.ID, "err", rerr)
			}
			return LeaseOut{}, fmt.Errorf("deliver credential of lease %s: %w", l.ID, err)
		}
		call.Delivery = DeliveryFile
		out.Delivery, out.CredentialFile, out.CredentialFormat, out.Usage = DeliveryFile, f.Path, f.Format, f.Usage
		out.Next = "Access is active until " + out.ExpiresAt + ". Use the credential as usage shows (never print the file); call release_access with lease_id " + l.ID + " as soon as the task is done."
	case cred != nil:
		// Unreachable by configuration (HTTP requests are deferred); never
		// put a secret in the result by accident.
		out.Next = "The credential was minted but cannot be shown here; release this lease and request again."
	default:
		t.describe(l, &out, call)
	}
	return out, nil
}

// describe fills in what the model should do with a lease whose credential
// is not handed over in this call.
func (t *tools) describe(l *broker.Lease, out *LeaseOut, call *Call) {
	switch l.State {
	case broker.LeasePending:
		out.Next = "A human must approve this request. Call lease_status with lease_id " + l.ID + " (optionally with wait_seconds) to learn the decision."
	case broker.LeaseApproved:
		if t.Files == nil {
			call.Delivery = DeliveryExec
			out.Delivery = DeliveryExec
			out.ExecCommand = "stint exec --lease " + l.ID + " -- <command>"
			out.Next = "Access is granted. Run the program that needs it as exec_command shows (for example stint exec --lease " + l.ID + " -- psql); the credential is minted inside that process and never shown here. Activate before " + out.ActivateBy + ", and call release_access when done."
		} else {
			out.Next = "The lease is approved; call lease_status to activate it and receive the credential file."
		}
	case broker.LeaseActive:
		if p, ok := t.filePath(l.ID); ok {
			out.Delivery, out.CredentialFile = DeliveryFile, p
			out.Next = "Access is active until " + out.ExpiresAt + "; the credential is in credential_file. Call release_access when done."
		} else {
			out.Next = "Access is active until " + out.ExpiresAt + ". Its credential was handed over once when it was activated; if it is lost, release the lease and request again."
		}
	case broker.LeaseRevoking:
		out.Next = "The lease is ending; its credential is being revoked."
	case broker.LeaseDenied:
		out.Next = "The request was denied; do not retry it unchanged."
	default:
		if l.State.Terminal() {
			out.Next = "The lease has ended (" + string(l.State) + "). Request access again with a new idempotency_key if the task still needs it."
		}
	}
}

// filePath returns the credential file of a lease delivered by this
// server, if any.
func (t *tools) filePath(id string) (string, bool) {
	if t.Files == nil {
		return "", false
	}
	return t.Files.Path(id)
}

// leaseOut renders a lease without any credential.
func leaseOut(l *broker.Lease) LeaseOut {
	out := LeaseOut{
		LeaseID: l.ID, Role: l.Role, State: string(l.State), Decision: l.Decision, TTL: l.TTL.String(),
		Username: l.Username,
	}
	if l.ExpiresAt != nil {
		out.ExpiresAt = l.ExpiresAt.UTC().Format(time.RFC3339)
		if l.State == broker.LeaseActive {
			left := max(int64(time.Until(*l.ExpiresAt)/time.Second), 0)
			out.ExpiresIn = &left
		}
	}
	if l.DecideBy != nil && l.State == broker.LeasePending {
		out.DecideBy = l.DecideBy.UTC().Format(time.RFC3339)
	}
	if l.ActivateBy != nil && l.State == broker.LeaseApproved {
		out.ActivateBy = l.ActivateBy.UTC().Format(time.RFC3339)
	}
	return out
}

func required(field, v string) error {
	if strings.TrimSpace(v) == "" {
		return broker.FieldErrorf(field, "%s is required.", field)
	}
	return nil
}

func firstProblem(errs ...error) error {
	i := slices.IndexFunc(errs, func(e error) bool { return e != nil })
	if i < 0 {
		return nil
	}
	return errs[i]
}
