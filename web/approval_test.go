package web_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/mock"
)

const approverToken = "stk_approver_0123456789abcdef"

// approvalFixture adds an approver, the approval service and the lease
// activation calls to the API fixture.
func approvalFixture(tb testing.TB) *fixture {
	f := newFixture(tb)
	auth := f.Agents.AuthenticateFn
	f.Agents.AuthenticateFn = func(ctx context.Context, secret string) (broker.Actor, error) {
		if secret == approverToken {
			return broker.Actor{Kind: broker.ActorApprover, Name: "dana@example.com", AuthMethod: "approver_token"}, nil
		}
		return auth(ctx, secret)
	}
	notFound := broker.Errorf(broker.ENOTFOUND, "Lease not found.")
	approved := func() *broker.Lease {
		l := pendingLease()
		l.State, l.ActivateBy = broker.LeaseApproved, ptr(now.Add(15*time.Minute))
		return l
	}
	f.Leases.WaitLeaseFn = func(ctx context.Context, id string, wait time.Duration) (*broker.Lease, error) {
		f.record("WaitLease %s %s", id, wait)
		switch id {
		case "lease-2":
			// Longer than the fixture's 200ms request timeout: the long poll
			// must not be cut by it.
			select {
			case <-time.After(400 * time.Millisecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return approved(), nil
		case "lease-1":
			return activeLease(), nil
		}
		return nil, notFound
	}
	f.Leases.ActivateLeaseFn = func(ctx context.Context, id string) (*broker.Lease, *broker.Credential, error) {
		f.record("ActivateLease %s", id)
		switch id {
		case "lease-2":
			l := pendingLease()
			l.State, l.ActivatedAt, l.ExpiresAt = broker.LeaseActive, ptr(now), ptr(now.Add(time.Hour))
			return l, credential(), nil
		case "lease-1":
			return nil, nil, broker.Errorf(broker.ECONFLICT, "Lease is already activated; its credential was returned once, when it was activated.")
		}
		return nil, nil, notFound
	}
	f.Leases.CancelLeaseFn = func(ctx context.Context, id string) (*broker.Lease, error) {
		f.record("CancelLease %s", id)
		if id == "lease-2" {
			return ended(pendingLease(), broker.LeaseCanceled), nil
		}
		return nil, broker.Errorf(broker.ECONFLICT, "Lease is active; only a pending or approved lease can be canceled.")
	}
	pending := pendingLease()
	pending.PolicyDecision = &broker.Decision{Outcome: broker.OutcomeApprovals, Approvals: 2, ApproverGroup: "security",
		PolicyIDs: []string{"high-two"}, Reasons: []string{"high sensitivity"}}
	f.Server.Approvals = &mock.ApprovalService{
		FindPendingApprovalsFn: func(ctx context.Context) ([]*broker.PendingApproval, error) {
			if a, _ := broker.ActorFromContext(ctx); a.Kind != broker.ActorApprover {
				return nil, broker.Errorf(broker.EFORBIDDEN, "Only approvers decide requests; use an approver token.")
			}
			return []*broker.PendingApproval{{Lease: pending, Owner: "ana@example.com", Digest: "d1g3st", Needed: 2,
				Approvals: []*broker.Approval{{Approver: "eve@example.com", Verdict: broker.VerdictApprove, Via: "slack", At: now}}}}, nil
		},
		ApproveFn: func(ctx context.Context, id, digest string) (*broker.Lease, error) {
			a, _ := broker.ActorFromContext(ctx)
			f.record("Approve %s %s by %s", id, digest, a)
			if digest != "d1g3st" {
				return nil, broker.Errorf(broker.ECONFLICT, "The request changed after it was shown to you; review it again.")
			}
			return approved(), nil
		},
		DenyFn: func(ctx context.Context, id, digest, reason string) (*broker.Lease, error) {
			f.record("Deny %s %s %q", id, digest, reason)
			return ended(pendingLease(), broker.LeaseRejected), nil
		},
	}
	return f
}

func ptr[T any](v T) *T { return &v }

func TestApprovalAPI(t *testing.T) {
	f := approvalFixture(t)
	for _, sc := range []scenario{
		// The agent's side: long poll, activate once, cancel.
		{Name: "LongPoll", Method: "GET", URL: "/v1/leases/lease-2?wait=30s", Token: agentKey, WantStatus: 200,
			WantContains: []string{`"state":"approved"`, `"activate_by":"2026-03-04T10:15:00Z"`}, WantNotContains: []string{"credential"}},
		{Name: "LongPollNotPending", Method: "GET", URL: "/v1/leases/lease-1?wait=5s", Token: agentKey, WantStatus: 200,
			WantContains: []string{`"state":"active"`}},
		{Name: "ErrLongPollTooLong", Method: "GET", URL: "/v1/leases/lease-2?wait=61s", Token: agentKey, WantStatus: 400,
			WantContains: []string{`"field":"wait"`, "at most 1m0s"}},
		{Name: "ErrLongPollBadWait", Method: "GET", URL: "/v1/leases/lease-2?wait=soon", Token: agentKey, WantStatus: 400,
			WantContains: []string{`"field":"wait"`}},
		{Name: "ErrLongPollNotFound", Method: "GET", URL: "/v1/leases/nope?wait=1s", Token: agentKey, WantStatus: 404},
		{Name: "Activate", Method: "POST", URL: "/v1/leases/lease-2/activate", Token: agentKey, WantStatus: 201,
			WantContains: []string{`"state":"active"`, `"credential":{`, `"password":"` + dbPassword + `"`},
			WantHeaders:  map[string]string{"Cache-Control": "no-store"}},
		{Name: "ErrActivateTwice", Method: "POST", URL: "/v1/leases/lease-1/activate", Token: agentKey, WantStatus: 409,
			WantContains: []string{`"code":"conflict"`}, WantNotContains: []string{dbPassword}},
		{Name: "Cancel", Method: "POST", URL: "/v1/leases/lease-2/cancel", Token: agentKey, WantStatus: 200,
			WantContains: []string{`"state":"canceled"`}},
		{Name: "ErrCancelActive", Method: "POST", URL: "/v1/leases/lease-1/cancel", Token: agentKey, WantStatus: 409},

		// The approver's side.
		{Name: "ApprovalIndex", Method: "GET", URL: "/v1/approvals", Token: approverToken, WantStatus: 200,
			WantContains: []string{`"digest":"d1g3st"`, `"needed":2`, `"given":1`, `"approver_group":"security"`,
				`"reasons":["high sensitivity"]`, `"owner":"ana@example.com"`, `"approver":"eve@example.com"`, `"id":"lease-2"`}},
		{Name: "ErrApprovalIndexAgent", Method: "GET", URL: "/v1/approvals", Token: agentKey, WantStatus: 403},
		{Name: "Approve", Method: "POST", URL: "/v1/leases/lease-2/approve", Token: approverToken, Body: `{"digest":"d1g3st"}`,
			WantStatus: 200, WantContains: []string{`"state":"approved"`}},
		{Name: "ErrApproveStaleDigest", Method: "POST", URL: "/v1/leases/lease-2/approve", Token: approverToken, Body: `{"digest":"old"}`,
			WantStatus: 409, WantContains: []string{"changed after it was shown"}},
		{Name: "ErrApproveNoDigest", Method: "POST", URL: "/v1/leases/lease-2/approve", Token: approverToken, Body: `{}`,
			WantStatus: 400, WantContains: []string{`"field":"digest"`}},
		{Name: "ErrApproveWithReason", Method: "POST", URL: "/v1/leases/lease-2/approve", Token: approverToken, Body: `{"digest":"d1g3st","reason":"x"}`,
			WantStatus: 400, WantContains: []string{`"field":"reason"`}},
		{Name: "ErrApproveUnknownField", Method: "POST", URL: "/v1/leases/lease-2/approve", Token: approverToken, Body: `{"digest":"d","by":"me"}`,
			WantStatus: 400, WantContains: []string{`"field":"by"`}},
		{Name: "Deny", Method: "POST", URL: "/v1/leases/lease-2/deny", Token: approverToken, Body: `{"digest":"d1g3st","reason":"not today"}`,
			WantStatus: 200, WantContains: []string{`"state":"rejected"`}},
		{Name: "ErrApproveUnauthenticated", Method: "POST", URL: "/v1/leases/lease-2/approve", Body: `{"digest":"d1g3st"}`, WantStatus: 401},

		// Slack's endpoint is public but absent until Slack is enabled.
		{Name: "SlackDisabled", Method: "POST", URL: "/slack/interactions", Body: "payload=%7B%7D", WantStatus: 404,
			WantContains: []string{"Slack is not enabled"}},
	} {
		t.Run(sc.Name, func(t *testing.T) {
			rec := f.Do(t, sc.Method, sc.URL, sc.Body, sc.Token)
			body := rec.Body.String()
			if rec.Code != sc.WantStatus {
				t.Fatalf("status = %d, want %d: %s", rec.Code, sc.WantStatus, body)
			}
			for _, want := range sc.WantContains {
				if !strings.Contains(body, want) {
					t.Errorf("body lacks %s: %s", want, body)
				}
			}
			for _, not := range sc.WantNotContains {
				if strings.Contains(body, not) {
					t.Errorf("body contains %s: %s", not, body)
				}
			}
			for k, v := range sc.WantHeaders {
				if got := rec.Header().Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
		})
	}
	calls := strings.Join(f.Calls(), "\n")
	for _, want := range []string{"WaitLease lease-2 30s", "Approve lease-2 d1g3st by approver:dana@example.com", `Deny lease-2 d1g3st "not today"`} {
		if !strings.Contains(calls, want) {
			t.Errorf("calls lack %q:\n%s", want, calls)
		}
	}
}

func TestSlackRoute(t *testing.T) {
	f := newFixture(t)
	var got string
	f.Server.SlackInteractions = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 64)
		n, _ := r.Body.Read(b)
		got = r.Header.Get("X-Slack-Signature") + " " + string(b[:n])
		w.WriteHeader(http.StatusOK)
	})
	// No bearer token: Slack authenticates by signature, checked by the handler.
	rec := f.Do(t, "POST", "/slack/interactions", "payload=x", "", "X-Slack-Signature", "v0=abc",
		"Content-Type", "application/x-www-form-urlencoded")
	if rec.Code != http.StatusOK || got != "v0=abc payload=x" {
		t.Fatalf("status %d, handler saw %q; want the raw request passed through", rec.Code, got)
	}
}
