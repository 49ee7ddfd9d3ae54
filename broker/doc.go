// Package broker is Stint's dictionary: the nouns of just-in-time access
// (agents, roles, leases, credentials, lease events), their states and rules,
// the error type, and the interfaces more than one package uses.
//
// It imports only the standard library. Stores live in broker/sqlite (and later
// broker/postgres); the lease state machine lives in leases; policy and human
// approval live in approvals; the HTTP API and console live in web; cmd/stint
// wires them together.
package broker
