package console_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker/mock"
	"github.com/stint-broker/stint/broker/users"
	"github.com/stint-broker/stint/web"
	"github.com/stint-broker/stint/web/console"
)

// TestConsoleOIDCAcrossReplicas: two consoles on one store with the same
// configuration, as replicas behind a load balancer: a login started on
// one completes on the other (the flow cookie's key comes from the
// configuration, not from the process), and the session it starts is good
// on both. A console with another client secret refuses the cookie.
func TestConsoleOIDCAcrossReplicas(t *testing.T) {
	p := newTestProvider(t)
	baseA, db := newOIDCConsole(t, p)
	oidcB := &console.OIDC{Issuer: p.URL, ClientID: p.ClientID, ClientSecret: "s3cret", RedirectURL: baseA + "/console/login/oidc/callback"}
	newConsole := func(o *console.OIDC) string {
		s := web.NewServer()
		s.Agents = &mock.AgentService{}
		s.Leases = &mock.LeaseService{}
		s.Audit = db
		s.Metrics = web.NewMetrics(db, time.Now)
		s.Console = &console.Console{Reader: db, Users: users.NewService(db), OIDC: o}
		s.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		srv := httptest.NewServer(s.Handler())
		t.Cleanup(srv.Close)
		return srv.URL
	}
	baseB := newConsole(oidcB)
	toB := func(u *url.URL) {
		b, _ := url.Parse(baseB)
		u.Host = b.Host
	}

	hc := newJarClient()
	p.set("sso@example.com", nil)
	resp, body := ssoLogin(t, hc, baseA, "/console/audit", toB)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/audit" {
		t.Fatalf("callback on replica B of a login started on A = %d %q\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	for _, base := range []string{baseA, baseB} {
		resp, err := hc.Get(base + "/console/audit")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("audit page on %s with the session B started = %d, want 200", base, resp.StatusCode)
		}
	}

	// Another client secret, another key: the cookie is refused.
	baseC := newConsole(&console.OIDC{Issuer: p.URL, ClientID: p.ClientID, ClientSecret: "another", RedirectURL: baseA + "/console/login/oidc/callback"})
	toC := func(u *url.URL) {
		c, _ := url.Parse(baseC)
		u.Host = c.Host
	}
	resp, body = ssoLogin(t, newJarClient(), baseA, "/console/audit", toC)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("callback on a console with another client secret = %d, want 401\n%s", resp.StatusCode, body)
	}
}
