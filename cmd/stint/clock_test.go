package main

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
)

// TestOneClock: the clock set on Main before Open is every service's
// clock. An agent registered and a lease requested at that instant carry
// it, whatever the machine's time, and every service reads the same time.
func TestOneClock(t *testing.T) {
	cfg, err := ReadConfig(policyConfigFor(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2031, 5, 14, 8, 30, 0, 0, time.UTC) // a Wednesday, 10:30 in Berlin
	m := NewMain(cfg, slog.New(slog.DiscardHandler))
	m.Issuer = &policyTestIssuer{}
	m.Now = func() time.Time { return at }
	if err := m.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	for name, now := range map[string]func() time.Time{
		"agents": m.Agents.Now, "leases": m.Leases.Now, "http": m.HTTP.Now, "users": m.Users.Now,
		"policy": m.Policy.Now, "approvals": m.Approvals.Now, "risk": m.Risk.Now, "reviews": m.Reviews.Now,
	} {
		if got := now(); !got.Equal(at) {
			t.Errorf("%s reads %s, want Main's clock %s", name, got, at)
		}
	}

	a, _, key, err := m.Agents.CreateAgent(adminContext(context.Background()), broker.NewAgent{Name: "etl-bot", Owner: "alice@example.com", Labels: map[string]string{"team": "data"}})
	if err != nil {
		t.Fatal(err)
	}
	if !a.CreatedAt.Equal(at) || key == nil || !key.ExpiresAt.Equal(at.Add(cfg.Keys.DefaultTTL)) {
		t.Fatalf("agent created %s, key expires %v; want %s and %s later", a.CreatedAt, key, at, cfg.Keys.DefaultTTL)
	}
	ctx := broker.NewContextWithActor(context.Background(), broker.Actor{Kind: broker.ActorAgent, Name: a.Name, AgentID: a.ID, AuthMethod: broker.AuthAPIKey})
	l, _, err := m.Leases.RequestLease(ctx, broker.LeaseRequest{Role: "db-readonly", Task: "report"})
	if l == nil {
		t.Fatalf("request = %v; want a lease on record", err)
	}
	if !l.CreatedAt.Equal(at) {
		t.Fatalf("lease created %s, want %s", l.CreatedAt, at)
	}
}
