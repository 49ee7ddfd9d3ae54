package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

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
