package console_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/mock"
	"github.com/stint-broker/stint/broker/users"
	"github.com/stint-broker/stint/web"
	"github.com/stint-broker/stint/web/console"
	"github.com/stint-broker/stint/web/openapitest"
)

// loginFrom posts the console login form to h as if from addr and returns
// the response.
func loginFrom(h http.Handler, addr, name, password string) *httptest.ResponseRecorder {
	csrf := strings.Repeat("c", 43)
	form := url.Values{"name": {name}, "password": {password}, "_csrf": {csrf}}
	req := httptest.NewRequest("POST", "/console/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: "stint_login_csrf", Value: csrf})
	req.RemoteAddr = addr + ":40000"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestConsoleLoginThrottle: after the free failures of an account at an
// address, attempts are refused with 429 and Retry-After before any
// password is hashed, even the right password, until the lock ends; other
// addresses are not held by that lock; a login gives its attempt back.
func TestConsoleLoginThrottle(t *testing.T) {
	f := newConsoleFixture(t)
	clock := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	f.Server.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	f.Users.Now = f.Server.Now
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	h := openapitest.Handler(t, f.Server.Handler())
	rules := broker.DefaultLoginThrottleRules

	for i := range rules.PairFree {
		if rec := loginFrom(h, "203.0.113.5", "rita", "wrong password!"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("wrong password %d = %d, want 401", i+1, rec.Code)
		}
	}
	before := f.Users.PasswordChecks()
	for _, password := range []string{"wrong password!", consolePassword} {
		rec := loginFrom(h, "203.0.113.5", "rita", password)
		if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "1" ||
			!strings.Contains(rec.Body.String(), "Too many failed logins") {
			t.Fatalf("attempt after %d failures = %d (Retry-After %q), want 429 with Retry-After 1 and the reason",
				rules.PairFree, rec.Code, rec.Header().Get("Retry-After"))
		}
		if rec.Header().Get("Set-Cookie") != "" && strings.Contains(rec.Header().Get("Set-Cookie"), "stint_session=") {
			t.Fatal("a throttled attempt got a session")
		}
	}
	if n := f.Users.PasswordChecks() - before; n != 0 {
		t.Fatalf("%d password hashes computed for throttled attempts, want none", n)
	}
	// Another address is not held by this account-and-address lock.
	if rec := loginFrom(h, "198.51.100.9", "rita", consolePassword); rec.Code != http.StatusSeeOther {
		t.Fatalf("rita from another address = %d, want 303 (logged in)", rec.Code)
	}
	// The lock ends.
	advance(time.Second)
	if rec := loginFrom(h, "203.0.113.5", "rita", consolePassword); rec.Code != http.StatusSeeOther {
		t.Fatalf("rita after the lock = %d, want 303 (logged in)", rec.Code)
	}
	// The login cleared the pair's count: five more mistakes are allowed.
	for i := range rules.PairFree {
		if rec := loginFrom(h, "203.0.113.5", "rita", "wrong password!"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("wrong password %d after a login = %d, want 401", i+1, rec.Code)
		}
	}

	// Throttled attempts are audited as failed logins, with the reason.
	kind := broker.AuditUserLoginFailed
	events, _, err := f.DB.FindAuditEvents(context.Background(), broker.AuditFilter{Kind: &kind})
	if err != nil {
		t.Fatal(err)
	}
	throttled := 0
	for _, e := range events {
		if strings.Contains(string(e.Details), `"reason":"throttled"`) {
			throttled++
		}
	}
	if throttled != 2 {
		t.Errorf("%d throttled login failures audited, want 2", throttled)
	}
}

// TestConsoleLoginThrottleParallel: guesses sent at once cannot all pass
// the check before any is counted; only the free failures cost a hash.
func TestConsoleLoginThrottleParallel(t *testing.T) {
	f := newConsoleFixture(t)
	h := openapitest.Handler(t, f.Server.Handler())
	before := f.Users.PasswordChecks()
	var wg sync.WaitGroup
	codes := make(chan int, 40)
	for range 40 {
		wg.Go(func() { codes <- loginFrom(h, "203.0.113.77", "alice", "wrong password!").Code })
	}
	wg.Wait()
	close(codes)
	refused := 0
	for c := range codes {
		if c == http.StatusTooManyRequests {
			refused++
		}
	}
	free := broker.DefaultLoginThrottleRules.PairFree
	if n := f.Users.PasswordChecks() - before; n > int64(free) || refused != 40-free {
		t.Fatalf("40 parallel guesses: %d password hashes, %d refused; want at most %d hashes and %d refused", n, refused, free, 40-free)
	}
}

// refusingTokens is a token endpoint that refuses every client.
type refusingTokens struct{}

func (refusingTokens) Token(context.Context, broker.TokenRequest) (*broker.TokenResponse, error) {
	return nil, broker.Errorf(broker.EUNAUTHORIZED, "Client authentication failed.")
}
func (refusingTokens) Metadata() map[string]any { return map[string]any{} }
func (refusingTokens) JWKS() ([]byte, error)    { return []byte(`{"keys":[]}`), nil }

// TestAuthFailureAuditPerChannel: junk API calls from an address use up
// only the API's audit quota; the console's failed logins and the token
// endpoint's failed client authentications from the same address are
// still recorded.
func TestAuthFailureAuditPerChannel(t *testing.T) {
	f := newConsoleFixture(t)
	s := web.NewServer()
	s.Agents, s.Leases, s.Audit = &mock.AgentService{}, &mock.LeaseService{}, f.DB
	s.Console = &console.Console{Reader: f.DB, Users: users.NewService(f.DB)}
	s.OAuth = refusingTokens{}
	h := s.Handler()
	for range 40 {
		req := httptest.NewRequest("GET", "/v1/leases", nil)
		req.RemoteAddr = "203.0.113.9:40000"
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	if rec := loginFrom(h, "203.0.113.9", "rita", "wrong password!"); rec.Code != http.StatusUnauthorized {
		t.Fatalf("wrong password = %d, want 401", rec.Code)
	}
	req := httptest.NewRequest("POST", "/oauth/token", strings.NewReader("grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("some-client", "wrong-secret")
	req.RemoteAddr = "203.0.113.9:40000"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("token request with a wrong secret = %d, want 401", rec.Code)
	}

	kind := broker.AuditUserLoginFailed
	if _, n, err := f.DB.FindAuditEvents(context.Background(), broker.AuditFilter{Kind: &kind}); err != nil || n != 1 {
		t.Fatalf("%d console login failures audited after API noise (%v), want 1", n, err)
	}
	kind = broker.AuditAuthFailed
	events, n, err := f.DB.FindAuditEvents(context.Background(), broker.AuditFilter{Kind: &kind})
	if err != nil || n != 21 {
		t.Fatalf("%d API and OAuth failures audited (%v), want the API's quota of 20 and the token request", n, err)
	}
	if d := string(events[0].Details); !strings.Contains(d, `"channel":"oauth"`) {
		t.Fatalf("the token endpoint's failure was recorded as %s, want channel oauth", d)
	}
}

// TestConsoleLoginBusy: while every password-check slot is taken, a login
// waits at most its bound and is refused with 503 (the API keeps its
// cores); once a slot frees, logins go through.
func TestConsoleLoginBusy(t *testing.T) {
	f := newConsoleFixture(t)
	h := openapitest.Handler(t, f.Server.Handler())
	release := holdPasswordSlots(t, f.Users, 10*time.Millisecond)
	before := f.Users.PasswordChecks()
	rec := loginFrom(h, "203.0.113.20", "rita", consolePassword)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("login with every slot taken = %d (Retry-After %q), want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	if n := f.Users.PasswordChecks() - before; n != 0 {
		t.Fatalf("%d passwords hashed without a slot", n)
	}
	release()
	if rec := loginFrom(h, "203.0.113.20", "rita", consolePassword); rec.Code != http.StatusSeeOther {
		t.Fatalf("login with a free slot = %d, want 303", rec.Code)
	}
}

// holdPasswordSlots takes every password-check slot of svc, and makes a
// login wait at most wait for one, until release.
func holdPasswordSlots(t *testing.T, svc *users.Service, wait time.Duration) (release func()) {
	t.Helper()
	old := svc.PasswordWait
	svc.PasswordWait = wait
	var held []func()
	for range svc.PasswordSlots {
		r, err := svc.AcquirePasswordSlot(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, r)
	}
	return func() {
		for _, r := range held {
			r()
		}
		svc.PasswordWait = old
	}
}
