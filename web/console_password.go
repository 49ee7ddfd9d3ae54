package web

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"

	"github.com/stint-broker/stint/broker"
)

// passwordCost is the bcrypt cost of console passwords: about 250 ms per
// check on a current core, which makes guessing slow and logging in quick.
const passwordCost = 12

// Password limits. bcrypt reads at most 72 bytes; longer passwords are
// refused rather than silently cut.
const (
	minPasswordLen = 12
	maxPasswordLen = 72
)

// CheckPasswordPolicy returns EINVALID naming "password" unless p is 12 to
// 72 bytes of valid UTF-8.
func CheckPasswordPolicy(p string) error {
	switch {
	case !utf8.ValidString(p):
		return broker.FieldErrorf("password", "The password must be valid UTF-8.")
	case len(p) < minPasswordLen:
		return broker.FieldErrorf("password", "The password must be at least %d characters.", minPasswordLen)
	case len(p) > maxPasswordLen:
		return broker.FieldErrorf("password", "The password must be at most %d bytes.", maxPasswordLen)
	}
	return nil
}

// HashPassword returns the bcrypt hash of a console password that passes
// CheckPasswordPolicy.
func HashPassword(p string) (string, error) {
	if err := CheckPasswordPolicy(p); err != nil {
		return "", err
	}
	h, err := bcrypt.GenerateFromPassword([]byte(p), passwordCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// dummyHash is compared against when the user does not exist, so that a
// login for an unknown name takes as long as one for a known name.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("stint-dummy-password"), passwordCost)
	return h
})

// passwordWait is how long a login waits for a free password-check slot
// (Console.passwordSlots) before it is refused as busy.
var passwordWait = 5 * time.Second

// acquirePasswordSlot takes one of the console's password-check slots,
// waiting at most passwordWait. The slots bound how many bcrypt hashes run
// at once (half the cores), so that a flood of logins from many addresses,
// each under the login throttle's limits, slows logins down but never takes
// the CPU the API needs. Returns EUNAVAILABLE when no slot frees in time.
func (con *Console) acquirePasswordSlot(ctx context.Context) (release func(), err error) {
	t := time.NewTimer(passwordWait)
	defer t.Stop()
	select {
	case con.passwordSlots <- struct{}{}:
		return func() { <-con.passwordSlots }, nil
	case <-t.C:
	case <-ctx.Done():
	}
	e := broker.Errorf(broker.EUNAVAILABLE, "The console is busy checking other logins; try again in a few seconds.")
	e.RetryAfter = 5 * time.Second
	return nil, e
}

// passwordChecks counts calls of passwordMatches (tests read it).
var passwordChecks atomic.Int64

// passwordMatches reports whether p is the password hashed as hash; an empty
// hash (unknown user) is compared against dummyHash and never matches.
func passwordMatches(hash, p string) bool {
	passwordChecks.Add(1)
	if hash == "" {
		bcrypt.CompareHashAndPassword(dummyHash(), []byte(p))
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(p)) == nil
}
