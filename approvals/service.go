package approvals

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/stint-broker/stint/broker"
)

// Store is what the approval flow needs from persistence.
type Store interface {
	broker.LeaseStore
	broker.AgentStore
	broker.ApprovalStore
}

// Service runs human approval: it records approvers' answers under the
// separation-of-duty rules, moves pending leases to approved or rejected,
// and delivers the notification outbox to a Notifier (Slack). It implements
// broker.ApprovalService. Set the exported fields before use and run Run in
// a goroutine to deliver notices.
type Service struct {
	Store Store
	// Notifier receives approval requests and state changes; nil drops
	// notices (approvers then use the CLI or the API).
	Notifier Notifier
	Logger   *slog.Logger
	// Now is the clock; tests replace it.
	Now func() time.Time

	// Verdicts records an answer once this service has checked it, and
	// moves the lease as the quorum says: the lease service, the only
	// writer of lease state (cmd wires leases.Service). Decide fails
	// without it.
	Verdicts broker.VerdictRecorder

	// RetryBase and RetryMax bound the outbox's exponential backoff; a notice
	// is retried until it is delivered.
	RetryBase time.Duration
	RetryMax  time.Duration
	// ClaimTimeout hides a claimed notice from other workers while it is sent.
	ClaimTimeout time.Duration
	// PollInterval is how often Run looks for due notices without being
	// woken (notices written by another process, retries).
	PollInterval time.Duration
	// BatchSize is how many notices one pass claims.
	BatchSize int
	// Claims hands the notices this service claimed and did not finish back
	// to the store when it stops (ReleaseClaims, notifier.go); NewService
	// sets it when the store implements it. claims maps a notice id to the
	// time its claim runs until.
	Claims   broker.NoticeClaimStore
	claimsMu sync.Mutex
	claims   map[int64]time.Time

	mu        sync.RWMutex
	approvers []*broker.Approver
	byEmail   map[string]*broker.Approver
	bySlack   map[string]*broker.Approver
	byToken   map[string]*broker.Approver
	roles     map[string]*broker.Role
	wake      chan struct{}
}

// NewService returns a service with default settings. It returns an error if
// the approvers are inconsistent (see SetApprovers).
func NewService(store Store, approvers []*broker.Approver, roles []*broker.Role, logger *slog.Logger) (*Service, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		Store:        store,
		Logger:       logger,
		Now:          time.Now,
		RetryBase:    2 * time.Second,
		RetryMax:     5 * time.Minute,
		ClaimTimeout: time.Minute,
		PollInterval: 2 * time.Second,
		BatchSize:    100,
		wake:         make(chan struct{}, 1),
	}
	if err := s.SetApprovers(approvers); err != nil {
		return nil, err
	}
	s.SetRoles(roles)
	s.Claims, _ = store.(broker.NoticeClaimStore)
	return s, nil
}

// SetApprovers replaces the approvers (on start and on reload). It returns
// an error naming the first approver without an email, an email, Slack user
// id or token hash used twice, or a token hash that is not 64 hex digits.
func (s *Service) SetApprovers(approvers []*broker.Approver) error {
	byEmail := map[string]*broker.Approver{}
	bySlack := map[string]*broker.Approver{}
	byToken := map[string]*broker.Approver{}
	for i, a := range approvers {
		email := strings.ToLower(strings.TrimSpace(a.Email))
		switch {
		case !strings.Contains(email, "@") || strings.ContainsAny(email, " \t\r\n"):
			return fmt.Errorf("approvers[%d]: email %q is not an email address", i, a.Email)
		case byEmail[email] != nil:
			return fmt.Errorf("approvers[%d]: %s is listed twice", i, email)
		case len(a.Groups) == 0:
			return fmt.Errorf("approver %s: groups is empty; name the approver groups it decides for", email)
		}
		byEmail[email] = a
		if a.SlackUserID != "" {
			if bySlack[a.SlackUserID] != nil {
				return fmt.Errorf("approver %s: slack_user_id %s is used twice", email, a.SlackUserID)
			}
			bySlack[a.SlackUserID] = a
		}
		if a.TokenSHA256 != "" {
			h := strings.ToLower(a.TokenSHA256)
			if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
				return fmt.Errorf("approver %s: token_sha256 must be 64 hex digits", email)
			}
			if byToken[h] != nil {
				return fmt.Errorf("approver %s: token_sha256 is used twice", email)
			}
			byToken[h] = a
		}
	}
	s.mu.Lock()
	s.approvers, s.byEmail, s.bySlack, s.byToken = approvers, byEmail, bySlack, byToken
	s.mu.Unlock()
	return nil
}

// SetRoles replaces the roles shown in approval messages.
func (s *Service) SetRoles(roles []*broker.Role) {
	m := make(map[string]*broker.Role, len(roles))
	for _, r := range roles {
		m[r.Name] = r
	}
	s.mu.Lock()
	s.roles = m
	s.mu.Unlock()
}

func (s *Service) role(name string) *broker.Role {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.roles[name]
}

// ApproverByEmail returns the configured approver with the email, or nil.
func (s *Service) ApproverByEmail(email string) *broker.Approver {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byEmail[strings.ToLower(strings.TrimSpace(email))]
}

// ApproverBySlackID returns the approver configured with the Slack user id,
// or nil.
func (s *Service) ApproverBySlackID(id string) *broker.Approver {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.bySlack[id]
}

// AuthenticateApprover resolves an approver API token to an approver actor;
// ok is false if no approver has the token. Only the token's hash is
// compared.
func (s *Service) AuthenticateApprover(secret string) (broker.Actor, bool) {
	sum := sha256.Sum256([]byte(secret))
	s.mu.RLock()
	a := s.byToken[hex.EncodeToString(sum[:])]
	s.mu.RUnlock()
	if a == nil {
		return broker.Actor{}, false
	}
	return broker.Actor{Kind: broker.ActorApprover, Name: strings.ToLower(a.Email), AuthMethod: "approver_token"}, true
}

// Digest returns the digest that binds an approver's answer to the request
// shown: SHA-256 over the lease id, agent, role, window, task, justification
// and policy decision. Anything else about the lease may change (state,
// approvals so far); if one of these does, earlier answers no longer apply.
func Digest(l *broker.Lease) string {
	b, err := json.Marshal(struct {
		ID            string           `json:"id"`
		AgentID       string           `json:"agent_id"`
		Agent         string           `json:"agent"`
		Role          string           `json:"role"`
		TTL           int64            `json:"ttl"`
		Task          string           `json:"task"`
		Justification string           `json:"justification"`
		Decision      *broker.Decision `json:"decision"`
	}{l.ID, l.AgentID, l.Agent, l.Role, int64(l.TTL), l.Task, l.Justification, l.PolicyDecision})
	if err != nil {
		panic(fmt.Sprintf("approvals: digest: %v", err)) // plain strings and ints always marshal
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Answer is one approver's answer to a pending lease, from any channel.
type Answer struct {
	LeaseID string
	// Digest is the request digest the approver was shown.
	Digest  string
	Verdict broker.Verdict
	Reason  string
	// Via is "slack", "api" or "cli".
	Via string
}

// Outcome is the result of Decide.
type Outcome struct {
	Lease     *broker.Lease
	Approvals []*broker.Approval
	// Repeat is true when the approver had already given the same answer:
	// nothing changed (a double click).
	Repeat bool
}

// Decide records approver's answer. It is the one decision path for Slack,
// the API and the CLI. Returns ENOTFOUND if the lease does not exist;
// EFORBIDDEN if the approver is not in the lease's approver group, owns the
// agent or is the user the agent acts for; ECONFLICT if the lease does not
// need approval or is no longer pending, if the request changed since the
// digest was taken, or if the approver already answered otherwise; EINVALID
// for a malformed answer.
func (s *Service) Decide(ctx context.Context, ap *broker.Approver, ans Answer) (*Outcome, error) {
	switch {
	case ap == nil:
		return nil, broker.Errorf(broker.EFORBIDDEN, "You are not a configured approver.")
	case ans.Verdict != broker.VerdictApprove && ans.Verdict != broker.VerdictDeny:
		return nil, broker.Errorf(broker.EINVALID, "An answer is approve or deny.")
	case strings.TrimSpace(ans.Digest) == "":
		return nil, broker.FieldErrorf("digest", "Digest is required: send the digest of the request you were shown.")
	}
	if err := broker.CheckLen("reason", ans.Reason, broker.MaxReasonLen); err != nil {
		return nil, err
	}
	// RecordVerdict refuses if anything changed between our read and its
	// write; then we read again and decide again.
	for attempt := 0; ; attempt++ {
		out, err := s.decideOnce(ctx, ap, ans)
		if err == nil || !errors.Is(err, errStale) {
			return out, err
		}
		if attempt == 10 {
			return nil, fmt.Errorf("record approval of lease %s: still contended after %d attempts", ans.LeaseID, attempt)
		}
	}
}

// errStale marks a RecordVerdict refused because the lease changed.
var errStale = errors.New("lease changed meanwhile")

func (s *Service) decideOnce(ctx context.Context, ap *broker.Approver, ans Answer) (*Outcome, error) {
	l, err := s.Store.FindLeaseByID(ctx, ans.LeaseID)
	if err != nil {
		return nil, err
	}
	if l.PolicyDecision == nil || l.PolicyDecision.Outcome != broker.OutcomeApprovals {
		return nil, broker.Errorf(broker.ECONFLICT, "This lease does not need approval.")
	}
	agent, err := s.Store.FindAgentByID(ctx, l.AgentID)
	if err != nil {
		return nil, fmt.Errorf("find agent: %w", err)
	}
	if err := mayDecide(ap, l, agent); err != nil {
		return nil, err
	}
	existing, err := s.Store.FindApprovals(ctx, l.ID)
	if err != nil {
		return nil, fmt.Errorf("find approvals: %w", err)
	}
	if prev := answerOf(existing, ap); prev != nil {
		if prev.Verdict == ans.Verdict {
			return &Outcome{Lease: l, Approvals: existing, Repeat: true}, nil
		}
		return nil, broker.Errorf(broker.ECONFLICT, "You already answered %s to this request.", prev.Verdict)
	}
	if l.State != broker.LeasePending {
		return nil, broker.Errorf(broker.ECONFLICT, "The request is %s; it is no longer pending.", l.State)
	}
	now := s.Now().UTC()
	// RecordVerdict checks the deadline again in its transaction; this
	// check gives the same answer at once rather than after its retries.
	if err := broker.CheckDecideBy(l, now); err != nil {
		return nil, err
	}
	if ans.Digest != Digest(l) {
		return nil, broker.Errorf(broker.ECONFLICT, "The request changed after it was shown to you; review it again.")
	}

	a := &broker.Approval{
		LeaseID:      l.ID,
		Approver:     strings.ToLower(ap.Email),
		ApproverName: ap.Name,
		Verdict:      ans.Verdict,
		Reason:       strings.TrimSpace(ans.Reason),
		Digest:       ans.Digest,
		Via:          ans.Via,
		At:           now,
	}
	if s.Verdicts == nil {
		return nil, fmt.Errorf("record approval of lease %s: no verdict recorder is wired", l.ID)
	}
	updated, err := s.Verdicts.RecordVerdict(ctx, l, existing, a)
	if broker.ErrorCode(err) == broker.ECONFLICT {
		return nil, fmt.Errorf("%w: %w", errStale, err)
	} else if err != nil {
		return nil, fmt.Errorf("record approval: %w", err)
	}
	s.Logger.Info("approval recorded", "lease_id", l.ID, "agent", l.Agent, "role", l.Role,
		"approver", a.Approver, "verdict", a.Verdict, "via", a.Via, "state", updated.State)
	s.Poke()
	return &Outcome{Lease: updated, Approvals: append(existing, a)}, nil
}

// answerOf returns ap's earlier answer among approvals, or nil.
func answerOf(approvals []*broker.Approval, ap *broker.Approver) *broker.Approval {
	for _, a := range approvals {
		if ap.Is(a.Approver) {
			return a
		}
	}
	return nil
}

// approverFrom returns the configured approver acting in ctx.
func (s *Service) approverFrom(ctx context.Context) (*broker.Approver, error) {
	actor, ok := broker.ActorFromContext(ctx)
	if !ok {
		return nil, broker.Errorf(broker.EUNAUTHORIZED, "Authentication required.")
	}
	if actor.Kind != broker.ActorApprover {
		return nil, broker.Errorf(broker.EFORBIDDEN, "Only approvers decide requests; use an approver token.")
	}
	ap := s.ApproverByEmail(actor.Name)
	if ap == nil {
		return nil, broker.Errorf(broker.EFORBIDDEN, "You are not a configured approver (see approvers: in the configuration).")
	}
	return ap, nil
}

// via names the channel of an approver actor: the CLI on the server host
// authenticates "local".
func via(ctx context.Context) string {
	if a, _ := broker.ActorFromContext(ctx); a.AuthMethod == "local" {
		return "cli"
	}
	return "api"
}

// FindPendingApprovals implements broker.ApprovalService.
func (s *Service) FindPendingApprovals(ctx context.Context) ([]*broker.PendingApproval, error) {
	ap, err := s.approverFrom(ctx)
	if err != nil {
		return nil, err
	}
	pending, _, err := s.Store.FindLeases(ctx, broker.LeaseFilter{States: []broker.LeaseState{broker.LeasePending}})
	if err != nil {
		return nil, fmt.Errorf("find pending leases: %w", err)
	}
	out := []*broker.PendingApproval{}
	for i := len(pending) - 1; i >= 0; i-- { // oldest first
		l := pending[i]
		if l.PolicyDecision == nil || !ap.InGroup(l.PolicyDecision.ApproverGroup) {
			continue
		}
		agent, err := s.Store.FindAgentByID(ctx, l.AgentID)
		if err != nil {
			return nil, fmt.Errorf("find agent: %w", err)
		}
		if mayDecide(ap, l, agent) != nil {
			continue
		}
		approvals, err := s.Store.FindApprovals(ctx, l.ID)
		if err != nil {
			return nil, fmt.Errorf("find approvals: %w", err)
		}
		out = append(out, &broker.PendingApproval{
			Lease: l, Owner: agent.Owner, Digest: Digest(l), Needed: l.PolicyDecision.Approvals, Approvals: approvals,
		})
	}
	return out, nil
}

// Approve implements broker.ApprovalService.
func (s *Service) Approve(ctx context.Context, leaseID, digest string) (*broker.Lease, error) {
	ap, err := s.approverFrom(ctx)
	if err != nil {
		return nil, err
	}
	out, err := s.Decide(ctx, ap, Answer{LeaseID: leaseID, Digest: digest, Verdict: broker.VerdictApprove, Via: via(ctx)})
	if err != nil {
		return nil, err
	}
	return out.Lease, nil
}

// Deny implements broker.ApprovalService.
func (s *Service) Deny(ctx context.Context, leaseID, digest, reason string) (*broker.Lease, error) {
	ap, err := s.approverFrom(ctx)
	if err != nil {
		return nil, err
	}
	out, err := s.Decide(ctx, ap, Answer{LeaseID: leaseID, Digest: digest, Verdict: broker.VerdictDeny, Reason: reason, Via: via(ctx)})
	if err != nil {
		return nil, err
	}
	return out.Lease, nil
}

// Poke wakes Run so that it delivers notices now.
func (s *Service) Poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// LeaseChanged is Poke with the lease's id, for leases.Service.OnChange.
func (s *Service) LeaseChanged(string) { s.Poke() }
