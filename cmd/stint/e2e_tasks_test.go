package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
	"github.com/stint-broker/stint/web/client"
)

// tasksPolicy is the authorization matrix's policy (low roles at once,
// medium ones after one approval from security) with a forbid that keeps
// Vault tokens to tasks named "incident-…": a policy that reads
// context.task.
const tasksPolicy = matrixPolicy + `
@id("tokens-for-incidents")
forbid (principal is Agent, action == Action::"request", resource == Role::"vault-token")
unless { context.task like "incident-*" };
`

// TestTasksCLI runs `stint tasks` and `stint leases` against a running
// Stint with the development Vault and PostgreSQL: tasks are listed and
// shown per caller, an agent's release of a task ends only its own leases
// of that task (the minted users can no longer log in), an admin's revoke
// ends every agent's, with the reason in each history; a policy on
// context.task decides which tasks may hold a role.
func TestTasksCLI(t *testing.T) {
	dv := vaulttest.Start(t)
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.cedar")
	if err := os.WriteFile(policy, []byte(tasksPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := e2eConfig(t, dv, filepath.Join(dir, "stint.db"))
	cfg.Policy.Files = []string{policy}
	cfg.Approvers = []*broker.Approver{{Email: "dana@example.com", Name: "Dana", Groups: []string{"security"}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s := startStint(t, dv, cfg, nil)
	_, etlKey := s.newAgent(t, "etl-bot")
	_, opsKey := s.newAgent(t, "ops-bot")
	// The task's name has a space and a slash: it travels escaped in the
	// path of the task endpoints.
	const task, other = "migrate orders/v2", "nightly report"
	cli := func(key string, args ...string) (string, error) {
		t.Helper()
		return runCLI(t, "", append([]string{args[0], "--addr", s.url, "--key", key}, args[1:]...)...)
	}
	request := func(key, role, task string) (string, map[string]any) {
		t.Helper()
		out, err := cli(key, "leases", "request", "--role", role, "--ttl", "5m", "--task", task, "-o", "json")
		if err != nil {
			t.Fatalf("leases request %s for %q: %v\n%s", role, task, err, out)
		}
		var l struct {
			ID         string         `json:"id"`
			State      string         `json:"state"`
			Credential map[string]any `json:"credential"`
		}
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			t.Fatalf("decode %s: %v", out, err)
		}
		return l.ID, l.Credential
	}

	etlID, etlCred := request(etlKey, "db-readonly", task)
	_, etlOtherCred := request(etlKey, "db-readonly", other)
	opsID, opsCred := request(opsKey, "db-readonly", task)
	for _, c := range []map[string]any{etlCred, etlOtherCred, opsCred} {
		mustLogIn(t, c).Close(context.Background())
	}

	t.Run("PolicyReadsTheTask", func(t *testing.T) {
		out, err := cli(etlKey, "leases", "request", "--role", "vault-token", "--ttl", "5m", "--task", task)
		if !client.IsCode(err, client.CodeDenied) {
			t.Fatalf("vault-token for task %q = %v\n%s; want a denial by tokens-for-incidents", task, err, out)
		}
		id, cred := request(etlKey, "vault-token", "incident-7")
		if id == "" || cred != nil {
			t.Fatalf("vault-token for incident-7: id %q, credential %v; want a pending lease", id, cred)
		}
		l, err := s.DB.FindLeaseByID(context.Background(), id)
		if err != nil || l.State != broker.LeasePending {
			t.Fatalf("lease %s = %+v, %v; want pending (the forbid does not match an incident task)", id, l, err)
		}
	})

	t.Run("List", func(t *testing.T) {
		out, err := cli(etlKey, "tasks", "list", "-o", "json")
		if err != nil {
			t.Fatalf("tasks list: %v\n%s", err, out)
		}
		var got struct {
			Tasks []struct {
				Task   string   `json:"task"`
				Live   int      `json:"live"`
				Agents []string `json:"agents"`
				Roles  []string `json:"roles"`
			} `json:"tasks"`
			Truncated bool `json:"truncated"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("decode %s: %v", out, err)
		}
		live := map[string]int{}
		for _, k := range got.Tasks {
			live[k.Task] = k.Live
			if strings.Join(k.Agents, ",") != "etl-bot" {
				t.Errorf("task %q lists agents %v to etl-bot, want only itself", k.Task, k.Agents)
			}
		}
		if live[task] != 1 || live[other] != 1 || live["incident-7"] != 1 || got.Truncated {
			t.Fatalf("etl-bot's tasks = %s, want one live lease each in %q, %q and incident-7", out, task, other)
		}

		out, err = cli(testAdminToken, "tasks", "list")
		if err != nil {
			t.Fatalf("tasks list as admin: %v\n%s", err, out)
		}
		var row string
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, task+" ") {
				row = line
			}
		}
		if !strings.HasPrefix(out, "TASK") || !strings.Contains(row, "etl-bot,ops-bot") || strings.Fields(strings.TrimPrefix(row, task))[0] != "2" {
			t.Fatalf("admin's table:\n%s\nwant a row for %q with 2 live leases of etl-bot and ops-bot", out, task)
		}
	})

	t.Run("Show", func(t *testing.T) {
		out, err := cli(testAdminToken, "tasks", "show", task, "-o", "json")
		if err != nil {
			t.Fatalf("tasks show: %v\n%s", err, out)
		}
		var got struct {
			Task   string `json:"task"`
			Leases []struct {
				ID, Task, Agent string
			} `json:"leases"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("decode %s: %v", out, err)
		}
		ids := map[string]bool{}
		for _, l := range got.Leases {
			ids[l.ID] = l.Task == task
		}
		// The denied request of PolicyReadsTheTask is one of the task's
		// leases too.
		if got.Task != task || len(got.Leases) != 3 || !ids[etlID] || !ids[opsID] {
			t.Fatalf("tasks show %q = %s, want the leases of etl-bot and ops-bot and the denied one", task, out)
		}
		// An agent sees its own only; STINT_TASK names the task.
		t.Setenv(taskEnv, task)
		out, err = cli(opsKey, "tasks", "show")
		if err != nil || !strings.Contains(out, opsID) || strings.Contains(out, etlID) {
			t.Fatalf("tasks show as ops-bot = %v\n%s\nwant its own lease only", err, out)
		}
	})

	t.Run("AgentReleasesItsOwn", func(t *testing.T) {
		out, err := cli(etlKey, "tasks", "release", task)
		if err != nil {
			t.Fatalf("tasks release: %v\n%s", err, out)
		}
		if !strings.Contains(out, etlID) || !strings.Contains(out, "released") || !strings.Contains(out, `1 lease of task "migrate orders/v2" ended`) {
			t.Fatalf("tasks release printed:\n%s", out)
		}
		mustNotLogIn(t, etlCred)
		// Another agent's lease of the task, and the agent's other task,
		// are untouched.
		mustLogIn(t, opsCred).Close(context.Background())
		mustLogIn(t, etlOtherCred).Close(context.Background())
	})

	t.Run("RevokeIsForAdmins", func(t *testing.T) {
		if _, err := cli(etlKey, "tasks", "revoke", task, "--reason", "mine"); err == nil || !strings.Contains(userMessage(err), "admin") {
			t.Fatalf("tasks revoke as an agent = %v, want a refusal", err)
		}
		if _, err := cli(testAdminToken, "tasks", "revoke", task); exitCode(err) != exitUsage {
			t.Fatalf("tasks revoke without --reason = %v (exit %d), want exit %d", err, exitCode(err), exitUsage)
		}
		mustLogIn(t, opsCred).Close(context.Background())
	})

	t.Run("AdminRevokes", func(t *testing.T) {
		t.Setenv(taskEnv, task)
		out, err := cli(testAdminToken, "tasks", "revoke", "--reason", "incident 12", "-o", "json")
		if err != nil {
			t.Fatalf("tasks revoke: %v\n%s", err, out)
		}
		var got struct {
			Task   string `json:"task"`
			Leases []struct{ ID, State string }
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("decode %s: %v", out, err)
		}
		if got.Task != task || len(got.Leases) != 1 || got.Leases[0].ID != opsID || got.Leases[0].State != "revoked" {
			t.Fatalf("tasks revoke = %s, want ops-bot's lease revoked", out)
		}
		mustNotLogIn(t, opsCred)
		events, err := s.DB.FindLeaseEvents(context.Background(), opsID)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range events {
			found = found || e.Actor == "admin:env" && e.Reason == "revoked with its task: incident 12"
		}
		if last := events[len(events)-1]; last.To != broker.LeaseRevoked || !found {
			t.Fatalf("events %+v, want the admin's revocation with its reason, ending revoked", events)
		}
		mustLogIn(t, etlOtherCred).Close(context.Background())
	})
}
