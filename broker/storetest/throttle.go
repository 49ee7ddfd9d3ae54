package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
)

// testLoginThrottle pins down broker.LoginThrottleStore with the default
// rules: which counter locks when, for how long, and what a successful
// login and a trusted address change.
func testLoginThrottle(t *testing.T, open func(tb testing.TB) Store) {
	rules := broker.DefaultLoginThrottleRules

	// begin returns the wait a refused attempt gets, or 0 if it was counted.
	begin := func(t *testing.T, s Store, user, source string, now time.Time) time.Duration {
		t.Helper()
		err := s.BeginLogin(t.Context(), user, source, now, rules)
		switch broker.ErrorCode(err) {
		case "":
			return 0
		case broker.ETOOMANY:
			var e *broker.Error
			e, _ = err.(*broker.Error)
			if e == nil || e.RetryAfter <= 0 {
				t.Fatalf("BeginLogin: %v without RetryAfter", err)
			}
			return e.RetryAfter
		}
		t.Fatalf("BeginLogin: %v", err)
		return 0
	}
	succeed := func(t *testing.T, s Store, user, source string, now time.Time) {
		t.Helper()
		if err := s.LoginSucceeded(t.Context(), user, source, now, rules); err != nil {
			t.Fatalf("LoginSucceeded: %v", err)
		}
	}

	t.Run("PairLocksAfterFreeFailuresAndDoubles", func(t *testing.T) {
		s := open(t)
		for i := range rules.PairFree {
			if w := begin(t, s, "alice", "10.0.0.1", at(0)); w != 0 {
				t.Fatalf("attempt %d refused (%s), want counted", i+1, w)
			}
		}
		if w := begin(t, s, "alice", "10.0.0.1", at(0)); w != time.Second {
			t.Fatalf("attempt %d waits %s, want 1s", rules.PairFree+1, w)
		}
		// Hammering the lock neither counts nor lengthens it.
		for range 50 {
			begin(t, s, "alice", "10.0.0.1", at(500*time.Millisecond))
		}
		if w := begin(t, s, "alice", "10.0.0.1", at(time.Second)); w != 0 {
			t.Fatalf("after the lock: refused (%s), want counted", w)
		}
		if w := begin(t, s, "ALICE", "10.0.0.1", at(time.Second)); w != 2*time.Second {
			t.Fatalf("next lock %s, want 2s (the name's case does not matter)", w)
		}
		// Another address is not held by this pair's lock.
		if w := begin(t, s, "alice", "10.0.0.2", at(time.Second)); w != 0 {
			t.Fatalf("another address refused (%s)", w)
		}
	})

	t.Run("LockIsCapped", func(t *testing.T) {
		s := open(t)
		now := at(0)
		for range 40 {
			if w := begin(t, s, "bob", "10.0.0.1", now); w > 0 {
				if w > rules.MaxLock {
					t.Fatalf("lock %s, want at most %s", w, rules.MaxLock)
				}
				now = now.Add(w)
				begin(t, s, "bob", "10.0.0.1", now)
			}
		}
		if w := begin(t, s, "bob", "10.0.0.1", now); w != rules.MaxLock {
			t.Fatalf("after many failures the lock is %s, want %s", w, rules.MaxLock)
		}
		// An hour without failures forgets them.
		if w := begin(t, s, "bob", "10.0.0.1", now.Add(rules.MaxLock+rules.Forget)); w != 0 {
			t.Fatalf("after Forget: refused (%s)", w)
		}
	})

	t.Run("SuccessGivesTheAttemptBack", func(t *testing.T) {
		s := open(t)
		for range rules.PairFree - 1 {
			begin(t, s, "carol", "10.0.0.1", at(0))
		}
		begin(t, s, "carol", "10.0.0.1", at(0)) // the right password this time
		succeed(t, s, "carol", "10.0.0.1", at(0))
		for i := range rules.PairFree {
			if w := begin(t, s, "carol", "10.0.0.1", at(time.Second)); w != 0 {
				t.Fatalf("attempt %d after a login refused (%s)", i+1, w)
			}
		}
	})

	t.Run("AccountLockSparesTrustedAddress", func(t *testing.T) {
		s := open(t)
		begin(t, s, "dana", "192.0.2.7", at(0))
		succeed(t, s, "dana", "192.0.2.7", at(0)) // dana's usual address
		// Guessing from many addresses, each under the pair's limit.
		for i := range rules.AccountFree {
			if w := begin(t, s, "dana", fmt.Sprintf("10.1.%d.%d", i/250, i%250), at(time.Minute)); w != 0 {
				t.Fatalf("guess %d refused (%s)", i+1, w)
			}
		}
		if w := begin(t, s, "dana", "10.9.9.9", at(time.Minute)); w == 0 {
			t.Fatal("the account is not locked against a new address after its free failures")
		}
		if w := begin(t, s, "dana", "192.0.2.7", at(time.Minute)); w != 0 {
			t.Fatalf("dana's trusted address refused (%s): an attacker could lock her out", w)
		}
		// Trust ends.
		if w := begin(t, s, "dana", "192.0.2.7", at(time.Minute+rules.Trusted+time.Second)); w != 0 {
			t.Fatalf("after trust ended, with old failures forgotten: refused (%s)", w)
		}
	})

	t.Run("SourceLockSparesTrustedPair", func(t *testing.T) {
		s := open(t)
		begin(t, s, "erin", "198.51.100.4", at(0))
		succeed(t, s, "erin", "198.51.100.4", at(0))
		for i := range rules.SourceFree {
			if w := begin(t, s, fmt.Sprintf("user%d", i), "198.51.100.4", at(time.Minute)); w != 0 {
				t.Fatalf("spray %d refused (%s)", i+1, w)
			}
		}
		if w := begin(t, s, "frank", "198.51.100.4", at(time.Minute)); w == 0 {
			t.Fatal("the address is not locked after spraying its free failures")
		}
		if w := begin(t, s, "erin", "198.51.100.4", at(time.Minute)); w != 0 {
			t.Fatalf("erin, trusted at this address, refused (%s)", w)
		}
	})

	t.Run("IPv6CountsPerSlash64", func(t *testing.T) {
		s := open(t)
		for i := range rules.PairFree {
			begin(t, s, "gina", fmt.Sprintf("2001:db8:1:2::%x", i+1), at(0))
		}
		if w := begin(t, s, "gina", "2001:db8:1:2:ffff::1", at(0)); w == 0 {
			t.Fatal("another address of the same /64 escaped the pair's lock")
		}
		if w := begin(t, s, "gina", "2001:db8:1:3::1", at(0)); w != 0 {
			t.Fatalf("another /64 refused (%s)", w)
		}
	})
}
