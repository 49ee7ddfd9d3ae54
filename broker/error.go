package broker

import (
	"errors"
	"fmt"
	"time"
)

// Error codes. Each maps to one HTTP status in web/errors.go; nothing else
// chooses a status.
const (
	ECONFLICT     = "conflict"           // the object is not in a state that allows the action
	EINTERNAL     = "internal"           // a bug or an unexpected failure; details are logged, never shown
	EINVALID      = "invalid"            // the request is malformed; Field names the offending input
	ENOTFOUND     = "not_found"          // no such object, or the caller may not know it exists
	EUNAUTHORIZED = "unauthorized"       // missing, unknown, expired or revoked credentials
	EFORBIDDEN    = "forbidden"          // authenticated, but not allowed to do this
	EDENIED       = "denied"             // the policy decided against the request
	EUNAVAILABLE  = "unavailable"        // a dependency (Vault, the store) cannot be reached; retry later
	ETOOMANY      = "too_many"           // a rate limit or a cap on live leases was hit
	ETRANSITION   = "illegal_transition" // the lease state machine does not allow the change (transition.go)
)

// Error is an error whose message is safe to show to the caller. Any error that
// is not an *Error is reported to callers as EINTERNAL with "Internal error."
type Error struct {
	// Code is one of the E* constants.
	Code string
	// Message is a human-readable sentence safe to show to the caller.
	Message string
	// Field names the request field at fault, for EINVALID (and for an
	// ECONFLICT on one field, such as a name already taken).
	Field string
	// RetryAfter, for ETOOMANY, is how long the caller should wait before
	// trying again; the web layer sends it as Retry-After.
	RetryAfter time.Duration
	// Err is the sentinel or cause the error carries, for errors.Is and
	// errors.As (such as ErrLeaseTransition or ErrDutyConflict). It never
	// reaches the caller: only Code, Message and Field do.
	Err error
}

// Error implements the error interface. It never includes wrapped detail.
func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("stint error: code=%s field=%s message=%s", e.Code, e.Field, e.Message)
	}
	return fmt.Sprintf("stint error: code=%s message=%s", e.Code, e.Message)
}

// Unwrap returns the wrapped sentinel or cause, if any.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code string, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldErrorf returns an EINVALID *Error that names the request field at fault.
func FieldErrorf(field string, format string, args ...any) *Error {
	return &Error{Code: EINVALID, Field: field, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL for
// any other error, and "" for nil.
func ErrorCode(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the caller-safe message of err: the message of the first
// *Error in its chain, or "Internal error." for any other error.
func ErrorMessage(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Message
	}
	return "Internal error."
}

// ErrorField returns the request field named by the first *Error in err's chain.
func ErrorField(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Field
	}
	return ""
}
