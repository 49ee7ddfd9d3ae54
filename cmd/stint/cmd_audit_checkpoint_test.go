package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/sqlite"
	"github.com/stint-broker/stint/leases/vault"
)

// runServer runs a Main for cfg until stop is called, as `stint serve`
// does, with a no-op Vault issuer, and returns its logs.
func runServer(t *testing.T, cfg Config) (m *Main, logs *syncBuffer, stop func()) {
	t.Helper()
	logs = &syncBuffer{}
	m = NewMain(cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	m.Issuer = &noopIssuer{}
	m.Getenv = func(string) string { return testAdminToken }
	if err := m.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := m.Run(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-done
		if err := m.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}
	t.Cleanup(stop)
	return m, logs, stop
}

// checkpointLines returns the checkpoint file's lines.
func checkpointLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// TestAuditCheckpoints runs the server with audit.checkpoints set: it signs
// the head at start and at shutdown; `stint audit verify` checks the
// newest checkpoint automatically, fails (exit 1) once the newest events
// are deleted, refuses a tampered checkpoint, and a restarted server
// refuses to checkpoint the truncated chain.
func TestAuditCheckpoints(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "keys", "audit-checkpoint.key")
	if err := os.Mkdir(filepath.Dir(keyPath), 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "", "audit", "keygen", "--out", keyPath)
	if err != nil || !strings.Contains(out, "key id: ed25519:") {
		t.Fatalf("audit keygen = %q, %v", out, err)
	}
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if _, err := runCLI(t, "", "audit", "keygen", "--out", keyPath); err == nil {
		t.Fatal("keygen over an existing key succeeded")
	}

	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Store.Path = filepath.Join(dir, "stint.db")
	cfg.Roles = vault.DevRoles()
	cfg.Audit.Checkpoints.KeyFile = keyPath
	cfg.Audit.Checkpoints.File = filepath.Join(dir, "sink", "checkpoints.jsonl")
	cfg.Audit.Checkpoints.Schedule = "@every 1h"
	if err := os.Mkdir(filepath.Dir(cfg.Audit.Checkpoints.File), 0o755); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "stint.yaml")
	b, err := yaml.Marshal(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	verify := func(args ...string) (string, int) {
		t.Helper()
		out, err := runCLI(t, "", append([]string{"--config", cfgPath, "audit", "verify"}, args...)...)
		if err == nil {
			return out, 0
		}
		return out, exitCode(err)
	}

	// Start: the configuration is recorded and checkpointed at once.
	m, logs, stop := runServer(t, cfg)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(cfg.Audit.Checkpoints.File); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint file after start; logs:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx := adminContext(context.Background())
	for _, name := range []string{"etl-bot", "report-bot", "ops-bot"} {
		if _, _, _, err := m.Agents.CreateAgent(ctx, broker.NewAgent{Name: name, Owner: "o@example.com"}); err != nil {
			t.Fatal(err)
		}
	}
	stop() // shutdown signs the head again
	lines := checkpointLines(t, cfg.Audit.Checkpoints.File)
	head, err := func() (*broker.AuditEvent, error) {
		db, err := sqlite.Open(context.Background(), cfg.Store.Path)
		if err != nil {
			return nil, err
		}
		defer db.Close()
		return db.AuditHead(context.Background())
	}()
	if err != nil {
		t.Fatal(err)
	}
	var newest broker.AuditCheckpoint
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &newest); err != nil || len(lines) != 2 || newest.Seq != head.Seq {
		t.Fatalf("checkpoints = %d lines, newest %+v (%v); want 2, the newest at the head %d", len(lines), newest, err, head.Seq)
	}
	if !regexp.MustCompile(`"msg":"audit checkpoint",("replica":"[^"]+",)?"checkpoint":\{"seq":`).MatchString(logs.String()) {
		t.Errorf("the checkpoints are not in the log stream:\n%s", logs.String())
	}

	out, code := verify()
	if code != 0 || !strings.Contains(out, "audit chain OK") || !strings.Contains(out, "checkpoint: newest seq "+itoa(head.Seq)) {
		t.Fatalf("verify before truncation = exit %d\n%s", code, out)
	}

	// A tampered signature is refused (exit 1), checked on a copy of the file.
	tampered := filepath.Join(dir, "tampered.jsonl")
	var cp map[string]any
	json.Unmarshal([]byte(lines[1]), &cp)
	cp["seq"] = head.Seq - 3 // claim a shorter chain
	b, _ = json.Marshal(cp)
	if err := os.WriteFile(tampered, []byte(lines[0]+"\n"+string(b)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code = verify("--checkpoints", tampered)
	if code != 1 || !strings.Contains(out, "BROKEN (checkpoint_invalid)") || !strings.Contains(out, "its signature does not verify") {
		t.Fatalf("verify of a tampered checkpoint = exit %d\n%s", code, out)
	}
	// A key other than the signer's is refused too.
	otherKey := filepath.Join(dir, "other.key")
	if _, err := runCLI(t, "", "audit", "keygen", "--out", otherKey); err != nil {
		t.Fatal(err)
	}
	out, code = verify("--public-key", otherKey+".pub")
	if code != 1 || !strings.Contains(out, "names key ed25519:") {
		t.Fatalf("verify with another public key = exit %d\n%s", code, out)
	}
	// No checkpoints to read: no verdict (exit 2), never OK.
	out, code = verify("--checkpoints", filepath.Join(dir, "none.jsonl"))
	if code != 2 || !strings.Contains(out, "NOT VERIFIED (checkpoint_unavailable)") {
		t.Fatalf("verify without a checkpoint file = exit %d\n%s", code, out)
	}

	// Delete the newest 3 events with the triggers dropped.
	raw, err := sql.Open("sqlite", "file:"+cfg.Store.Path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`DROP TRIGGER audit_events_no_delete`, `DELETE FROM audit_events WHERE seq > ` + itoa(head.Seq-3)} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	out, code = verify()
	want := "audit chain BROKEN at event " + itoa(head.Seq-2) + " (truncated): the checkpoint signed at"
	if code != 1 || !strings.Contains(out, want) || !strings.Contains(out, "3 event(s) were deleted from its end") {
		t.Fatalf("verify after truncation = exit %d, want 1 and %q\n%s", code, want, out)
	}
	out, code = verify("--json")
	var v broker.AuditVerification
	if err := json.Unmarshal([]byte(out), &v); err != nil || code != 1 || v.Break != broker.AuditTruncated || v.Checkpoint == nil || v.Checkpoint.Seq != head.Seq {
		t.Fatalf("verify --json after truncation = exit %d, %+v, %v", code, v, err)
	}

	// A restarted server resumes from the file and refuses to checkpoint
	// the truncated chain, however many events follow.
	before, _ := os.ReadFile(cfg.Audit.Checkpoints.File)
	_, logs, stop = runServer(t, cfg)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "AUDIT CHAIN TRUNCATED OR REWRITTEN"); {
		if time.Now().After(deadline) {
			t.Fatalf("the restarted server did not report the truncation:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if after, _ := os.ReadFile(cfg.Audit.Checkpoints.File); string(after) != string(before) {
		t.Errorf("the restarted server wrote a checkpoint over the truncation:\n%s", after)
	}
	if out, code := verify(); code != 1 || !strings.Contains(out, "checkpoint_mismatch") && !strings.Contains(out, "truncated") {
		t.Errorf("verify after the restart = exit %d\n%s", code, out)
	}
}

// TestCheckpointConfig checks the audit.checkpoints settings.
func TestCheckpointConfig(t *testing.T) {
	for name, tc := range map[string]struct{ yaml, want string }{
		"FileWithoutKey": {"audit:\n  checkpoints:\n    file: cp.jsonl\n", "need key_file"},
		"KeyWithoutFile": {"audit:\n  checkpoints:\n    key_file: cp.key\n", "audit.checkpoints.file is required"},
		"BadSchedule":    {"audit:\n  checkpoints:\n    key_file: cp.key\n    file: cp.jsonl\n    schedule: often\n", "audit.checkpoints.schedule"},
		"PlainWebhook":   {"audit:\n  checkpoints:\n    key_file: cp.key\n    file: cp.jsonl\n    webhook:\n      url: http://example.com/hook\n", "must be an https URL"},
		"UnsetToken":     {"audit:\n  checkpoints:\n    key_file: cp.key\n    file: cp.jsonl\n    webhook:\n      url: https://example.com/hook\n      token_env: STINT_TEST_NO_SUCH_VAR\n", "STINT_TEST_NO_SUCH_VAR is not set"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseConfig("stint.yaml", []byte(tc.yaml)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseConfig = %v; want an error containing %q", err, tc.want)
			}
		})
	}
	cfg, err := ParseConfig("stint.yaml", []byte("audit:\n  checkpoints:\n    key_file: cp.key\n    file: cp.jsonl\n"))
	if err != nil || cfg.Audit.Checkpoints.Schedule != "@every 5m" || !cfg.Audit.Checkpoints.Log {
		t.Fatalf("defaults = %+v, %v; want @every 5m with the log sink", cfg.Audit.Checkpoints, err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestDevCheckpointKey: `stint dev` configures checkpoints and creates
// their key, owner-only, on first start, and keeps it afterwards.
func TestDevCheckpointKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, devConfigFile)
	if err := writeDevConfig(dir, "http://127.0.0.1:8250", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	cfg, err := ReadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	cc := cfg.Audit.Checkpoints
	if cc.KeyFile != filepath.Join(dir, devCheckpointKey) || cc.File == "" {
		t.Fatalf("dev checkpoints = %+v; want the key and file in the state directory", cc)
	}
	var out strings.Builder
	if err := ensureDevCheckpointKey(&out, cc.KeyFile); err != nil || !strings.Contains(out.String(), "created the audit checkpoint key") {
		t.Fatalf("ensureDevCheckpointKey = %q, %v", out.String(), err)
	}
	fi, err := os.Stat(cc.KeyFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("dev checkpoint key mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	before, _ := os.ReadFile(cc.KeyFile)
	if err := ensureDevCheckpointKey(&out, cc.KeyFile); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(cc.KeyFile); string(after) != string(before) {
		t.Fatal("a restart replaced the dev checkpoint key")
	}
	m := NewMain(cfg, slog.New(slog.DiscardHandler))
	m.Issuer = &noopIssuer{}
	if err := m.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Checkpoints == nil || m.HTTP.Console.Checkpoints == nil {
		t.Fatal("the dev server would not sign checkpoints or verify them in the console")
	}
}

// TestCheckpointKeyTrouble: the server refuses to start with a checkpoint
// key it cannot use, while operator commands (such as the kill switch) run
// without it.
func TestCheckpointKeyTrouble(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Store.Path = filepath.Join(dir, "stint.db")
	cfg.Audit.Checkpoints.KeyFile = filepath.Join(dir, "missing.key")
	cfg.Audit.Checkpoints.File = filepath.Join(dir, "cp.jsonl")
	open := func(operator bool) error {
		m := NewMain(cfg, slog.New(slog.DiscardHandler))
		m.Issuer, m.VaultOptional = &noopIssuer{}, operator
		defer m.Close()
		return m.Open(context.Background())
	}
	if err := open(false); err == nil || !strings.Contains(err.Error(), "audit.checkpoints.key_file") {
		t.Errorf("server with a missing key = %v; want a refusal naming audit.checkpoints.key_file", err)
	}
	if err := open(true); err != nil {
		t.Errorf("operator command with a missing key = %v; want it to run", err)
	}
	if _, err := runCLI(t, "", "audit", "keygen", "--out", cfg.Audit.Checkpoints.KeyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cfg.Audit.Checkpoints.KeyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := open(false); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("server with a world-readable key = %v; want a refusal", err)
	}
	if err := os.Chmod(cfg.Audit.Checkpoints.KeyFile, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := open(false); err != nil {
		t.Fatalf("server with a good key = %v", err)
	}
	// A .pub next to the key that is not its public half is refused.
	other := filepath.Join(dir, "other.key")
	if _, err := runCLI(t, "", "audit", "keygen", "--out", other); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other+".pub", cfg.Audit.Checkpoints.KeyFile+".pub"); err != nil {
		t.Fatal(err)
	}
	if err := open(false); err == nil || !strings.Contains(err.Error(), "is not the public half of key_file") {
		t.Errorf("server with a mismatched .pub = %v; want a refusal", err)
	}
}
