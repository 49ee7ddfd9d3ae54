// Package mcp is Stint's Model Context Protocol server: the tools through
// which an LLM agent asks for, uses and gives back just-in-time access
// (list_roles, request_access, lease_status, release_access,
// extend_access, list_my_leases), built on the official Go SDK.
//
// The same tools serve two transports. The server's streamable HTTP
// endpoint (/mcp, package web) calls the lease service in process, as the
// agent its access token names; `stint mcp` serves them over stdio beside
// the agent and calls the server's HTTP API with the agent's own
// credentials. Either way the secret stays out of the model by default: a
// tool result never carries the password or token unless the role's
// configuration says mcp.inline_secret. Over stdio the credential is
// written to a 0600 file whose path the result names (FileDelivery), and
// removed when the lease ends; over HTTP the result names the lease and the
// `stint exec --lease ID -- …` command that mints it inside a child process.
package mcp
