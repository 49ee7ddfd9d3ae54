package governance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/stint-broker/stint/broker"
)

// ReviewsStore is what access reviews need from persistence.
type ReviewsStore interface {
	broker.ReviewStore
	broker.LeaseStore
	broker.AgentStore
}

// Reviews runs periodic access reviews and break-glass post-reviews, and
// hears of every grant (broker.GrantObserver): it tells the owner of every
// privileged grant, and for a break-glass grant alerts security and opens
// the post-review the owner must close. It implements
// broker.ReviewService.
//
// A review run (RunReviews, on reviews.schedule) opens, for every active
// agent with roles it may request and no open access review, one review
// with an item per such role (roles an earlier review removed are left
// out), each with its evidence: when the agent last held a lease on it,
// how many it held, whether it never used it. An agent with no lease
// request in InactiveDays is flagged for deprovisioning. The owner is
// told (Alerts: Slack when wired, else the console, CLI and API show it).
//
// The owner (or an admin) attests each role: keep, or remove — which
// revokes the agent's live leases on the role and records a RoleExclusion
// so that it may never request the role again. The last verdict closes the
// review. Enforce (run after every review run and on
// reviews.enforce_schedule) suspends the agent of an access review still
// open at its deadline (no new leases; live leases revoked) and disables it
// Grace later; an overdue break-glass post-review is escalated to security
// once. Closing a review late does not re-activate a suspended agent: an
// admin does, on purpose (a disabled agent stays disabled: that is final).
type Reviews struct {
	Store      ReviewsStore
	KillSwitch KillSwitch
	Alerts     *Alerts
	Logger     *slog.Logger
	// Now is the clock; tests replace it.
	Now func() time.Time

	// Deadline is how long an owner has to attest an access review.
	Deadline time.Duration
	// Grace is how long after suspension an unattested agent is disabled.
	Grace time.Duration
	// InactiveDays flags agents with no lease request in that many days.
	InactiveDays int
	// BreakglassDue is how long an owner has to close a break-glass
	// post-review before it is escalated.
	BreakglassDue time.Duration

	mu    sync.RWMutex
	roles []*broker.Role
}

var (
	_ broker.ReviewService = (*Reviews)(nil)
	_ broker.GrantObserver = (*Reviews)(nil)
)

// NewReviews returns a review service with the default settings: 14 days
// to attest, 14 days' grace, 90 days of inactivity, 3 days to close a
// break-glass post-review.
func NewReviews(store ReviewsStore, roles []*broker.Role, logger *slog.Logger) *Reviews {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Reviews{
		Store: store, Logger: logger, Now: time.Now,
		Deadline: 14 * 24 * time.Hour, Grace: 14 * 24 * time.Hour, InactiveDays: 90, BreakglassDue: 72 * time.Hour,
	}
	r.SetRoles(roles)
	return r
}

// SetRoles replaces the roles reviewed (on start and on reload).
func (rv *Reviews) SetRoles(roles []*broker.Role) {
	sorted := append([]*broker.Role(nil), roles...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	rv.mu.Lock()
	rv.roles = sorted
	rv.mu.Unlock()
}

func (rv *Reviews) allRoles() []*broker.Role {
	rv.mu.RLock()
	defer rv.mu.RUnlock()
	return rv.roles
}

// KillSwitch is the lease service's one kill switch
// (broker.LeaseService.ContainAgent): access reviews contain an agent
// exactly as an admin does, so its tokens stop working at once and every live
// lease is marked to end in the same transaction.
type KillSwitch interface {
	ContainAgent(ctx context.Context, req broker.ContainRequest) (*broker.Containment, error)
}

// contain pulls ks as governance (broker.GovernanceActor).
func contain(ctx context.Context, ks KillSwitch, req broker.ContainRequest) error {
	if ks == nil {
		return errors.New("no kill switch is wired")
	}
	if _, err := ks.ContainAgent(broker.NewContextWithActor(ctx, broker.GovernanceActor()), req); err != nil {
		return fmt.Errorf("contain agent: %w", err)
	}
	return nil
}

// reviewActor is who the store records for governance's own changes.
var reviewActor = broker.Actor{Kind: broker.ActorSystem, Name: "reviews"}

// LeaseGranted implements broker.GrantObserver.
func (rv *Reviews) LeaseGranted(ctx context.Context, l *broker.Lease, role *broker.Role) {
	if !l.Breakglass && !role.Sensitivity.Privileged() {
		return
	}
	agent, err := rv.Store.FindAgentByID(ctx, l.AgentID)
	if err != nil {
		rv.Logger.Error("governance: find agent of a grant", "lease_id", l.ID, "err", err)
		agent = &broker.Agent{ID: l.AgentID, Name: l.Agent}
	}
	expires := ""
	if l.ExpiresAt != nil {
		expires = l.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if l.Breakglass {
		reason := ""
		if l.PolicyDecision != nil && len(l.PolicyDecision.Reasons) > 0 {
			reason = l.PolicyDecision.Reasons[0]
		}
		rv.Alerts.Send(ctx, broker.Alert{
			Kind: "breakglass", Severity: broker.SeverityCritical, Audience: broker.AudienceSecurity,
			AgentID: agent.ID, Agent: agent.Name, Owner: agent.Owner, LeaseID: l.ID, Role: l.Role,
			Message: fmt.Sprintf("BREAK-GLASS: agent %s (owner %s) took %s role %s without approval until %s — %s. Task: %s.",
				agent.Name, agent.Owner, role.Sensitivity, l.Role, expires, reason, l.Task),
		}, broker.AuditBreakglass, l.ID)
		now := rv.Now().UTC()
		r := &broker.Review{
			Kind: broker.ReviewBreakglass, AgentID: agent.ID, Agent: agent.Name, Owner: agent.Owner, LeaseID: l.ID,
			CreatedAt: now, DueAt: now.Add(rv.BreakglassDue), Items: []*broker.ReviewItem{},
		}
		sctx := broker.NewContextWithActor(ctx, reviewActor)
		if err := rv.Store.CreateReview(sctx, r); err != nil {
			rv.Logger.Error("open break-glass post-review", "lease_id", l.ID, "err", err)
			return
		}
		rv.Alerts.Send(ctx, broker.Alert{
			Kind: "breakglass_review", Severity: broker.SeverityWarning, Audience: broker.AudienceOwner,
			AgentID: agent.ID, Agent: agent.Name, Owner: agent.Owner, LeaseID: l.ID, Role: l.Role, ReviewID: r.ID,
			Message: fmt.Sprintf("Your agent %s used break-glass on role %s (%s). Close post-review %s by %s: stint reviews close-breakglass %s --note \"…\".",
				agent.Name, l.Role, reason, r.ID, r.DueAt.Format(time.RFC3339), r.ID),
		}, "", "")
		return
	}
	rv.Alerts.Send(ctx, broker.Alert{
		Kind: "privileged_grant", Severity: broker.SeverityInfo, Audience: broker.AudienceOwner,
		AgentID: agent.ID, Agent: agent.Name, Owner: agent.Owner, LeaseID: l.ID, Role: l.Role,
		Message: fmt.Sprintf("Your agent %s was granted %s role %s until %s (lease %s; %s).", agent.Name, role.Sensitivity, l.Role, expires, l.ID, l.Decision),
	}, broker.AuditPrivilegedGrant, l.ID)
}

// RunReviews implements broker.ReviewService for admins; the scheduled job
// calls Campaign.
func (rv *Reviews) RunReviews(ctx context.Context) ([]*broker.Review, error) {
	actor, ok := broker.ActorFromContext(ctx)
	if !ok || !actor.IsAdmin() {
		return nil, broker.Errorf(broker.EFORBIDDEN, "Only admins run access reviews.")
	}
	return rv.Campaign(ctx)
}

// Campaign opens an access review for every active agent with requestable
// roles and no open access review, tells each owner, then enforces
// deadlines (Enforce). It is idempotent: a second run opens nothing for
// agents whose review is still open. The scheduled job calls it.
func (rv *Reviews) Campaign(ctx context.Context) ([]*broker.Review, error) {
	now := rv.Now().UTC()
	if _, ok := broker.ActorFromContext(ctx); !ok {
		ctx = broker.NewContextWithActor(ctx, reviewActor)
	}
	active := broker.AgentActive
	agents, _, err := rv.Store.FindAgents(ctx, broker.AgentFilter{State: &active})
	if err != nil {
		return nil, fmt.Errorf("find agents: %w", err)
	}
	campaign := now.Format("2006-01-02")
	opened := []*broker.Review{}
	for _, a := range agents {
		r, err := rv.openReview(ctx, a, campaign, now)
		if err != nil {
			return opened, err
		}
		if r != nil {
			opened = append(opened, r)
		}
	}
	rv.Logger.Info("access review run", "campaign", campaign, "agents", len(agents), "opened", len(opened))
	if err := rv.Enforce(ctx); err != nil {
		return opened, err
	}
	return opened, nil
}

// openReview opens a's access review, or returns nil if it has one open or
// may request no role.
func (rv *Reviews) openReview(ctx context.Context, a *broker.Agent, campaign string, now time.Time) (*broker.Review, error) {
	kind, open := broker.ReviewAccess, broker.ReviewOpen
	_, n, err := rv.Store.FindReviews(ctx, broker.ReviewFilter{AgentID: &a.ID, Kind: &kind, State: &open, Limit: 1})
	if err != nil {
		return nil, fmt.Errorf("find open reviews: %w", err)
	}
	if n > 0 {
		return nil, nil
	}
	excluded, err := rv.Store.FindRoleExclusions(ctx, a.ID)
	if err != nil {
		return nil, fmt.Errorf("find role exclusions: %w", err)
	}
	gone := map[string]bool{}
	for _, x := range excluded {
		gone[x.Role] = true
	}
	r := &broker.Review{
		Kind: broker.ReviewAccess, Campaign: campaign, AgentID: a.ID, Agent: a.Name, Owner: a.Owner,
		CreatedAt: now, DueAt: now.Add(rv.Deadline), Items: []*broker.ReviewItem{},
	}
	for _, role := range rv.allRoles() {
		if !role.EligibleFor(a) || gone[role.Name] {
			continue
		}
		it, err := rv.evidence(ctx, a.ID, role.Name)
		if err != nil {
			return nil, err
		}
		r.Items = append(r.Items, it)
	}
	if len(r.Items) == 0 {
		return nil, nil
	}
	latest, _, err := rv.Store.FindLeases(ctx, broker.LeaseFilter{AgentID: &a.ID, Limit: 1})
	if err != nil {
		return nil, fmt.Errorf("find last lease: %w", err)
	}
	cutoff := now.Add(-time.Duration(rv.InactiveDays) * 24 * time.Hour)
	if len(latest) > 0 {
		t := latest[0].CreatedAt
		r.LastLeaseAt = &t
		r.Inactive = rv.InactiveDays > 0 && t.Before(cutoff)
	} else {
		r.Inactive = rv.InactiveDays > 0 && a.CreatedAt.Before(cutoff)
	}
	if err := rv.Store.CreateReview(ctx, r); broker.ErrorCode(err) == broker.ECONFLICT {
		return nil, nil // opened meanwhile by another run
	} else if err != nil {
		return nil, fmt.Errorf("open review of agent %s: %w", a.Name, err)
	}
	rv.Alerts.Send(ctx, broker.Alert{
		Kind: "access_review", Severity: broker.SeverityInfo, Audience: broker.AudienceOwner,
		AgentID: a.ID, Agent: a.Name, Owner: a.Owner, ReviewID: r.ID, Message: reviewMessage(r),
	}, "", "")
	return r, nil
}

// reviewMessage is what the owner is told about a new access review.
func reviewMessage(r *broker.Review) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Access review %s: does your agent %s still need these roles? Attest by %s (stint reviews attest %s ROLE --keep|--remove), or the agent is suspended.",
		r.ID, r.Agent, r.DueAt.Format(time.RFC3339), r.ID)
	if r.Inactive {
		fmt.Fprintf(&b, " The agent has not requested a lease recently: consider disabling it.")
	}
	for _, it := range r.Items {
		switch {
		case it.NeverUsed:
			fmt.Fprintf(&b, " %s: never used.", it.Role)
		default:
			fmt.Fprintf(&b, " %s: %d lease(s), last %s.", it.Role, it.LeaseCount, it.LastLeaseAt.Format("2006-01-02"))
		}
	}
	return b.String()
}

// usedStates are the states of leases that held a credential.
var usedStates = []broker.LeaseState{broker.LeaseActive, broker.LeaseRevoking, broker.LeaseExpired, broker.LeaseReleased, broker.LeaseRevoked}

// evidence returns the review item of role for the agent.
func (rv *Reviews) evidence(ctx context.Context, agentID, role string) (*broker.ReviewItem, error) {
	used, n, err := rv.Store.FindLeases(ctx, broker.LeaseFilter{AgentID: &agentID, Role: &role, States: usedStates, Limit: 1})
	if err != nil {
		return nil, fmt.Errorf("find leases of role %s: %w", role, err)
	}
	it := &broker.ReviewItem{Role: role, LeaseCount: n, NeverUsed: n == 0}
	if len(used) > 0 {
		t := used[0].CreatedAt
		if used[0].ActivatedAt != nil {
			t = *used[0].ActivatedAt
		}
		it.LastLeaseAt = &t
	}
	return it, nil
}

// Enforce acts on overdue reviews: an access review open past its deadline
// suspends its agent (once), and Grace later disables it (once); an open
// break-glass post-review past its deadline is escalated to security
// (once). It is idempotent.
func (rv *Reviews) Enforce(ctx context.Context) error {
	now := rv.Now().UTC()
	if _, ok := broker.ActorFromContext(ctx); !ok {
		ctx = broker.NewContextWithActor(ctx, reviewActor)
	}
	open := broker.ReviewOpen
	due, _, err := rv.Store.FindReviews(ctx, broker.ReviewFilter{State: &open, DueBefore: &now})
	if err != nil {
		return fmt.Errorf("find overdue reviews: %w", err)
	}
	for _, r := range due {
		if err := rv.enforce(ctx, r, now); err != nil {
			return err
		}
	}
	return nil
}

func (rv *Reviews) enforce(ctx context.Context, r *broker.Review, now time.Time) error {
	if r.Kind == broker.ReviewBreakglass {
		if r.EscalatedAt != nil {
			return nil
		}
		if _, err := rv.Store.UpdateReview(ctx, r.ID, broker.ReviewUpdate{EscalatedAt: &now}); err != nil {
			return fmt.Errorf("escalate review %s: %w", r.ID, err)
		}
		rv.Alerts.Send(ctx, broker.Alert{
			Kind: "breakglass_review_overdue", Severity: broker.SeverityWarning, Audience: broker.AudienceSecurity,
			AgentID: r.AgentID, Agent: r.Agent, Owner: r.Owner, LeaseID: r.LeaseID, ReviewID: r.ID,
			Message: fmt.Sprintf("The post-review %s of break-glass lease %s (agent %s, owner %s) was due %s and is still open.",
				r.ID, r.LeaseID, r.Agent, r.Owner, r.DueAt.Format(time.RFC3339)),
		}, "", "")
		return nil
	}
	if r.SuspendedAt == nil {
		reason := fmt.Sprintf("access review %s was not attested by %s", r.ID, r.DueAt.Format(time.RFC3339))
		if err := rv.control(ctx, r, false, reason); err != nil {
			return err
		}
		if _, err := rv.Store.UpdateReview(ctx, r.ID, broker.ReviewUpdate{SuspendedAt: &now}); err != nil {
			return fmt.Errorf("record suspension for review %s: %w", r.ID, err)
		}
		rv.Alerts.Send(ctx, broker.Alert{
			Kind: "access_review_overdue", Severity: broker.SeverityWarning, Audience: broker.AudienceOwner,
			AgentID: r.AgentID, Agent: r.Agent, Owner: r.Owner, ReviewID: r.ID,
			Message: fmt.Sprintf("Agent %s was suspended: %s. Attest it by %s or the agent is disabled.", r.Agent, reason, r.DueAt.Add(rv.Grace).Format(time.RFC3339)),
		}, "", "")
		return nil
	}
	if r.DisabledAt == nil && !now.Before(r.DueAt.Add(rv.Grace)) {
		reason := fmt.Sprintf("access review %s was not attested within %s of its deadline", r.ID, rv.Grace)
		if err := rv.control(ctx, r, true, reason); err != nil {
			return err
		}
		if _, err := rv.Store.UpdateReview(ctx, r.ID, broker.ReviewUpdate{DisabledAt: &now}); err != nil {
			return fmt.Errorf("record disabling for review %s: %w", r.ID, err)
		}
		rv.Alerts.Send(ctx, broker.Alert{
			Kind: "access_review_disabled", Severity: broker.SeverityWarning, Audience: broker.AudienceSecurity,
			AgentID: r.AgentID, Agent: r.Agent, Owner: r.Owner, ReviewID: r.ID,
			Message: fmt.Sprintf("Agent %s (owner %s) was disabled: %s.", r.Agent, r.Owner, reason),
		}, "", "")
	}
	return nil
}

// control suspends or disables r's agent through the kill switch.
func (rv *Reviews) control(ctx context.Context, r *broker.Review, disable bool, reason string) error {
	state := broker.AgentSuspended
	if disable {
		state = broker.AgentDisabled
	}
	if err := contain(ctx, rv.KillSwitch, broker.ContainRequest{AgentID: r.AgentID, State: state, Reason: reason, KeepDisabled: true}); err != nil {
		return fmt.Errorf("enforce review %s: %w", r.ID, err)
	}
	return nil
}

// viewer is who may see and attest reviews: an admin (all) or an approver
// (the reviews of agents it owns).
func viewer(ctx context.Context) (broker.Actor, error) {
	actor, ok := broker.ActorFromContext(ctx)
	switch {
	case !ok:
		return actor, broker.Errorf(broker.EUNAUTHORIZED, "Authentication required.")
	case actor.IsAdmin(), actor.Kind == broker.ActorApprover:
		return actor, nil
	}
	return actor, broker.Errorf(broker.EFORBIDDEN, "Only agent owners (with an approver token) and admins see access reviews.")
}

// FindReviews implements broker.ReviewService.
func (rv *Reviews) FindReviews(ctx context.Context, filter broker.ReviewFilter) ([]*broker.Review, int, error) {
	actor, err := viewer(ctx)
	if err != nil {
		return nil, 0, err
	}
	if !actor.IsAdmin() {
		filter.Owner = &actor.Name
	}
	return rv.Store.FindReviews(ctx, filter)
}

// FindReview implements broker.ReviewService.
func (rv *Reviews) FindReview(ctx context.Context, id string) (*broker.Review, error) {
	actor, err := viewer(ctx)
	if err != nil {
		return nil, err
	}
	return rv.reviewOf(ctx, actor, id, "see")
}

// reviewOf returns the review with id if it is actor's to act on (verb:
// "see", "attest", "close"): an admin's, or the agent owner's. Review ids
// are random, so saying whose a review is reveals nothing a caller could
// not learn otherwise, and tells a mistaken attester what went wrong.
func (rv *Reviews) reviewOf(ctx context.Context, actor broker.Actor, id, verb string) (*broker.Review, error) {
	r, err := rv.Store.FindReviewByID(ctx, id)
	if err != nil {
		return nil, err
	}
	if !actor.IsAdmin() && !strings.EqualFold(r.Owner, actor.Name) {
		return nil, broker.Errorf(broker.EFORBIDDEN, "Review %s is not yours to %s: only the owner of agent %s and admins may.", r.ID, verb, r.Agent)
	}
	return r, nil
}

// Attest implements broker.ReviewService. Every attestation is kept: an
// admin's beside the owner's. A remove verdict records a RoleExclusion and
// revokes the agent's live leases on the role before it is recorded, and is
// final: a later keep is refused. Repeating the same attestation changes
// nothing.
func (rv *Reviews) Attest(ctx context.Context, id, role string, verdict broker.ReviewVerdict, note string) (*broker.Review, error) {
	switch {
	case verdict != broker.VerdictKeep && verdict != broker.VerdictRemove:
		return nil, broker.FieldErrorf("verdict", "A verdict is keep or remove.")
	}
	if err := broker.CheckLen("note", note, broker.MaxReviewNoteLen); err != nil {
		return nil, err
	}
	actor, err := viewer(ctx)
	if err != nil {
		return nil, err
	}
	r, err := rv.reviewOf(ctx, actor, id, "attest")
	if err != nil {
		return nil, err
	}
	item := r.Item(role)
	switch {
	case r.Kind != broker.ReviewAccess:
		return nil, broker.Errorf(broker.ECONFLICT, "Review %s is a %s review; close it with a note.", r.ID, r.Kind)
	case r.State != broker.ReviewOpen:
		return nil, broker.Errorf(broker.ECONFLICT, "Review %s is closed.", r.ID)
	case item == nil:
		return nil, broker.FieldErrorf("role", "Review %s has no item for role %q.", r.ID, role)
	case item.Verdict == broker.VerdictRemove && verdict == broker.VerdictKeep:
		return nil, broker.Errorf(broker.ECONFLICT, "Role %s was removed from agent %s by %s; a removal is final.", role, r.Agent, item.AttestedBy)
	}
	now := rv.Now().UTC()
	by := actor.String()
	note = strings.TrimSpace(note)
	for _, a := range item.Attestations {
		if a.By == by && a.Verdict == verdict && a.Note == note {
			return r, nil // the same attestation again (a double submit)
		}
	}
	if verdict == broker.VerdictRemove {
		if err := rv.Store.ExcludeRole(ctx, &broker.RoleExclusion{AgentID: r.AgentID, Role: role, ReviewID: r.ID, By: by, At: now}); err != nil {
			return nil, fmt.Errorf("record role removal: %w", err)
		}
		if rv.KillSwitch != nil {
			req := broker.ContainRequest{AgentID: r.AgentID, Role: role, Reason: fmt.Sprintf("access review %s removed role %s", r.ID, role)}
			if err := contain(ctx, rv.KillSwitch, req); err != nil {
				return nil, fmt.Errorf("revoke leases of removed role: %w", err)
			}
		}
	}
	r, err = rv.Store.UpdateReview(ctx, r.ID, broker.ReviewUpdate{Item: &broker.ReviewItem{
		Role: role, Verdict: verdict, AttestedBy: by, AttestedAt: &now, Note: note,
	}})
	if err != nil {
		return nil, err
	}
	rv.Logger.Info("access review attested", "review_id", r.ID, "agent", r.Agent, "role", role, "verdict", verdict, "by", by)
	if r.Attested() {
		closed := broker.ReviewClosed
		if r, err = rv.Store.UpdateReview(ctx, r.ID, broker.ReviewUpdate{State: &closed, ClosedAt: &now, ClosedBy: &by}); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// CloseBreakglass implements broker.ReviewService.
func (rv *Reviews) CloseBreakglass(ctx context.Context, id, note string) (*broker.Review, error) {
	note = strings.TrimSpace(note)
	switch {
	case note == "":
		return nil, broker.FieldErrorf("note", "A note is required: say what the emergency was and what was done.")
	}
	if err := broker.CheckLen("note", note, broker.MaxReviewNoteLen); err != nil {
		return nil, err
	}
	actor, err := viewer(ctx)
	if err != nil {
		return nil, err
	}
	r, err := rv.reviewOf(ctx, actor, id, "close")
	if err != nil {
		return nil, err
	}
	switch {
	case r.Kind != broker.ReviewBreakglass:
		return nil, broker.Errorf(broker.ECONFLICT, "Review %s is an access review; attest its roles.", r.ID)
	case r.State != broker.ReviewOpen:
		return nil, broker.Errorf(broker.ECONFLICT, "Review %s is closed.", r.ID)
	}
	now, by, closed := rv.Now().UTC(), actor.String(), broker.ReviewClosed
	r, err = rv.Store.UpdateReview(ctx, r.ID, broker.ReviewUpdate{State: &closed, ClosedAt: &now, ClosedBy: &by, Note: &note})
	if err != nil {
		return nil, err
	}
	rv.Logger.Info("break-glass post-review closed", "review_id", r.ID, "lease_id", r.LeaseID, "agent", r.Agent, "by", by)
	return r, nil
}
