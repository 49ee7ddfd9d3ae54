package mcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/stint-broker/stint/broker"
)

// MCP scopes: what an access token for the MCP endpoint lets the agent do.
const (
	// ScopeLeasesRead lists roles and reads the agent's own leases.
	ScopeLeasesRead = "leases:read"
	// ScopeLeasesWrite requests, extends and releases leases.
	ScopeLeasesWrite = "leases:write"
)

// Scopes lists every MCP scope, in the order metadata shows them.
var Scopes = []string{ScopeLeasesRead, ScopeLeasesWrite}

// ToolScopes is the scope each tool needs.
var ToolScopes = map[string]string{
	"list_roles":     ScopeLeasesRead,
	"lease_status":   ScopeLeasesRead,
	"list_my_leases": ScopeLeasesRead,
	"request_access": ScopeLeasesWrite,
	"release_access": ScopeLeasesWrite,
	"extend_access":  ScopeLeasesWrite,
}

// Delivery names how a tool handed a credential over; the audit log
// records it.
const (
	// DeliveryFile wrote the credential to a 0600 file (stdio).
	DeliveryFile = "file"
	// DeliveryExec left it to `stint exec --lease ID`, which mints it
	// inside the child process (HTTP).
	DeliveryExec = "exec"
	// DeliveryInline put the secret in the tool result (roles with
	// mcp.inline_secret only).
	DeliveryInline = "inline"
)

// Leases is what the tools need from Stint: the lease service's calls,
// made as the agent. The server passes its lease service (the actor is on
// the context); `stint mcp` passes the HTTP API's client.
type Leases interface {
	Roles(ctx context.Context) ([]*broker.Role, error)
	PreviewLease(ctx context.Context, req broker.LeaseRequest) (*broker.LeasePreview, error)
	RequestLease(ctx context.Context, req broker.LeaseRequest) (*broker.Lease, *broker.Credential, error)
	FindLeaseByID(ctx context.Context, id string) (*broker.Lease, error)
	WaitLease(ctx context.Context, id string, wait time.Duration) (*broker.Lease, error)
	ActivateLease(ctx context.Context, id string) (*broker.Lease, *broker.Credential, error)
	ReleaseLease(ctx context.Context, id string) (*broker.Lease, error)
	CancelLease(ctx context.Context, id string) (*broker.Lease, error)
	ExtendLease(ctx context.Context, id, ttl string) (*broker.Lease, error)
	FindLeases(ctx context.Context, filter broker.LeaseFilter) ([]*broker.Lease, int, error)
}

// Call is one tool call, as the audit log records it.
type Call struct {
	Tool string
	// Transport is "http" or "stdio".
	Transport string
	// Client is the MCP client's name and version as it introduced itself
	// (empty if it did not), Session the MCP session id if there is one.
	Client  string
	Session string
	// LeaseID is the lease the call created or acted on, if any.
	LeaseID string
	// Delivery is how a credential was handed over (DeliveryFile, …), if
	// one was.
	Delivery string
	// Error is the message of a failed call.
	Error string
}

// Config configures the tools. Leases is required.
type Config struct {
	Leases Leases
	// Transport is "http" or "stdio", for the audit log and the tools'
	// instructions.
	Transport string
	// Files, when set, delivers credentials to files (stdio); when nil,
	// requests are deferred and the result names `stint exec --lease`.
	Files *FileDelivery
	// Authorize, when set, is asked before every tool call with the scope
	// the tool needs; it returns the context to call Leases with (the
	// HTTP endpoint puts the agent's actor on it), or an error for the
	// model.
	Authorize func(ctx context.Context, req *sdk.CallToolRequest, scope string) (context.Context, error)
	// Record, when set, is called after every tool call (audit). It must
	// not block for long.
	Record func(ctx context.Context, call Call)
	// MaxWait caps how long request_access and lease_status wait for a
	// human approval; ProgressEvery is how often they report progress
	// meanwhile.
	MaxWait       time.Duration
	ProgressEvery time.Duration
	// Version is Stint's version, shown to clients.
	Version string
	Logger  *slog.Logger
}

// Defaults for Config.
const (
	DefaultMaxWait       = 50 * time.Second
	DefaultProgressEvery = 5 * time.Second
	defaultWait          = 30 * time.Second
)

// tools holds the configured tool handlers.
type tools struct {
	Config
}

// NewServer returns an MCP server with Stint's tools.
func NewServer(cfg Config) *sdk.Server {
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = DefaultProgressEvery
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := &tools{Config: cfg}
	s := sdk.NewServer(&sdk.Implementation{Name: "stint", Title: "Stint just-in-time access", Version: cfg.Version},
		&sdk.ServerOptions{Instructions: t.instructions(), Logger: cfg.Logger})
	no, yes := false, true
	add(t, s, &sdk.Tool{
		Name:        "list_roles",
		Title:       "List requestable roles",
		Description: "List the roles you may request access to, with each role's maximum TTL, sensitivity and what a request would get right now: auto_approve (granted at once), needs_approval (a human must approve; request_access reports pending), or deny (with the reasons). This is a dry run: nothing is requested or recorded. Pass task and justification to have policy judge them as it would in a request.",
		Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: &no},
	}, t.listRoles)
	add(t, s, &sdk.Tool{
		Name:  "request_access",
		Title: "Request time-boxed access",
		Description: "Ask for just-in-time access to a role for a limited time (ttl, such as \"15m\"). State the task and why you need the access; a human may read them. " +
			"Always send an idempotency_key you choose (a fresh UUID per intended request) and send the same key again if you retry: the lease is created once, however often the call is repeated. " +
			"The result never contains the password or token unless it says contains_secret=true; instead it tells you where the credential is (credential_file and usage) or which command uses it (exec_command). " +
			"If a human must approve, the call waits up to wait_seconds while reporting progress, then returns state \"pending\"; call lease_status with the lease_id later. Release the access with release_access as soon as the task is done.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: &no, IdempotentHint: true, OpenWorldHint: &yes},
	}, t.requestAccess)
	add(t, s, &sdk.Tool{
		Name:        "lease_status",
		Title:       "Check a lease",
		Description: "Show a lease's state (pending, approved, active, released, expired, denied, …), when it expires, and how to use its credential. For a pending lease it waits up to wait_seconds for the decision while reporting progress." + t.statusActivation(),
		Annotations: &sdk.ToolAnnotations{ReadOnlyHint: cfg.Files == nil, DestructiveHint: &no, IdempotentHint: true, OpenWorldHint: &no},
	}, t.leaseStatus)
	add(t, s, &sdk.Tool{
		Name:        "release_access",
		Title:       "Give access back",
		Description: "End a lease early, as soon as the task is done: an active lease's credential is revoked at once (open sessions are closed) and its credential file removed; a pending or approved request is withdrawn.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: &yes, IdempotentHint: true, OpenWorldHint: &no},
	}, t.releaseAccess)
	add(t, s, &sdk.Tool{
		Name:        "extend_access",
		Title:       "Extend a lease",
		Description: "Lengthen an active lease's window by ttl (such as \"15m\") when the task needs more time. Allowed only once at least half of the window has passed and within the role's limits; policy may refuse. The credential stays the same.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: &no, OpenWorldHint: &no},
	}, t.extendAccess)
	add(t, s, &sdk.Tool{
		Name:        "list_my_leases",
		Title:       "List my leases",
		Description: "List your leases, newest first: by default the live ones (pending, approved, active); with all=true the ended ones too.",
		Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: &no},
	}, t.listMyLeases)
	return s
}

func (t *tools) instructions() string {
	how := "Credentials are written to a private file on this machine whose path the result names; use it as the result's usage says, and never print the file."
	if t.Files == nil {
		how = "Credentials are never returned here: run the command that needs one as the result's exec_command says (stint exec --lease ID -- <command>), which mints it inside that process."
	}
	return "Stint grants time-boxed access to databases and APIs. Ask with request_access only for what the task needs, for as short a time as it needs, then give it back with release_access. " + how +
		" A role may need a human's approval: then request_access returns state pending and lease_status tells you when it is decided."
}

func (t *tools) statusActivation() string {
	if t.Files != nil {
		return " An approved lease is activated by this call: its credential is written to a file and the window starts."
	}
	return " An approved lease is activated by running its exec_command."
}

// add registers a typed tool whose handler runs through t.call: scope
// check, error text for the model, audit.
func add[In, Out any](t *tools, s *sdk.Server, tool *sdk.Tool, h func(ctx context.Context, req *sdk.CallToolRequest, in In, call *Call) (Out, error)) {
	scope := ToolScopes[tool.Name]
	sdk.AddTool(s, tool, func(ctx context.Context, req *sdk.CallToolRequest, in In) (*sdk.CallToolResult, Out, error) {
		var zero Out
		call := &Call{Tool: tool.Name, Transport: t.Transport}
		if req.Session != nil {
			call.Session = req.Session.ID()
		}
		if req.Extra != nil && req.Extra.Header != nil && call.Session == "" {
			call.Session = req.Extra.Header.Get("Mcp-Session-Id")
		}
		if ci := req.ClientInfo(); ci != nil {
			call.Client = strings.TrimSpace(ci.Name + " " + ci.Version)
		}
		defer func() {
			if t.Record != nil {
				t.Record(context.WithoutCancel(ctx), *call)
			}
		}()
		if t.Authorize != nil {
			actx, err := t.Authorize(ctx, req, scope)
			if err != nil {
				call.Error = modelMessage(err)
				return nil, zero, errors.New(call.Error)
			}
			ctx = actx
		}
		out, err := h(ctx, req, in, call)
		if err != nil {
			if broker.ErrorCode(err) == broker.EINTERNAL {
				t.Logger.Error("mcp tool failed", "tool", tool.Name, "lease_id", call.LeaseID, "err", err)
			}
			call.Error = modelMessage(err)
			return nil, zero, errors.New(call.Error)
		}
		return nil, out, nil
	})
}

// modelMessage is the text a model gets for err: what was wrong and what
// is allowed, from the error's user-facing message, prefixed by the field
// at fault; internal errors say only that.
func modelMessage(err error) string {
	code := broker.ErrorCode(err)
	msg := broker.ErrorMessage(err)
	if f := broker.ErrorField(err); f != "" && !strings.Contains(strings.ToLower(msg), strings.ToLower(strings.ReplaceAll(f, "_", " "))) {
		msg = f + ": " + msg
	}
	switch code {
	case broker.EUNAUTHORIZED:
		return "Not authenticated: " + msg + " The agent's credentials for Stint are invalid, expired or revoked; a human must fix them."
	case broker.EFORBIDDEN:
		return "Forbidden: " + msg
	case broker.EDENIED:
		return msg + " Do not retry the same request; ask a human if the access is really needed."
	case broker.ETOOMANY:
		var e *broker.Error
		if errors.As(err, &e) && e.RetryAfter > 0 {
			ra := e.RetryAfter
			return fmt.Sprintf("%s Try again in %d seconds.", msg, int(ra.Round(time.Second)/time.Second))
		}
		return msg
	case broker.EUNAVAILABLE:
		return msg + " Try again later."
	case broker.EINTERNAL:
		return "Internal error in Stint; try again later."
	}
	return msg
}
