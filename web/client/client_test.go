package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stint-broker/stint/web/client"
)

func newAgentClient(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.New(serverURL, client.WithAPIKey(agentKey))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newApproverClient(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.New(serverURL, client.WithAPIKey(approverToken))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// pendingLease requests a lease that needs an approval.
func pendingLease(t *testing.T, c *client.Client, task string) *client.Lease {
	t.Helper()
	l, err := c.RequestLease(context.Background(), client.LeaseRequest{Role: "vault-token", TTL: "5m", Task: task})
	if err != nil {
		t.Fatal(err)
	}
	if l.State != client.StatePending || l.Credential != nil || l.DecideBy == nil {
		t.Fatalf("requested lease = %+v, want pending with decide_by and no credential", l)
	}
	return l
}

func digestOf(t *testing.T, approver *client.Client, id string) string {
	t.Helper()
	pending, err := approver.Approvals(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pending {
		if p.Lease.ID == id {
			if p.Needed != 1 || p.ApproverGroup != "security" || p.Owner != "owner@example.com" {
				t.Errorf("pending approval = %+v", p)
			}
			return p.Digest
		}
	}
	t.Fatalf("lease %s is not among the approvals %v", id, pending)
	return ""
}

// TestWaitLeaseReturnsOnDecision: a long poll answers as soon as the
// approver decides, with the new state; without a decision it answers
// pending once the wait is over.
func TestWaitLeaseReturnsOnDecision(t *testing.T) {
	ctx := context.Background()
	agent, approver := newAgentClient(t), newApproverClient(t)
	l := pendingLease(t, agent, "wait test")

	still, err := agent.WaitLease(ctx, l.ID, time.Second)
	if err != nil || still.State != client.StatePending {
		t.Fatalf("WaitLease without a decision = %v, %v; want pending", still, err)
	}

	digest := digestOf(t, approver, l.ID)
	got := make(chan *client.Lease, 1)
	go func() {
		w, err := agent.WaitLease(ctx, l.ID, client.MaxWait)
		if err != nil {
			t.Error(err)
		}
		got <- w
	}()
	time.Sleep(200 * time.Millisecond)
	if _, err := approver.Approve(ctx, l.ID, digest); err != nil {
		t.Fatal(err)
	}
	// Had the poll not returned on the decision, it would answer pending
	// after MaxWait.
	if w := <-got; w == nil || w.State != client.StateApproved || w.ActivateBy == nil {
		t.Fatalf("WaitLease = %+v, want approved with activate_by", w)
	}
	if c, err := agent.CancelLease(ctx, l.ID); err != nil || c.State != client.StateCanceled {
		t.Fatalf("CancelLease = %+v, %v", c, err)
	}
}

// TestDenyEndsTheWait: a denial reaches the waiting agent as rejected, and
// activating it then is a conflict; the history shows each step.
func TestDenyEndsTheWait(t *testing.T) {
	ctx := context.Background()
	agent, approver := newAgentClient(t), newApproverClient(t)
	l := pendingLease(t, agent, "deny test")
	digest := digestOf(t, approver, l.ID)
	polls := 0
	go func() {
		time.Sleep(100 * time.Millisecond)
		if _, err := approver.Deny(ctx, l.ID, digest, "not today"); err != nil {
			t.Error(err)
		}
	}()
	decided, err := agent.AwaitDecision(ctx, l.ID, func(*client.Lease) { polls++ })
	if err != nil || decided.State != client.StateRejected {
		t.Fatalf("AwaitDecision = %+v, %v; want rejected", decided, err)
	}
	_, err = agent.ActivateLease(ctx, l.ID)
	var e *client.Error
	if !errors.As(err, &e) || e.Code != client.CodeConflict || e.Status != 409 || e.Message == "" || e.RequestID == "" {
		t.Fatalf("ActivateLease of a rejected lease = %#v, want a 409 conflict with message and request id", err)
	}
	events, err := agent.LeaseEvents(ctx, l.ID)
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, ev := range events {
		steps = append(steps, ev.To)
	}
	if got := strings.Join(steps, ","); got != "pending,rejected" {
		t.Fatalf("history = %s, want pending,rejected", got)
	}
	page, err := agent.Leases(ctx, client.LeaseFilter{States: []string{client.StateRejected}, Role: "vault-token"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, x := range page.Leases {
		found = found || x.ID == l.ID
		if x.State != client.StateRejected || x.Role != "vault-token" {
			t.Errorf("filtered list holds %s %s", x.State, x.Role)
		}
	}
	if !found || page.Total < 1 {
		t.Fatalf("Leases(rejected) = %+v, want the rejected lease", page)
	}
}

// TestNoSecretPrinted: neither a client nor a lease with its credential
// shows a secret through fmt, log/slog or encoding/json.
func TestNoSecretPrinted(t *testing.T) {
	ctx := context.Background()
	c := newAgentClient(t)
	l, err := c.RequestLease(ctx, client.LeaseRequest{Role: "db-readonly", TTL: "1m", Task: "redaction"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.ReleaseLease(ctx, l.ID)
	password, ok := l.Credential.Field("password")
	if !ok || password == "" {
		t.Fatalf("credential has no password: %v", l.Credential.Reveal())
	}
	secret := strings.TrimPrefix(agentKey, "stint_ak_")
	var buf bytes.Buffer
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		fmt.Fprintf(&buf, verb+"\n", c)
		fmt.Fprintf(&buf, verb+"\n", l)
		fmt.Fprintf(&buf, verb+"\n", *l)
		fmt.Fprintf(&buf, verb+"\n", l.Credential)
	}
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("lease", "lease", l, "credential", l.Credential, "client", c)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("lease", "lease", l, "credential", l.Credential)
	b, _ := json.Marshal(l)
	buf.Write(b)
	out := buf.String()
	for _, s := range []string{password, secret} {
		if strings.Contains(out, s) {
			t.Fatalf("a secret was printed:\n%s", out)
		}
	}
	if !strings.Contains(out, "[credential redacted]") || !strings.Contains(out, "stint_ak_[redacted]") {
		t.Fatalf("output does not show the redaction:\n%s", out)
	}
}

// TestUnreachable: no answer at all is an *UnreachableError, not an
// *Error.
func TestUnreachable(t *testing.T) {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(fmt.Sprintf("127.0.0.1:%d", port), client.WithAPIKey(agentKey))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Roles(context.Background())
	var u *client.UnreachableError
	if !errors.As(err, &u) || client.IsCode(err, client.CodeUnavailable) {
		t.Fatalf("Roles of a closed port = %#v, want *UnreachableError", err)
	}
}

// TestNewRefusesBadSettings: New names what is wrong.
func TestNewRefusesBadSettings(t *testing.T) {
	for _, c := range []struct {
		addr string
		opts []client.Option
		want string
	}{
		{serverURL, nil, "no authentication"},
		{serverURL, []client.Option{client.WithAPIKey(" ")}, "API key is empty"},
		{serverURL, []client.Option{client.WithAPIKey("a"), client.WithClientSecret("id", "s")}, "one authentication method"},
		{"ftp://x", []client.Option{client.WithAPIKey("a")}, "not an http(s) URL"},
		{serverURL, []client.Option{client.WithCAFile("/nonexistent")}, "read CA file"},
		{serverURL, []client.Option{client.WithPrivateKeyJWT("id", nil)}, "no key"},
	} {
		if _, err := client.New(c.addr, c.opts...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%q) = %v, want %q", c.addr, err, c.want)
		}
	}
}

// TestWhoamiAndRoles: the agent sees itself and the roles it may request.
func TestWhoamiAndRoles(t *testing.T) {
	ctx := context.Background()
	c := newAgentClient(t)
	id, err := c.Whoami(ctx)
	if err != nil || id.Kind != "agent" || id.Name != "report-bot" || id.AuthMethod != "api_key" {
		t.Fatalf("Whoami = %+v, %v", id, err)
	}
	roles, err := c.Roles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range roles {
		names = append(names, r.Name+":"+r.Kind)
	}
	if got := strings.Join(names, ","); got != "db-readonly:database,vault-token:token" {
		t.Fatalf("Roles = %s", got)
	}
}

// TestTasks: Tasks groups the agent's live leases by task, TaskLeaseList
// reads every lease of one task across pages of the API, and ReleaseTask
// ends only that task's leases.
func TestTasks(t *testing.T) {
	ctx := context.Background()
	c := newAgentClient(t)
	const task, other = "tasks test: migrate orders/v2", "tasks test: other"
	var ids []string
	for _, r := range []struct{ role, task string }{{"db-readonly", task}, {"vault-token", task}, {"db-readonly", other}} {
		l, err := c.RequestLease(ctx, client.LeaseRequest{Role: r.role, TTL: "5m", Task: r.task})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, l.ID)
	}
	tasks, truncated, err := c.Tasks(ctx, client.TaskFilter{})
	if err != nil || truncated {
		t.Fatalf("Tasks = %v, %v, truncated %v", tasks, err, truncated)
	}
	byName := map[string]*client.Task{}
	for _, k := range tasks {
		byName[k.Name] = k
	}
	if k := byName[task]; k == nil || k.Live != 2 || k.Leases != 2 || strings.Join(k.Roles, ",") != "db-readonly,vault-token" || strings.Join(k.Agents, ",") != "report-bot" {
		t.Fatalf("task %q = %+v, want 2 live leases of db-readonly and vault-token by report-bot", task, k)
	}
	if k := byName[other]; k == nil || k.Live != 1 {
		t.Fatalf("task %q = %+v, want 1 live lease", other, k)
	}

	ended, err := c.ReleaseTask(ctx, task)
	if err != nil || len(ended.Leases) != 2 || !ended.Done() || ended.Task != task {
		t.Fatalf("ReleaseTask = %+v, %v; want both leases ended", ended, err)
	}
	list, err := c.TaskLeaseList(ctx, task)
	if err != nil || len(list) != 2 {
		t.Fatalf("TaskLeaseList = %d leases, %v; want 2", len(list), err)
	}
	for _, l := range list {
		if l.Task != task || !l.Ended() {
			t.Errorf("lease %s of %q is %s after the release", l.ID, l.Task, l.State)
		}
	}
	if l, err := c.Lease(ctx, ids[2]); err != nil || l.State != client.StateActive {
		t.Fatalf("the other task's lease = %+v, %v; want active", l, err)
	}
	tasks, _, _ = c.Tasks(ctx, client.TaskFilter{})
	for _, k := range tasks {
		if k.Name == task {
			t.Errorf("Tasks still lists %q with live leases: %+v", task, k)
		}
	}
	// Nothing live left: an empty answer, not an error.
	if again, err := c.ReleaseTask(ctx, task); err != nil || len(again.Leases) != 0 {
		t.Fatalf("second ReleaseTask = %+v, %v; want no lease", again, err)
	}
	if _, err := c.ReleaseLease(ctx, ids[2]); err != nil {
		t.Fatal(err)
	}
}
