// Package client is the Go client of Stint's HTTP API, for agents, the
// programs that run them, and approvers.
//
// A Client talks to one Stint server and authenticates every request with
// one of the methods the server accepts:
//
//   - an API key or admin token (WithAPIKey), sent as a bearer token;
//   - a TLS client certificate (WithClientCertificate), mutual TLS with no
//     bearer token;
//   - OAuth 2.0 client credentials (WithClientSecret for client_secret_basic,
//     WithPrivateKeyJWT for private_key_jwt): the client asks the server's
//     token endpoint for an access token, caches it until shortly before it
//     expires, and fetches a new one when the server answers 401. Combined
//     with WithClientCertificate the token is bound to the certificate.
//
// Agents request leases (RequestLease), wait for a human decision with long
// polls (WaitLease, AwaitDecision), activate approved leases
// (ActivateLease), extend and release them. Approvers list what waits for
// them (Approvals) and decide (Approve, Deny), and attest access reviews.
//
// Every error the server answers is a *Error carrying the API's error code
// (CodeDenied, CodeNotFound …), the HTTP status and the server's message:
//
//	var e *client.Error
//	if errors.As(err, &e) && e.Code == client.CodeDenied { … }
//
// The credential of an activated lease is shown once, in the Lease that
// RequestLease or ActivateLease returns. A Credential prints as
// "[credential redacted]" with fmt, log/slog and encoding/json; only
// Credential.Reveal and Credential.Field return the secret. A Client never
// prints its API key, client secret or private key either.
package client
