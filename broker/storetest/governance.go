package storetest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
)

// testGovernance checks broker.LeaseGuard and broker.ReviewStore.
func testGovernance(t *testing.T, open func(tb testing.TB) Store) {
	t.Run("RiskFactors", func(t *testing.T) {
		s := open(t)
		a := mustCreateAgent(t, s, "etl-bot")
		l := newLease(a, at(0))
		l.RiskFactors = []broker.RiskFactor{{Name: broker.RiskBurst, Points: 25, Detail: "12 requests in the last minute"}}
		mustCreateLease(t, s, l)
		got := mustFindLease(t, s, l.ID)
		if len(got.RiskFactors) != 1 || got.RiskFactors[0] != l.RiskFactors[0] {
			t.Fatalf("risk factors = %+v, want %+v", got.RiskFactors, l.RiskFactors)
		}
	})

	t.Run("CreateLeaseExclusive", func(t *testing.T) {
		s := open(t)
		a := mustCreateAgent(t, s, "etl-bot")
		other := mustCreateAgent(t, s, "other-bot")
		held := newActiveLease(a, at(time.Hour))
		held.Role = "finance-report"
		mustCreateLease(t, s, held)
		// Another agent's live lease on the conflicting role does not count.
		mine := newActiveLease(other, at(time.Hour))
		mine.Role = "txn-approve"
		mustCreateLease(t, s, mine)

		l := newLease(a, at(time.Minute))
		l.Role, l.State = "txn-approve", broker.LeaseIssuing
		err := s.CreateLeaseExclusive(t.Context(), l, "agent:etl-bot", "requested", []string{"finance-report"})
		wantError(t, err, broker.ECONFLICT, "")
		if !errors.Is(err, broker.ErrDutyConflict) {
			t.Fatalf("CreateLeaseExclusive = %v; want it to wrap ErrDutyConflict", err)
		}
		if _, err := s.FindLeaseByID(t.Context(), l.ID); broker.ErrorCode(err) != broker.ENOTFOUND {
			t.Fatalf("refused lease was stored: %v", err)
		}
		// A non-live lease (denied) is not checked; an unrelated role passes.
		l.State = broker.LeaseDenied
		if err := s.CreateLeaseExclusive(t.Context(), l, "agent:etl-bot", "denied", []string{"finance-report"}); err != nil {
			t.Fatal(err)
		}
		l2 := newLease(a, at(2*time.Minute))
		l2.Role, l2.State = "db-readonly", broker.LeaseIssuing
		if err := s.CreateLeaseExclusive(t.Context(), l2, "agent:etl-bot", "requested", []string{"txn-approve"}); err != nil {
			t.Fatal(err)
		}
		// Once the held lease ends, the conflicting role may go live.
		for _, upd := range []broker.LeaseUpdate{
			{From: []broker.LeaseState{broker.LeaseActive}, State: ptr(broker.LeaseRevoking), EndState: ptr(broker.LeaseExpired), Actor: "system:expiry"},
			{From: []broker.LeaseState{broker.LeaseRevoking}, State: ptr(broker.LeaseExpired), Actor: "system:expiry"},
		} {
			if _, err := s.UpdateLease(t.Context(), held.ID, upd); err != nil {
				t.Fatal(err)
			}
		}
		l3 := newLease(a, at(3*time.Minute))
		l3.Role, l3.State = "txn-approve", broker.LeaseIssuing
		if err := s.CreateLeaseExclusive(t.Context(), l3, "agent:etl-bot", "requested", []string{"finance-report"}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("UpdateLeaseExclusive", func(t *testing.T) {
		s := open(t)
		a := mustCreateAgent(t, s, "etl-bot")
		held := newRevokingLease(a, at(time.Hour)) // revoking still holds a credential
		held.Role = "finance-report"
		mustCreateLease(t, s, held)
		l := newLease(a, at(0))
		l.Role, l.State = "txn-approve", broker.LeaseApproved
		mustCreateLease(t, s, l)
		upd := broker.LeaseUpdate{From: []broker.LeaseState{broker.LeaseApproved}, State: ptr(broker.LeaseIssuing), Actor: "agent:etl-bot"}
		_, err := s.UpdateLeaseExclusive(t.Context(), l.ID, upd, []string{"finance-report"})
		wantError(t, err, broker.ECONFLICT, "")
		if !errors.Is(err, broker.ErrDutyConflict) {
			t.Fatalf("UpdateLeaseExclusive = %v; want it to wrap ErrDutyConflict", err)
		}
		if got := mustFindLease(t, s, l.ID); got.State != broker.LeaseApproved {
			t.Fatalf("state = %s, want approved", got.State)
		}
		if _, err := s.UpdateLease(t.Context(), held.ID, broker.LeaseUpdate{From: []broker.LeaseState{broker.LeaseRevoking}, State: ptr(broker.LeaseReleased), Actor: "system:expiry"}); err != nil {
			t.Fatal(err)
		}
		got, err := s.UpdateLeaseExclusive(t.Context(), l.ID, upd, []string{"finance-report"})
		if err != nil || got.State != broker.LeaseIssuing {
			t.Fatalf("UpdateLeaseExclusive = %v, %v; want issuing", got, err)
		}
		// The From guard still holds.
		_, err = s.UpdateLeaseExclusive(t.Context(), l.ID, upd, []string{"finance-report"})
		wantError(t, err, broker.ECONFLICT, "Lease is issuing.")
	})

	t.Run("ConcurrentActivations", func(t *testing.T) {
		s := open(t)
		for round := range 10 {
			a := mustCreateAgent(t, s, "bot-"+string(rune('a'+round)))
			var leases [2]*broker.Lease
			for i, role := range []string{"finance-report", "txn-approve"} {
				leases[i] = newLease(a, at(time.Duration(round)*time.Minute))
				leases[i].Role, leases[i].State = role, broker.LeaseApproved
				mustCreateLease(t, s, leases[i])
			}
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i := range leases {
				wg.Go(func() {
					other := leases[1-i].Role
					_, errs[i] = s.UpdateLeaseExclusive(t.Context(), leases[i].ID, broker.LeaseUpdate{
						From: []broker.LeaseState{broker.LeaseApproved}, State: ptr(broker.LeaseIssuing), Actor: "agent:" + a.Name,
					}, []string{other})
				})
			}
			wg.Wait()
			ok := 0
			for _, err := range errs {
				if err == nil {
					ok++
				} else if !errors.Is(err, broker.ErrDutyConflict) {
					t.Fatalf("round %d: %v; want a separation-of-duty conflict", round, err)
				}
			}
			if ok != 1 {
				t.Fatalf("round %d: %d activations of conflicting roles succeeded, want exactly 1 (errors %v)", round, ok, errs)
			}
		}
	})

	t.Run("UpdateLeaseIfExpires", func(t *testing.T) {
		s := open(t)
		a := mustCreateAgent(t, s, "etl-bot")
		l := mustCreateLease(t, s, newActiveLease(a, at(time.Hour)))
		later := at(90 * time.Minute)
		window := broker.Duration(later.Sub(*l.ActivatedAt))
		upd := broker.LeaseUpdate{From: []broker.LeaseState{broker.LeaseActive}, ExpiresAt: &later, Extensions: ptr(1), TTL: &window, Actor: "agent:etl-bot", Reason: "extended"}
		_, err := s.UpdateLeaseIfExpires(t.Context(), l.ID, at(2*time.Hour), upd)
		wantError(t, err, broker.ECONFLICT, "")
		got, err := s.UpdateLeaseIfExpires(t.Context(), l.ID, at(time.Hour), upd)
		if err != nil {
			t.Fatal(err)
		}
		if !got.ExpiresAt.Equal(later) || got.Extensions != 1 || got.TTL != window {
			t.Fatalf("lease = %s", fmtLease(got))
		}
		if got, err := s.FindLeaseByID(t.Context(), l.ID); err != nil || got.TTL != window {
			t.Fatalf("stored lease ttl = %v, %v; want %s", got.TTL, err, window)
		}
		// The second of two extensions that read the same window loses.
		_, err = s.UpdateLeaseIfExpires(t.Context(), l.ID, at(time.Hour), upd)
		wantError(t, err, broker.ECONFLICT, "")
	})

	t.Run("Review", func(t *testing.T) {
		s := open(t)
		a := mustCreateAgent(t, s, "etl-bot")
		last := at(-time.Hour)
		r := &broker.Review{
			Kind: broker.ReviewAccess, Campaign: "2025-06-02", AgentID: a.ID, Agent: a.Name, Owner: a.Owner,
			CreatedAt: at(0), DueAt: at(14 * 24 * time.Hour), Inactive: true, LastLeaseAt: &last,
			Items: []*broker.ReviewItem{
				{Role: "db-readonly", LeaseCount: 3, LastLeaseAt: &last},
				{Role: "txn-approve", NeverUsed: true},
			},
		}
		if err := s.CreateReview(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		if r.ID == "" || r.State != broker.ReviewOpen {
			t.Fatalf("created review id=%q state=%q", r.ID, r.State)
		}
		dup := &broker.Review{Kind: broker.ReviewAccess, AgentID: a.ID, Agent: a.Name, Owner: a.Owner, DueAt: at(time.Hour)}
		wantError(t, s.CreateReview(t.Context(), dup), broker.ECONFLICT, "")
		// A break-glass post-review of the same agent is a different review.
		bg := &broker.Review{Kind: broker.ReviewBreakglass, AgentID: a.ID, Agent: a.Name, Owner: a.Owner, LeaseID: newID(), DueAt: at(time.Hour)}
		if err := s.CreateReview(t.Context(), bg); err != nil {
			t.Fatal(err)
		}

		got, err := s.FindReviewByID(t.Context(), r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Items) != 2 || got.Items[0].LeaseCount != 3 || !got.Items[0].LastLeaseAt.Equal(last) || !got.Items[1].NeverUsed || !got.Inactive || !got.DueAt.Equal(r.DueAt) {
			t.Fatalf("review = %+v items %+v %+v", got, got.Items[0], got.Items[1])
		}

		owner, open := "OWNER@example.com", broker.ReviewOpen
		list, total, err := s.FindReviews(t.Context(), broker.ReviewFilter{Owner: &owner, State: &open})
		if err != nil || total != 2 || len(list) != 2 {
			t.Fatalf("FindReviews(owner) = %d (%d), %v; want 2", len(list), total, err)
		}
		due := at(2 * time.Hour)
		list, _, err = s.FindReviews(t.Context(), broker.ReviewFilter{DueBefore: &due})
		if err != nil || len(list) != 1 || list[0].ID != bg.ID {
			t.Fatalf("FindReviews(due before) = %v, %v; want the break-glass review", list, err)
		}

		now := at(time.Hour)
		got, err = s.UpdateReview(t.Context(), r.ID, broker.ReviewUpdate{Item: &broker.ReviewItem{
			Role: "txn-approve", Verdict: broker.VerdictRemove, AttestedBy: "approver:owner@example.com", AttestedAt: &now, Note: "unused",
		}})
		if err != nil {
			t.Fatal(err)
		}
		if it := got.Item("txn-approve"); it.Verdict != broker.VerdictRemove || !it.AttestedAt.Equal(now) || got.Attested() {
			t.Fatalf("after attesting: %+v attested=%t", it, got.Attested())
		}
		// A second attester's agreeing verdict is kept beside the first,
		// which still shows as the item's.
		later := at(2 * time.Hour)
		if _, err := s.UpdateReview(t.Context(), r.ID, broker.ReviewUpdate{Item: &broker.ReviewItem{
			Role: "txn-approve", Verdict: broker.VerdictRemove, AttestedBy: "admin:sec", AttestedAt: &later, Note: "agreed",
		}}); err != nil {
			t.Fatal(err)
		}
		stored, err := s.FindReviewByID(t.Context(), r.ID)
		if err != nil {
			t.Fatal(err)
		}
		it := stored.Item("txn-approve")
		if it.AttestedBy != "approver:owner@example.com" || it.Note != "unused" || len(it.Attestations) != 2 {
			t.Fatalf("after a second attestation: %+v with %d attestations; want the first one shown and both kept", it, len(it.Attestations))
		}
		if a := it.Attestations[1]; a.By != "admin:sec" || a.Verdict != broker.VerdictRemove || !a.At.Equal(later) || a.Note != "agreed" {
			t.Fatalf("second attestation = %+v", a)
		}
		if n := len(stored.Item("db-readonly").Attestations); n != 0 {
			t.Fatalf("db-readonly has %d attestations, want none", n)
		}
		_, err = s.UpdateReview(t.Context(), r.ID, broker.ReviewUpdate{Item: &broker.ReviewItem{Role: "nope", Verdict: broker.VerdictKeep}})
		wantError(t, err, broker.EINVALID, "")
		closed := broker.ReviewClosed
		if _, err := s.UpdateReview(t.Context(), r.ID, broker.ReviewUpdate{State: &closed, ClosedAt: &now, SuspendedAt: &now}); err != nil {
			t.Fatal(err)
		}
		_, err = s.UpdateReview(t.Context(), r.ID, broker.ReviewUpdate{Item: &broker.ReviewItem{Role: "db-readonly", Verdict: broker.VerdictKeep}})
		wantError(t, err, broker.ECONFLICT, "")
		// Closed, a new access review may open.
		if err := s.CreateReview(t.Context(), dup); err != nil {
			t.Fatal(err)
		}
		_, err = s.FindReviewByID(t.Context(), newID())
		wantError(t, err, broker.ENOTFOUND, "Review not found.")
	})

	t.Run("RoleExclusion", func(t *testing.T) {
		s := open(t)
		a := mustCreateAgent(t, s, "etl-bot")
		if ex, err := s.RoleExcluded(t.Context(), a.ID, "txn-approve"); err != nil || ex {
			t.Fatalf("RoleExcluded before = %t, %v", ex, err)
		}
		x := &broker.RoleExclusion{AgentID: a.ID, Role: "txn-approve", ReviewID: "r1", By: "admin:sec", At: at(0)}
		if err := s.ExcludeRole(t.Context(), x); err != nil {
			t.Fatal(err)
		}
		if err := s.ExcludeRole(t.Context(), &broker.RoleExclusion{AgentID: a.ID, Role: "txn-approve", ReviewID: "r2", By: "admin:other"}); err != nil {
			t.Fatal(err)
		}
		if ex, err := s.RoleExcluded(t.Context(), a.ID, "txn-approve"); err != nil || !ex {
			t.Fatalf("RoleExcluded after = %t, %v", ex, err)
		}
		list, err := s.FindRoleExclusions(t.Context(), a.ID)
		if err != nil || len(list) != 1 || list[0].ReviewID != "r1" || !list[0].At.Equal(at(0)) {
			t.Fatalf("FindRoleExclusions = %+v, %v; want the first record", list, err)
		}
		wantError(t, s.ExcludeRole(t.Context(), &broker.RoleExclusion{AgentID: newID(), Role: "x", By: "admin:sec"}), broker.ENOTFOUND, "")
	})
}
