package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/sqlite"
)

// TestApprovalsListEscapesControlCharacters: a task stored with escape
// sequences (before the API refused them, or by another path) cannot
// recolour or overwrite what `stint approvals list` shows an approver.
func TestApprovalsListEscapesControlCharacters(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "")
	dir := t.TempDir()
	dbPath, cfgPath := filepath.Join(dir, "stint.db"), filepath.Join(dir, "stint.yaml")
	cfg := `store: {path: ` + dbPath + `}
approvers:
  - {email: dana@example.com, name: Dana, groups: [security]}
roles:
  - {name: db-readonly, kind: database, sensitivity: medium, vault: {path: database/creds/ro, method: read}, default_ttl: 15m, max_ttl: 1h, connection: {host: 127.0.0.1, port: 5432, database: postgres}}
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
	l := &broker.Lease{ID: uuid.Must(uuid.NewV7()).String(), AgentID: agent.ID, Agent: agent.Name, Role: "db-readonly",
		Task:          "read\x1b[8m drop everything\x1b[0m\x1b[2K\rquarterly numbers\x00",
		Justification: "OPS-7 \u202eevil\u2069 \u009b31m\x7f",
		TTL:           broker.Duration(15 * time.Minute), State: broker.LeasePending, CreatedAt: now, UpdatedAt: now, DecideBy: &decideBy,
		PolicyDecision: &broker.Decision{Outcome: broker.OutcomeApprovals, Approvals: 1, ApproverGroup: "security"}}
	if err := db.CreateLease(context.Background(), l, "agent:report-bot", "needs approval"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	out, err := runCLI(t, "", "--config", cfgPath, "approvals", "list", "--as", "dana@example.com")
	if err != nil {
		t.Fatalf("approvals list: %v\n%s", err, out)
	}
	for _, bad := range []string{"\x1b", "\r", "\x00", "\x7f", "\u202e", "\u2069", "\u009b"} {
		if strings.Contains(out, bad) {
			t.Errorf("output holds %q raw:\n%q", bad, out)
		}
	}
	for _, want := range []string{`read\x1b[8m drop everything\x1b[0m\x1b[2K\x0dquarterly numbers\x00`, `OPS-7 \u202eevil\u2069 \u009b31m\u007f`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks the escaped text %s:\n%s", want, out)
		}
	}
}

func TestTerminalWriter(t *testing.T) {
	var b bytes.Buffer
	w := newTerminalWriter(&b)
	// A rune split across writes passes whole; one cut by an escape does not.
	in := "col\tumn é ✓ 🙂\n\x1b[31mred\u202e\n"
	for i := 0; i < len(in); i++ { // one byte at a time: every split
		if n, err := w.Write([]byte{in[i]}); n != 1 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if got, want := b.String(), "col\tumn é ✓ 🙂\n\\x1b[31mred\\u202e\n"; got != want {
		t.Fatalf("written %q, want %q", got, want)
	}
	b.Reset()
	w.Write([]byte("bad \xff\xfe utf8 \xc3"))
	w.Write([]byte("\xa9 ok"))
	if got, want := b.String(), `bad \xff\xfe utf8 é ok`; got != want {
		t.Fatalf("written %q, want %q", got, want)
	}
}
