package storetest

import (
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
)

// SharedStore is what a store implements to run the replica suite: the
// state several replicas on one database share.
type SharedStore interface {
	Store
	broker.LeaseCapStore
	broker.JobStore
	broker.RateStore
	broker.AuthFailureStore
	broker.RevocationClaimStore
	broker.RiskPatternStore
	broker.NoticeClaimStore
}

// RunSharedTests runs the replica suite: each test opens two handles on one
// new, empty database (two replicas) with open, and checks that what one
// writes binds the other. open registers the handles' closing with
// tb.Cleanup.
func RunSharedTests(t *testing.T, open func(tb testing.TB) (SharedStore, SharedStore)) {
	t.Run("JobOncePerTick", func(t *testing.T) { testJobOncePerTick(t, open) })
	t.Run("JobClaimRace", func(t *testing.T) { testJobClaimRace(t, open) })
	t.Run("JobDeadReplica", func(t *testing.T) { testJobDeadReplica(t, open) })
	t.Run("RateShared", func(t *testing.T) { testRateShared(t, open) })
	t.Run("AuthFailuresShared", func(t *testing.T) { testAuthFailuresShared(t, open) })
	t.Run("LeaseCapShared", func(t *testing.T) { testLeaseCapShared(t, open) })
	t.Run("RevocationClaimRelease", func(t *testing.T) { testRevocationClaimRelease(t, open) })
	t.Run("RiskPatternShared", func(t *testing.T) { testRiskPatternShared(t, open) })
	t.Run("NoticeClaimRelease", func(t *testing.T) { testNoticeClaimRelease(t, open) })
}

func testLeaseCapShared(t *testing.T, open func(tb testing.TB) (SharedStore, SharedStore)) {
	a, b := open(t)
	ctx := t.Context()
	agent := mustCreateAgent(t, a, "etl-bot")
	// An ended lease does not count.
	denied := newLease(agent, at(0))
	denied.State, denied.EndedAt = broker.LeaseDenied, ptr(at(0))
	if err := a.CreateLeaseCapped(ctx, denied, "agent:etl-bot", "denied", nil, 3); err != nil {
		t.Fatalf("denied lease: %v", err)
	}
	// Ten requests race on two replicas for three slots.
	var mu sync.Mutex
	var ok, refused int
	var wg sync.WaitGroup
	for i := range 10 {
		s := a
		if i%2 == 1 {
			s = b
		}
		l := newLease(agent, at(time.Duration(i+1)*time.Second))
		if i%3 == 0 {
			l.State = broker.LeaseIssuing
		}
		wg.Go(func() {
			err := s.CreateLeaseCapped(ctx, l, "agent:etl-bot", "requested", nil, 3)
			mu.Lock()
			defer mu.Unlock()
			switch broker.ErrorCode(err) {
			case "":
				ok++
			case broker.ETOOMANY:
				refused++
			default:
				t.Errorf("CreateLeaseCapped: %v", err)
			}
		})
	}
	wg.Wait()
	if ok != 3 || refused != 7 {
		t.Fatalf("%d created and %d refused of 10 racing for 3 slots; want 3 and 7", ok, refused)
	}
	_, n, err := b.FindLeases(ctx, broker.LeaseFilter{AgentID: &agent.ID, States: broker.OutstandingLeaseStates})
	if err != nil || n != 3 {
		t.Fatalf("outstanding leases = %d, %v; want 3", n, err)
	}
	// At the cap a denied lease is still recorded.
	denied2 := newLease(agent, at(time.Minute))
	denied2.State, denied2.EndedAt = broker.LeaseDenied, ptr(at(time.Minute))
	if err := b.CreateLeaseCapped(ctx, denied2, "agent:etl-bot", "denied", nil, 3); err != nil {
		t.Errorf("denied lease at the cap: %v", err)
	}
	// Without a cap, separation of duty still holds.
	held := newActiveLease(agent, at(time.Hour))
	held.Role = "db-admin"
	mustCreateLease(t, a, held)
	l := newLease(agent, at(2*time.Minute))
	l.State = broker.LeaseIssuing
	err = b.CreateLeaseCapped(ctx, l, "agent:etl-bot", "requested", []string{"db-admin"}, 0)
	if broker.ErrorCode(err) != broker.ECONFLICT {
		t.Errorf("conflicting role = %v, want ECONFLICT", err)
	}
}

func testJobOncePerTick(t *testing.T, open func(tb testing.TB) (SharedStore, SharedStore)) {
	a, b := open(t)
	ctx := t.Context()
	tick, next := at(time.Minute), at(2*time.Minute)
	ca, err := a.ClaimJob(ctx, "reconcile", "replica-a", tick, next, tick.Add(time.Minute))
	if err != nil || ca == nil {
		t.Fatalf("ClaimJob(a) = %v, %v; want a claim", ca, err)
	}
	if err := a.FinishJob(ctx, ca, tick.Add(time.Second)); err != nil {
		t.Fatalf("FinishJob: %v", err)
	}
	// b ticks for the same minute a moment later: the job already ran.
	if cb, err := b.ClaimJob(ctx, "reconcile", "replica-b", tick.Add(2*time.Second), next, tick.Add(time.Minute)); err != nil || cb != nil {
		t.Fatalf("ClaimJob(b) same tick = %+v, %v; want no claim", cb, err)
	}
	// Another job is independent.
	if cb, err := b.ClaimJob(ctx, "prune", "replica-b", tick, next, tick.Add(time.Minute)); err != nil || cb == nil {
		t.Fatalf("ClaimJob(b, prune) = %v, %v; want a claim", cb, err)
	}
	// The next tick is b's if b comes first.
	cb, err := b.ClaimJob(ctx, "reconcile", "replica-b", next, at(3*time.Minute), next.Add(time.Minute))
	if err != nil || cb == nil {
		t.Fatalf("ClaimJob(b) next tick = %v, %v; want a claim", cb, err)
	}
	if got, want := cb.Epoch, ca.Epoch+1; got != want {
		t.Errorf("epoch = %d, want %d", got, want)
	}
	if ca2, err := a.ClaimJob(ctx, "reconcile", "replica-a", next.Add(time.Second), at(3*time.Minute), next.Add(time.Minute)); err != nil || ca2 != nil {
		t.Fatalf("ClaimJob(a) while b holds = %+v, %v; want no claim", ca2, err)
	}
	// a's old claim is not a's any more: finishing it leaves b's alone.
	if err := a.FinishJob(ctx, ca, next); err != nil {
		t.Fatalf("FinishJob(stale): %v", err)
	}
	if err := b.RenewJob(ctx, cb, next.Add(2*time.Minute)); err != nil {
		t.Fatalf("RenewJob(b) after a's stale finish: %v", err)
	}
}

func testJobClaimRace(t *testing.T, open func(tb testing.TB) (SharedStore, SharedStore)) {
	a, b := open(t)
	ctx := t.Context()
	for tickN := 1; tickN <= 5; tickN++ {
		tick := at(time.Duration(tickN) * time.Minute)
		var mu sync.Mutex
		var wins int
		var wg sync.WaitGroup
		for i := range 8 {
			s, owner := a, "replica-a"
			if i%2 == 1 {
				s, owner = b, "replica-b"
			}
			wg.Go(func() {
				c, err := s.ClaimJob(ctx, "digest", owner, tick, tick.Add(time.Minute), tick.Add(30*time.Second))
				if err != nil {
					t.Errorf("ClaimJob: %v", err)
					return
				}
				if c != nil {
					mu.Lock()
					wins++
					mu.Unlock()
					if err := s.FinishJob(ctx, c, tick.Add(time.Second)); err != nil {
						t.Errorf("FinishJob: %v", err)
					}
				}
			})
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("tick %d: %d claims of 8 concurrent, want exactly 1", tickN, wins)
		}
	}
}

func testJobDeadReplica(t *testing.T, open func(tb testing.TB) (SharedStore, SharedStore)) {
	a, b := open(t)
	ctx := t.Context()
	tick := at(time.Minute)
	// a claims and dies: no finish, no renewal.
	ca, err := a.ClaimJob(ctx, "reviews", "replica-a", tick, tick.Add(time.Minute), tick.Add(90*time.Second))
	if err != nil || ca == nil {
		t.Fatalf("ClaimJob(a) = %v, %v", ca, err)
	}
	// At the next tick a's claim still holds.
	if cb, err := b.ClaimJob(ctx, "reviews", "replica-b", tick.Add(time.Minute), tick.Add(2*time.Minute), tick.Add(2*time.Minute)); err != nil || cb != nil {
		t.Fatalf("ClaimJob(b) before a's deadline = %+v, %v; want no claim", cb, err)
	}
	// After its deadline, b takes the job.
	cb, err := b.ClaimJob(ctx, "reviews", "replica-b", tick.Add(91*time.Second), tick.Add(2*time.Minute), tick.Add(3*time.Minute))
	if err != nil || cb == nil {
		t.Fatalf("ClaimJob(b) after a's deadline = %v, %v; want a claim", cb, err)
	}
	if cb.Epoch <= ca.Epoch {
		t.Errorf("epoch %d after %d: the fencing token must grow", cb.Epoch, ca.Epoch)
	}
	// a wakes up: its renewal is refused.
	if err := a.RenewJob(ctx, ca, tick.Add(5*time.Minute)); broker.ErrorCode(err) != broker.ECONFLICT {
		t.Errorf("RenewJob(a, stale) = %v, want ECONFLICT", err)
	}
	// b stops and releases: a may claim at the next due time without
	// waiting for b's deadline.
	n, err := b.ReleaseJobs(ctx, "replica-b")
	if err != nil || n != 1 {
		t.Fatalf("ReleaseJobs(b) = %d, %v; want 1", n, err)
	}
	if ca2, err := a.ClaimJob(ctx, "reviews", "replica-a", tick.Add(2*time.Minute), tick.Add(3*time.Minute), tick.Add(4*time.Minute)); err != nil || ca2 == nil {
		t.Fatalf("ClaimJob(a) after b released = %v, %v; want a claim", ca2, err)
	}
	if n, err := b.ReleaseJobs(ctx, "replica-b"); err != nil || n != 0 {
		t.Errorf("ReleaseJobs(b) again = %d, %v; want 0", n, err)
	}
}

func testRateShared(t *testing.T, open func(tb testing.TB) (SharedStore, SharedStore)) {
	a, b := open(t)
	ctx := t.Context()
	now := at(0)
	// 2 requests a second, bursts of 4, taken alternately through both.
	for i := range 4 {
		s := a
		if i%2 == 1 {
			s = b
		}
		if wait, err := s.TakeToken(ctx, "agent:1", 2, 4, now); err != nil || wait != 0 {
			t.Fatalf("request %d = %v, %v; want allowed", i+1, wait, err)
		}
	}
	for _, s := range []SharedStore{a, b} {
		wait, err := s.TakeToken(ctx, "agent:1", 2, 4, now)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := wait, 500*time.Millisecond; got != want {
			t.Errorf("5th request waits %v, want %v: the burst is shared", got, want)
		}
	}
	// Another agent has a bucket of its own.
	if wait, err := b.TakeToken(ctx, "agent:2", 2, 4, now); err != nil || wait != 0 {
		t.Errorf("agent 2 = %v, %v; want allowed", wait, err)
	}
	// Half a second later one more request passes, on either replica.
	if wait, err := b.TakeToken(ctx, "agent:1", 2, 4, now.Add(500*time.Millisecond)); err != nil || wait != 0 {
		t.Errorf("after the refill = %v, %v; want allowed", wait, err)
	}
	if wait, err := a.TakeToken(ctx, "agent:1", 2, 4, now.Add(500*time.Millisecond)); err != nil || wait == 0 {
		t.Errorf("second after the refill = %v, %v; want refused", wait, err)
	}
	// Buckets full long ago are pruned; agent 1's is not.
	n, err := a.PruneRates(ctx, now.Add(2*time.Second))
	if err != nil || n != 1 {
		t.Errorf("PruneRates = %d, %v; want 1 (agent 2's)", n, err)
	}
	if _, err := a.TakeToken(ctx, "agent:1", 0, 4, now); err == nil {
		t.Error("TakeToken with rate 0: no error")
	}
}

func testAuthFailuresShared(t *testing.T, open func(tb testing.TB) (SharedStore, SharedStore)) {
	a, b := open(t)
	ctx := t.Context()
	now := at(0)
	for _, s := range []SharedStore{a, a, b} {
		if err := s.RecordAuthFailure(ctx, "agent-1", "192.0.2.7", now); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.RecordAuthFailure(ctx, "", "192.0.2.7", now.Add(30*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := b.RecordAuthFailure(ctx, "", "", now); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		s         SharedStore
		kind, key string
		since     time.Time
		want      int
	}{
		{a, broker.AuthFailureAgent, "agent-1", now.Add(-time.Hour), 3},
		{b, broker.AuthFailureAgent, "agent-1", now.Add(-time.Hour), 3},
		{b, broker.AuthFailureSource, "192.0.2.7", now.Add(-time.Hour), 4},
		{a, broker.AuthFailureSource, "192.0.2.7", now.Add(time.Minute), 1},
		{a, broker.AuthFailureAgent, "agent-2", now.Add(-time.Hour), 0},
	} {
		got, err := tc.s.CountAuthFailures(ctx, tc.kind, tc.key, tc.since)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("CountAuthFailures(%s %s since %v) = %d, want %d", tc.kind, tc.key, tc.since, got, tc.want)
		}
	}
	n, err := b.PruneAuthFailures(ctx, now.Add(time.Minute))
	if err != nil || n != 2 {
		t.Errorf("PruneAuthFailures = %d, %v; want 2 (the agent's and the address's first minute)", n, err)
	}
	if got, _ := a.CountAuthFailures(ctx, broker.AuthFailureSource, "192.0.2.7", now.Add(-time.Hour)); got != 1 {
		t.Errorf("after pruning, %d failures, want 1", got)
	}
}

// testRevocationClaimRelease: a revocation claimed by replica a is hidden
// from b until a releases it (a stops), then b takes it at once; a release
// leaves alone a lease claimed again since or no longer revoking.
func testRevocationClaimRelease(t *testing.T, open func(tb testing.TB) (SharedStore, SharedStore)) {
	a, b := open(t)
	ctx := t.Context()
	agent := mustCreateAgent(t, a, "etl-bot")
	now := at(time.Hour)
	held := mustCreateLease(t, a, newRevokingLease(agent, now.Add(-time.Second)))
	reclaimed := mustCreateLease(t, a, newRevokingLease(agent, now.Add(-time.Second)))
	ended := mustCreateLease(t, a, newRevokingLease(agent, now.Add(-time.Second)))

	until := now.Add(10 * time.Minute)
	got, err := a.ClaimDueRevocations(ctx, now, until, 10)
	if err != nil || len(got) != 3 {
		t.Fatalf("a claims %d due revocations (%v), want 3", len(got), err)
	}
	if got, err := b.ClaimDueRevocations(ctx, now.Add(time.Second), now.Add(time.Minute), 10); err != nil || len(got) != 0 {
		t.Fatalf("b claims %d revocations a holds (%v), want 0", len(got), err)
	}
	// One claim ran out and b took the lease (its claim holds another
	// time); another lease ended.
	bUntil := until.Add(time.Minute)
	if _, err := b.UpdateLease(ctx, reclaimed.ID, broker.LeaseUpdate{From: []broker.LeaseState{broker.LeaseRevoking}, NextRevokeAt: &bUntil, Actor: "system:revocation-queue"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.EndRevocations(ctx, []broker.RevocationDone{{LeaseID: ended.ID, At: now}}, "system:expiry", "revocation confirmed by Vault"); err != nil {
		t.Fatal(err)
	}

	var claims []broker.RevocationClaim
	for _, l := range got {
		claims = append(claims, broker.RevocationClaim{LeaseID: l.ID, Until: until})
	}
	release := now.Add(2 * time.Minute)
	n, err := a.ReleaseRevocations(ctx, claims, release)
	if err != nil || n != 1 {
		t.Fatalf("ReleaseRevocations = %d, %v; want 1 (the lease still held)", n, err)
	}
	if l := mustFindLease(t, b, held.ID); fmtTime(l.NextRevokeAt) != fmtTime(&release) {
		t.Errorf("released lease due at %s, want %s", fmtTime(l.NextRevokeAt), fmtTime(&release))
	}
	if l := mustFindLease(t, b, reclaimed.ID); fmtTime(l.NextRevokeAt) != fmtTime(&bUntil) {
		t.Errorf("lease b claimed since due at %s, want b's claim %s", fmtTime(l.NextRevokeAt), fmtTime(&bUntil))
	}
	if l := mustFindLease(t, b, ended.ID); l.State == broker.LeaseRevoking {
		t.Errorf("ended lease back to %s", l.State)
	}
	due, err := b.ClaimDueRevocations(ctx, release, release.Add(time.Minute), 10)
	if err != nil || len(due) != 1 || due[0].ID != held.ID {
		t.Fatalf("b claims %v (%v) after the release, want the released lease", due, err)
	}
	if n, err := a.ReleaseRevocations(ctx, nil, release); err != nil || n != 0 {
		t.Errorf("ReleaseRevocations(none) = %d, %v", n, err)
	}
}

// testRiskPatternShared: updates of one agent's pattern racing on two
// replicas are each applied once (the row is held from read to write); an
// update that fails stores nothing; idle patterns are pruned.
func testRiskPatternShared(t *testing.T, open func(tb testing.TB) (SharedStore, SharedStore)) {
	a, b := open(t)
	ctx := t.Context()
	incr := func(stored []byte) ([]byte, error) {
		n := 0
		if len(stored) > 0 {
			var err error
			if n, err = strconv.Atoi(string(stored)); err != nil {
				return nil, err
			}
		}
		return []byte(strconv.Itoa(n + 1)), nil
	}
	var wg sync.WaitGroup
	for i := range 40 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			if err := s.UpdateRiskPattern(ctx, "agent-1", at(time.Minute), incr); err != nil {
				t.Errorf("UpdateRiskPattern: %v", err)
			}
		})
	}
	wg.Wait()
	read := func(s SharedStore, agent string) string {
		var got string
		if err := s.UpdateRiskPattern(ctx, agent, at(2*time.Minute), func(stored []byte) ([]byte, error) {
			got = string(stored)
			return stored, nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := read(b, "agent-1"); got != "40" {
		t.Fatalf("pattern after 40 racing updates on two replicas = %q, want 40", got)
	}
	if got := read(a, "agent-2"); got != "" {
		t.Fatalf("a pattern never written = %q, want empty", got)
	}
	failed := errors.New("refused")
	if err := a.UpdateRiskPattern(ctx, "agent-1", at(3*time.Minute), func([]byte) ([]byte, error) { return []byte("x"), failed }); !errors.Is(err, failed) {
		t.Fatalf("failing update = %v, want its error", err)
	}
	if got := read(a, "agent-1"); got != "40" {
		t.Fatalf("pattern after a failed update = %q, want 40", got)
	}
	// agent-2 was written at 2m (empty), agent-1 last at 2m too; a write
	// at 10m keeps agent-1.
	if err := a.UpdateRiskPattern(ctx, "agent-1", at(10*time.Minute), incr); err != nil {
		t.Fatal(err)
	}
	n, err := b.PruneRiskPatterns(ctx, at(5*time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("PruneRiskPatterns = %d, %v; want 1 (agent-2's)", n, err)
	}
	if got := read(b, "agent-1"); got != "41" {
		t.Fatalf("pattern kept by the prune = %q, want 41", got)
	}
}

// testNoticeClaimRelease: a notice replica a claimed is hidden from b until
// a releases it, then b takes it at once; a release leaves alone a notice
// claimed again since.
func testNoticeClaimRelease(t *testing.T, open func(tb testing.TB) (SharedStore, SharedStore)) {
	a, b := open(t)
	ctx := t.Context()
	agent := mustCreateAgent(t, a, "etl-bot")
	mustCreateLease(t, a, newLease(agent, at(0)))
	now := time.Now().UTC()
	until := now.Add(time.Hour)
	got, err := a.ClaimNotices(ctx, now, until, 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("a claims %d notices (%v), want the pending lease's", len(got), err)
	}
	if again, err := b.ClaimNotices(ctx, now.Add(time.Second), now.Add(time.Minute), 10); err != nil || len(again) != 0 {
		t.Fatalf("b claims %d notices a holds (%v), want none", len(again), err)
	}
	n, err := a.ReleaseNotices(ctx, []int64{got[0].ID}, until, now.Add(2*time.Second))
	if err != nil || n != 1 {
		t.Fatalf("ReleaseNotices = %d, %v; want 1", n, err)
	}
	taken, err := b.ClaimNotices(ctx, now.Add(3*time.Second), now.Add(time.Minute), 10)
	if err != nil || len(taken) != 1 || taken[0].ID != got[0].ID {
		t.Fatalf("b claims %v (%v) after the release, want the released notice", taken, err)
	}
	if n, err := a.ReleaseNotices(ctx, []int64{got[0].ID}, until, now.Add(4*time.Second)); err != nil || n != 0 {
		t.Fatalf("releasing a notice b claimed since = %d, %v; want 0", n, err)
	}
}
