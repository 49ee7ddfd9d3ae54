// Package web is Stint's HTTP API, and the only package that imports echo.
//
// Every request but the probes authenticates with "Authorization: Bearer
// <secret>", an agent's API key or an admin token (unknown paths too, so that a
// stranger learns nothing); the actor it resolves to travels on the request
// context to the services, which decide what the actor may see and do. Admin
// routes also check the actor's kind here.
// Handlers return errors; handleError (errors.go) is the only place where
// broker error codes become HTTP statuses, and callers only ever see the
// caller-safe message of a *broker.Error. Error bodies look like
//
//	{"error":{"code":"invalid","message":"...","field":"ttl"},"request_id":"..."}
//
// Endpoints (":id" of an agent is its id or its name):
//
//	GET    /healthz                     the process is up (no auth)
//	GET    /readyz                      the store and Vault are reachable, or 503 (no auth)
//	GET    /v1/whoami                   the authenticated actor
//	POST   /v1/leases                   request a lease: 201 with the credential, once; 202 if pending
//	GET    /v1/leases                   list leases: ?state=&role=&agent=&limit=&offset=
//	GET    /v1/leases/:id               one lease, never its credential
//	GET    /v1/leases/:id/events        the lease's history, oldest first
//	DELETE /v1/leases/:id               release: 200 once revoked, 202 while revoking
//	POST   /v1/leases/:id/revoke        admin: revoke one lease, with a reason
//	GET    /v1/roles                    the roles the caller may request
//	POST   /v1/agents                   admin: register an agent; its API key is shown once
//	GET    /v1/agents                   admin: list agents: ?state=&name=&limit=&offset=
//	GET    /v1/agents/:id               admin: one agent
//	POST   /v1/agents/:id/rotate-key    admin: revoke the agent's keys and issue one
//	POST   /v1/agents/:id/suspend       admin: suspend, revoking its live leases
//	POST   /v1/agents/:id/disable       admin: disable, revoking its live leases
//	POST   /v1/agents/:id/activate      admin: re-activate
//	POST   /v1/agents/:id/revoke-all    admin: revoke every live lease of the agent, with a reason
//
// Request bodies are JSON objects of at most 64 KB, decoded strictly: an
// unknown field is a 400 naming it. Responses that carry a credential or an
// API key, and every authenticated response, are sent with
// "Cache-Control: no-store". Nothing secret is logged: the request log has the
// request id, method, path, route, status, latency, remote address and actor.
package web
