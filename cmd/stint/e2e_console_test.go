package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/users"
	"github.com/stint-broker/stint/leases/vault"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
)

// chromiumPath is where Debian's chromium package puts the browser.
const chromiumPath = "/usr/bin/chromium"

// lockedBuffer collects log output from many goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// artifactDir returns where screenshots go: STINT_TEST_ARTIFACTS, or a new
// temporary folder that outlives the test. It logs the path.
func artifactDir(t *testing.T) string {
	dir := os.Getenv("STINT_TEST_ARTIFACTS")
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "stint-artifacts-"); err != nil {
			t.Fatal(err)
		}
	}
	dir = filepath.Join(dir, t.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// browserContext starts headless Chromium for the test. Outside CI a missing
// browser skips the test; under CI=true it fails it.
func browserContext(t *testing.T) context.Context {
	if _, err := exec.LookPath(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chromium is required under CI: %v (apt-get install chromium chromium-driver)", err)
		}
		t.Skipf("no %s: apt-get install chromium chromium-driver to run the console in a browser", chromiumPath)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.WindowSize(1400, 1000),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// dialogs accepts every JavaScript dialog (htmx's hx-confirm) and records
// its message, so that a test can tell a confirmation from injected script.
type dialogs struct {
	mu   sync.Mutex
	seen []string
}

func (d *dialogs) listen(ctx context.Context) error {
	return chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			d.mu.Lock()
			d.seen = append(d.seen, e.Message)
			d.mu.Unlock()
			go chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	})
}

func (d *dialogs) messages() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.seen...)
}

// TestConsoleInBrowser drives the console in headless Chromium against a
// Stint wired like the binary, with the real Vault and PostgreSQL: log in,
// filter the history, open a lease's timeline, revoke a live lease and see
// its PostgreSQL credential stop working. Screenshots are kept.
func TestConsoleInBrowser(t *testing.T) {
	dv := vaulttest.Start(t)
	ctx := browserContext(t)
	shots := artifactDir(t)

	logs := &lockedBuffer{}
	cfg := e2eConfig(t, dv, filepath.Join(t.TempDir(), "stint.db"))
	s := startStintLogged(t, dv, cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))

	const adminPassword, reviewerPassword = "admin-console-pw-9f3b", "reviewer-pw-77c1aa"
	addUser(t, s, "alice", broker.RoleAdmin, adminPassword)
	addUser(t, s, "rita", broker.RoleReviewer, reviewerPassword)

	_, key := s.newAgent(t, "etl")
	liveID, cred := s.lease(t, key, "db-readonly", "10m")
	endedID, _ := s.lease(t, key, "db-readonly", "10m")
	if status, body := s.call(t, "DELETE", "/v1/leases/"+endedID, key, nil); status != http.StatusOK {
		t.Fatalf("release = %d %v", status, body)
	}
	// A lease whose task is script: the console must show it as text.
	xssStatus, xss := s.call(t, "POST", "/v1/leases", key, map[string]string{"role": "db-readonly", "ttl": "10m",
		"task": `<script>alert("xss-task")</script>`, "justification": `<img src=x onerror="alert('xss-just')">`})
	if xssStatus != http.StatusCreated {
		t.Fatalf("xss lease = %d %v", xssStatus, xss)
	}
	xssID := xss["id"].(string)
	mustLogIn(t, cred).Close(context.Background())
	// A failed authentication, for the audit log and the log scan.
	s.call(t, "GET", "/v1/leases", key[:len(key)-4]+"AAAA", nil)

	var d dialogs
	if err := d.listen(ctx); err != nil {
		t.Fatal(err)
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return v
	}
	location := func() string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// waitUntil evaluates js until it is true. A chromedp.Poll started
	// before a form's navigation dies with the page it started on (or waits
	// out its timeout there), which a busy machine made likely: each
	// evaluation here is its own call, on whatever page is there by then.
	waitUntil := func(what, js string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			ectx, cancel := context.WithTimeout(ctx, 2*time.Second)
			ok, err := chromedp.Run(ectx, chromedp.Evaluate[bool](js))
			cancel()
			if err == nil && ok {
				return
			}
			if time.Now().After(deadline) {
				shot("failed-" + strings.ReplaceAll(what, " ", "-"))
				t.Fatalf("%s: still false after 20s (last error: %v)", what, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := chromedp.Do(tctx, steps...); err != nil {
			shot("failed-" + strings.ReplaceAll(what, " ", "-"))
			t.Fatalf("%s: %v", what, err)
		}
	}

	// No session: the login page.
	do("open the console", chromedp.Navigate(s.url+"/console/leases"), chromedp.WaitVisible(chromedp.CSS(`input[name=password]`)))
	if loc := location(); !strings.Contains(loc, "/console/login") {
		t.Fatalf("without a session the console is at %s, want the login page", loc)
	}
	shot("01-login")

	// Log in as the admin; the browser lands where it was going.
	do("log in",
		chromedp.SendKeys(chromedp.CSS(`input[name=name]`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), adminPassword),
		chromedp.Submit(chromedp.CSS(`input[name=password]`)),
		chromedp.WaitVisible(chromedp.ID("live")),
	)
	if loc := location(); !strings.HasSuffix(loc, "/console/leases") {
		t.Fatalf("after login at %s, want /console/leases", loc)
	}
	if live := text("#live"); !strings.Contains(live, liveID[:12]) || !strings.Contains(live, "etl") {
		t.Fatalf("live leases lack %s:\n%s", liveID, live)
	}
	shot("02-live")

	// Filter the history: the released lease, and only it.
	do("filter history",
		chromedp.Navigate(s.url+"/console/history"),
		chromedp.WaitVisible(chromedp.CSS(`form.filters`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=agent]`), "etl"),
		chromedp.SetValue(chromedp.CSS(`select[name=state]`), "released"),
		chromedp.Click(chromedp.CSS(`form.filters button[type=submit]`)),
	)
	// The unfiltered page already shows the lease: wait for the filtered
	// page itself before reading it. The table shows short ids, which two
	// leases created within the same few milliseconds share (UUIDv7), so
	// the check reads the full ids from the links.
	waitUntil("filter history", fmt.Sprintf(`location.search.includes("state=released") &&
		((h) => h !== null && h.innerHTML.includes(%q) && !h.innerHTML.includes(%q))(document.querySelector("#history"))`,
		endedID, liveID))
	hist, err := chromedp.Run(ctx, chromedp.InnerHTML(chromedp.CSS("#history")))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(hist, liveID) || !strings.Contains(hist, endedID) {
		t.Fatalf("history filtered on released shows:\n%s", hist)
	}
	if loc := location(); !strings.Contains(loc, "state=released") || !strings.Contains(loc, "agent=etl") {
		t.Fatalf("history URL %s does not keep the filter", loc)
	}
	shot("03-history-filtered")

	// Script in task and justification is text, never run.
	do("open the xss lease", chromedp.Navigate(s.url+"/console/leases/"+xssID), chromedp.WaitVisible(chromedp.CSS(`.timeline`)))
	if body := text("main"); !strings.Contains(body, `<script>alert("xss-task")</script>`) || !strings.Contains(body, `<img src=x onerror="alert('xss-just')">`) {
		t.Fatalf("the lease page does not show the task and justification as text:\n%s", body)
	}
	shot("04-escaped")

	// Open the live lease's timeline from the history.
	do("open the timeline",
		chromedp.Navigate(s.url+"/console/history?agent=etl&state=active"),
		chromedp.WaitVisible(chromedp.CSS(`#history a[href="/console/leases/`+liveID+`"]`)),
		chromedp.Click(chromedp.CSS(`#history a[href="/console/leases/`+liveID+`"]`)),
		chromedp.WaitVisible(chromedp.CSS(`.timeline`)),
	)
	if tl := text(".timeline"); !strings.Contains(tl, "REQUESTED") && !strings.Contains(tl, "requested") || !strings.Contains(tl, "active") || !strings.Contains(tl, "agent:etl") {
		t.Fatalf("timeline:\n%s", tl)
	}
	shot("05-timeline")

	// Revoke it with a reason; Vault revokes the PostgreSQL user.
	do("revoke",
		chromedp.SendKeys(chromedp.CSS(`form.revoke input[name=reason]`), "console e2e: suspected leak"),
		chromedp.Click(chromedp.CSS(`form.revoke button`)),
		chromedp.WaitVisible(chromedp.CSS(`#flash .flash`)),
	)
	if flash := text("#flash"); !strings.Contains(flash, "Lease revoked.") {
		t.Fatalf("after revoke the flash says %q", flash)
	}
	shot("06-revoked")
	l, err := s.DB.FindLeaseByID(context.Background(), liveID)
	if err != nil || l.State != broker.LeaseRevoked {
		t.Fatalf("lease after console revoke = %v, %v; want revoked", l, err)
	}
	mustNotLogIn(t, cred)
	events, _ := s.DB.FindLeaseEvents(context.Background(), liveID)
	if e := events[len(events)-2]; e.Actor != "admin:user/alice" || e.Reason != "console e2e: suspected leak" {
		t.Fatalf("revocation recorded as %+v", e)
	}

	// The audit page: verify the chain.
	do("verify the chain",
		chromedp.Navigate(s.url+"/console/audit"),
		chromedp.WaitVisible(chromedp.CSS(`form[action="/console/audit/verify"] button`)),
		chromedp.Click(chromedp.CSS(`form[action="/console/audit/verify"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`p.ok#chain-status`)),
	)
	shot("07-audit")

	// Only the revoke confirmation was a dialog: no injected script ran.
	for _, m := range d.messages() {
		if m != "Revoke this lease now?" {
			t.Fatalf("unexpected dialog %q: script ran", m)
		}
	}
	if len(d.messages()) == 0 {
		t.Fatal("the revoke asked for no confirmation")
	}

	// A reviewer sees no revoke controls, and a forged POST is refused.
	do("log out", chromedp.Click(chromedp.CSS(`form.who button`)), chromedp.WaitVisible(chromedp.CSS(`input[name=password]`)))
	do("log in as reviewer",
		// A fresh page load, so that no swap of the logout response is still
		// in flight when the form is filled in.
		chromedp.Navigate(s.url+"/console/login"),
		chromedp.WaitVisible(chromedp.CSS(`input[name=password]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=name]`), "rita"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), reviewerPassword),
		chromedp.Submit(chromedp.CSS(`input[name=password]`)),
		chromedp.WaitVisible(chromedp.ID("live")),
		chromedp.Navigate(s.url+"/console/leases/"+xssID),
		chromedp.WaitVisible(chromedp.CSS(`.timeline`)),
	)
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('form.revoke').length`)); err != nil || n != 0 {
		t.Fatalf("reviewer sees %d revoke forms (%v)", n, err)
	}
	status, err := chromedp.Run(ctx, chromedp.Evaluate[int](`(async () => {
		const csrf = document.querySelector('input[name=_csrf]').value;
		const r = await fetch('/console/leases/`+xssID+`/revoke', {method: 'POST',
			headers: {'Content-Type': 'application/x-www-form-urlencoded'},
			body: '_csrf=' + encodeURIComponent(csrf) + '&reason=reviewer'});
		return r.status; })()`, chromedp.EvalAwaitPromise))
	if err != nil || status != http.StatusForbidden {
		t.Fatalf("reviewer revoke from the browser = %d, %v; want 403", status, err)
	}
	status, err = chromedp.Run(ctx, chromedp.Evaluate[int](`(async () => {
		const r = await fetch('/console/audit/verify', {method: 'POST'});
		return r.status; })()`, chromedp.EvalAwaitPromise))
	if err != nil || status != http.StatusForbidden {
		t.Fatalf("POST without the CSRF token from the browser = %d, %v; want 403", status, err)
	}
	shot("08-reviewer")
	if l, _ := s.DB.FindLeaseByID(context.Background(), xssID); l.State != broker.LeaseActive {
		t.Fatalf("the reviewer's forged revoke changed the lease to %s", l.State)
	}

	// Nothing secret in the audit chain; the failed authentication is there
	// with the key's public prefix only.
	var chain strings.Builder
	if err := s.DB.ScanAuditEvents(context.Background(), broker.AuditFilter{}, func(e *broker.AuditEvent) error {
		chain.WriteString(e.Actor + " " + e.Subject + " " + string(e.Details) + "\n")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{cred["password"].(string), key, adminPassword, reviewerPassword} {
		if strings.Contains(chain.String(), secret) {
			t.Errorf("the audit chain holds a secret")
		}
	}
	if !strings.Contains(chain.String(), `"key_prefix":"`+key[:15]+`"`) {
		t.Errorf("the failed authentication is not in the audit chain with its key prefix:\n%s", chain.String())
	}
	// Nothing secret reached the log.
	s.stop()
	out := logs.String()
	if !strings.Contains(out, `"lease_id"`) {
		t.Fatalf("the log has no lease_id keys; captured:\n%s", out)
	}
	for name, secret := range map[string]string{
		"PostgreSQL password": cred["password"].(string), "agent API key": key, "admin token": testAdminToken,
		"admin password": adminPassword, "reviewer password": reviewerPassword, "Vault root token": dv.RootToken,
	} {
		if strings.Contains(out, secret) {
			t.Errorf("the log holds the %s", name)
		}
	}
}

// addUser adds a console user straight to the store.
func addUser(t *testing.T, s *stint, name string, role broker.UserRole, password string) {
	t.Helper()
	addUserEmail(t, s, name, role, password, "")
}

// addUserEmail adds a console user with an email (approvers are matched by it).
func addUserEmail(t *testing.T, s *stint, name string, role broker.UserRole, password, email string) {
	t.Helper()
	hash, err := users.HashPassword(password)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DB.CreateUser(adminContext(context.Background()), &broker.User{Name: name, Role: role, Email: email, PasswordHash: hash}); err != nil {
		t.Fatal(err)
	}
}

// startStintLogged is startStint with a logger of the test's choosing.
func startStintLogged(tb testing.TB, dv *vault.DevServer, cfg Config, logger *slog.Logger) *stint {
	tb.Helper()
	return startStintWith(tb, dv, cfg, stintOptions{Logger: logger})
}
