// Package web is Stint's HTTP API, and the only package that imports echo.
//
// Every request to /v1 authenticates with "Authorization: Bearer <secret>",
// an agent's API key or an admin token (unknown paths under /v1 too, so that
// a stranger learns nothing); a path outside /v1 that no route serves (a
// browser's /favicon.ico) is not an API call and gets a 404 without being
// counted as a failed authentication. The actor it resolves to travels on
// the request context to the services, which decide what the actor may see
// and do. Admin routes also check the actor's kind here.
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
//	GET    /robots.txt                  "Disallow: /" for every crawler (no auth)
//	GET    /v1/whoami                   the authenticated actor
//	POST   /v1/leases                   request a lease: 201 with the credential, once; 202 if pending;
//	                                    {"breakglass":true,"breakglass_reason"} for an emergency grant
//	GET    /v1/leases                   list leases: ?state=&role=&agent=&limit=&offset=
//	GET    /v1/leases/:id               one lease, never its credential
//	GET    /v1/leases/:id/events        the lease's history, oldest first
//	DELETE /v1/leases/:id               release: 200 once revoked, 202 while revoking
//	POST   /v1/leases/:id/revoke        admin: revoke one lease, with a reason
//	GET    /v1/leases/:id?wait=30s      long poll: while pending, wait (at most 60s) for the state to change
//	POST   /v1/leases/:id/activate      agent: mint an approved lease: 201 with the credential, once; 409 after
//	POST   /v1/leases/:id/cancel        agent: withdraw a pending or approved lease (canceled)
//	GET    /v1/approvals                approver: pending leases you may decide, each with its digest
//	POST   /v1/leases/:id/approve       approver: {"digest"}; N distinct approvals approve the lease
//	POST   /v1/leases/:id/deny          approver: {"digest","reason"}; any denial rejects it
//	POST   /v1/leases/:id/extend        agent: {"ttl"}: lengthen an active lease's window (policy action extend,
//	                                    after half the window, within the role's max_extensions and max_total_ttl)
//	GET    /v1/reviews                  owner (approver token) or admin: access and break-glass reviews: ?state=&kind=&agent=&limit=&offset=
//	GET    /v1/reviews/:id              one review with its items and evidence
//	POST   /v1/reviews/:id/attest       owner or admin: {"role","verdict":"keep"|"remove","note"}; every attestation is kept; the last role's closes it
//	POST   /v1/reviews/:id/close        owner or admin: {"note"}: close a break-glass post-review
//	POST   /v1/reviews/run              admin: open access reviews now (also on reviews.schedule)
//	POST   /slack/interactions          Slack's signed button clicks (no bearer; v0 signature, 5 min)
//	GET    /v1/roles                    the roles the caller may request
//	POST   /v1/agents                   admin: register an agent; its API key is shown once
//	GET    /v1/agents                   admin: list agents: ?state=&name=&limit=&offset=
//	GET    /v1/agents/:id               admin: one agent
//	POST   /v1/agents/:id/rotate-key    admin: revoke the agent's keys and issue one
//	POST   /v1/agents/:id/suspend       admin: the kill switch, suspending the agent: ?wait=; 200 or 202 (containment.go)
//	POST   /v1/agents/:id/disable       admin: the kill switch, disabling the agent for good: ?wait=; 200 or 202
//	POST   /v1/agents/:id/activate      admin: re-activate a suspended agent (409 if disabled)
//	POST   /v1/agents/:id/revoke-all    admin: the kill switch, the agent's state left alone, with a reason
//	GET    /v1/agents/:id/containments  admin: the agent's containments, newest first
//	GET    /v1/containments/:id         admin: a containment's progress: ?wait=; 200 when done, 202 before
//
// Agent authentication (auth.go, tls.go): with Server.Auth set, a request
// authenticates by its bearer secret (an API key, an admin token, or a Stint
// access token; a token obtained over mutual TLS is bound to that client
// certificate, RFC 8705, and refused without it), or, with no bearer, by its
// client certificate (Stint's enrolment CA or a SPIFFE X.509-SVID; TLS 1.3
// when Server.TLS is set, client certificates off, optional or required).
// An agent over its request rate or live-lease cap gets 429 with
// Retry-After.
//
// OAuth 2.0 (oauth.go), only with Server.OAuth; public, the token endpoint
// authenticates its clients itself (client_secret_basic, client_secret_post,
// private_key_jwt per RFC 7523, tls_client_auth per RFC 8705) and answers
// errors as RFC 6749 §5.2 JSON, {"error":"invalid_client",
// "error_description":"..."}; a failed client authentication is 401 with a
// Basic challenge only for HTTP Basic (or no credentials), 400 otherwise:
//
//	POST   /oauth/token                 form: grant_type=client_credentials, or
//	                                    urn:ietf:params:oauth:grant-type:token-exchange with
//	                                    subject_token and subject_token_type (RFC 8693)
//	GET    /oauth/jwks.json             the public keys of access tokens
//	GET    /.well-known/oauth-authorization-server  RFC 8414 metadata
//
// Metrics (metrics.go), only with metrics.token_sha256; it checks its own
// bearer token, not an API key:
//
//	GET    /metrics                     Prometheus text format
//
// The web console (package web/console, which the server mounts) is HTML
// for humans, with server-side sessions
// (cookie stint_session, HttpOnly, SameSite=Lax, Secure over TLS) instead of
// bearer tokens; a request without a session gets the login page. Every POST
// carries a CSRF token (form field _csrf or header X-CSRF-Token) derived from
// the session, and the console has its own CSP allowing only its own scripts
// and styles:
//
//	GET    /                            redirect to the console
//	GET    /console/login               the login form; POST logs in (name, password); 429 with
//	                                    Retry-After while the login throttle (broker/throttle.go) locks
//	GET    /console/login/oidc          with console.oidc: start SSO (?next=); redirects to the provider
//	GET    /console/login/oidc/callback the provider's redirect back: checks state, nonce, ID token, logs in by email
//	POST   /console/logout              end the session
//	GET    /console/leases              live leases, time left, revoke and kill switch (admin)
//	GET    /console/history             lease history: ?agent=&owner=&role=&state=&from=&to=&page=; &format=csv|json exports
//	GET    /console/leases/:id          one lease: request, decision, approvals, timeline, audit records
//	POST   /console/leases/:id/revoke   admin: revoke with a reason
//	GET    /console/agents              agents: owner, state, last seen, lease counts
//	POST   /console/agents/:id/revoke-all  admin: the kill switch, with a reason
//	POST   /console/agents/:id/disable  admin: disable and revoke its live leases, with a reason
//	GET    /console/containments/:id    admin: a containment's progress, refreshed until done
//	GET    /console/approvals           pending leases; approve/deny when the approvals service is wired
//	POST   /console/approvals/:id/approve|deny  approver or admin (never for their own agent)
//	GET    /console/audit               audit chain status and events: ?kind=&actor=&subject=&from=&to=; &format=csv|json
//	POST   /console/audit/verify        walk the chain now, and check it against the signed checkpoints (Console.Checkpoints)
//	GET    /console/static/*            embedded assets (htmx 2.0.11, CSS, JS)
//
// Request bodies are JSON objects of at most 64 KB, decoded strictly: an
// unknown field is a 400 naming it. Responses that carry a credential or an
// API key, and every authenticated response, are sent with
// "Cache-Control: no-store". Nothing secret is logged: the request log has the
// request id, method, path, route, status, latency, remote address and actor.
package web
