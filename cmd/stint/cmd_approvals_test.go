package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/sqlite"
)

// TestApprovalsCommands runs `stint approvals list|approve|deny` against the
// store on the server host, without Vault: approvers see the digest, a wrong
// digest or a non-approver is refused, and an answer moves the lease.
func TestApprovalsCommands(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "") // operator commands work without Stint's Vault token
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "stint.db")
	cfgPath := filepath.Join(dir, "stint.yaml")
	cfg := `store: {path: ` + dbPath + `}
approvers:
  - {email: dana@example.com, name: Dana, groups: [security]}
  - {email: eve@example.com, name: Eve, groups: [security]}
roles:
  - name: db-readonly
    kind: database
    sensitivity: medium
    vault: {path: database/creds/stint-readonly, method: read}
    default_ttl: 15m
    max_ttl: 1h
    connection: {host: 127.0.0.1, port: 5432, database: postgres}
`
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	// Two pending leases, each needing one approval from security.
	db, err := sqlite.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	agent := &broker.Agent{ID: uuid.NewString(), Name: "report-bot", Owner: "owner@example.com", State: broker.AgentActive, CreatedAt: now, UpdatedAt: now}
	if err := db.CreateAgent(context.Background(), agent); err != nil {
		t.Fatal(err)
	}
	pending := func(task string) string {
		decideBy := now.Add(time.Hour)
		l := &broker.Lease{ID: uuid.Must(uuid.NewV7()).String(), AgentID: agent.ID, Agent: agent.Name, Role: "db-readonly", Task: task,
			TTL: broker.Duration(15 * time.Minute), State: broker.LeasePending, CreatedAt: now, UpdatedAt: now, DecideBy: &decideBy,
			PolicyDecision: &broker.Decision{Outcome: broker.OutcomeApprovals, Approvals: 1, ApproverGroup: "security",
				PolicyIDs: []string{"medium"}, Reasons: []string{"Medium-sensitivity role: one approval."}}}
		if err := db.CreateLease(context.Background(), l, "agent:report-bot", "needs approval"); err != nil {
			t.Fatal(err)
		}
		return l.ID
	}
	approveID, denyID := pending("quarterly numbers"), pending("ad-hoc export")
	db.Close()

	c := func(args ...string) []string { return append([]string{"--config", cfgPath, "approvals"}, args...) }
	out, err := runCLI(t, "", c("list", "--as", "dana@example.com")...)
	if err != nil || !strings.Contains(out, approveID) || !strings.Contains(out, "quarterly numbers") || !strings.Contains(out, "2 pending") {
		t.Fatalf("approvals list = %q, %v", out, err)
	}
	digests := map[string]string{}
	var lease string
	for _, line := range strings.Split(out, "\n") {
		if m := regexp.MustCompile(`^lease:\s+(\S+)`).FindStringSubmatch(line); m != nil {
			lease = m[1]
		}
		if m := regexp.MustCompile(`^digest:\s+([0-9a-f]{64})$`).FindStringSubmatch(line); m != nil {
			digests[lease] = m[1]
		}
	}
	if digests[approveID] == "" || digests[denyID] == "" {
		t.Fatalf("approvals list shows no digest per lease:\n%s", out)
	}

	if _, err := runCLI(t, "", c("approve", approveID, "--digest", strings.Repeat("0", 64), "--as", "dana@example.com")...); err == nil || !strings.Contains(userMessage(err), "changed") {
		t.Fatalf("approve with a wrong digest = %v, want refused as changed", err)
	}
	if _, err := runCLI(t, "", c("approve", approveID, "--digest", digests[approveID], "--as", "owner@example.com")...); err == nil || !strings.Contains(userMessage(err), "not a configured approver") {
		t.Fatalf("approve by a non-approver = %v, want refused", err)
	}
	// The command's output (stdout and stderr alike here) says what it did
	// once: the service's info logs stay out of a one-shot command's.
	if out, err := runCLI(t, "", c("approve", approveID, "--digest", digests[approveID], "--as", "dana@example.com")...); err != nil || !strings.Contains(out, "is approved") || strings.Contains(out, "level=INFO") || strings.Contains(out, `"level":"INFO"`) {
		t.Fatalf("approve = %q, %v", out, err)
	}
	if out, err := runCLI(t, "", c("deny", denyID, "--digest", digests[denyID], "--as", "eve@example.com", "--reason", "not this quarter")...); err != nil || !strings.Contains(out, "rejected") {
		t.Fatalf("deny = %q, %v", out, err)
	}

	db, err = sqlite.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for id, want := range map[string]broker.LeaseState{approveID: broker.LeaseApproved, denyID: broker.LeaseRejected} {
		if l, err := db.FindLeaseByID(context.Background(), id); err != nil || l.State != want {
			t.Fatalf("lease %s after the CLI answer: %v, %v; want %s", id, l.State, err, want)
		}
	}
}

// TestApprovalsListWithoutSlackTokens: `stint approvals` is the fallback for
// when Slack is not at hand, so it works on a server configured for Slack
// without the Slack tokens in its environment; the server itself still
// refuses to start without them.
func TestApprovalsListWithoutSlackTokens(t *testing.T) {
	for _, env := range []string{"VAULT_TOKEN", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"} {
		t.Setenv(env, "")
	}
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "stint.db")
	cfgPath := filepath.Join(dir, "stint.yaml")
	cfg := `store: {path: ` + dbPath + `}
slack: {enabled: true, default_channel: C0APPROVALS}
approvers:
  - {email: dana@example.com, name: Dana, groups: [security]}
roles:
  - name: db-readonly
    kind: database
    sensitivity: medium
    vault: {path: database/creds/stint-readonly, method: read}
    default_ttl: 15m
    max_ttl: 1h
    connection: {host: 127.0.0.1, port: 5432, database: postgres}
`
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := sqlite.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	agent := &broker.Agent{ID: uuid.NewString(), Name: "report-bot", Owner: "owner@example.com", State: broker.AgentActive, CreatedAt: now, UpdatedAt: now}
	if err := db.CreateAgent(context.Background(), agent); err != nil {
		t.Fatal(err)
	}
	decideBy := now.Add(time.Hour)
	l := &broker.Lease{ID: uuid.Must(uuid.NewV7()).String(), AgentID: agent.ID, Agent: agent.Name, Role: "db-readonly", Task: "quarterly numbers",
		TTL: broker.Duration(15 * time.Minute), State: broker.LeasePending, CreatedAt: now, UpdatedAt: now, DecideBy: &decideBy,
		PolicyDecision: &broker.Decision{Outcome: broker.OutcomeApprovals, Approvals: 1, ApproverGroup: "security"}}
	if err := db.CreateLease(context.Background(), l, "agent:report-bot", "needs approval"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	out, err := runCLI(t, "", "--config", cfgPath, "approvals", "list", "--as", "dana@example.com")
	if err != nil || !strings.Contains(out, l.ID) || !strings.Contains(out, "digest:") {
		t.Fatalf("approvals list without Slack tokens = %q, %v; want the pending lease", out, err)
	}

	// The server needs Slack: it refuses to start without the tokens.
	c, err := ReadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMain(c, slog.New(slog.DiscardHandler))
	m.VaultOptional = true
	defer m.Close()
	if err := m.Open(context.Background()); err == nil || !strings.Contains(err.Error(), "SLACK_BOT_TOKEN") {
		t.Fatalf("Open for serve without Slack tokens = %v; want an error naming SLACK_BOT_TOKEN", err)
	}
}
