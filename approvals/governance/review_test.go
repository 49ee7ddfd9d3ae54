package governance_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stint-broker/stint/approvals/governance"
	"github.com/stint-broker/stint/broker"
)

var reviewRoles = []*broker.Role{
	{Name: "db-readonly", Sensitivity: broker.SensitivityLow, Eligible: map[string]string{"team": "data"}},
	{Name: "txn-approve", Sensitivity: broker.SensitivityMedium, Eligible: map[string]string{"team": "*"}},
	{Name: "db-admin", Sensitivity: broker.SensitivityHigh, Eligible: map[string]string{"team": "dba"}},
}

func adminCtx() context.Context {
	return broker.NewContextWithActor(context.Background(), broker.Actor{Kind: broker.ActorAdmin, Name: "sec"})
}

// approverCtx is a person who signed in with an approver token.
func approverCtx(email string) context.Context {
	return broker.NewContextWithActor(context.Background(), broker.Actor{Kind: broker.ActorApprover, Name: email, AuthMethod: "approver_token"})
}

// TestReviewJob runs the access review job directly with a fake clock:
// evidence, the inactive flag, attestation (keep and remove), and the
// deadline: suspension, then disabling after the grace period.
func TestReviewJob(t *testing.T) {
	db := openGovDB(t)
	now := time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC)
	busy := createAgent(t, db, "busy", now.Add(-200*24*time.Hour))
	idle := createAgent(t, db, "idle", now.Add(-200*24*time.Hour))
	used := recordLease(t, db, busy, "db-readonly", broker.LeaseExpired, now.Add(-48*time.Hour), 15*time.Minute)
	recordLease(t, db, busy, "db-readonly", broker.LeaseReleased, now.Add(-72*time.Hour), 15*time.Minute)
	recordLease(t, db, idle, "db-readonly", broker.LeaseExpired, now.Add(-120*24*time.Hour), 15*time.Minute)

	ctrl, rec := &fakeControl{}, &alertRecorder{}
	rv := governance.NewReviews(db, reviewRoles, nil)
	rv.Now = func() time.Time { return now }
	rv.KillSwitch, rv.Alerts = ctrl, &governance.Alerts{Logger: slog.New(slog.DiscardHandler), Audit: db, Alerter: rec}

	opened, err := rv.Campaign(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(opened) != 2 {
		t.Fatalf("opened %d reviews, want 2", len(opened))
	}
	byAgent := map[string]*broker.Review{}
	for _, r := range opened {
		byAgent[r.Agent] = r
	}
	b := byAgent["busy"]
	if b == nil || len(b.Items) != 2 || b.Inactive || !b.DueAt.Equal(now.Add(14*24*time.Hour)) {
		t.Fatalf("busy's review = %+v", b)
	}
	ro, txn := b.Item("db-readonly"), b.Item("txn-approve")
	if ro.LeaseCount != 2 || ro.NeverUsed || !ro.LastLeaseAt.Equal(*used.ActivatedAt) || !txn.NeverUsed || txn.LeaseCount != 0 {
		t.Fatalf("evidence: db-readonly %+v, txn-approve %+v", ro, txn)
	}
	if b.Item("db-admin") != nil {
		t.Fatal("db-admin is not requestable by busy (team=data) but was reviewed")
	}
	if !byAgent["idle"].Inactive {
		t.Fatal("idle (no lease in 120 days) not flagged inactive")
	}
	if k := rec.kinds(); len(k) != 2 || k[0] != "access_review/owner" {
		t.Fatalf("alerts %v, want an access_review to each owner", k)
	}

	// A second run opens nothing while the reviews are open.
	if again, err := rv.Campaign(context.Background()); err != nil || len(again) != 0 {
		t.Fatalf("second run opened %d, %v", len(again), err)
	}

	// The owner attests busy's review: keep one role, remove the other.
	owner := approverCtx(busy.Owner)
	if _, err := rv.Attest(approverCtx("someone@example.com"), b.ID, "db-readonly", broker.VerdictKeep, ""); broker.ErrorCode(err) != broker.EFORBIDDEN ||
		!strings.Contains(broker.ErrorMessage(err), "not yours to attest") {
		t.Fatalf("a stranger attests: %v; want EFORBIDDEN, not yours to attest", err)
	}
	if _, err := rv.Attest(approverCtx("someone@example.com"), "0190a0a0-0000-7000-8000-00000000dead", "db-readonly", broker.VerdictKeep, ""); broker.ErrorCode(err) != broker.ENOTFOUND {
		t.Fatalf("attesting a review that does not exist: %v; want ENOTFOUND", err)
	}
	agentCtx := broker.NewContextWithActor(context.Background(), broker.Actor{Kind: broker.ActorAgent, Name: "busy", AgentID: busy.ID})
	if _, err := rv.Attest(agentCtx, b.ID, "db-readonly", broker.VerdictKeep, ""); broker.ErrorCode(err) != broker.EFORBIDDEN {
		t.Fatalf("the agent attests itself: %v", err)
	}
	r, err := rv.Attest(owner, b.ID, "db-readonly", broker.VerdictKeep, "nightly ETL")
	if err != nil || r.State != broker.ReviewOpen {
		t.Fatalf("first verdict: %v, state %s", err, r.State)
	}
	r, err = rv.Attest(owner, b.ID, "txn-approve", broker.VerdictRemove, "never used")
	if err != nil || r.State != broker.ReviewClosed || r.ClosedBy != "approver:"+busy.Owner {
		t.Fatalf("last verdict: %v, %+v", err, r)
	}
	if !slices.Equal(ctrl.revoked, []string{busy.ID + "/txn-approve"}) {
		t.Fatalf("revoked %v, want busy's txn-approve leases", ctrl.revoked)
	}
	if ex, _ := db.RoleExcluded(context.Background(), busy.ID, "txn-approve"); !ex {
		t.Fatal("removed role not excluded")
	}
	if _, err := rv.Attest(owner, b.ID, "db-readonly", broker.VerdictKeep, ""); broker.ErrorCode(err) != broker.ECONFLICT {
		t.Fatalf("attesting a closed review: %v", err)
	}

	// idle's owner does nothing. At the deadline the agent is suspended...
	now = now.Add(14*24*time.Hour + time.Minute)
	if err := rv.Enforce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ctrl.suspended, []string{idle.ID}) || len(ctrl.disabled) != 0 {
		t.Fatalf("at the deadline: suspended %v, disabled %v; want idle suspended", ctrl.suspended, ctrl.disabled)
	}
	if err := rv.Enforce(context.Background()); err != nil || len(ctrl.suspended) != 1 {
		t.Fatalf("second pass suspended again: %v, %v", ctrl.suspended, err)
	}
	// ...and disabled after the grace period.
	now = now.Add(14 * 24 * time.Hour)
	if err := rv.Enforce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ctrl.disabled, []string{idle.ID}) {
		t.Fatalf("after the grace: disabled %v, want idle", ctrl.disabled)
	}
	got, _ := rv.FindReview(adminCtx(), byAgent["idle"].ID)
	if got.SuspendedAt == nil || got.DisabledAt == nil || got.State != broker.ReviewOpen {
		t.Fatalf("idle's review = %+v", got)
	}

	// The next quarter reviews busy again, without the removed role.
	now = now.Add(60 * 24 * time.Hour)
	next, err := rv.Campaign(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(next) != 1 || next[0].Agent != "busy" || len(next[0].Items) != 1 || next[0].Items[0].Role != "db-readonly" {
		t.Fatalf("next run = %+v", next)
	}

	// Everything is in the audit chain.
	for _, kind := range []string{broker.AuditReviewOpened, broker.AuditReviewAttested, broker.AuditReviewClosed,
		broker.AuditReviewSuspended, broker.AuditReviewDisabled, broker.AuditAgentUpdated} {
		if _, n, err := db.FindAuditEvents(context.Background(), broker.AuditFilter{Kind: &kind}); err != nil || n == 0 {
			t.Errorf("no %s audit event (%v)", kind, err)
		}
	}
	v, err := broker.VerifyAuditChain(context.Background(), db, nil, nil)
	if err != nil || !v.OK {
		t.Fatalf("audit chain: %+v, %v", v, err)
	}
}

// TestBreakglassPostReview checks what a break-glass grant sets off: the
// security alert, the owner's post-review, its closing and its escalation.
func TestBreakglassPostReview(t *testing.T) {
	db := openGovDB(t)
	now := time.Date(2026, 4, 1, 3, 0, 0, 0, time.UTC)
	a := createAgent(t, db, "oncall", now.Add(-24*time.Hour))
	rec := &alertRecorder{}
	rv := governance.NewReviews(db, reviewRoles, nil)
	rv.Now = func() time.Time { return now }
	rv.KillSwitch, rv.Alerts = &fakeControl{}, &governance.Alerts{Logger: slog.New(slog.DiscardHandler), Audit: db, Alerter: rec}

	grant := func() *broker.Lease {
		l := recordLease(t, db, a, "db-admin", broker.LeaseActive, now, 15*time.Minute)
		l.Breakglass = true
		l.PolicyDecision = &broker.Decision{Outcome: broker.OutcomeApprove, Reasons: []string{"break-glass: prod outage"}}
		rv.LeaseGranted(context.Background(), l, reviewRoles[2])
		return l
	}
	l1, l2 := grant(), grant()
	if k := rec.kinds(); !slices.Equal(k, []string{"breakglass/security", "breakglass_review/owner", "breakglass/security", "breakglass_review/owner"}) {
		t.Fatalf("alerts %v", k)
	}
	if !strings.Contains(rec.alerts[0].Message, "prod outage") {
		t.Fatalf("security alert %q lacks the reason", rec.alerts[0].Message)
	}
	kind := broker.ReviewBreakglass
	list, _, err := rv.FindReviews(approverCtx(a.Owner), broker.ReviewFilter{Kind: &kind})
	if err != nil || len(list) != 2 {
		t.Fatalf("owner sees %d post-reviews, %v; want 2", len(list), err)
	}
	byLease := map[string]*broker.Review{}
	for _, r := range list {
		byLease[r.LeaseID] = r
	}
	if _, err := rv.CloseBreakglass(approverCtx(a.Owner), byLease[l1.ID].ID, " "); broker.ErrorCode(err) != broker.EINVALID {
		t.Fatalf("closing without a note: %v", err)
	}
	r, err := rv.CloseBreakglass(approverCtx(a.Owner), byLease[l1.ID].ID, "failover runbook step 4; rotated after")
	if err != nil || r.State != broker.ReviewClosed || r.Note == "" {
		t.Fatalf("close: %v %+v", err, r)
	}
	now = now.Add(73 * time.Hour)
	if err := rv.Enforce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := rv.Enforce(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := rv.FindReview(adminCtx(), byLease[l2.ID].ID)
	if got.EscalatedAt == nil || got.State != broker.ReviewOpen {
		t.Fatalf("overdue post-review = %+v, want escalated", got)
	}
	if k := rec.kinds(); k[len(k)-1] != "breakglass_review_overdue/security" || slices.Index(k, "breakglass_review_overdue/security") != len(k)-1 {
		t.Fatalf("alerts %v, want one escalation to security", k)
	}
	bk := broker.AuditBreakglass
	if _, n, _ := db.FindAuditEvents(context.Background(), broker.AuditFilter{Kind: &bk}); n != 2 {
		t.Fatalf("%d break-glass audit events, want 2", n)
	}
}

func TestCheckConflictSets(t *testing.T) {
	roles := []*broker.Role{
		{Name: "finance-report", Eligible: map[string]string{"team": "finance"}},
		{Name: "txn-approve", Eligible: map[string]string{"team": "treasury"}},
		{Name: "audit-read", Eligible: map[string]string{"team": "*"}},
		{Name: "anyone"},
	}
	for _, c := range []struct {
		name            string
		strict, dynamic broker.ConflictSets
		want            string
	}{
		{"Disjoint", broker.ConflictSets{{"finance-report", "txn-approve"}}, nil, ""},
		{"Wildcard", broker.ConflictSets{{"finance-report", "audit-read"}}, nil, `roles "finance-report" and "audit-read" conflict (sod.conflicts[0]), but one agent can be eligible for both`},
		{"Everyone", broker.ConflictSets{{"anyone", "txn-approve"}}, nil, "{everyone} and {team=treasury}"},
		{"DynamicOverlap", nil, broker.ConflictSets{{"anyone", "txn-approve"}}, ""},
		{"Unknown", broker.ConflictSets{{"finance-report", "nope"}}, nil, `sod.conflicts[0]: role "nope" is not defined`},
		{"Single", nil, broker.ConflictSets{{"anyone"}}, "sod.dynamic_conflicts[0]: a conflict set names at least two roles"},
		{"Twice", broker.ConflictSets{{"txn-approve", "txn-approve"}}, nil, `role "txn-approve" is listed twice`},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := governance.CheckConflictSets(roles, c.strict, c.dynamic)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("err = %v, want none", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
		})
	}
}

// TestAttestationsKeepEveryAttester: the owner's and an admin's
// attestations of the same role are both kept; the item shows the one that
// set its verdict; a removal cannot be undone by a later keep.
func TestAttestationsKeepEveryAttester(t *testing.T) {
	db := openGovDB(t)
	now := time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC)
	a := createAgent(t, db, "busy", now.Add(-24*time.Hour))
	ctrl := &fakeControl{}
	// A third role keeps the review open while two are attested.
	roles := append(slices.Clone(reviewRoles), &broker.Role{Name: "logs-ro", Sensitivity: broker.SensitivityLow, Eligible: map[string]string{"team": "*"}})
	rv := governance.NewReviews(db, roles, nil)
	rv.Now = func() time.Time { return now }
	rv.KillSwitch, rv.Alerts = ctrl, &governance.Alerts{Logger: slog.New(slog.DiscardHandler), Audit: db}
	opened, err := rv.Campaign(context.Background())
	if err != nil || len(opened) != 1 || len(opened[0].Items) != 3 {
		t.Fatalf("Campaign = %+v, %v; want one review with three roles", opened, err)
	}
	id, owner := opened[0].ID, approverCtx(a.Owner)

	if _, err := rv.Attest(owner, id, "db-readonly", broker.VerdictKeep, "nightly ETL"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	if _, err := rv.Attest(adminCtx(), id, "db-readonly", broker.VerdictKeep, "confirmed with the data team"); err != nil {
		t.Fatal(err)
	}
	// The owner submits again: nothing new.
	if _, err := rv.Attest(owner, id, "db-readonly", broker.VerdictKeep, "nightly ETL"); err != nil {
		t.Fatal(err)
	}
	r, err := rv.FindReview(adminCtx(), id)
	if err != nil {
		t.Fatal(err)
	}
	it := r.Item("db-readonly")
	if it.Verdict != broker.VerdictKeep || it.AttestedBy != "approver:"+a.Owner || it.Note != "nightly ETL" {
		t.Errorf("item = %s by %s (%q); want the owner's keep, which set the verdict", it.Verdict, it.AttestedBy, it.Note)
	}
	if len(it.Attestations) != 2 || it.Attestations[0].By != "approver:"+a.Owner || it.Attestations[1].By != "admin:sec" ||
		it.Attestations[1].Note != "confirmed with the data team" || !it.Attestations[1].At.Equal(now) {
		t.Fatalf("attestations = %+v; want the owner's then the admin's", attestations(it))
	}

	// An admin removes a role the owner kept: both are kept, the item is
	// removed, and the removal is final.
	if _, err := rv.Attest(owner, id, "txn-approve", broker.VerdictKeep, ""); err != nil {
		t.Fatal(err)
	}
	if r, err = rv.Attest(adminCtx(), id, "txn-approve", broker.VerdictRemove, "never used"); err != nil {
		t.Fatal(err)
	}
	it = r.Item("txn-approve")
	if it.Verdict != broker.VerdictRemove || it.AttestedBy != "admin:sec" || len(it.Attestations) != 2 || it.Attestations[0].Verdict != broker.VerdictKeep {
		t.Fatalf("item after the admin's removal = %+v, attestations %v", it, attestations(it))
	}
	if !slices.Equal(ctrl.revoked, []string{a.ID + "/txn-approve"}) {
		t.Fatalf("revoked %v, want the removed role's leases", ctrl.revoked)
	}
	if r, err = rv.Attest(owner, id, "logs-ro", broker.VerdictKeep, ""); err != nil || r.State != broker.ReviewClosed {
		t.Fatalf("last role attested: %v, state %s; want closed", err, r.State)
	}
	stored, err := db.FindReviewByID(context.Background(), id)
	if err != nil || len(stored.Item("txn-approve").Attestations) != 2 || len(stored.Item("db-readonly").Attestations) != 2 {
		t.Fatalf("stored review = %+v, %v", stored, err)
	}
}

// TestAttestKeepAfterRemove: a keep after a removal is refused while the
// review is open.
func TestAttestKeepAfterRemove(t *testing.T) {
	db := openGovDB(t)
	now := time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC)
	a := createAgent(t, db, "busy", now.Add(-24*time.Hour))
	rv := governance.NewReviews(db, reviewRoles, nil)
	rv.Now = func() time.Time { return now }
	rv.KillSwitch, rv.Alerts = &fakeControl{}, &governance.Alerts{Logger: slog.New(slog.DiscardHandler), Audit: db}
	opened, err := rv.Campaign(context.Background())
	if err != nil || len(opened) != 1 {
		t.Fatalf("Campaign = %+v, %v", opened, err)
	}
	id := opened[0].ID
	if _, err := rv.Attest(approverCtx(a.Owner), id, "txn-approve", broker.VerdictRemove, "never used"); err != nil {
		t.Fatal(err)
	}
	_, err = rv.Attest(adminCtx(), id, "txn-approve", broker.VerdictKeep, "")
	if broker.ErrorCode(err) != broker.ECONFLICT || !strings.Contains(broker.ErrorMessage(err), "a removal is final") {
		t.Fatalf("keep after remove = %v; want ECONFLICT, a removal is final", err)
	}
	r, _ := rv.FindReview(adminCtx(), id)
	if it := r.Item("txn-approve"); it.Verdict != broker.VerdictRemove || len(it.Attestations) != 1 {
		t.Fatalf("item = %+v; want the owner's removal alone", it)
	}
}

func attestations(it *broker.ReviewItem) []string {
	var out []string
	for _, a := range it.Attestations {
		out = append(out, string(a.Verdict)+" by "+a.By+": "+a.Note)
	}
	return out
}
