package main

import (
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// noOutputFlag are the runnable commands that show no data of their own,
// and why; every other command takes -o json.
var noOutputFlag = map[string]string{
	"stint serve":           "runs the server; it logs",
	"stint dev":             "runs the development server; it logs",
	"stint exec":            "runs a command whose output is the command's own",
	"stint mcp":             "speaks MCP on stdin and stdout",
	"stint audit export":    "exports events in the format --format names (jsonl or csv)",
	"stint policy schema":   "prints the Cedar schema, a document",
	"stint policy examples": "prints or writes policy files, documents",
	"stint migrate down":    "is always refused",
}

// TestEveryCommandTakesOutput walks the command tree: every runnable
// command but those in noOutputFlag must take -o/--output with table as the
// default, and noOutputFlag must name only commands that exist and lack it.
func TestEveryCommandTakesOutput(t *testing.T) {
	root := newRootCommand(io.Discard, io.Discard)
	seen := map[string]bool{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if !c.Runnable() || c.Hidden || c.Name() == "help" || c.Name() == "completion" || strings.HasPrefix(c.CommandPath(), "stint completion") {
			return
		}
		path := c.CommandPath()
		seen[path] = true
		f := c.Flags().Lookup("output")
		if _, exempt := noOutputFlag[path]; exempt {
			if f != nil {
				t.Errorf("%s takes -o but is listed in noOutputFlag: remove it from the list", path)
			}
			return
		}
		switch {
		case f == nil:
			t.Errorf("%s shows data but has no -o/--output flag: add addOutputFlag(cmd) and print through show(cmd, v, …), or list it in noOutputFlag with the reason", path)
		case f.Shorthand != "o" || f.DefValue != "table":
			t.Errorf("%s: --output has shorthand %q and default %q, want o and table (addOutputFlag)", path, f.Shorthand, f.DefValue)
		}
	}
	walk(root)
	for path := range noOutputFlag {
		if !seen[path] {
			t.Errorf("noOutputFlag names %s, which is not a command", path)
		}
	}
	if len(seen) < 50 {
		t.Fatalf("walked only %d commands", len(seen))
	}
}

// TestOutputJSON runs data-showing commands against a store with -o json
// and decodes what they print; the same commands print tables by default,
// and an unknown format is refused (exit 2) before a command does anything.
func TestOutputJSON(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "")
	dir := t.TempDir()
	cfg := policyConfigFor(t, dir)
	run := func(args ...string) string {
		t.Helper()
		out, err := runCLI(t, "", append([]string{"--config", cfg}, args...)...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return out
	}
	decode := func(out string, v any) {
		t.Helper()
		dec := json.NewDecoder(strings.NewReader(out))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			t.Fatalf("decode %s: %v", out, err)
		}
	}

	var created struct {
		ID           string            `json:"id"`
		Name         string            `json:"name"`
		Owner        string            `json:"owner"`
		Labels       map[string]string `json:"labels"`
		State        string            `json:"state"`
		AuthMethods  []string          `json:"auth_methods"`
		CreatedAt    string            `json:"created_at"`
		UpdatedAt    string            `json:"updated_at"`
		APIKey       string            `json:"api_key"`
		KeyExpiresAt string            `json:"key_expires_at"`
	}
	decode(run("agents", "create", "etl-bot", "--owner", "alice@example.com", "--label", "team=data", "-o", "json"), &created)
	if created.Name != "etl-bot" || created.ID == "" || created.Labels["team"] != "data" || !strings.HasPrefix(created.APIKey, "stint_") || created.KeyExpiresAt == "" {
		t.Fatalf("agents create -o json = %+v", created)
	}

	var agents struct {
		Agents []struct {
			ID, Name, State string
		} `json:"agents"`
		Total int `json:"total"`
	}
	json.Unmarshal([]byte(run("agents", "list", "-o", "json")), &agents)
	if agents.Total != 1 || len(agents.Agents) != 1 || agents.Agents[0].ID != created.ID || agents.Agents[0].State != "active" {
		t.Fatalf("agents list -o json = %+v", agents)
	}
	if table := run("agents", "list"); !strings.HasPrefix(table, "NAME") || !strings.Contains(table, "etl-bot") {
		t.Fatalf("agents list prints %q, want its table by default", table)
	}
	var suspended struct{ Name, State string }
	json.Unmarshal([]byte(run("agents", "activate", "etl-bot", "--output", "json")), &suspended)
	if suspended.Name != "etl-bot" || suspended.State != "active" {
		t.Fatalf("agents activate -o json = %+v", suspended)
	}

	var users struct {
		Users []map[string]any `json:"users"`
	}
	if _, err := runCLI(t, "a-long-enough-password\n", "--config", cfg, "users", "add", "rita", "--role", "reviewer", "--password-stdin", "-o", "json"); err != nil {
		t.Fatal(err)
	}
	decode(run("users", "list", "-o", "json"), &users)
	if len(users.Users) != 1 || users.Users[0]["name"] != "rita" || users.Users[0]["role"] != "reviewer" {
		t.Fatalf("users list -o json = %+v", users)
	}
	for k := range users.Users[0] {
		if strings.Contains(strings.ToLower(k), "password") {
			t.Fatalf("users list -o json shows %s", k)
		}
	}

	var migrations struct {
		Store      string `json:"store"`
		Version    int64  `json:"version"`
		Migrations []struct {
			Version   int64  `json:"version"`
			Name      string `json:"name"`
			Applied   bool   `json:"applied"`
			AppliedAt string `json:"applied_at"`
		} `json:"migrations"`
		Pending int  `json:"pending"`
		Newer   bool `json:"newer"`
	}
	decode(run("migrate", "status", "-o", "json"), &migrations)
	if len(migrations.Migrations) == 0 || migrations.Pending != 0 || migrations.Version != migrations.Migrations[len(migrations.Migrations)-1].Version {
		t.Fatalf("migrate status -o json = %+v", migrations)
	}

	var policies struct {
		Policies []struct {
			ID, Effect string
		} `json:"policies"`
		TimeZone string `json:"time_zone"`
	}
	json.Unmarshal([]byte(run("policy", "validate", "-o", "json")), &policies)
	if len(policies.Policies) < 5 || policies.TimeZone != "Europe/Berlin" {
		t.Fatalf("policy validate -o json = %+v", policies)
	}

	var config struct {
		File  string `json:"file"`
		Valid bool   `json:"valid"`
		Roles []struct {
			Name        string `json:"name"`
			Kind        string `json:"kind"`
			Sensitivity string `json:"sensitivity"`
			MaxTTL      string `json:"max_ttl"`
			AutoApprove bool   `json:"auto_approve"`
			VaultPath   string `json:"vault_path"`
		} `json:"roles"`
	}
	decode(run("config", "validate", "-o", "json"), &config)
	if !config.Valid || len(config.Roles) != 2 || config.Roles[0].Name != "db-readonly" || config.Roles[0].VaultPath != "database/creds/ro" {
		t.Fatalf("config validate -o json = %+v", config)
	}

	var reviews struct {
		Reviews []map[string]any `json:"reviews"`
		Total   int              `json:"total"`
	}
	decode(run("reviews", "list", "-o", "json"), &reviews)
	if reviews.Reviews == nil || reviews.Total != 0 {
		t.Fatalf("reviews list -o json = %+v, want an empty list", reviews)
	}

	// A format nobody knows is refused before anything happens: no agent
	// is created.
	out, err := runCLI(t, "", "--config", cfg, "agents", "create", "ml-bot", "--owner", "bob@example.com", "-o", "yaml")
	if exitCode(err) != exitUsage || !strings.Contains(userMessage(err), "use table or json") {
		t.Fatalf("-o yaml = %q, %v (exit %d); want exit %d", out, err, exitCode(err), exitUsage)
	}
	json.Unmarshal([]byte(run("agents", "list", "-o", "json")), &agents)
	if agents.Total != 1 {
		t.Fatalf("agents after a refused -o yaml: %+v, want only etl-bot", agents)
	}
}
