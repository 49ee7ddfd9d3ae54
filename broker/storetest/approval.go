package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
)

// newApproval returns an approve answer by approver to lease l.
func newApproval(l *broker.Lease, approver string, v broker.Verdict) *broker.Approval {
	return &broker.Approval{
		LeaseID: l.ID, Approver: approver, ApproverName: "Dana", Verdict: v,
		Digest: "d1g3st", Via: "slack", At: at(10 * time.Minute),
	}
}

// fmtApproval renders every field of a but its id.
func fmtApproval(a *broker.Approval) string {
	return fmt.Sprintf("lease=%s approver=%s name=%s verdict=%s reason=%q digest=%s via=%s at=%s",
		a.LeaseID, a.Approver, a.ApproverName, a.Verdict, a.Reason, a.Digest, a.Via, fmtTime(&a.At))
}

// fmtNotice renders what a notice announces and its delivery state.
func fmtNotice(n *broker.Notice) string {
	return fmt.Sprintf("lease=%s %q->%q attempts=%d sent=%t error=%q", n.LeaseID, n.From, n.To, n.Attempts, n.SentAt != nil, n.LastError)
}

func wantNotices(tb testing.TB, s Store, leaseID string, want ...string) []*broker.Notice {
	tb.Helper()
	got, err := s.FindNotices(tb.Context(), leaseID)
	if err != nil {
		tb.Fatal(err)
	}
	var g []string
	for _, n := range got {
		g = append(g, fmtNotice(n))
	}
	if fmt.Sprint(g) != fmt.Sprint(want) {
		tb.Fatalf("notices differ\ngot:  %q\nwant: %q", g, want)
	}
	return got
}

func testApprovals(t *testing.T, open func(tb testing.TB) Store) {
	t.Run("Record", func(t *testing.T) {
		t.Run("OK", func(t *testing.T) {
			s := open(t)
			l := mustCreateLease(t, s, newLease(mustCreateAgent(t, s, "etl-bot"), at(0)))
			a := newApproval(l, "Dana@Example.com", broker.VerdictApprove)
			approved := broker.LeaseApproved
			got, err := s.RecordApproval(t.Context(), a, l.UpdatedAt, 0, broker.LeaseUpdate{
				State: &approved, ActivateBy: ptr(at(time.Hour)), Actor: "approver:dana@example.com", Reason: "approved by dana@example.com (1 of 1)",
			})
			if err != nil {
				t.Fatal(err)
			}
			if got.State != broker.LeaseApproved || fmtTime(got.ActivateBy) != fmtTime(ptr(at(time.Hour))) {
				t.Fatalf("lease after approval:\n\t%s", fmtLease(got))
			}
			if a.ID == 0 || a.Approver != "dana@example.com" {
				t.Fatalf("approval after record: id=%d approver=%s, want an id and the email in lower case", a.ID, a.Approver)
			}
			wantLease(t, mustFindLease(t, s, l.ID), got)
			list, err := s.FindApprovals(t.Context(), l.ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 1 || fmtApproval(list[0]) != fmtApproval(a) || list[0].ID != a.ID {
				t.Fatalf("approvals = %v, want [%s]", list, fmtApproval(a))
			}
			wantEvents(t, s, l.ID,
				&broker.LeaseEvent{LeaseID: l.ID, To: broker.LeasePending, Actor: "agent:etl-bot", Reason: "requested"},
				&broker.LeaseEvent{LeaseID: l.ID, From: broker.LeasePending, To: broker.LeaseApproved, Actor: "approver:dana@example.com", Reason: "approved by dana@example.com (1 of 1)"})
		})

		t.Run("FindLeasesByApprover", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			answered := mustCreateLease(t, s, newLease(a, at(0)))
			mustCreateLease(t, s, newLease(a, at(time.Minute))) // nobody answered it
			if _, err := s.RecordApproval(t.Context(), newApproval(answered, "Dana@Example.com", broker.VerdictApprove), answered.UpdatedAt, 0,
				broker.LeaseUpdate{Actor: "approver:dana@example.com", Reason: "approved by dana@example.com (1 of 2)"}); err != nil {
				t.Fatal(err)
			}
			got, total, err := s.FindLeases(t.Context(), broker.LeaseFilter{Approver: ptr("DANA@example.com")})
			if err != nil {
				t.Fatal(err)
			}
			wantLeaseIDs(t, got, answered.ID)
			if total != 1 {
				t.Errorf("total = %d, want 1", total)
			}
			if got, _, _ := s.FindLeases(t.Context(), broker.LeaseFilter{Approver: ptr("eve@example.com")}); len(got) != 0 {
				t.Errorf("an approver who answered nothing matches %d leases", len(got))
			}
		})

		t.Run("Note", func(t *testing.T) {
			s := open(t)
			l := newLease(mustCreateAgent(t, s, "etl-bot"), at(0))
			l.PolicyDecision.Approvals = 2
			mustCreateLease(t, s, l)
			got, err := s.RecordApproval(t.Context(), newApproval(l, "dana@example.com", broker.VerdictApprove), l.UpdatedAt, 0,
				broker.LeaseUpdate{Actor: "approver:dana@example.com", Reason: "approved by dana@example.com (1 of 2)"})
			if err != nil {
				t.Fatal(err)
			}
			if got.State != broker.LeasePending {
				t.Fatalf("state = %s, want pending", got.State)
			}
			// A second approver reads the lease again and counts one approval.
			if _, err := s.RecordApproval(t.Context(), newApproval(l, "eve@example.com", broker.VerdictApprove), got.UpdatedAt, 0, broker.LeaseUpdate{}); broker.ErrorCode(err) != broker.ECONFLICT {
				t.Fatalf("record with a stale approval count: %v, want ECONFLICT", err)
			}
			if _, err := s.RecordApproval(t.Context(), newApproval(l, "eve@example.com", broker.VerdictApprove), got.UpdatedAt, 1, broker.LeaseUpdate{Actor: "approver:eve@example.com"}); err != nil {
				t.Fatal(err)
			}
			list, _ := s.FindApprovals(t.Context(), l.ID)
			if len(list) != 2 || list[0].Approver != "dana@example.com" || list[1].Approver != "eve@example.com" {
				t.Fatalf("approvals = %v, want dana then eve", list)
			}
		})

		t.Run("ErrConflict", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			l := mustCreateLease(t, s, newLease(a, at(0)))
			note := broker.LeaseUpdate{Actor: "approver:dana@example.com"}
			got, err := s.RecordApproval(t.Context(), newApproval(l, "dana@example.com", broker.VerdictApprove), l.UpdatedAt, 0, note)
			if err != nil {
				t.Fatal(err)
			}
			// The same approver again, in another case: at most one answer each.
			_, err = s.RecordApproval(t.Context(), newApproval(l, "DANA@example.com", broker.VerdictDeny), got.UpdatedAt, 1, note)
			wantError(t, err, broker.ECONFLICT, "dana@example.com has already answered this request.")
			// A stale read of the lease.
			_, err = s.RecordApproval(t.Context(), newApproval(l, "eve@example.com", broker.VerdictApprove), l.UpdatedAt.Add(-time.Second), 1, note)
			wantError(t, err, broker.ECONFLICT, "The lease changed meanwhile; read it again.")
			// Not pending.
			done := newLease(a, at(time.Minute))
			done.State = broker.LeaseCanceled
			mustCreateLease(t, s, done)
			_, err = s.RecordApproval(t.Context(), newApproval(done, "eve@example.com", broker.VerdictApprove), done.UpdatedAt, 0, note)
			wantError(t, err, broker.ECONFLICT, "Lease is canceled, no longer pending.")
			if list, _ := s.FindApprovals(t.Context(), l.ID); len(list) != 1 {
				t.Fatalf("%d approvals after refused records, want 1", len(list))
			}
		})

		t.Run("ErrPastDeadline", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			l := newLease(a, at(0))
			l.DecideBy = ptr(at(10 * time.Minute)) // newApproval answers at exactly 10m
			mustCreateLease(t, s, l)
			approved := broker.LeaseApproved
			upd := broker.LeaseUpdate{State: &approved, ActivateBy: ptr(at(time.Hour)), Actor: "approver:dana@example.com"}
			for _, v := range []broker.Verdict{broker.VerdictApprove, broker.VerdictDeny} {
				_, err := s.RecordApproval(t.Context(), newApproval(l, "dana@example.com", v), l.UpdatedAt, 0, upd)
				wantError(t, err, broker.ECONFLICT, "The request timed out at "+at(10*time.Minute).UTC().Format(time.RFC3339)+
					", before this answer; it can no longer be approved or denied.")
			}
			got := mustFindLease(t, s, l.ID)
			if got.State != broker.LeasePending || got.ActivateBy != nil {
				t.Fatalf("lease after a late approval:\n\t%s\nwant it pending with no activation window", fmtLease(got))
			}
			if list, _ := s.FindApprovals(t.Context(), l.ID); len(list) != 0 {
				t.Fatalf("%d approvals recorded after the deadline, want none", len(list))
			}
			// A nanosecond before the deadline is still in time.
			early := newApproval(l, "dana@example.com", broker.VerdictApprove)
			early.At = at(10*time.Minute - time.Nanosecond)
			if _, err := s.RecordApproval(t.Context(), early, l.UpdatedAt, 0, upd); err != nil {
				t.Fatalf("approval before the deadline: %v", err)
			}
		})

		t.Run("ErrNotFound", func(t *testing.T) {
			s := open(t)
			l := newLease(mustCreateAgent(t, s, "etl-bot"), at(0))
			_, err := s.RecordApproval(t.Context(), newApproval(l, "dana@example.com", broker.VerdictApprove), at(0), 0, broker.LeaseUpdate{})
			wantError(t, err, broker.ENOTFOUND, "Lease not found.")
		})
	})

	t.Run("Notices", func(t *testing.T) {
		t.Run("OnlyForApprovalLeases", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			auto := newActiveLease(a, at(time.Hour))
			auto.PolicyDecision = &broker.Decision{Outcome: broker.OutcomeApprove}
			mustCreateLease(t, s, auto)
			wantNotices(t, s, auto.ID)
			l := mustCreateLease(t, s, newLease(a, at(0)))
			if _, err := s.UpdateLease(t.Context(), l.ID, broker.LeaseUpdate{From: []broker.LeaseState{broker.LeasePending}, State: ptr(broker.LeaseCanceled), Actor: "agent:etl-bot"}); err != nil {
				t.Fatal(err)
			}
			wantNotices(t, s, l.ID,
				`lease=`+l.ID+` ""->"pending" attempts=0 sent=false error=""`,
				`lease=`+l.ID+` "pending"->"canceled" attempts=0 sent=false error=""`)
			if n, err := s.CountUnsentNotices(t.Context()); err != nil || n != 2 {
				t.Fatalf("CountUnsentNotices = %d, %v; want 2", n, err)
			}
		})

		t.Run("Claim", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			l1 := mustCreateLease(t, s, newLease(a, at(0)))
			l2 := mustCreateLease(t, s, newLease(a, at(time.Minute)))
			if _, err := s.UpdateLease(t.Context(), l1.ID, broker.LeaseUpdate{From: []broker.LeaseState{broker.LeasePending}, State: ptr(broker.LeaseTimedOut), Actor: "system:approval-timeout"}); err != nil {
				t.Fatal(err)
			}
			now := time.Now().UTC()
			got, err := s.ClaimNotices(t.Context(), now, now.Add(time.Minute), 10)
			if err != nil {
				t.Fatal(err)
			}
			// One per lease, the oldest: l1's second notice waits for its first.
			if len(got) != 2 || got[0].LeaseID != l1.ID || got[0].To != broker.LeasePending || got[1].LeaseID != l2.ID {
				t.Fatalf("claimed %v, want l1's first notice and l2's", got)
			}
			// Claimed notices are hidden until retryAt.
			if again, _ := s.ClaimNotices(t.Context(), now, now.Add(time.Minute), 10); len(again) != 0 {
				t.Fatalf("claimed again: %v, want none before retryAt", again)
			}
			if err := s.CompleteNotice(t.Context(), got[0].ID, now); err != nil {
				t.Fatal(err)
			}
			if err := s.RetryNotice(t.Context(), got[1].ID, 1, now.Add(30*time.Second), "slack: connection refused"); err != nil {
				t.Fatal(err)
			}
			next, err := s.ClaimNotices(t.Context(), now, now.Add(time.Minute), 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(next) != 1 || next[0].LeaseID != l1.ID || next[0].To != broker.LeaseTimedOut {
				t.Fatalf("claimed %v, want l1's timed_out notice only", next)
			}
			later, _ := s.ClaimNotices(t.Context(), now.Add(31*time.Second), now.Add(2*time.Minute), 10)
			if len(later) != 1 || later[0].ID != got[1].ID || later[0].Attempts != 1 || later[0].LastError != "slack: connection refused" {
				t.Fatalf("claimed after backoff %v, want l2's notice with its attempt recorded", later)
			}
			wantNotices(t, s, l1.ID,
				`lease=`+l1.ID+` ""->"pending" attempts=1 sent=true error=""`,
				`lease=`+l1.ID+` "pending"->"timed_out" attempts=1 sent=false error=""`)
			wantError(t, s.CompleteNotice(t.Context(), 999999, now), broker.ENOTFOUND, "")
			wantError(t, s.RetryNotice(t.Context(), 999999, 1, now, ""), broker.ENOTFOUND, "")
		})
	})

	t.Run("PruneNotices", func(t *testing.T) {
		s := open(t)
		a := mustCreateAgent(t, s, "etl-bot")
		l1 := mustCreateLease(t, s, newLease(a, at(0)))
		l2 := mustCreateLease(t, s, newLease(a, at(time.Minute)))
		l3 := mustCreateLease(t, s, newLease(a, at(2*time.Minute)))
		now := time.Now().UTC()
		due, err := s.ClaimNotices(t.Context(), now, now.Add(time.Minute), 10)
		if err != nil || len(due) != 3 {
			t.Fatalf("claimed %v, %v; want the three leases' notices", due, err)
		}
		byLease := map[string]*broker.Notice{}
		for _, n := range due {
			byLease[n.LeaseID] = n
		}
		// l1's notice was sent long ago, l2's just now, l3's never.
		if err := s.CompleteNotice(t.Context(), byLease[l1.ID].ID, now.Add(-40*24*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := s.CompleteNotice(t.Context(), byLease[l2.ID].ID, now); err != nil {
			t.Fatal(err)
		}
		if err := s.RetryNotice(t.Context(), byLease[l3.ID].ID, 1, now.Add(-50*24*time.Hour), "slack: down"); err != nil {
			t.Fatal(err)
		}
		n, err := s.PruneNotices(t.Context(), now.Add(-30*24*time.Hour))
		if err != nil || n != 1 {
			t.Fatalf("PruneNotices = %d, %v; want 1", n, err)
		}
		wantNotices(t, s, l1.ID)
		wantNotices(t, s, l2.ID, `lease=`+l2.ID+` ""->"pending" attempts=1 sent=true error=""`)
		wantNotices(t, s, l3.ID, `lease=`+l3.ID+` ""->"pending" attempts=1 sent=false error="slack: down"`)
		if n, err := s.PruneNotices(t.Context(), now.Add(-30*24*time.Hour)); err != nil || n != 0 {
			t.Fatalf("PruneNotices again = %d, %v; want 0", n, err)
		}
		// The lease's history is untouched.
		wantEvents(t, s, l1.ID, &broker.LeaseEvent{LeaseID: l1.ID, To: broker.LeasePending, Actor: "agent:etl-bot", Reason: "requested"})
	})

	t.Run("Message", func(t *testing.T) {
		s := open(t)
		l := mustCreateLease(t, s, newLease(mustCreateAgent(t, s, "etl-bot"), at(0)))
		_, err := s.FindApprovalMessage(t.Context(), l.ID)
		wantError(t, err, broker.ENOTFOUND, "")
		for _, ts := range []string{"1795735098.000200", "1795735099.000300"} {
			if err := s.SetApprovalMessage(t.Context(), &broker.ApprovalMessage{LeaseID: l.ID, Channel: "C0APPROVALS", TS: ts, PostedAt: at(time.Minute)}); err != nil {
				t.Fatal(err)
			}
			m, err := s.FindApprovalMessage(t.Context(), l.ID)
			if err != nil || m.Channel != "C0APPROVALS" || m.TS != ts || fmtTime(&m.PostedAt) != fmtTime(ptr(at(time.Minute))) {
				t.Fatalf("FindApprovalMessage = %+v, %v; want ts %s", m, err, ts)
			}
		}
		wantError(t, s.SetApprovalMessage(t.Context(), &broker.ApprovalMessage{LeaseID: newID(), Channel: "C", TS: "1"}), broker.ENOTFOUND, "Lease not found.")
	})

	t.Run("EndOverdue", func(t *testing.T) {
		s := open(t)
		a := mustCreateAgent(t, s, "etl-bot")
		pending := newLease(a, at(0))
		pending.DecideBy = ptr(at(time.Hour))
		mustCreateLease(t, s, pending)
		notYet := newLease(a, at(0))
		notYet.DecideBy = ptr(at(3 * time.Hour))
		mustCreateLease(t, s, notYet)
		approved := newLease(a, at(0))
		approved.State, approved.DecideBy, approved.ActivateBy = broker.LeaseApproved, nil, ptr(at(30*time.Minute))
		mustCreateLease(t, s, approved)

		next, ok, err := s.NextLeaseDeadline(t.Context())
		if err != nil || !ok || fmtTime(&next) != fmtTime(ptr(at(30*time.Minute))) {
			t.Fatalf("NextLeaseDeadline = %s, %t, %v; want the approved lease's activate_by", fmtTime(&next), ok, err)
		}
		got, err := s.EndOverdueLeases(t.Context(), at(2*time.Hour), 10, "system:approval-timeout", overdueReasons)
		if err != nil {
			t.Fatal(err)
		}
		wantLeaseIDs(t, got, approved.ID, pending.ID)
		if got[0].State != broker.LeaseLapsed || got[1].State != broker.LeaseTimedOut || got[0].EndedAt == nil || got[1].EndedAt == nil {
			t.Fatalf("ended %s and %s, want lapsed and timed_out with ended_at", got[0].State, got[1].State)
		}
		wantLease(t, mustFindLease(t, s, pending.ID), got[1])
		wantEvents(t, s, pending.ID,
			&broker.LeaseEvent{LeaseID: pending.ID, To: broker.LeasePending, Actor: "agent:etl-bot", Reason: "requested"},
			&broker.LeaseEvent{LeaseID: pending.ID, From: broker.LeasePending, To: broker.LeaseTimedOut, Actor: "system:approval-timeout", Reason: "no decision before the deadline"})
		if l := mustFindLease(t, s, notYet.ID); l.State != broker.LeasePending {
			t.Fatalf("lease not yet due is %s, want pending", l.State)
		}
		if again, err := s.EndOverdueLeases(t.Context(), at(2*time.Hour), 10, "system:approval-timeout", overdueReasons); err != nil || len(again) != 0 {
			t.Fatalf("second pass ended %d (%v), want none", len(again), err)
		}
		if next, ok, _ := s.NextLeaseDeadline(t.Context()); !ok || fmtTime(&next) != fmtTime(ptr(at(3*time.Hour))) {
			t.Fatalf("NextLeaseDeadline = %s, want the remaining decide_by", fmtTime(&next))
		}
	})
}

// overdueReasons are the reasons the suite passes to EndOverdueLeases.
var overdueReasons = broker.OverdueReasons{TimedOut: "no decision before the deadline", Lapsed: "not activated before the deadline"}
