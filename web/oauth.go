package web

import (
	"errors"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/stint-broker/stint/broker"
)

// OAuth endpoint paths.
const (
	oauthTokenPath    = "/oauth/token"
	oauthJWKSPath     = "/oauth/jwks.json"
	oauthMetadataPath = "/.well-known/oauth-authorization-server"
)

// registerOAuthRoutes adds Stint's OAuth 2.0 authorization server when
// s.OAuth is set. The endpoints are public: the token endpoint
// authenticates its clients itself.
func (s *Server) registerOAuthRoutes(e *echo.Echo) {
	if s.OAuth == nil {
		return
	}
	e.POST(oauthTokenPath, s.handleOAuthToken)
	e.GET(oauthJWKSPath, s.handleOAuthJWKS)
	e.GET(oauthMetadataPath, s.handleOAuthMetadata)
}

// handleOAuthToken handles "POST /oauth/token" (RFC 6749 §3.2): a form with
// grant_type client_credentials or token exchange (RFC 8693). The client
// authenticates with HTTP Basic (client_secret_basic), client_id and
// client_secret in the form (client_secret_post), a client assertion
// (private_key_jwt, RFC 7523) or its TLS client certificate
// (tls_client_auth, RFC 8705). Errors are RFC 6749 §5.2 JSON; a failed
// client authentication is 401 with a Basic challenge when the client used
// HTTP Basic (or nothing), and 400 without a challenge otherwise.
func (s *Server) handleOAuthToken(c echo.Context) error {
	req := c.Request()
	_, basic := req.Header[echo.HeaderAuthorization]
	// Until the form is read, only the header is known.
	challenge := basic
	oauthErr := func(err error) error {
		if broker.ErrorCode(err) == broker.EUNAUTHORIZED {
			s.recordAuthFailure(c, "", broker.ErrorMessage(err))
		}
		return &oauthError{err: err, basicChallenge: challenge}
	}
	if mt, _, err := mime.ParseMediaType(req.Header.Get(echo.HeaderContentType)); err != nil || mt != echo.MIMEApplicationForm {
		return oauthErr(broker.Errorf(broker.EINVALID, "The token request must be application/x-www-form-urlencoded."))
	}
	if req.URL.RawQuery != "" {
		return oauthErr(broker.Errorf(broker.EINVALID, "Send token request parameters in the body, not the URL."))
	}
	if err := req.ParseForm(); err != nil {
		var he *echo.HTTPError
		if errors.As(err, &he) {
			return err // the body limit tripped
		}
		return oauthErr(broker.Errorf(broker.EINVALID, "The token request body cannot be parsed."))
	}
	form := req.PostForm
	for k, v := range form {
		if len(v) > 1 {
			return oauthErr(broker.Errorf(broker.EINVALID, "Parameter %q is repeated.", k))
		}
	}
	// A client that tried no method may be told the one HTTP scheme.
	challenge = basic || !form.Has("client_secret") && !form.Has("client_assertion") && !form.Has("client_assertion_type") &&
		len(peerCertificates(req)) == 0
	tr := broker.TokenRequest{
		GrantType:           form.Get("grant_type"),
		ClientAssertionType: form.Get("client_assertion_type"),
		ClientAssertion:     form.Get("client_assertion"),
		FormClientID:        form.Get("client_id"),
		Scope:               form.Get("scope"),
		Resource:            form.Get("resource"),
		SubjectToken:        form.Get("subject_token"),
		SubjectTokenType:    form.Get("subject_token_type"),
		ActorToken:          form.Get("actor_token"),
		RequestedTokenType:  form.Get("requested_token_type"),
		PeerCertificates:    peerCertificates(req),
		SourceIP:            c.RealIP(),
	}
	if basic {
		user, pass, ok := req.BasicAuth()
		if !ok {
			return oauthErr(broker.Errorf(broker.EUNAUTHORIZED, "The token endpoint takes HTTP Basic client authentication only in the Authorization header."))
		}
		// RFC 6749 §2.3.1: both are form-encoded before Basic encoding.
		id, err1 := url.QueryUnescape(user)
		secret, err2 := url.QueryUnescape(pass)
		if err1 != nil || err2 != nil {
			return oauthErr(broker.Errorf(broker.EUNAUTHORIZED, "The HTTP Basic credentials are malformed."))
		}
		tr.ClientID, tr.ClientSecret, tr.BasicAuth = id, secret, true
	}
	if form.Has("client_secret") {
		// client_secret_post (RFC 6749 §2.3.1).
		if basic {
			return oauthErr(broker.Errorf(broker.EINVALID, "Use one client authentication method, not both HTTP Basic and client_secret in the body."))
		}
		tr.ClientID, tr.ClientSecret, tr.PostSecret = tr.FormClientID, form.Get("client_secret"), true
	}
	resp, err := s.OAuth.Token(req.Context(), tr)
	if err != nil {
		return oauthErr(err)
	}
	h := c.Response().Header()
	h.Set(echo.HeaderCacheControl, "no-store")
	h.Set("Pragma", "no-cache")
	return c.JSON(http.StatusOK, resp)
}

// handleOAuthJWKS handles "GET /oauth/jwks.json": the public keys that
// verify Stint's access tokens.
func (s *Server) handleOAuthJWKS(c echo.Context) error {
	data, err := s.OAuth.JWKS()
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "public, max-age=300")
	return c.Blob(http.StatusOK, "application/jwk-set+json", data)
}

// handleOAuthMetadata handles "GET /.well-known/oauth-authorization-server"
// (RFC 8414).
func (s *Server) handleOAuthMetadata(c echo.Context) error {
	c.Response().Header().Set(echo.HeaderCacheControl, "public, max-age=300")
	return c.JSON(http.StatusOK, s.OAuth.Metadata())
}

// oauthErrorResponse is the RFC 6749 §5.2 error body.
type oauthErrorResponse struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description,omitempty"`
}

// oauthErrorCode maps a token endpoint error to its RFC 6749 §5.2 (and RFC
// 8693 §2.2.2) code and status, as broker.TokenService documents.
func oauthErrorCode(err error) (string, int) {
	switch broker.ErrorCode(err) {
	case broker.EUNAUTHORIZED:
		return "invalid_client", http.StatusUnauthorized
	case broker.EFORBIDDEN:
		return "unauthorized_client", http.StatusBadRequest
	case broker.EINVALID:
		switch broker.ErrorField(err) {
		case "grant_type":
			return "unsupported_grant_type", http.StatusBadRequest
		case "scope":
			return "invalid_scope", http.StatusBadRequest
		case "audience":
			return "invalid_target", http.StatusBadRequest
		case "grant":
			return "invalid_grant", http.StatusBadRequest
		}
		return "invalid_request", http.StatusBadRequest
	case broker.ETOOMANY:
		return "temporarily_unavailable", http.StatusTooManyRequests
	case broker.EUNAVAILABLE:
		return "temporarily_unavailable", http.StatusServiceUnavailable
	case broker.ENOTFOUND:
		return "invalid_request", http.StatusNotFound
	}
	return "server_error", http.StatusInternalServerError
}

// writeOAuthError renders an oauthError; handleError calls it.
func (s *Server) writeOAuthError(c echo.Context, oe *oauthError) {
	code, status := oauthErrorCode(oe.err)
	msg := broker.ErrorMessage(oe.err)
	if status == http.StatusInternalServerError {
		s.Logger.ErrorContext(c.Request().Context(), "token request failed", "request_id", requestID(c), "err", oe.err)
	}
	h := c.Response().Header()
	h.Set(echo.HeaderCacheControl, "no-store")
	h.Set("Pragma", "no-cache")
	if status == http.StatusUnauthorized {
		if !oe.basicChallenge {
			// No HTTP authentication scheme was used: RFC 6749 §5.2's
			// default status, and no challenge that would tell a client to
			// retry with Basic and hide the error body.
			status = http.StatusBadRequest
		} else {
			h.Set(echo.HeaderWWWAuthenticate, `Basic realm="stint", charset="UTF-8"`)
		}
	}
	setRetryAfter(h, oe.err)
	if err := c.JSON(status, oauthErrorResponse{Error: code, ErrorDescription: msg}); err != nil {
		s.Logger.WarnContext(c.Request().Context(), "write error response", "request_id", requestID(c), "err", err)
	}
}

// setRetryAfter sets Retry-After (whole seconds) when err carries one.
func setRetryAfter(h http.Header, err error) {
	var be *broker.Error
	if errors.As(err, &be) && be.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((be.RetryAfter+time.Second-1)/time.Second)))
	}
}
