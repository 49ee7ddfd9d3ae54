package broker

import (
	"time"
	"unicode/utf8"
)

// Limits on what callers send, each defined once. The service that owns a
// field enforces its limit with CheckLen; the API, the console and MCP
// check the same constants with the same function before calling it, so
// every entry point (the CLI included, which calls the services directly)
// refuses an over-limit input with the same message.
const (
	// MaxTaskLen caps a lease request's task, in characters.
	MaxTaskLen = 500
	// MaxJustificationLen caps a lease request's justification.
	MaxJustificationLen = 2000
	// MaxBreakglassReasonLen caps a break-glass request's reason.
	MaxBreakglassReasonLen = 1000
	// MaxReasonLen caps a reason given by a person: for a revocation, a
	// denial, a kill switch.
	MaxReasonLen = 500
	// MaxReviewNoteLen caps a note on an access review attestation or on
	// closing a break-glass post-review.
	MaxReviewNoteLen = 1000
	// MaxIdempotencyKeyLen caps LeaseRequest.IdempotencyKey.
	MaxIdempotencyKeyLen = 200

	// MaxLeaseWait caps how long a caller may wait for a pending lease to
	// change (GET /v1/leases/:id?wait=, WaitLease).
	MaxLeaseWait = 60 * time.Second
	// MaxContainmentWait caps how long a caller may wait for a
	// containment's revocations to be confirmed (?wait=, WaitContainment).
	MaxContainmentWait = 10 * time.Second
)

// CheckLen returns EINVALID naming field if value has more than max
// characters, or a character CheckText refuses.
func CheckLen(field, value string, max int) error {
	if utf8.RuneCountInString(value) > max {
		return FieldErrorf(field, "Field %q must be at most %d characters.", field, max)
	}
	return CheckText(field, value)
}
