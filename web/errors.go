package web

import (
	"context"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/web/console"
)

// statusByCode is the only place where broker error codes become HTTP status
// codes.
var statusByCode = map[string]int{
	broker.EINVALID:      http.StatusBadRequest,
	broker.EUNAUTHORIZED: http.StatusUnauthorized,
	broker.EFORBIDDEN:    http.StatusForbidden,
	broker.EDENIED:       http.StatusForbidden,
	broker.ENOTFOUND:     http.StatusNotFound,
	broker.ECONFLICT:     http.StatusConflict,
	broker.ETRANSITION:   http.StatusConflict,
	broker.ETOOMANY:      http.StatusTooManyRequests,
	broker.EUNAVAILABLE:  http.StatusServiceUnavailable,
	broker.EINTERNAL:     http.StatusInternalServerError,
}

// errorResponse is the body of every error answer:
// {"error":{"code":"...","message":"...","field":"..."},"request_id":"..."}.
type errorResponse struct {
	Error     errorBody `json:"error"`
	RequestID string    `json:"request_id,omitempty"`
}

type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// handleError is the echo HTTPErrorHandler: the only function that turns an
// error into a response. Callers see the code and the caller-safe message of
// a *broker.Error; anything else is EINTERNAL, shown as "Internal error." and
// logged with its detail.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var oe *oauthError
	if errors.As(err, &oe) {
		// The token endpoint answers in RFC 6749 §5.2 form (oauth.go).
		s.writeOAuthError(c, oe)
		return
	}
	var me *mcpAuthError
	if errors.As(err, &me) {
		// The MCP endpoint challenges as an OAuth protected resource (mcp.go).
		s.writeMCPAuthError(c, me)
		return
	}
	e, status := classifyError(err)
	if e.Code == broker.EINTERNAL {
		s.Logger.ErrorContext(c.Request().Context(), "request failed",
			"request_id", requestID(c),
			"method", c.Request().Method,
			"route", c.Path(),
			"status", status,
			"err", err,
		)
	}

	if s.Console != nil && console.Serves(c) && c.Request().Method != http.MethodHead {
		// The console's people get an HTML page (web/console), told when
		// to come back as an API caller would be.
		setRetryAfter(c.Response().Header(), err)
		s.Console.RenderError(c, status, console.ErrorBody{Code: e.Code, Message: e.Message}, requestID(c))
		return
	}

	h := c.Response().Header()
	if status == http.StatusUnauthorized {
		h.Set(echo.HeaderWWWAuthenticate, `Bearer realm="stint"`)
	}
	// An error answer is never worth caching, and a 401/403 must not be
	// replayed from a shared cache.
	h.Set(echo.HeaderCacheControl, "no-store")
	// A rate limit or lease cap says when to come back.
	setRetryAfter(h, err)

	var werr error
	if c.Request().Method == http.MethodHead {
		werr = c.NoContent(status)
	} else {
		werr = c.JSON(status, errorResponse{Error: e, RequestID: requestID(c)})
	}
	if werr != nil {
		s.Logger.WarnContext(c.Request().Context(), "write error response", "request_id", requestID(c), "err", werr)
	}
}

// oauthError is an error of the OAuth token endpoint. handleError renders
// it as RFC 6749 §5.2 JSON ({"error":"invalid_client",
// "error_description":"..."}) with the status oauthErrorCode chooses,
// instead of the API's error body.
type oauthError struct {
	err error
	// basicChallenge sends "WWW-Authenticate: Basic" with a 401: the
	// client used HTTP Basic, or sent no client authentication at all.
	// Clients that authenticated in the body or by certificate used no
	// HTTP authentication scheme, so they get 400 and no challenge (RFC
	// 6749 §5.2).
	basicChallenge bool
}

// Error implements error.
func (e *oauthError) Error() string { return e.err.Error() }

// Unwrap returns the underlying error.
func (e *oauthError) Unwrap() error { return e.err }

// classifyError returns the caller-safe body and the status for err.
func classifyError(err error) (errorBody, int) {
	var be *broker.Error
	if errors.As(err, &be) {
		status, ok := statusByCode[be.Code]
		if !ok {
			// A code missing from the table is a bug; never guess a status.
			return internalError(), http.StatusInternalServerError
		}
		return errorBody{Code: be.Code, Message: be.Message, Field: be.Field}, status
	}

	var he *echo.HTTPError
	if errors.As(err, &he) {
		if inner, ok := he.Internal.(*echo.HTTPError); ok {
			he = inner
		}
		return echoError(he.Code, err)
	}

	if errors.Is(err, context.DeadlineExceeded) {
		return errorBody{Code: broker.EUNAVAILABLE, Message: "The request took too long; try again shortly."},
			http.StatusServiceUnavailable
	}
	return internalError(), http.StatusInternalServerError
}

// echoError classifies an error raised by echo itself (router, middleware).
// It keeps echo's status but uses our codes and our own wording: echo's
// messages may carry parser detail.
func echoError(status int, err error) (errorBody, int) {
	switch status {
	case http.StatusBadRequest:
		return errorBody{Code: broker.EINVALID, Message: "The request is malformed."}, status
	case http.StatusUnauthorized:
		return errorBody{Code: broker.EUNAUTHORIZED, Message: "Authentication is required."}, status
	case http.StatusForbidden:
		return errorBody{Code: broker.EFORBIDDEN, Message: "You may not do this."}, status
	case http.StatusNotFound:
		return errorBody{Code: broker.ENOTFOUND, Message: "No such endpoint."}, status
	case http.StatusMethodNotAllowed:
		return errorBody{Code: broker.EINVALID, Message: "This endpoint does not support the method."}, status
	case http.StatusRequestEntityTooLarge:
		return errorBody{Code: broker.EINVALID, Message: "The request body is larger than 64 KB."}, status
	case http.StatusUnsupportedMediaType:
		return errorBody{Code: broker.EINVALID, Message: "The request body must be JSON."}, status
	case http.StatusTooManyRequests:
		return errorBody{Code: broker.ETOOMANY, Message: "Too many requests; slow down."}, status
	case http.StatusServiceUnavailable:
		msg := "The service is unavailable; try again shortly."
		if errors.Is(err, context.DeadlineExceeded) {
			msg = "The request took too long; try again shortly."
		}
		return errorBody{Code: broker.EUNAVAILABLE, Message: msg}, status
	}
	if status >= 400 && status < 500 {
		return errorBody{Code: broker.EINVALID, Message: "The request cannot be served."}, status
	}
	return internalError(), http.StatusInternalServerError
}

func internalError() errorBody {
	return errorBody{Code: broker.EINTERNAL, Message: "Internal error."}
}

// requestID returns the id the RequestID middleware put on the response.
func requestID(c echo.Context) string {
	return c.Response().Header().Get(echo.HeaderXRequestID)
}
