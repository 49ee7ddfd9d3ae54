package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/sqlite"
	"github.com/stint-broker/stint/leases"
)

// policyConfigFor writes the example policies into dir and returns a
// configuration naming them, with two roles and the store in dir.
func policyConfigFor(t *testing.T, dir string) string {
	t.Helper()
	if _, err := writeExamplePolicies(filepath.Join(dir, "policies"), false); err != nil {
		t.Fatal(err)
	}
	cfg := `store: {path: ` + filepath.Join(dir, "stint.db") + `}
policy:
  files: [` + filepath.Join(dir, "policies", "guards.cedar") + `, ` + filepath.Join(dir, "policies", "tiers.cedar") + `]
  timezone: Europe/Berlin
roles:
  - name: db-readonly
    kind: database
    sensitivity: low
    vault: {path: database/creds/ro, method: read}
    default_ttl: 15m
    max_ttl: 1h
    eligible: {team: data}
    connection: {host: 127.0.0.1, port: 5432, database: postgres}
  - name: vault-token
    kind: token
    sensitivity: medium
    vault: {path: auth/token/create/agent, method: write}
    default_ttl: 15m
    max_ttl: 1h
`
	path := filepath.Join(dir, "stint.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runStint runs the CLI with args and returns its output and error.
func runStint(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCommand(&out, &errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String() + errOut.String(), err
}

func TestPolicyConfig(t *testing.T) {
	base := strings.Replace(goodConfig, "roles:", "policy:\n  files: [a.cedar, b.cedar]\n  timezone: Europe/Berlin\n  default_approver_group: dba\nroles:", 1)
	t.Run("OK", func(t *testing.T) {
		cfg, err := ParseConfig("stint.yaml", []byte(base))
		if err != nil {
			t.Fatal(err)
		}
		if p := cfg.Policy; len(p.Files) != 2 || p.Timezone != "Europe/Berlin" || p.DefaultApproverGroup != "dba" || !p.Enabled() {
			t.Errorf("policy %+v", p)
		}
	})
	t.Run("Defaults", func(t *testing.T) {
		cfg, err := ParseConfig("stint.yaml", []byte(goodConfig))
		if err != nil {
			t.Fatal(err)
		}
		if p := cfg.Policy; p.Enabled() || p.Timezone != "UTC" || p.DefaultApproverGroup != "approvers" {
			t.Errorf("policy %+v", p)
		}
	})
	for _, tc := range []struct{ name, yaml, want string }{
		{"BadZone", strings.Replace(base, "Europe/Berlin", "Mars/Olympus", 1), `policy.timezone "Mars/Olympus" is not a time zone`},
		{"EmptyZone", strings.Replace(base, "timezone: Europe/Berlin", `timezone: ""`, 1), "policy.timezone is required"},
		{"DuplicateFile", strings.Replace(base, "[a.cedar, b.cedar]", "[a.cedar, a.cedar]", 1), "policy.files names a.cedar twice"},
		{"EmptyFile", strings.Replace(base, "[a.cedar, b.cedar]", `[a.cedar, ""]`, 1), "policy.files[1] is empty"},
		{"SchemaWithoutFiles", strings.Replace(base, "files: [a.cedar, b.cedar]", "schema: s.cedarschema", 1), "policy.schema is set but policy.files is empty"},
		{"UnknownKey", strings.Replace(base, "  default_approver_group: dba", "  default_group: dba", 1), `stint.yaml:9: unknown key "default_group"`},
		{"BadGroup", strings.Replace(base, "default_approver_group: dba", `default_approver_group: "d b a"`, 1), "policy.default_approver_group"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("stint.yaml", []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestPolicyValidateCommand(t *testing.T) {
	dir := t.TempDir()
	cfg := policyConfigFor(t, dir)
	t.Run("OK", func(t *testing.T) {
		out, err := runStint(t, "policy", "validate", "--config", cfg)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for _, want := range []string{
			"14 policies valid (9 permit, 5 forbid) against embedded stint.cedarschema; time zone Europe/Berlin",
			"deny-ineligible", "high-two-security", "2 from security", "1 from approvers", "0 (auto)",
			filepath.Join(dir, "policies", "tiers.cedar") + ":6:1",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("BadPolicy", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.cedar")
		os.WriteFile(bad, []byte("\n@id(\"needs-clearance\")\npermit (principal, action, resource is Role) when { resource.clearance > 3 };\n"), 0o600)
		_, err := runStint(t, "policy", "validate", "--config", cfg, bad)
		if err == nil || !strings.Contains(err.Error(), bad+":2:1: policy needs-clearance: attribute `clearance` on entity type `Role` not found") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("CustomSchema", func(t *testing.T) {
		schemaPath := filepath.Join(dir, "policies", "stint.cedarschema")
		if _, err := runStint(t, "policy", "validate", "--config", cfg, "--schema", schemaPath); err != nil {
			t.Errorf("with the shipped schema file: %v", err)
		}
		narrow := filepath.Join(dir, "narrow.cedarschema")
		b, _ := os.ReadFile(schemaPath)
		os.WriteFile(narrow, bytes.Replace(b, []byte("  risk_score: Long,\n"), nil, 1), 0o600)
		_, err := runStint(t, "policy", "validate", "--config", cfg, "--schema", narrow)
		if err == nil || !strings.Contains(err.Error(), "attribute `risk_score` in context") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("NoPolicy", func(t *testing.T) {
		plain := filepath.Join(dir, "plain.yaml")
		os.WriteFile(plain, []byte(goodConfig), 0o600)
		_, err := runStint(t, "policy", "validate", "--config", plain)
		if err == nil || !strings.Contains(err.Error(), "no policy files") {
			t.Errorf("error %v", err)
		}
	})
}

func TestPolicyTestCommand(t *testing.T) {
	dir := t.TempDir()
	cfg := policyConfigFor(t, dir)
	shipped := filepath.Join(dir, "policies", "examples.test.yaml")
	t.Run("ShippedTable", func(t *testing.T) {
		out, err := runStint(t, "policy", "test", "--config", cfg, shipped)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if !strings.Contains(out, "16 of 16 cases passed") || strings.Contains(out, "FAIL") {
			t.Errorf("output:\n%s", out)
		}
	})
	t.Run("ExamplesWithoutConfig", func(t *testing.T) {
		out, err := runStint(t, "policy", "test", "--examples", "--config", filepath.Join(dir, "missing.yaml"), shipped)
		if err != nil || !strings.Contains(out, "16 of 16 cases passed") {
			t.Errorf("%v\n%s", err, out)
		}
	})
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	t.Run("Failure", func(t *testing.T) {
		table := write("fail.yaml", `cases:
  - name: configured role, granted at once
    agent: {name: etl-bot, labels: {team: data}}
    role: db-readonly
    expect: {outcome: approve, policies: [low-short-auto]}
  - name: medium role expected wrongly
    agent: {name: etl-bot}
    role: vault-token
    expect: {outcome: approve, approvals: 0, group: "", policies: [low-short-auto]}
`)
		out, err := runStint(t, "policy", "test", "--config", cfg, table)
		if err == nil || err.Error() != "1 of 2 cases failed" {
			t.Errorf("error %v", err)
		}
		for _, want := range []string{
			"PASS  configured role, granted at once",
			"FAIL  medium role expected wrongly",
			"outcome approvals, want approve",
			"approvals 1, want 0",
			`approver group "approvers", want ""`,
			"policies [medium-one-approval], want [low-short-auto]",
			"decided 1 approval(s) from approvers by [medium-one-approval]: Medium-sensitivity role: one approval.",
			"1 of 2 cases passed",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	// The table's own checks are approvals/policy's (TestRunTableErrors);
	// these show that its errors reach the command line.
	for _, tc := range []struct{ name, table, want string }{
		{"UnknownRole", "cases:\n  - agent: {name: a}\n    role: nope\n    expect: {outcome: deny}\n",
			`:2: case 1: role "nope" is neither in the table's roles nor in the configuration (db-readonly, vault-token)`},
		{"NoCases", "roles: []\n", "no cases"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runStint(t, "policy", "test", "--config", cfg, write(tc.name+".yaml", tc.table))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestPolicyExplainCommand(t *testing.T) {
	dir := t.TempDir()
	cfg := policyConfigFor(t, dir)
	t.Run("DescribedAgent", func(t *testing.T) {
		out, err := runStint(t, "policy", "explain", "--config", cfg, "--agent", "etl-bot", "--label", "team=data",
			"--role", "db-readonly", "--ttl", "30m", "--risk", "45", "--weekday", "mon", "--hour", "10", "--source-ip", "10.0.0.1")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for _, want := range []string{
			"decision:  1 approval(s) from approvers by [risk-step-up-low-short]: Risk score of 40 or more: one approval instead of none.",
			"request:   agent etl-bot request role db-readonly for 30m0s at Mon 2030-01-07 10:00 CET",
			"evaluated: 14 of 14 policies",
			"matching forbids:\n  (none)",
			"low-short-auto  " + filepath.Join(dir, "policies", "tiers.cedar") + ":6:1",
			`risk-step-up-low-short  ` + filepath.Join(dir, "policies", "tiers.cedar") + `:40:1  @approvals("1")`,
			`"tags":{"team":"data"}`, `"risk_score":45`, `"source_ip":{"__extn":{"fn":"ip","arg":"10.0.0.1"}}`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("RegisteredAgent", func(t *testing.T) {
		db, err := sqlite.Open(context.Background(), filepath.Join(dir, "stint.db"))
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		if err := db.CreateAgent(context.Background(), &broker.Agent{ID: "0190a0a0-0000-7000-8000-0000000000aa", Name: "ml-bot",
			Owner: "bob@example.com", Labels: map[string]string{"team": "ml"}, State: broker.AgentActive,
			AuthMethods: broker.DefaultAuthMethods(), CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
		db.Close()
		out, err := runStint(t, "policy", "explain", "--config", cfg, "--agent", "ml-bot", "--role", "db-readonly")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for _, want := range []string{"decision:  deny by [deny-ineligible]", "deny-ineligible  ", `"owner":"bob@example.com"`, `"tags":{"team":"ml"}`} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		_, err = runStint(t, "policy", "explain", "--config", cfg, "--agent", "ghost", "--role", "db-readonly")
		if err == nil || !strings.Contains(err.Error(), "agent ghost is not registered") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("JSON", func(t *testing.T) {
		out, err := runStint(t, "policy", "explain", "--config", cfg, "--agent", "a", "--owner", "o@example.com",
			"--role", "vault-token", "--time", "2030-01-08T10:00:00+01:00", "--json")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`"outcome": "approvals"`, `"approver_group": "approvers"`, `"id": "medium-one-approval"`, `"total": 14`} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("UnknownRole", func(t *testing.T) {
		_, err := runStint(t, "policy", "explain", "--config", cfg, "--agent", "a", "--owner", "o@example.com", "--role", "nope")
		if err == nil || !strings.Contains(err.Error(), `role "nope" is not in the configuration`) {
			t.Errorf("error %v", err)
		}
	})
}

func TestPolicyExamplesAndSchemaCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ex")
	out, err := runStint(t, "policy", "examples", "--dir", dir)
	if err != nil || strings.Count(out, "wrote ") != 4 {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := runStint(t, "policy", "examples", "--dir", dir); err == nil || !strings.Contains(err.Error(), "file exists") {
		t.Errorf("second write: %v", err)
	}
	out, err = runStint(t, "policy", "examples")
	if err != nil || !strings.Contains(out, "// ==> tiers.cedar <==") || !strings.Contains(out, `@id("high-two-security")`) {
		t.Errorf("%v\n%s", err, out)
	}
	out, err = runStint(t, "policy", "schema")
	if err != nil || !strings.Contains(out, "entity Agent {") || !strings.Contains(out, "source_ip?: ipaddr") {
		t.Errorf("%v\n%s", err, out)
	}
}

// policyLogBuffer is a bytes.Buffer that a logger may write while a test
// reads it.
type policyLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *policyLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *policyLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// policyTestIssuer mints nothing real: it records what it was asked.
type policyTestIssuer struct{ issued []string }

func (i *policyTestIssuer) Issue(_ context.Context, req leases.IssueRequest) (*leases.Grant, error) {
	i.issued = append(i.issued, req.Role.Name)
	return &leases.Grant{VaultLeaseID: "test/" + req.LeaseID, LeaseDuration: req.Window, Data: map[string]any{"token": "x"}}, nil
}
func (i *policyTestIssuer) Revoke(context.Context, string) error { return nil }
func (i *policyTestIssuer) ListIssued(context.Context, []*broker.Role) ([]leases.Issued, error) {
	return nil, nil
}
func (i *policyTestIssuer) Ping(context.Context) error { return nil }

// TestMainPolicyWiring: with policy.files, Main's lease service decides with
// the policies, and SIGHUP reloads them (a bad reload keeps the old ones).
func TestMainPolicyWiring(t *testing.T) {
	dir := t.TempDir()
	cfg, err := ReadConfig(policyConfigFor(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	var logs policyLogBuffer
	m := NewMain(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	iss := &policyTestIssuer{}
	m.Issuer = iss
	if err := m.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Policy == nil || m.Leases.Decider != m.Policy {
		t.Fatal("the lease service does not decide with the policy")
	}

	ctx := context.Background()
	now := time.Now().UTC()
	agent := func(name, team string) context.Context {
		a := &broker.Agent{ID: "0190a0a0-0000-7000-8000-0000000000" + name[:2], Name: name, Owner: "alice@example.com",
			Labels: map[string]string{"team": team}, State: broker.AgentActive, AuthMethods: broker.DefaultAuthMethods(),
			CreatedAt: now, UpdatedAt: now}
		if err := m.DB.CreateAgent(ctx, a); err != nil {
			t.Fatal(err)
		}
		return broker.NewContextWithActor(ctx, broker.Actor{Kind: broker.ActorAgent, Name: name, AgentID: a.ID, AuthMethod: broker.AuthAPIKey})
	}
	data, ml := agent("da-bot", "data"), agent("ml-bot", "ml")

	l, _, err := m.Leases.RequestLease(data, broker.LeaseRequest{Role: "db-readonly", TTL: "30m", Task: "report"})
	if err != nil || l.State != broker.LeaseActive || l.PolicyDecision == nil || l.PolicyDecision.PolicyIDs[0] != "low-short-auto" {
		t.Fatalf("low role: %+v, %v", l, err)
	}
	_, _, err = m.Leases.RequestLease(ml, broker.LeaseRequest{Role: "db-readonly", Task: "report"})
	// Eligibility is enforced before policy (leases), whatever the policy
	// set says about it.
	if broker.ErrorCode(err) != broker.EDENIED || !strings.Contains(broker.ErrorMessage(err), "agent ml-bot is not eligible for role db-readonly") {
		t.Fatalf("ineligible: %v", err)
	}

	// SIGHUP with a broken policy file: logged, old policies stay.
	tiers := filepath.Join(dir, "policies", "tiers.cedar")
	good, _ := os.ReadFile(tiers)
	os.WriteFile(tiers, append(good, []byte("\npermit (principal, action, resource) when { context.nope };\n")...), 0o600)

	// Our own registration keeps a SIGHUP that arrives before the reloader's
	// from killing the test binary.
	guard := make(chan os.Signal, 16)
	signal.Notify(guard, syscall.SIGHUP)
	defer signal.Stop(guard)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { m.reloadOnHangup(rctx); close(done) }()
	defer func() { cancel(); <-done }()

	hangupUntil := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			syscall.Kill(os.Getpid(), syscall.SIGHUP)
			time.Sleep(20 * time.Millisecond)
			if ok() {
				return
			}
		}
		t.Fatalf("after SIGHUP: %s did not happen; logs:\n%s", what, logs.String())
	}
	hangupUntil("the failed reload logged", func() bool { return strings.Contains(logs.String(), "policy reload failed") })
	if !strings.Contains(logs.String(), "attribute `nope` in context") || len(m.Policy.Policies()) != 14 {
		t.Errorf("policies %d; logs:\n%s", len(m.Policy.Policies()), logs.String())
	}
	if l, _, err := m.Leases.RequestLease(data, broker.LeaseRequest{Role: "db-readonly", TTL: "5m", Task: "report"}); err != nil || l.State != broker.LeaseActive {
		t.Errorf("after a failed reload: %+v, %v", l, err)
	}

	// SIGHUP with a valid change: the new policy decides.
	os.WriteFile(tiers, append(good, []byte("\n@id(\"ml-may-read\") permit (principal, action, resource) when { principal.hasTag(\"team\") && principal.getTag(\"team\") == \"ml\" };\n")...), 0o600)
	hangupUntil("the reload", func() bool { return len(m.Policy.Policies()) == 15 })
	// The guard still forbids ml-bot: the new permit cannot override a forbid.
	_, _, err = m.Leases.RequestLease(ml, broker.LeaseRequest{Role: "db-readonly", Task: "report"})
	if broker.ErrorCode(err) != broker.EDENIED {
		t.Errorf("ml-bot after reload: %v", err)
	}
	if !strings.Contains(logs.String(), "policy reloaded") {
		t.Errorf("logs:\n%s", logs.String())
	}
}

// TestMainWithoutPolicy: without policy.files nothing changes: the roles'
// auto_approve decides and SIGHUP has nothing to reload.
func TestMainWithoutPolicy(t *testing.T) {
	cfg, err := ParseConfig("stint.yaml", []byte(strings.Replace(goodConfig, "/tmp/x.db", filepath.Join(t.TempDir(), "s.db"), 1)))
	if err != nil {
		t.Fatal(err)
	}
	m := NewMain(cfg, slog.New(slog.DiscardHandler))
	m.Issuer = &policyTestIssuer{}
	if err := m.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Policy != nil || m.Leases.Decider != nil {
		t.Error("a policy is wired without policy.files")
	}
	if err := m.ReloadPolicy(); err == nil || !strings.Contains(err.Error(), "no policy is configured") {
		t.Errorf("reload: %v", err)
	}
}

// TestDevConfigUsesExamplePolicies: `stint dev` decides with the example
// policies: its low role is granted at once, its medium role needs one
// approval.
func TestDevConfigUsesExamplePolicies(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "stint.yaml")
	if err := writeDevConfig(dir, "http://127.0.0.1:8250", "127.0.0.1:7070"); err != nil {
		t.Fatal(err)
	}
	cfg, err := ReadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := cfg.Policy.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	agent := &broker.Agent{ID: "x", Name: devAgent, Owner: "owner@example.com", Labels: map[string]string{"team": "data", "env": "dev"}}
	for _, tc := range []struct {
		role    string
		outcome broker.Outcome
	}{{"db-readonly", broker.OutcomeApprove}, {"vault-token", broker.OutcomeApprovals}} {
		var role *broker.Role
		for _, r := range cfg.Roles {
			if r.Name == tc.role {
				role = r
			}
		}
		d, _ := p.Decide(context.Background(), broker.DecisionRequest{Action: broker.ActionRequest, Agent: agent, Role: role,
			TTL: 5 * time.Minute, Task: "try", AuthMethod: broker.AuthAPIKey, Time: time.Now()})
		if d.Outcome != tc.outcome {
			t.Errorf("%s: %+v, want %s", tc.role, d, tc.outcome)
		}
	}
}

// TestPolicyExplainAgreesWithServer: `policy explain` answers what the
// server answers for the same request, through the lease service's own
// decision path: separation of duty against the agent's live leases, a role
// an access review removed, an agent that is not active, and a risk score
// at the containment threshold.
func TestPolicyExplainAgreesWithServer(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "")
	dir := t.TempDir()
	path := policyConfigFor(t, dir)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(raw, []byte("sod: {dynamic_conflicts: [[db-readonly, vault-token]]}\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := ReadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMain(cfg, slog.New(slog.DiscardHandler))
	m.Issuer = &policyTestIssuer{}
	if err := m.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	admin := adminContext(ctx)
	agent := func(name string) (*broker.Agent, context.Context) {
		a, _, _, err := m.Agents.CreateAgent(admin, broker.NewAgent{Name: name, Owner: "alice@example.com", Labels: map[string]string{"team": "data"}})
		if err != nil {
			t.Fatal(err)
		}
		return a, broker.NewContextWithActor(ctx, broker.Actor{Kind: broker.ActorAgent, Name: name, AgentID: a.ID, AuthMethod: broker.AuthAPIKey})
	}
	explain := func(args ...string) string {
		t.Helper()
		out, err := runStint(t, append([]string{"policy", "explain", "--config", path}, args...)...)
		if err != nil {
			t.Fatalf("policy explain %v: %v\n%s", args, err, out)
		}
		return out
	}
	both := func(what string, apiErr error, explained, want string) {
		t.Helper()
		if !strings.Contains(broker.ErrorMessage(apiErr), want) {
			t.Errorf("%s: the server answers %v; want %q", what, apiErr, want)
		}
		if !strings.Contains(explained, want) {
			t.Errorf("%s: policy explain does not say %q:\n%s", what, want, explained)
		}
	}

	// Separation of duty: da-bot holds db-readonly, which conflicts with
	// vault-token; policy alone would ask for one approval.
	_, da := agent("da-bot")
	if l, _, err := m.Leases.RequestLease(da, broker.LeaseRequest{Role: "db-readonly", TTL: "30m", Task: "report"}); err != nil || l.State != broker.LeaseActive {
		t.Fatalf("db-readonly: %+v, %v", l, err)
	}
	_, _, err = m.Leases.RequestLease(da, broker.LeaseRequest{Role: "vault-token", Task: "report"})
	out := explain("--agent", "da-bot", "--role", "vault-token")
	if broker.ErrorCode(err) != broker.EDENIED || !strings.Contains(out, "decision:  deny by [stint:separation-of-duty]") ||
		!strings.Contains(out, "policy:    1 approval(s) from approvers by [medium-one-approval]") {
		t.Errorf("separation of duty: server %v; explain:\n%s", err, out)
	}
	both("separation of duty", err, out, "agent da-bot holds a live lease on role db-readonly, which conflicts with role vault-token")

	// An access review removed db-readonly from etl-bot: policy alone
	// would grant it at once.
	etl, etlCtx := agent("etl-bot")
	if err := m.DB.ExcludeRole(ctx, &broker.RoleExclusion{AgentID: etl.ID, Role: "db-readonly", ReviewID: "r1", By: "admin:sec", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	_, _, err = m.Leases.RequestLease(etlCtx, broker.LeaseRequest{Role: "db-readonly", TTL: "30m", Task: "report"})
	out = explain("--agent", "etl-bot", "--role", "db-readonly", "--ttl", "30m")
	if broker.ErrorCode(err) != broker.EDENIED || !strings.Contains(out, "decision:  deny by [stint:access-review]") {
		t.Errorf("role removed: server %v; explain:\n%s", err, out)
	}
	both("role removed", err, out, "an access review removed role db-readonly from agent etl-bot")

	// A suspended agent is refused before policy decides.
	if _, err := m.Leases.ContainAgent(admin, broker.ContainRequest{AgentID: etl.ID, State: broker.AgentSuspended}); err != nil {
		t.Fatal(err)
	}
	_, _, err = m.Leases.RequestLease(etlCtx, broker.LeaseRequest{Role: "vault-token", Task: "report"})
	out = explain("--agent", "etl-bot", "--role", "vault-token")
	if broker.ErrorCode(err) != broker.EFORBIDDEN || !strings.Contains(out, "decision:  refused (forbidden) before policy decides") {
		t.Errorf("suspended: server %v; explain:\n%s", err, out)
	}
	both("suspended", err, out, "Agent etl-bot is suspended.")

	// A risk score at the revoke threshold (risk.revoke_threshold, 90)
	// contains the agent: denied whatever policy says.
	out = explain("--agent", "x", "--label", "team=data", "--role", "db-readonly", "--risk", "95")
	if !strings.Contains(out, "decision:  deny by [stint:risk-containment]: risk score 95 crossed the revoke threshold") {
		t.Errorf("risk containment: explain:\n%s", out)
	}

	// --json carries the server's decision and policy's apart.
	out = explain("--agent", "etl-bot", "--role", "db-readonly", "--json")
	if !strings.Contains(out, `"refused": {`) || !strings.Contains(out, `"policy_decision": {`) {
		t.Errorf("--json:\n%s", out)
	}
}
