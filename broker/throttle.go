package broker

import (
	"context"
	"net/netip"
	"strings"
	"time"
)

// Console password logins are throttled by three counters of failed
// attempts, kept in the store so that every replica sees the same counts:
//
//   - per account and address (ThrottlePair): the tight one. It stops one
//     address guessing one account's password.
//   - per account (ThrottleAccount): looser. It bounds guessing of one
//     account spread over many addresses.
//   - per address (ThrottleSource): looser. It bounds one address spraying
//     many accounts.
//
// Each counter allows some failures free, then locks for a time that
// doubles with each further failure, up to MaxLock; attempts refused while
// locked are not counted, so hammering a lock does not lengthen it. A
// counter is forgotten Forget after its last failure.
//
// So that an attacker cannot lock a real user out for good, the account and
// address locks do not apply to an address the account has logged in from
// successfully in the last Trusted (a trusted pair): someone guessing a
// user's password from elsewhere keeps the whole account locked against
// new addresses, but not against the user's usual one. A real user is locked
// out only when they use a new address while their account is under attack,
// or share their address with the attacker (behind one NAT, where the two
// cannot be told apart); each lock ends at most MaxLock after the attacker's
// last counted failure, and single sign-on, if configured, is not throttled
// by it.
//
// An attempt is counted before the password is checked (BeginLogin) and
// given back when it succeeds (LoginSucceeded), so that parallel guesses
// cannot all pass the check before any is counted, and a refused attempt
// never costs a password hash.

// Login throttle counter kinds.
const (
	ThrottlePair    = "pair"
	ThrottleAccount = "account"
	ThrottleSource  = "source"
)

// LoginThrottleRules are the limits of console password logins.
type LoginThrottleRules struct {
	// PairFree, AccountFree and SourceFree are the failures each counter
	// allows before it locks.
	PairFree    int
	AccountFree int
	SourceFree  int
	// FirstLock is the first lock; each further failure doubles it, up to
	// MaxLock.
	FirstLock time.Duration
	MaxLock   time.Duration
	// Forget clears a counter this long after its last failure.
	Forget time.Duration
	// Trusted is how long a successful login makes its address trusted for
	// the account: the account and address locks do not apply to it.
	Trusted time.Duration
}

// DefaultLoginThrottleRules are the console's limits: 5 failures per
// account and address, 20 per account, 30 per address, then locks of 1 s
// doubling up to 15 min; counters forgotten an hour after their last
// failure; an address trusted for an account 30 days after a login.
var DefaultLoginThrottleRules = LoginThrottleRules{
	PairFree: 5, AccountFree: 20, SourceFree: 30,
	FirstLock: time.Second, MaxLock: 15 * time.Minute,
	Forget: time.Hour, Trusted: 30 * 24 * time.Hour,
}

// Free returns how many failures the counter of kind allows before it
// locks.
func (r LoginThrottleRules) Free(kind string) int {
	switch kind {
	case ThrottlePair:
		return r.PairFree
	case ThrottleAccount:
		return r.AccountFree
	default:
		return r.SourceFree
	}
}

// LockFor returns how long a counter of kind with failures locks: zero
// below its free failures, then FirstLock doubling with each failure, at
// most MaxLock.
func (r LoginThrottleRules) LockFor(kind string, failures int) time.Duration {
	over := failures - r.Free(kind)
	if over < 0 {
		return 0
	}
	d := r.FirstLock
	for range over {
		if d >= r.MaxLock {
			break
		}
		d *= 2
	}
	return min(d, r.MaxLock)
}

// LoginThrottleKeys returns the counters a login attempt for user from
// source counts against, by kind. The user name is lowercased; an IPv6
// source is cut to its /64, which one client usually holds whole.
func LoginThrottleKeys(user, source string) map[string]string {
	user = strings.ToLower(user)
	if a, err := netip.ParseAddr(source); err == nil {
		a = a.Unmap()
		if a.Is6() {
			p, _ := a.Prefix(64)
			source = p.String()
		} else {
			source = a.String()
		}
	}
	return map[string]string{
		ThrottlePair:    user + "\n" + source,
		ThrottleAccount: user,
		ThrottleSource:  source,
	}
}

// LoginThrottleStore keeps the counters of console password logins.
type LoginThrottleStore interface {
	// BeginLogin counts one login attempt for user from source at now,
	// in one transaction with the check: if a lock holds (the pair's, or
	// unless the pair is trusted the account's or the address's), nothing
	// is counted and it returns ETOOMANY with RetryAfter; otherwise each
	// counter gains a failure and locks by rules.
	BeginLogin(ctx context.Context, user, source string, now time.Time, rules LoginThrottleRules) error
	// LoginSucceeded gives back the attempt BeginLogin counted: it clears the
	// pair's counter and trusts the pair for rules.Trusted, and takes one
	// failure off the account's and the address's counters.
	LoginSucceeded(ctx context.Context, user, source string, now time.Time, rules LoginThrottleRules) error
}

// LoginThrottled returns the ETOOMANY of a refused login attempt, with how
// long to wait (whole seconds, at least one). It names neither the counter
// that refused nor whether the account exists.
func LoginThrottled(wait time.Duration) *Error {
	secs := max(1, int((wait+time.Second-1)/time.Second))
	e := Errorf(ETOOMANY, "Too many failed logins: try again in %d s.", secs)
	e.RetryAfter = time.Duration(secs) * time.Second
	return e
}
