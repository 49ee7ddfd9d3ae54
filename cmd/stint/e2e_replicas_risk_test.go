package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stint-broker/stint/broker/postgres/pgtest"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
)

// TestReplicasRiskBurst: an agent spreading a burst of requests over two
// replicas on one PostgreSQL store is scored on each replica for the whole
// burst (the request pattern is in the store), not for the half that
// replica served.
func TestReplicasRiskBurst(t *testing.T) {
	_, dsn := pgtest.NewSchema(t)
	dv := vaulttest.Start(t)
	cfg := e2eConfig(t, dv, "unused.db")
	cfg.Store = StoreConfig{Driver: driverPostgres, DSN: dsn}
	cfg.Risk.RevokeThreshold = 0 // score, never contain: the test reads the scores
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a := startStint(t, dv, cfg, nil)
	b := startStint(t, dv, cfg, nil)
	_, key := a.newAgent(t, "etl")
	var last map[string]any
	const requests = 12
	for i := range requests {
		s := a
		if i%2 == 1 {
			s = b
		}
		status, body := s.call(t, "POST", "/v1/leases", key, map[string]string{"role": "db-readonly", "ttl": "5m", "task": "burst", "justification": "test"})
		if status != http.StatusCreated && status != http.StatusAccepted && status != http.StatusForbidden {
			t.Fatalf("request %d = %d %v", i+1, status, body)
		}
		last = body
	}
	var burst map[string]any
	factors, _ := last["risk_factors"].([]any)
	for _, f := range factors {
		if m := f.(map[string]any); m["name"] == "burst" {
			burst = m
		}
	}
	t.Logf("request %d of %d, on replica b: risk %v %v", requests, requests, last["risk_score"], factors)
	if burst == nil || !strings.Contains(fmt.Sprint(burst["detail"]), fmt.Sprintf("%d requests", requests)) {
		t.Fatalf("burst factor of the last request = %v, want all %d requests over both replicas counted", burst, requests)
	}
}
