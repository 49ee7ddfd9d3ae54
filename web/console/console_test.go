package console_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/mock"
	"github.com/stint-broker/stint/broker/sqlite"
	"github.com/stint-broker/stint/broker/users"
	"github.com/stint-broker/stint/web"
	"github.com/stint-broker/stint/web/console"
)

const consolePassword = "correct horse battery"

// consoleFixture is a server with the console on a real SQLite store and a
// mock lease service that records revocations.
type consoleFixture struct {
	URL     string
	DB      *sqlite.DB
	Path    string // the database file
	Server  *web.Server
	Users   *users.Service
	Revoked []string // "id reason actor"
	Lease   *broker.Lease
}

// newConsoleFixture builds the fixture; opts change the server before it
// starts.
func newConsoleFixture(t *testing.T, opts ...func(*web.Server)) *consoleFixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "stint.db")
	db, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f := &consoleFixture{DB: db, Path: path}
	ctx := broker.NewContextWithActor(context.Background(), broker.Actor{Kind: broker.ActorAdmin, Name: "test"})

	a := &broker.Agent{Name: "etl-bot", Owner: "owner@example.com", State: broker.AgentActive}
	if err := db.CreateAgent(ctx, a); err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(10 * time.Minute)
	f.Lease = &broker.Lease{AgentID: a.ID, Agent: a.Name, Role: "db-readonly", TTL: broker.Duration(15 * time.Minute),
		Task: `<script>alert("task")</script>`, Justification: `"><img src=x onerror=alert(1)>`,
		State: broker.LeaseActive, ExpiresAt: &exp, Decision: "auto-approved <b>bold</b>", RiskScore: 25,
		RiskFactors: []broker.RiskFactor{{Name: "first_use", Points: 15, Detail: "first request for role db-readonly"}}}
	if err := db.CreateLease(ctx, f.Lease, "agent:etl-bot", "granted"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []struct {
		name  string
		role  broker.UserRole
		email string
	}{{"alice", broker.RoleAdmin, ""}, {"rita", broker.RoleReviewer, ""}, {"otto", broker.RoleApprover, "owner@example.com"}} {
		hash, err := users.HashPassword(consolePassword)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.CreateUser(ctx, &broker.User{Name: u.name, Role: u.role, Email: u.email, PasswordHash: hash}); err != nil {
			t.Fatal(err)
		}
	}

	s := web.NewServer()
	s.Agents = &mock.AgentService{AuthenticateFn: func(context.Context, string) (broker.Actor, error) {
		return broker.Actor{}, broker.Errorf(broker.EUNAUTHORIZED, "The API key is invalid, expired or revoked.")
	}}
	s.Leases = &mock.LeaseService{RevokeLeaseFn: func(ctx context.Context, id, reason string) (*broker.Lease, error) {
		actor, _ := broker.ActorFromContext(ctx)
		f.Revoked = append(f.Revoked, id+" "+reason+" "+actor.String())
		l := *f.Lease
		l.State = broker.LeaseRevoked
		return &l, nil
	}, RevokeTaskFn: func(ctx context.Context, task, reason string) ([]*broker.Lease, error) {
		actor, _ := broker.ActorFromContext(ctx)
		f.Revoked = append(f.Revoked, "task "+task+" "+reason+" "+actor.String())
		l := *f.Lease
		l.State = broker.LeaseRevoked
		return []*broker.Lease{&l}, nil
	}}
	s.Audit = db
	s.Metrics = web.NewMetrics(db, time.Now)
	f.Users = users.NewService(db)
	s.Console = &console.Console{Reader: db, Users: f.Users}
	s.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, o := range opts {
		o(s)
	}
	f.Server = s
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// browser is an HTTP client with cookies that does not follow redirects.
type browser struct {
	t    *testing.T
	base string
	hc   *http.Client
	csrf string
}

func (f *consoleFixture) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: f.URL, hc: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

var csrfInput = regexp.MustCompile(`name="_csrf" value="([^"]+)"`)

// get fetches a page and remembers its CSRF token.
func (b *browser) get(path string) (*http.Response, string) {
	b.t.Helper()
	resp, err := b.hc.Get(b.base + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if m := csrfInput.FindSubmatch(body); m != nil {
		b.csrf = string(m[1])
	}
	return resp, string(body)
}

// post submits a form; withCSRF adds the remembered token.
func (b *browser) post(path string, form url.Values, withCSRF bool) (*http.Response, string) {
	b.t.Helper()
	if withCSRF {
		form.Set("_csrf", b.csrf)
	}
	resp, err := b.hc.PostForm(b.base+path, form)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func (b *browser) login(name string) {
	b.t.Helper()
	b.get("/console/login")
	resp, body := b.post("/console/login", url.Values{"name": {name}, "password": {consolePassword}, "next": {"/console/history"}}, true)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/history" {
		b.t.Fatalf("login %s = %d %s\n%s", name, resp.StatusCode, resp.Header.Get("Location"), body)
	}
	b.get("/console/history") // takes the session's CSRF token
}

func TestConsole(t *testing.T) {
	f := newConsoleFixture(t)

	t.Run("NoSessionGetsLoginPage", func(t *testing.T) {
		b := f.browser(t)
		for _, path := range []string{"/console/leases", "/console/audit", "/console/leases/" + f.Lease.ID, "/console/nowhere", "/"} {
			resp, _ := b.get(path)
			loc := resp.Header.Get("Location")
			if resp.StatusCode != http.StatusSeeOther || (!strings.HasPrefix(loc, "/console/login") && loc != "/console/leases") {
				t.Errorf("GET %s without a session = %d → %q, want a redirect to the login page", path, resp.StatusCode, loc)
			}
		}
		resp, body := b.get("/console/login")
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `type="password"`) {
			t.Fatalf("login page = %d\n%s", resp.StatusCode, body)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Fatalf("console CSP = %q", csp)
		}
	})

	t.Run("APIKeepsJSON401", func(t *testing.T) {
		resp, err := http.Get(f.URL + "/v1/leases")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") ||
			resp.Header.Get("Content-Security-Policy") != "default-src 'none'; frame-ancestors 'none'" {
			t.Fatalf("API without auth = %d %s %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Security-Policy"), body)
		}
	})

	t.Run("LoginNeedsCSRF", func(t *testing.T) {
		b := f.browser(t)
		b.get("/console/login")
		resp, _ := b.post("/console/login", url.Values{"name": {"alice"}, "password": {consolePassword}}, false)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("login without CSRF token = %d, want 403", resp.StatusCode)
		}
	})

	t.Run("WrongPasswordAudited", func(t *testing.T) {
		b := f.browser(t)
		b.get("/console/login")
		resp, body := b.post("/console/login", url.Values{"name": {"alice"}, "password": {"not the password!"}}, true)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Wrong name or password") {
			t.Fatalf("wrong password = %d\n%s", resp.StatusCode, body)
		}
		kind := broker.AuditUserLoginFailed
		events, _, err := f.DB.FindAuditEvents(t.Context(), broker.AuditFilter{Kind: &kind})
		if err != nil || len(events) == 0 || !strings.Contains(string(events[0].Details), `"user":"alice"`) ||
			strings.Contains(string(events[0].Details), "not the password") {
			t.Fatalf("login_failed events = %v, %v", events, err)
		}
	})

	t.Run("SessionCookie", func(t *testing.T) {
		b := f.browser(t)
		b.get("/console/login")
		resp, _ := b.post("/console/login", url.Values{"name": {"alice"}, "password": {consolePassword}}, true)
		var session *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == "stint_session" {
				session = c
			}
		}
		if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteLaxMode || session.Path != "/console" {
			t.Fatalf("session cookie = %+v", session)
		}
		// Only the token's hash is stored.
		sum := sha256.Sum256([]byte(session.Value))
		if _, err := f.DB.FindSession(t.Context(), hex.EncodeToString(sum[:]), time.Now(), time.Now().Add(time.Minute)); err != nil {
			t.Fatalf("session by hash: %v", err)
		}
		if _, err := f.DB.FindSession(t.Context(), session.Value, time.Now(), time.Now()); broker.ErrorCode(err) != broker.ENOTFOUND {
			t.Fatalf("session by clear token = %v, want ENOTFOUND", err)
		}
	})

	t.Run("ScriptIsEscaped", func(t *testing.T) {
		b := f.browser(t)
		b.login("rita")
		for _, path := range []string{"/console/history", "/console/leases/" + f.Lease.ID, "/console/leases", "/console/audit"} {
			resp, body := b.get(path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s = %d\n%s", path, resp.StatusCode, body)
			}
			if strings.Contains(body, `<script>alert`) || strings.Contains(body, `<img src=x`) || strings.Contains(body, "<b>bold") {
				t.Fatalf("GET %s renders user text as markup:\n%s", path, body)
			}
		}
		_, body := b.get("/console/leases/" + f.Lease.ID)
		if !strings.Contains(body, "&lt;script&gt;alert(&#34;task&#34;)&lt;/script&gt;") {
			t.Fatalf("lease page lacks the escaped task:\n%s", body)
		}
		if !strings.Contains(body, "+15 first_use: first request for role db-readonly") {
			t.Fatalf("lease page lacks the risk score's parts:\n%s", body)
		}
	})

	t.Run("ReviewerCannotRevoke", func(t *testing.T) {
		b := f.browser(t)
		b.login("rita")
		n := len(f.Revoked)
		resp, body := b.post("/console/leases/"+f.Lease.ID+"/revoke", url.Values{"reason": {"test"}}, true)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Your role (reviewer) may not do this.") {
			t.Fatalf("reviewer revoke = %d\n%s", resp.StatusCode, body)
		}
		if len(f.Revoked) != n {
			t.Fatal("the lease service was called for a reviewer")
		}
		if _, body := b.get("/console/leases"); strings.Contains(body, "/revoke") {
			t.Fatal("the live page offers a reviewer the revoke form")
		}
	})

	t.Run("PostWithoutCSRFRefused", func(t *testing.T) {
		b := f.browser(t)
		b.login("alice")
		n := len(f.Revoked)
		resp, _ := b.post("/console/leases/"+f.Lease.ID+"/revoke", url.Values{"reason": {"test"}}, false)
		if resp.StatusCode != http.StatusForbidden || len(f.Revoked) != n {
			t.Fatalf("revoke without CSRF = %d, %d revocations; want 403 and none", resp.StatusCode, len(f.Revoked)-n)
		}
		// A token from another session does not do either.
		other := f.browser(t)
		other.login("rita")
		b.csrf = other.csrf
		resp, _ = b.post("/console/leases/"+f.Lease.ID+"/revoke", url.Values{"reason": {"test"}}, true)
		if resp.StatusCode != http.StatusForbidden || len(f.Revoked) != n {
			t.Fatalf("revoke with another session's token = %d, want 403", resp.StatusCode)
		}
	})

	t.Run("AdminRevokes", func(t *testing.T) {
		b := f.browser(t)
		b.login("alice")
		resp, body := b.post("/console/leases/"+f.Lease.ID+"/revoke", url.Values{"reason": {"incident 9"}}, true)
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("admin revoke = %d\n%s", resp.StatusCode, body)
		}
		want := f.Lease.ID + " incident 9 admin:user/alice"
		if len(f.Revoked) == 0 || f.Revoked[len(f.Revoked)-1] != want {
			t.Fatalf("revocations = %q, want last %q", f.Revoked, want)
		}
	})

	t.Run("AgentsPageCounts", func(t *testing.T) {
		b := f.browser(t)
		b.login("rita")
		resp, body := b.get("/console/agents")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("agents page = %d\n%s", resp.StatusCode, body)
		}
		// etl-bot holds the fixture's one lease, live.
		row := regexp.MustCompile(`(?s)<tr>\s*<td><a [^>]*>etl-bot</a>.*?</tr>`).FindString(body)
		cells := regexp.MustCompile(`<td>(\d+)</td>\s*<td>(\d+)</td>`).FindStringSubmatch(row)
		if cells == nil || cells[1] != "1" || cells[2] != "1" {
			t.Fatalf("etl-bot's row shows live/total %v, want 1 and 1:\n%s", cells, row)
		}
	})

	t.Run("HistoryFiltersAndExports", func(t *testing.T) {
		b := f.browser(t)
		b.login("rita")
		_, body := b.get("/console/history?agent=etl-bot&state=active")
		if !strings.Contains(body, f.Lease.ID[:12]) {
			t.Fatal("history filtered on the lease's agent and state lacks it")
		}
		_, body = b.get("/console/history?agent=nobody")
		if strings.Contains(body, f.Lease.ID[:12]) || !strings.Contains(body, "No agent has that name") {
			t.Fatal("history filtered on an unknown agent shows leases")
		}
		resp, body := b.get("/console/history?state=bogus")
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Unknown lease state") {
			t.Fatalf("bad state filter = %d", resp.StatusCode)
		}
		resp, body = b.get("/console/history?format=csv&owner=owner@example.com")
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, f.Lease.ID) || !strings.HasPrefix(body, "id,state,") {
			t.Fatalf("csv export = %d\n%s", resp.StatusCode, body)
		}
		resp, body = b.get("/console/audit?format=json&kind=lease.")
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"kind":"lease.created"`) {
			t.Fatalf("audit export = %d\n%s", resp.StatusCode, body)
		}
	})

	t.Run("FullValuesEndedByAndMintedUser", func(t *testing.T) {
		// A second lease, minted and then revoked by an admin.
		ctx := broker.NewContextWithActor(context.Background(), broker.Actor{Kind: broker.ActorAdmin, Name: "test"})
		exp := time.Now().Add(10 * time.Minute)
		ended := &broker.Lease{AgentID: f.Lease.AgentID, Agent: "etl-bot", Role: "db-readonly", TTL: broker.Duration(15 * time.Minute),
			Task: "ended", State: broker.LeaseIssuing}
		if err := f.DB.CreateLease(ctx, ended, "agent:etl-bot", "granted"); err != nil {
			t.Fatal(err)
		}
		const user = "v-token-db-readonly-AbCdEf123456"
		for _, upd := range []broker.LeaseUpdate{
			{From: []broker.LeaseState{broker.LeaseIssuing}, State: ptr(broker.LeaseActive), VaultLeaseID: ptr("database/creds/ro/xyz"),
				Username: ptr(user), ExpiresAt: &exp, Actor: "agent:etl-bot", Reason: "credential minted"},
			{From: []broker.LeaseState{broker.LeaseActive}, State: ptr(broker.LeaseRevoking), EndState: ptr(broker.LeaseRevoked),
				Actor: "admin:alice", Reason: "incident 12"},
			{From: []broker.LeaseState{broker.LeaseRevoking}, State: ptr(broker.LeaseRevoked), EndedAt: ptr(time.Now()),
				Actor: "system:revocation-queue", Reason: "revoked in Vault"},
		} {
			if _, err := f.DB.UpdateLease(ctx, ended.ID, upd); err != nil {
				t.Fatal(err)
			}
		}
		b := f.browser(t)
		b.login("rita")

		// History: an "Ended by" column naming who ended it (the admin, not
		// the queue that confirmed it), and whole ids on demand.
		_, body := b.get("/console/history")
		if !strings.Contains(body, "<th>Ended by</th>") {
			t.Fatal("history has no Ended by column")
		}
		row := regexp.MustCompile(`(?s)<tr>\s*<td>[^\n]*` + ended.ID + `.*?</tr>`).FindString(body)
		if !strings.Contains(row, `title="incident 12">admin:alice</span>`) {
			t.Fatalf("history row of the revoked lease does not say it was ended by admin:alice:\n%s", row)
		}
		for _, id := range []string{ended.ID, f.Lease.ID} {
			if !strings.Contains(body, `title="`+id+`"`) || !strings.Contains(body, `data-copy="`+id+`"`) {
				t.Fatalf("history shows lease %s cut short with no way to get it whole", id)
			}
		}

		// The lease page: the minted user, who ended it, copy buttons.
		_, body = b.get("/console/leases/" + ended.ID)
		for _, want := range []string{"<dt>Minted user</dt>", user, `data-copy="` + user + `"`, `data-copy="` + ended.ID + `"`,
			`data-copy="database/creds/ro/xyz"`, "<dt>Ended by</dt><dd>admin:alice: incident 12</dd>"} {
			if !strings.Contains(body, want) {
				t.Errorf("lease page lacks %q", want)
			}
		}
		// Every audit hash on the page can be had whole.
		events, _, err := f.DB.FindAuditEvents(ctx, broker.AuditFilter{Subject: &ended.ID, Limit: 10})
		if err != nil || len(events) == 0 {
			t.Fatalf("audit events: %v, %v", events, err)
		}
		for _, e := range events {
			if !strings.Contains(body, `data-copy="`+e.Hash+`"`) {
				t.Errorf("lease page shows audit hash %s only cut short", e.Hash)
			}
		}
		_, body = b.get("/console/audit?subject=" + ended.ID)
		for _, e := range events {
			if !strings.Contains(body, `data-copy="`+e.Hash+`"`) || !strings.Contains(body, `data-copy="`+e.PrevHash+`"`) {
				t.Errorf("audit page shows hash %s or its predecessor only cut short", e.Hash)
			}
		}

		// The exports carry the minted user and who ended each lease.
		_, body = b.get("/console/history?format=csv")
		if !strings.Contains(body, ",username,ended_by\n") || !strings.Contains(body, ",database/creds/ro/xyz,"+user+",admin:alice\n") {
			t.Fatalf("csv export lacks the username and ended_by columns:\n%s", body)
		}
		_, body = b.get("/console/history?format=json")
		if !strings.Contains(body, `"username":"`+user+`"`) || !strings.Contains(body, `"ended_by":{"`+ended.ID+`":"admin:alice"}`) {
			t.Fatalf("json export lacks the username or ended_by:\n%s", body)
		}

		// The copy buttons work without inline code: console.js handles them.
		resp, js := b.get("/console/static/console.js")
		if resp.StatusCode != http.StatusOK || !strings.Contains(js, "button[data-copy]") || !strings.Contains(js, "clipboard.writeText") {
			t.Fatalf("console.js = %d, lacks the copy handler", resp.StatusCode)
		}
	})

	t.Run("VerifyAndLogout", func(t *testing.T) {
		b := f.browser(t)
		b.login("rita")
		resp, _ := b.post("/console/audit/verify", url.Values{}, true)
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("verify = %d", resp.StatusCode)
		}
		_, body := b.get("/console/audit")
		if !strings.Contains(body, "Intact:") {
			t.Fatalf("audit page after verify lacks the status:\n%s", body)
		}
		resp, _ = b.post("/console/logout", url.Values{}, true)
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("logout = %d", resp.StatusCode)
		}
		if resp, _ := b.get("/console/leases"); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("after logout = %d, want the login page", resp.StatusCode)
		}
	})
}

// TestConsoleAssets checks that the vendored htmx is the file its comment
// names.
func TestConsoleAssets(t *testing.T) {
	b, err := os.ReadFile("static/htmx.min.js")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if got, want := hex.EncodeToString(sum[:]), "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"; got != want {
		t.Fatalf("static/htmx.min.js sha256 = %s, want %s (htmx.org 2.0.11)", got, want)
	}
}

func ptr[T any](v T) *T { return &v }

// TestConsoleTasks: the tasks page lists the tasks with live leases and
// shows every lease of one task, with the task's text escaped; an admin
// revokes the task's live leases with a reason through the lease service,
// a reviewer may look but not revoke.
func TestConsoleTasks(t *testing.T) {
	f := newConsoleFixture(t)
	task := f.Lease.Task // holds markup: it must come out escaped
	admin := f.browser(t)
	admin.login("alice")

	resp, body := admin.get("/console/tasks")
	link := "/console/tasks?task=" + url.QueryEscape(task)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `<table class="grid" id="tasks">`) || strings.Contains(body, `<script>alert("task")`) {
		t.Fatalf("GET /console/tasks = %d\n%s", resp.StatusCode, body)
	}
	if !strings.Contains(body, `<a href="/console/tasks?task=%3cscript%3ealert%28%22task%22%29%3c%2fscript%3e">`) {
		t.Fatalf("the tasks list does not link the task's page:\n%s", body)
	}

	resp, body = admin.get(link)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, f.Lease.ID) || !strings.Contains(body, "Revoke the task's 1 live leases") ||
		strings.Contains(body, `<script>alert("task")`) {
		t.Fatalf("GET %s as an admin = %d\n%s", link, resp.StatusCode, body)
	}
	if _, body := admin.get("/console/tasks?task=no+such+task"); !strings.Contains(body, "No lease names this task.") {
		t.Fatalf("an unknown task:\n%s", body)
	}

	reviewer := f.browser(t)
	reviewer.login("rita")
	if resp, body := reviewer.get(link); resp.StatusCode != http.StatusOK || !strings.Contains(body, f.Lease.ID) || strings.Contains(body, "/console/tasks/revoke") {
		t.Fatalf("GET %s as a reviewer = %d, want the leases without the revoke form\n%s", link, resp.StatusCode, body)
	}
	if resp, _ := reviewer.post("/console/tasks/revoke", url.Values{"task": {task}, "reason": {"mine"}}, true); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a reviewer's revoke = %d, want 403", resp.StatusCode)
	}
	if resp, _ := admin.post("/console/tasks/revoke", url.Values{"task": {task}, "reason": {" "}}, true); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a revoke without a reason = %d, want 400", resp.StatusCode)
	}
	if len(f.Revoked) != 0 {
		t.Fatalf("refused revokes reached the service: %v", f.Revoked)
	}

	resp, _ = admin.post("/console/tasks/revoke", url.Values{"task": {task}, "reason": {"incident 12"}}, true)
	want := "/console/tasks?" + url.Values{"task": {task}, "done": {"task"}}.Encode()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != want {
		t.Fatalf("revoke = %d → %q, want 303 → %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	if len(f.Revoked) != 1 || f.Revoked[0] != "task "+task+" incident 12 admin:user/alice" {
		t.Fatalf("revocations = %q", f.Revoked)
	}
	if _, body := admin.get(want); !strings.Contains(body, "Every live lease of the task was revoked or withdrawn.") {
		t.Fatalf("no notice after the revoke:\n%s", body)
	}
}
