package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/sqlite"
)

// TestAgentsDisableIsFinal: the CLI says what disabling is and does it:
// `agents activate` refuses a disabled agent with a clear message and the
// agent stays disabled, while a suspended agent comes back.
func TestAgentsDisableIsFinal(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "")
	dir := t.TempDir()
	cfg := policyConfigFor(t, dir)
	c := func(args ...string) []string { return append([]string{"--config", cfg, "agents"}, args...) }

	if out, err := runCLI(t, "", c("--help")...); err != nil || !strings.Contains(out, "can never be re-activated") ||
		!strings.Contains(out, "a disabled agent cannot be re-activated") {
		t.Fatalf("agents --help = %q, %v; want disable and activate to say disabling is final", out, err)
	}
	for _, name := range []string{"etl-bot", "ml-bot"} {
		if out, err := runCLI(t, "", c("create", name, "--owner", "alice@example.com")...); err != nil {
			t.Fatalf("create %s: %q, %v", name, out, err)
		}
	}
	if out, err := runCLI(t, "", c("suspend", "ml-bot")...); err != nil || !strings.Contains(out, "is suspended") {
		t.Fatalf("suspend = %q, %v", out, err)
	}
	if out, err := runCLI(t, "", c("activate", "ml-bot")...); err != nil || !strings.Contains(out, "is active") {
		t.Fatalf("activate a suspended agent = %q, %v", out, err)
	}

	if out, err := runCLI(t, "", c("disable", "etl-bot")...); err != nil || !strings.Contains(out, "is disabled") {
		t.Fatalf("disable = %q, %v", out, err)
	}
	for _, verb := range []string{"activate", "suspend"} {
		out, err := runCLI(t, "", c(verb, "etl-bot")...)
		if err == nil || broker.ErrorCode(err) != broker.ECONFLICT || !strings.Contains(userMessage(err), "disabled for good") {
			t.Fatalf("%s a disabled agent = %q, %v; want refused: disabled for good", verb, out, err)
		}
	}
	db, err := sqlite.Open(context.Background(), filepath.Join(dir, "stint.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if a, err := db.FindAgentByName(context.Background(), "etl-bot"); err != nil || a.State != broker.AgentDisabled {
		t.Fatalf("etl-bot after refused activation: %+v, %v; want disabled", a, err)
	}
}

// TestGovernanceLeavesDisabledAgentDisabled: governance suspending an
// agent that an admin disabled (an overdue review, a risk containment)
// succeeds and leaves it disabled, rather than failing every run or
// downgrading it to suspended.
func TestGovernanceLeavesDisabledAgentDisabled(t *testing.T) {
	cfg, err := ReadConfig(policyConfigFor(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	m := NewMain(cfg, slog.New(slog.DiscardHandler))
	m.Issuer = &policyTestIssuer{}
	if err := m.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := adminContext(context.Background())
	a, _, _, err := m.Agents.CreateAgent(ctx, broker.NewAgent{Name: "etl-bot", Owner: "alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Leases.ContainAgent(ctx, broker.ContainRequest{AgentID: a.ID, State: broker.AgentDisabled}); err != nil {
		t.Fatal(err)
	}
	gctx := broker.NewContextWithActor(context.Background(), broker.GovernanceActor())
	c, err := m.Leases.ContainAgent(gctx, broker.ContainRequest{AgentID: a.ID, State: broker.AgentSuspended, Reason: "access review overdue", KeepDisabled: true})
	if err != nil {
		t.Fatalf("suspending a disabled agent = %v; want nil", err)
	}
	if c.AgentState != "" || c.Actor != "admin:governance" || !strings.Contains(c.Reason, "access review overdue") {
		t.Fatalf("containment = %+v; want the agent's state left alone, by governance, with the reason", c)
	}
	if got, err := m.Agents.FindAgent(ctx, a.ID); err != nil || got.State != broker.AgentDisabled {
		t.Fatalf("agent after governance suspension: %+v, %v; want disabled", got, err)
	}
}

// TestAgentsCreateCommand registers agents with `stint agents create`: an
// agent that may use api_key gets a key; one limited to mtls gets none (a
// key would only be refused) and is told how to enrol a certificate; a
// name already taken is a conflict.
func TestAgentsCreateCommand(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "stint.yaml")
	if err := os.WriteFile(cfgPath, []byte("store: {path: "+filepath.Join(dir, "stint.db")+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	create := func(args ...string) (string, error) {
		return runCLI(t, "", append([]string{"--config", cfgPath, "agents", "create"}, args...)...)
	}

	out, err := create("key-bot", "--owner", "a@example.com")
	if err != nil || !strings.Contains(out, "api key: stint_ak_") {
		t.Fatalf("create key-bot = %q, %v; want an API key", out, err)
	}

	out, err = create("cert-bot", "--owner", "a@example.com", "--auth-methods", "mtls")
	if err != nil {
		t.Fatalf("create cert-bot: %v\n%s", err, out)
	}
	if strings.Contains(out, "stint_ak_") || strings.Contains(out, "api key:") {
		t.Fatalf("an mtls-only agent was given an API key:\n%s", out)
	}
	for _, want := range []string{"auth:    mtls", "No API key", "stint agents enroll cert-bot --csr cert-bot.csr", "stint ca init"} {
		if !strings.Contains(out, want) {
			t.Errorf("create cert-bot output lacks %q:\n%s", want, out)
		}
	}

	if _, err := create("cert-bot", "--owner", "b@example.com"); err == nil || !strings.Contains(userMessage(err), "already exists") {
		t.Fatalf("duplicate name = %v, want refused as existing", err)
	}
}
