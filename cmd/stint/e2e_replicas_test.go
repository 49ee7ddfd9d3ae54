package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/postgres/pgtest"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
)

// TestReplicasEndToEnd runs two Stint replicas on one PostgreSQL database
// with the real development Vault, and grants, releases, expires and
// revokes through both: what one replica does, the other sees at once; a
// credential ended through either no longer logs in; each expiry is handled
// once; and the audit chain both wrote verifies.
func TestReplicasEndToEnd(t *testing.T) {
	_, dsn := pgtest.NewSchema(t)
	dv := vaulttest.Start(t)
	cfg := e2eConfig(t, dv, "unused.db")
	cfg.Store = StoreConfig{Driver: driverPostgres, DSN: dsn}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a := startStint(t, dv, cfg, nil)
	b := startStint(t, dv, cfg, nil)
	ctx := context.Background()

	// An agent registered through one replica authenticates on the other.
	agentID, key := a.newAgent(t, "etl")
	id, cred := b.lease(t, key, "db-readonly", "10m")
	mustLogIn(t, cred).Close(ctx)
	if status, body := a.call(t, "GET", "/v1/leases/"+id, key, nil); status != http.StatusOK || body["state"] != "active" {
		t.Fatalf("lease granted by b, read through a = %d %v", status, body)
	}

	// Released through the other replica: ended at once, seen by both.
	if status, body := a.call(t, "DELETE", "/v1/leases/"+id, key, nil); status != http.StatusOK || body["state"] != "released" {
		t.Fatalf("release through a = %d %v", status, body)
	}
	mustNotLogIn(t, cred)
	if status, body := b.call(t, "GET", "/v1/leases/"+id, key, nil); status != http.StatusOK || body["state"] != "released" {
		t.Fatalf("released lease read through b = %d %v", status, body)
	}

	// Grants through both at once, then the kill switch through one.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var creds []map[string]any
	for i := range 6 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			_, c := s.lease(t, key, "db-readonly", "10m")
			mu.Lock()
			creds = append(creds, c)
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, c := range creds {
		mustLogIn(t, c).Close(ctx)
	}
	status, body := b.call(t, "POST", "/v1/agents/"+agentID+"/revoke-all", testAdminToken, map[string]string{"reason": "incident 7"})
	if progress, _ := body["progress"].(map[string]any); status != http.StatusOK || body["done"] != true || progress["ended"] != float64(6) {
		t.Fatalf("revoke-all through b = %d %v, want all 6 leases ended", status, body)
	}
	for _, c := range creds {
		mustNotLogIn(t, c)
	}

	// A short window expires once, whichever replica's loop takes it.
	_, key2 := b.newAgent(t, "etl-2")
	short, scred := a.lease(t, key2, "db-readonly", "15s")
	mustLogIn(t, scred).Close(ctx)
	b.waitState(t, short, broker.LeaseExpired, 40*time.Second)
	mustNotLogIn(t, scred)
	events, err := a.DB.FindLeaseEvents(ctx, short)
	if err != nil {
		t.Fatal(err)
	}
	var toRevoking, ended int
	for _, e := range events {
		if e.To == broker.LeaseRevoking {
			toRevoking++
		}
		if e.To == broker.LeaseExpired {
			ended++
		}
	}
	if toRevoking != 1 || ended != 1 {
		t.Fatalf("expired lease history: %d moves to revoking, %d ends; want 1 and 1: %v", toRevoking, ended, fmtEvents(events))
	}

	v, err := broker.VerifyAudit(ctx, b.DB, broker.AuditVerifyOptions{})
	if err != nil || !v.OK {
		t.Fatalf("audit chain after two replicas wrote it: %+v, %v", v, err)
	}
}

func fmtEvents(events []*broker.LeaseEvent) []string {
	var out []string
	for _, e := range events {
		out = append(out, fmt.Sprintf("%s->%s by %s (%s)", e.From, e.To, e.Actor, e.Reason))
	}
	return out
}
