package leases_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stint-broker/stint/broker"
)

func TestTaskLeases(t *testing.T) {
	f := newFixture(t)
	etl := f.agent(t, "etl", map[string]string{"team": "data"})
	ops := f.agent(t, "ops", map[string]string{"team": "data"})
	ctxs := map[string]context.Context{"etl": etl, "ops": ops}
	request := func(agent, role, task string) *broker.Lease {
		t.Helper()
		l, _, err := f.svc.RequestLease(ctxs[agent], broker.LeaseRequest{Role: role, TTL: "10m", Task: task})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	etlActive := request("etl", "db-readonly", "migrate orders")
	f.svc.Decider = deciderFunc(needsTwo)
	etlPending := request("etl", "db-admin", "migrate orders")
	f.svc.Decider = nil
	etlOther := request("etl", "db-readonly", "nightly report")
	opsActive := request("ops", "db-readonly", "migrate orders")
	if etlActive.State != broker.LeaseActive || etlPending.State != broker.LeasePending {
		t.Fatalf("setup: states %s and %s, want active and pending", etlActive.State, etlPending.State)
	}

	t.Run("ErrInvalidTask", func(t *testing.T) {
		_, err := f.svc.ReleaseTask(etl, " ")
		wantCode(t, err, broker.EINVALID, "task")
	})
	t.Run("ErrForbiddenAgentRevokes", func(t *testing.T) {
		_, err := f.svc.RevokeTask(etl, "migrate orders", "done")
		wantCode(t, err, broker.EFORBIDDEN, "")
	})
	t.Run("ErrInvalidNoReason", func(t *testing.T) {
		_, err := f.svc.RevokeTask(adminCtx(), "migrate orders", "")
		wantCode(t, err, broker.EINVALID, "reason")
	})

	t.Run("ReleaseOwnOnly", func(t *testing.T) {
		got, err := f.svc.ReleaseTask(etl, "migrate orders")
		if err != nil {
			t.Fatal(err)
		}
		states := map[string]broker.LeaseState{}
		for _, l := range got {
			states[l.ID] = l.State
		}
		want := map[string]broker.LeaseState{etlActive.ID: broker.LeaseReleased, etlPending.ID: broker.LeaseCanceled}
		if len(states) != len(want) || states[etlActive.ID] != want[etlActive.ID] || states[etlPending.ID] != want[etlPending.ID] {
			t.Fatalf("ended %v, want %v", states, want)
		}
		if f.issuer.isLive(etlActive.VaultLeaseID) {
			t.Error("the released lease's credential is still live in the issuer")
		}
		for _, l := range []*broker.Lease{etlOther, opsActive} {
			stored, err := f.db.FindLeaseByID(t.Context(), l.ID)
			if err != nil {
				t.Fatal(err)
			}
			if stored.State != broker.LeaseActive {
				t.Errorf("lease %s of task %q by %s is %s, want active (not the caller's task or lease)", l.ID, l.Task, l.Agent, stored.State)
			}
		}
		// Again: nothing live is left of the caller's in the task.
		if got, err := f.svc.ReleaseTask(etl, "migrate orders"); err != nil || len(got) != 0 {
			t.Fatalf("second release = %d leases, %v; want none", len(got), err)
		}
	})

	t.Run("AdminRevokesEveryAgent", func(t *testing.T) {
		f.issuer.setRevokeErr(errors.New("vault: connection refused"))
		got, err := f.svc.RevokeTask(adminCtx(), "migrate orders", "incident 12")
		f.issuer.setRevokeErr(nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].ID != opsActive.ID || got[0].State != broker.LeaseRevoking || got[0].EndState != broker.LeaseRevoked {
			t.Fatalf("got %+v, want ops' lease revoking toward revoked (Vault is down)", got)
		}
		events, err := f.db.FindLeaseEvents(t.Context(), opsActive.ID)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range events {
			found = found || e.To == broker.LeaseRevoking && e.Reason == "revoked with its task: incident 12" && e.Actor == "admin:sec"
		}
		if !found {
			t.Errorf("events %+v, want the task revocation with its reason and actor", events)
		}
	})
}
