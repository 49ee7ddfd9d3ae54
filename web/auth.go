package web

import (
	"fmt"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/web/console"
)

// actorKey is the echo context key under which authenticate stores the
// actor's String form, for the request log.
const actorKey = console.ActorKey

// publicRoutes are the routes that need no authentication, by route path.
var publicRoutes = map[string]bool{
	"/healthz":    true,
	"/readyz":     true,
	"/robots.txt": true,
	// The OpenAPI document (openapi.go) describes the API; it holds no secret.
	"/openapi.json": true,
	"/openapi.yaml": true,
	// Slack signs its requests; approvals/slack verifies the signature.
	"/slack/interactions": true,
	// OAuth (oauth.go): the token endpoint authenticates its clients itself.
	oauthTokenPath:    true,
	oauthJWKSPath:     true,
	oauthMetadataPath: true,
	// MCP (mcp.go): the protected resource metadata.
	mcpMetadataPath:    true,
	mcpMetadataPathMCP: true,
}

// apiPrefix is where the API lives: every path under it, routed or not,
// needs a credential.
const apiPrefix = "/v1"

// underAPI reports whether path is apiPrefix or below it.
func underAPI(path string) bool {
	return path == apiPrefix || strings.HasPrefix(path, apiPrefix+"/")
}

// authenticate resolves "Authorization: Bearer <secret>" (an agent API key or
// an admin token) to a broker.Actor and puts it on the request context, where
// the services find it. It runs after routing and lets only publicRoutes
// through unauthenticated: a route added without thought is protected
// (checkRouteAuth refuses to start a server with a route outside the API
// that is neither public nor authenticates itself). A path outside the API
// that matches no route (a browser's /favicon.ico) is not an API call: it
// gets its 404 without asking for credentials, so it never counts as a
// failed authentication.
// Every response it lets through is marked no-store: answers to authenticated
// requests are private to the caller.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if publicRoutes[c.Path()] || ownAuthRoute(c.Path()) {
			return next(c)
		}
		if !underAPI(c.Path()) && !underAPI(c.Request().URL.Path) {
			return next(c)
		}
		req := c.Request()
		secret, ok := bearerSecret(req.Header.Get(echo.HeaderAuthorization))
		certs := peerCertificates(req)
		if !ok && (s.Auth == nil || len(certs) == 0) {
			s.recordAuthFailure(c, "", "no bearer credential")
			return broker.Errorf(broker.EUNAUTHORIZED, "Send your API key or access token as \"Authorization: Bearer <key>\", or a client certificate.")
		}
		var actor broker.Actor
		var err error
		if s.Auth != nil {
			// API keys, admin tokens, Stint access tokens (bound to the
			// client certificate when issued over mutual TLS) and client
			// certificates.
			actor, err = s.Auth.AuthenticateRequest(req.Context(), broker.AuthRequest{Bearer: secret, PeerCertificates: certs, SourceIP: c.RealIP()})
		} else {
			actor, err = s.Agents.Authenticate(req.Context(), secret)
		}
		switch broker.ErrorCode(err) {
		case "":
		case broker.ETOOMANY:
			return err
		case broker.EUNAUTHORIZED:
			s.recordAuthFailure(c, secret, broker.ErrorMessage(err))
			return err
		case broker.EUNAVAILABLE, broker.EINTERNAL:
			return err
		default:
			s.recordAuthFailure(c, secret, "refused")
			// Whatever else the service says, the caller is not authenticated;
			// a different answer would let it probe which keys exist.
			return broker.Errorf(broker.EUNAUTHORIZED, "The API key is invalid, expired or revoked.")
		}
		actor.SourceIP = c.RealIP()
		c.SetRequest(req.WithContext(broker.NewContextWithActor(req.Context(), actor)))
		c.Set(actorKey, actor.String())
		c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
		return next(c)
	}
}

// bearerSecret returns the secret of an "Authorization: Bearer <secret>"
// header value. The scheme is case-insensitive (RFC 9110 §11.1).
func bearerSecret(header string) (string, bool) {
	scheme, secret, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	secret = strings.TrimSpace(secret)
	return secret, secret != ""
}

// requireAdmin lets only admins through; it runs after authenticate.
func requireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if actor, ok := broker.ActorFromContext(c.Request().Context()); !ok || !actor.IsAdmin() {
			return broker.Errorf(broker.EFORBIDDEN, "Only an admin may do this.")
		}
		return next(c)
	}
}

// actorOf returns the authenticated actor of the request; authenticate
// guarantees there is one on every /v1 route.
func actorOf(c echo.Context) broker.Actor {
	actor, _ := broker.ActorFromContext(c.Request().Context())
	return actor
}

// checkRouteAuth panics if a route outside the API is neither public nor
// authenticates itself: authenticate lets such paths through, which is
// right only for paths no route serves.
func checkRouteAuth(routes []*echo.Route) {
	for _, r := range routes {
		if r.Method == echo.RouteNotFound || underAPI(r.Path) || publicRoutes[r.Path] || ownAuthRoute(r.Path) {
			continue
		}
		panic(fmt.Sprintf("web: route %s %s is outside %s but neither in publicRoutes nor ownAuthRoute", r.Method, r.Path, apiPrefix))
	}
}

// ownAuthRoute reports whether the route authenticates on its own rather
// than by bearer API key: the console (sessions) and /metrics (its token).
func ownAuthRoute(path string) bool {
	// /mcp takes only access tokens issued for it (mcp.go).
	return path == "/" || path == mcpPath || path == "/metrics" || path == console.BasePath || strings.HasPrefix(path, console.BasePath+"/")
}
