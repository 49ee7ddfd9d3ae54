package identity_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/identity"
	"github.com/stint-broker/stint/broker/sqlite"
)

func newService(tb testing.TB) (*identity.Service, *sqlite.DB, *time.Time) {
	tb.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "stint.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	now := time.Now().UTC()
	s := identity.NewService(db, []identity.AdminToken{identity.NewAdminToken("sec", "admin-secret")})
	s.Now = func() time.Time { return now }
	return s, db, &now
}

var admin = broker.NewContextWithActor(context.Background(), broker.Actor{Kind: broker.ActorAdmin, Name: "sec"})

func TestCreateAgent(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		s, db, _ := newService(t)
		a, key, k, err := s.CreateAgent(admin, broker.NewAgent{Name: "etl-bot", Owner: "Alice@Example.com", Labels: map[string]string{"team": "data"}})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(key, identity.KeyPrefix) || len(key) < 40 {
			t.Fatalf("key %q lacks the prefix or entropy", key[:12])
		}
		if a.Owner != "alice@example.com" || a.State != broker.AgentActive {
			t.Fatalf("agent = %+v", a)
		}
		if got, want := k.ExpiresAt.Sub(k.CreatedAt), 24*time.Hour; got != want {
			t.Fatalf("key ttl = %s, want %s", got, want)
		}
		// Only the hash is stored.
		keys, err := db.FindAPIKeys(context.Background(), a.ID)
		if err != nil || len(keys) != 1 {
			t.Fatalf("keys = %v, %v", keys, err)
		}
		if keys[0].Hash == key || strings.Contains(keys[0].Hash, key[len(identity.KeyPrefix):]) || len(keys[0].Hash) != 64 {
			t.Fatalf("stored hash %q is not a SHA-256 of the key", keys[0].Hash)
		}
		actor, err := s.Authenticate(context.Background(), key)
		if err != nil || actor.Kind != broker.ActorAgent || actor.AgentID != a.ID || actor.Name != "etl-bot" {
			t.Fatalf("authenticate = %+v, %v", actor, err)
		}
	})
	t.Run("ErrInvalid", func(t *testing.T) {
		s, _, _ := newService(t)
		for _, na := range []broker.NewAgent{
			{Name: "", Owner: "a@b.c"},
			{Name: "Bad Name", Owner: "a@b.c"},
			{Name: "ok", Owner: "not-an-email"},
			{Name: "ok", Owner: "a@b.c", KeyTTL: time.Second},
			{Name: "ok", Owner: "a@b.c", KeyTTL: 365 * 24 * time.Hour},
		} {
			if _, _, _, err := s.CreateAgent(admin, na); broker.ErrorCode(err) != broker.EINVALID {
				t.Errorf("CreateAgent(%+v) err = %v, want invalid", na, err)
			}
		}
	})
	t.Run("ErrConflict", func(t *testing.T) {
		s, _, _ := newService(t)
		if _, _, _, err := s.CreateAgent(admin, broker.NewAgent{Name: "bot", Owner: "a@b.c"}); err != nil {
			t.Fatal(err)
		}
		_, _, _, err := s.CreateAgent(admin, broker.NewAgent{Name: "bot", Owner: "a@b.c"})
		if broker.ErrorCode(err) != broker.ECONFLICT || broker.ErrorField(err) != "name" {
			t.Fatalf("duplicate name err = %v, want conflict on name", err)
		}
	})
	t.Run("NoKeyWithoutAPIKeyMethod", func(t *testing.T) {
		// An agent that may not use api_key gets no key: one would only be
		// refused at authentication.
		s, db, _ := newService(t)
		a, secret, k, err := s.CreateAgent(admin, broker.NewAgent{Name: "cert-bot", Owner: "a@b.c", AuthMethods: []string{broker.AuthMTLS}})
		if err != nil {
			t.Fatal(err)
		}
		if secret != "" || k != nil {
			t.Fatalf("CreateAgent(mtls only) returned key %q %+v, want none", secret, k)
		}
		if keys, err := db.FindAPIKeys(context.Background(), a.ID); err != nil || len(keys) != 0 {
			t.Fatalf("stored keys = %v, %v; want none", keys, err)
		}
		if _, _, err := s.RotateKey(admin, a.ID, 0); broker.ErrorCode(err) != broker.ECONFLICT {
			t.Fatalf("RotateKey(mtls only) err = %v, want conflict", err)
		}
	})
	t.Run("ErrForbidden", func(t *testing.T) {
		s, _, _ := newService(t)
		agent := broker.NewContextWithActor(context.Background(), broker.Actor{Kind: broker.ActorAgent, Name: "x"})
		if _, _, _, err := s.CreateAgent(agent, broker.NewAgent{Name: "bot", Owner: "a@b.c"}); broker.ErrorCode(err) != broker.EFORBIDDEN {
			t.Fatalf("err = %v, want forbidden", err)
		}
	})
}

func TestAuthenticate(t *testing.T) {
	unauthorized := func(t *testing.T, s *identity.Service, secret, why string) {
		t.Helper()
		if _, err := s.Authenticate(context.Background(), secret); broker.ErrorCode(err) != broker.EUNAUTHORIZED {
			t.Fatalf("%s: err = %v, want unauthorized", why, err)
		}
	}
	t.Run("Admin", func(t *testing.T) {
		s, _, _ := newService(t)
		a, err := s.Authenticate(context.Background(), "admin-secret")
		if err != nil || !a.IsAdmin() || a.Name != "sec" {
			t.Fatalf("admin = %+v, %v", a, err)
		}
		unauthorized(t, s, "admin-secreT", "wrong admin token")
		unauthorized(t, s, "", "empty")
	})
	t.Run("ExpiredKey", func(t *testing.T) {
		s, _, now := newService(t)
		_, key, _, _ := s.CreateAgent(admin, broker.NewAgent{Name: "bot", Owner: "a@b.c", KeyTTL: time.Hour})
		*now = now.Add(time.Hour)
		unauthorized(t, s, key, "expired key")
	})
	t.Run("RotatedKey", func(t *testing.T) {
		s, _, _ := newService(t)
		a, old, _, _ := s.CreateAgent(admin, broker.NewAgent{Name: "bot", Owner: "a@b.c"})
		fresh, _, err := s.RotateKey(admin, a.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		unauthorized(t, s, old, "rotated-out key")
		if _, err := s.Authenticate(context.Background(), fresh); err != nil {
			t.Fatalf("new key: %v", err)
		}
	})
	t.Run("SuspendedAndDisabled", func(t *testing.T) {
		s, db, now := newService(t)
		a, key, _, _ := s.CreateAgent(admin, broker.NewAgent{Name: "bot", Owner: "a@b.c"})
		// What the kill switch (leases.Service.ContainAgent) does to the
		// agent; identity only re-activates.
		contain := func(state broker.AgentState) {
			t.Helper()
			if _, err := db.UpdateAgent(admin, a.ID, broker.AgentUpdate{State: &state, TokensNotBefore: now}); err != nil {
				t.Fatal(err)
			}
			if state == broker.AgentDisabled {
				if err := s.RevokeAgentCredentials(admin, a.ID, "agent disabled"); err != nil {
					t.Fatal(err)
				}
			}
		}
		contain(broker.AgentSuspended)
		unauthorized(t, s, key, "suspended agent")
		if _, err := s.ActivateAgent(admin, a.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Authenticate(context.Background(), key); err != nil {
			t.Fatalf("re-activated agent: %v", err)
		}
		contain(broker.AgentDisabled)
		unauthorized(t, s, key, "key of a disabled agent")
		// Disabling is final: activating does not move the agent.
		if _, err := s.ActivateAgent(admin, a.ID); broker.ErrorCode(err) != broker.ECONFLICT || !strings.Contains(broker.ErrorMessage(err), "disabled for good") {
			t.Fatalf("ActivateAgent of a disabled agent = %v; want ECONFLICT saying it is disabled for good", err)
		}
		if got, err := s.FindAgent(admin, a.ID); err != nil || got.State != broker.AgentDisabled {
			t.Fatalf("agent after refused re-activation: %+v, %v; want disabled", got, err)
		}
		if _, _, err := s.RotateKey(admin, a.ID, 0); broker.ErrorCode(err) != broker.ECONFLICT || strings.Contains(broker.ErrorMessage(err), "activate") {
			t.Fatalf("RotateKey of a disabled agent = %v; want ECONFLICT that does not suggest re-activating", err)
		}
		unauthorized(t, s, key, "key of a disabled agent")
	})
	t.Run("UnknownKey", func(t *testing.T) {
		s, _, _ := newService(t)
		unauthorized(t, s, identity.KeyPrefix+"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "unknown key")
	})
}
