package console

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/stint-broker/stint/broker"
)

// The console is server-rendered HTML (html/template) made lively with htmx.
// Every asset is embedded; nothing loads from elsewhere.
//
// static/htmx.min.js is htmx.org 2.0.11's dist/htmx.min.js, vendored from
// `npm pack htmx.org@2.0.11`, 52,182 bytes,
// sha256 d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717.
// To refresh it, pack the new version, copy the file and update this hash
// (TestConsoleAssets checks it).
//
//go:embed templates/*.html static/*
var consoleFS embed.FS

// Console is the web console's configuration and dependencies. Humans log in
// with a name and password (console users, managed with "stint users") or,
// with OIDC set, through single sign-on matched by email, and get a
// server-side session; roles decide what they may do: reviewers read
// and export, approvers also decide pending leases (never their own agent's),
// admins also revoke leases and pull agents' access.
//
// The console reads through Reader, which cannot change anything, and
// changes state only through services: the lease and approvals services
// the JSON API uses (Host), and Users, each with the logged-in user as the
// actor.
type Console struct {
	// Reader is what the pages read.
	Reader Reader
	// Users logs people in and keeps their sessions (broker/users).
	Users broker.UserService
	// SecureCookies marks cookies Secure even on plain HTTP requests, for a
	// console behind a TLS-terminating proxy. Requests that arrive over TLS
	// always get Secure cookies.
	SecureCookies bool
	// OIDC, when set, adds "Sign in with SSO" (oidc.go).
	OIDC *OIDC
	// Checkpoints, when set, are the signed audit checkpoints kept outside
	// the store, and CheckpointKey the public key they must verify with:
	// the console's verify then also fails a chain that lost its newest
	// events or was rewritten (broker.VerifyAudit).
	Checkpoints   broker.AuditCheckpointSource
	CheckpointKey ed25519.PublicKey

	host      Host
	once      sync.Once
	pages     map[string]*template.Template
	verifyMu  sync.Mutex
	lastCheck *broker.AuditVerification
}

// Reader is everything the console's pages read: leases with their
// events, endings and approvals, agents with their lease counts, and the
// audit chain. It has no method that changes anything; both stores
// implement it.
type Reader interface {
	FindLeases(ctx context.Context, filter broker.LeaseFilter) ([]*broker.Lease, int, error)
	FindLeaseByID(ctx context.Context, id string) (*broker.Lease, error)
	FindLeaseEvents(ctx context.Context, leaseID string) ([]*broker.LeaseEvent, error)
	FindLeaseEndings(ctx context.Context, leaseIDs []string) (map[string]*broker.LeaseEvent, error)
	FindApprovals(ctx context.Context, leaseID string) ([]*broker.Approval, error)
	FindAgentByID(ctx context.Context, id string) (*broker.Agent, error)
	FindAgentByName(ctx context.Context, name string) (*broker.Agent, error)
	FindAgents(ctx context.Context, filter broker.AgentFilter) ([]*broker.Agent, int, error)
	CountAgentLeases(ctx context.Context, agentIDs []string) (map[string]broker.AgentLeaseCount, error)
	broker.AuditReader
}

// Host is what the server that mounts the console lends it.
type Host struct {
	// Leases is the lease service the JSON API uses: revocations and the
	// kill switch go through it.
	Leases broker.LeaseService
	// Approvals, when set, lets approvers decide pending leases here, as
	// the API's approvers do; without it the approvals page lists pending
	// leases read-only.
	Approvals broker.ApprovalService
	// Audit records the console's exports; nil records nothing.
	Audit  broker.AuditLog
	Logger *slog.Logger
	Now    func() time.Time
	// LoginFailed counts and records a failed login (reason, and details
	// such as the user name), under the server's quota of failed
	// authentications per channel and address.
	LoginFailed func(c echo.Context, reason string, details map[string]any)
}

const (
	// BasePath is where the console is served.
	BasePath = "/console"
	// ActorKey is the echo context key under which the request log finds
	// the actor's name; the console puts "user:<name>" there.
	ActorKey = "stint.actor"
)

// Cookie names and context keys. The session cookie holds a random token
// whose SHA-256 is the stored session id; the login cookie holds the
// double-submit token of the login form, the only form shown without a
// session.
const (
	sessionCookie    = "stint_session"
	loginCSRFCookie  = "stint_login_csrf"
	csrfField        = "_csrf"
	csrfHeader       = "X-CSRF-Token"
	consoleKey       = "stint.console"
	consoleUserKey   = "stint.console.user"
	consoleCSRFKey   = "stint.console.csrf"
	consoleTokenKey  = "stint.console.session"
	consoleBasePath  = BasePath
	consoleLoginPath = BasePath + "/login"
)

// consoleCSP allows the console's own scripts and styles and nothing else.
// The JSON API keeps its stricter "default-src 'none'".
const consoleCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Mount serves the console under BasePath on e, with "/" redirecting to
// it. The server calls it once, while it builds its routes.
func (con *Console) Mount(e *echo.Echo, h Host) {
	if h.Logger == nil {
		h.Logger = slog.New(slog.DiscardHandler)
	}
	if h.Now == nil {
		h.Now = time.Now
	}
	if h.LoginFailed == nil {
		h.LoginFailed = func(echo.Context, string, map[string]any) {}
	}
	con.host = h
	con.init()
	e.GET("/", func(c echo.Context) error { return c.Redirect(http.StatusSeeOther, consoleBasePath+"/leases") })

	g := e.Group(consoleBasePath, con.consoleBase)
	// Public: the assets and the login form.
	g.GET("/static/*", con.handleConsoleStatic)
	g.GET("/login", con.handleConsoleLoginForm)
	g.POST("/login", con.handleConsoleLogin)
	if con.OIDC != nil {
		g.GET("/login/oidc", con.handleConsoleOIDCStart)
		g.GET("/login/oidc/callback", con.handleConsoleOIDCCallback)
	}

	// Everything else needs a session.
	a := g.Group("", con.requireSession)
	a.GET("", con.handleConsoleHome)
	a.GET("/", con.handleConsoleHome)
	a.POST("/logout", con.handleConsoleLogout)
	a.GET("/leases", con.handleConsoleLive)
	a.GET("/history", con.handleConsoleHistory)
	a.GET("/leases/:id", con.handleConsoleLease)
	a.GET("/agents", con.handleConsoleAgents)
	a.GET("/tasks", con.handleConsoleTasks)
	a.GET("/containments/:id", con.handleConsoleContainment, requireRole(broker.RoleAdmin))
	a.GET("/approvals", con.handleConsoleApprovals)
	a.GET("/audit", con.handleConsoleAudit)
	a.POST("/audit/verify", con.handleConsoleAuditVerify)

	// Changes, by role.
	a.POST("/leases/:id/revoke", con.handleConsoleLeaseRevoke, requireRole(broker.RoleAdmin))
	a.POST("/tasks/revoke", con.handleConsoleTaskRevoke, requireRole(broker.RoleAdmin))
	a.POST("/agents/:id/revoke-all", con.handleConsoleAgentRevokeAll, requireRole(broker.RoleAdmin))
	a.POST("/agents/:id/disable", con.handleConsoleAgentDisable, requireRole(broker.RoleAdmin))
	a.POST("/approvals/:id/approve", con.handleConsoleApprove, requireRole(broker.RoleAdmin, broker.RoleApprover))
	a.POST("/approvals/:id/deny", con.handleConsoleDeny, requireRole(broker.RoleAdmin, broker.RoleApprover))
}

// init parses the templates and sets defaults.
func (con *Console) init() {
	con.once.Do(func() {
		con.pages = map[string]*template.Template{}
		pages, err := fs.Glob(consoleFS, "templates/*.html")
		if err != nil {
			panic(err)
		}
		for _, p := range pages {
			name := strings.TrimSuffix(strings.TrimPrefix(p, "templates/"), ".html")
			if name == "layout" {
				continue
			}
			con.pages[name] = template.Must(template.New("layout.html").Funcs(consoleFuncs).
				ParseFS(consoleFS, "templates/layout.html", p))
		}
	})
}

// consoleBase runs on every console request: it marks the request as the
// console's (errors render as HTML), sets the console's CSP, forbids caching,
// and checks the CSRF token of every request that is not GET or HEAD.
func (con *Console) consoleBase(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Set(consoleKey, true)
		h := c.Response().Header()
		h.Set("Content-Security-Policy", consoleCSP)
		h.Set("Referrer-Policy", "same-origin")
		h.Set(echo.HeaderCacheControl, "no-store")
		h.Add(echo.HeaderVary, echo.HeaderCookie)

		if c.Path() == consoleBasePath+"/static/*" {
			return next(c)
		}
		token := con.csrfToken(c)
		c.Set(consoleCSRFKey, token)
		switch c.Request().Method {
		case http.MethodGet, http.MethodHead:
			return next(c)
		}
		if !sameOrigin(c) {
			return broker.Errorf(broker.EFORBIDDEN, "The request did not come from this console.")
		}
		sent := c.Request().Header.Get(csrfHeader)
		if sent == "" {
			sent = c.FormValue(csrfField)
		}
		if token == "" || subtle.ConstantTimeCompare([]byte(sent), []byte(token)) != 1 {
			return broker.Errorf(broker.EFORBIDDEN, "The form has expired or did not come from this console: reload the page and try again.")
		}
		return next(c)
	}
}

// sameOrigin reports whether an Origin header, if the browser sent one,
// names this server.
func sameOrigin(c echo.Context) bool {
	origin := c.Request().Header.Get(echo.HeaderOrigin)
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host == c.Request().Host
}

// csrfToken returns the request's CSRF token. With a session cookie it is
// derived from the session token (HMAC-SHA256 keyed by it), so it is bound to
// the session and cannot be planted by another site; before login it is the
// login cookie's double-submit token, issued here when missing.
func (con *Console) csrfToken(c echo.Context) string {
	if ck, err := c.Cookie(sessionCookie); err == nil && ck.Value != "" {
		return deriveCSRF(ck.Value)
	}
	if ck, err := c.Cookie(loginCSRFCookie); err == nil && len(ck.Value) == 43 {
		return ck.Value
	}
	token := randomToken()
	con.setCookie(c, loginCSRFCookie, token, consoleLoginPath, 0)
	return token
}

func deriveCSRF(sessionToken string) string {
	m := hmac.New(sha256.New, []byte(sessionToken))
	m.Write([]byte("stint console csrf v1"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// randomToken returns 32 random bytes, base64url (43 characters).
func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// setCookie sets an HttpOnly, SameSite=Lax cookie on path; maxAge < 0
// deletes it, 0 makes it last for the browser session.
func (con *Console) setCookie(c echo.Context, name, value, path string, maxAge int) {
	c.SetCookie(&http.Cookie{
		Name: name, Value: value, Path: path, MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteLaxMode,
		Secure: c.IsTLS() || con.SecureCookies,
	})
}

// requireSession lets only logged-in, active users through and puts the
// user on the context (and its actor on the request context). Without a
// session the answer is the login page (a redirect to it; htmx requests get
// HX-Redirect).
func (con *Console) requireSession(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		u, token, err := con.consoleSession(c)
		if err != nil {
			return err
		}
		if u == nil {
			return con.toLogin(c)
		}
		c.Set(consoleUserKey, u)
		c.Set(consoleTokenKey, token)
		c.Set(ActorKey, "user:"+u.Name)
		req := c.Request()
		c.SetRequest(req.WithContext(broker.NewContextWithActor(req.Context(), u.Actor(c.RealIP()))))
		return next(c)
	}
}

// consoleSession returns the request's user, or nil without a valid session.
func (con *Console) consoleSession(c echo.Context) (*broker.User, string, error) {
	ck, err := c.Cookie(sessionCookie)
	if err != nil || ck.Value == "" {
		return nil, "", nil
	}
	u, err := con.Users.Session(c.Request().Context(), ck.Value)
	if broker.ErrorCode(err) == broker.ENOTFOUND {
		return nil, "", nil
	} else if err != nil {
		return nil, "", err
	}
	return u, ck.Value, nil
}

// toLogin answers a request without a session: the login page, by way of a
// redirect that remembers where the user was going.
func (con *Console) toLogin(c echo.Context) error {
	target := consoleLoginPath
	if c.Request().Method == http.MethodGet && c.Request().Header.Get("HX-Request") == "" {
		target += "?next=" + url.QueryEscape(c.Request().URL.RequestURI())
	}
	if c.Request().Header.Get("HX-Request") != "" {
		c.Response().Header().Set("HX-Redirect", target)
		return c.NoContent(http.StatusUnauthorized)
	}
	return c.Redirect(http.StatusSeeOther, target)
}

// requireRole lets only users with one of roles through.
func requireRole(roles ...broker.UserRole) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			u := consoleUser(c)
			for _, r := range roles {
				if u.Role == r {
					return next(c)
				}
			}
			return broker.Errorf(broker.EFORBIDDEN, "Your role (%s) may not do this.", u.Role)
		}
	}
}

// consoleUser returns the logged-in user; requireSession guarantees one.
func consoleUser(c echo.Context) *broker.User {
	u, _ := c.Get(consoleUserKey).(*broker.User)
	return u
}

// pageData is what every page template gets.
type pageData struct {
	Title   string
	Nav     string
	User    *broker.User
	CSRF    string
	Flash   string
	Now     time.Time
	Content any
}

// flashes are the messages a redirect may ask for (?done=…); arbitrary text
// is never reflected.
var flashes = map[string]string{
	"revoked":   "Lease revoked.",
	"revoking":  "Revocation requested; Vault has not confirmed it yet, so it is in the retry queue.",
	"killed":    "Every live lease of the agent was revoked.",
	"task":      "Every live lease of the task was revoked or withdrawn.",
	"taskqueue": "The task's leases are ended; some revocations wait for Vault in the retry queue.",
	"disabled":  "Agent disabled; its keys no longer work and its live leases were revoked.",
	"approved":  "Approval recorded.",
	"denied":    "Denial recorded.",
	"verified":  "Audit chain verified.",
	"loggedout": "You are logged out.",
}

// render writes page with data.
func (con *Console) render(c echo.Context, status int, page, nav string, content any) error {
	t := con.pages[page]
	if t == nil {
		return fmt.Errorf("console: no template %q", page)
	}
	data := pageData{
		Title: page, Nav: nav, User: consoleUser(c), CSRF: csrfOf(c), Now: con.host.Now().UTC(),
		Flash: flashes[c.QueryParam("done")], Content: content,
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout.html", data); err != nil {
		return fmt.Errorf("render %s: %w", page, err)
	}
	return c.HTMLBlob(status, buf.Bytes())
}

func csrfOf(c echo.Context) string {
	t, _ := c.Get(consoleCSRFKey).(string)
	return t
}

// Serves reports whether the console is answering c: the server's error
// handler then lets RenderError write the error.
func Serves(c echo.Context) bool {
	return c.Get(consoleKey) != nil
}

// ErrorBody is the caller-safe part of an error: its code and message.
type ErrorBody struct {
	Code    string
	Message string
}

// RenderError is the server's error handler's HTML branch for console
// requests: an error page with the caller-safe message, or the login page
// when a page that does not exist is asked for without a session.
func (con *Console) RenderError(c echo.Context, status int, e ErrorBody, requestID string) {
	if status == http.StatusNotFound && consoleUser(c) == nil {
		if u, _, err := con.consoleSession(c); err == nil && u == nil {
			con.toLogin(c)
			return
		}
	}
	if c.Request().Header.Get("HX-Request") != "" {
		// htmx swaps nothing on an error status: show the message instead.
		c.Response().Header().Set("HX-Retarget", "#flash")
		c.Response().Header().Set("HX-Reswap", "innerHTML")
		c.HTML(http.StatusOK, `<div class="flash error" role="alert">`+template.HTMLEscapeString(e.Message)+`</div>`)
		return
	}
	if err := con.render(c, status, "error", "", errorPage{Status: status, Code: e.Code, Message: e.Message, RequestID: requestID}); err != nil {
		c.String(status, e.Message)
	}
}

type errorPage struct {
	Status    int
	Code      string
	Message   string
	RequestID string
}

// handleConsoleStatic serves the embedded assets with a long cache life; the
// file names do not change between versions, so the life is an hour.
func (con *Console) handleConsoleStatic(c echo.Context) error {
	name := c.Param("*")
	if name == "" || strings.Contains(name, "..") || strings.Contains(name, "/") {
		return echo.ErrNotFound
	}
	b, err := consoleFS.ReadFile("static/" + name)
	if err != nil {
		return echo.ErrNotFound
	}
	ctype := "application/octet-stream"
	switch {
	case strings.HasSuffix(name, ".js"):
		ctype = "text/javascript; charset=utf-8"
	case strings.HasSuffix(name, ".css"):
		ctype = "text/css; charset=utf-8"
	case strings.HasSuffix(name, ".svg"):
		ctype = "image/svg+xml"
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "public, max-age=3600")
	return c.Blob(http.StatusOK, ctype, b)
}

// handleConsoleHome sends the user to the live leases.
func (con *Console) handleConsoleHome(c echo.Context) error {
	return c.Redirect(http.StatusSeeOther, consoleBasePath+"/leases")
}

// loginPage is the login form's content.
type loginPage struct {
	Next  string
	Name  string
	Error string
	// SSO shows the "Sign in with SSO" button.
	SSO bool
}

// handleConsoleLoginForm handles "GET /console/login".
func (con *Console) handleConsoleLoginForm(c echo.Context) error {
	if u, _, err := con.consoleSession(c); err == nil && u != nil {
		return c.Redirect(http.StatusSeeOther, safeNext(c.QueryParam("next")))
	}
	return con.render(c, http.StatusOK, "login", "", loginPage{Next: safeNext(c.QueryParam("next")), SSO: con.OIDC != nil})
}

// safeNext keeps a post-login redirect inside the console.
func safeNext(next string) string {
	if !strings.HasPrefix(next, consoleBasePath+"/") || strings.HasPrefix(next, "//") ||
		strings.ContainsAny(next, "\\\r\n") || strings.HasPrefix(next, consoleLoginPath) {
		return consoleBasePath + "/leases"
	}
	return next
}

// handleConsoleLogin handles "POST /console/login": name and password. A
// wrong name and a wrong password look the same, and take the same time.
// The users service counts each attempt in the login throttle before the
// password is checked; a throttled attempt gets 429 with Retry-After and
// costs no password hash, whatever it sends.
func (con *Console) handleConsoleLogin(c echo.Context) error {
	name, password := strings.TrimSpace(c.FormValue("name")), c.FormValue("password")
	next := safeNext(c.FormValue("next"))
	page := loginPage{Next: next, Name: name, SSO: con.OIDC != nil}
	u, err := con.Users.Login(c.Request().Context(), name, password, c.RealIP())
	var failed *broker.LoginFailure
	var e *broker.Error
	switch {
	case errors.As(err, &failed):
		con.host.LoginFailed(c, failed.Reason, map[string]any{"user": limitText(name, 64)})
		page.Error = broker.ErrorMessage(err)
		return con.render(c, http.StatusUnauthorized, "login", "", page)
	case errors.As(err, &e) && e.Code == broker.ETOOMANY:
		con.host.LoginFailed(c, "throttled", map[string]any{"user": limitText(name, 64)})
		setRetryAfter(c.Response().Header(), e.RetryAfter)
		page.Error = e.Message
		return con.render(c, http.StatusTooManyRequests, "login", "", page)
	case err != nil:
		return err
	}
	return con.startSession(c, u, "password", next)
}

// startSession logs u in through the users service (method "password" or
// "oidc"), sets the session cookie and redirects to next, which the caller
// made safe.
func (con *Console) startSession(c echo.Context, u *broker.User, method, next string) error {
	ctx := c.Request().Context()
	token, sess, err := con.Users.StartSession(ctx, u, broker.SessionStart{
		Method: method, SourceIP: c.RealIP(), UserAgent: limitText(c.Request().UserAgent(), 256)})
	if err != nil {
		return err
	}
	con.setCookie(c, sessionCookie, token, consoleBasePath, int(sess.ExpiresAt.Sub(sess.CreatedAt)/time.Second))
	con.setCookie(c, loginCSRFCookie, "", consoleLoginPath, -1)
	con.host.Logger.InfoContext(ctx, "console login", "user", u.Name, "role", u.Role, "method", method, "remote_ip", c.RealIP())
	return c.Redirect(http.StatusSeeOther, next)
}

// handleConsoleLogout handles "POST /console/logout".
func (con *Console) handleConsoleLogout(c echo.Context) error {
	token, _ := c.Get(consoleTokenKey).(string)
	if err := con.Users.Logout(c.Request().Context(), token, consoleUser(c), c.RealIP()); err != nil {
		return err
	}
	con.setCookie(c, sessionCookie, "", consoleBasePath, -1)
	return c.Redirect(http.StatusSeeOther, consoleLoginPath+"?done=loggedout")
}

// limitText cuts s to at most n bytes on a rune boundary.
func limitText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// withTimeout returns a context for work that must finish even if the
// browser goes away (a revocation).
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}
