package broker_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/secrettest"
)

func TestCredentialNeverRendered(t *testing.T) {
	cred := broker.Credential{
		Kind:          broker.KindDatabase,
		Data:          map[string]any{"username": "v-etl-abc", "password": "hunter2-s3cret"},
		Connection:    &broker.Connection{Host: "db.internal", Port: 5432, Database: "sales"},
		LeaseDuration: 295, ExpiresAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	token := broker.Credential{Kind: broker.KindToken, Data: map[string]any{"token": "hvs.T0KEN-s3cret"}}
	for _, tc := range []struct {
		name   string
		v      any
		secret string
	}{
		{"DatabaseValue", cred, "hunter2-s3cret"},
		{"DatabasePointer", &cred, "hunter2-s3cret"},
		{"TokenValue", token, "hvs.T0KEN-s3cret"},
		{"TokenPointer", &token, "hvs.T0KEN-s3cret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			renderings := secrettest.Renderings(tc.v)
			renderings["json nested"] = secrettest.NestedJSON(tc.v)
			for how, s := range renderings {
				if strings.Contains(s, tc.secret) {
					t.Errorf("%s reveals the secret: %s", how, s)
				}
				if !strings.Contains(s, "[credential redacted]") {
					t.Errorf("%s does not say a credential was redacted: %s", how, s)
				}
			}
		})
	}
}

func TestCredentialReveal(t *testing.T) {
	cred := &broker.Credential{
		Kind:          broker.KindDatabase,
		Data:          map[string]any{"username": "v-etl-abc", "password": "hunter2"},
		Connection:    &broker.Connection{Host: "db.internal", Port: 5432, Database: "sales"},
		LeaseDuration: 295, ExpiresAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	b, err := json.Marshal(cred.Reveal())
	if err != nil {
		t.Fatal(err)
	}
	got, want := string(b), `{"database":"sales","expires_at":"2026-01-02T03:04:05Z","host":"db.internal","lease_duration":295,"password":"hunter2","port":5432,"username":"v-etl-abc"}`
	if got != want {
		t.Fatalf("Reveal = %s, want %s", got, want)
	}
	tok := &broker.Credential{Kind: broker.KindToken, Data: map[string]any{"token": "hvs.x", "accessor": "hidden"}, LeaseDuration: 60}
	b, _ = json.Marshal(tok.Reveal())
	if got, want := string(b), `{"expires_at":"0001-01-01T00:00:00Z","lease_duration":60,"token":"hvs.x"}`; got != want {
		t.Fatalf("Reveal (token) = %s, want %s", got, want)
	}
}
