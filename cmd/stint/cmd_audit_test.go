package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stint-broker/stint/broker"
)

// runCLI runs the stint command line with stdin and returns its output.
func runCLI(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := newRootCommand(&out, &out)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func TestAuditAndUsersCommands(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "stint.db")
	cfgPath := filepath.Join(dir, "stint.yaml")
	if err := os.WriteFile(cfgPath, []byte("store:\n  path: "+dbPath+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := func(args ...string) []string { return append([]string{"--config", cfgPath}, args...) }

	out, err := runCLI(t, "a-long-enough-password\n", c("users", "add", "alice", "--role", "admin", "--password-stdin")...)
	if err != nil || !strings.Contains(out, "user alice (admin) added") {
		t.Fatalf("users add = %q, %v", out, err)
	}
	if _, err := runCLI(t, "short\n", c("users", "add", "bob", "--role", "reviewer", "--password-stdin")...); broker.ErrorField(err) != "password" {
		t.Fatalf("short password = %v, want EINVALID password", err)
	}
	if _, err := runCLI(t, "a-long-enough-password\n", c("users", "add", "otto", "--role", "approver", "--password-stdin")...); broker.ErrorField(err) != "email" {
		t.Fatalf("approver without email = %v, want EINVALID email", err)
	}
	if _, err := runCLI(t, "a-long-enough-password\n", c("users", "add", "carl", "--role", "root", "--password-stdin")...); broker.ErrorField(err) != "role" {
		t.Fatalf("bad role = %v, want EINVALID role", err)
	}
	if out, err := runCLI(t, "", c("users", "disable", "alice")...); err != nil || !strings.Contains(out, "disabled") {
		t.Fatalf("users disable = %q, %v", out, err)
	}
	out, err = runCLI(t, "", c("users", "list")...)
	if err != nil || !strings.Contains(out, "alice") || !strings.Contains(out, "disabled") || strings.Contains(out, "a-long-enough") {
		t.Fatalf("users list = %q, %v", out, err)
	}

	out, err = runCLI(t, "", c("audit", "verify")...)
	if err != nil || !strings.Contains(out, "audit chain OK: 2 events verified") || !strings.Contains(out, "--anchor 2:") {
		t.Fatalf("audit verify = %q, %v", out, err)
	}
	anchor := out[strings.Index(out, "--anchor ")+len("--anchor "):]
	anchor = strings.TrimSpace(anchor)
	out, err = runCLI(t, "", c("audit", "verify", "--anchor", anchor)...)
	if err != nil || !strings.Contains(out, "audit chain OK: 2 events verified") || !strings.Contains(out, "anchors: 1 matched") {
		t.Fatalf("audit verify --anchor = %q, %v", out, err)
	}

	exportPath := filepath.Join(dir, "audit.jsonl")
	if out, err := runCLI(t, "", c("audit", "export", "--format", "jsonl", "--out", exportPath, "--since", "24h")...); err != nil {
		t.Fatalf("audit export = %q, %v", out, err)
	}
	f, err := os.Open(exportPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The exported events verify on their own: each line's hash covers it.
	var prev *broker.AuditEvent
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		var e broker.AuditEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		if e.ComputeHash() != e.Hash || (prev != nil && e.PrevHash != prev.Hash) {
			t.Fatalf("exported event %d does not verify", e.Seq)
		}
		prev, n = &e, n+1
	}
	if n != 2 {
		t.Fatalf("exported %d events, want 2", n)
	}
	out, err = runCLI(t, "", c("audit", "export", "--format", "csv")...)
	if err != nil || !strings.HasPrefix(out, "seq,at,kind,actor,subject,details,prev_hash,hash\n") || !strings.Contains(out, "user.created") {
		t.Fatalf("csv export = %q, %v", out, err)
	}
	if _, err := runCLI(t, "", c("audit", "export", "--format", "xml")...); broker.ErrorField(err) != "format" {
		t.Fatalf("bad format = %v", err)
	}
	if _, err := runCLI(t, "", c("audit", "export", "--since", "yesterday")...); broker.ErrorField(err) != "since" {
		t.Fatalf("bad since = %v", err)
	}

	// Edit the file directly: verify names the event and exits non-zero.
	raw, err := sql.Open("sqlite", "file:"+dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`DROP TRIGGER audit_events_no_update`, `UPDATE audit_events SET actor = 'mallory' WHERE seq = 1`} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	out, err = runCLI(t, "", c("audit", "verify", "--anchor", anchor)...)
	if err == nil || !strings.Contains(out, "BROKEN at event 1 (hash_mismatch)") || exitCode(err) != 1 {
		t.Fatalf("verify of an edited chain = %q, %v (exit %d), want exit 1", out, err, exitCode(err))
	}
	// No verdict exits 2, not 1: a scheduled check tells trouble from tampering.
	if _, err := runCLI(t, "", c("audit", "verify", "--anchor", "x:y")...); broker.ErrorField(err) != "anchor" || exitCode(err) != 2 {
		t.Fatalf("bad anchor = %v (exit %d), want EINVALID anchor, exit 2", err, exitCode(err))
	}
	if _, err := runCLI(t, "", "--config", filepath.Join(dir, "none.yaml"), "audit", "verify"); err == nil || !strings.Contains(err.Error(), "-c FILE or STINT_CONFIG") {
		t.Errorf("verify with no configuration = %v, want a hint to name one", err)
	}
	for name, args := range map[string][]string{
		"missing config": {"--config", filepath.Join(dir, "none.yaml"), "audit", "verify"},
		"unknown flag":   c("audit", "verify", "--anchr", "1:x"),
		"extra argument": c("audit", "verify", "now"),
	} {
		if _, err := runCLI(t, "", args...); err == nil || exitCode(err) != 2 {
			t.Errorf("%s: verify = %v (exit %d), want exit 2", name, err, exitCode(err))
		}
	}
}
