package approvals

import (
	"context"
	"fmt"
	"time"

	"github.com/stint-broker/stint/broker"
)

// Notifier tells humans about leases that need approval. approvals/slack
// implements it. Every method may be called again for the same change after
// a failure, so each must be safe to repeat.
type Notifier interface {
	// PostRequest posts the approvers' message for r's lease and returns
	// where it lives.
	PostRequest(ctx context.Context, r *Request) (*broker.ApprovalMessage, error)
	// UpdateRequest rewrites the message at m to show r.
	UpdateRequest(ctx context.Context, m *broker.ApprovalMessage, r *Request) error
	// NotifyOwner tells the agent's owner that r's lease moved to r.Notice.To.
	NotifyOwner(ctx context.Context, r *Request) error
}

// Request is everything a Notifier shows about a lease that needs approval,
// as it is now.
type Request struct {
	Lease *broker.Lease
	Agent *broker.Agent
	// Role is nil if the role has been removed from the configuration.
	Role      *broker.Role
	Approvals []*broker.Approval
	// Digest binds buttons to this request (see Digest).
	Digest string
	// Needed and Given count approvals.
	Needed, Given int
	// Approvers are the names of those who may decide it.
	Approvers []string
	// Notice is the change being announced.
	Notice *broker.Notice
}

// Run delivers the outbox until ctx is done: at once, whenever Poke is
// called, and every PollInterval.
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTicker(s.PollInterval)
	defer t.Stop()
	for {
		if err := s.DeliverNotices(ctx); err != nil && ctx.Err() == nil {
			s.Logger.Error("deliver approval notices", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-t.C:
		}
	}
}

// DeliverNotices sends every due notice once, oldest first, one at a time
// per lease. A notice that fails is retried with capped exponential backoff,
// forever: Slack being down delays messages but never loses them. It is
// idempotent and safe to call from tests.
func (s *Service) DeliverNotices(ctx context.Context) error {
	for {
		now := s.Now().UTC()
		until := now.Add(s.ClaimTimeout)
		due, err := s.Store.ClaimNotices(ctx, now, until, s.BatchSize)
		if err != nil {
			return fmt.Errorf("claim notices: %w", err)
		}
		s.holdNotices(due, until)
		for _, n := range due {
			if err := s.deliver(ctx, n); err != nil {
				if ctx.Err() != nil {
					// Stopping: the call was cut short, not refused. The
					// claims stay held, and ReleaseClaims hands them on.
					return nil
				}
				attempts := n.Attempts + 1
				next := s.Now().UTC().Add(broker.Backoff(s.RetryBase, s.RetryMax, attempts))
				msg := broker.RetryErrorText(err)
				s.Logger.Warn("approval notice failed; will retry", "lease_id", n.LeaseID, "notice", n.ID,
					"attempt", attempts, "next_attempt", next, "err", err)
				if rerr := s.Store.RetryNotice(ctx, n.ID, attempts, next, msg); rerr != nil {
					return fmt.Errorf("record failed notice: %w", rerr)
				}
				s.dropNotice(n.ID)
				continue
			}
			// What Slack took is recorded even when the service is
			// stopping.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			err := s.Store.CompleteNotice(cctx, n.ID, s.Now().UTC())
			cancel()
			if err != nil {
				return fmt.Errorf("complete notice: %w", err)
			}
			s.dropNotice(n.ID)
		}
		// Completing a lease's notice frees its next one; failed notices
		// wait for their backoff, so this ends.
		if len(due) == 0 {
			return nil
		}
	}
}

// deliver posts or updates the approvers' message for n's lease as it is
// now, then tells the owner about a state change. A notice whose state the
// lease has left is skipped: a later notice shows the lease as it is.
func (s *Service) deliver(ctx context.Context, n *broker.Notice) error {
	if s.Notifier == nil {
		return nil // nothing to tell; approvers use the CLI or the API
	}
	r, err := s.request(ctx, n)
	if err != nil {
		return err
	}
	if r.Lease.State != n.To {
		// The lease has moved on since n (activation goes approved →
		// issuing → active, a release active → revoking → released, often
		// before the outbox runs). Every move has its own notice, so the
		// one that reaches the lease's current state announces it; showing
		// it now as well would only repeat the same message and the same
		// owner DM.
		s.Logger.Debug("approval notice superseded", "lease_id", n.LeaseID, "notice", n.ID, "to", n.To, "state", r.Lease.State)
		return nil
	}
	m, err := s.Store.FindApprovalMessage(ctx, n.LeaseID)
	switch broker.ErrorCode(err) {
	case "":
		if err := s.Notifier.UpdateRequest(ctx, m, r); err != nil {
			return fmt.Errorf("update approval message: %w", err)
		}
	case broker.ENOTFOUND:
		if len(r.Approvers) < r.Needed {
			s.Logger.Warn("too few approvers can decide this request; it will time out",
				"lease_id", r.Lease.ID, "group", r.Lease.PolicyDecision.ApproverGroup, "eligible", len(r.Approvers), "needed", r.Needed)
		}
		if m, err = s.Notifier.PostRequest(ctx, r); err != nil {
			return fmt.Errorf("post approval message: %w", err)
		}
		m.LeaseID = n.LeaseID
		if err := s.Store.SetApprovalMessage(ctx, m); err != nil {
			return fmt.Errorf("record approval message: %w", err)
		}
	default:
		return fmt.Errorf("find approval message: %w", err)
	}
	if n.From != n.To {
		if err := s.Notifier.NotifyOwner(ctx, r); err != nil {
			return fmt.Errorf("notify owner: %w", err)
		}
	}
	return nil
}

// request gathers what notifiers show about n's lease.
func (s *Service) request(ctx context.Context, n *broker.Notice) (*Request, error) {
	l, err := s.Store.FindLeaseByID(ctx, n.LeaseID)
	if err != nil {
		return nil, fmt.Errorf("find lease: %w", err)
	}
	agent, err := s.Store.FindAgentByID(ctx, l.AgentID)
	if err != nil {
		return nil, fmt.Errorf("find agent: %w", err)
	}
	approvals, err := s.Store.FindApprovals(ctx, l.ID)
	if err != nil {
		return nil, fmt.Errorf("find approvals: %w", err)
	}
	needed := 0
	if l.PolicyDecision != nil {
		needed = l.PolicyDecision.Approvals
	}
	return &Request{
		Lease: l, Agent: agent, Role: s.role(l.Role), Approvals: approvals,
		Digest: Digest(l), Needed: needed, Given: Given(approvals),
		Approvers: s.EligibleApprovers(l, agent), Notice: n,
	}, nil
}

// holdNotices records that the service holds the claims of notices, until
// until.
func (s *Service) holdNotices(notices []*broker.Notice, until time.Time) {
	s.claimsMu.Lock()
	defer s.claimsMu.Unlock()
	if s.claims == nil {
		s.claims = make(map[int64]time.Time)
	}
	for _, n := range notices {
		s.claims[n.ID] = until
	}
}

// dropNotice forgets the claim of a notice sent or rescheduled.
func (s *Service) dropNotice(id int64) {
	s.claimsMu.Lock()
	delete(s.claims, id)
	s.claimsMu.Unlock()
}

// ReleaseClaims makes every notice this service claimed and did not finish
// due at once, for another replica (or this one's next start) to send,
// unless it was claimed again since. Call it once Run returned. It returns
// how many it released; without a store that releases claims (Claims nil)
// it releases none, and they run out after ClaimTimeout.
func (s *Service) ReleaseClaims(ctx context.Context) (int, error) {
	s.claimsMu.Lock()
	byUntil := map[time.Time][]int64{}
	for id, until := range s.claims {
		byUntil[until] = append(byUntil[until], id)
	}
	s.claims = nil
	s.claimsMu.Unlock()
	if s.Claims == nil {
		return 0, nil
	}
	now := s.Now().UTC()
	released := 0
	for until, ids := range byUntil {
		n, err := s.Claims.ReleaseNotices(ctx, ids, until, now)
		if err != nil {
			return released, fmt.Errorf("release notice claims: %w", err)
		}
		released += n
	}
	return released, nil
}
