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
