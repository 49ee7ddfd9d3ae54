package console_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/stint-broker/stint/broker"
)

// countAudit returns how many audit events of kind the store holds.
func countAudit(t *testing.T, f *consoleFixture, kind string) int {
	t.Helper()
	_, n, err := f.DB.FindAuditEvents(context.Background(), broker.AuditFilter{Kind: &kind})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNoiseIsNotEvidence: what a browser asks for on its own (a favicon,
// robots.txt, touch icons) and the console's assets are not API calls: they
// never reach API authentication, so they write no failed-authentication
// audit event. Unknown paths under /v1 still need a credential.
func TestNoiseIsNotEvidence(t *testing.T) {
	f := newConsoleFixture(t)
	for _, tc := range []struct {
		path   string
		status int
	}{
		{"/favicon.ico", http.StatusNotFound},
		{"/robots.txt", http.StatusOK},
		{"/apple-touch-icon.png", http.StatusNotFound},
		{"/apple-touch-icon-precomposed.png", http.StatusNotFound},
		{"/.well-known/security.txt", http.StatusNotFound},
		{"/console/static/console.css", http.StatusOK},
		{"/console/static/htmx.min.js", http.StatusOK},
		{"/no/such/page", http.StatusNotFound},
	} {
		methods := []string{"GET", "HEAD"}
		if tc.status == http.StatusOK {
			methods = methods[:1]
		}
		for _, method := range methods {
			req, _ := http.NewRequest(method, f.URL+tc.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("%s %s = %d, want %d", method, tc.path, resp.StatusCode, tc.status)
			}
			if h := resp.Header.Get("WWW-Authenticate"); h != "" {
				t.Errorf("%s %s asks for credentials (%s): it is not an API call", method, tc.path, h)
			}
		}
	}
	if n := countAudit(t, f, broker.AuditAuthFailed); n != 0 {
		t.Errorf("%d auth.failed events after browser noise, want none", n)
	}

	// /robots.txt keeps crawlers out of everything.
	resp, err := http.Get(f.URL + "/robots.txt")
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 256)
	n, _ := resp.Body.Read(b)
	resp.Body.Close()
	if body := string(b[:n]); !strings.Contains(body, "Disallow: /") || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("GET /robots.txt = %q (%s), want text/plain disallowing everything", body, resp.Header.Get("Content-Type"))
	}

	// API calls without a credential are still refused, and recorded.
	for _, path := range []string{"/v1/leases", "/v1/no-such-route", "/v1"} {
		resp, err := http.Get(f.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a credential = %d, want 401", path, resp.StatusCode)
		}
	}
	if n := countAudit(t, f, broker.AuditAuthFailed); n != 3 {
		t.Errorf("%d auth.failed events after 3 unauthenticated API calls, want 3", n)
	}
}
