package slack_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
)

// FuzzInteraction sends arbitrary interaction requests to the Slack
// endpoint: the payload, whether it is form-encoded, how it is signed (the
// right secret, a wrong one, none, or over another body) and how far the
// timestamp is from now. Whatever the input: the handler never panics and
// never answers 5xx; a request that is not signed with the signing secret
// over its exact body, within 5 minutes, is refused with 401; and a refused
// or malformed request records no answer on the pending lease. The seed
// corpus is in testdata/fuzz/FuzzInteraction; seeds added here also carry
// a valid click on this run's lease.
func FuzzInteraction(f *testing.F) {
	fx := newFixture(f)
	l := fx.pending(f, 2)
	_, value := fx.posted(f)
	for _, user := range []string{userDana, userEve, "U0NOBODY"} {
		for _, action := range []string{"stint_approve", "stint_deny"} {
			f.Add(blockActions(f, user, action, value), true, uint8(0), int64(0))
		}
	}
	f.Add(blockActions(f, userDana, "stint_approve", value), true, uint8(1), int64(0))
	f.Add(blockActions(f, userDana, "stint_approve", value), true, uint8(0), int64(400))
	f.Add(`{"type":"view_submission","view":{"callback_id":"stint_deny_reason","private_metadata":"`+value+`"},"user":{"id":"`+userDana+`"}}`, true, uint8(0), int64(0))
	f.Add(`{"type":"block_actions","actions":[{"action_id":"stint_approve","value":"x:y"}]}`, true, uint8(0), int64(-30))
	f.Add("payload=%7B%22type%22%3A", false, uint8(0), int64(0))
	f.Add("", false, uint8(2), int64(0))

	f.Fuzz(func(t *testing.T, payload string, form bool, mode uint8, skew int64) {
		body := payload
		if form {
			body = url.Values{"payload": {payload}}.Encode()
		}
		skew %= 900 // seconds, either way: inside and outside the 5-minute window
		ts := time.Now().Add(time.Duration(skew) * time.Second)
		var h http.Header
		switch mode % 4 {
		case 0:
			h = sign(signingSecret, ts, body)
		case 1:
			h = sign("not-the-signing-secret", ts, body)
		case 2:
			h = http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
		case 3:
			h = sign(signingSecret, ts, body+"&tampered=1")
		}
		before := len(fx.approvals(t, l.ID))

		req := httptest.NewRequest(http.MethodPost, "/slack/interactions", strings.NewReader(body))
		req.Header = h
		ctx, cancel := context.WithTimeout(req.Context(), 5*time.Second)
		defer cancel()
		rec := httptest.NewRecorder()
		fx.slack.ServeHTTP(rec, req.WithContext(ctx))

		if rec.Code >= 500 {
			t.Fatalf("status %d for %q", rec.Code, body)
		}
		signed := mode%4 == 0 && (skew < 5*60-5 && skew > -(5*60-5))
		unsigned := mode%4 != 0 || skew > 5*60+5 || skew < -(5*60+5)
		switch {
		case unsigned && rec.Code != http.StatusUnauthorized:
			t.Fatalf("a request not signed in time (mode %d, skew %ds) answered %d, want 401", mode%4, skew, rec.Code)
		case signed && rec.Code == http.StatusUnauthorized:
			t.Fatalf("a signed request (skew %ds) answered 401", skew)
		}
		if rec.Code != http.StatusOK {
			if after := len(fx.approvals(t, l.ID)); after != before {
				t.Fatalf("a refused request (%d) recorded an answer: %d → %d", rec.Code, before, after)
			}
		}
		if got := fx.lease(t, l.ID); got.State != broker.LeasePending && before == 0 && unsigned {
			t.Fatalf("an unsigned request moved the lease to %s", got.State)
		}
	})
}
