package sqlite_test

import (
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/sqlite"
)

var (
	_ broker.AuditStore = (*sqlite.DB)(nil)
	_ broker.UserStore  = (*sqlite.DB)(nil)
)

// TestAuditTamper changes the database file directly, as an attacker with
// write access to it would (dropping the append-only triggers first), and
// checks that verification names the first broken link and why.
func TestAuditTamper(t *testing.T) {
	// seed writes 6 events and returns the file's path.
	seed := func(t *testing.T) (*sqlite.DB, string) {
		db, path := MustOpenDB(t)
		for i := range 6 {
			if err := db.Record(t.Context(), broker.AuditEvent{Kind: "test.seed", Actor: "admin:alice",
				Subject: fmt.Sprintf("lease-%d", i+1), Details: broker.AuditDetails(map[string]int{"n": i + 1})}); err != nil {
				t.Fatal(err)
			}
		}
		wantChain(t, db, true, 0, "")
		return db, path
	}
	// attack runs statements against the file with the triggers dropped.
	attack := func(t *testing.T, path string, stmts ...string) {
		t.Helper()
		raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		for _, q := range append([]string{
			`DROP TRIGGER audit_events_no_update`,
			`DROP TRIGGER audit_events_no_delete`,
		}, stmts...) {
			if _, err := raw.Exec(q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}

	t.Run("TriggersRefuse", func(t *testing.T) {
		_, path := seed(t)
		raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		for _, q := range []string{
			`UPDATE audit_events SET actor = 'mallory' WHERE seq = 3`,
			`DELETE FROM audit_events WHERE seq = 3`,
		} {
			if _, err := raw.Exec(q); err == nil || !strings.Contains(err.Error(), "append-only") {
				t.Errorf("%s = %v, want refused as append-only", q, err)
			}
		}
	})

	t.Run("Edited", func(t *testing.T) {
		db, path := seed(t)
		attack(t, path, `UPDATE audit_events SET actor = 'admin:mallory' WHERE seq = 3`)
		wantChain(t, db, false, 3, broker.AuditHashMismatch)
	})

	t.Run("EditedDetails", func(t *testing.T) {
		db, path := seed(t)
		attack(t, path, `UPDATE audit_events SET details = '{"n":99}' WHERE seq = 5`)
		wantChain(t, db, false, 5, broker.AuditHashMismatch)
	})

	t.Run("EditedAndRehashed", func(t *testing.T) {
		// The attacker fixes the edited event's own hash; the next event's
		// link still points at the old one.
		db, path := seed(t)
		e := mustAuditEvent(t, db, 2)
		e.Actor = "admin:mallory"
		attack(t, path, fmt.Sprintf(`UPDATE audit_events SET actor = 'admin:mallory', hash = '%s' WHERE seq = 2`, e.ComputeHash()))
		wantChain(t, db, false, 3, broker.AuditPrevMismatch)
	})

	t.Run("Deleted", func(t *testing.T) {
		db, path := seed(t)
		attack(t, path, `DELETE FROM audit_events WHERE seq = 4`)
		wantChain(t, db, false, 5, broker.AuditSeqGap)
	})

	t.Run("DeletedAndRenumbered", func(t *testing.T) {
		db, path := seed(t)
		attack(t, path, `DELETE FROM audit_events WHERE seq = 4`,
			`UPDATE audit_events SET seq = seq - 1 WHERE seq > 4`)
		wantChain(t, db, false, 4, broker.AuditPrevMismatch)
	})

	t.Run("Reordered", func(t *testing.T) {
		db, path := seed(t)
		attack(t, path,
			`UPDATE audit_events SET seq = -1 WHERE seq = 3`,
			`UPDATE audit_events SET seq = 3 WHERE seq = 4`,
			`UPDATE audit_events SET seq = 4 WHERE seq = -1`)
		wantChain(t, db, false, 3, broker.AuditPrevMismatch)
	})

	t.Run("LeaseHistoryEdited", func(t *testing.T) {
		// A lease's history is its events in the chain: editing one (the
		// file is edited behind the triggers' back) breaks the chain there.
		db, path := MustOpenDB(t)
		a := &broker.Agent{Name: "etl", Owner: "o@example.com", State: broker.AgentActive}
		if err := db.CreateAgent(t.Context(), a); err != nil {
			t.Fatal(err)
		}
		l := &broker.Lease{AgentID: a.ID, Agent: "etl", Role: "db", Task: "t", TTL: broker.Duration(time.Minute), State: broker.LeaseActive}
		if err := db.CreateLease(t.Context(), l, "agent:etl", "granted"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.UpdateLease(t.Context(), l.ID, broker.LeaseUpdate{From: []broker.LeaseState{broker.LeaseActive}, State: ptr(broker.LeaseRevoking), EndState: ptr(broker.LeaseRevoked), Actor: "admin:alice", Reason: "incident"}); err != nil {
			t.Fatal(err)
		}
		wantChain(t, db, true, 0, "")
		attack(t, path, `UPDATE audit_events SET details = replace(details, 'incident', 'routine') WHERE kind = 'lease.state'`)
		wantChain(t, db, false, 3, broker.AuditHashMismatch) // 1 agent.created, 2 lease.created
	})
}

func ptr[T any](v T) *T { return &v }

func mustAuditEvent(tb testing.TB, db *sqlite.DB, seq int64) *broker.AuditEvent {
	tb.Helper()
	var found *broker.AuditEvent
	err := db.ScanAuditEvents(tb.Context(), broker.AuditFilter{AfterSeq: seq - 1}, func(e *broker.AuditEvent) error {
		if found == nil {
			found = e
		}
		return nil
	})
	if err != nil || found == nil || found.Seq != seq {
		tb.Fatalf("event %d: %v, %v", seq, found, err)
	}
	return found
}

// wantChain verifies the chain and checks the outcome.
func wantChain(tb testing.TB, db *sqlite.DB, ok bool, brokenAt int64, why broker.AuditBreak) {
	tb.Helper()
	v, err := broker.VerifyAuditChain(tb.Context(), db, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if v.OK != ok || v.BrokenAt != brokenAt || v.Break != why {
		tb.Fatalf("verify = ok %t, broken at %d (%s: %s); want ok %t, broken at %d (%s)", v.OK, v.BrokenAt, v.Break, v.Reason, ok, brokenAt, why)
	}
	if !ok && v.Reason == "" {
		tb.Fatal("a broken chain without a reason")
	}
}

// TestLeaseCreatedDetails checks the hand-written canonical encoding of a
// lease's creation details against broker.AuditDetails of the same fields
// as a map, for leases with and without every optional field and with
// strings that JSON escapes.
func TestLeaseCreatedDetails(t *testing.T) {
	reference := func(e *broker.LeaseEvent, l *broker.Lease) string {
		d := map[string]any{
			"state": e.To, "reason": e.Reason, "agent": l.Agent, "agent_id": l.AgentID,
			"role": l.Role, "task": l.Task, "justification": l.Justification, "ttl": l.TTL.String(),
			"decision": l.Decision, "auth_method": l.AuthMethod, "source_ip": l.SourceIP, "risk_score": l.RiskScore,
		}
		if e.ID != 0 { // a legacy event, from lease_events
			d["event_id"] = e.ID
		}
		if l.OnBehalfOf != "" {
			d["on_behalf_of"] = l.OnBehalfOf
		}
		if l.PolicyDecision != nil {
			d["policy_decision"] = l.PolicyDecision
		}
		if l.Breakglass {
			d["breakglass"] = true
		}
		return string(broker.AuditDetails(d))
	}
	base := func() *broker.Lease {
		return &broker.Lease{
			ID: "0193a1f2-0000-7000-8000-000000000001", AgentID: "a-1", Agent: "etl-bot", Role: "db-readonly",
			Task: "nightly report", TTL: broker.Duration(15 * time.Minute), AuthMethod: broker.AuthAPIKey,
			SourceIP: "10.0.0.7", Decision: "auto-approved", RiskScore: 12,
		}
	}
	cases := map[string]func(l *broker.Lease){
		"minimal": func(l *broker.Lease) { l.AuthMethod, l.SourceIP, l.Decision, l.RiskScore = "", "", "", 0 },
		"plain":   func(*broker.Lease) {},
		"every field": func(l *broker.Lease) {
			l.OnBehalfOf, l.Breakglass, l.Justification = "ana@example.com", true, "INC-42"
			l.PolicyDecision = &broker.Decision{Outcome: broker.OutcomeApprovals, Approvals: 2, ApproverGroup: "dba",
				PolicyIDs: []string{"p1", "stint:privileged-approvals"}, Reasons: []string{"critical", "needs two"}}
		},
		"decision with empty lists": func(l *broker.Lease) {
			l.PolicyDecision = &broker.Decision{Outcome: broker.OutcomeApprove, PolicyIDs: []string{}}
		},
		"escapes": func(l *broker.Lease) {
			l.Task = "quote \" backslash \\ <script>&amp; tab\t newline\n \u2028 é 😀 \x00 invalid \xff"
			l.Justification = strings.Repeat("long ", 300)
			l.PolicyDecision = &broker.Decision{Outcome: broker.OutcomeDeny, Reasons: []string{`forbid "x" <y>`}}
		},
	}
	for name, change := range cases {
		t.Run(name, func(t *testing.T) {
			l := base()
			change(l)
			for _, id := range []int64{0, 981} {
				e := &broker.LeaseEvent{ID: id, LeaseID: l.ID, To: broker.LeaseIssuing, Reason: "policy <allowed> \"it\"", Actor: "agent:etl-bot"}
				got, want := string(sqlite.LeaseCreatedDetails(e, l)), reference(e, l)
				if got != want {
					t.Errorf("details (event id %d):\n got %s\nwant %s", id, got, want)
				}
			}
		})
	}
}
