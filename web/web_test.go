package web_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/mock"
	"github.com/stint-broker/stint/web"
	"github.com/stint-broker/stint/web/openapitest"
)

// Secrets the fixture hands out. None may ever reach the log, and each may
// appear only in the one response that issues it.
const (
	agentKey     = "stk_agent_0123456789abcdef"
	otherKey     = "stk_other_0123456789abcdef"
	adminToken   = "stk_admin_0123456789abcdef"
	dbPassword   = "pw-A1b2C3d4-never-log"
	newAgentKey  = "stk_new_fedcba9876543210"
	rotatedKey   = "stk_rotated_fedcba98765"
	internalText = "pq: connection reset by peer at 10.1.2.3"
)

var now = time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)

// fixture is a Server wired to mocks that answer from a small fixed world:
// agent etl-bot (agent-1) holds lease-1 (active); lease-2 is pending; the
// role names steer RequestLease to each outcome.
type fixture struct {
	Server *web.Server
	Leases *mock.LeaseService
	Agents *mock.AgentService
	Logs   *syncBuffer

	mu    sync.Mutex
	calls []string // service calls, as "Method arg arg"
}

func (f *fixture) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fixture) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func activeLease() *broker.Lease {
	activated, expires := now.Add(-5*time.Minute), now.Add(10*time.Minute)
	return &broker.Lease{
		ID: "lease-1", AgentID: "agent-1", Agent: "etl-bot", Role: "pg-readonly",
		Task: "nightly export", Justification: "ticket OPS-1", TTL: broker.Duration(15 * time.Minute),
		State: broker.LeaseActive, Decision: "auto-approved by role",
		VaultPath: "database/creds/ro", VaultLeaseID: "database/creds/ro/abc123", Username: "v-token-pg-readonly-x1y2",
		CreatedAt: now.Add(-5 * time.Minute), UpdatedAt: now.Add(-5 * time.Minute),
		ActivatedAt: &activated, ExpiresAt: &expires, AuthMethod: broker.AuthMTLS,
	}
}

func pendingLease() *broker.Lease {
	return &broker.Lease{
		ID: "lease-2", AgentID: "agent-1", Agent: "etl-bot", Role: "pg-admin",
		Task: "schema change", TTL: broker.Duration(time.Hour), State: broker.LeasePending,
		CreatedAt: now, UpdatedAt: now,
	}
}

func ended(l *broker.Lease, state broker.LeaseState) *broker.Lease {
	l.State = state
	t := now
	l.EndedAt = &t
	return l
}

func credential() *broker.Credential {
	return &broker.Credential{
		Kind:          broker.KindDatabase,
		Data:          map[string]any{"username": "v-etl-bot-ro-x1", "password": dbPassword},
		Connection:    &broker.Connection{Host: "127.0.0.1", Port: 5432, Database: "test"},
		LeaseDuration: 900,
		ExpiresAt:     now.Add(15 * time.Minute),
	}
}

func etlBot() *broker.Agent {
	return &broker.Agent{
		ID: "agent-1", Name: "etl-bot", Owner: "ana@example.com", Labels: map[string]string{"team": "data"},
		State: broker.AgentActive, CreatedAt: now.Add(-24 * time.Hour), UpdatedAt: now.Add(-24 * time.Hour),
	}
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	f := &fixture{Logs: &syncBuffer{}}
	notFound := broker.Errorf(broker.ENOTFOUND, "Lease not found.")

	f.Agents = &mock.AgentService{
		AuthenticateFn: func(ctx context.Context, secret string) (broker.Actor, error) {
			switch secret {
			case agentKey:
				return broker.Actor{Kind: broker.ActorAgent, Name: "etl-bot", AgentID: "agent-1", AuthMethod: "api_key"}, nil
			case otherKey:
				return broker.Actor{Kind: broker.ActorAgent, Name: "other-bot", AgentID: "agent-2", AuthMethod: "api_key"}, nil
			case adminToken:
				return broker.Actor{Kind: broker.ActorAdmin, Name: "sec-team", AuthMethod: "admin_token"}, nil
			case "store-down":
				return broker.Actor{}, broker.Errorf(broker.EUNAVAILABLE, "The store is unreachable; try again shortly.")
			}
			return broker.Actor{}, broker.Errorf(broker.EUNAUTHORIZED, "The API key is invalid, expired or revoked.")
		},
		FindAgentFn: func(ctx context.Context, idOrName string) (*broker.Agent, error) {
			if idOrName == "agent-1" || idOrName == "etl-bot" {
				return etlBot(), nil
			}
			return nil, broker.Errorf(broker.ENOTFOUND, "Agent not found.")
		},
		FindAgentsFn: func(ctx context.Context, filter broker.AgentFilter) ([]*broker.Agent, int, error) {
			f.record("FindAgents limit=%d", filter.Limit)
			return []*broker.Agent{etlBot()}, 1, nil
		},
		CreateAgentFn: func(ctx context.Context, na broker.NewAgent) (*broker.Agent, string, *broker.APIKey, error) {
			f.record("CreateAgent %s %s %s %s", na.Name, na.Owner, broker.FormatLabels(na.Labels), na.KeyTTL)
			if na.Name == "etl-bot" {
				return nil, "", nil, broker.Errorf(broker.ECONFLICT, "An agent named %q exists.", na.Name)
			}
			a := etlBot()
			a.ID, a.Name, a.Owner, a.Labels = "agent-9", na.Name, na.Owner, na.Labels
			if na.AuthMethods != nil {
				a.AuthMethods = na.AuthMethods
				if !a.Allows(broker.AuthAPIKey) {
					return a, "", nil, nil
				}
			}
			return a, newAgentKey, &broker.APIKey{ID: "key-9", AgentID: "agent-9", Prefix: "stk_new_", CreatedAt: now, ExpiresAt: now.Add(na.KeyTTL)}, nil
		},
		RotateKeyFn: func(ctx context.Context, agentID string, ttl time.Duration) (string, *broker.APIKey, error) {
			f.record("RotateKey %s %s", agentID, ttl)
			return rotatedKey, &broker.APIKey{ID: "key-10", AgentID: agentID, Prefix: "stk_rota", CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour)}, nil
		},
		ActivateAgentFn: func(ctx context.Context, agentID string) (*broker.Agent, error) {
			f.record("ActivateAgent %s", agentID)
			a := etlBot()
			a.State = broker.AgentActive
			return a, nil
		},
	}

	f.Leases = &mock.LeaseService{
		RequestLeaseFn: func(ctx context.Context, req broker.LeaseRequest) (*broker.Lease, *broker.Credential, error) {
			actor, _ := broker.ActorFromContext(ctx)
			f.record("RequestLease %s %s %q by %s from %s", req.Role, req.TTL, req.Task, actor, actor.SourceIP)
			switch req.Role {
			case "pg-readonly":
				return activeLease(), credential(), nil
			case "pg-admin":
				return pendingLease(), nil, nil
			case "prod-root":
				return nil, nil, broker.Errorf(broker.EDENIED, "Policy forbids prod-root for agents labelled team=data.")
			case "vault-down":
				return nil, nil, fmt.Errorf("issue credential: %w", broker.Errorf(broker.EUNAVAILABLE, "Vault is unreachable; try again shortly."))
			case "broken":
				return nil, nil, fmt.Errorf("insert lease: %w", errors.New(internalText))
			case "capped":
				return nil, nil, broker.Errorf(broker.ETOOMANY, "Agent etl-bot holds too many live leases.")
			}
			if req.TTL == "99h" {
				return nil, nil, broker.FieldErrorf("ttl", "TTL 99h0m0s exceeds the maximum of 1h0m0s for role %q.", req.Role)
			}
			return nil, nil, broker.Errorf(broker.ENOTFOUND, "Role %q not found.", req.Role)
		},
		FindLeaseByIDFn: func(ctx context.Context, id string) (*broker.Lease, error) {
			switch id {
			case "lease-1":
				return activeLease(), nil
			case "lease-slow":
				<-ctx.Done()
				return nil, fmt.Errorf("find lease: %w", ctx.Err())
			case "lease-panic":
				panic("nil map in " + internalText)
			}
			return nil, notFound
		},
		FindLeasesFn: func(ctx context.Context, filter broker.LeaseFilter) ([]*broker.Lease, int, error) {
			var agent, role string
			if filter.AgentID != nil {
				agent = *filter.AgentID
			}
			if filter.Role != nil {
				role = *filter.Role
			}
			f.record("FindLeases states=%v role=%s agent=%s limit=%d offset=%d", filter.States, role, agent, filter.Limit, filter.Offset)
			return []*broker.Lease{activeLease(), pendingLease()}, 2, nil
		},
		FindLeaseEventsFn: func(ctx context.Context, id string) ([]*broker.LeaseEvent, error) {
			if id != "lease-1" {
				return nil, notFound
			}
			return []*broker.LeaseEvent{
				{ID: 1, LeaseID: id, At: now.Add(-5 * time.Minute), To: broker.LeaseIssuing, Actor: "agent:etl-bot", Reason: "auto-approved by role"},
				{ID: 2, LeaseID: id, At: now.Add(-5 * time.Minute), From: broker.LeaseIssuing, To: broker.LeaseActive, Actor: "agent:etl-bot"},
			}, nil
		},
		ReleaseLeaseFn: func(ctx context.Context, id string) (*broker.Lease, error) {
			f.record("ReleaseLease %s", id)
			switch id {
			case "lease-1":
				return ended(activeLease(), broker.LeaseReleased), nil
			case "lease-stuck":
				l := activeLease()
				l.ID, l.State, l.EndState = id, broker.LeaseRevoking, broker.LeaseReleased
				return l, nil
			case "lease-old":
				return nil, broker.Errorf(broker.ECONFLICT, "Lease lease-old has already ended (expired).")
			case "lease-illegal":
				return nil, fmt.Errorf("record release: %w", broker.CheckLeaseTransition(broker.LeaseExpired, broker.LeaseRevoking))
			}
			return nil, notFound
		},
		RevokeLeaseFn: func(ctx context.Context, id, reason string) (*broker.Lease, error) {
			f.record("RevokeLease %s %q", id, reason)
			if id != "lease-1" {
				return nil, notFound
			}
			return ended(activeLease(), broker.LeaseRevoked), nil
		},
		ReleaseTaskFn: func(ctx context.Context, task string) ([]*broker.Lease, error) {
			actor, _ := broker.ActorFromContext(ctx)
			f.record("ReleaseTask %q by %s", task, actor)
			switch task {
			case "nightly export":
				return []*broker.Lease{ended(activeLease(), broker.LeaseReleased)}, nil
			case "stuck/task":
				l := activeLease()
				l.State, l.EndState = broker.LeaseRevoking, broker.LeaseReleased
				return []*broker.Lease{l}, nil
			}
			return []*broker.Lease{}, nil
		},
		RevokeTaskFn: func(ctx context.Context, task, reason string) ([]*broker.Lease, error) {
			f.record("RevokeTask %q %q", task, reason)
			return []*broker.Lease{ended(activeLease(), broker.LeaseRevoked), ended(pendingLease(), broker.LeaseCanceled)}, nil
		},
		ContainAgentFn: func(ctx context.Context, req broker.ContainRequest) (*broker.Containment, error) {
			f.record("ContainAgent %s %s %q", req.AgentID, req.State, req.Reason)
			return &broker.Containment{ID: "cnt-1", AgentID: req.AgentID, Agent: "etl-bot", AgentState: req.State,
				Actor: "admin:ops", Reason: req.Reason, CreatedAt: now,
				Progress: broker.ContainmentProgress{Total: 3, Ended: 1, Revoking: 2}}, nil
		},
		WaitContainmentFn: func(ctx context.Context, id string, wait time.Duration) (*broker.Containment, error) {
			f.record("WaitContainment %s %s", id, wait)
			c := &broker.Containment{ID: id, AgentID: "agent-1", Agent: "etl-bot", Actor: "admin:ops", Reason: "incident 42", CreatedAt: now,
				Progress: broker.ContainmentProgress{Total: 3, Ended: 3}}
			switch id {
			case "cnt-1":
			case "cnt-stalled":
				next := now.Add(4 * time.Second)
				c.Progress = broker.ContainmentProgress{Total: 3, Ended: 1, Revoking: 2, Failing: 2,
					Errors: []broker.ContainmentError{{Error: "Vault is unreachable", Leases: 2}}, NextAttemptAt: &next}
			default:
				return nil, broker.Errorf(broker.ENOTFOUND, "Containment not found.")
			}
			return c, nil
		},
		FindContainmentsFn: func(ctx context.Context, agentID string, limit int) ([]*broker.Containment, error) {
			f.record("FindContainments %s %d", agentID, limit)
			return []*broker.Containment{}, nil
		},
		RolesFn: func(ctx context.Context) ([]*broker.Role, error) {
			return []*broker.Role{{
				Name: "pg-readonly", Description: "Read-only access to the warehouse.", Kind: broker.KindDatabase,
				Sensitivity: broker.SensitivityMedium, DefaultTTL: 15 * time.Minute, MaxTTL: time.Hour, AutoApprove: true,
				Vault:      broker.RoleVault{Path: "database/creds/ro", Method: "read"},
				Connection: &broker.Connection{Host: "db.internal", Port: 5432, Database: "warehouse"},
			}}, nil
		},
		ReadyFn: func(ctx context.Context) error { return nil },
	}

	s := web.NewServer()
	s.Leases, s.Agents = f.Leases, f.Agents
	s.Logger = slog.New(slog.NewJSONHandler(f.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s.Now = func() time.Time { return now }
	s.RequestTimeout = 200 * time.Millisecond
	f.Server = s
	return f
}

// Do sends one request through the whole echo stack.
func (f *fixture) Do(tb testing.TB, method, url, body, token string, header ...string) *httptest.ResponseRecorder {
	tb.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, url, r)
	req.RemoteAddr = "10.0.0.7:41000"
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	// Every exchange is held to the OpenAPI document.
	openapitest.Handler(tb, f.Server.Handler()).ServeHTTP(rec, req)
	return rec
}

type scenario struct {
	Name            string
	Method          string
	URL             string
	Body            string
	Token           string
	WantStatus      int
	WantContains    []string
	WantNotContains []string
	WantHeaders     map[string]string
}

func TestAPI(t *testing.T) {
	errInvalid := `"code":"invalid"`
	scenarios := []scenario{
		// Probes.
		{Name: "Healthz", Method: "GET", URL: "/healthz", WantStatus: 200, WantContains: []string{`{"status":"ok"}`}},
		{Name: "Readyz", Method: "GET", URL: "/readyz", WantStatus: 200, WantContains: []string{`"status":"ok"`}},

		// Authentication.
		{Name: "ErrMissingKey", Method: "GET", URL: "/v1/leases", WantStatus: 401,
			WantContains: []string{`"code":"unauthorized"`, `"request_id":"`},
			WantHeaders:  map[string]string{"WWW-Authenticate": `Bearer realm="stint"`}},
		{Name: "ErrBadKey", Method: "GET", URL: "/v1/leases", Token: "stk_nope", WantStatus: 401,
			WantContains: []string{`"code":"unauthorized"`, "invalid, expired or revoked"},
			WantHeaders:  map[string]string{"WWW-Authenticate": `Bearer realm="stint"`}},
		{Name: "ErrUnknownRouteUnauthenticated", Method: "GET", URL: "/v1/nope", WantStatus: 401},
		{Name: "ErrAuthStoreDown", Method: "GET", URL: "/v1/roles", Token: "store-down", WantStatus: 503,
			WantContains: []string{`"code":"unavailable"`}},
		{Name: "Whoami", Method: "GET", URL: "/v1/whoami", Token: agentKey, WantStatus: 200,
			WantContains: []string{`"kind":"agent"`, `"name":"etl-bot"`, `"source_ip":"10.0.0.7"`}},

		// Requesting a lease.
		{Name: "LeaseCreate", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body:       `{"role":"pg-readonly","ttl":"15m","task":"nightly export","justification":"ticket OPS-1"}`,
			WantStatus: 201,
			WantContains: []string{
				`"id":"lease-1"`, `"state":"active"`, `"role":"pg-readonly"`, `"agent":"etl-bot"`, `"agent_id":"agent-1"`,
				`"task":"nightly export"`, `"justification":"ticket OPS-1"`, `"ttl":"15m0s"`,
				`"created_at":"2026-03-04T09:55:00Z"`, `"activated_at":"2026-03-04T09:55:00Z"`, `"expires_at":"2026-03-04T10:10:00Z"`,
				`"expires_in":600`, `"auth_method":"mtls"`,
				`"credential":{`, `"username":"v-etl-bot-ro-x1"`, `"password":"` + dbPassword + `"`, `"host":"127.0.0.1"`,
				`"port":5432`, `"database":"test"`, `"lease_duration":900`,
			},
			WantNotContains: []string{"vault_lease_id", "vault_path"},
			WantHeaders:     map[string]string{"Cache-Control": "no-store", "Location": "/v1/leases/lease-1"}},
		{Name: "LeaseCreatePending", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body:       `{"role":"pg-admin","task":"schema change"}`,
			WantStatus: 202, WantContains: []string{`"id":"lease-2"`, `"state":"pending"`},
			WantNotContains: []string{`"credential"`, "activated_at"}},
		{Name: "ErrLeaseCreateDenied", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"prod-root","task":"drop tables"}`, WantStatus: 403,
			WantContains: []string{`{"error":{"code":"denied","message":"Policy forbids prod-root for agents labelled team=data."}`}},
		{Name: "ErrLeaseCreateUnknownField", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"pg-readonly","task":"x","approved":true}`, WantStatus: 400,
			WantContains: []string{errInvalid, `"field":"approved"`}},
		{Name: "ErrLeaseCreateMissingRole", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"task":"x"}`, WantStatus: 400, WantContains: []string{errInvalid, `"field":"role"`}},
		{Name: "ErrLeaseCreateEmptyBody", Method: "POST", URL: "/v1/leases", Token: agentKey,
			WantStatus: 400, WantContains: []string{`"field":"role"`}},
		{Name: "ErrLeaseCreateMissingTask", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"pg-readonly","task":"  "}`, WantStatus: 400, WantContains: []string{`"field":"task"`}},
		{Name: "ErrLeaseCreateLongTask", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"pg-readonly","task":"` + strings.Repeat("é", 501) + `"}`, WantStatus: 400,
			WantContains: []string{`"field":"task"`, "at most 500"}},
		{Name: "ErrLeaseCreateLongJustification", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"pg-readonly","task":"x","justification":"` + strings.Repeat("j", 2001) + `"}`, WantStatus: 400,
			WantContains: []string{`"field":"justification"`}},
		{Name: "ErrLeaseCreateWrongType", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"pg-readonly","task":"x","ttl":900}`, WantStatus: 400,
			WantContains: []string{`"field":"ttl"`, "must be a string"}},
		{Name: "ErrLeaseCreateMalformed", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"pg-readonly",`, WantStatus: 400, WantContains: []string{errInvalid, "not valid JSON"}},
		{Name: "ErrLeaseCreateTrailingData", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"pg-readonly","task":"x"} {"role":"pg-admin"}`, WantStatus: 400, WantContains: []string{errInvalid}},
		{Name: "ErrLeaseCreateNotObject", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `["pg-readonly"]`, WantStatus: 400, WantContains: []string{errInvalid}},
		// Strict JSON: exact key names, no duplicate keys, no control or
		// bidirectional formatting characters in any string.
		{Name: "ErrLeaseCreateCaseFoldedKey", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"pg-readonly","Role":"vault-token","task":"x"}`, WantStatus: 400,
			WantContains: []string{errInvalid, `"field":"Role"`, `Unknown field \"Role\"`}},
		{Name: "ErrLeaseCreateCaseOnlyKey", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"ROLE":"pg-readonly","task":"x"}`, WantStatus: 400,
			WantContains: []string{errInvalid, `"field":"ROLE"`}},
		{Name: "ErrLeaseCreateDuplicateKey", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"pg-readonly","task":"x","role":"vault-token"}`, WantStatus: 400,
			WantContains: []string{errInvalid, `"field":"role"`, "appears more than once"}},
		{Name: "ErrLeaseCreateTaskEscape", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"pg-readonly","task":"report\u001b[2K\rAPPROVED BY SECURITY"}`, WantStatus: 400,
			WantContains: []string{errInvalid, `"field":"task"`, "U+001B at character 7"}},
		{Name: "ErrLeaseCreateTaskNUL", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"pg-readonly","task":"x\u0000"}`, WantStatus: 400, WantContains: []string{`"field":"task"`, "U+0000"}},
		{Name: "ErrLeaseCreateJustificationBidi", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"pg-readonly","task":"x","justification":"OPS-1 \u202etxet"}`, WantStatus: 400,
			WantContains: []string{`"field":"justification"`, "U+202E"}},
		{Name: "ErrLeaseCreateBreakglassReasonC1", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"pg-readonly","task":"x","breakglass":true,"breakglass_reason":"x\u009b31m"}`, WantStatus: 400,
			WantContains: []string{`"field":"breakglass_reason"`, "U+009B"}},
		{Name: "ErrLeaseCreateControlInKey", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"pg-readonly","task":"x","\u001b":1}`, WantStatus: 400, WantContains: []string{errInvalid, "U+001B"}},
		{Name: "ErrAgentCreateDuplicateLabel", Method: "POST", URL: "/v1/agents", Token: adminToken,
			Body: `{"name":"new-bot","owner":"ana@example.com","labels":{"team":"data","team":"ops"}}`, WantStatus: 400,
			WantContains: []string{errInvalid, `"field":"labels.team"`, "appears more than once"}},
		{Name: "ErrAgentCreateLabelControl", Method: "POST", URL: "/v1/agents", Token: adminToken,
			Body: `{"name":"new-bot","owner":"ana@example.com","labels":{"team":"da\u0007ta"}}`, WantStatus: 400,
			WantContains: []string{errInvalid, `"field":"labels"`, "U+0007"}},
		{Name: "ErrAgentRevokeAllReasonControl", Method: "POST", URL: "/v1/agents/agent-1/revoke-all", Token: adminToken,
			Body: `{"reason":"incident\n42"}`, WantStatus: 400, WantContains: []string{`"field":"reason"`, "U+000A"}},
		{Name: "ErrLeaseCreateTTLTooLong", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"pg-other","ttl":"99h","task":"x"}`, WantStatus: 400,
			WantContains: []string{`"field":"ttl"`, "exceeds the maximum"}},
		{Name: "ErrLeaseCreateUnknownRole", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"nope","task":"x"}`, WantStatus: 404, WantContains: []string{`"code":"not_found"`}},
		{Name: "ErrLeaseCreateVaultDown", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"vault-down","task":"x"}`, WantStatus: 503,
			WantContains: []string{`"code":"unavailable"`, "Vault is unreachable"}},
		{Name: "ErrLeaseCreateTooMany", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"capped","task":"x"}`, WantStatus: 429, WantContains: []string{`"code":"too_many"`}},
		{Name: "ErrLeaseCreateInternal", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"broken","task":"x"}`, WantStatus: 500,
			WantContains:    []string{`"code":"internal"`, `"message":"Internal error."`},
			WantNotContains: []string{"pq:", "10.1.2.3", "insert lease"}},
		{Name: "ErrLeaseCreateTooLarge", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body: `{"role":"pg-readonly","task":"` + strings.Repeat("x", 70<<10) + `"}`, WantStatus: 413,
			WantContains: []string{errInvalid, "64 KB"},
			WantHeaders:  map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"}},

		// Reading leases.
		{Name: "LeaseView", Method: "GET", URL: "/v1/leases/lease-1", Token: agentKey, WantStatus: 200,
			WantContains:    []string{`"id":"lease-1"`, `"state":"active"`, `"agent":"etl-bot"`, `"expires_at":"2026-03-04T10:10:00Z"`, `"auth_method":"mtls"`, `"username":"v-token-pg-readonly-x1y2"`},
			WantNotContains: []string{"credential", dbPassword, "vault_lease_id"}},
		{Name: "LeaseViewAdmin", Method: "GET", URL: "/v1/leases/lease-1", Token: adminToken, WantStatus: 200,
			WantContains:    []string{`"vault_lease_id":"database/creds/ro/abc123"`, `"vault_path":"database/creds/ro"`},
			WantNotContains: []string{"credential", dbPassword}},
		{Name: "ErrLeaseViewNotFound", Method: "GET", URL: "/v1/leases/lease-404", Token: agentKey, WantStatus: 404,
			WantContains: []string{`{"error":{"code":"not_found","message":"Lease not found."}`}},
		{Name: "ErrLeaseViewTimeout", Method: "GET", URL: "/v1/leases/lease-slow", Token: agentKey, WantStatus: 503,
			WantContains: []string{`"code":"unavailable"`, "took too long"}},
		{Name: "ErrLeaseViewPanic", Method: "GET", URL: "/v1/leases/lease-panic", Token: agentKey, WantStatus: 500,
			WantContains: []string{`"message":"Internal error."`}, WantNotContains: []string{"nil map", "10.1.2.3"}},
		{Name: "LeaseIndex", Method: "GET", URL: "/v1/leases", Token: agentKey, WantStatus: 200,
			WantContains:    []string{`"leases":[{`, `"id":"lease-1"`, `"id":"lease-2"`, `"total":2`, `"limit":50`, `"offset":0`},
			WantNotContains: []string{"credential", dbPassword}},
		{Name: "LeaseIndexFiltered", Method: "GET", URL: "/v1/leases?state=active,pending&role=pg-readonly&agent=etl-bot&limit=10&offset=5", Token: adminToken,
			WantStatus: 200, WantContains: []string{`"total":2`, `"limit":10`, `"offset":5`}},
		{Name: "LeaseIndexOtherAgentsName", Method: "GET", URL: "/v1/leases?agent=admin-bot", Token: agentKey,
			WantStatus: 200, WantContains: []string{`{"leases":[],"total":0,`}},
		{Name: "ErrLeaseIndexBadState", Method: "GET", URL: "/v1/leases?state=actve", Token: agentKey, WantStatus: 400,
			WantContains: []string{errInvalid, `"field":"state"`, "actve"}},
		{Name: "ErrLeaseIndexBadLimit", Method: "GET", URL: "/v1/leases?limit=-1", Token: agentKey, WantStatus: 400,
			WantContains: []string{`"field":"limit"`}},
		{Name: "LeaseEvents", Method: "GET", URL: "/v1/leases/lease-1/events", Token: agentKey, WantStatus: 200,
			WantContains: []string{`"events":[{"id":1,"lease_id":"lease-1","at":"2026-03-04T09:55:00Z","to":"issuing","actor":"agent:etl-bot"`, `"from":"issuing","to":"active"`}},
		{Name: "ErrLeaseEventsNotFound", Method: "GET", URL: "/v1/leases/lease-404/events", Token: agentKey, WantStatus: 404},

		// Ending leases.
		{Name: "LeaseRelease", Method: "DELETE", URL: "/v1/leases/lease-1", Token: agentKey, WantStatus: 200,
			WantContains: []string{`"state":"released"`, `"ended_at":"2026-03-04T10:00:00Z"`}, WantNotContains: []string{"expires_in"}},
		{Name: "LeaseReleaseRevoking", Method: "DELETE", URL: "/v1/leases/lease-stuck", Token: agentKey, WantStatus: 202,
			WantContains: []string{`"state":"revoking"`, `"end_state":"released"`}},
		{Name: "ErrLeaseReleaseEnded", Method: "DELETE", URL: "/v1/leases/lease-old", Token: agentKey, WantStatus: 409,
			WantContains: []string{`"code":"conflict"`}},
		{Name: "ErrLeaseReleaseIllegalTransition", Method: "DELETE", URL: "/v1/leases/lease-illegal", Token: agentKey, WantStatus: 409,
			WantContains: []string{`"code":"illegal_transition"`, `"message":"Lease is expired; it cannot become revoking."`}},
		{Name: "ErrLeaseReleaseNotFound", Method: "DELETE", URL: "/v1/leases/lease-404", Token: agentKey, WantStatus: 404},
		{Name: "LeaseRevoke", Method: "POST", URL: "/v1/leases/lease-1/revoke", Token: adminToken,
			Body: `{"reason":"incident 42"}`, WantStatus: 200, WantContains: []string{`"state":"revoked"`}},
		{Name: "ErrLeaseRevokeNoReason", Method: "POST", URL: "/v1/leases/lease-1/revoke", Token: adminToken,
			Body: `{}`, WantStatus: 400, WantContains: []string{`"field":"reason"`}},
		{Name: "ErrLeaseRevokeNotAdmin", Method: "POST", URL: "/v1/leases/lease-1/revoke", Token: agentKey,
			Body: `{"reason":"mine"}`, WantStatus: 403, WantContains: []string{`"code":"forbidden"`}},

		// Ending a task's leases.
		{Name: "TaskRelease", Method: "POST", URL: "/v1/tasks/nightly%20export/release", Token: agentKey, WantStatus: 200,
			WantContains: []string{`{"task":"nightly export","leases":[{"id":"lease-1","state":"released"`}},
		{Name: "TaskReleaseNothingLive", Method: "POST", URL: "/v1/tasks/other/release", Token: agentKey, WantStatus: 200,
			WantContains: []string{`{"task":"other","leases":[]}`}},
		{Name: "TaskReleaseRevokingEscapedSlash", Method: "POST", URL: "/v1/tasks/stuck%2Ftask/release", Token: agentKey, WantStatus: 202,
			WantContains: []string{`"task":"stuck/task"`, `"state":"revoking"`}},
		{Name: "ErrTaskReleaseBlank", Method: "POST", URL: "/v1/tasks/%20/release", Token: agentKey, WantStatus: 400,
			WantContains: []string{`"field":"task"`}},
		{Name: "ErrTaskReleaseTooLong", Method: "POST", URL: "/v1/tasks/" + strings.Repeat("t", 501) + "/release", Token: agentKey, WantStatus: 400,
			WantContains: []string{`"field":"task"`}},
		{Name: "ErrTaskReleaseNoKey", Method: "POST", URL: "/v1/tasks/nightly%20export/release", WantStatus: 401},
		{Name: "TaskRevoke", Method: "POST", URL: "/v1/tasks/nightly%20export/revoke", Token: adminToken, Body: `{"reason":"incident 42"}`, WantStatus: 200,
			WantContains: []string{`"state":"revoked"`, `"state":"canceled"`, `"vault_lease_id":"database/creds/ro/abc123"`}},
		{Name: "ErrTaskRevokeNoReason", Method: "POST", URL: "/v1/tasks/nightly%20export/revoke", Token: adminToken, Body: `{}`, WantStatus: 400,
			WantContains: []string{`"field":"reason"`}},
		{Name: "ErrTaskRevokeNotAdmin", Method: "POST", URL: "/v1/tasks/nightly%20export/revoke", Token: agentKey, Body: `{"reason":"mine"}`, WantStatus: 403,
			WantContains: []string{`"code":"forbidden"`}},

		// Roles.
		{Name: "RoleIndex", Method: "GET", URL: "/v1/roles", Token: agentKey, WantStatus: 200,
			WantContains:    []string{`{"roles":[{"name":"pg-readonly","description":"Read-only access to the warehouse.","kind":"database","sensitivity":"medium","default_ttl":"15m0s","min_ttl":"15s","max_ttl":"1h0m0s","auto_approve":true,"mcp":{"inline_secret":false}}]}`},
			WantNotContains: []string{"database/creds", "db.internal"}},

		// Agents (admin).
		{Name: "AgentCreate", Method: "POST", URL: "/v1/agents", Token: adminToken,
			Body:       `{"name":"new-bot","owner":"bo@example.com","labels":{"team":"ml"},"key_ttl":"24h"}`,
			WantStatus: 201,
			WantContains: []string{`"agent":{"id":"agent-9","name":"new-bot","owner":"bo@example.com","labels":{"team":"ml"},"state":"active"`,
				`"api_key":"` + newAgentKey + `"`, `"key":{"id":"key-9","prefix":"stk_new_"`, `"expires_at":"2026-03-05T10:00:00Z"`},
			WantHeaders: map[string]string{"Cache-Control": "no-store"}},
		{Name: "AgentCreateWithoutAPIKey", Method: "POST", URL: "/v1/agents", Token: adminToken,
			Body:       `{"name":"cert-bot","owner":"bo@example.com","auth_methods":["mtls"]}`,
			WantStatus: 201, WantContains: []string{`"name":"cert-bot"`, `"auth_methods":["mtls"]`},
			WantNotContains: []string{`"api_key"`, `"key"`, newAgentKey}},
		{Name: "ErrAgentCreateTaken", Method: "POST", URL: "/v1/agents", Token: adminToken,
			Body: `{"name":"etl-bot","owner":"ana@example.com"}`, WantStatus: 409},
		{Name: "ErrAgentCreateMissingOwner", Method: "POST", URL: "/v1/agents", Token: adminToken,
			Body: `{"name":"x-bot"}`, WantStatus: 400, WantContains: []string{`"field":"owner"`}},
		{Name: "ErrAgentCreateBadKeyTTL", Method: "POST", URL: "/v1/agents", Token: adminToken,
			Body: `{"name":"x-bot","owner":"a@b.c","key_ttl":"forever"}`, WantStatus: 400, WantContains: []string{`"field":"key_ttl"`}},
		{Name: "ErrAgentCreateNotAdmin", Method: "POST", URL: "/v1/agents", Token: agentKey,
			Body: `{"name":"x-bot","owner":"a@b.c"}`, WantStatus: 403, WantContains: []string{`"code":"forbidden"`}},
		{Name: "AgentIndex", Method: "GET", URL: "/v1/agents?state=active", Token: adminToken, WantStatus: 200,
			WantContains: []string{`"agents":[{"id":"agent-1","name":"etl-bot"`, `"total":1`}},
		{Name: "ErrAgentIndexBadState", Method: "GET", URL: "/v1/agents?state=gone", Token: adminToken, WantStatus: 400,
			WantContains: []string{`"field":"state"`}},
		{Name: "ErrAgentIndexNotAdmin", Method: "GET", URL: "/v1/agents", Token: agentKey, WantStatus: 403},
		{Name: "AgentView", Method: "GET", URL: "/v1/agents/etl-bot", Token: adminToken, WantStatus: 200,
			WantContains: []string{`"id":"agent-1"`, `"labels":{"team":"data"}`, `"created_at":"2026-03-03T10:00:00Z"`}},
		{Name: "ErrAgentViewNotFound", Method: "GET", URL: "/v1/agents/ghost", Token: adminToken, WantStatus: 404},
		{Name: "ErrAgentViewNotAdmin", Method: "GET", URL: "/v1/agents/etl-bot", Token: agentKey, WantStatus: 403},
		{Name: "AgentRotateKey", Method: "POST", URL: "/v1/agents/agent-1/rotate-key", Token: adminToken,
			Body: `{"ttl":"12h"}`, WantStatus: 200,
			WantContains: []string{`"api_key":"` + rotatedKey + `"`, `"key":{"id":"key-10"`},
			WantHeaders:  map[string]string{"Cache-Control": "no-store"}},
		{Name: "AgentRotateKeyNoBody", Method: "POST", URL: "/v1/agents/agent-1/rotate-key", Token: adminToken, WantStatus: 200},
		{Name: "ErrAgentRotateKeyNotAdmin", Method: "POST", URL: "/v1/agents/agent-1/rotate-key", Token: agentKey, WantStatus: 403},
		{Name: "AgentSuspend", Method: "POST", URL: "/v1/agents/etl-bot/suspend", Token: adminToken, WantStatus: 200,
			WantContains: []string{`"agent":{"id":"agent-1"`, `"containment":{"id":"cnt-1"`, `"done":true`, `"progress":{"total":3,"ended":3`}},
		{Name: "AgentDisable", Method: "POST", URL: "/v1/agents/etl-bot/disable", Token: adminToken,
			Body: `{"reason":"key leaked"}`, WantStatus: 200, WantContains: []string{`"containment":{"id":"cnt-1"`, `"url":"/v1/containments/cnt-1"`}},
		{Name: "AgentActivate", Method: "POST", URL: "/v1/agents/etl-bot/activate", Token: adminToken, WantStatus: 200,
			WantContains: []string{`"state":"active"`}},
		{Name: "ErrAgentSuspendWaitTooLong", Method: "POST", URL: "/v1/agents/etl-bot/suspend?wait=1m", Token: adminToken,
			WantStatus: 400, WantContains: []string{`"field":"wait"`}},
		{Name: "ContainmentView", Method: "GET", URL: "/v1/containments/cnt-1", Token: adminToken, WantStatus: 200,
			WantContains: []string{`"id":"cnt-1"`, `"done":true`, `"leases_url":"/v1/leases?containment=cnt-1"`}},
		{Name: "ContainmentViewStalled", Method: "GET", URL: "/v1/containments/cnt-stalled", Token: adminToken, WantStatus: 202,
			WantContains: []string{`"done":false`, `"failing":2`, `"errors":[{"error":"Vault is unreachable","leases":2}]`, `"next_attempt_at":`},
			WantHeaders:  map[string]string{"Location": "/v1/containments/cnt-stalled"}},
		{Name: "ErrContainmentViewNotFound", Method: "GET", URL: "/v1/containments/ghost", Token: adminToken, WantStatus: 404},
		{Name: "ErrContainmentViewNotAdmin", Method: "GET", URL: "/v1/containments/cnt-1", Token: agentKey, WantStatus: 403},
		{Name: "AgentContainments", Method: "GET", URL: "/v1/agents/etl-bot/containments", Token: adminToken, WantStatus: 200,
			WantContains: []string{`{"containments":[]}`}},
		{Name: "ErrAgentDisableNotAdmin", Method: "POST", URL: "/v1/agents/etl-bot/disable", Token: agentKey, WantStatus: 403},
		{Name: "AgentRevokeAll", Method: "POST", URL: "/v1/agents/etl-bot/revoke-all", Token: adminToken,
			Body: `{"reason":"incident 42"}`, WantStatus: 200, WantContains: []string{`{"id":"cnt-1"`, `"reason":"incident 42"`, `"done":true`}},
		{Name: "ErrAgentRevokeAllNoReason", Method: "POST", URL: "/v1/agents/etl-bot/revoke-all", Token: adminToken,
			WantStatus: 400, WantContains: []string{`"field":"reason"`}},
		{Name: "ErrAgentRevokeAllNotFound", Method: "POST", URL: "/v1/agents/ghost/revoke-all", Token: adminToken,
			Body: `{"reason":"x"}`, WantStatus: 404},
		{Name: "ErrAgentRevokeAllNotAdmin", Method: "POST", URL: "/v1/agents/etl-bot/revoke-all", Token: agentKey,
			Body: `{"reason":"x"}`, WantStatus: 403},

		// Echo's own errors keep their status and get our body, but only
		// authenticated callers learn which routes exist.
		{Name: "ErrRouteNotFound", Method: "GET", URL: "/v1/nope", Token: agentKey, WantStatus: 404,
			WantContains: []string{`"code":"not_found"`}},
		// Under /v1 a stranger learns nothing without a credential; outside
		// it, an unknown path is not an API call (noise_test.go).
		{Name: "ErrRouteNotFoundUnauthenticated", Method: "GET", URL: "/v1/nope", WantStatus: 401},
		{Name: "ErrRouteNotFoundOutsideAPI", Method: "GET", URL: "/nope", WantStatus: 404},
		{Name: "ErrMethodNotAllowed", Method: "PUT", URL: "/v1/leases/lease-1", Token: agentKey, WantStatus: 405,
			WantContains: []string{errInvalid}, WantHeaders: map[string]string{"Allow": "OPTIONS, DELETE, GET"}},
		{Name: "ErrMethodNotAllowedUnauthenticated", Method: "PUT", URL: "/v1/leases/lease-1", WantStatus: 401},
		{Name: "ErrMethodNotAllowedPublic", Method: "POST", URL: "/healthz", WantStatus: 405},
	}

	f := newFixture(t)
	for _, sc := range scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			rec := f.Do(t, sc.Method, sc.URL, sc.Body, sc.Token)
			body := rec.Body.String()
			if got, want := rec.Code, sc.WantStatus; got != want {
				t.Fatalf("status=%d, want %d; body: %s", got, want, body)
			}
			for _, s := range sc.WantContains {
				if !strings.Contains(body, s) {
					t.Errorf("body does not contain %s\nbody: %s", s, body)
				}
			}
			for _, s := range sc.WantNotContains {
				if strings.Contains(body, s) {
					t.Errorf("body contains %s\nbody: %s", s, body)
				}
			}
			for k, want := range sc.WantHeaders {
				if got := rec.Header().Get(k); got != want {
					t.Errorf("header %s=%q, want %q", k, got, want)
				}
			}
			if rec.Header().Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id header")
			}
			if rec.Code >= 400 {
				if got, want := rec.Header().Get("Content-Type"), "application/json"; !strings.HasPrefix(got, want) {
					t.Errorf("Content-Type=%q, want %s", got, want)
				}
				if !strings.Contains(body, `"request_id":"`+rec.Header().Get("X-Request-Id")+`"`) {
					t.Errorf("error body lacks the request id: %s", body)
				}
			}
			// The credential and new API keys appear only where they are issued.
			for _, secret := range []string{dbPassword, newAgentKey, rotatedKey} {
				if strings.Contains(body, secret) && rec.Header().Get("Cache-Control") != "no-store" {
					t.Errorf("secret sent without Cache-Control: no-store")
				}
			}
			if strings.Contains(body, dbPassword) && (sc.Name != "LeaseCreate" || rec.Code != http.StatusCreated) {
				t.Errorf("credential in a response other than the 201 of POST /v1/leases")
			}
		})
	}

	t.Run("LogsHoldNoSecret", func(t *testing.T) {
		logs := f.Logs.String()
		for _, secret := range []string{agentKey, adminToken, dbPassword, newAgentKey, rotatedKey, "Bearer"} {
			if strings.Contains(logs, secret) {
				t.Errorf("log contains %q", secret)
			}
		}
		for _, want := range []string{`"request_id":"`, `"actor":"agent:etl-bot"`, `"actor":"admin:sec-team"`, `"route":"/v1/leases/:id"`, `"status":201`} {
			if !strings.Contains(logs, want) {
				t.Errorf("log lacks %s", want)
			}
		}
		// Internal detail is logged for operators, once per internal error.
		if !strings.Contains(logs, internalText) {
			t.Errorf("log lacks the internal error's detail")
		}
		if !strings.Contains(logs, "recovered panic") {
			t.Errorf("log lacks the recovered panic")
		}
	})
}

// TestCalls checks what the handlers pass to the services.
func TestCalls(t *testing.T) {
	for _, tt := range []struct {
		Name, Method, URL, Body, Token string
		WantCalls                      []string
	}{
		{Name: "RequestLeaseCarriesActor", Method: "POST", URL: "/v1/leases", Token: agentKey,
			Body:      `{"role":"pg-readonly","ttl":"15m","task":"nightly export"}`,
			WantCalls: []string{`RequestLease pg-readonly 15m "nightly export" by agent:etl-bot from 10.0.0.7`}},
		{Name: "LeaseIndexDefaults", Method: "GET", URL: "/v1/leases", Token: agentKey,
			WantCalls: []string{"FindLeases states=[] role= agent= limit=50 offset=0"}},
		{Name: "LeaseIndexFilters", Method: "GET", URL: "/v1/leases?state=active&state=revoking,expired&role=pg-readonly&agent=etl-bot&limit=9999&offset=3", Token: adminToken,
			WantCalls: []string{"FindLeases states=[active revoking expired] role=pg-readonly agent=agent-1 limit=500 offset=3"}},
		{Name: "LeaseIndexEmptyParams", Method: "GET", URL: "/v1/leases?state=&role=&agent=", Token: agentKey,
			WantCalls: []string{"FindLeases states=[] role= agent= limit=50 offset=0"}},
		{Name: "LeaseIndexOwnName", Method: "GET", URL: "/v1/leases?agent=etl-bot", Token: agentKey,
			WantCalls: []string{"FindLeases states=[] role= agent=agent-1 limit=50 offset=0"}},
		{Name: "LeaseIndexOtherAgent", Method: "GET", URL: "/v1/leases?agent=etl-bot", Token: otherKey},
		{Name: "LeaseIndexUnknownAgent", Method: "GET", URL: "/v1/leases?agent=ghost", Token: adminToken},
		{Name: "Release", Method: "DELETE", URL: "/v1/leases/lease-1", Token: agentKey, WantCalls: []string{"ReleaseLease lease-1"}},
		{Name: "Revoke", Method: "POST", URL: "/v1/leases/lease-1/revoke", Token: adminToken, Body: `{"reason":"incident 42"}`,
			WantCalls: []string{`RevokeLease lease-1 "incident 42"`}},
		{Name: "RevokeNotAdmin", Method: "POST", URL: "/v1/leases/lease-1/revoke", Token: agentKey, Body: `{"reason":"x"}`},
		{Name: "ReleaseTaskCarriesActor", Method: "POST", URL: "/v1/tasks/migrate%20orders%2Fv2/release", Token: agentKey,
			WantCalls: []string{`ReleaseTask "migrate orders/v2" by agent:etl-bot`}},
		{Name: "RevokeTask", Method: "POST", URL: "/v1/tasks/migrate%20orders/revoke", Token: adminToken, Body: `{"reason":"incident 42"}`,
			WantCalls: []string{`RevokeTask "migrate orders" "incident 42"`}},
		{Name: "RevokeTaskNotAdmin", Method: "POST", URL: "/v1/tasks/migrate%20orders/revoke", Token: agentKey, Body: `{"reason":"x"}`},
		{Name: "Disable", Method: "POST", URL: "/v1/agents/etl-bot/disable", Token: adminToken,
			WantCalls: []string{`ContainAgent agent-1 disabled ""`, "WaitContainment cnt-1 5s"}},
		{Name: "DisableWithReason", Method: "POST", URL: "/v1/agents/etl-bot/disable", Token: adminToken, Body: `{"reason":"key leaked"}`,
			WantCalls: []string{`ContainAgent agent-1 disabled "key leaked"`, "WaitContainment cnt-1 5s"}},
		{Name: "Suspend", Method: "POST", URL: "/v1/agents/agent-1/suspend?wait=0s", Token: adminToken,
			WantCalls: []string{`ContainAgent agent-1 suspended ""`, "WaitContainment cnt-1 0s"}},
		{Name: "Activate", Method: "POST", URL: "/v1/agents/etl-bot/activate", Token: adminToken,
			WantCalls: []string{"ActivateAgent agent-1"}},
		{Name: "RevokeAll", Method: "POST", URL: "/v1/agents/etl-bot/revoke-all", Token: adminToken, Body: `{"reason":"incident 42"}`,
			WantCalls: []string{`ContainAgent agent-1  "incident 42"`, "WaitContainment cnt-1 5s"}},
		{Name: "CreateAgent", Method: "POST", URL: "/v1/agents", Token: adminToken,
			Body:      `{"name":"new-bot","owner":"bo@example.com","labels":{"team":"ml","env":"prod"},"key_ttl":"24h"}`,
			WantCalls: []string{"CreateAgent new-bot bo@example.com env=prod,team=ml 24h0m0s"}},
		{Name: "CreateAgentDefaultKeyTTL", Method: "POST", URL: "/v1/agents", Token: adminToken,
			Body: `{"name":"new-bot","owner":"bo@example.com"}`, WantCalls: []string{"CreateAgent new-bot bo@example.com  0s"}},
		{Name: "RotateKeyByName", Method: "POST", URL: "/v1/agents/etl-bot/rotate-key", Token: adminToken, Body: `{"ttl":"12h"}`,
			WantCalls: []string{"RotateKey agent-1 12h0m0s"}},
		{Name: "AgentIndexLimit", Method: "GET", URL: "/v1/agents?limit=0", Token: adminToken, WantCalls: []string{"FindAgents limit=50"}},
	} {
		t.Run(tt.Name, func(t *testing.T) {
			f := newFixture(t)
			rec := f.Do(t, tt.Method, tt.URL, tt.Body, tt.Token)
			if rec.Code >= 500 {
				t.Fatalf("status=%d; body: %s", rec.Code, rec.Body)
			}
			if got, want := f.Calls(), tt.WantCalls; !slices.Equal(got, want) {
				t.Errorf("calls:\n got  %q\n want %q", got, want)
			}
		})
	}
}

func TestReadyz(t *testing.T) {
	for _, tt := range []struct {
		Name         string
		Err          error
		WantContains string
	}{
		{"Unavailable", fmt.Errorf("ping vault: %w", broker.Errorf(broker.EUNAVAILABLE, "Vault is sealed.")), `{"code":"unavailable","message":"Vault is sealed."}`},
		{"Internal", fmt.Errorf("ping store: %w", errors.New(internalText)), `"code":"unavailable","message":"Stint cannot reach its store or Vault; try again shortly."`},
	} {
		t.Run(tt.Name, func(t *testing.T) {
			f := newFixture(t)
			f.Leases.ReadyFn = func(context.Context) error { return tt.Err }
			rec := f.Do(t, "GET", "/readyz", "", "")
			if got, want := rec.Code, http.StatusServiceUnavailable; got != want {
				t.Fatalf("status=%d, want %d", got, want)
			}
			if body := rec.Body.String(); !strings.Contains(body, tt.WantContains) || strings.Contains(body, "10.1.2.3") {
				t.Errorf("body: %s", body)
			}
			if !strings.Contains(f.Logs.String(), "not ready") {
				t.Errorf("the cause is not logged")
			}
		})
	}
}

func TestRequestID(t *testing.T) {
	f := newFixture(t)
	t.Run("Generated", func(t *testing.T) {
		a := f.Do(t, "GET", "/healthz", "", "").Header().Get("X-Request-Id")
		b := f.Do(t, "GET", "/healthz", "", "").Header().Get("X-Request-Id")
		if a == "" || a == b {
			t.Errorf("ids %q and %q", a, b)
		}
	})
	t.Run("ClientIDKept", func(t *testing.T) {
		rec := f.Do(t, "GET", "/v1/leases/lease-404", "", agentKey, "X-Request-Id", "trace-42.a_b")
		if got, want := rec.Header().Get("X-Request-Id"), "trace-42.a_b"; got != want {
			t.Errorf("id=%q, want %q", got, want)
		}
		if !strings.Contains(rec.Body.String(), `"request_id":"trace-42.a_b"`) {
			t.Errorf("body: %s", rec.Body)
		}
	})
	t.Run("UnsafeClientIDReplaced", func(t *testing.T) {
		rec := f.Do(t, "GET", "/healthz", "", "", "X-Request-Id", `x" admin=true`)
		if got := rec.Header().Get("X-Request-Id"); got == "" || strings.Contains(got, `"`) {
			t.Errorf("id=%q", got)
		}
	})
}

func TestHeadErrorHasNoBody(t *testing.T) {
	f := newFixture(t)
	rec := f.Do(t, "HEAD", "/v1/leases", "", "")
	if rec.Code < 400 || rec.Body.Len() != 0 {
		t.Errorf("status=%d body=%q", rec.Code, rec.Body)
	}
}

func TestSecurityHeaders(t *testing.T) {
	f := newFixture(t)
	rec := f.Do(t, "GET", "/v1/leases/lease-1", "", agentKey)
	for k, want := range map[string]string{
		"X-Content-Type-Options":  "nosniff",
		"X-Frame-Options":         "DENY",
		"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
		"Referrer-Policy":         "no-referrer",
		"Cache-Control":           "no-store",
	} {
		if got := rec.Header().Get(k); got != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
}

// TestOpenClose serves over a real listener and shuts down gracefully.
func TestOpenClose(t *testing.T) {
	f := newFixture(t)
	if err := f.Server.Open("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(f.Server.URL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"ok"`)) {
		t.Fatalf("status=%d body=%s", resp.StatusCode, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.Server.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(f.Server.URL() + "/healthz"); err == nil {
		t.Fatal("server still answers after Close")
	}
	if err := f.Server.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestCloseWaitsForRequests checks that Close lets an in-flight request finish.
func TestCloseWaitsForRequests(t *testing.T) {
	f := newFixture(t)
	started, release := make(chan struct{}), make(chan struct{})
	f.Leases.ReadyFn = func(ctx context.Context) error {
		close(started)
		<-release
		return nil
	}
	if err := f.Server.Open("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	status := make(chan int, 1)
	go func() {
		resp, err := http.Get(f.Server.URL() + "/readyz")
		if err != nil {
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	<-started

	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		closed <- f.Server.Close(ctx)
	}()
	select {
	case err := <-closed:
		t.Fatalf("Close returned before the request finished: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if got, want := <-status, http.StatusOK; got != want {
		t.Errorf("status=%d, want %d", got, want)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
