// Package users runs the web console's people: console users and their
// passwords (bcrypt, the only importer), password logins under the login
// throttle, single sign-on matches by email, and server-side sessions.
// Service implements broker.UserService for the console, and manages users
// for "stint users". The store keeps users, sessions and the throttle's
// counters, so that every replica sees the same ones.
package users

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stint-broker/stint/broker"
)

// Defaults applied by NewService.
const (
	DefaultSessionTTL   = 12 * time.Hour
	DefaultIdleTimeout  = 30 * time.Minute
	DefaultPasswordWait = 5 * time.Second
)

// Store is what the service keeps its state in: users and sessions, the
// login throttle's counters, and the audit log its logins are recorded in.
type Store interface {
	broker.UserStore
	broker.LoginThrottleStore
	broker.AuditLog
}

// Service implements broker.UserService. Set its fields before the first
// call; they must not change after it.
type Service struct {
	Store Store
	// SessionTTL is a session's absolute lifetime; IdleTimeout ends it
	// earlier when unused.
	SessionTTL  time.Duration
	IdleTimeout time.Duration
	// LoginThrottle limits password logins per account and address, per
	// account and per address (broker/throttle.go).
	LoginThrottle broker.LoginThrottleRules
	// PasswordSlots is how many passwords may be checked at once;
	// PasswordWait how long a login waits for a free slot.
	PasswordSlots int
	PasswordWait  time.Duration
	// Now returns the current time; it can be mocked in tests.
	Now func() time.Time

	once   sync.Once
	slots  chan struct{}
	checks atomic.Int64
}

var _ broker.UserService = (*Service)(nil)

// NewService returns a Service on store with the default session
// lifetimes, the default login throttle, half the cores for password
// checks and the real clock.
func NewService(store Store) *Service {
	return &Service{
		Store:         store,
		SessionTTL:    DefaultSessionTTL,
		IdleTimeout:   DefaultIdleTimeout,
		LoginThrottle: broker.DefaultLoginThrottleRules,
		PasswordSlots: max(1, runtime.GOMAXPROCS(0)/2),
		PasswordWait:  DefaultPasswordWait,
		Now:           time.Now,
	}
}

func (s *Service) init() {
	s.once.Do(func() { s.slots = make(chan struct{}, max(1, s.PasswordSlots)) })
}

// maxNameLen is the longest user name a login may send (broker.ValidName).
const maxNameLen = 64

// Login implements broker.UserService.
func (s *Service) Login(ctx context.Context, name, password, sourceIP string) (*broker.User, error) {
	if name == "" || password == "" || len(name) > maxNameLen || len(password) > MaxPasswordLen {
		return nil, &broker.LoginFailure{Reason: "malformed login"}
	}
	now, rules := s.Now().UTC(), s.LoginThrottle
	if err := s.Store.BeginLogin(ctx, name, sourceIP, now, rules); err != nil {
		return nil, err
	}
	// The attempt stays counted if the service is too busy to check it.
	release, err := s.AcquirePasswordSlot(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	u, err := s.Store.FindUserByName(ctx, name)
	switch broker.ErrorCode(err) {
	case "":
	case broker.ENOTFOUND:
		s.passwordMatches("", password)
		return nil, &broker.LoginFailure{Reason: "unknown user"}
	default:
		return nil, err
	}
	if !s.passwordMatches(u.PasswordHash, password) {
		return nil, &broker.LoginFailure{Reason: "wrong password"}
	}
	if u.State != broker.UserActive {
		return nil, &broker.LoginFailure{Reason: "user disabled"}
	}
	if err := s.Store.LoginSucceeded(ctx, name, sourceIP, now, rules); err != nil {
		return nil, err
	}
	return u, nil
}

// UserByEmail implements broker.UserService.
func (s *Service) UserByEmail(ctx context.Context, email string) (*broker.User, error) {
	users, err := s.Store.FindUsers(ctx)
	if err != nil {
		return nil, err
	}
	var found *broker.User
	for _, u := range users {
		if u.Email != "" && strings.EqualFold(u.Email, email) {
			if found != nil {
				return nil, &broker.LoginFailure{Reason: "email matches more than one user"}
			}
			found = u
		}
	}
	switch {
	case found == nil:
		return nil, &broker.LoginFailure{Reason: "unknown email"}
	case found.State != broker.UserActive:
		return nil, &broker.LoginFailure{Reason: "user disabled"}
	}
	return found, nil
}

// StartSession implements broker.UserService.
func (s *Service) StartSession(ctx context.Context, u *broker.User, start broker.SessionStart) (string, *broker.Session, error) {
	token := randomToken()
	now := s.Now().UTC()
	sess := &broker.Session{
		ID: sessionID(token), UserID: u.ID, CreatedAt: now,
		ExpiresAt: now.Add(s.SessionTTL), IdleExpiresAt: now.Add(s.IdleTimeout),
		SourceIP: start.SourceIP, UserAgent: start.UserAgent,
	}
	if err := s.Store.CreateSession(ctx, sess); err != nil {
		return "", nil, err
	}
	if _, err := s.Store.UpdateUser(ctx, u.ID, broker.UserUpdate{LastLoginAt: &now}); err != nil {
		return "", nil, err
	}
	actorCtx := broker.NewContextWithActor(ctx, u.Actor(start.SourceIP))
	if err := s.Store.Record(actorCtx, broker.AuditEvent{Kind: broker.AuditUserLogin, Actor: "user:" + u.Name, Subject: u.Name,
		Details: broker.AuditDetails(map[string]any{"role": u.Role, "source_ip": start.SourceIP, "method": start.Method})}); err != nil {
		return "", nil, err
	}
	return token, sess, nil
}

// maxTokenLen is longer than any token StartSession issues (43 characters);
// a longer cookie is not looked up.
const maxTokenLen = 64

// Session implements broker.UserService.
func (s *Service) Session(ctx context.Context, token string) (*broker.User, error) {
	if token == "" || len(token) > maxTokenLen {
		return nil, broker.Errorf(broker.ENOTFOUND, "Session not found.")
	}
	now := s.Now().UTC()
	sess, err := s.Store.FindSession(ctx, sessionID(token), now, now.Add(s.IdleTimeout))
	if err != nil {
		return nil, err
	}
	u, err := s.Store.FindUserByID(ctx, sess.UserID)
	if err != nil {
		return nil, err
	}
	if u.State != broker.UserActive {
		return nil, broker.Errorf(broker.ENOTFOUND, "Session not found.")
	}
	return u, nil
}

// Logout implements broker.UserService.
func (s *Service) Logout(ctx context.Context, token string, u *broker.User, sourceIP string) error {
	if err := s.Store.DeleteSession(ctx, sessionID(token)); err != nil {
		return err
	}
	return s.Store.Record(ctx, broker.AuditEvent{Kind: broker.AuditUserLogout, Actor: "user:" + u.Name, Subject: u.Name,
		Details: broker.AuditDetails(map[string]any{"source_ip": sourceIP})})
}

// DeleteExpiredSessions removes the sessions that have expired and returns
// how many. It is a periodic job.
func (s *Service) DeleteExpiredSessions(ctx context.Context) (int, error) {
	return s.Store.DeleteExpiredSessions(ctx, s.Now())
}

// AddUser stores u, active, with password (which must pass
// CheckPasswordPolicy). Returns EINVALID naming the field, or ECONFLICT if
// the name is taken.
func (s *Service) AddUser(ctx context.Context, u *broker.User, password string) error {
	hash, err := HashPassword(password)
	if err != nil {
		return err
	}
	u.PasswordHash, u.State = hash, broker.UserActive
	if err := u.Validate(); err != nil {
		return err
	}
	return s.Store.CreateUser(ctx, u)
}

// SetPassword gives the user named name a new password. Returns EINVALID
// naming "password", or ENOTFOUND.
func (s *Service) SetPassword(ctx context.Context, name, password string) (*broker.User, error) {
	hash, err := HashPassword(password)
	if err != nil {
		return nil, err
	}
	u, err := s.Store.FindUserByName(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.Store.UpdateUser(ctx, u.ID, broker.UserUpdate{PasswordHash: &hash})
}

// DisableUser disables the user named name and ends their sessions. Users
// are never deleted, so that the audit log keeps naming them. Returns
// ENOTFOUND.
func (s *Service) DisableUser(ctx context.Context, name string) (*broker.User, error) {
	u, err := s.Store.FindUserByName(ctx, name)
	if err != nil {
		return nil, err
	}
	state := broker.UserDisabled
	return s.Store.UpdateUser(ctx, u.ID, broker.UserUpdate{State: &state})
}

// FindUser returns the user named name. Returns ENOTFOUND.
func (s *Service) FindUser(ctx context.Context, name string) (*broker.User, error) {
	return s.Store.FindUserByName(ctx, name)
}

// FindUsers returns every user, by name.
func (s *Service) FindUsers(ctx context.Context) ([]*broker.User, error) {
	users, err := s.Store.FindUsers(ctx)
	if err != nil {
		return nil, fmt.Errorf("find users: %w", err)
	}
	return users, nil
}

// randomToken returns 32 random bytes, base64url (43 characters).
func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// sessionID is the stored id of a session token.
func sessionID(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
