package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
)

// TestTypeScriptClient generates a TypeScript client from the OpenAPI
// document a running Stint serves (openapi-typescript, with openapi-fetch
// at run time), type-checks and compiles the example of
// testdata/typescript-client with tsc, and runs it with node: it requests
// a database lease and releases it, and the minted login is gone
// afterwards. The packages are the locked ones of testdata/typescript-client,
// installed with npm ci in a temporary directory; the generated client is
// never committed. Without node and npm, or without the npm registry, the
// test is skipped with a message, except under CI, where it fails.
func TestTypeScriptClient(t *testing.T) {
	node, npm := lookNode(t)
	dir, out, err := npmCI(t, npm, "typescript-client", "package.json", "package-lock.json", "tsconfig.json", "lease.ts")
	if err != nil {
		missingService(t, "npm ci of testdata/typescript-client failed (is the npm registry reachable?): %v\n%s", err, out)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	dv := vaulttest.Start(t)
	s := startStint(t, dv, e2eConfig(t, dv, filepath.Join(t.TempDir(), "stint.db")), nil)
	_, key := s.newAgent(t, "ts-bot")
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "STINT_ADDR="+s.url, "STINT_KEY="+key)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	bin := filepath.Join(dir, "node_modules", ".bin")
	run(filepath.Join(bin, "openapi-typescript"), s.url+"/openapi.json", "-o", "stint.d.ts")
	if gen, err := os.ReadFile(filepath.Join(dir, "stint.d.ts")); err != nil || !strings.Contains(string(gen), `"/v1/tasks/{task}/release"`) {
		t.Fatalf("the generated client lacks the API's paths: %v", err)
	}
	// tsc type-checks the example against the generated types: a field
	// the document lacks, or a wrong type, fails here.
	run(filepath.Join(bin, "tsc"), "-p", ".")
	result := run(node, filepath.Join("dist", "lease.js"))

	var got struct {
		ID, State, Username, Password, Released string
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(result)), &got); err != nil {
		t.Fatalf("node printed %q: %v", result, err)
	}
	if got.State != "active" || got.Released != "released" || !strings.HasPrefix(got.Username, "v-") || got.Password == "" {
		t.Fatalf("the TypeScript client saw state %q, released %q, username %q; want an active lease with a database login, then released", got.State, got.Released, got.Username)
	}
	l, err := s.DB.FindLeaseByID(context.Background(), got.ID)
	if err != nil || l.State != broker.LeaseReleased || l.Agent != "ts-bot" {
		t.Fatalf("the lease in the store: %+v, %v; want ts-bot's, released", l, err)
	}
	mustNotLogIn(t, map[string]any{"username": got.Username, "password": got.Password, "host": "127.0.0.1", "port": 5432, "database": "postgres"})
}
