package broker

import (
	"context"
	"strings"
	"time"
)

// UserRole is what a console user may do.
type UserRole string

// Console roles.
const (
	// RoleReviewer reads everything: leases, history, agents, the audit log,
	// and exports it. It changes nothing.
	RoleReviewer UserRole = "reviewer"
	// RoleApprover reads like a reviewer and decides pending leases, never
	// those of an agent it owns.
	RoleApprover UserRole = "approver"
	// RoleAdmin may do everything: revoke leases, pull an agent's access,
	// disable agents, and decide pending leases.
	RoleAdmin UserRole = "admin"
)

// UserRoles lists the roles, for validation and help texts.
var UserRoles = []UserRole{RoleAdmin, RoleApprover, RoleReviewer}

// UserState is whether a console user may log in.
type UserState string

// User states.
const (
	UserActive   UserState = "active"
	UserDisabled UserState = "disabled"
)

// User is a human who logs in to the web console. Users are managed with
// "stint users"; the password is stored only as a slow hash (PasswordHash,
// bcrypt) and never leaves the store.
type User struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Email identifies the user as an approver and as an agent owner: an
	// approver never decides leases of agents whose owner is this address.
	Email        string     `json:"email,omitempty"`
	Role         UserRole   `json:"role"`
	State        UserState  `json:"state"`
	PasswordHash string     `json:"-"`
	CreatedAt    time.Time  `json:"created_at"`
	UpdatedAt    time.Time  `json:"updated_at"`
	LastLoginAt  *time.Time `json:"last_login_at,omitempty"`
}

// Validate returns EINVALID naming the field if the user cannot be stored.
func (u *User) Validate() error {
	switch {
	case !ValidName(u.Name):
		return FieldErrorf("name", "User name must be 1-64 characters of a-z, 0-9, '-', '_' or '.', starting with a letter or digit.")
	case !ValidUserRole(u.Role):
		return FieldErrorf("role", "Role must be admin, approver or reviewer, not %q.", u.Role)
	case u.Email != "" && (!strings.Contains(u.Email, "@") || len(u.Email) > 254 || strings.ContainsAny(u.Email, " \t\r\n") || CheckText("email", u.Email) != nil):
		return FieldErrorf("email", "Email must be an email address.")
	case u.Role == RoleApprover && u.Email == "":
		return FieldErrorf("email", "An approver needs an email address: it is how approvals and agent owners are matched.")
	case u.PasswordHash == "":
		return FieldErrorf("password", "A password is required.")
	}
	return nil
}

// ValidUserRole reports whether r is a console role.
func ValidUserRole(r UserRole) bool {
	return r == RoleAdmin || r == RoleApprover || r == RoleReviewer
}

// ActorReviewer is the kind of a console reviewer. No service lets it
// change anything: the console reads the stores directly.
const ActorReviewer ActorKind = "reviewer"

// Actor returns the actor the console acts as for u when it calls a service:
// admins act as admins named "user/<name>" ("admin:user/alice" in history),
// approvers as approvers identified by their email, and reviewers as
// reviewers, whom every service refuses changes.
func (u *User) Actor(sourceIP string) Actor {
	switch u.Role {
	case RoleAdmin:
		return Actor{Kind: ActorAdmin, Name: "user/" + u.Name, AuthMethod: "console", SourceIP: sourceIP}
	case RoleApprover:
		name := u.Email
		if name == "" {
			name = u.Name
		}
		return Actor{Kind: ActorApprover, Name: name, AuthMethod: "console", SourceIP: sourceIP}
	default:
		return Actor{Kind: ActorReviewer, Name: u.Name, AuthMethod: "console", SourceIP: sourceIP}
	}
}

// Session is a logged-in console user. The cookie carries a random token;
// the store keeps only its SHA-256 (ID), so a stolen database holds no
// usable session.
type Session struct {
	// ID is the hex SHA-256 of the session token.
	ID        string    `json:"-"`
	UserID    string    `json:"user_id"`
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is the absolute end; IdleExpiresAt moves with each use.
	ExpiresAt     time.Time `json:"expires_at"`
	IdleExpiresAt time.Time `json:"idle_expires_at"`
	SourceIP      string    `json:"source_ip"`
	UserAgent     string    `json:"user_agent"`
}

// UserUpdate changes a user. Nil fields are left alone.
type UserUpdate struct {
	Email        *string
	Role         *UserRole
	State        *UserState
	PasswordHash *string
	LastLoginAt  *time.Time
}

// UserStore persists console users and their sessions.
type UserStore interface {
	// CreateUser inserts u. Returns ECONFLICT if the name is taken.
	CreateUser(ctx context.Context, u *User) error
	// FindUserByName returns ENOTFOUND if no user has the name.
	FindUserByName(ctx context.Context, name string) (*User, error)
	// FindUserByID returns ENOTFOUND if no user has the id.
	FindUserByID(ctx context.Context, id string) (*User, error)
	// FindUsers returns every user, by name.
	FindUsers(ctx context.Context) ([]*User, error)
	// UpdateUser applies upd. Returns ENOTFOUND. Disabling a user ends its
	// sessions.
	UpdateUser(ctx context.Context, id string, upd UserUpdate) (*User, error)

	// CreateSession inserts s.
	CreateSession(ctx context.Context, s *Session) error
	// FindSession returns the session with the id that is unexpired at now,
	// pushing its IdleExpiresAt to idleUntil (never past ExpiresAt). Returns
	// ENOTFOUND if there is none.
	FindSession(ctx context.Context, id string, now, idleUntil time.Time) (*Session, error)
	// DeleteSession ends a session; ending an unknown one is not an error.
	DeleteSession(ctx context.Context, id string) error
	// DeleteExpiredSessions removes sessions expired at now and returns how
	// many.
	DeleteExpiredSessions(ctx context.Context, now time.Time) (int, error)
}

// UserService runs the console's people: password logins under the login
// throttle, single sign-on matches, and server-side sessions. The web
// console calls it; it never reads users or sessions from a store itself.
type UserService interface {
	// Login checks a password login for name from sourceIP. The attempt is
	// counted by the login throttle before the password is checked, and
	// given back when it succeeds. Returns the active user, or: a
	// *LoginFailure (EUNAUTHORIZED) for a malformed login, an unknown name,
	// a wrong password or a disabled account, which callers must not tell
	// apart; ETOOMANY with RetryAfter while the throttle locks (no password
	// is checked); EUNAVAILABLE with RetryAfter when too many passwords are
	// being checked at once.
	Login(ctx context.Context, name, password, sourceIP string) (*User, error)
	// UserByEmail returns the one active user with the address (case does
	// not matter), for single sign-on. Returns a *LoginFailure
	// (EUNAUTHORIZED) if no user, several users or only a disabled user has
	// it.
	UserByEmail(ctx context.Context, email string) (*User, error)
	// StartSession logs u in: it stores a new session, stamps the user's
	// last login and records the login in the audit log. It returns the
	// session token, which only the caller's cookie holds (the store keeps
	// its SHA-256), and the session.
	StartSession(ctx context.Context, u *User, start SessionStart) (token string, s *Session, err error)
	// Session returns the active user whose unexpired session token is
	// token, and moves the session's idle expiry on. Returns ENOTFOUND if
	// there is no such session, or its user is gone or disabled.
	Session(ctx context.Context, token string) (*User, error)
	// Logout ends the session of token and records the logout of u.
	Logout(ctx context.Context, token string, u *User, sourceIP string) error
}

// SessionStart describes a login that starts a session.
type SessionStart struct {
	// Method is how the user proved who they are: "password" or "oidc".
	Method    string
	SourceIP  string
	UserAgent string
}

// LoginFailure is a refused login. Its message is the same whatever the
// reason, so that a caller cannot learn whether a name exists; Reason says
// why, for the audit log only.
type LoginFailure struct {
	Reason string
}

// Error implements error.
func (f *LoginFailure) Error() string { return "login refused: " + f.Reason }

// Unwrap makes a LoginFailure an EUNAUTHORIZED *Error.
func (f *LoginFailure) Unwrap() error {
	return Errorf(EUNAUTHORIZED, "Wrong name or password, or the account is disabled.")
}
