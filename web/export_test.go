package web

import "time"

// PasswordChecks counts bcrypt comparisons of console logins, so that tests
// can show a throttled attempt costs none.
var PasswordChecks = &passwordChecks

// HoldPasswordSlots takes every password-check slot of s's console, and
// makes a login wait at most wait for one, until release.
func HoldPasswordSlots(s *Server, wait time.Duration) (release func()) {
	s.Handler() // the console's slots exist once the router is built
	old := passwordWait
	passwordWait = wait
	n := cap(s.Console.passwordSlots)
	for range n {
		s.Console.passwordSlots <- struct{}{}
	}
	return func() {
		for range n {
			<-s.Console.passwordSlots
		}
		passwordWait = old
	}
}

// DecodeStrict is decodeJSON on a body already read, for the fuzz target.
func DecodeStrict(body []byte, v any) error { return decodeStrict(body, v) }

// Request bodies of the API, for the fuzz target.
type (
	CreateLeaseRequest = createLeaseRequest
	CreateAgentRequest = createAgentRequest
	DecideRequest      = decideRequest
)
