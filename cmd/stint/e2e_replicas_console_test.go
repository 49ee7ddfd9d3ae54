package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/postgres/pgtest"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
)

// passwordLogin posts the console's password form to base and returns the
// status and the session cookie, if one was set.
func passwordLogin(tb testing.TB, base, name, password string) (int, *http.Cookie) {
	tb.Helper()
	csrf := strings.Repeat("c", 43)
	form := url.Values{"name": {name}, "password": {password}, "_csrf": {csrf}}
	req, _ := http.NewRequest("POST", base+"/console/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: "stint_login_csrf", Value: csrf})
	resp, err := noRedirect.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == "stint_session" && c.Value != "" {
			return resp.StatusCode, c
		}
	}
	return resp.StatusCode, nil
}

var noRedirect = &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// consoleGet fetches path with the session and returns the status.
func consoleGet(tb testing.TB, base, path string, session *http.Cookie) int {
	tb.Helper()
	req, _ := http.NewRequest("GET", base+path, nil)
	req.AddCookie(session)
	resp, err := noRedirect.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestReplicasConsole runs two replicas with the console on one PostgreSQL
// store: failed logins spread over both replicas lock the account on both;
// a session started on one is good on the other, and a logout on one ends
// it on the other.
func TestReplicasConsole(t *testing.T) {
	_, dsn := pgtest.NewSchema(t)
	dv := vaulttest.Start(t)
	cfg := e2eConfig(t, dv, "unused.db")
	cfg.Store = StoreConfig{Driver: driverPostgres, DSN: dsn}
	cfg.Console.Enabled = true
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a := startStint(t, dv, cfg, nil)
	b := startStint(t, dv, cfg, nil)
	const password = "correct horse battery staple"
	addUser(t, a, "rita", broker.RoleAdmin, password)

	rules := broker.DefaultLoginThrottleRules
	for i := range rules.PairFree {
		s := a
		if i%2 == 1 {
			s = b
		}
		if status, _ := passwordLogin(t, s.url, "rita", "wrong password!"); status != http.StatusUnauthorized {
			t.Fatalf("wrong password %d on %s = %d, want 401", i+1, s.url, status)
		}
	}
	for _, s := range []*stint{a, b} {
		if status, session := passwordLogin(t, s.url, "rita", password); status != http.StatusTooManyRequests || session != nil {
			t.Fatalf("login after %d failures spread over two replicas = %d (session %v), want 429 on both", rules.PairFree, status, session != nil)
		}
	}

	time.Sleep(rules.LockFor(broker.ThrottlePair, rules.PairFree+2) + 500*time.Millisecond)
	status, session := passwordLogin(t, b.url, "rita", password)
	if status != http.StatusSeeOther || session == nil {
		t.Fatalf("login on b after the lock = %d (session %v), want 303 with a session", status, session != nil)
	}
	for _, s := range []*stint{a, b} {
		if st := consoleGet(t, s.url, "/console/leases", session); st != http.StatusOK {
			t.Fatalf("console on %s with b's session = %d, want 200", s.url, st)
		}
	}

	// Logout on a ends the session on b.
	m := hmac.New(sha256.New, []byte(session.Value))
	m.Write([]byte("stint console csrf v1"))
	form := url.Values{"_csrf": {base64.RawURLEncoding.EncodeToString(m.Sum(nil))}}
	req, _ := http.NewRequest("POST", a.url+"/console/logout", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(session)
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "loggedout") {
		t.Fatalf("logout on a = %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if st := consoleGet(t, b.url, "/console/leases", session); st == http.StatusOK {
		t.Fatal("the session ended on a still opens the console on b")
	}
}
