package slack_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	goslack "github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/stint-broker/stint/approvals"
	"github.com/stint-broker/stint/approvals/slack"
	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/sqlite"
	"github.com/stint-broker/stint/leases"
)

const signingSecret = "8f742231b10e8888abcd99yyyzzz85a5"

// Slack users of the fixture. frank has no slack_user_id: he is found by the
// email users.info reports.
const (
	userDana    = "U04APPROVER1"
	userEve     = "U04APPROVER2"
	userFrank   = "U04APPROVER3"
	userOlive   = "U0OWNER"
	userMallory = "U0MALLORY"
	userNobody  = "U0NOBODY"
)

// fakeSlack is an httptest server speaking the Web API methods Stint calls.
// It records every call and can be taken down.
type fakeSlack struct {
	*httptest.Server
	mu    sync.Mutex
	calls []call
	down  bool
	n     int
}

type call struct {
	Method string
	Form   url.Values
}

func newFakeSlack(tb testing.TB) *fakeSlack {
	f := &fakeSlack{}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	tb.Cleanup(f.Close)
	return f
}

func (f *fakeSlack) serve(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		// views.open sends JSON: keep each top-level field as JSON text.
		var m map[string]json.RawMessage
		json.NewDecoder(r.Body).Decode(&m)
		r.Form = url.Values{}
		for k, v := range m {
			r.Form.Set(k, string(v))
		}
	} else {
		r.ParseForm()
	}
	method := strings.TrimPrefix(r.URL.Path, "/")
	f.mu.Lock()
	if f.down {
		f.mu.Unlock()
		http.Error(w, "upstream connect error", http.StatusServiceUnavailable)
		return
	}
	f.calls = append(f.calls, call{Method: method, Form: r.Form})
	f.n++
	ts := fmt.Sprintf("1795735098.%06d", f.n)
	f.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	var resp any
	switch method {
	case "chat.postMessage":
		resp = map[string]any{"ok": true, "channel": r.Form.Get("channel"), "ts": ts}
	case "chat.update":
		resp = map[string]any{"ok": true, "channel": r.Form.Get("channel"), "ts": r.Form.Get("ts"), "text": ""}
	case "chat.postEphemeral":
		resp = map[string]any{"ok": true, "message_ts": ts}
	case "users.info":
		emails := map[string]string{userFrank: "frank@example.com", userNobody: "nobody@example.com", userDana: "dana@example.com"}
		email, ok := emails[r.Form.Get("user")]
		if !ok {
			resp = map[string]any{"ok": false, "error": "user_not_found"}
			break
		}
		resp = map[string]any{"ok": true, "user": map[string]any{"id": r.Form.Get("user"), "profile": map[string]any{"email": email}}}
	case "users.lookupByEmail":
		if r.Form.Get("email") == "olive@example.com" {
			resp = map[string]any{"ok": true, "user": map[string]any{"id": userOlive}}
		} else {
			resp = map[string]any{"ok": false, "error": "users_not_found"}
		}
	case "views.open":
		resp = map[string]any{"ok": true, "view": map[string]any{"id": "V0DENY"}}
	default:
		resp = map[string]any{"ok": false, "error": "unknown_method"}
	}
	json.NewEncoder(w).Encode(resp)
}

func (f *fakeSlack) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

// take returns and forgets the calls so far of the given method ("" for all).
func (f *fakeSlack) take(method string) []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out, keep []call
	for _, c := range f.calls {
		if method == "" || c.Method == method {
			out = append(out, c)
		} else {
			keep = append(keep, c)
		}
	}
	f.calls = keep
	return out
}

// waitFor waits until a call of method arrives (ephemeral replies are sent
// in the background) and returns the calls of that method.
func (f *fakeSlack) waitFor(tb testing.TB, method string) []call {
	tb.Helper()
	for i := 0; i < 200; i++ {
		if got := f.take(method); len(got) > 0 {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
	tb.Fatalf("no %s call", method)
	return nil
}

type fixture struct {
	db     *sqlite.DB
	svc    *approvals.Service
	slack  *slack.Slack
	api    *fakeSlack
	http   *httptest.Server
	agent  *broker.Agent
	now    time.Time
	nowMu  sync.Mutex
	client *http.Client
}

var approvers = []*broker.Approver{
	{Email: "dana@example.com", Name: "Dana", Groups: []string{"security"}, SlackUserID: userDana},
	{Email: "eve@example.com", Name: "Eve", Groups: []string{"security"}, SlackUserID: userEve},
	{Email: "frank@example.com", Name: "Frank", Groups: []string{"security"}},
	{Email: "olive@example.com", Name: "Olive", Groups: []string{"security"}, SlackUserID: userOlive},
	{Email: "mallory@example.com", Name: "Mallory", Groups: []string{"data"}, SlackUserID: userMallory},
}

var roles = []*broker.Role{{
	Name: "analytics-ro", Kind: broker.KindDatabase, Sensitivity: broker.SensitivityMedium, Description: "Read the analytics schema",
	Vault: broker.RoleVault{Path: "database/creds/ro", Method: "read"}, DefaultTTL: 30 * time.Minute, MaxTTL: time.Hour,
	Connection: &broker.Connection{Host: "127.0.0.1", Port: 5432, Database: "test"},
}}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "stint.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	f := &fixture{db: db, api: newFakeSlack(tb), now: time.Now().UTC(), client: &http.Client{Timeout: 10 * time.Second}}
	f.svc, err = approvals.NewService(db, approvers, roles, nil)
	if err != nil {
		tb.Fatal(err)
	}
	f.svc.Now = f.clock
	// The lease service records the answers (it alone writes lease state).
	verdicts := leases.NewService(db, nil, roles, nil)
	verdicts.Now = f.clock
	f.svc.Verdicts = verdicts
	f.svc.RetryBase, f.svc.RetryMax = time.Second, time.Minute
	f.slack, err = slack.Open(slack.Config{
		BotToken: "xoxb-test", SigningSecret: signingSecret, DefaultChannel: "C0APPROVALS",
		APIURL: f.api.URL + "/", Timeout: 5 * time.Second,
	}, f.svc, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.slack.Close() })
	f.svc.Notifier = f.slack
	f.http = httptest.NewServer(f.slack)
	tb.Cleanup(f.http.Close)

	f.agent = &broker.Agent{ID: uuid.NewString(), Name: "report-bot", Owner: "olive@example.com", State: broker.AgentActive, CreatedAt: f.now, UpdatedAt: f.now}
	if err := db.CreateAgent(context.Background(), f.agent); err != nil {
		tb.Fatal(err)
	}
	return f
}

func (f *fixture) clock() time.Time {
	f.nowMu.Lock()
	defer f.nowMu.Unlock()
	return f.now
}

func (f *fixture) advance(d time.Duration) {
	f.nowMu.Lock()
	f.now = f.now.Add(d)
	f.nowMu.Unlock()
}

// pending stores a lease that needs n approvals from security, as the lease
// service would.
func (f *fixture) pending(tb testing.TB, n int) *broker.Lease {
	tb.Helper()
	now := f.clock()
	decideBy := now.Add(time.Hour)
	l := &broker.Lease{
		ID: uuid.NewString(), AgentID: f.agent.ID, Agent: f.agent.Name, Role: "analytics-ro",
		Task: "quarterly <report> & *numbers*", Justification: "FIN-42", TTL: broker.Duration(30 * time.Minute),
		State: broker.LeasePending, Decision: fmt.Sprintf("needs %d approval(s) from security", n),
		VaultPath: "database/creds/ro", CreatedAt: now, UpdatedAt: now, AuthMethod: "api_key", RiskScore: 17,
		RiskFactors: []broker.RiskFactor{{Name: "burst", Points: 10, Detail: "12 requests in the last minute"}},
		PolicyDecision: &broker.Decision{Outcome: broker.OutcomeApprovals, Approvals: n, ApproverGroup: "security",
			PolicyIDs: []string{"medium-approval"}, Reasons: []string{"Medium-sensitivity role: approvals needed."}},
		DecideBy: &decideBy,
	}
	if err := f.db.CreateLease(context.Background(), l, "agent:report-bot", l.Decision); err != nil {
		tb.Fatal(err)
	}
	return l
}

func (f *fixture) deliver(tb testing.TB) {
	tb.Helper()
	if err := f.svc.DeliverNotices(context.Background()); err != nil {
		tb.Fatal(err)
	}
}

func (f *fixture) lease(tb testing.TB, id string) *broker.Lease {
	tb.Helper()
	l, err := f.db.FindLeaseByID(context.Background(), id)
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

func (f *fixture) approvals(tb testing.TB, id string) []*broker.Approval {
	tb.Helper()
	list, err := f.db.FindApprovals(context.Background(), id)
	if err != nil {
		tb.Fatal(err)
	}
	return list
}

// buttonValue reads the Approve button's value out of a posted message.
func buttonValue(tb testing.TB, c call, action string) string {
	tb.Helper()
	var blocks []map[string]any
	if err := json.Unmarshal([]byte(c.Form.Get("blocks")), &blocks); err != nil {
		tb.Fatalf("blocks of %s: %v", c.Method, err)
	}
	for _, b := range blocks {
		if b["type"] != "actions" {
			continue
		}
		for _, e := range b["elements"].([]any) {
			if el := e.(map[string]any); el["action_id"] == action {
				return el["value"].(string)
			}
		}
	}
	tb.Fatalf("%s has no %s button: %s", c.Method, action, c.Form.Get("blocks"))
	return ""
}

// blockText returns the blocks of a posted message as JSON without HTML
// escaping, to look for text in.
func blockText(tb testing.TB, c call) string {
	tb.Helper()
	var v any
	if err := json.Unmarshal([]byte(c.Form.Get("blocks")), &v); err != nil {
		tb.Fatalf("blocks of %s: %v", c.Method, err)
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	return b.String()
}

// blockActions builds a block_actions payload from testdata/block_actions.json, the
// shape Slack sends for a button click.
func blockActions(tb testing.TB, user, action, value string) string {
	tb.Helper()
	raw, err := os.ReadFile("testdata/block_actions.json")
	if err != nil {
		tb.Fatal(err)
	}
	var p map[string]any
	if err := json.Unmarshal(raw, &p); err != nil {
		tb.Fatal(err)
	}
	p["user"].(map[string]any)["id"] = user
	act := p["actions"].([]any)[0].(map[string]any)
	act["action_id"], act["value"] = action, value
	p["container"].(map[string]any)["message_ts"] = "1795735098.000001"
	b, _ := json.Marshal(p)
	return string(b)
}

// sign returns Slack's headers for body at ts, signed with secret.
func sign(secret string, ts time.Time, body string) http.Header {
	stamp := strconv.FormatInt(ts.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(mac, "v0:%s:%s", stamp, body)
	h := http.Header{}
	h.Set("Content-Type", "application/x-www-form-urlencoded")
	h.Set("X-Slack-Request-Timestamp", stamp)
	h.Set("X-Slack-Signature", "v0="+hex.EncodeToString(mac.Sum(nil)))
	return h
}

// post sends body with headers to the interaction endpoint.
func (f *fixture) post(tb testing.TB, h http.Header, body string) (int, string) {
	tb.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.http.URL+"/slack/interactions", strings.NewReader(body))
	req.Header = h
	start := time.Now()
	resp, err := f.client.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	if d := time.Since(start); d > 3*time.Second {
		tb.Errorf("interaction answered after %s; Slack gives up after 3s", d)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// click posts a correctly signed button click by user.
func (f *fixture) click(tb testing.TB, user, action, value string) (int, string) {
	tb.Helper()
	body := url.Values{"payload": {blockActions(tb, user, action, value)}}.Encode()
	return f.post(tb, sign(signingSecret, time.Now(), body), body)
}

// posted delivers the outbox and returns the approve button value of the
// message posted for the lease.
func (f *fixture) posted(tb testing.TB) (call, string) {
	tb.Helper()
	f.deliver(tb)
	posts := f.api.take("chat.postMessage")
	for _, c := range posts {
		if c.Form.Get("channel") == "C0APPROVALS" {
			return c, buttonValue(tb, c, "stint_approve")
		}
	}
	tb.Fatalf("nothing posted to C0APPROVALS: %v", posts)
	return call{}, ""
}

func wantState(tb testing.TB, l *broker.Lease, want broker.LeaseState) {
	tb.Helper()
	if l.State != want {
		tb.Fatalf("lease is %s, want %s", l.State, want)
	}
}

func TestApprove(t *testing.T) {
	f := newFixture(t)
	l := f.pending(t, 1)
	msg, value := f.posted(t)
	blocks := blockText(t, msg)
	for _, want := range []string{"report-bot", "olive@example.com", "analytics-ro", "medium", "30m0s", "FIN-42",
		"17 / 100", "+10 burst: 12 requests in the last minute", "Medium-sensitivity role: approvals needed.", "0 of 1", "&lt;report&gt; &amp;"} {
		if !strings.Contains(blocks, want) {
			t.Errorf("posted message lacks %q:\n%s", want, blocks)
		}
	}
	if want := l.ID + ":" + approvals.Digest(l); value != want {
		t.Fatalf("button value = %q, want lease id and digest %q", value, want)
	}
	// The owner hears that their agent asked.
	if dms := f.api.take("chat.postMessage"); len(dms) != 0 {
		t.Fatalf("unexpected extra posts: %v", dms)
	}

	status, body := f.click(t, userDana, "stint_approve", value)
	if status != http.StatusOK || body != "" {
		t.Fatalf("click = %d %q, want 200 and an empty body", status, body)
	}
	got := f.lease(t, l.ID)
	wantState(t, got, broker.LeaseApproved)
	if got.ActivateBy == nil || !got.ActivateBy.Equal(f.clock().Add(15*time.Minute)) {
		t.Fatalf("activate_by = %v, want now+15m", got.ActivateBy)
	}
	list := f.approvals(t, l.ID)
	if len(list) != 1 || list[0].Approver != "dana@example.com" || list[0].Via != "slack" || list[0].Digest != approvals.Digest(l) {
		t.Fatalf("approvals = %+v", list)
	}

	f.deliver(t)
	updates := f.api.take("chat.update")
	if len(updates) != 1 {
		t.Fatalf("%d chat.update calls, want 1", len(updates))
	}
	u := updates[0]
	if u.Form.Get("channel") != "C0APPROVALS" || u.Form.Get("ts") != msg.Form.Get("ts") && u.Form.Get("ts") == "" {
		t.Fatalf("chat.update of %s/%s, want the posted message", u.Form.Get("channel"), u.Form.Get("ts"))
	}
	if ub := u.Form.Get("blocks"); !strings.Contains(ub, "Approved* by Dana") || strings.Contains(ub, "stint_approve") {
		t.Fatalf("updated message should say approved by Dana and drop the buttons:\n%s", ub)
	}
	dms := f.api.take("chat.postMessage")
	if len(dms) != 1 || dms[0].Form.Get("channel") != userOlive || !strings.Contains(dms[0].Form.Get("text"), "Approved") {
		t.Fatalf("owner DMs = %v, want one to %s saying approved", dms, userOlive)
	}
}

func TestTwoOfThree(t *testing.T) {
	f := newFixture(t)
	l := f.pending(t, 2)
	_, value := f.posted(t)
	if status, _ := f.click(t, userDana, "stint_approve", value); status != http.StatusOK {
		t.Fatalf("dana's click = %d", status)
	}
	wantState(t, f.lease(t, l.ID), broker.LeasePending)
	f.deliver(t)
	if u := f.api.take("chat.update"); len(u) != 1 || !strings.Contains(u[0].Form.Get("blocks"), "1 of 2") {
		t.Fatalf("after one approval the message should show 1 of 2: %v", u)
	}
	// Frank has no slack_user_id: users.info gives his email.
	if status, _ := f.click(t, userFrank, "stint_approve", value); status != http.StatusOK {
		t.Fatalf("frank's click = %d", status)
	}
	got := f.lease(t, l.ID)
	wantState(t, got, broker.LeaseApproved)
	list := f.approvals(t, l.ID)
	if len(list) != 2 || list[0].Approver != "dana@example.com" || list[1].Approver != "frank@example.com" {
		t.Fatalf("approvals = %+v, want dana and frank", list)
	}
	// The third approver is too late: the lease is no longer pending.
	f.click(t, userEve, "stint_approve", value)
	eph := f.api.waitFor(t, "chat.postEphemeral")
	if !strings.Contains(eph[0].Form.Get("text"), "no longer pending") || eph[0].Form.Get("user") != userEve {
		t.Fatalf("eve's ephemeral = %v", eph[0].Form)
	}
	if len(f.approvals(t, l.ID)) != 2 {
		t.Fatal("a third approval was recorded after the quorum")
	}
}

func TestRefusedClicks(t *testing.T) {
	for _, tc := range []struct {
		name, user, want string
	}{
		{"Owner", userOlive, "You own agent report-bot"},
		{"NonMember", userMallory, `You are not in approver group "security"`},
		{"Unknown", userNobody, "not a configured Stint approver"},
		{"UnknownToSlack", "U0GHOST", "Slack could not tell who you are"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			l := f.pending(t, 1)
			_, value := f.posted(t)
			if status, _ := f.click(t, tc.user, "stint_approve", value); status != http.StatusOK {
				t.Fatalf("click = %d, want 200 (Slack shows errors for anything else)", status)
			}
			eph := f.api.waitFor(t, "chat.postEphemeral")
			if got := eph[0].Form.Get("text"); !strings.Contains(got, tc.want) || eph[0].Form.Get("user") != tc.user {
				t.Fatalf("ephemeral to %s = %q, want it to say %q", eph[0].Form.Get("user"), got, tc.want)
			}
			wantState(t, f.lease(t, l.ID), broker.LeasePending)
			if n := len(f.approvals(t, l.ID)); n != 0 {
				t.Fatalf("%d approvals recorded", n)
			}
		})
	}
}

func TestDoubleClick(t *testing.T) {
	f := newFixture(t)
	l := f.pending(t, 2)
	_, value := f.posted(t)
	for range 2 {
		if status, _ := f.click(t, userDana, "stint_approve", value); status != http.StatusOK {
			t.Fatalf("click = %d", status)
		}
	}
	if list := f.approvals(t, l.ID); len(list) != 1 {
		t.Fatalf("%d approvals after a double click, want 1: two clicks are one person", len(list))
	}
	wantState(t, f.lease(t, l.ID), broker.LeasePending)
	eph := f.api.waitFor(t, "chat.postEphemeral")
	if !strings.Contains(eph[0].Form.Get("text"), "already approved") {
		t.Fatalf("ephemeral = %q", eph[0].Form.Get("text"))
	}
}

func TestSignature(t *testing.T) {
	f := newFixture(t)
	l := f.pending(t, 1)
	_, value := f.posted(t)
	body := url.Values{"payload": {blockActions(t, userDana, "stint_approve", value)}}.Encode()
	other := url.Values{"payload": {blockActions(t, userEve, "stint_approve", value)}}.Encode()
	for _, tc := range []struct {
		name   string
		header http.Header
		body   string
	}{
		{"Forged", sign("not-the-signing-secret", time.Now(), body), body},
		{"Stale", sign(signingSecret, time.Now().Add(-6*time.Minute), body), body},
		{"Future", sign(signingSecret, time.Now().Add(6*time.Minute), body), body},
		{"BodyChangedAfterSigning", sign(signingSecret, time.Now(), body), other},
		{"Unsigned", http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, body},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, _ := f.post(t, tc.header, tc.body); status != http.StatusUnauthorized {
				t.Fatalf("status = %d, want 401", status)
			}
			wantState(t, f.lease(t, l.ID), broker.LeasePending)
			if n := len(f.approvals(t, l.ID)); n != 0 {
				t.Fatalf("%d approvals recorded from a refused request", n)
			}
		})
	}
	// The same body, properly signed, goes through.
	if status, _ := f.post(t, sign(signingSecret, time.Now(), body), body); status != http.StatusOK {
		t.Fatalf("signed click = %d", status)
	}
	wantState(t, f.lease(t, l.ID), broker.LeaseApproved)
}

func TestRequestChangedAfterPosting(t *testing.T) {
	f := newFixture(t)
	l := f.pending(t, 1)
	_, value := f.posted(t)
	// Policy is re-evaluated and now asks for more: the request shown is not
	// the request that would be approved.
	d := *l.PolicyDecision
	d.Approvals, d.Reasons = 2, []string{"risk went up"}
	if _, err := f.db.UpdateLease(context.Background(), l.ID, broker.LeaseUpdate{From: []broker.LeaseState{broker.LeasePending}, PolicyDecision: &d, Actor: "system:policy", Reason: "re-decided"}); err != nil {
		t.Fatal(err)
	}
	f.click(t, userDana, "stint_approve", value)
	eph := f.api.waitFor(t, "chat.postEphemeral")
	if !strings.Contains(eph[0].Form.Get("text"), "changed after it was shown to you") {
		t.Fatalf("ephemeral = %q", eph[0].Form.Get("text"))
	}
	if n := len(f.approvals(t, l.ID)); n != 0 {
		t.Fatalf("%d approvals recorded for a changed request", n)
	}
	// The updated message carries the new digest, which works.
	f.deliver(t)
	u := f.api.take("chat.update")
	if len(u) != 1 {
		t.Fatalf("%d updates after the change, want 1", len(u))
	}
	fresh := buttonValue(t, u[0], "stint_approve")
	if fresh == value {
		t.Fatal("the updated message kept the old digest")
	}
	f.click(t, userDana, "stint_approve", fresh)
	if list := f.approvals(t, l.ID); len(list) != 1 {
		t.Fatalf("approval with the fresh digest not recorded: %v", list)
	}
}

func TestDenyWithReason(t *testing.T) {
	f := newFixture(t)
	l := f.pending(t, 2)
	_, value := f.posted(t)
	if status, _ := f.click(t, userEve, "stint_deny", value); status != http.StatusOK {
		t.Fatalf("deny click = %d", status)
	}
	opens := f.api.take("views.open")
	if len(opens) != 1 {
		t.Fatalf("%d views.open calls, want the reason modal", len(opens))
	}
	var view map[string]any
	if err := json.Unmarshal([]byte(opens[0].Form.Get("view")), &view); err != nil {
		t.Fatalf("views.open view: %v", err)
	}
	if view["private_metadata"] != value || view["callback_id"] != "stint_deny_reason" {
		t.Fatalf("modal = %v", view)
	}
	wantState(t, f.lease(t, l.ID), broker.LeasePending) // nothing until submitted

	submission, _ := json.Marshal(map[string]any{
		"type": "view_submission",
		"team": map[string]any{"id": "T0STINT01"},
		"user": map[string]any{"id": userEve},
		"view": map[string]any{
			"id": "V0DENY", "type": "modal", "callback_id": "stint_deny_reason", "private_metadata": value,
			"state": map[string]any{"values": map[string]any{"reason": map[string]any{
				"reason_input": map[string]any{"type": "plain_text_input", "value": "no change window today"}}}},
		},
	})
	body := url.Values{"payload": {string(submission)}}.Encode()
	if status, resp := f.post(t, sign(signingSecret, time.Now(), body), body); status != http.StatusOK || resp != "" {
		t.Fatalf("submission = %d %q, want 200 and an empty body (closes the modal)", status, resp)
	}
	got := f.lease(t, l.ID)
	wantState(t, got, broker.LeaseRejected)
	list := f.approvals(t, l.ID)
	if len(list) != 1 || list[0].Verdict != broker.VerdictDeny || list[0].Reason != "no change window today" {
		t.Fatalf("approvals = %+v", list)
	}
	f.deliver(t)
	if u := f.api.take("chat.update"); len(u) != 1 || !strings.Contains(u[0].Form.Get("blocks"), "no change window today") {
		t.Fatalf("update after denial = %v", u)
	}
	// A second submission of the now-decided lease shows the error in the modal.
	if status, resp := f.post(t, sign(signingSecret, time.Now(), body), body); status != http.StatusOK || resp != "" {
		t.Fatalf("repeated submission = %d %q, want 200 and nothing (same answer)", status, resp)
	}
}

func TestPendingTimeout(t *testing.T) {
	f := newFixture(t)
	l := f.pending(t, 1)
	_, value := f.posted(t)
	// The expiry loop ends it at its deadline (leases.Service.EndOverdue).
	ended, err := f.db.EndOverdueLeases(context.Background(), l.DecideBy.Add(time.Second), 10, "system:approval-timeout", broker.OverdueReasons{TimedOut: "no decision before the deadline", Lapsed: "not activated before the deadline"})
	if err != nil || len(ended) != 1 {
		t.Fatalf("EndOverdueLeases = %v, %v", ended, err)
	}
	f.deliver(t)
	u := f.api.take("chat.update")
	if len(u) != 1 || !strings.Contains(u[0].Form.Get("blocks"), "Timed out") || strings.Contains(u[0].Form.Get("blocks"), "stint_approve") {
		t.Fatalf("update after timeout = %v", u)
	}
	f.click(t, userDana, "stint_approve", value)
	if eph := f.api.waitFor(t, "chat.postEphemeral"); !strings.Contains(eph[0].Form.Get("text"), "timed_out") {
		t.Fatalf("late click ephemeral = %q", eph[0].Form.Get("text"))
	}
}

func TestSlackDownThenBack(t *testing.T) {
	f := newFixture(t)
	f.api.setDown(true)
	l := f.pending(t, 1)
	f.deliver(t)
	notices, err := f.db.FindNotices(context.Background(), l.ID)
	if err != nil || len(notices) != 1 || notices[0].SentAt != nil || notices[0].Attempts != 1 || notices[0].LastError == "" {
		t.Fatalf("notices while Slack is down = %+v, %v; want one unsent with an attempt and an error", notices, err)
	}
	// The approver decides through the API meanwhile.
	ctx := broker.NewContextWithActor(context.Background(), broker.Actor{Kind: broker.ActorApprover, Name: "dana@example.com", AuthMethod: "approver_token"})
	pending, err := f.svc.FindPendingApprovals(ctx)
	if err != nil || len(pending) != 1 {
		t.Fatalf("FindPendingApprovals = %v, %v", pending, err)
	}
	if _, err := f.svc.Approve(ctx, l.ID, pending[0].Digest); err != nil {
		t.Fatal(err)
	}
	// Before the backoff nothing is retried.
	f.deliver(t)
	if n, _ := f.db.CountUnsentNotices(context.Background()); n != 2 {
		t.Fatalf("%d unsent notices, want 2 (pending, approved)", n)
	}
	f.api.setDown(false)
	f.advance(2 * time.Second)
	f.deliver(t)
	if n, _ := f.db.CountUnsentNotices(context.Background()); n != 0 {
		t.Fatalf("%d notices unsent after Slack came back", n)
	}
	calls := f.api.take("")
	var methods []string
	for _, c := range calls {
		methods = append(methods, c.Method+" "+c.Form.Get("channel"))
	}
	// The lease is approved by now: the pending notice is superseded, and
	// the approved one posts the message as it is and tells the owner (her
	// Slack id is configured: no lookup), once.
	want := []string{"chat.postMessage C0APPROVALS", "chat.postMessage " + userOlive}
	if fmt.Sprint(methods) != fmt.Sprint(want) {
		t.Fatalf("calls after Slack came back:\n got %q\nwant %q", methods, want)
	}
	if b := blockText(t, calls[0]); !strings.Contains(b, "Approved* by Dana") || !strings.Contains(b, "(api)") {
		t.Fatalf("the message should show Dana's API approval:\n%s", b)
	}
	if text := calls[1].Form.Get("text"); !strings.Contains(text, "Approved* by Dana") {
		t.Fatalf("the owner's DM should say approved: %q", text)
	}
}

func TestSocketMode(t *testing.T) {
	f := newFixture(t)
	l := f.pending(t, 1)
	_, value := f.posted(t)
	var cb goslack.InteractionCallback
	if err := json.Unmarshal([]byte(blockActions(t, userDana, "stint_approve", value)), &cb); err != nil {
		t.Fatal(err)
	}
	f.slack.SocketModeHandler().DispatchEvent(socketmode.Event{
		Type: socketmode.EventTypeInteractive, Data: cb, Request: &socketmode.Request{EnvelopeID: "env-1"},
	})
	for i := 0; f.lease(t, l.ID).State == broker.LeasePending; i++ {
		if i > 200 {
			t.Fatal("socket mode click did not approve the lease")
		}
		time.Sleep(10 * time.Millisecond)
	}
	wantState(t, f.lease(t, l.ID), broker.LeaseApproved)
	if list := f.approvals(t, l.ID); len(list) != 1 || list[0].Approver != "dana@example.com" || list[0].Via != "slack" {
		t.Fatalf("approvals = %+v", list)
	}
}

func TestAlert(t *testing.T) {
	f := newFixture(t)
	f.slack.Config.SecurityChannel = "C0SECURITY"
	err := f.slack.Alert(context.Background(), broker.Alert{
		Kind: "breakglass", Severity: "critical", Audience: broker.AudienceSecurity,
		Agent: "report-bot", Owner: "olive@example.com", Role: "analytics-ro", LeaseID: "L1",
		Message: "Break-glass grant: <script>x</script> production outage",
	})
	if err != nil {
		t.Fatal(err)
	}
	posts := f.api.take("chat.postMessage")
	if len(posts) != 1 || posts[0].Form.Get("channel") != "C0SECURITY" {
		t.Fatalf("security alert posts = %+v, want one to C0SECURITY", posts)
	}
	text := blockText(t, posts[0])
	for _, want := range []string{"breakglass", "report-bot", "analytics-ro", "L1", "production outage"} {
		if !strings.Contains(text, want) {
			t.Errorf("alert blocks lack %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "<script>") {
		t.Errorf("alert blocks carry unescaped markup:\n%s", text)
	}

	// Owner alerts go to the owner's direct messages (Olive has a Slack id).
	if err := f.slack.Alert(context.Background(), broker.Alert{Kind: "review_due", Audience: broker.AudienceOwner,
		Owner: "olive@example.com", Message: "Attest report-bot's roles"}); err != nil {
		t.Fatal(err)
	}
	posts = f.api.take("chat.postMessage")
	if len(posts) != 1 || posts[0].Form.Get("channel") != userOlive {
		t.Fatalf("owner alert posts = %+v, want one to %s", posts, userOlive)
	}
}

// TestActivationAndReleaseNotifyOnce: an approved lease's activation
// (approved → issuing → active) and its release (active → revoking →
// released) each update the approvers' message once and DM the owner once,
// although each is two lease events.
func TestActivationAndReleaseNotifyOnce(t *testing.T) {
	f := newFixture(t)
	l := f.pending(t, 1)
	_, value := f.posted(t)
	if status, _ := f.click(t, userDana, "stint_approve", value); status != http.StatusOK {
		t.Fatalf("approve click = %d", status)
	}
	f.deliver(t)
	f.api.take("")

	ctx := context.Background()
	move := func(from, to broker.LeaseState, upd broker.LeaseUpdate) {
		t.Helper()
		upd.From, upd.State, upd.Actor, upd.Reason = []broker.LeaseState{from}, &to, "agent:report-bot", "test"
		if _, err := f.db.UpdateLease(ctx, l.ID, upd); err != nil {
			t.Fatalf("%s → %s: %v", from, to, err)
		}
	}
	now := f.clock()
	expires := now.Add(30 * time.Minute)
	vaultID := "database/creds/ro/abc"
	move(broker.LeaseApproved, broker.LeaseIssuing, broker.LeaseUpdate{})
	move(broker.LeaseIssuing, broker.LeaseActive, broker.LeaseUpdate{VaultLeaseID: &vaultID, ActivatedAt: &now, ExpiresAt: &expires})
	f.deliver(t)
	updates, dms := f.api.take("chat.update"), f.api.take("chat.postMessage")
	if len(updates) != 1 || !strings.Contains(updates[0].Form.Get("blocks"), "Active* since") {
		t.Fatalf("activation: %d chat.update calls %v; want 1 showing the lease active", len(updates), updates)
	}
	if len(dms) != 1 || dms[0].Form.Get("channel") != userOlive || !strings.Contains(dms[0].Form.Get("text"), "Active") {
		t.Fatalf("activation: %d owner DMs %v; want 1 saying active", len(dms), dms)
	}

	end := broker.LeaseReleased
	move(broker.LeaseActive, broker.LeaseRevoking, broker.LeaseUpdate{EndState: &end})
	move(broker.LeaseRevoking, broker.LeaseReleased, broker.LeaseUpdate{EndedAt: &now})
	f.deliver(t)
	updates, dms = f.api.take("chat.update"), f.api.take("chat.postMessage")
	if len(updates) != 1 || !strings.Contains(updates[0].Form.Get("blocks"), "Released* by the agent") {
		t.Fatalf("release: %d chat.update calls %v; want 1 showing the lease released", len(updates), updates)
	}
	if len(dms) != 1 || !strings.Contains(dms[0].Form.Get("text"), "Released") {
		t.Fatalf("release: %d owner DMs %v; want 1 saying released", len(dms), dms)
	}
	// Nothing is left to send.
	f.deliver(t)
	if rest := f.api.take(""); len(rest) != 0 {
		t.Fatalf("calls after everything was delivered: %v", rest)
	}
}

// TestDenialNamesApprover: a denial names the approver as an approval does,
// by name, in the message and in the owner's DM.
func TestDenialNamesApprover(t *testing.T) {
	f := newFixture(t)
	l := f.pending(t, 1)
	f.posted(t)
	if _, err := f.svc.Decide(context.Background(), f.svc.ApproverByEmail("eve@example.com"),
		approvals.Answer{LeaseID: l.ID, Digest: approvals.Digest(l), Verdict: broker.VerdictDeny, Reason: "not today", Via: "api"}); err != nil {
		t.Fatal(err)
	}
	f.deliver(t)
	updates, dms := f.api.take("chat.update"), f.api.take("chat.postMessage")
	if len(updates) != 1 || len(dms) != 1 {
		t.Fatalf("%d updates, %d DMs; want 1 each", len(updates), len(dms))
	}
	for _, text := range []string{updates[0].Form.Get("blocks"), dms[0].Form.Get("text")} {
		if !strings.Contains(text, "Denied* by Eve: not today") || strings.Contains(text, "eve@example.com") {
			t.Errorf("denial names the approver by email or not at all; want \"Denied* by Eve\":\n%s", text)
		}
	}
}

// TestControlCharactersEscaped: a task or justification with escape
// sequences, a carriage return or a bidi override reaches Slack escaped,
// in the blocks and in the notification text.
func TestControlCharactersEscaped(t *testing.T) {
	f := newFixture(t)
	now := f.clock()
	decideBy := now.Add(time.Hour)
	l := &broker.Lease{
		ID: uuid.NewString(), AgentID: f.agent.ID, Agent: f.agent.Name, Role: "analytics-ro",
		Task: "read\x1b[8m hidden\rquarterly\nFake: field", Justification: "FIN-42 \u202eevil\u2069\x00", TTL: broker.Duration(30 * time.Minute),
		State: broker.LeasePending, Decision: "needs 1 approval(s) from security", VaultPath: "database/creds/ro",
		CreatedAt: now, UpdatedAt: now, AuthMethod: "api_key",
		PolicyDecision: &broker.Decision{Outcome: broker.OutcomeApprovals, Approvals: 1, ApproverGroup: "security"},
		DecideBy:       &decideBy,
	}
	if err := f.db.CreateLease(context.Background(), l, "agent:report-bot", l.Decision); err != nil {
		t.Fatal(err)
	}
	msg, _ := f.posted(t)
	var blocks any
	if err := json.Unmarshal([]byte(msg.Form.Get("blocks")), &blocks); err != nil {
		t.Fatal(err)
	}
	// Newlines are the message's own layout (mrkdwn); nothing else may
	// arrive raw.
	raw := fmt.Sprint(blocks) + msg.Form.Get("text")
	for _, r := range raw {
		if r != '\n' && broker.IsControl(r) {
			t.Errorf("message holds U+%04X raw", r)
		}
	}
	text := blockText(t, msg)
	for _, want := range []string{`read\\x1b[8m hidden\\x0dquarterly\\x0aFake: field`, `FIN-42 \\u202eevil\\u2069\\x00`} {
		if !strings.Contains(text, want) {
			t.Errorf("message lacks the escaped text %s:\n%s", want, text)
		}
	}
}
