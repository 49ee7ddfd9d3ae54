package client

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The API's error codes, as Error.Code carries them.
const (
	CodeInvalid      = "invalid"            // 400: the request is malformed; Field names the input
	CodeUnauthorized = "unauthorized"       // 401: missing, unknown, expired or revoked credentials
	CodeForbidden    = "forbidden"          // 403: authenticated, but not allowed to do this
	CodeDenied       = "denied"             // 403: policy or an approver decided against the request
	CodeNotFound     = "not_found"          // 404: no such object, or the caller may not know of it
	CodeConflict     = "conflict"           // 409: the object's state does not allow the action
	CodeTransition   = "illegal_transition" // 409: the lease state machine does not allow the change
	CodeTooMany      = "too_many"           // 429: a rate limit or a cap on live leases; see RetryAfter
	CodeUnavailable  = "unavailable"        // 503: Vault or the store cannot be reached; retry later
	CodeInternal     = "internal"           // 500: the server failed; RequestID finds it in its log
)

// Error is an error answer of the API (any status outside 2xx):
//
//	{"error":{"code":"...","message":"...","field":"..."},"request_id":"..."}
//
// and, from the OAuth token endpoint, RFC 6749's
// {"error":"invalid_client","error_description":"..."}, whose error goes
// to OAuthError and whose status decides Code.
type Error struct {
	// Status is the HTTP status.
	Status int
	// Code is one of the Code constants.
	Code string
	// Message is the server's explanation, safe to show to a user.
	Message string
	// Field names the request input at fault, for CodeInvalid.
	Field string
	// RequestID identifies the request in the server's log.
	RequestID string
	// RetryAfter is when to try again (429, 503), if the server said.
	RetryAfter time.Duration
	// OAuthError is the RFC 6749 error code of a token endpoint answer.
	OAuthError string
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "stint: %s (%d", e.Message, e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Field != "" {
		b.WriteString(", field " + e.Field)
	}
	b.WriteString(")")
	return b.String()
}

// IsCode reports whether err is an *Error with the code.
func IsCode(err error, code string) bool {
	e, ok := AsError(err)
	return ok && e.Code == code
}

// AsError returns err as an *Error, if it is one (or wraps one).
func AsError(err error) (*Error, bool) {
	for err != nil {
		if e, ok := err.(*Error); ok {
			return e, true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return nil, false
		}
		err = u.Unwrap()
	}
	return nil, false
}

// codeByStatus is the code of an answer whose body carries none.
var codeByStatus = map[int]string{
	http.StatusBadRequest:          CodeInvalid,
	http.StatusUnauthorized:        CodeUnauthorized,
	http.StatusForbidden:           CodeForbidden,
	http.StatusNotFound:            CodeNotFound,
	http.StatusConflict:            CodeConflict,
	http.StatusTooManyRequests:     CodeTooMany,
	http.StatusServiceUnavailable:  CodeUnavailable,
	http.StatusInternalServerError: CodeInternal,
}

// newError reads an error answer.
func newError(resp *http.Response, data []byte) *Error {
	e := &Error{Status: resp.StatusCode, Code: codeByStatus[resp.StatusCode]}
	if e.Code == "" {
		e.Code = CodeInternal
		if resp.StatusCode < 500 {
			e.Code = CodeInvalid
		}
	}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			e.RetryAfter = time.Duration(n) * time.Second
		}
	}
	var api struct {
		Error     json.RawMessage `json:"error"`
		RequestID string          `json:"request_id"`
		// OAuth's form.
		Description string `json:"error_description"`
	}
	if json.Unmarshal(data, &api) == nil && len(api.Error) > 0 {
		var body struct{ Code, Message, Field string }
		var oauthCode string
		if json.Unmarshal(api.Error, &body) == nil {
			if body.Code != "" {
				e.Code = body.Code
			}
			e.Message, e.Field, e.RequestID = body.Message, body.Field, api.RequestID
		} else if json.Unmarshal(api.Error, &oauthCode) == nil {
			e.OAuthError, e.Message = oauthCode, api.Description
			if e.Message == "" {
				e.Message = oauthCode
			}
			switch oauthCode {
			case "invalid_client":
				e.Code = CodeUnauthorized
			case "unauthorized_client":
				e.Code = CodeForbidden
			}
		}
	}
	if e.Message == "" {
		e.Message = "The server answered " + resp.Status + "."
	}
	return e
}
