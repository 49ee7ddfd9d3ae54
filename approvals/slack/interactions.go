package slack

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/stint-broker/stint/approvals"
	"github.com/stint-broker/stint/broker"
)

// Limits of the interaction endpoint.
const (
	maxBody = 1 << 20
	// maxSkew is how old (or how far in the future) a signed request may be.
	maxSkew = 5 * time.Minute
	// decideTimeout keeps the answer inside Slack's 3 s.
	decideTimeout = 2500 * time.Millisecond
)

// ServeHTTP handles POST /slack/interactions. It verifies Slack's v0
// signature over the raw body before parsing anything, refuses timestamps
// more than 5 minutes away, decides within Slack's 3 s and answers 200 with
// an empty body (or a modal's errors). Refused clicks get an ephemeral reply.
func (s *Slack) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if err := s.verify(r.Header, body); err != nil {
		s.Logger.Warn("slack interaction refused", "remote", r.RemoteAddr, "reason", err.Error())
		http.Error(w, "invalid signature", http.StatusUnauthorized)
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("payload") == "" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	var cb slack.InteractionCallback
	if err := json.Unmarshal([]byte(form.Get("payload")), &cb); err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), decideTimeout)
	defer cancel()
	reply := s.Interact(ctx, &cb)
	if reply == nil {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(reply)
}

// verify checks the request's timestamp against Now and its v0 signature
// (HMAC-SHA256 of "v0:<timestamp>:<body>" with the signing secret).
func (s *Slack) verify(h http.Header, body []byte) error {
	sec, err := strconv.ParseInt(h.Get("X-Slack-Request-Timestamp"), 10, 64)
	if err != nil {
		return fmt.Errorf("missing or malformed timestamp")
	}
	if d := s.Now().Sub(time.Unix(sec, 0)); d > maxSkew || d < -maxSkew {
		return fmt.Errorf("timestamp %s away from now", d.Round(time.Second))
	}
	sv, err := slack.NewSecretsVerifier(h, s.Config.SigningSecret)
	if err != nil {
		return fmt.Errorf("verifier: %w", err)
	}
	if _, err := sv.Write(body); err != nil {
		return fmt.Errorf("verifier: %w", err)
	}
	if err := sv.Ensure(); err != nil {
		return fmt.Errorf("signature mismatch")
	}
	return nil
}

// Interact handles one verified interaction from either transport and
// returns the response payload, if any (a modal's field errors). Button
// clicks and modal submissions go to Approvals.Decide; a refused click gets
// an ephemeral message saying why.
func (s *Slack) Interact(ctx context.Context, cb *slack.InteractionCallback) any {
	if s.Config.TeamID != "" && cb.Team.ID != s.Config.TeamID {
		s.Logger.Warn("slack interaction from another workspace refused", "team", cb.Team.ID)
		return nil
	}
	if s.seenBefore(ctx, cb) {
		return nil
	}
	switch cb.Type {
	case slack.InteractionTypeBlockActions:
		for _, act := range cb.ActionCallback.BlockActions {
			switch act.ActionID {
			case actionApprove:
				s.click(ctx, cb, act.Value)
			case actionDeny:
				s.openDeny(ctx, cb, act.Value)
			}
		}
	case slack.InteractionTypeViewSubmission:
		if cb.View.CallbackID == callbackDeny {
			return s.submitDeny(ctx, cb)
		}
	}
	return nil
}

// deliveryTTL is how long a delivered interaction is remembered: past
// twice the signature's accepted skew, a redelivery over HTTP is refused
// by its timestamp anyway.
const deliveryTTL = 2 * maxSkew

// seenBefore reports whether the interaction was delivered before, to this
// replica or another (Deliveries). An interaction without a trigger id, or
// a store that cannot answer, is handled: deciding is idempotent.
func (s *Slack) seenBefore(ctx context.Context, cb *slack.InteractionCallback) bool {
	if s.Deliveries == nil || cb.TriggerID == "" {
		return false
	}
	err := s.Deliveries(ctx, cb.Team.ID+"/"+cb.User.ID+"/"+cb.TriggerID, s.Now().Add(deliveryTTL))
	switch {
	case broker.ErrorCode(err) == broker.ECONFLICT:
		s.Logger.Info("slack interaction delivered again; handled once", "slack_user", cb.User.ID, "trigger_id", cb.TriggerID)
		return true
	case err != nil:
		s.Logger.Warn("record slack interaction", "err", err)
	}
	return false
}

// click records an approval.
func (s *Slack) click(ctx context.Context, cb *slack.InteractionCallback, value string) {
	leaseID, digest, ok := parseButtonValue(value)
	if !ok {
		s.ephemeral(cb, "This button is malformed; ask for the request to be posted again.")
		return
	}
	out, err := s.decide(ctx, cb.User.ID, approvals.Answer{LeaseID: leaseID, Digest: digest, Verdict: broker.VerdictApprove, Via: "slack"})
	switch {
	case err != nil:
		s.ephemeral(cb, "Not recorded: "+userMessage(err))
	case out.Repeat:
		s.ephemeral(cb, "You have already approved this request.")
	}
}

// openDeny opens the modal that asks for an optional reason.
func (s *Slack) openDeny(ctx context.Context, cb *slack.InteractionCallback, value string) {
	leaseID, digest, ok := parseButtonValue(value)
	if !ok {
		s.ephemeral(cb, "This button is malformed; ask for the request to be posted again.")
		return
	}
	if _, err := s.api.OpenViewContext(ctx, cb.TriggerID, denyModal(leaseID, digest, cb.Message.Text)); err != nil {
		s.Logger.Warn("open deny modal", "lease_id", leaseID, "err", err)
		s.ephemeral(cb, "Could not open the deny dialog; try again, or run `stint approvals deny "+leaseID+"`.")
	}
}

// submitDeny records a denial from the modal.
func (s *Slack) submitDeny(ctx context.Context, cb *slack.InteractionCallback) any {
	leaseID, digest, ok := parseButtonValue(cb.View.PrivateMetadata)
	if !ok {
		return fieldError("This dialog is malformed; close it and click Deny again.")
	}
	// A submission without state (no input block) has a nil State: the
	// reason is then empty, as if left blank.
	var reason string
	if st := cb.View.State; st != nil {
		reason = st.Values[blockReason][actionReason].Value
	}
	if _, err := s.decide(ctx, cb.User.ID, approvals.Answer{LeaseID: leaseID, Digest: digest, Verdict: broker.VerdictDeny, Reason: reason, Via: "slack"}); err != nil {
		return fieldError("Not recorded: " + userMessage(err))
	}
	return nil
}

// fieldError is a view_submission answer that shows msg under the reason.
func fieldError(msg string) any {
	return map[string]any{"response_action": "errors", "errors": map[string]string{blockReason: msg}}
}

// decide maps the Slack user to an approver and decides.
func (s *Slack) decide(ctx context.Context, userID string, ans approvals.Answer) (*approvals.Outcome, error) {
	ap, err := s.approver(ctx, userID)
	if err != nil {
		s.Logger.Warn("slack user lookup failed", "slack_user", userID, "err", err)
		return nil, broker.Errorf(broker.EUNAVAILABLE, "Slack could not tell who you are; try again shortly.")
	}
	if ap == nil {
		return nil, broker.Errorf(broker.EFORBIDDEN, "You are not a configured Stint approver.")
	}
	return s.Approvals.Decide(ctx, ap, ans)
}

// userMessage is what a refused approver reads.
func userMessage(err error) string { return broker.ErrorMessage(err) }

// ephemeral tells the clicking user something only they see. It runs in the
// background so the interaction is answered at once.
func (s *Slack) ephemeral(cb *slack.InteractionCallback, text string) {
	channel := cb.Channel.ID
	if channel == "" {
		channel = cb.Container.ChannelID
	}
	if channel == "" || cb.User.ID == "" {
		return
	}
	s.async.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.Config.Timeout)
		defer cancel()
		if _, err := s.api.PostEphemeralContext(ctx, channel, cb.User.ID, slack.MsgOptionText(text, false)); err != nil {
			s.Logger.Warn("slack ephemeral reply failed", "slack_user", cb.User.ID, "err", err)
		}
	})
}

// SocketModeHandler returns the Socket Mode event handler, built once. Its
// interactive events take the same path as POST /slack/interactions; tests
// drive it with DispatchEvent.
func (s *Slack) SocketModeHandler() *socketmode.SocketmodeHandler {
	s.socketOnce.Do(func() {
		s.socket = socketmode.New(s.api)
		s.handler = socketmode.NewSocketmodeHandler(s.socket)
		s.handler.Handle(socketmode.EventTypeInteractive, func(evt *socketmode.Event, c *socketmode.Client) {
			cb, ok := evt.Data.(slack.InteractionCallback)
			var reply any
			if ok {
				ctx, cancel := context.WithTimeout(context.Background(), decideTimeout)
				reply = s.Interact(ctx, &cb)
				cancel()
			}
			if evt.Request != nil {
				if reply != nil {
					_ = c.Ack(*evt.Request, reply)
				} else {
					_ = c.Ack(*evt.Request)
				}
			}
		})
		s.handler.Handle(socketmode.EventTypeConnectionError, func(evt *socketmode.Event, _ *socketmode.Client) {
			s.Logger.Warn("slack socket mode connection error", "event", fmt.Sprint(evt.Data))
		})
		s.handler.HandleDefault(func(*socketmode.Event, *socketmode.Client) {})
	})
	return s.handler
}

// RunSocketMode receives interactions over Socket Mode until ctx is done. It
// reconnects on its own; use it when Stint has no public URL.
func (s *Slack) RunSocketMode(ctx context.Context) error {
	// The event loop always ends with an error; it matters only when Stint
	// did not ask it to stop.
	err := s.SocketModeHandler().RunEventLoopContext(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("slack socket mode: %w", err)
}
