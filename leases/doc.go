// Package leases runs the lease lifecycle: it decides a request (for now from
// the role's auto_approve flag; the approvals package replaces that with
// policy), records the lease before it mints, mints through an Issuer, hands
// the credential back once, and revokes it when the window closes, when the
// agent releases it, or when an admin pulls it.
//
// Three background pieces keep the invariants of DESIGN.md:
//
//   - the expiry loop (Service.Run): one timer driven by the store's next
//     deadline, woken when a lease is created; it expires due leases and drives
//     the revocation queue;
//   - the revocation queue: leases in state revoking, retried with capped
//     exponential backoff that never gives up (Service.RetryRevocations);
//   - the reconciler (Service.Reconcile, run by cron): revokes Vault
//     credentials under Stint's roles that no lease knows, and fails leases
//     stuck in issuing.
package leases
