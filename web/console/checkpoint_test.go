package console_test

import (
	"database/sql"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stint-broker/stint/broker/checkpoint"
	"github.com/stint-broker/stint/web"
)

// TestConsoleAuditCheckpoint: with signed checkpoints configured, the
// console's verify fails a chain whose newest events were deleted, which
// the chain alone would call intact.
func TestConsoleAuditCheckpoint(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "checkpoint.key")
	pub, err := checkpoint.GenerateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	key, err := checkpoint.LoadPrivateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	file := &checkpoint.File{Path: filepath.Join(dir, "checkpoints.jsonl")}
	f := newConsoleFixture(t, func(s *web.Server) {
		s.Console.Checkpoints, s.Console.CheckpointKey = file, pub
	})
	head, err := f.DB.AuditHead(t.Context())
	if err != nil || head == nil || head.Seq < 3 {
		t.Fatalf("fixture head = %+v, %v; want at least 3 events", head, err)
	}
	if _, err := checkpoint.NewEmitter(f.DB, key, file).Emit(t.Context()); err != nil {
		t.Fatal(err)
	}

	b := f.browser(t)
	b.login("rita")
	verify := func() string {
		t.Helper()
		if resp, body := b.post("/console/audit/verify", url.Values{}, true); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("verify = %d\n%s", resp.StatusCode, body)
		}
		_, body := b.get("/console/audit")
		return body
	}
	body := verify()
	if !strings.Contains(body, "Intact:") || !strings.Contains(body, "Newest signed checkpoint: seq <span class=\"mono\">") {
		t.Fatalf("audit page before truncation lacks the intact status and checkpoint:\n%s", body)
	}

	// Delete the checkpointed event, the one before it and everything
	// after (the login's events), as an attacker with the file would.
	raw, err := sql.Open("sqlite", "file:"+f.Path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`DROP TRIGGER audit_events_no_delete`, fmt.Sprintf(`DELETE FROM audit_events WHERE seq >= %d`, head.Seq-1)} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()

	// The verify request itself records nothing, so the chain now ends at
	// head.Seq-2.
	body = verify()
	want := fmt.Sprintf(`id="chain-status">BROKEN at event %d (truncated): the checkpoint signed at`, head.Seq-1)
	if strings.Contains(body, "Intact:") || !strings.Contains(body, want) ||
		!strings.Contains(body, fmt.Sprintf("records event %d", head.Seq)) || !strings.Contains(body, fmt.Sprintf("the chain ends at event %d", head.Seq-2)) {
		t.Fatalf("audit page after truncation does not show it (want %q):\n%s", want, body)
	}
}
