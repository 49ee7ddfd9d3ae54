package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/postgres/pgtest"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
)

// signedClickTo delivers one signed block_actions payload (the same body,
// timestamp and signature, as Slack would redeliver it) to every base at
// once, and returns their statuses.
func signedClickTo(tb testing.TB, bases []string, user, value string) []int {
	tb.Helper()
	raw, err := os.ReadFile("../../approvals/slack/testdata/block_actions.json")
	if err != nil {
		tb.Fatal(err)
	}
	var p map[string]any
	json.Unmarshal(raw, &p)
	p["user"].(map[string]any)["id"] = user
	p["trigger_id"] = fmt.Sprintf("%d.%s", time.Now().UnixNano(), user)
	act := p["actions"].([]any)[0].(map[string]any)
	act["action_id"], act["value"] = "stint_approve", value
	payload, _ := json.Marshal(p)
	body := url.Values{"payload": {string(payload)}}.Encode()
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	mac := hmac.New(sha256.New, []byte(e2eSigningSecret))
	fmt.Fprintf(mac, "v0:%s:%s", ts, body)
	sig := "v0=" + hex.EncodeToString(mac.Sum(nil))
	statuses := make([]int, len(bases))
	var wg sync.WaitGroup
	for i, base := range bases {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", base+"/slack/interactions", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("X-Slack-Request-Timestamp", ts)
			req.Header.Set("X-Slack-Signature", sig)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				tb.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		})
	}
	wg.Wait()
	return statuses
}

// TestReplicasSlack runs two replicas on one PostgreSQL store against one
// Slack: the request is posted once though both replicas' outboxes run;
// one click delivered to both replicas at once counts once and answers
// nothing twice; the second approver's click on the other replica
// approves; and each change of the message is sent once.
func TestReplicasSlack(t *testing.T) {
	_, dsn := pgtest.NewSchema(t)
	dv := vaulttest.Start(t)
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.cedar")
	if err := os.WriteFile(policy, []byte(e2ePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	api := newSlackAPI(t)
	cfg := e2eConfig(t, dv, "unused.db")
	cfg.Store = StoreConfig{Driver: driverPostgres, DSN: dsn}
	for _, r := range cfg.Roles {
		if r.Name == "db-readonly" {
			r.Sensitivity = broker.SensitivityMedium
		}
	}
	cfg.Policy.Files = []string{policy}
	cfg.Approvers = []*broker.Approver{
		{Email: "dana@example.com", Name: "Dana", Groups: []string{"security"}, SlackUserID: "U04APPROVER1"},
		{Email: "eve@example.com", Name: "Eve", Groups: []string{"security"}, SlackUserID: "U04APPROVER2"},
	}
	cfg.Slack.Enabled, cfg.Slack.DefaultChannel, cfg.Slack.APIURL = true, "C0APPROVALS", api.URL+"/"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{cfg.Slack.BotTokenEnv: "xoxb-e2e", cfg.Slack.SigningSecretEnv: e2eSigningSecret}
	a := startStintEnv(t, dv, cfg, env)
	b := startStintEnv(t, dv, cfg, env)
	_, key := a.newAgent(t, "report-bot")

	status, body := b.call(t, "POST", "/v1/leases", key, map[string]string{"role": "db-readonly", "ttl": "5m", "task": "quarterly numbers", "justification": "FIN-42"})
	if status != http.StatusAccepted || body["state"] != "pending" {
		t.Fatalf("POST /v1/leases through b = %d %v, want 202 pending", status, body)
	}
	id := body["id"].(string)
	waitFor(t, "the approval message", func() bool { return len(api.find("chat.postMessage", "C0APPROVALS")) > 0 })
	var value string
	var blocks []map[string]any
	json.Unmarshal([]byte(api.find("chat.postMessage", "C0APPROVALS")[0].Get("blocks")), &blocks)
	for _, bl := range blocks {
		if bl["type"] == "actions" {
			value = bl["elements"].([]any)[0].(map[string]any)["value"].(string)
		}
	}
	if !strings.HasPrefix(value, id+":") {
		t.Fatalf("approve button value %q does not name lease %s", value, id)
	}

	// Dana's click reaches both replicas at once.
	if st := signedClickTo(t, []string{a.url, b.url}, "U04APPROVER1", value); st[0] != http.StatusOK || st[1] != http.StatusOK {
		t.Fatalf("dana's click on a and b = %v", st)
	}
	approvals, err := a.DB.FindApprovals(t.Context(), id)
	if err != nil || len(approvals) != 1 {
		t.Fatalf("approvals after one click delivered twice: %+v, %v; want one", approvals, err)
	}
	if l, _ := a.DB.FindLeaseByID(t.Context(), id); l.State != broker.LeasePending {
		t.Fatalf("after one approver's click the lease is %s, want pending", l.State)
	}
	// Eve's click on the other replica completes the quorum.
	if st := signedClickTo(t, []string{b.url}, "U04APPROVER2", value); st[0] != http.StatusOK {
		t.Fatalf("eve's click = %v", st)
	}
	b.waitState(t, id, broker.LeaseApproved, 10*time.Second)
	if status, body := a.call(t, "POST", "/v1/leases/"+id+"/activate", key, nil); status != http.StatusCreated {
		t.Fatalf("activate through a = %d %v", status, body)
	}
	waitFor(t, "the message to show the activation", func() bool {
		for _, u := range api.find("chat.update", "C0APPROVALS") {
			if strings.Contains(u.Get("blocks"), "Active") {
				return true
			}
		}
		return false
	})
	time.Sleep(3 * time.Second) // both outboxes get every chance to send again

	api.mu.Lock()
	calls := append([]url.Values(nil), api.calls...)
	api.mu.Unlock()
	var posts, ephemerals int
	updates := map[string]int{}
	for _, c := range calls {
		t.Logf("slack call %s channel=%s ts=%s text=%q", c.Get("method"), c.Get("channel"), c.Get("ts"), c.Get("text"))
		switch c.Get("method") {
		case "chat.postMessage":
			if c.Get("channel") == "C0APPROVALS" {
				posts++
			}
		case "chat.postEphemeral":
			ephemerals++
		case "chat.update":
			updates[c.Get("ts")+"\x00"+c.Get("blocks")]++
		}
	}
	if posts != 1 {
		t.Errorf("the request was posted %d times to the approvers' channel, want once", posts)
	}
	if ephemerals != 0 {
		t.Errorf("%d ephemeral answers; a click delivered twice must answer nothing twice", ephemerals)
	}
	for k, n := range updates {
		if n > 1 {
			t.Errorf("one update of the message sent %d times: %.200q", n, k)
		}
	}
	if len(updates) == 0 {
		t.Error("the message was never updated")
	}
}
