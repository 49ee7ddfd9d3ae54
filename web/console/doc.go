// Package console is Stint's web console: server-rendered HTML (with htmx)
// for the people who review, approve and pull access. The web server mounts
// it under /console (Console.Mount) and renders its errors through it
// (RenderError); the routes are listed in package web's documentation.
//
// The console is a client of the same services as the JSON API, with the
// logged-in user as the actor: revocations and the kill switch go through
// the lease service the server lends it (Host.Leases), decisions through
// broker.ApprovalService, and logins and sessions through
// broker.UserService (broker/users), which owns passwords, the login
// throttle and sessions. Its pages read through Reader, a read-only
// interface with just the queries they need; it never holds a store
// (TestReadOnly and broker/deptest guard both).
//
// Every POST carries a CSRF token derived from the session (before login,
// a double-submit cookie), the console has its own CSP allowing only its
// embedded scripts and styles, and every answer is "Cache-Control:
// no-store".
package console
