package web

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/web/console"
)

// Defaults applied by NewServer.
const (
	// DefaultRequestTimeout bounds the context of every request.
	DefaultRequestTimeout = 15 * time.Second
	// DefaultShutdownTimeout is how long Close waits for in-flight requests
	// when its context has no deadline.
	DefaultShutdownTimeout = 20 * time.Second

	// bodyLimit caps every request body; the API takes small JSON objects.
	bodyLimit = "64K"
)

// Server is Stint's HTTP API. Set its fields, then call Open to listen, or
// Handler to serve it from elsewhere (tests). Fields must not change after the
// first call to Handler or Open.
type Server struct {
	// Leases runs the lease lifecycle.
	Leases broker.LeaseService
	// Agents registers agents and authenticates every /v1 request.
	Agents broker.AgentService
	// Auth, when set, authenticates requests instead of Agents.Authenticate:
	// bearer API keys, admin tokens and access tokens, and client
	// certificates (tls.go).
	Auth broker.Authenticator
	// OAuth, when set, serves the OAuth token endpoint, its metadata and
	// JWKS (oauth.go).
	OAuth broker.TokenService
	// TLS, when set, makes Open serve HTTPS (TLS 1.3) with client
	// certificates off, optional or required (tls.go).
	TLS *TLSConfig
	// Logger receives one line per request and every internal error. It
	// never receives a credential, an API key or an Authorization header.
	Logger *slog.Logger
	// Now returns the current time; it can be mocked in tests.
	Now func() time.Time

	// Audit records failed authentications (and the console's actions);
	// nil records nothing.
	Audit broker.AuditLog
	// Metrics, when set, counts failed authentications and, with a token
	// hash, serves GET /metrics (metrics.go).
	Metrics *Metrics
	// Console, when set, serves the web console under /console
	// (web/console), with this server's lease service, audit log and
	// failed-login accounting.
	Console *console.Console
	// Approvals lets approvers list and decide pending leases (approval.go);
	// nil answers 404 on those routes.
	Approvals broker.ApprovalService
	// Reviews runs access reviews and break-glass post-reviews
	// (governance.go); nil answers 404 on those routes.
	Reviews broker.ReviewService
	// MCP, when set, serves the streamable HTTP MCP endpoint /mcp and its
	// protected resource metadata (mcp.go).
	MCP *MCPEndpoint
	// SlackInteractions, when set, serves POST /slack/interactions (Slack's
	// signed button clicks); approvals/slack builds it (slack.go).
	SlackInteractions http.Handler

	// Wrap, when set, wraps the handler that Open serves. Tests use it to
	// check every exchange against the OpenAPI document
	// (openapitest.Wrap); Handler is never wrapped.
	Wrap func(http.Handler) http.Handler

	// RequestTimeout bounds each request's context; handlers and the services
	// they call must honour it.
	RequestTimeout time.Duration
	// ReadHeaderTimeout, ReadTimeout, WriteTimeout and IdleTimeout configure
	// the http.Server that Open starts. WriteTimeout must exceed
	// RequestTimeout, or slow answers are cut off without an error body.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration

	once    sync.Once
	echo    *echo.Echo
	ln      net.Listener
	server  *http.Server
	serveCh chan error

	authFailures authFailureLimiter // caps audit records of failed logins per channel and address
}

// NewServer returns a Server with a discarding logger, the real clock and
// default timeouts. The caller sets Leases and Agents.
func NewServer() *Server {
	return &Server{
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now:               time.Now,
		RequestTimeout:    DefaultRequestTimeout,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      DefaultRequestTimeout + 15*time.Second,
		IdleTimeout:       120 * time.Second,
	}
}

// Handler returns the API as an http.Handler: middleware, routes and the
// error handler. It builds the router on its first call.
func (s *Server) Handler() http.Handler {
	s.once.Do(s.build)
	return s.echo
}

// build assembles echo. The middleware order matters (research/ecosystem.md
// §3): Secure runs before BodyLimit so that early rejections still carry the
// security headers, and the request logger runs outside Recover so that
// panics are logged with their final status.
func (s *Server) build() {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	// Without this, c.RealIP trusts X-Forwarded-For from any client. Stint
	// listens directly; a deployment behind a proxy must change it.
	e.IPExtractor = echo.ExtractIPDirect()
	// Handlers decode request bodies themselves (strict JSON), never c.Bind.
	e.Binder = refuseBinder{}

	e.Pre(dropUnsafeRequestID)
	e.Use(middleware.RequestID())
	e.Use(middleware.SecureWithConfig(middleware.SecureConfig{
		XSSProtection:         "0",
		ContentTypeNosniff:    "nosniff",
		XFrameOptions:         "DENY",
		HSTSMaxAge:            31536000,
		ContentSecurityPolicy: "default-src 'none'; frame-ancestors 'none'",
		ReferrerPolicy:        "no-referrer",
	}))
	e.Use(middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
		HandleError:   true, // so the logged status is the one the error handler chose
		LogMethod:     true,
		LogURIPath:    true,
		LogRoutePath:  true,
		LogStatus:     true,
		LogRequestID:  true,
		LogRemoteIP:   true,
		LogLatency:    true,
		LogValuesFunc: s.logRequest,
	}))
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		DisableStackAll: true,
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			// The error handler logs it as an internal error, stack included.
			return fmt.Errorf("recovered panic: %w\n%s", err, stack)
		},
	}))
	e.Use(middleware.BodyLimit(bodyLimit))
	// The long poll of GET /v1/leases/:id?wait= sets its own deadline.
	// So does /mcp, whose tools may wait for a human approval.
	e.Use(middleware.ContextTimeoutWithConfig(middleware.ContextTimeoutConfig{Timeout: s.RequestTimeout, Skipper: func(c echo.Context) bool {
		return isLongPoll(c) || c.Path() == mcpPath
	}}))
	// Every route but the public ones needs a bearer API key or admin token;
	// so do unknown paths under /v1 and wrong methods, so that a stranger
	// learns nothing about the API. Unknown paths elsewhere are not API
	// calls and get a plain 404.
	e.Use(s.authenticate)

	s.registerHealthRoutes(e)
	s.registerOpenAPIRoutes(e)

	v1 := e.Group("/v1")
	s.registerLeaseRoutes(v1)
	s.registerTaskRoutes(v1)
	s.registerRoleRoutes(v1)
	s.registerAgentRoutes(v1)
	s.registerApprovalRoutes(v1)
	s.registerGovernanceRoutes(v1)
	s.registerMCPCallRoutes(v1)
	s.registerSlackRoutes(e)

	s.registerOAuthRoutes(e)
	s.registerMCPRoutes(e)
	s.registerMetricsRoutes(e)
	if s.Console != nil {
		s.Console.Mount(e, console.Host{
			Leases: s.Leases, Approvals: s.Approvals, Audit: s.Audit, Logger: s.Logger, Now: s.Now,
			LoginFailed: func(c echo.Context, reason string, details map[string]any) {
				s.recordAuthFailureAs(c, "console", "anonymous", "", reason, details)
			},
		})
	}
	checkRouteAuth(e.Routes())

	s.echo = e
}

// logRequest writes the request's log line. It logs the route, never headers
// or bodies, so that no API key or credential reaches the log.
func (s *Server) logRequest(c echo.Context, v middleware.RequestLoggerValues) error {
	attrs := []slog.Attr{
		slog.String("request_id", v.RequestID),
		slog.String("method", v.Method),
		slog.String("path", v.URIPath),
		slog.String("route", v.RoutePath),
		slog.Int("status", v.Status),
		slog.Duration("latency", v.Latency),
		slog.String("remote_ip", v.RemoteIP),
	}
	if actor, ok := c.Get(actorKey).(string); ok {
		attrs = append(attrs, slog.String("actor", actor))
	}
	level := slog.LevelInfo
	if v.Status >= 500 {
		level = slog.LevelWarn
	}
	s.Logger.LogAttrs(c.Request().Context(), level, "http request", attrs...)
	return nil
}

// Open listens on addr (such as "127.0.0.1:8080", or ":0" for any free port)
// and serves the API in the background until Close.
func (s *Server) Open(addr string) error {
	if s.Leases == nil || s.Agents == nil {
		return errors.New("web: Leases and Agents are required")
	}
	var tlsCfg *tls.Config
	if s.TLS != nil {
		var err error
		if tlsCfg, err = s.TLS.tlsConfig(); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	s.ln = ln
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	handler := s.Handler()
	if s.Wrap != nil {
		handler = s.Wrap(handler)
	}
	s.server = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: s.ReadHeaderTimeout,
		ReadTimeout:       s.ReadTimeout,
		WriteTimeout:      s.WriteTimeout,
		IdleTimeout:       s.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.Logger.Handler(), slog.LevelWarn),
	}
	s.serveCh = make(chan error, 1)
	go func() { s.serveCh <- s.server.Serve(ln) }()
	return nil
}

// Addr returns the address Open listens on, or nil before Open.
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// URL returns the base URL of the listening server, such as
// "http://127.0.0.1:41234" ("https://…" with TLS), or "" before Open.
func (s *Server) URL() string {
	if s.ln == nil {
		return ""
	}
	if s.TLS != nil {
		return "https://" + s.ln.Addr().String()
	}
	return "http://" + s.ln.Addr().String()
}

// Close stops accepting connections and waits for in-flight requests to
// finish until ctx is done (DefaultShutdownTimeout if ctx has no deadline),
// then closes the remaining connections. Close without Open, or a second
// Close, does nothing.
func (s *Server) Close(ctx context.Context) error {
	if s.server == nil {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultShutdownTimeout)
		defer cancel()
	}
	err := s.server.Shutdown(ctx)
	if err != nil {
		// Graceful shutdown ran out of time: drop what is left.
		err = errors.Join(fmt.Errorf("shut down http server: %w", err), s.server.Close())
	}
	if serveErr := <-s.serveCh; serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, fmt.Errorf("serve http: %w", serveErr))
	}
	s.server = nil
	return err
}

// dropUnsafeRequestID discards a client-sent X-Request-Id that is long or
// holds characters other than letters, digits, '-', '_' and '.', so that the
// RequestID middleware generates one instead: the id is echoed in responses
// and written to logs.
func dropUnsafeRequestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Request().Header
		if id := h.Get(echo.HeaderXRequestID); id != "" && !safeRequestID(id) {
			h.Del(echo.HeaderXRequestID)
		}
		return next(c)
	}
}

func safeRequestID(id string) bool {
	if len(id) > 128 {
		return false
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return false
		}
	}
	return true
}

// refuseBinder makes any use of c.Bind fail loudly: echo's binder ignores
// unknown fields and merges path, query and body values, which is how mass
// assignment happens. Handlers use decodeJSON.
type refuseBinder struct{}

// Bind implements echo.Binder.
func (refuseBinder) Bind(any, echo.Context) error {
	return errors.New("web: c.Bind is disabled; use decodeJSON")
}

// Route is one method and path the server answers, as registered (":id" and
// "*" as written in the route).
type Route struct {
	Method string
	Path   string
}

// Routes returns every route the server registers, sorted by path then
// method, so that a test can check each against an authorization table: a
// route added without a row there fails the test.
func (s *Server) Routes() []Route {
	s.once.Do(s.build)
	var out []Route
	for _, r := range s.echo.Routes() {
		out = append(out, Route{Method: r.Method, Path: r.Path})
	}
	slices.SortFunc(out, func(a, b Route) int {
		if c := strings.Compare(a.Path, b.Path); c != 0 {
			return c
		}
		return strings.Compare(a.Method, b.Method)
	})
	return slices.Compact(out)
}
