package main

import (
	"encoding/json"
	"net/http"
	"testing"
)

// authFailurePoints returns the auth_failures factor of a lease answer.
func authFailurePoints(t *testing.T, body string) int {
	t.Helper()
	var l struct {
		RiskFactors []struct {
			Name   string `json:"name"`
			Points int    `json:"points"`
		} `json:"risk_factors"`
	}
	if err := json.Unmarshal([]byte(body), &l); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	for _, f := range l.RiskFactors {
		if f.Name == "auth_failures" {
			return f.Points
		}
	}
	return 0
}

// TestAnonymousFailuresDoNotRaiseAgentRisk: failed authentications from an
// agent's address that do not name the agent (unknown keys, no credential,
// noise) leave its risk score alone; a failure that names it (its revoked
// key) counts.
func TestAnonymousFailuresDoNotRaiseAgentRisk(t *testing.T) {
	w := newMatrixWorld(t) // every request comes from httptest's 192.0.2.1
	for range 5 {
		w.api(t, "GET", "/v1/leases", "stint_ak_not-a-key-of-anyone-at-all-0123456789", "")
		w.api(t, "GET", "/v1/leases", "", "")
		w.api(t, "GET", "/favicon.ico", "", "")
	}
	status, body := w.api(t, "POST", "/v1/leases", w.secrets[callOwnAgent], `{"role":"db-readonly","ttl":"5m","task":"after noise"}`)
	if status != http.StatusCreated {
		t.Fatalf("POST /v1/leases = %d %s", status, body)
	}
	if p := authFailurePoints(t, body); p != 0 {
		t.Errorf("auth_failures = %d points after anonymous failures from the agent's address, want none: %s", p, body)
	}

	// The agent's own key, revoked by a rotation, names the agent.
	old := w.secrets[callOwnAgent]
	status, body = w.api(t, "POST", "/v1/agents/"+w.ownAgent.ID+"/rotate-key", testAdminToken, `{}`)
	if status != http.StatusOK {
		t.Fatalf("rotate key = %d %s", status, body)
	}
	fresh := matrixJSONField(t, body, "api_key")
	for range 2 {
		if status, _ := w.api(t, "GET", "/v1/leases", old, ""); status != http.StatusUnauthorized {
			t.Fatalf("revoked key = %d, want 401", status)
		}
	}
	status, body = w.api(t, "POST", "/v1/leases", fresh, `{"role":"db-readonly","ttl":"5m","task":"after named failures"}`)
	if status != http.StatusCreated {
		t.Fatalf("POST /v1/leases = %d %s", status, body)
	}
	if p := authFailurePoints(t, body); p != 10 {
		t.Errorf("auth_failures = %d points after 2 failures with the agent's revoked key, want 10: %s", p, body)
	}
}
