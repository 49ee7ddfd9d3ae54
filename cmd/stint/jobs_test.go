package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases/vault"
)

// TestPruneNotices runs the hourly outbox job: a notice delivered longer
// ago than approval.notice_retention goes, a recent one and an undelivered
// one stay, and so does the lease's history.
func TestPruneNotices(t *testing.T) {
	cfg := DefaultConfig()
	if cfg.Approval.NoticeRetention != 30*24*time.Hour {
		t.Fatalf("default notice retention %s, want 720h", cfg.Approval.NoticeRetention)
	}
	cfg.Listen = "127.0.0.1:0"
	cfg.Store.Path = filepath.Join(t.TempDir(), "stint.db")
	cfg.Roles = vault.DevRoles()
	var logs syncBuffer
	m := NewMain(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	m.Issuer = &noopIssuer{}
	m.Getenv = func(string) string { return testAdminToken }
	if err := m.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	ctx := context.Background()
	a, _, _, err := m.Agents.CreateAgent(adminContext(ctx), broker.NewAgent{Name: "etl-bot", Owner: "o@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 3 {
		l := &broker.Lease{AgentID: a.ID, Agent: a.Name, Role: "db-readonly", Task: "report", TTL: broker.Duration(time.Hour),
			State: broker.LeasePending, PolicyDecision: &broker.Decision{Outcome: broker.OutcomeApprovals, Approvals: 1, ApproverGroup: "dba"}}
		if err := m.DB.CreateLease(ctx, l, "agent:etl-bot", "requested"); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, l.ID)
	}
	now := time.Now().UTC()
	due, err := m.DB.ClaimNotices(ctx, now, now.Add(time.Minute), 10)
	if err != nil || len(due) != 3 {
		t.Fatalf("claimed %d notices, %v; want 3", len(due), err)
	}
	sent := map[string]time.Time{ids[0]: now.Add(-31 * 24 * time.Hour), ids[1]: now.Add(-29 * 24 * time.Hour)}
	for _, n := range due {
		if at, ok := sent[n.LeaseID]; ok {
			if err := m.DB.CompleteNotice(ctx, n.ID, at); err != nil {
				t.Fatal(err)
			}
		}
	}

	m.pruneNotices(ctx)

	for i, want := range []int{0, 1, 1} {
		ns, err := m.DB.FindNotices(ctx, ids[i])
		if err != nil || len(ns) != want {
			t.Errorf("lease %d: %d notices, %v; want %d", i, len(ns), err, want)
		}
		if evs, err := m.DB.FindLeaseEvents(ctx, ids[i]); err != nil || len(evs) != 1 {
			t.Errorf("lease %d: %d events, %v; want its one event kept", i, len(evs), err)
		}
	}
	if !strings.Contains(logs.String(), "pruned delivered approval notices") || !strings.Contains(logs.String(), "deleted=1") {
		t.Errorf("the prune was not logged with its count:\n%s", logs.String())
	}
}
