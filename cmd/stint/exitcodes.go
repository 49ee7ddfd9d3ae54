package main

// Exit statuses of the stint command. Every command exits 0 on success,
// exitFailure on an error and exitUsage on a bad flag value (the kill
// switch's 3 and audit verify's are theirs, in exitCodesHelp). stint exec
// passes its command's own status through (128+N when signal N killed it)
// and uses the 200 range for its own failures, above what commands and
// shells commonly use (1-125, 126, 127, 128+N).
const (
	exitFailure = 1
	exitUsage   = 2

	// exitExecUsage: stint exec was called wrongly (flags, missing
	// credentials, no command), so nothing was requested.
	exitExecUsage = 200
	// exitExecUnreachable: the Stint server could not be reached.
	exitExecUnreachable = 201
	// exitExecAuth: the server refused the credentials (wrong, expired or
	// revoked key), or they may not do this.
	exitExecAuth = 202
	// exitExecRefused: the request was refused: unknown role, invalid
	// request, denied by policy or rejected by an approver, or the lease
	// named by --lease cannot be used.
	exitExecRefused = 203
	// exitExecNoDecision: no approval in time (timed out, lapsed,
	// canceled, or stint exec was interrupted while it waited).
	exitExecNoDecision = 204
	// exitExecUnavailable: the server could not mint the credential (Vault
	// or the store unavailable, too many leases) or failed.
	exitExecUnavailable = 205
	// exitExecNoCommand: the command could not be started (not found, not
	// executable); the lease was released at once.
	exitExecNoCommand = 206
)

// exitCodesHelp documents the exit statuses in stint --help.
const exitCodesHelp = `Output: every command that shows data prints a table (or lines) for people
and, with -o json, JSON for programs.

Exit status:
  0    success
  1    an error (the message says what and what to do); audit verify: the
       chain is broken
  2    a bad flag value (an unknown -o format included); audit verify: no
       verdict, the check could not run
  3    agents suspend|disable|revoke-all: the containment stands but Vault
       did not confirm every revocation within --wait
  stint exec exits with its command's status (128+N if signal N killed it),
  and with these for its own failures, before or instead of running it:
  200  bad usage: flags, missing credentials, no command
  201  the Stint server could not be reached
  202  the credentials were refused (wrong, expired or revoked key)
  203  the request was refused: unknown role, invalid, denied or rejected
  204  no approval in time (timed out, lapsed, canceled, interrupted)
  205  the credential could not be minted (Vault or store unavailable,
       too many leases, server error)
  206  the command could not be started (not found, not executable)`
