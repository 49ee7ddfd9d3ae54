// Package leases runs the lease lifecycle: it decides a request through a
// broker.Decider (the approvals package's policy; without one, the role's
// auto_approve flag), records the lease before it mints, mints through an Issuer, hands
// the credential back once, and revokes it when the window closes, when the
// agent releases it, or when an admin pulls it.
//
// Four background pieces keep the invariants listed in the README's "How a
// lease works" (write ahead, time twice, verified revocation, reconciliation):
//
//   - the expiry loop (Service.Run): one timer driven by the store's next
//     deadline, woken when a lease is created; it expires due leases and drives
//     the revocation queue;
//   - the revocation queue: leases in state revoking, retried with capped
//     exponential backoff that never gives up (Service.RetryRevocations);
//   - approval deadlines (Service.EndOverdue, on the same loop): pending
//     leases past DecideBy end timed_out, approved ones past ActivateBy end
//     lapsed. A pending lease is activated by ActivateLease, which writes
//     ahead and mints like an auto-approved request (approve.go);
//   - the reconciler (Service.Reconcile, run by cron): revokes Vault
//     credentials under Stint's roles that no lease knows, and fails leases
//     stuck in issuing.
package leases
