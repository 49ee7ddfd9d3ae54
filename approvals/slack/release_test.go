package slack_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stint-broker/stint/approvals"
	"github.com/stint-broker/stint/approvals/slack"
)

// TestOutboxReleaseOnStop: a replica stopping while Slack holds its post
// hands the notice back (ReleaseClaims), and the other replica on the
// store posts the message at once instead of after the claim timeout; the
// message is posted once.
func TestOutboxReleaseOnStop(t *testing.T) {
	f := newFixture(t)
	l := f.pending(t, 2)

	started, closed := make(chan struct{}, 1), make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case started <- struct{}{}:
		default:
		}
		select {
		case <-r.Context().Done():
		case <-closed:
		}
	}))
	t.Cleanup(func() { close(closed); hung.Close() })
	a, err := approvals.NewService(f.db, approvers, roles, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Now = f.clock
	sa, err := slack.Open(slack.Config{BotToken: "xoxb-test", SigningSecret: signingSecret, DefaultChannel: "C0APPROVALS",
		APIURL: hung.URL + "/", Timeout: time.Minute}, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Notifier = sa

	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.DeliverNotices(ctx) }()
	<-started
	f.deliver(t) // the other replica: the notice is a's
	if posts := f.api.take("chat.postMessage"); len(posts) != 0 {
		t.Fatalf("the other replica posted %d messages while a holds the notice", len(posts))
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("DeliverNotices after stop = %v", err)
	}
	n, err := a.ReleaseClaims(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("ReleaseClaims = %d, %v; want 1", n, err)
	}
	f.deliver(t)
	var posts int
	for _, c := range f.api.take("chat.postMessage") {
		if c.Form.Get("channel") == "C0APPROVALS" {
			posts++
		}
	}
	if posts != 1 {
		t.Fatalf("after the release the other replica posted the request %d times, want once", posts)
	}
	notices, err := f.db.FindNotices(context.Background(), l.ID)
	if err != nil || len(notices) != 1 || notices[0].SentAt == nil || notices[0].LastError != "" {
		t.Fatalf("notices = %+v, %v; want one, sent, no error recorded for the cut-short call", notices, err)
	}
}
