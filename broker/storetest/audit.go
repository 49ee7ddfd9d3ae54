package storetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
)

// testAudit covers the audit chain: appends are sealed and chained, the
// lease history is read from the chain, filters, and
// verification of an intact chain. (Tampering is tested per store, since it
// needs raw access to the storage.)
func testAudit(t *testing.T, open func(tb testing.TB) Store) {
	audit := func(tb testing.TB, s Store) broker.AuditStore {
		tb.Helper()
		as, ok := s.(broker.AuditStore)
		if !ok {
			tb.Fatalf("%T does not implement broker.AuditStore", s)
		}
		return as
	}

	t.Run("RecordChains", func(t *testing.T) {
		s := open(t)
		as := audit(t, s)
		head, err := as.AuditHead(t.Context())
		if err != nil || head != nil {
			t.Fatalf("AuditHead of an empty chain = %v, %v; want nil, nil", head, err)
		}
		mustRecord(t, as, broker.AuditEvent{At: at(0), Kind: broker.AuditConfigLoaded, Actor: "system:serve",
			Details: json.RawMessage(` { "path": "stint.yaml", "b": [1, 2.50, 1e3] } `)})
		mustRecord(t, as, broker.AuditEvent{At: at(time.Second), Kind: broker.AuditAuthFailed, Actor: "anonymous",
			Details: broker.AuditDetails(map[string]any{"source_ip": "10.0.0.9", "key_prefix": "stint_ak_abcdef"})})

		events := findAudit(t, as, broker.AuditFilter{})
		if len(events) != 2 {
			t.Fatalf("%d events, want 2", len(events))
		}
		first, second := events[1], events[0] // newest first
		if first.Seq != 1 || second.Seq != 2 {
			t.Fatalf("seqs = %d, %d; want 1, 2", first.Seq, second.Seq)
		}
		if first.PrevHash != broker.GenesisHash || second.PrevHash != first.Hash {
			t.Fatalf("prev hashes = %s, %s; want genesis and %s", first.PrevHash, second.PrevHash, first.Hash)
		}
		if got, want := string(first.Details), `{"b":[1,2.50,1e3],"path":"stint.yaml"}`; got != want {
			t.Fatalf("details = %s, want canonical %s", got, want)
		}
		if first.Hash != first.ComputeHash() || !first.At.Equal(at(0)) || first.Kind != broker.AuditConfigLoaded {
			t.Fatalf("first event = %+v", first)
		}
		head, err = as.AuditHead(t.Context())
		if err != nil || head == nil || head.Seq != 2 || head.Hash != second.Hash {
			t.Fatalf("AuditHead = %+v, %v; want event 2", head, err)
		}
		wantVerified(t, as, 2)
	})

	t.Run("ErrInvalid", func(t *testing.T) {
		as := audit(t, open(t))
		for _, e := range []broker.AuditEvent{
			{Kind: "", Actor: "x"},
			{Kind: "Lease.Created", Actor: "x"},
			{Kind: "x.y", Actor: "x", Details: json.RawMessage(`[1]`)},
			{Kind: "x.y", Actor: "x", Details: json.RawMessage(`{"a":1}{"b":2}`)},
		} {
			if err := as.Record(t.Context(), e); broker.ErrorCode(err) != broker.EINVALID {
				t.Errorf("Record(%q, %s) = %v, want EINVALID", e.Kind, e.Details, err)
			}
		}
		wantVerified(t, as, 0)
	})

	t.Run("LeaseHistoryIsTheChain", func(t *testing.T) {
		s := open(t)
		as := audit(t, s)
		a := mustCreateAgent(t, s, "etl-bot")
		l := mustCreateLease(t, s, newLease(a, at(0)))
		if _, err := s.UpdateLease(t.Context(), l.ID, broker.LeaseUpdate{
			From: []broker.LeaseState{broker.LeasePending}, State: ptr(broker.LeaseApproved),
			Actor: "approver:carol@example.com", Reason: "looks fine <b>ok</b>",
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpdateLease(t.Context(), l.ID, broker.LeaseUpdate{From: []broker.LeaseState{broker.LeaseApproved}, Actor: "system:note", Reason: "a note"}); err != nil {
			t.Fatal(err)
		}
		// A refused update (wrong From) records nothing.
		if _, err := s.UpdateLease(t.Context(), l.ID, broker.LeaseUpdate{
			From: []broker.LeaseState{broker.LeaseActive}, State: ptr(broker.LeaseRevoking), Actor: "x",
		}); broker.ErrorCode(err) != broker.ECONFLICT {
			t.Fatalf("guarded update = %v, want ECONFLICT", err)
		}

		events := findAudit(t, as, broker.AuditFilter{Subject: &l.ID})
		slices.Reverse(events)
		var got []string
		for _, e := range events {
			got = append(got, e.Kind+" "+e.Actor)
		}
		want := []string{"lease.created agent:etl-bot", "lease.state approver:carol@example.com", "lease.note system:note"}
		if !slices.Equal(got, want) {
			t.Fatalf("lease audit events = %q, want %q", got, want)
		}
		var created struct {
			Role           string           `json:"role"`
			Agent          string           `json:"agent"`
			Task           string           `json:"task"`
			SourceIP       string           `json:"source_ip"`
			PolicyDecision *broker.Decision `json:"policy_decision"`
		}
		if err := json.Unmarshal(events[0].Details, &created); err != nil {
			t.Fatal(err)
		}
		if created.Role != "db-readonly" || created.Agent != "etl-bot" || created.Task != "nightly report" ||
			created.SourceIP != "10.0.0.7" || created.PolicyDecision == nil ||
			!slices.Equal(created.PolicyDecision.PolicyIDs, []string{"medium-one-approver"}) {
			t.Fatalf("lease.created details = %s", events[0].Details)
		}
		// Details the store builds itself are canonical too.
		for _, e := range events {
			c, err := broker.CanonicalDetails(e.Details)
			if err != nil || string(c) != string(e.Details) {
				t.Fatalf("details %s are not canonical (canonical: %s, %v)", e.Details, c, err)
			}
		}
		if !strings.Contains(string(events[1].Details), `"from":"pending"`) || !strings.Contains(string(events[1].Details), `"to":"approved"`) {
			t.Fatalf("lease.state details = %s", events[1].Details)
		}
		// The lease's history is read from these events: each one's id is
		// its seq.
		history, err := s.FindLeaseEvents(t.Context(), l.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(history) != len(events) {
			t.Fatalf("%d lease events, want %d", len(history), len(events))
		}
		for i, h := range history {
			if h.ID != events[i].Seq || h.Actor != events[i].Actor || !h.At.Equal(events[i].At) || h.LeaseID != l.ID {
				t.Errorf("lease event %d = %+v, want the audit event %+v", i, h, events[i])
			}
		}
		if h := history[1]; h.From != broker.LeasePending || h.To != broker.LeaseApproved || h.Reason != "looks fine <b>ok</b>" {
			t.Errorf("state event = %+v", h)
		}
		if h := history[2]; h.From != broker.LeaseApproved || h.To != broker.LeaseApproved || h.Reason != "a note" {
			t.Errorf("note event = %+v", h)
		}
		// The agent's creation is audited too.
		kind := broker.AuditAgentCreated
		if got := findAudit(t, as, broker.AuditFilter{Kind: &kind, Subject: &a.ID}); len(got) != 1 {
			t.Fatalf("%d agent.created events, want 1", len(got))
		}
		wantVerified(t, as, 4) // agent.created + 3 lease events
	})

	t.Run("ExpiryBatchInChain", func(t *testing.T) {
		s := open(t)
		as := audit(t, s)
		a := mustCreateAgent(t, s, "etl-bot")
		var ids []string
		for i := range 5 {
			ids = append(ids, mustCreateLease(t, s, newActiveLease(a, at(time.Duration(i)*time.Minute))).ID)
		}
		claimed, err := s.ClaimExpiredLeases(t.Context(), at(time.Hour), at(2*time.Hour), 10, "system:expiry", "window closed")
		if err != nil || len(claimed) != 5 {
			t.Fatalf("ClaimExpiredLeases = %d leases, %v", len(claimed), err)
		}
		kind := broker.AuditLeaseState
		events := findAudit(t, as, broker.AuditFilter{Kind: &kind})
		slices.Reverse(events)
		var subjects []string
		for _, e := range events {
			if e.Actor != "system:expiry" || !e.At.Equal(at(time.Hour)) || !strings.Contains(string(e.Details), `"to":"revoking"`) {
				t.Fatalf("expiry audit event = %+v %s", e, e.Details)
			}
			subjects = append(subjects, e.Subject)
		}
		if !slices.Equal(subjects, ids) {
			t.Fatalf("expiry audit subjects = %v, want %v (earliest deadline first)", subjects, ids)
		}
		wantVerified(t, as, 11) // agent.created, 5 creations, 5 claims
	})

	t.Run("Filters", func(t *testing.T) {
		as := audit(t, open(t))
		for i, kind := range []string{"lease.created", "lease.state", "auth.failed", "lease.note", "agent.created"} {
			mustRecord(t, as, broker.AuditEvent{At: at(time.Duration(i) * time.Minute), Kind: kind,
				Actor: fmt.Sprintf("actor:%d", i%2), Subject: fmt.Sprintf("s%d", i%3)})
		}
		seqs := func(f broker.AuditFilter) []int64 {
			var out []int64
			for _, e := range findAudit(t, as, f) {
				out = append(out, e.Seq)
			}
			return out
		}
		for _, tc := range []struct {
			name   string
			filter broker.AuditFilter
			want   []int64
		}{
			{"All", broker.AuditFilter{}, []int64{5, 4, 3, 2, 1}},
			{"KindPrefix", broker.AuditFilter{Kind: ptr("lease.")}, []int64{4, 2, 1}},
			{"Kind", broker.AuditFilter{Kind: ptr("auth.failed")}, []int64{3}},
			{"Since", broker.AuditFilter{Since: ptr(at(2 * time.Minute))}, []int64{5, 4, 3}},
			{"Until", broker.AuditFilter{Until: ptr(at(2 * time.Minute))}, []int64{2, 1}},
			{"Actor", broker.AuditFilter{Actor: ptr("actor:1")}, []int64{4, 2}},
			{"Subject", broker.AuditFilter{Subject: ptr("s0")}, []int64{4, 1}},
			{"AfterSeq", broker.AuditFilter{AfterSeq: 3}, []int64{5, 4}},
			{"Page", broker.AuditFilter{Limit: 2, Offset: 1}, []int64{4, 3}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if got := seqs(tc.filter); !slices.Equal(got, tc.want) {
					t.Fatalf("seqs = %v, want %v", got, tc.want)
				}
			})
		}
		t.Run("Total", func(t *testing.T) {
			_, total, err := as.FindAuditEvents(t.Context(), broker.AuditFilter{Limit: 1})
			if err != nil || total != 5 {
				t.Fatalf("total = %d, %v; want 5", total, err)
			}
		})
		t.Run("ScanOldestFirst", func(t *testing.T) {
			var got []int64
			err := as.ScanAuditEvents(t.Context(), broker.AuditFilter{Kind: ptr("lease.")}, func(e *broker.AuditEvent) error {
				got = append(got, e.Seq)
				return nil
			})
			if err != nil || !slices.Equal(got, []int64{1, 2, 4}) {
				t.Fatalf("scan = %v, %v; want [1 2 4]", got, err)
			}
		})
	})

	t.Run("ConcurrentAppendsFormOneChain", func(t *testing.T) {
		s := open(t)
		as := audit(t, s)
		a := mustCreateAgent(t, s, "etl-bot")
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				for j := range 10 {
					if err := as.Record(t.Context(), broker.AuditEvent{Kind: "test.concurrent", Actor: fmt.Sprintf("w%d", i),
						Details: broker.AuditDetails(map[string]int{"j": j})}); err != nil {
						t.Error(err)
					}
				}
				l := newLease(a, at(time.Duration(i)*time.Second))
				if err := s.CreateLease(t.Context(), l, "agent:etl-bot", "requested"); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		wantVerified(t, as, 89) // 80 records, agent.created, 8 lease creations
	})

	t.Run("Anchors", func(t *testing.T) {
		as := audit(t, open(t))
		for range 3 {
			mustRecord(t, as, broker.AuditEvent{Kind: "test.anchor", Actor: "x"})
		}
		head, _ := as.AuditHead(t.Context())
		v, err := broker.VerifyAuditChain(t.Context(), as, map[int64]string{3: head.Hash}, nil)
		if err != nil || !v.OK || v.AnchorsMatched != 1 {
			t.Fatalf("verify with the right anchor = %+v, %v; want ok, 1 anchor matched", v, err)
		}
		v, err = broker.VerifyAuditChain(t.Context(), as, map[int64]string{2: head.Hash}, nil)
		if err != nil || v.OK || v.Break != broker.AuditAnchorMismatch || v.BrokenAt != 2 {
			t.Fatalf("verify with a wrong anchor = %+v, %v; want anchor_mismatch at 2", v, err)
		}
		v, err = broker.VerifyAuditChain(t.Context(), as, map[int64]string{9: head.Hash}, nil)
		if err != nil || v.OK || v.Break != broker.AuditAnchorMismatch || v.BrokenAt != 9 {
			t.Fatalf("verify with an anchor past the head = %+v, %v; want a truncation at 9", v, err)
		}
	})
}

// mustRecord appends e.
func mustRecord(tb testing.TB, as broker.AuditStore, e broker.AuditEvent) {
	tb.Helper()
	if err := as.Record(tb.Context(), e); err != nil {
		tb.Fatalf("Record(%s): %v", e.Kind, err)
	}
}

// findAudit returns the matching events, newest first.
func findAudit(tb testing.TB, as broker.AuditStore, f broker.AuditFilter) []*broker.AuditEvent {
	tb.Helper()
	events, _, err := as.FindAuditEvents(tb.Context(), f)
	if err != nil {
		tb.Fatalf("FindAuditEvents: %v", err)
	}
	return events
}

// wantVerified fails tb unless the chain verifies with n events.
func wantVerified(tb testing.TB, as broker.AuditStore, n int64) {
	tb.Helper()
	v, err := broker.VerifyAuditChain(tb.Context(), as, nil, nil)
	if err != nil {
		tb.Fatalf("VerifyAuditChain: %v", err)
	}
	if !v.OK || v.Checked != n {
		tb.Fatalf("VerifyAuditChain = ok %t, %d checked (broken at %d: %s); want ok with %d", v.OK, v.Checked, v.BrokenAt, v.Reason, n)
	}
}
