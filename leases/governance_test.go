package leases_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases"
)

// govRoles are the roles of the governance tests: two conflicting
// auto-approved roles, a privileged role with break-glass, and an
// extensible low role.
func govRoles() []*broker.Role {
	conn := &broker.Connection{Host: "127.0.0.1", Port: 5432, Database: "postgres"}
	return []*broker.Role{
		{Name: "finance-report", Kind: broker.KindDatabase, Sensitivity: broker.SensitivityLow, Vault: broker.RoleVault{Path: "database/creds/fin", Method: "read"},
			DefaultTTL: 15 * time.Minute, MaxTTL: time.Hour, AutoApprove: true, Connection: conn},
		{Name: "txn-approve", Kind: broker.KindDatabase, Sensitivity: broker.SensitivityLow, Vault: broker.RoleVault{Path: "database/creds/txn", Method: "read"},
			DefaultTTL: 15 * time.Minute, MaxTTL: time.Hour, AutoApprove: true, Connection: conn},
		{Name: "db-admin", Kind: broker.KindDatabase, Sensitivity: broker.SensitivityHigh, Vault: broker.RoleVault{Path: "database/creds/admin", Method: "read"},
			DefaultTTL: 15 * time.Minute, MaxTTL: time.Hour, AutoApprove: true, Connection: conn,
			Breakglass: broker.Breakglass{Allowed: true, MaxTTL: 15 * time.Minute}},
		{Name: "db-readonly", Kind: broker.KindDatabase, Sensitivity: broker.SensitivityLow, Vault: broker.RoleVault{Path: "database/creds/ro", Method: "read"},
			DefaultTTL: 20 * time.Minute, MaxTTL: time.Hour, AutoApprove: true, Connection: conn,
			MaxExtensions: 2, MaxTotalTTL: 50 * time.Minute},
	}
}

// govFixture is a fixture with the governance roles, conflicts between
// finance-report and txn-approve, and the privileged safeguards.
func govFixture(t *testing.T) *fixture {
	f := newFixture(t)
	f.svc.SetRoles(govRoles())
	f.svc.SetConflicts(broker.ConflictSets{{"finance-report", "txn-approve"}})
	f.svc.Privileged = &leases.PrivilegedRules{MaxTTL: 30 * time.Minute, ApproverGroup: "security", MinApprovals: 2}
	return f
}

// agentAs registers an agent and returns a context acting as it with the
// authentication method.
func (f *fixture) agentAs(tb testing.TB, name, method string) (context.Context, string) {
	tb.Helper()
	now := time.Now().UTC()
	a := &broker.Agent{ID: uuid.NewString(), Name: name, Owner: "owner@example.com", Labels: map[string]string{"team": "data"}, State: broker.AgentActive, CreatedAt: now, UpdatedAt: now}
	if err := f.db.CreateAgent(context.Background(), a); err != nil {
		tb.Fatal(err)
	}
	return broker.NewContextWithActor(context.Background(), broker.Actor{Kind: broker.ActorAgent, Name: name, AgentID: a.ID, AuthMethod: method}), a.ID
}

func TestSeparationOfDutyRequest(t *testing.T) {
	f := govFixture(t)
	ctx, _ := f.agentAs(t, "fin", broker.AuthAPIKey)
	if _, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "finance-report", Task: "report"}); err != nil {
		t.Fatal(err)
	}
	l, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "txn-approve", Task: "approve"})
	if broker.ErrorCode(err) != broker.EDENIED || !strings.Contains(broker.ErrorMessage(err), "separation of duty") {
		t.Fatalf("conflicting request: %v", err)
	}
	if l == nil || l.State != broker.LeaseDenied || l.PolicyDecision.PolicyIDs[0] != "stint:separation-of-duty" {
		t.Fatalf("denied lease = %+v", l)
	}
	// The policy context names the live role.
	var seen broker.DecisionRequest
	f.svc.Decider = deciderFunc(func(_ context.Context, req broker.DecisionRequest) (broker.Decision, error) {
		seen = req
		return broker.Decision{Outcome: broker.OutcomeApprove}, nil
	})
	if _, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "read"}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seen.ActiveRoles) != "[finance-report]" {
		t.Fatalf("ActiveRoles = %v, want [finance-report]", seen.ActiveRoles)
	}
}

// TestSeparationOfDutyConcurrent races two requests, and two activations,
// of conflicting roles by one agent: exactly one of each pair may go live,
// whatever the interleaving. Real SQLite, real goroutines, repeated.
func TestSeparationOfDutyConcurrent(t *testing.T) {
	f := govFixture(t)
	for round := range 25 {
		ctx, agentID := f.agentAs(t, fmt.Sprintf("race-%d", round), broker.AuthAPIKey)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, role := range []string{"finance-report", "txn-approve"} {
			wg.Go(func() { _, _, errs[i] = f.svc.RequestLease(ctx, broker.LeaseRequest{Role: role, Task: "race"}) })
		}
		wg.Wait()
		wantOneLive(t, f, agentID, errs, fmt.Sprintf("request round %d", round))
	}

	// Activations of approved leases go through the same transaction check.
	f.svc.Decider = deciderFunc(needsTwo)
	f.svc.Privileged = nil
	for round := range 25 {
		ctx, agentID := f.agentAs(t, fmt.Sprintf("act-%d", round), broker.AuthAPIKey)
		var ids []string
		for _, role := range []string{"finance-report", "txn-approve"} {
			l, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: role, Task: "race"})
			if err != nil {
				t.Fatal(err)
			}
			approve(t, f, l.ID, time.Now().Add(time.Hour))
			ids = append(ids, l.ID)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, id := range ids {
			wg.Go(func() { _, _, errs[i] = f.svc.ActivateLease(ctx, id) })
		}
		wg.Wait()
		wantOneLive(t, f, agentID, errs, fmt.Sprintf("activation round %d", round))
		for _, err := range errs {
			if err != nil && !errors.Is(err, broker.ErrDutyConflict) {
				t.Fatalf("activation refused with %v, want a separation-of-duty conflict", err)
			}
		}
	}
}

func wantOneLive(t *testing.T, f *fixture, agentID string, errs []error, what string) {
	t.Helper()
	ok := 0
	for _, err := range errs {
		switch broker.ErrorCode(err) {
		case "":
			ok++
		case broker.EDENIED, broker.ECONFLICT:
		default:
			t.Fatalf("%s: %v", what, err)
		}
	}
	live, _, err := f.db.FindLeases(context.Background(), broker.LeaseFilter{AgentID: &agentID,
		States: []broker.LeaseState{broker.LeaseIssuing, broker.LeaseActive, broker.LeaseRevoking}})
	if err != nil {
		t.Fatal(err)
	}
	if ok != 1 || len(live) != 1 {
		t.Fatalf("%s: %d succeeded and %d leases are live, want exactly 1 (errors %v)", what, ok, len(live), errs)
	}
}

func TestPrivilegedSafeguards(t *testing.T) {
	f := govFixture(t)
	f.svc.Decider = deciderFunc(func(context.Context, broker.DecisionRequest) (broker.Decision, error) {
		return broker.Decision{Outcome: broker.OutcomeApprove, PolicyIDs: []string{"too-lenient"}}, nil
	})
	t.Run("NeverAutoApproved", func(t *testing.T) {
		ctx, _ := f.agentAs(t, "strong", broker.AuthMTLS)
		l, cred, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-admin", Task: "migrate"})
		if err != nil {
			t.Fatal(err)
		}
		d := l.PolicyDecision
		if cred != nil || l.State != broker.LeasePending || d.Outcome != broker.OutcomeApprovals || d.Approvals != 2 || d.ApproverGroup != "security" {
			t.Fatalf("lease %s decision %+v, want pending for 2 approvals from security", l.State, d)
		}
		f.svc.Decider = deciderFunc(func(context.Context, broker.DecisionRequest) (broker.Decision, error) {
			return broker.Decision{Outcome: broker.OutcomeApprovals, Approvals: 1, ApproverGroup: "dba"}, nil
		})
		l, _, err = f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-admin", Task: "migrate"})
		if err != nil || l.PolicyDecision.Approvals != 2 || l.PolicyDecision.ApproverGroup != "dba" {
			t.Fatalf("one approval raised to %+v, %v; want 2 from dba", l.PolicyDecision, err)
		}
	})
	t.Run("StrongAuth", func(t *testing.T) {
		ctx, _ := f.agentAs(t, "weak", broker.AuthAPIKey)
		l, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-admin", Task: "migrate"})
		if broker.ErrorCode(err) != broker.EDENIED || l.State != broker.LeaseDenied || !strings.Contains(l.Decision, "mTLS or private_key_jwt") {
			t.Fatalf("api_key request for a high role: %v %+v", err, l)
		}
	})
	t.Run("MaxTTL", func(t *testing.T) {
		ctx, _ := f.agentAs(t, "long", broker.AuthPrivateKeyJWT)
		_, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-admin", TTL: "45m", Task: "migrate"})
		if e, ok := err.(*broker.Error); !ok || e.Field != "ttl" || !strings.Contains(e.Message, "at most 30m") {
			t.Fatalf("45m on a high role capped at 30m: %v", err)
		}
	})
}

// grantRecorder is a GrantObserver that records what it hears.
type grantRecorder struct {
	mu     sync.Mutex
	leases []*broker.Lease
}

func (g *grantRecorder) LeaseGranted(_ context.Context, l *broker.Lease, _ *broker.Role) {
	g.mu.Lock()
	g.leases = append(g.leases, l)
	g.mu.Unlock()
}

func TestBreakglass(t *testing.T) {
	f := govFixture(t)
	grants := &grantRecorder{}
	f.svc.Grants = grants
	f.svc.Decider = deciderFunc(needsTwo)
	ctx, _ := f.agentAs(t, "oncall", broker.AuthMTLS)

	for _, c := range []struct {
		name  string
		req   broker.LeaseRequest
		field string
	}{
		{"NoReason", broker.LeaseRequest{Role: "db-admin", Task: "fix", Breakglass: true}, "breakglass_reason"},
		{"NotAllowed", broker.LeaseRequest{Role: "db-readonly", Task: "fix", Breakglass: true, BreakglassReason: "outage"}, "breakglass"},
		{"OverCap", broker.LeaseRequest{Role: "db-admin", TTL: "20m", Task: "fix", Breakglass: true, BreakglassReason: "outage"}, "ttl"},
		{"ReasonWithout", broker.LeaseRequest{Role: "db-admin", Task: "fix", BreakglassReason: "outage"}, "breakglass_reason"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := f.svc.RequestLease(ctx, c.req)
			if e, ok := err.(*broker.Error); !ok || e.Field != c.field {
				t.Fatalf("err = %v, want EINVALID on %s", err, c.field)
			}
		})
	}
	t.Run("Granted", func(t *testing.T) {
		var seen broker.DecisionRequest
		f.svc.Decider = deciderFunc(func(ctx context.Context, req broker.DecisionRequest) (broker.Decision, error) {
			seen = req
			return needsTwo(ctx, req)
		})
		l, cred, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-admin", Task: "fix", Breakglass: true, BreakglassReason: "prod outage INC-9"})
		if err != nil {
			t.Fatal(err)
		}
		if cred == nil || l.State != broker.LeaseActive || !l.Breakglass || time.Duration(l.TTL) != 15*time.Minute {
			t.Fatalf("lease %s breakglass=%t ttl=%s cred=%t; want active, flagged, 15m", l.State, l.Breakglass, l.TTL, cred != nil)
		}
		if !seen.Breakglass || !strings.Contains(l.Decision, "prod outage INC-9") {
			t.Fatalf("policy saw breakglass=%t; decision %q", seen.Breakglass, l.Decision)
		}
		if len(grants.leases) != 1 || grants.leases[0].ID != l.ID {
			t.Fatalf("grant observer heard %d grants", len(grants.leases))
		}
		stored, _ := f.db.FindLeaseByID(context.Background(), l.ID)
		if !stored.Breakglass {
			t.Fatal("break-glass flag not stored")
		}
	})
	t.Run("ForbidStillDenies", func(t *testing.T) {
		f.svc.Decider = deciderFunc(func(context.Context, broker.DecisionRequest) (broker.Decision, error) {
			return broker.Decision{Outcome: broker.OutcomeDeny, Reasons: []string{"forbidden"}}, nil
		})
		l, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-admin", Task: "fix", Breakglass: true, BreakglassReason: "outage"})
		if broker.ErrorCode(err) != broker.EDENIED || l.Breakglass {
			t.Fatalf("err %v, breakglass %t; want denied, not flagged", err, l.Breakglass)
		}
	})
}

// fakeRenewer renews in memory and can be told to fail or cap.
type fakeRenewer struct {
	mu     sync.Mutex
	err    error
	cap    time.Duration
	asked  []time.Duration
	leases []string
}

func (r *fakeRenewer) Renew(_ context.Context, req leases.RenewRequest) (time.Duration, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return 0, r.err
	}
	r.asked = append(r.asked, req.Window)
	r.leases = append(r.leases, req.VaultLeaseID)
	if r.cap > 0 && req.Window > r.cap {
		return r.cap, nil
	}
	return req.Window, nil
}

func TestExtendLease(t *testing.T) {
	f := govFixture(t)
	now := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	f.svc.Now = func() time.Time { return now }
	renewer := &fakeRenewer{}
	f.svc.Renewer = renewer
	ctx, _ := f.agentAs(t, "etl", broker.AuthAPIKey)
	l, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "etl"}) // 20m window
	if err != nil {
		t.Fatal(err)
	}

	// An extension adds at least the role's minimum window.
	_, err = f.svc.ExtendLease(ctx, l.ID, "5s")
	if broker.ErrorCode(err) != broker.EINVALID || broker.ErrorField(err) != "ttl" {
		t.Fatalf("extension by 5s: %v, want invalid ttl", err)
	}
	_, err = f.svc.ExtendLease(ctx, l.ID, "10m")
	if broker.ErrorCode(err) != broker.ECONFLICT || !strings.Contains(broker.ErrorMessage(err), "half of it") {
		t.Fatalf("early extension: %v", err)
	}
	now = now.Add(11 * time.Minute)
	ext, err := f.svc.ExtendLease(ctx, l.ID, "10m")
	if err != nil {
		t.Fatal(err)
	}
	if want := l.ExpiresAt.Add(10 * time.Minute); !ext.ExpiresAt.Equal(want) || ext.Extensions != 1 {
		t.Fatalf("extended lease expires %s after %d extensions, want %s after 1", ext.ExpiresAt, ext.Extensions, want)
	}
	// The lease shows the window it now has, 20m + 10m, as stored.
	wantTTL := func(what string, want time.Duration) {
		t.Helper()
		got, err := f.db.FindLeaseByID(context.Background(), l.ID)
		if err != nil || time.Duration(got.TTL) != want || got.ExpiresAt.Sub(*got.ActivatedAt) != want {
			t.Fatalf("%s: stored ttl %s (window %s), %v; want %s", what, got.TTL, got.ExpiresAt.Sub(*got.ActivatedAt), err, want)
		}
	}
	if time.Duration(ext.TTL) != 30*time.Minute {
		t.Fatalf("extended lease ttl = %s, want 30m", ext.TTL)
	}
	wantTTL("after an extension", 30*time.Minute)
	if got, want := renewer.asked[0], ext.ExpiresAt.Sub(now); got != want || renewer.leases[0] != l.VaultLeaseID {
		t.Fatalf("renewer asked %s for %s, want %s for %s", got, renewer.leases[0], want, l.VaultLeaseID)
	}

	// Over the role's max_total_ttl (50m): 30m so far + 25m.
	now = now.Add(10 * time.Minute)
	_, err = f.svc.ExtendLease(ctx, l.ID, "25m")
	if broker.ErrorCode(err) != broker.ECONFLICT || !strings.Contains(broker.ErrorMessage(err), "max_total_ttl") {
		t.Fatalf("extension over max_total_ttl: %v", err)
	}

	// Vault down: the window is put back.
	renewer.err = fmt.Errorf("renew: %w", leases.ErrUnavailable)
	before, _ := f.db.FindLeaseByID(context.Background(), l.ID)
	if _, err := f.svc.ExtendLease(ctx, l.ID, "5m"); !errors.Is(err, leases.ErrUnavailable) {
		t.Fatalf("extension with Vault down: %v", err)
	}
	after, _ := f.db.FindLeaseByID(context.Background(), l.ID)
	if !after.ExpiresAt.Equal(*before.ExpiresAt) || after.Extensions != 1 {
		t.Fatalf("window after a failed renewal: %s (%d), want %s (1)", after.ExpiresAt, after.Extensions, before.ExpiresAt)
	}
	wantTTL("after a failed renewal", 30*time.Minute)
	renewer.err = nil

	// Vault caps the renewal: the window ends with the credential.
	renewer.cap = 12 * time.Minute
	capped, err := f.svc.ExtendLease(ctx, l.ID, "5m")
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(12 * time.Minute); !capped.ExpiresAt.Equal(want) || capped.Extensions != 2 {
		t.Fatalf("capped extension expires %s (%d), want %s (2)", capped.ExpiresAt, capped.Extensions, want)
	}
	// 21m into the window, Vault renewed for 12m more: a 33m window.
	if time.Duration(capped.TTL) != 33*time.Minute {
		t.Fatalf("capped extension ttl = %s, want 33m", capped.TTL)
	}
	wantTTL("after a capped renewal", 33*time.Minute)
	renewer.cap = 0
	_, err = f.svc.ExtendLease(ctx, l.ID, "5m")
	if broker.ErrorCode(err) != broker.ECONFLICT || !strings.Contains(broker.ErrorMessage(err), "the most role") {
		t.Fatalf("third extension of a role allowing 2: %v", err)
	}
}

// TestExtendLeaseCredentialEnded extends a lease whose credential Vault no
// longer holds (it expired there while Stint could not reach Vault): a
// conflict, the window put back, and no internal error to retry.
func TestExtendLeaseCredentialEnded(t *testing.T) {
	f := govFixture(t)
	now := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	f.svc.Now = func() time.Time { return now }
	f.svc.Renewer = &fakeRenewer{err: fmt.Errorf("renew vault lease x: %w", leases.ErrCredentialEnded)}
	ctx, _ := f.agentAs(t, "etl", broker.AuthAPIKey)
	l, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "etl"})
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(11 * time.Minute)
	_, err = f.svc.ExtendLease(ctx, l.ID, "10m")
	if broker.ErrorCode(err) != broker.ECONFLICT || !strings.Contains(broker.ErrorMessage(err), "already ended in Vault") {
		t.Fatalf("extension of an ended credential: %v, want a conflict", err)
	}
	got, err := f.db.FindLeaseByID(context.Background(), l.ID)
	if err != nil || !got.ExpiresAt.Equal(*l.ExpiresAt) || got.Extensions != 0 {
		t.Fatalf("lease after the refused extension: expires %s after %d extensions, %v; want %s after 0", got.ExpiresAt, got.Extensions, err, l.ExpiresAt)
	}
}

// clockRenewer checks that every renewal it is asked for ends the
// credential no later than the lease's recorded window, by the clock at the
// moment of the call.
type clockRenewer struct {
	peek func() time.Time
	db   broker.LeaseStore
	id   string
	t    *testing.T
}

func (r *clockRenewer) Renew(ctx context.Context, req leases.RenewRequest) (time.Duration, error) {
	l, err := r.db.FindLeaseByID(ctx, r.id)
	if err != nil {
		return 0, err
	}
	if end := r.peek().Add(req.Window); end.After(*l.ExpiresAt) {
		r.t.Errorf("renewal asked at %s for %s ends the credential at %s, after the recorded window end %s",
			r.peek().Format(time.TimeOnly), req.Window, end.Format(time.TimeOnly), l.ExpiresAt.Format(time.TimeOnly))
	}
	return req.Window, nil
}

// slowGuard is a LeaseGuard whose window updates take time (wait).
type slowGuard struct {
	broker.LeaseGuard
	wait func()
}

func (g slowGuard) UpdateLeaseIfExpires(ctx context.Context, id string, expires time.Time, upd broker.LeaseUpdate) (*broker.Lease, error) {
	l, err := g.LeaseGuard.UpdateLeaseIfExpires(ctx, id, expires, upd)
	g.wait()
	return l, err
}

// TestExtendLeaseWindowFromNow extends a lease while time passes during the
// call (a slow write ahead, a stalled process): the renewal's window is
// counted from the moment Vault is asked, so the credential never outlives
// the recorded end.
func TestExtendLeaseWindowFromNow(t *testing.T) {
	f := govFixture(t)
	var mu sync.Mutex
	cur := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	f.svc.Now = func() time.Time { // every reading of the clock takes 3 s
		mu.Lock()
		defer mu.Unlock()
		cur = cur.Add(3 * time.Second)
		return cur
	}
	peek := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return cur
	}
	ctx, _ := f.agentAs(t, "etl", broker.AuthAPIKey)
	l, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "etl"})
	if err != nil {
		t.Fatal(err)
	}
	f.svc.Renewer = &clockRenewer{peek: peek, db: f.db, id: l.ID, t: t}
	// The write ahead takes 20 s.
	f.svc.Guard = slowGuard{LeaseGuard: f.svc.Guard, wait: func() {
		mu.Lock()
		cur = cur.Add(20 * time.Second)
		mu.Unlock()
	}}
	mu.Lock()
	cur = cur.Add(11 * time.Minute)
	mu.Unlock()
	if _, err := f.svc.ExtendLease(ctx, l.ID, "10m"); err != nil {
		t.Fatal(err)
	}
}

func TestExtendLeaseDenied(t *testing.T) {
	f := govFixture(t)
	now := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	f.svc.Now = func() time.Time { return now }
	f.svc.Renewer = &fakeRenewer{}
	ctx, _ := f.agentAs(t, "etl", broker.AuthAPIKey)
	l, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "etl"})
	if err != nil {
		t.Fatal(err)
	}
	var action broker.Action
	f.svc.Decider = deciderFunc(func(_ context.Context, req broker.DecisionRequest) (broker.Decision, error) {
		action = req.Action
		return broker.Decision{Outcome: broker.OutcomeApprovals, Approvals: 1, ApproverGroup: "ops", Reasons: []string{"long window"}}, nil
	})
	now = now.Add(15 * time.Minute)
	_, err = f.svc.ExtendLease(ctx, l.ID, "10m")
	if broker.ErrorCode(err) != broker.EDENIED || action != broker.ActionExtend {
		t.Fatalf("extension needing approval: %v (action %q)", err, action)
	}
	got, _ := f.db.FindLeaseByID(context.Background(), l.ID)
	if !got.ExpiresAt.Equal(*l.ExpiresAt) || got.Extensions != 0 || got.State != broker.LeaseActive {
		t.Fatalf("denied extension changed the lease: %+v", got)
	}
	events, _ := f.db.FindLeaseEvents(context.Background(), l.ID)
	if last := events[len(events)-1]; !strings.HasPrefix(last.Reason, "extension denied") {
		t.Fatalf("last event %q, want the denial noted", last.Reason)
	}
	// Another agent cannot extend it.
	other, _ := f.agentAs(t, "other", broker.AuthAPIKey)
	if _, err := f.svc.ExtendLease(other, l.ID, "10m"); broker.ErrorCode(err) != broker.ENOTFOUND {
		t.Fatalf("another agent's extension: %v", err)
	}
}

// riskByAction scores requests and extensions with fixed assessments.
type riskByAction map[broker.Action]broker.RiskAssessment

func (r riskByAction) ScoreRequest(_ context.Context, req broker.DecisionRequest) (broker.RiskAssessment, error) {
	return r[req.Action], nil
}

// ScoreAgent scores between requests with the assessment for no action.
func (r riskByAction) ScoreAgent(context.Context, string, time.Time) (broker.RiskAssessment, error) {
	return r[""], nil
}

// TestExtendLeaseRiskConsistent: an extension scores risk again, and the
// lease then shows that score with its own factors, never a score beside
// another assessment's factors (0 beside a +15).
func TestExtendLeaseRiskConsistent(t *testing.T) {
	f := govFixture(t)
	now := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	f.svc.Now = func() time.Time { return now }
	f.svc.Renewer = &fakeRenewer{}
	f.svc.Risk = riskByAction{
		broker.ActionRequest: {Score: 15, Factors: []broker.RiskFactor{{Name: broker.RiskFirstUse, Points: 15, Detail: "first request for role db-readonly"}}},
		broker.ActionExtend:  {Score: 10, Factors: []broker.RiskFactor{{Name: broker.RiskBurst, Points: 10, Detail: "5 requests in the last minute"}}},
	}
	ctx, _ := f.agentAs(t, "etl", broker.AuthAPIKey)
	l, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "etl"})
	if err != nil {
		t.Fatal(err)
	}
	consistent := func(what string, l *broker.Lease, want int) {
		t.Helper()
		sum := 0
		for _, f := range l.RiskFactors {
			sum += f.Points
		}
		if l.RiskScore != want || sum != l.RiskScore {
			t.Fatalf("%s: risk score %d with factors %+v (sum %d); want %d, the sum of its factors", what, l.RiskScore, l.RiskFactors, sum, want)
		}
	}
	consistent("requested", l, 15)

	now = now.Add(11 * time.Minute)
	ext, err := f.svc.ExtendLease(ctx, l.ID, "10m")
	if err != nil {
		t.Fatal(err)
	}
	consistent("extended", ext, 10)
	stored, err := f.db.FindLeaseByID(context.Background(), l.ID)
	if err != nil {
		t.Fatal(err)
	}
	consistent("stored after the extension", stored, 10)
	if stored.RiskFactors[0].Name != broker.RiskBurst {
		t.Fatalf("stored factors %+v, want the extension's", stored.RiskFactors)
	}
}

// TestDelegatedUserUnverified checks that a request made for a user
// without a verified email is denied when it needs approval, since
// separation of duty could not tell that user among the approvers, and
// that it goes ahead when no approver is involved or the email is verified.
func TestDelegatedUserUnverified(t *testing.T) {
	f := govFixture(t)
	needsApproval := true
	f.svc.Decider = deciderFunc(func(context.Context, broker.DecisionRequest) (broker.Decision, error) {
		if needsApproval {
			return broker.Decision{Outcome: broker.OutcomeApprovals, Approvals: 1, ApproverGroup: "ops"}, nil
		}
		return broker.Decision{Outcome: broker.OutcomeApprove}, nil
	})
	_, agentID := f.agentAs(t, "etl", broker.AuthPrivateKeyJWT)
	as := func(onBehalfOf string, verified bool) context.Context {
		return broker.NewContextWithActor(context.Background(), broker.Actor{Kind: broker.ActorAgent, Name: "etl", AgentID: agentID,
			AuthMethod: broker.AuthPrivateKeyJWT, OnBehalfOf: onBehalfOf, OnBehalfOfVerified: verified})
	}

	l, _, err := f.svc.RequestLease(as("00u1opaque", false), broker.LeaseRequest{Role: "db-readonly", Task: "for a user"})
	if broker.ErrorCode(err) != broker.EDENIED || l.State != broker.LeaseDenied || !slices.Contains(l.PolicyDecision.PolicyIDs, "stint:delegated-user-unverified") {
		t.Fatalf("unverified user, approval needed: %v %+v", err, l)
	}
	l, _, err = f.svc.RequestLease(as("alice@example.com", true), broker.LeaseRequest{Role: "db-readonly", Task: "for a user"})
	if err != nil || l.State != broker.LeasePending || l.OnBehalfOf != "alice@example.com" {
		t.Fatalf("verified user, approval needed: %v %+v", err, l)
	}
	l, _, err = f.svc.RequestLease(as("", false), broker.LeaseRequest{Role: "txn-approve", Task: "for itself"})
	if err != nil || l.State != broker.LeasePending {
		t.Fatalf("agent acting for itself, approval needed: %v %+v", err, l)
	}
	needsApproval = false
	l, _, err = f.svc.RequestLease(as("00u1opaque", false), broker.LeaseRequest{Role: "finance-report", Task: "for a user"})
	if err != nil || l.State != broker.LeaseActive || l.OnBehalfOf != "00u1opaque" {
		t.Fatalf("unverified user, no approval needed: %v %+v", err, l)
	}
}

// refusingGuard is the store's LeaseGuard, but for CreateLeaseExclusive,
// which refuses with err.
type refusingGuard struct {
	broker.LeaseGuard
	err error
}

func (g refusingGuard) CreateLeaseExclusive(context.Context, *broker.Lease, string, string, []string) error {
	return g.err
}

// TestSeparationOfDutySentinel checks that a separation-of-duty refusal is
// known by ErrDutyConflict, not by its wording: a refusal that wraps the
// sentinel denies the request whatever it says, and a conflict that is
// only worded like one is not taken for one.
func TestSeparationOfDutySentinel(t *testing.T) {
	for _, tt := range []struct {
		name     string
		refusal  error
		wantCode string
	}{
		{"Sentinel", &broker.Error{Code: broker.ECONFLICT, Message: "Held elsewhere.", Err: broker.ErrDutyConflict}, broker.EDENIED},
		{"WordingOnly", broker.Errorf(broker.ECONFLICT, "Separation of duty: worded like one."), broker.ECONFLICT},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := govFixture(t)
			f.svc.Guard = refusingGuard{LeaseGuard: f.db, err: tt.refusal}
			ctx, agentID := f.agentAs(t, "fin", broker.AuthAPIKey)
			_, _, err := f.svc.RequestLease(ctx, broker.LeaseRequest{Role: "txn-approve", Task: "approve"})
			if got := broker.ErrorCode(err); got != tt.wantCode {
				t.Fatalf("RequestLease = %v; want code %s", err, tt.wantCode)
			}
			ls, _, err := f.db.FindLeases(context.Background(), broker.LeaseFilter{AgentID: &agentID})
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantCode == broker.EDENIED {
				if len(ls) != 1 || ls[0].State != broker.LeaseDenied || !strings.Contains(ls[0].Decision, "Held elsewhere") {
					t.Fatalf("leases = %v; want one denied for the refusal", ls)
				}
			} else if len(ls) != 0 {
				t.Fatalf("leases = %v; want none recorded", ls)
			}
		})
	}
}
