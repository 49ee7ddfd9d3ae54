package users

import (
	"context"
	"fmt"
	"sync"
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
	MinPasswordLen = 12
	MaxPasswordLen = 72
)

// CheckPasswordPolicy returns EINVALID naming "password" unless p is 12 to
// 72 bytes of valid UTF-8.
func CheckPasswordPolicy(p string) error {
	switch {
	case !utf8.ValidString(p):
		return broker.FieldErrorf("password", "The password must be valid UTF-8.")
	case len(p) < MinPasswordLen:
		return broker.FieldErrorf("password", "The password must be at least %d characters.", MinPasswordLen)
	case len(p) > MaxPasswordLen:
		return broker.FieldErrorf("password", "The password must be at most %d bytes.", MaxPasswordLen)
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

// PasswordMatches reports whether p is the password hashed as hash.
func PasswordMatches(hash, p string) bool {
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(p)) == nil
}

// dummyHash is compared against when the user does not exist, so that a
// login for an unknown name takes as long as one for a known name.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("stint-dummy-password"), passwordCost)
	return h
})

// AcquirePasswordSlot takes one of the service's password-check slots,
// waiting at most PasswordWait; Login takes one for each password it
// checks. The slots bound how many bcrypt hashes run at once
// (PasswordSlots), so that a flood of logins from many addresses, each
// under the login throttle's limits, slows logins down but never takes the
// CPU the API needs. Returns EUNAVAILABLE with RetryAfter when no slot
// frees in time.
func (s *Service) AcquirePasswordSlot(ctx context.Context) (release func(), err error) {
	s.init()
	t := time.NewTimer(s.PasswordWait)
	defer t.Stop()
	select {
	case s.slots <- struct{}{}:
		return func() { <-s.slots }, nil
	case <-t.C:
	case <-ctx.Done():
	}
	e := broker.Errorf(broker.EUNAVAILABLE, "The console is busy checking other logins; try again in a few seconds.")
	e.RetryAfter = 5 * time.Second
	return nil, e
}

// PasswordChecks returns how many passwords Login has compared with a hash
// (unknown names included), so that tests can show that a throttled
// attempt costs none.
func (s *Service) PasswordChecks() int64 {
	return s.checks.Load()
}

// passwordMatches reports whether p is the password hashed as hash; an empty
// hash (unknown user) is compared against dummyHash and never matches.
func (s *Service) passwordMatches(hash, p string) bool {
	s.checks.Add(1)
	if hash == "" {
		bcrypt.CompareHashAndPassword(dummyHash(), []byte(p))
		return false
	}
	return PasswordMatches(hash, p)
}
