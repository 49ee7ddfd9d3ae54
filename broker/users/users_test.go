package users_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/sqlite"
	"github.com/stint-broker/stint/broker/users"
)

const password = "correct horse battery"

// newService returns a service on a real SQLite store with an active admin
// alice, an approver otto and a disabled reviewer rita.
func newService(t *testing.T) (*users.Service, *sqlite.DB) {
	t.Helper()
	db, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "stint.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s := users.NewService(db)
	ctx := broker.NewContextWithActor(t.Context(), broker.Actor{Kind: broker.ActorAdmin, Name: "test"})
	for _, u := range []*broker.User{
		{Name: "alice", Role: broker.RoleAdmin, Email: "alice@example.com"},
		{Name: "otto", Role: broker.RoleApprover, Email: "otto@example.com"},
		{Name: "rita", Role: broker.RoleReviewer, Email: "Otto@Example.com"},
	} {
		if err := s.AddUser(ctx, u, password); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.DisableUser(ctx, "rita"); err != nil {
		t.Fatal(err)
	}
	return s, db
}

func loginReason(err error) string {
	var f *broker.LoginFailure
	if errors.As(err, &f) {
		return f.Reason
	}
	return ""
}

func TestLogin(t *testing.T) {
	s, _ := newService(t)
	// A stopped clock: the throttle's first lock (1 s) must not end while
	// slow password hashes run.
	now := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	s.Now = func() time.Time { return now }
	ctx := t.Context()
	t.Run("OK", func(t *testing.T) {
		u, err := s.Login(ctx, "alice", password, "192.0.2.1")
		if err != nil || u.Name != "alice" {
			t.Fatalf("Login = %v, %v", u, err)
		}
	})
	for _, tt := range []struct{ Name, User, Password, Reason string }{
		{"WrongPassword", "alice", "not the password!", "wrong password"},
		{"UnknownUser", "nobody", password, "unknown user"},
		{"Disabled", "rita", password, "user disabled"},
		{"Malformed", "alice", "", "malformed login"},
	} {
		t.Run(tt.Name, func(t *testing.T) {
			_, err := s.Login(ctx, tt.User, tt.Password, "192.0.2.2")
			if got := loginReason(err); got != tt.Reason || broker.ErrorCode(err) != broker.EUNAUTHORIZED ||
				broker.ErrorMessage(err) != "Wrong name or password, or the account is disabled." {
				t.Fatalf("Login = %v (reason %q, code %s), want reason %q, EUNAUTHORIZED and the common message", err, got, broker.ErrorCode(err), tt.Reason)
			}
		})
	}
	t.Run("ThrottledCostsNoHash", func(t *testing.T) {
		for range broker.DefaultLoginThrottleRules.PairFree {
			s.Login(ctx, "otto", "not the password!", "192.0.2.3")
		}
		before := s.PasswordChecks()
		_, err := s.Login(ctx, "otto", password, "192.0.2.3")
		if broker.ErrorCode(err) != broker.ETOOMANY || s.PasswordChecks() != before {
			t.Fatalf("Login after the free failures = %v with %d hashes, want ETOOMANY and none", err, s.PasswordChecks()-before)
		}
	})
	t.Run("Busy", func(t *testing.T) {
		s.PasswordWait = 10 * time.Millisecond
		var held []func()
		for range s.PasswordSlots {
			r, err := s.AcquirePasswordSlot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, r)
		}
		before := s.PasswordChecks()
		_, err := s.Login(ctx, "alice", password, "192.0.2.4")
		var e *broker.Error
		if !errors.As(err, &e) || e.Code != broker.EUNAVAILABLE || e.RetryAfter == 0 || s.PasswordChecks() != before {
			t.Fatalf("Login with every slot taken = %v, want EUNAVAILABLE with RetryAfter and no hash", err)
		}
		for _, r := range held {
			r()
		}
		if _, err := s.Login(ctx, "alice", password, "192.0.2.4"); err != nil {
			t.Fatalf("Login with a free slot: %v", err)
		}
	})
}

func TestSession(t *testing.T) {
	s, db := newService(t)
	clock := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	s.Now = func() time.Time { return clock }
	ctx := t.Context()
	u, err := s.Login(ctx, "alice", password, "192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	token, sess, err := s.StartSession(ctx, u, broker.SessionStart{Method: "password", SourceIP: "192.0.2.1", UserAgent: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(token) != 43 || sess.ID == token || sess.ExpiresAt.Sub(sess.CreatedAt) != users.DefaultSessionTTL {
		t.Fatalf("session %+v for token %q: want a 43-character token, stored only as its hash, for %s", sess, token, users.DefaultSessionTTL)
	}
	if got, err := s.Session(ctx, token); err != nil || got.Name != "alice" {
		t.Fatalf("Session = %v, %v", got, err)
	}
	if _, err := s.Session(ctx, sess.ID); broker.ErrorCode(err) != broker.ENOTFOUND {
		t.Fatalf("Session by the stored hash = %v, want ENOTFOUND", err)
	}
	kind := broker.AuditUserLogin
	if _, n, err := db.FindAuditEvents(ctx, broker.AuditFilter{Kind: &kind}); err != nil || n != 1 {
		t.Fatalf("%d logins audited (%v), want 1", n, err)
	}

	t.Run("IdleTimeout", func(t *testing.T) {
		clock = clock.Add(users.DefaultIdleTimeout + time.Second)
		if _, err := s.Session(ctx, token); broker.ErrorCode(err) != broker.ENOTFOUND {
			t.Fatalf("Session after the idle timeout = %v, want ENOTFOUND", err)
		}
	})
	t.Run("Logout", func(t *testing.T) {
		token, _, err := s.StartSession(ctx, u, broker.SessionStart{Method: "password"})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Logout(ctx, token, u, "192.0.2.1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Session(ctx, token); broker.ErrorCode(err) != broker.ENOTFOUND {
			t.Fatalf("Session after logout = %v, want ENOTFOUND", err)
		}
	})
	t.Run("DisabledUser", func(t *testing.T) {
		token, _, err := s.StartSession(ctx, u, broker.SessionStart{Method: "password"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.DisableUser(context.Background(), "alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Session(ctx, token); broker.ErrorCode(err) != broker.ENOTFOUND {
			t.Fatalf("Session of a disabled user = %v, want ENOTFOUND", err)
		}
	})
}

func TestUserByEmail(t *testing.T) {
	s, _ := newService(t)
	ctx := t.Context()
	if u, err := s.UserByEmail(ctx, "ALICE@example.com"); err != nil || u.Name != "alice" {
		t.Fatalf("UserByEmail = %v, %v", u, err)
	}
	for email, reason := range map[string]string{
		"nobody@example.com": "unknown email",
		"otto@example.com":   "email matches more than one user",
	} {
		if _, err := s.UserByEmail(ctx, email); loginReason(err) != reason {
			t.Errorf("UserByEmail(%s) = %v, want reason %q", email, err, reason)
		}
	}
}

func TestPasswordPolicy(t *testing.T) {
	s, _ := newService(t)
	for _, p := range []string{"short", string(make([]byte, 73)), "\xff\xfe invalid utf-8"} {
		if err := users.CheckPasswordPolicy(p); broker.ErrorCode(err) != broker.EINVALID {
			t.Errorf("CheckPasswordPolicy(%q) = %v, want EINVALID", p, err)
		}
	}
	if _, err := s.SetPassword(t.Context(), "alice", "short"); broker.ErrorCode(err) != broker.EINVALID {
		t.Fatalf("SetPassword with a short password = %v, want EINVALID", err)
	}
	if _, err := s.SetPassword(t.Context(), "alice", "another long password"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Login(t.Context(), "alice", "another long password", "192.0.2.9"); err != nil {
		t.Fatalf("Login with the new password: %v", err)
	}
}
