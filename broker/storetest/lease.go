package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
)

func testLeases(t *testing.T, open func(tb testing.TB) Store) {
	t.Run("FindEndings", func(t *testing.T) {
		s := open(t)
		a := mustCreateAgent(t, s, "etl-bot")
		pending := mustCreateLease(t, s, newLease(a, at(0)))
		denied := newLease(a, at(time.Second))
		denied.State, denied.EndedAt = broker.LeaseDenied, ptr(at(time.Second))
		mustCreateLease(t, s, denied)
		revoked := mustCreateLease(t, s, newLease(a, at(2*time.Second)))
		for _, upd := range []broker.LeaseUpdate{
			{From: []broker.LeaseState{broker.LeasePending}, State: ptr(broker.LeaseApproved), Actor: "approver:dana@example.com"},
			{From: []broker.LeaseState{broker.LeaseApproved}, State: ptr(broker.LeaseIssuing), Actor: "agent:etl-bot"},
			{From: []broker.LeaseState{broker.LeaseIssuing}, State: ptr(broker.LeaseActive), Actor: "agent:etl-bot"},
			{From: []broker.LeaseState{broker.LeaseActive}, State: ptr(broker.LeaseRevoking), EndState: ptr(broker.LeaseRevoked), Actor: "admin:ada", Reason: "incident 7"},
			{From: []broker.LeaseState{broker.LeaseRevoking}, State: ptr(broker.LeaseRevoked), EndedAt: ptr(at(time.Hour)), Actor: "system:revocation-queue"},
		} {
			if _, err := s.UpdateLease(t.Context(), revoked.ID, upd); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.FindLeaseEndings(t.Context(), []string{pending.ID, denied.ID, revoked.ID, newID()})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[pending.ID] != nil {
			t.Fatalf("endings = %v; want the denied and the revoked lease only", got)
		}
		if e := got[revoked.ID]; e.Actor != "admin:ada" || e.From != broker.LeaseActive || e.To != broker.LeaseRevoking || e.Reason != "incident 7" {
			t.Errorf("revoked lease's ending = %s; want admin:ada's move to revoking", fmtEvent(e))
		}
		if e := got[denied.ID]; e.From != "" || e.To != broker.LeaseDenied || e.Actor != "agent:etl-bot" {
			t.Errorf("denied lease's ending = %s; want its creation", fmtEvent(e))
		}
		if none, err := s.FindLeaseEndings(t.Context(), nil); err != nil || len(none) != 0 {
			t.Errorf("FindLeaseEndings(nil) = %v, %v", none, err)
		}
	})

	t.Run("Create", func(t *testing.T) {
		t.Run("OK", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			want := newRevokingLease(a, at(time.Hour))
			want.UpdatedAt = want.CreatedAt.Add(time.Minute)
			want.EndedAt = ptr(at(50 * time.Minute))
			if err := s.CreateLease(t.Context(), want, "admin:ada", "imported"); err != nil {
				t.Fatal(err)
			}
			wantLease(t, mustFindLease(t, s, want.ID), want)
			events := wantEvents(t, s, want.ID,
				&broker.LeaseEvent{LeaseID: want.ID, From: "", To: broker.LeaseRevoking, Actor: "admin:ada", Reason: "imported"})
			if got, want := fmtTime(&events[0].At), fmtTime(&want.CreatedAt); got != want {
				t.Errorf("first event at %s, want CreatedAt %s", got, want)
			}
		})

		t.Run("Pending", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			want := mustCreateLease(t, s, newLease(a, at(0)))
			wantLease(t, mustFindLease(t, s, want.ID), want)
		})

		t.Run("AssignsIDAndTimes", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			l := newLease(a, time.Time{})
			l.ID, l.UpdatedAt = "", time.Time{}
			mustCreateLease(t, s, l)
			if l.ID == "" || l.CreatedAt.IsZero() || !l.UpdatedAt.Equal(l.CreatedAt) {
				t.Fatalf("after CreateLease:\n\t%s\nwant id set and updated_at = created_at", fmtLease(l))
			}
			wantLease(t, mustFindLease(t, s, l.ID), l)
		})

		t.Run("ErrConflict", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			l := mustCreateLease(t, s, newLease(a, at(0)))
			dup := newLease(a, at(time.Minute))
			dup.ID = l.ID
			wantError(t, s.CreateLease(t.Context(), dup, "agent:etl-bot", "again"), broker.ECONFLICT, "")
			wantLease(t, mustFindLease(t, s, l.ID), l)
			wantEvents(t, s, l.ID,
				&broker.LeaseEvent{LeaseID: l.ID, To: broker.LeasePending, Actor: "agent:etl-bot", Reason: "requested"})
		})

		t.Run("ErrNotFoundAgent", func(t *testing.T) {
			s := open(t)
			l := newLease(&broker.Agent{ID: newID(), Name: "ghost"}, at(0))
			wantError(t, s.CreateLease(t.Context(), l, "agent:ghost", ""), broker.ENOTFOUND, "Agent not found.")
		})
	})

	t.Run("FindByID", func(t *testing.T) {
		t.Run("ErrNotFound", func(t *testing.T) {
			s := open(t)
			mustCreateLease(t, s, newLease(mustCreateAgent(t, s, "etl-bot"), at(0)))
			_, err := s.FindLeaseByID(t.Context(), newID())
			wantError(t, err, broker.ENOTFOUND, "Lease not found.")
		})
	})

	t.Run("Find", func(t *testing.T) { testFindLeases(t, open) })
	t.Run("Update", func(t *testing.T) { testUpdateLease(t, open) })

	t.Run("Events", func(t *testing.T) {
		t.Run("OK", func(t *testing.T) {
			s := open(t)
			l := mustCreateLease(t, s, newLease(mustCreateAgent(t, s, "etl-bot"), at(0)))
			steps := []struct {
				from, to broker.LeaseState
				actor    string
			}{
				{broker.LeasePending, broker.LeaseApproved, "approver:dana@example.com"},
				{broker.LeaseApproved, broker.LeaseIssuing, "agent:etl-bot"},
				{broker.LeaseIssuing, broker.LeaseActive, "agent:etl-bot"},
				{broker.LeaseActive, broker.LeaseRevoking, "system:expiry"},
				{broker.LeaseRevoking, broker.LeaseRevoking, "system:revocation-queue"},
				{broker.LeaseRevoking, broker.LeaseExpired, "system:revocation-queue"},
			}
			want := []*broker.LeaseEvent{{LeaseID: l.ID, To: broker.LeasePending, Actor: "agent:etl-bot", Reason: "requested"}}
			for i, step := range steps {
				reason := "step " + string(rune('1'+i))
				if _, err := s.UpdateLease(t.Context(), l.ID, broker.LeaseUpdate{
					From: []broker.LeaseState{step.from}, State: &step.to, Actor: step.actor, Reason: reason,
				}); err != nil {
					t.Fatalf("step %d: %v", i+1, err)
				}
				want = append(want, &broker.LeaseEvent{LeaseID: l.ID, From: step.from, To: step.to, Actor: step.actor, Reason: reason})
			}
			events := wantEvents(t, s, l.ID, want...)
			for i := 1; i < len(events); i++ {
				if events[i].At.Before(events[i-1].At) {
					t.Errorf("event %d at %s is before event %d at %s", i, fmtTime(&events[i].At), i-1, fmtTime(&events[i-1].At))
				}
			}
		})

		t.Run("UnknownLease", func(t *testing.T) {
			s := open(t)
			events, err := s.FindLeaseEvents(t.Context(), newID())
			if err != nil {
				t.Fatal(err)
			}
			if len(events) != 0 {
				t.Errorf("got %d events, want none", len(events))
			}
		})
	})
}

func testFindLeases(t *testing.T, open func(tb testing.TB) Store) {
	s := open(t)
	etl := mustCreateAgent(t, s, "etl-bot")
	ops := mustCreateAgent(t, s, "ops-bot")

	// Created out of order, one per minute of creation time.
	pending := newLease(etl, at(3*time.Minute))
	active := newActiveLease(etl, at(2*time.Hour))
	active.CreatedAt, active.UpdatedAt = at(5*time.Minute), at(5*time.Minute)
	opsActive := newActiveLease(ops, at(3*time.Hour))
	opsActive.Role = "vault-token"
	opsActive.Task = "incident 7 / rollback"
	opsActive.CreatedAt, opsActive.UpdatedAt = at(1*time.Minute), at(1*time.Minute)
	denied := newLease(ops, at(4*time.Minute))
	denied.State, denied.EndedAt = broker.LeaseDenied, ptr(at(4*time.Minute))
	revoking := newRevokingLease(etl, at(time.Hour))
	revoking.CreatedAt, revoking.UpdatedAt = at(2*time.Minute), at(2*time.Minute)
	for _, l := range []*broker.Lease{pending, active, opsActive, denied, revoking} {
		mustCreateLease(t, s, l)
	}
	// Newest first: active(5m), denied(4m), pending(3m), revoking(2m), opsActive(1m).
	all := []string{active.ID, denied.ID, pending.ID, revoking.ID, opsActive.ID}

	t.Run("OK", func(t *testing.T) {
		got, total, err := s.FindLeases(t.Context(), broker.LeaseFilter{})
		if err != nil {
			t.Fatal(err)
		}
		wantLeaseIDs(t, got, all...)
		if total != 5 {
			t.Errorf("total = %d, want 5", total)
		}
		for _, l := range got {
			if l.ID == revoking.ID {
				wantLease(t, l, revoking)
			}
		}
	})

	for _, tt := range []struct {
		name      string
		filter    broker.LeaseFilter
		want      []string
		wantTotal int
	}{
		{"ID", broker.LeaseFilter{ID: &pending.ID}, []string{pending.ID}, 1},
		{"NoTotal", broker.LeaseFilter{AgentID: &etl.ID, Limit: 2, NoTotal: true}, []string{active.ID, pending.ID}, 2},
		{"NoTotalNone", broker.LeaseFilter{Role: ptr("nope"), NoTotal: true}, []string{}, 0},
		{"AgentID", broker.LeaseFilter{AgentID: &ops.ID}, []string{denied.ID, opsActive.ID}, 2},
		{"Role", broker.LeaseFilter{Role: ptr("vault-token")}, []string{opsActive.ID}, 1},
		{"Task", broker.LeaseFilter{Task: ptr("incident 7 / rollback")}, []string{opsActive.ID}, 1},
		{"TaskOfSeveral", broker.LeaseFilter{Task: ptr("nightly report"), States: []broker.LeaseState{broker.LeasePending, broker.LeaseActive}}, []string{active.ID, pending.ID}, 2},
		{"TaskExactMatch", broker.LeaseFilter{Task: ptr("incident 7")}, nil, 0},
		{"State", broker.LeaseFilter{States: []broker.LeaseState{broker.LeaseActive}}, []string{active.ID, opsActive.ID}, 2},
		{"States", broker.LeaseFilter{States: []broker.LeaseState{broker.LeaseRevoking, broker.LeasePending}}, []string{pending.ID, revoking.ID}, 2},
		{"VaultLeaseID", broker.LeaseFilter{VaultLeaseID: &active.VaultLeaseID}, []string{active.ID}, 1},
		{"CreatedBefore", broker.LeaseFilter{CreatedBefore: ptr(at(3 * time.Minute))}, []string{revoking.ID, opsActive.ID}, 2},
		{"Combined", broker.LeaseFilter{AgentID: &etl.ID, States: []broker.LeaseState{broker.LeaseActive, broker.LeaseRevoking}}, []string{active.ID, revoking.ID}, 2},
		{"Page", broker.LeaseFilter{Offset: 1, Limit: 2}, all[1:3], 5},
		{"LastPage", broker.LeaseFilter{Offset: 4, Limit: 2}, all[4:], 5},
		{"OffsetOnly", broker.LeaseFilter{Offset: 3}, all[3:], 5},
		{"PastTheEnd", broker.LeaseFilter{Offset: 5, Limit: 2}, nil, 5},
		{"FilteredPage", broker.LeaseFilter{AgentID: &etl.ID, Limit: 2}, []string{active.ID, pending.ID}, 3},
		{"NoMatch", broker.LeaseFilter{VaultLeaseID: ptr("database/creds/readonly/none")}, nil, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, total, err := s.FindLeases(t.Context(), tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			wantLeaseIDs(t, got, tt.want...)
			if total != tt.wantTotal {
				t.Errorf("total = %d, want %d", total, tt.wantTotal)
			}
		})
	}

	t.Run("TieBrokenByID", func(t *testing.T) {
		s := open(t)
		a := mustCreateAgent(t, s, "etl-bot")
		var ids []string
		for range 3 {
			ids = append(ids, mustCreateLease(t, s, newLease(a, at(0))).ID)
		}
		slices.Sort(ids)
		slices.Reverse(ids)
		got, _, err := s.FindLeases(t.Context(), broker.LeaseFilter{})
		if err != nil {
			t.Fatal(err)
		}
		wantLeaseIDs(t, got, ids...)
	})
}

func testUpdateLease(t *testing.T, open func(tb testing.TB) Store) {
	t.Run("Base", func(t *testing.T) {
		s := open(t)
		l := newLease(mustCreateAgent(t, s, "etl-bot"), at(0))
		l.State = broker.LeaseIssuing
		mustCreateLease(t, s, l)
		base := *l
		activate := func(base *broker.Lease) (*broker.Lease, error) {
			return s.UpdateLease(t.Context(), l.ID, broker.LeaseUpdate{
				From: []broker.LeaseState{broker.LeaseIssuing}, State: ptr(broker.LeaseActive),
				VaultLeaseID: ptr("database/creds/readonly/abc"), ActivatedAt: ptr(at(time.Minute)), ExpiresAt: ptr(at(16 * time.Minute)),
				Actor: "agent:etl-bot", Reason: "credential minted", Base: base,
			})
		}

		// The base is current: the result is what a read would show.
		got, err := activate(&base)
		if err != nil {
			t.Fatal(err)
		}
		stored := mustFindLease(t, s, l.ID)
		wantLease(t, got, stored)
		if got.Version != stored.Version || got.Version == base.Version {
			t.Errorf("version %d after the update (stored %d), base %d", got.Version, stored.Version, base.Version)
		}
		if base.State != broker.LeaseIssuing {
			t.Errorf("the update changed its base: state %s", base.State)
		}

		// The base is stale (the lease is active now): the guard holds.
		_, err = activate(&base)
		wantError(t, err, broker.ECONFLICT, "Lease is active.")

		// A stale base whose state still passes the guard: the store reads
		// the lease, and the result keeps what changed since the base.
		if _, err := s.UpdateLease(t.Context(), l.ID, broker.LeaseUpdate{From: []broker.LeaseState{broker.LeaseActive}, RevokeError: ptr("vault down"), Actor: "system:test", Reason: "note"}); err != nil {
			t.Fatal(err)
		}
		stale := *stored // active, without the revoke error
		got, err = s.UpdateLease(t.Context(), l.ID, broker.LeaseUpdate{
			From: []broker.LeaseState{broker.LeaseActive}, Extensions: ptr(1), Actor: "system:test", Reason: "extended", Base: &stale,
		})
		if err != nil {
			t.Fatal(err)
		}
		if got.RevokeError != "vault down" || got.Extensions != 1 {
			t.Errorf("update on a stale base: revoke error %q, extensions %d; want the stored error and 1", got.RevokeError, got.Extensions)
		}
		wantLease(t, got, mustFindLease(t, s, l.ID))
		wantEvents(t, s, l.ID,
			&broker.LeaseEvent{LeaseID: l.ID, To: broker.LeaseIssuing, Actor: "agent:etl-bot", Reason: "requested"},
			&broker.LeaseEvent{LeaseID: l.ID, From: broker.LeaseIssuing, To: broker.LeaseActive, Actor: "agent:etl-bot", Reason: "credential minted"},
			&broker.LeaseEvent{LeaseID: l.ID, From: broker.LeaseActive, To: broker.LeaseActive, Actor: "system:test", Reason: "note"},
			&broker.LeaseEvent{LeaseID: l.ID, From: broker.LeaseActive, To: broker.LeaseActive, Actor: "system:test", Reason: "extended"})
	})

	t.Run("OK", func(t *testing.T) {
		s := open(t)
		l := newLease(mustCreateAgent(t, s, "etl-bot"), at(0))
		l.State = broker.LeaseIssuing
		mustCreateLease(t, s, l)

		activated, expires := at(time.Minute), at(16*time.Minute)
		got, err := s.UpdateLease(t.Context(), l.ID, broker.LeaseUpdate{
			From:         []broker.LeaseState{broker.LeaseIssuing},
			State:        ptr(broker.LeaseActive),
			VaultLeaseID: ptr("database/creds/readonly/abc"),
			ActivatedAt:  &activated,
			ExpiresAt:    &expires,
			Actor:        "agent:etl-bot",
			Reason:       "credential minted",
		})
		if err != nil {
			t.Fatal(err)
		}
		if !got.UpdatedAt.After(l.UpdatedAt) {
			t.Errorf("UpdatedAt = %s, want after %s", fmtTime(&got.UpdatedAt), fmtTime(&l.UpdatedAt))
		}
		want := *l
		want.State, want.VaultLeaseID, want.ActivatedAt, want.ExpiresAt = broker.LeaseActive, "database/creds/readonly/abc", &activated, &expires
		want.UpdatedAt = got.UpdatedAt
		wantLease(t, got, &want)
		wantLease(t, mustFindLease(t, s, l.ID), &want)
		events := wantEvents(t, s, l.ID,
			&broker.LeaseEvent{LeaseID: l.ID, To: broker.LeaseIssuing, Actor: "agent:etl-bot", Reason: "requested"},
			&broker.LeaseEvent{LeaseID: l.ID, From: broker.LeaseIssuing, To: broker.LeaseActive, Actor: "agent:etl-bot", Reason: "credential minted"})
		if !events[1].At.Equal(got.UpdatedAt) {
			t.Errorf("event at %s, want the update's time %s", fmtTime(&events[1].At), fmtTime(&got.UpdatedAt))
		}
	})

	t.Run("EveryField", func(t *testing.T) {
		s := open(t)
		l := mustCreateLease(t, s, newActiveLease(mustCreateAgent(t, s, "etl-bot"), at(time.Hour)))
		upd := broker.LeaseUpdate{
			From:           []broker.LeaseState{broker.LeaseActive},
			State:          ptr(broker.LeaseRevoking),
			EndState:       ptr(broker.LeaseRevoked),
			Decision:       ptr("pulled by security"),
			VaultLeaseID:   ptr("database/creds/readonly/xyz"),
			Username:       ptr("v-token-readonly-xyz"),
			ActivatedAt:    ptr(at(2 * time.Minute)),
			ExpiresAt:      ptr(at(17 * time.Minute)),
			EndedAt:        ptr(at(10 * time.Minute)),
			RevokeAttempts: ptr(3),
			NextRevokeAt:   ptr(at(11 * time.Minute)),
			RevokeError:    ptr("vault: 503"),
			PolicyDecision: &broker.Decision{Outcome: broker.OutcomeDeny, PolicyIDs: []string{"p9"}, Reasons: []string{"risk"}},
			Risk:           &broker.RiskAssessment{Score: 91, Factors: []broker.RiskFactor{{Name: broker.RiskBurst, Points: 50, Detail: "20 requests"}, {Name: broker.RiskDenials, Points: 30, Detail: "3 denials"}, {Name: broker.RiskTTL, Points: 11, Detail: "long"}}},
			DecideBy:       ptr(at(30 * time.Minute)),
			ActivateBy:     ptr(at(40 * time.Minute)),
			Extensions:     ptr(2),
			Actor:          "admin:ada",
			Reason:         "kill switch",
		}
		got, err := s.UpdateLease(t.Context(), l.ID, upd)
		if err != nil {
			t.Fatal(err)
		}
		want := *l
		want.State, want.EndState, want.Decision, want.VaultLeaseID, want.Username = *upd.State, *upd.EndState, *upd.Decision, *upd.VaultLeaseID, *upd.Username
		want.ActivatedAt, want.ExpiresAt, want.EndedAt = upd.ActivatedAt, upd.ExpiresAt, upd.EndedAt
		want.RevokeAttempts, want.NextRevokeAt, want.RevokeError = *upd.RevokeAttempts, upd.NextRevokeAt, *upd.RevokeError
		want.PolicyDecision, want.RiskScore, want.RiskFactors, want.DecideBy, want.ActivateBy = upd.PolicyDecision, upd.Risk.Score, upd.Risk.Factors, upd.DecideBy, upd.ActivateBy
		want.Extensions = *upd.Extensions
		want.UpdatedAt = got.UpdatedAt
		wantLease(t, got, &want)
		wantLease(t, mustFindLease(t, s, l.ID), &want)
	})

	t.Run("FromGuardAllows", func(t *testing.T) {
		s := open(t)
		l := mustCreateLease(t, s, newLease(mustCreateAgent(t, s, "etl-bot"), at(0)))
		got, err := s.UpdateLease(t.Context(), l.ID, broker.LeaseUpdate{
			From:  []broker.LeaseState{broker.LeaseApproved, broker.LeasePending},
			State: ptr(broker.LeaseCanceled), EndedAt: ptr(at(time.Minute)),
			Actor: "agent:etl-bot", Reason: "withdrawn",
		})
		if err != nil {
			t.Fatal(err)
		}
		if got.State != broker.LeaseCanceled {
			t.Errorf("state = %s, want %s", got.State, broker.LeaseCanceled)
		}
	})

	t.Run("ErrConflict", func(t *testing.T) {
		s := open(t)
		l := mustCreateLease(t, s, newLease(mustCreateAgent(t, s, "etl-bot"), at(0)))
		_, err := s.UpdateLease(t.Context(), l.ID, broker.LeaseUpdate{
			From:  []broker.LeaseState{broker.LeaseIssuing, broker.LeaseActive},
			State: ptr(broker.LeaseFailed), Decision: ptr("changed"),
			Actor: "system:issuer", Reason: "mint failed",
		})
		wantError(t, err, broker.ECONFLICT, "Lease is pending.")
		// Nothing changed and nothing was recorded.
		wantLease(t, mustFindLease(t, s, l.ID), l)
		wantEvents(t, s, l.ID,
			&broker.LeaseEvent{LeaseID: l.ID, To: broker.LeasePending, Actor: "agent:etl-bot", Reason: "requested"})
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		s := open(t)
		mustCreateLease(t, s, newLease(mustCreateAgent(t, s, "etl-bot"), at(0)))
		_, err := s.UpdateLease(t.Context(), newID(), broker.LeaseUpdate{From: []broker.LeaseState{broker.LeaseActive}, State: ptr(broker.LeaseRevoking), Actor: "admin:ada"})
		wantError(t, err, broker.ENOTFOUND, "Lease not found.")
	})

	t.Run("Note", func(t *testing.T) {
		s := open(t)
		l := mustCreateLease(t, s, newRevokingLease(mustCreateAgent(t, s, "etl-bot"), at(time.Hour)))
		got, err := s.UpdateLease(t.Context(), l.ID, broker.LeaseUpdate{
			From:           []broker.LeaseState{broker.LeaseRevoking},
			RevokeAttempts: ptr(2),
			NextRevokeAt:   ptr(at(2 * time.Hour)),
			RevokeError:    ptr("vault: timeout"),
			Actor:          "system:revocation-queue",
			Reason:         "revoke failed: vault: timeout",
		})
		if err != nil {
			t.Fatal(err)
		}
		if got.State != broker.LeaseRevoking || got.RevokeAttempts != 2 || got.RevokeError != "vault: timeout" {
			t.Errorf("after note:\n\t%s\nwant revoking, 2 attempts, error vault: timeout", fmtLease(got))
		}
		wantEvents(t, s, l.ID,
			&broker.LeaseEvent{LeaseID: l.ID, To: broker.LeaseRevoking, Actor: "agent:etl-bot", Reason: "requested"},
			&broker.LeaseEvent{LeaseID: l.ID, From: broker.LeaseRevoking, To: broker.LeaseRevoking, Actor: "system:revocation-queue", Reason: "revoke failed: vault: timeout"})
	})

	t.Run("Clear", func(t *testing.T) {
		s := open(t)
		l := newRevokingLease(mustCreateAgent(t, s, "etl-bot"), at(time.Hour))
		l.EndedAt = ptr(at(time.Hour))
		mustCreateLease(t, s, l)
		got, err := s.UpdateLease(t.Context(), l.ID, broker.LeaseUpdate{
			From:         []broker.LeaseState{broker.LeaseRevoking},
			State:        ptr(broker.LeaseReleased),
			NextRevokeAt: &time.Time{},
			EndedAt:      &time.Time{},
			ActivatedAt:  &time.Time{},
			ExpiresAt:    &time.Time{},
			RevokeError:  ptr(""),
			VaultLeaseID: ptr(""),
			Actor:        "system:revocation-queue",
			Reason:       "revoked",
		})
		if err != nil {
			t.Fatal(err)
		}
		want := *l
		want.State, want.NextRevokeAt, want.EndedAt, want.ActivatedAt, want.ExpiresAt = broker.LeaseReleased, nil, nil, nil, nil
		want.RevokeError, want.VaultLeaseID, want.UpdatedAt = "", "", got.UpdatedAt
		wantLease(t, got, &want)
		wantLease(t, mustFindLease(t, s, l.ID), &want)
		found, _, err := s.FindLeases(t.Context(), broker.LeaseFilter{VaultLeaseID: &l.VaultLeaseID})
		if err != nil {
			t.Fatal(err)
		}
		wantLeaseIDs(t, found)
	})
}
