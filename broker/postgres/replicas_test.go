package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/postgres"
	"github.com/stint-broker/stint/broker/postgres/pgtest"
)

// replicas opens n stores on one fresh schema, each with its own pool, as n
// replicas of Stint on one database would.
func replicas(tb testing.TB, n int) []*postgres.DB {
	tb.Helper()
	_, dsn := pgtest.NewSchema(tb)
	dbs := make([]*postgres.DB, n)
	for i := range dbs {
		dbs[i] = MustOpenDSN(tb, dsn)
	}
	return dbs
}

func mustAgent(tb testing.TB, db *postgres.DB, name string) *broker.Agent {
	tb.Helper()
	a := &broker.Agent{Name: name, Owner: "owner@example.com", State: broker.AgentActive}
	if err := db.CreateAgent(tb.Context(), a); err != nil {
		tb.Fatal(err)
	}
	return a
}

// activeLease returns an active lease of a whose window closed at expires.
func activeLease(a *broker.Agent, expires time.Time) *broker.Lease {
	act := expires.Add(-15 * time.Minute)
	return &broker.Lease{
		ID: uuid.Must(uuid.NewV7()).String(), AgentID: a.ID, Agent: a.Name, Role: "db-readonly",
		TTL: broker.Duration(15 * time.Minute), State: broker.LeaseActive,
		VaultPath: "database/creds/readonly", VaultLeaseID: "database/creds/readonly/" + uuid.NewString(),
		ActivatedAt: &act, ExpiresAt: &expires,
	}
}

// TestReplicasClaimOnce has four replicas claim expired leases at once,
// many rounds each: every lease is claimed, none twice.
func TestReplicasClaimOnce(t *testing.T) {
	dbs := replicas(t, 4)
	ctx := t.Context()
	a := mustAgent(t, dbs[0], "claimer")
	const leases = 400
	past := time.Now().Add(-time.Hour).UTC()
	for i := range leases {
		if err := dbs[i%4].CreateLease(ctx, activeLease(a, past.Add(time.Duration(i)*time.Millisecond)), "test", "seed"); err != nil {
			t.Fatal(err)
		}
	}

	var (
		mu      sync.Mutex
		claims  = map[string]int{}
		byStore = make([]int, len(dbs))
		wg      sync.WaitGroup
		errs    = make(chan error, 16)
	)
	for i, db := range dbs {
		for range 2 { // two claimers per replica, as a loop and a kick would
			wg.Go(func() {
				for {
					now := time.Now()
					got, err := db.ClaimExpiredLeases(ctx, now, now.Add(time.Minute), 7, "system:expiry", "window closed")
					if err != nil {
						errs <- err
						return
					}
					if len(got) == 0 {
						return
					}
					mu.Lock()
					for _, l := range got {
						claims[l.ID]++
						byStore[i]++
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(claims) != leases {
		t.Fatalf("claimed %d distinct leases, want %d", len(claims), leases)
	}
	for id, n := range claims {
		if n != 1 {
			t.Errorf("lease %s claimed %d times", id, n)
		}
	}
	t.Logf("claims per replica: %v", byStore)
	// Each claim is one state event: the chain verifies, and every lease
	// has its creation and its move to revoking, once.
	verifyChain(t, dbs[0], int64(1+2*leases))
	for id := range claims {
		evs, err := dbs[1].FindLeaseEvents(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 2 || evs[1].To != broker.LeaseRevoking {
			t.Fatalf("lease %s history: %d events, want creation and revoking", id, len(evs))
		}
	}
}

// TestReplicasAuditChainLinear has writers on four replicas append to the
// audit chain at once, through lease writes and plain records: the chain
// stays one line and verifies.
func TestReplicasAuditChainLinear(t *testing.T) {
	dbs := replicas(t, 4)
	ctx := t.Context()
	a := mustAgent(t, dbs[0], "writer")
	const perWriter = 40
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	future := time.Now().Add(time.Hour).UTC()
	for i, db := range dbs {
		for w := range 3 {
			wg.Go(func() {
				for k := range perWriter {
					var err error
					switch k % 3 {
					case 0:
						err = db.Record(ctx, broker.AuditEvent{Kind: "test.event", Actor: fmt.Sprintf("replica:%d", i),
							Details: broker.AuditDetails(map[string]any{"writer": w, "k": k})})
					case 1:
						err = db.CreateLease(ctx, activeLease(a, future), "test", "concurrent")
					default:
						l := activeLease(a, future)
						if err = db.CreateLease(ctx, l, "test", "concurrent"); err == nil {
							_, err = db.UpdateLease(ctx, l.ID, broker.LeaseUpdate{
								From: []broker.LeaseState{broker.LeaseActive}, State: ptr(broker.LeaseRevoking),
								EndState: ptr(broker.LeaseReleased), Actor: "agent:" + a.Name, Reason: "release"})
						}
					}
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// 1 agent event; per writer: 14 records, 13 creations, 13 × 2 events.
	per := int64(perWriter/3+1) + int64(perWriter/3) + 2*int64(perWriter/3)
	verifyChain(t, dbs[2], 1+12*per)

	// The head row and the chain agree.
	head, err := dbs[3].AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var seq int64
	var hash string
	if err := dbs[3].Pool().QueryRow(ctx, `SELECT seq, hash FROM audit_head`).Scan(&seq, &hash); err != nil {
		t.Fatal(err)
	}
	if seq != head.Seq || hash != head.Hash {
		t.Fatalf("audit_head = %d %s, chain head = %d %s", seq, hash, head.Seq, head.Hash)
	}
}

// TestAuditForkRefused forges appends that bypass the head row: a second
// event after the same predecessor, and a second event with the same seq.
// The database refuses both, and refuses rewriting or deleting events.
func TestAuditForkRefused(t *testing.T) {
	db := MustOpenDB(t)
	ctx := t.Context()
	for i := range 3 {
		if err := db.Record(ctx, broker.AuditEvent{Kind: "test.event", Actor: "test", Details: broker.AuditDetails(map[string]any{"i": i})}); err != nil {
			t.Fatal(err)
		}
	}
	head, err := db.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	events, _, err := db.FindAuditEvents(ctx, broker.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	second := events[1] // newest first: seq 2
	insert := `INSERT INTO audit_events (seq, at, kind, actor, subject, details, prev_hash, hash) VALUES ($1, $2, 'test.fork', 'forger', '', '{}', $3, $4)`

	// A sibling of seq 3: same predecessor (seq 2's hash), new seq.
	fork := broker.AuditEvent{Kind: "test.fork", Actor: "forger", At: time.Now().UTC(), Details: []byte("{}")}
	fork.Seal(second)
	fork.Seq = head.Seq + 1
	_, err = db.Pool().Exec(ctx, insert, fork.Seq, fork.At.UnixNano(), fork.PrevHash, fork.Hash)
	wantPgError(t, err, "23505", "audit_events_prev_hash_key")

	// A second event numbered like the head.
	dup := broker.AuditEvent{Kind: "test.fork", Actor: "forger", At: time.Now().UTC(), Details: []byte("{}")}
	dup.Seal(head)
	dup.Seq = head.Seq
	_, err = db.Pool().Exec(ctx, insert, dup.Seq, dup.At.UnixNano(), dup.PrevHash, dup.Hash)
	wantPgError(t, err, "23505", "audit_events_pkey")

	_, err = db.Pool().Exec(ctx, `UPDATE audit_events SET actor = 'forger' WHERE seq = 2`)
	wantPgError(t, err, "23001", "")
	_, err = db.Pool().Exec(ctx, `DELETE FROM audit_events WHERE seq = 3`)
	wantPgError(t, err, "23001", "")
	_, err = db.Pool().Exec(ctx, `TRUNCATE audit_events`)
	wantPgError(t, err, "23001", "")

	verifyChain(t, db, 3)
}

// wantPgError fails tb unless err is a PostgreSQL error with the code and,
// if not empty, on the constraint.
func wantPgError(tb testing.TB, err error, code, constraint string) {
	tb.Helper()
	var pg *pgconn.PgError
	if !errors.As(err, &pg) {
		tb.Fatalf("err = %v, want PostgreSQL error %s", err, code)
	}
	if pg.Code != code || (constraint != "" && pg.ConstraintName != constraint) {
		tb.Fatalf("err = %s on %q (%v), want %s on %q", pg.Code, pg.ConstraintName, err, code, constraint)
	}
}

// verifyChain fails tb unless the audit chain verifies and holds want
// events.
func verifyChain(tb testing.TB, db *postgres.DB, want int64) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, err := broker.VerifyAudit(ctx, db, broker.AuditVerifyOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	if !v.OK {
		tb.Fatalf("audit chain broken at %d: %s %s", v.BrokenAt, v.Break, v.Reason)
	}
	if v.Checked != want {
		tb.Fatalf("audit chain holds %d events, want %d", v.Checked, want)
	}
}

func ptr[T any](v T) *T { return &v }

// TestReplicasUpdateOnce has eight writers on four replicas move the same
// active lease to revoking at once: exactly one succeeds, the others are
// told the lease is no longer active, and the history holds one move.
func TestReplicasUpdateOnce(t *testing.T) {
	dbs := replicas(t, 4)
	ctx := t.Context()
	a := mustAgent(t, dbs[0], "racer")
	l := activeLease(a, time.Now().Add(time.Hour).UTC())
	if err := dbs[0].CreateLease(ctx, l, "test", "seed"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			_, err := dbs[i%4].UpdateLease(ctx, l.ID, broker.LeaseUpdate{
				From: []broker.LeaseState{broker.LeaseActive}, State: ptr(broker.LeaseRevoking),
				EndState: ptr(broker.LeaseRevoked), Actor: fmt.Sprintf("admin:replica-%d", i%4), Reason: "race"})
			results <- err
		})
	}
	wg.Wait()
	close(results)
	won := 0
	for err := range results {
		switch {
		case err == nil:
			won++
		case broker.ErrorCode(err) != broker.ECONFLICT:
			t.Fatalf("loser's error = %v, want ECONFLICT", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d writers moved the lease, want 1", won)
	}
	evs, err := dbs[0].FindLeaseEvents(ctx, l.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 {
		t.Fatalf("history has %d events, want creation and one move", len(evs))
	}
}

// TestReplicasSeparationOfDuty requests two conflicting roles for one agent
// through two replicas at once, many times: never both live.
func TestReplicasSeparationOfDuty(t *testing.T) {
	dbs := replicas(t, 2)
	ctx := t.Context()
	for round := range 10 {
		a := mustAgent(t, dbs[0], fmt.Sprintf("sod-%d", round))
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, role := range []string{"payments-write", "payments-approve"} {
			other := []string{"payments-approve", "payments-write"}[i]
			wg.Go(func() {
				l := activeLease(a, time.Now().Add(time.Hour).UTC())
				l.Role = role
				errs[i] = dbs[i].CreateLeaseExclusive(ctx, l, "test", "sod", []string{other})
			})
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case broker.ErrorCode(err) != broker.ECONFLICT:
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d conflicting leases granted, want 1 (errors %v)", round, ok, errs)
		}
	}
}
