package checkpoint_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/checkpoint"
	"github.com/stint-broker/stint/broker/sqlite"
)

var (
	_ checkpoint.Sink = (*checkpoint.Log)(nil)
	_ checkpoint.Sink = (*checkpoint.Webhook)(nil)
)

// fixture is a real SQLite store with n events, a checkpoint key and a
// checkpoint file.
type fixture struct {
	DB      *sqlite.DB
	DBPath  string
	Key     ed25519.PrivateKey
	Pub     ed25519.PublicKey
	File    *checkpoint.File
	Emitter *checkpoint.Emitter
}

func newFixture(t *testing.T, n int) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{DBPath: filepath.Join(dir, "stint.db"), File: &checkpoint.File{Path: filepath.Join(dir, "checkpoints.jsonl")}}
	db, err := sqlite.Open(t.Context(), f.DBPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f.DB = db
	if f.Pub, err = checkpoint.GenerateKey(filepath.Join(dir, "checkpoint.key")); err != nil {
		t.Fatal(err)
	}
	if f.Key, err = checkpoint.LoadPrivateKey(filepath.Join(dir, "checkpoint.key")); err != nil {
		t.Fatal(err)
	}
	f.Emitter = checkpoint.NewEmitter(db, f.Key, f.File)
	f.record(t, n)
	return f
}

func (f *fixture) record(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		if err := f.DB.Record(t.Context(), broker.AuditEvent{Kind: "test.event", Actor: "admin:alice",
			Details: broker.AuditDetails(map[string]int{"n": i})}); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *fixture) emit(t *testing.T) *broker.AuditCheckpoint {
	t.Helper()
	cp, err := f.Emitter.Emit(t.Context())
	if err != nil || cp == nil {
		t.Fatalf("Emit = %v, %v; want a checkpoint", cp, err)
	}
	return cp
}

func (f *fixture) verify(t *testing.T) *broker.AuditVerification {
	t.Helper()
	v, err := broker.VerifyAudit(t.Context(), f.DB, broker.AuditVerifyOptions{Checkpoints: f.File, CheckpointKey: f.Pub})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// attack deletes or edits rows the way an attacker with write access to the
// database file would: the append-only triggers dropped first.
func (f *fixture) attack(t *testing.T, stmts ...string) {
	t.Helper()
	raw, err := sql.Open("sqlite", "file:"+f.DBPath+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, q := range append([]string{`DROP TRIGGER IF EXISTS audit_events_no_update`, `DROP TRIGGER IF EXISTS audit_events_no_delete`}, stmts...) {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func wantBreak(t *testing.T, v *broker.AuditVerification, kind broker.AuditBreak, at int64, reason string) {
	t.Helper()
	if v.OK || v.Break != kind || v.BrokenAt != at || !strings.Contains(v.Reason, reason) {
		t.Fatalf("verification = ok %t, %s at %d: %q; want %s at %d containing %q", v.OK, v.Break, v.BrokenAt, v.Reason, kind, at, reason)
	}
}

// TestTruncation deletes the newest events of a real SQLite chain: the
// chain alone still verifies, the checkpoint does not let it.
func TestTruncation(t *testing.T) {
	f := newFixture(t, 10)
	cp := f.emit(t)
	if cp.Seq != 10 || cp.Verify(f.Pub) != nil {
		t.Fatalf("checkpoint = %+v; want seq 10, signed", cp)
	}
	v := f.verify(t)
	if !v.OK || v.Checked != 10 || v.CheckpointsMatched != 1 || v.Checkpoint == nil || v.Checkpoint.Seq != 10 {
		t.Fatalf("before truncation = %+v; want ok with the checkpoint matched", v)
	}

	f.attack(t, `DELETE FROM audit_events WHERE seq > 7`)
	// The gap that checkpoints close: the shorter chain is a valid chain.
	if v, err := broker.VerifyAuditChain(t.Context(), f.DB, nil, nil); err != nil || !v.OK || v.Checked != 7 {
		t.Fatalf("chain alone after truncation = %+v, %v; want ok with 7 (why checkpoints exist)", v, err)
	}
	wantBreak(t, f.verify(t), broker.AuditTruncated, 8, "ends at event 7: 3 event(s) were deleted from its end")

	// The job refuses to cover the deletion with a fresh checkpoint, also
	// after a restart (a new emitter resuming from the file).
	before, _ := os.ReadFile(f.File.Path)
	if _, err := f.Emitter.Emit(t.Context()); !errors.Is(err, checkpoint.ErrDiverged) {
		t.Fatalf("Emit after truncation = %v; want ErrDiverged", err)
	}
	restarted := checkpoint.NewEmitter(f.DB, f.Key, f.File)
	if err := restarted.Resume(t.Context(), f.File); err != nil || restarted.Last() == nil || restarted.Last().Seq != 10 {
		t.Fatalf("Resume = %v, last %+v; want the seq 10 checkpoint", err, restarted.Last())
	}
	f.record(t, 5) // the server goes on: events 8-12 with new hashes
	if _, err := restarted.Emit(t.Context()); !errors.Is(err, checkpoint.ErrDiverged) || !strings.Contains(err.Error(), "rewritten") {
		t.Fatalf("Emit after truncation and new events = %v; want ErrDiverged (rewritten)", err)
	}
	if after, _ := os.ReadFile(f.File.Path); !bytes.Equal(before, after) {
		t.Fatalf("the checkpoint file changed after the truncation:\n%s", after)
	}
	// Past the checkpoint's seq again, the chain holds another event 10.
	wantBreak(t, f.verify(t), broker.AuditCheckpointMismatch, 10, "rewritten")
}

// TestEmit checks when checkpoints are written and what verification
// holds the chain to as it grows.
func TestEmit(t *testing.T) {
	t.Run("EmptyChain", func(t *testing.T) {
		dir := t.TempDir()
		db, err := sqlite.Open(t.Context(), filepath.Join(dir, "stint.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		_, key, _ := ed25519.GenerateKey(nil)
		cp, err := checkpoint.NewEmitter(db, key, &checkpoint.File{Path: filepath.Join(dir, "cp.jsonl")}).Emit(t.Context())
		if cp != nil || err != nil {
			t.Fatalf("Emit on an empty chain = %+v, %v; want nothing", cp, err)
		}
	})
	t.Run("OnlyWhenTheHeadMoved", func(t *testing.T) {
		f := newFixture(t, 3)
		f.emit(t)
		if cp, err := f.Emitter.Emit(t.Context()); cp != nil || err != nil {
			t.Fatalf("Emit with an unchanged head = %+v, %v; want nothing", cp, err)
		}
		f.record(t, 2)
		if cp := f.emit(t); cp.Seq != 5 {
			t.Fatalf("second checkpoint seq = %d, want 5", cp.Seq)
		}
		list, err := f.File.AuditCheckpoints(t.Context())
		if err != nil || len(list) != 2 {
			t.Fatalf("file = %d checkpoints, %v; want 2", len(list), err)
		}
		f.record(t, 1) // events after the newest checkpoint are fine
		if v := f.verify(t); !v.OK || v.CheckpointsMatched != 2 || v.Checked != 6 {
			t.Fatalf("verify = %+v; want ok, 2 checkpoints matched, 6 events", v)
		}
		// Deleting below an older checkpoint but re-adding events past the
		// newest one still fails on the older checkpoint.
		f.attack(t, `DELETE FROM audit_events WHERE seq > 2`)
		f.record(t, 5)
		wantBreak(t, f.verify(t), broker.AuditCheckpointMismatch, 3, "rewritten")
	})
	t.Run("SinkErrorsJoined", func(t *testing.T) {
		f := newFixture(t, 1)
		f.Emitter.Sinks = append(f.Emitter.Sinks, &checkpoint.File{Path: filepath.Join(t.TempDir(), "no", "such", "dir", "cp.jsonl")})
		cp, err := f.Emitter.Emit(t.Context())
		if cp == nil || err == nil {
			t.Fatalf("Emit with a broken sink = %+v, %v; want the checkpoint and an error", cp, err)
		}
		if v := f.verify(t); !v.OK {
			t.Fatalf("the working sink got it: verify = %+v", v)
		}
	})
}

// TestCheckpointRefused alters the checkpoint file: a tampered signature, a
// tampered record, another key's checkpoint or a malformed line is refused.
func TestCheckpointRefused(t *testing.T) {
	edit := func(t *testing.T, f *fixture, fn func(lines []string) []string) {
		t.Helper()
		b, err := os.ReadFile(f.File.Path)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if err := os.WriteFile(f.File.Path, []byte(strings.Join(fn(lines), "\n")+"\n"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	setField := func(line, field string, value any) string {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			panic(err)
		}
		m[field] = value
		b, _ := json.Marshal(m)
		return string(b)
	}
	for _, tc := range []struct {
		name   string
		edit   func(f *fixture, lines []string) []string
		reason string
	}{
		{"TamperedSignature", func(f *fixture, lines []string) []string {
			var cp broker.AuditCheckpoint
			json.Unmarshal([]byte(lines[1]), &cp)
			sig := []byte(cp.Sig)
			sig[5] ^= 1
			lines[1] = setField(lines[1], "sig", string(sig))
			return lines
		}, "the newest checkpoint (seq 8) is refused: its signature does not verify"},
		{"LoweredSeq", func(f *fixture, lines []string) []string {
			// An attacker who deleted events 6-8 lowers the newest
			// checkpoint to match: its signature no longer holds.
			lines[1] = setField(lines[1], "seq", 5)
			return lines
		}, "the newest checkpoint (seq 5) is refused: its signature does not verify"},
		{"OlderTampered", func(f *fixture, lines []string) []string {
			lines[0] = setField(lines[0], "hash", strings.Repeat("a", 64))
			return lines
		}, "checkpoint 1 of 2 (seq 5) is refused"},
		{"OtherKey", func(f *fixture, lines []string) []string {
			_, other, _ := ed25519.GenerateKey(nil)
			head, _ := f.DB.AuditHead(context.Background())
			b, _ := json.Marshal(broker.SignAuditCheckpoint(other, head, time.Now()))
			return append(lines, string(b))
		}, "names key ed25519:"},
		{"Malformed", func(f *fixture, lines []string) []string {
			return append(lines, `{"seq":8,"hash":"x"}`)
		}, "line 3: malformed audit checkpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 5)
			f.emit(t)
			f.record(t, 3)
			f.emit(t)
			if v := f.verify(t); !v.OK {
				t.Fatalf("before the edit = %+v", v)
			}
			edit(t, f, func(lines []string) []string { return tc.edit(f, lines) })
			v := f.verify(t)
			if v.OK || v.Break != broker.AuditCheckpointInvalid || !strings.Contains(v.Reason, tc.reason) {
				t.Fatalf("verification = ok %t, %s: %q; want checkpoint_invalid containing %q", v.OK, v.Break, v.Reason, tc.reason)
			}
		})
	}

	t.Run("KeyRotation", func(t *testing.T) {
		// Older checkpoints of a previous key are skipped, not refused.
		f := newFixture(t, 3)
		f.emit(t)
		_, newKey, _ := ed25519.GenerateKey(nil)
		f.Emitter = checkpoint.NewEmitter(f.DB, newKey, f.File)
		f.record(t, 1)
		f.emit(t)
		f.Pub = newKey.Public().(ed25519.PublicKey)
		if v := f.verify(t); !v.OK || v.CheckpointsSkipped != 1 || v.CheckpointsMatched != 1 {
			t.Fatalf("after a key rotation = %+v; want ok with 1 skipped and 1 matched", v)
		}
	})
}

// TestUnavailable: configured checkpoints that cannot be read give no
// verdict, which is not "OK".
func TestUnavailable(t *testing.T) {
	f := newFixture(t, 2)
	wantBreak(t, f.verify(t), broker.AuditCheckpointUnavailable, 0, "does not exist")
	if err := os.WriteFile(f.File.Path, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	wantBreak(t, f.verify(t), broker.AuditCheckpointUnavailable, 0, "no checkpoint has been recorded yet")
	f.emit(t)
	v, err := broker.VerifyAudit(t.Context(), f.DB, broker.AuditVerifyOptions{Checkpoints: f.File})
	if err != nil {
		t.Fatal(err)
	}
	wantBreak(t, v, broker.AuditCheckpointUnavailable, 0, "no Ed25519 public key")
	// A chain break is reported before any checkpoint trouble.
	f.attack(t, `UPDATE audit_events SET actor = 'mallory' WHERE seq = 1`)
	wantBreak(t, f.verify(t), broker.AuditHashMismatch, 1, "edited")
}

// TestFileTornWrite: an unfinished last line is ignored when reading, and
// the next write starts a new line, so the torn record stays visible.
func TestFileTornWrite(t *testing.T) {
	f := newFixture(t, 1)
	f.emit(t)
	fd, err := os.OpenFile(f.File.Path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fd.WriteString(`{"seq":2,"ha`)
	fd.Close()
	if list, err := f.File.AuditCheckpoints(t.Context()); err != nil || len(list) != 1 {
		t.Fatalf("read with an unfinished line = %d, %v; want the one checkpoint", len(list), err)
	}
	f.record(t, 1)
	f.emit(t)
	if _, err := f.File.AuditCheckpoints(t.Context()); !errors.Is(err, broker.ErrAuditCheckpointMalformed) || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("read after the next write = %v; want line 2 malformed", err)
	}
}

func TestKeys(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cp.key")
	pub, err := checkpoint.GenerateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]os.FileMode{path: 0o600, path + ".pub": 0o644} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s mode = %v, %v; want %o", p, fi.Mode().Perm(), err, mode)
		}
	}
	if _, err := checkpoint.GenerateKey(path); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Errorf("GenerateKey over an existing key = %v; want a refusal", err)
	}
	for _, p := range []string{path, path + ".pub"} {
		got, err := checkpoint.LoadPublicKey(p)
		if err != nil || !got.Equal(pub) {
			t.Errorf("LoadPublicKey(%s) = %v; want the generated key", p, err)
		}
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.LoadPrivateKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("LoadPrivateKey of a 0644 key = %v; want a refusal", err)
	}
	if _, err := checkpoint.LoadPrivateKey(path + ".pub"); err == nil {
		t.Errorf("LoadPrivateKey of a public key succeeded")
	}
}

// TestLogSink: the log stream carries checkpoints that verify once read
// back from the JSON log.
func TestLogSink(t *testing.T) {
	f := newFixture(t, 2)
	var logs bytes.Buffer
	f.Emitter.Sinks = []checkpoint.Sink{&checkpoint.Log{Logger: slog.New(slog.NewJSONHandler(&logs, nil))}}
	want := f.emit(t)
	var rec struct {
		Msg        string          `json:"msg"`
		Checkpoint json.RawMessage `json:"checkpoint"`
	}
	if err := json.Unmarshal(logs.Bytes(), &rec); err != nil || rec.Msg != "audit checkpoint" {
		t.Fatalf("log = %s, %v", logs.String(), err)
	}
	got, err := broker.ParseAuditCheckpoint(rec.Checkpoint)
	if err != nil || got.Verify(f.Pub) != nil || got.Seq != want.Seq || !got.At.Equal(want.At) {
		t.Fatalf("checkpoint from the log = %+v, %v; want %+v, verifying", got, err, want)
	}
}

func TestWebhookSink(t *testing.T) {
	f := newFixture(t, 2)
	var got []*broker.AuditCheckpoint
	status := http.StatusNoContent
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Authorization") != "Bearer s3cret" || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		cp, err := broker.ParseAuditCheckpoint(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got = append(got, cp)
		w.WriteHeader(status)
	}))
	defer srv.Close()
	f.Emitter.Sinks = []checkpoint.Sink{&checkpoint.Webhook{URL: srv.URL, Token: "s3cret"}}
	f.emit(t)
	if len(got) != 1 || got[0].Verify(f.Pub) != nil || got[0].Seq != 2 {
		t.Fatalf("webhook received %+v; want one verifying checkpoint of seq 2", got)
	}
	status = http.StatusInternalServerError
	f.record(t, 1)
	if _, err := f.Emitter.Emit(t.Context()); err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("Emit to a failing webhook = %v; want its status", err)
	}
}
