package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/postgres"
	"github.com/stint-broker/stint/broker/postgres/pgtest"
	"github.com/stint-broker/stint/broker/sqlite"
)

// seedSQLite fills a SQLite store with one of everything whose copy could
// go wrong: leases with an approval flow (outbox rows, an approval),
// reviews with boolean columns, a user, records of the audit chain.
func seedSQLite(t *testing.T, path string) (lease *broker.Lease) {
	t.Helper()
	ctx := adminContext(t.Context())
	db, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a := &broker.Agent{Name: "etl", Owner: "owner@example.com", State: broker.AgentActive, Labels: map[string]string{"team": "data"}}
	if err := db.CreateAgent(ctx, a); err != nil {
		t.Fatal(err)
	}
	l := &broker.Lease{AgentID: a.ID, Agent: a.Name, Role: "db-readonly", Task: "report", TTL: broker.Duration(time.Hour),
		State: broker.LeasePending, Breakglass: true,
		PolicyDecision: &broker.Decision{Outcome: broker.OutcomeApprovals, Approvals: 1, ApproverGroup: "owners"}}
	if err := db.CreateLease(ctx, l, "agent:etl", "requested"); err != nil {
		t.Fatal(err)
	}
	approved := broker.LeaseApproved
	if l, err = db.RecordApproval(ctx, &broker.Approval{LeaseID: l.ID, Approver: "boss@example.com", Verdict: broker.VerdictApprove, Digest: "d", Via: "cli"},
		l.UpdatedAt, 0, broker.LeaseUpdate{State: &approved, Actor: "approver:boss@example.com", Reason: "approved"}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	r := &broker.Review{Kind: broker.ReviewAccess, AgentID: a.ID, Agent: a.Name, Owner: a.Owner, Inactive: true, DueAt: now.Add(24 * time.Hour),
		Items: []*broker.ReviewItem{{Role: "db-readonly", NeverUsed: true}}}
	if err := db.CreateReview(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateUser(ctx, &broker.User{Name: "alice", Role: broker.RoleAdmin, State: broker.UserActive, PasswordHash: "$2a$10$x"}); err != nil {
		t.Fatal(err)
	}
	if err := db.Record(ctx, broker.AuditEvent{Kind: "config.loaded", Actor: "system:test", Details: broker.AuditDetails(map[string]any{"roles": 1})}); err != nil {
		t.Fatal(err)
	}
	return l
}

// TestMigrateCopy copies a SQLite store into PostgreSQL with stint migrate
// copy and checks that everything arrived: the chain verifies and ends
// where the source's did, history, approvals, outbox and reviews read back
// equal, and the copy takes new writes on the same chain.
func TestMigrateCopy(t *testing.T) {
	_, dsn := pgtest.NewSchema(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "stint.db")
	lease := seedSQLite(t, src)

	out, err := runCLI(t, "", "migrate", "copy", "--from", src, "--to", dsn)
	if err != nil {
		t.Fatalf("migrate copy: %v\n%s", err, out)
	}
	for _, want := range []string{"audit_events", "approval_notices", "audit chain verified", "same as the source"} {
		if !strings.Contains(out, want) {
			t.Fatalf("migrate copy output lacks %q:\n%s", want, out)
		}
	}

	ctx := adminContext(t.Context())
	s, err := sqlite.Open(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	same := func(what string, got, want any) {
		t.Helper()
		if g, w := mustJSON(t, got), mustJSON(t, want); g != w {
			t.Fatalf("%s differs after the copy\ngot:  %s\nwant: %s", what, g, w)
		}
	}
	for _, pair := range []struct {
		name string
		read func(Store) (any, error)
	}{
		{"lease", func(db Store) (any, error) { return db.FindLeaseByID(ctx, lease.ID) }},
		{"lease events", func(db Store) (any, error) { return db.FindLeaseEvents(ctx, lease.ID) }},
		{"approvals", func(db Store) (any, error) { return db.FindApprovals(ctx, lease.ID) }},
		{"notices", func(db Store) (any, error) { return db.FindNotices(ctx, lease.ID) }},
		{"reviews", func(db Store) (any, error) {
			rs, _, err := db.FindReviews(ctx, broker.ReviewFilter{})
			return rs, err
		}},
		{"users", func(db Store) (any, error) { return db.FindUsers(ctx) }},
		{"audit head", func(db Store) (any, error) { return db.AuditHead(ctx) }},
	} {
		want, err := pair.read(s)
		if err != nil {
			t.Fatalf("%s from SQLite: %v", pair.name, err)
		}
		got, err := pair.read(p)
		if err != nil {
			t.Fatalf("%s from PostgreSQL: %v", pair.name, err)
		}
		same(pair.name, got, want)
	}

	// The copy goes on: a new approval gets a fresh id, the chain grows
	// from the copied head and verifies.
	l2 := &broker.Lease{AgentID: lease.AgentID, Agent: lease.Agent, Role: "db-readonly", TTL: broker.Duration(time.Hour), State: broker.LeasePending,
		PolicyDecision: &broker.Decision{Outcome: broker.OutcomeApprovals, Approvals: 1}}
	if err := p.CreateLease(ctx, l2, "agent:etl", "requested"); err != nil {
		t.Fatal(err)
	}
	a2 := &broker.Approval{LeaseID: l2.ID, Approver: "boss@example.com", Verdict: broker.VerdictApprove, Digest: "d", Via: "cli"}
	approved := broker.LeaseApproved
	if _, err := p.RecordApproval(ctx, a2, l2.UpdatedAt, 0, broker.LeaseUpdate{State: &approved, Actor: "approver:boss@example.com"}); err != nil {
		t.Fatal(err)
	}
	first, _ := s.FindApprovals(ctx, lease.ID)
	if a2.ID <= first[0].ID {
		t.Fatalf("new approval id %d, not after the copied %d", a2.ID, first[0].ID)
	}
	v, err := broker.VerifyAudit(ctx, p, broker.AuditVerifyOptions{})
	if err != nil || !v.OK {
		t.Fatalf("chain after new writes: %+v, %v", v, err)
	}

	// A second copy into the same database is refused, and changes nothing.
	if out, err := runCLI(t, "", "migrate", "copy", "--from", src, "--to", dsn); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("second copy = %v\n%s", err, out)
	}
}

// TestMigrateCommands runs status, up and down against a PostgreSQL store
// named by the configuration (DSN from the environment) and a SQLite one.
func TestMigrateCommands(t *testing.T) {
	_, dsn := pgtest.NewSchema(t)
	dir := t.TempDir()
	pgCfg := filepath.Join(dir, "pg.yaml")
	t.Setenv("STINT_TEST_STORE_DSN", dsn)
	if err := os.WriteFile(pgCfg, []byte("store:\n  driver: postgres\n  dsn_env: STINT_TEST_STORE_DSN\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	liteCfg := filepath.Join(dir, "lite.yaml")
	if err := os.WriteFile(liteCfg, []byte("store:\n  path: "+filepath.Join(dir, "stint.db")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	known, _ := postgres.KnownVersion()

	out, err := runCLI(t, "", "-c", pgCfg, "migrate", "status")
	if err != nil || !strings.Contains(out, "schema version 0") || !strings.Contains(out, "0001_init.sql") || !strings.Contains(out, "pending") {
		t.Fatalf("status before up = %v\n%s", err, out)
	}
	out, err = runCLI(t, "", "-c", pgCfg, "migrate", "up")
	if err != nil || !strings.Contains(out, "applied migrations [1") {
		t.Fatalf("up = %v\n%s", err, out)
	}
	out, err = runCLI(t, "", "-c", pgCfg, "migrate", "up")
	if err != nil || !strings.Contains(out, "nothing to apply") {
		t.Fatalf("second up = %v\n%s", err, out)
	}
	out, err = runCLI(t, "", "-c", pgCfg, "migrate", "status")
	if err != nil || !strings.Contains(out, "0 pending") || !strings.Contains(out, "PostgreSQL (DSN from $STINT_TEST_STORE_DSN), schema version "+strconv.FormatInt(known, 10)) {
		t.Fatalf("status after up = %v\n%s", err, out)
	}

	out, err = runCLI(t, "", "-c", liteCfg, "migrate", "up")
	if err != nil || !strings.Contains(out, "applied migrations [1") {
		t.Fatalf("sqlite up = %v\n%s", err, out)
	}
	out, err = runCLI(t, "", "-c", liteCfg, "migrate", "status")
	if err != nil || !strings.Contains(out, "0 pending") || !strings.Contains(out, "0015_subject_token_uses.sql") {
		t.Fatalf("sqlite status = %v\n%s", err, out)
	}

	if _, err := runCLI(t, "", "-c", pgCfg, "migrate", "down"); err == nil || !strings.Contains(err.Error(), "needs --yes") {
		t.Fatalf("down without --yes = %v", err)
	}
	if _, err := runCLI(t, "", "-c", pgCfg, "migrate", "down", "--yes"); err == nil || !strings.Contains(err.Error(), "forward-only") {
		t.Fatalf("down --yes = %v", err)
	}

	t.Setenv("STINT_TEST_STORE_DSN", "")
	if _, err := runCLI(t, "", "-c", pgCfg, "migrate", "status"); err == nil || !strings.Contains(err.Error(), "STINT_TEST_STORE_DSN (store.dsn_env) is empty") {
		t.Fatalf("status with the variable unset = %v", err)
	}
}

// TestConfigStorePostgres checks the store section's rules.
func TestConfigStorePostgres(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"store:\n  driver: postgres\n", "needs store.dsn or store.dsn_env"},
		{"store:\n  driver: postgres\n  dsn: postgres://x/y\n  dsn_env: X\n", "exclusive"},
		{"store:\n  driver: mysql\n", "sqlite or postgres"},
		{"store:\n  path: s.db\n  dsn: postgres://x/y\n", "for driver postgres"},
		{"store:\n  driver: postgres\n  dsn_env: STINT_DSN\n", ""},
	} {
		_, err := ParseConfig("stint.yaml", []byte(tc.yaml))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.yaml, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: err = %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
