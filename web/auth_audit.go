package web

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/stint-broker/stint/broker"
)

// apiKeyPrefix starts every agent API key (broker/identity.KeyPrefix). Only
// secrets that start with it have a recordable public prefix; of anything
// else (a mistyped admin token, say) nothing is recorded.
const apiKeyPrefix = "stint_ak_"

// apiKeyShownLen is how much of an API key is public: the prefix and six
// characters, as broker.APIKey.Prefix keeps it.
const apiKeyShownLen = len(apiKeyPrefix) + 6

// authFailureBurst is how many failed authentications per channel (API,
// console, ...) and source address are written to the audit log per
// authFailureWindow; the rest are counted and the count is written with the
// next recorded one. Metrics count all. Without the cap, anyone could fill
// the append-only log; with one quota per channel, noise on one (junk API
// calls) never hides failures on another (console logins). The quota is
// kept per replica: it bounds how much the audit log grows, and decides
// nothing else (the login throttle, which does, is in the store).
const (
	authFailureBurst  = 20
	authFailureWindow = time.Minute
)

// authFailureLimiter caps audit records of failed authentications per
// channel and source address.
type authFailureLimiter struct {
	mu      sync.Mutex
	windows map[string]*failureWindow
	swept   time.Time
}

type failureWindow struct {
	start      time.Time
	recorded   int
	suppressed int
}

// allow reports whether a failure on channel from ip at now may be
// recorded, and how many of that channel and address were suppressed since
// the last recorded one.
func (l *authFailureLimiter) allow(channel, ip string, now time.Time) (bool, int) {
	key := channel + " " + ip
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.windows == nil {
		l.windows = map[string]*failureWindow{}
	}
	if now.Sub(l.swept) > authFailureWindow {
		for k, w := range l.windows {
			if now.Sub(w.start) > authFailureWindow && w.suppressed == 0 {
				delete(l.windows, k)
			}
		}
		l.swept = now
	}
	w := l.windows[key]
	if w == nil {
		w = &failureWindow{start: now}
		l.windows[key] = w
	}
	if now.Sub(w.start) > authFailureWindow {
		w.start, w.recorded = now, 0
	}
	if w.recorded >= authFailureBurst {
		w.suppressed++
		return false, 0
	}
	w.recorded++
	n := w.suppressed
	w.suppressed = 0
	return true, n
}

// recordAuthFailure counts a failed authentication and records it in the
// audit log: source address, route, reason and, for an API key, its public
// prefix. The secret itself is never recorded or logged.
// Failures at the OAuth token endpoint (client authentication) are their
// own channel, "oauth"; the rest of the API's are "api".
func (s *Server) recordAuthFailure(c echo.Context, secret, reason string) {
	channel := "api"
	if c.Path() == oauthTokenPath {
		channel = "oauth"
	}
	s.recordAuthFailureAs(c, channel, "anonymous", secret, reason, nil)
}

// recordAuthFailureAs is recordAuthFailure for any channel, with extra
// details (such as the user name of a console login).
func (s *Server) recordAuthFailureAs(c echo.Context, channel, actor, secret, reason string, extra map[string]any) {
	if s.Metrics != nil {
		s.Metrics.ObserveAuthFailure(channel)
	}
	if s.Audit == nil {
		return
	}
	ip := c.RealIP()
	ok, suppressed := s.authFailures.allow(channel, ip, s.Now())
	if !ok {
		return
	}
	d := map[string]any{"channel": channel, "source_ip": ip, "method": c.Request().Method, "route": c.Path(), "reason": reason}
	switch {
	case secret == "":
	case strings.HasPrefix(secret, apiKeyPrefix) && len(secret) > apiKeyShownLen:
		d["credential"] = "api_key"
		d["key_prefix"] = secret[:apiKeyShownLen]
	default:
		d["credential"] = "other"
	}
	if suppressed > 0 {
		d["suppressed_before"] = suppressed
	}
	for k, v := range extra {
		d[k] = v
	}
	kind := broker.AuditAuthFailed
	if channel == "console" {
		kind = broker.AuditUserLoginFailed
	}
	// The audit write must not depend on the caller staying connected.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), 5*time.Second)
	defer cancel()
	if err := s.Audit.Record(ctx, broker.AuditEvent{Kind: kind, Actor: actor, Details: broker.AuditDetails(d)}); err != nil {
		s.Logger.ErrorContext(ctx, "record failed authentication", "request_id", requestID(c), "err", err)
	}
}
