package broker_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stint-broker/stint/broker"
)

// TestLeaseTransitions checks the shape of the state machine: nothing
// leaves an end state, every state is reached from pending or issuing (a
// lease's first states), and every refusal is an ETRANSITION error that
// wraps ErrLeaseTransition.
func TestLeaseTransitions(t *testing.T) {
	reached := map[broker.LeaseState]bool{broker.LeasePending: true, broker.LeaseIssuing: true}
	for range broker.LeaseStates {
		for _, from := range broker.LeaseStates {
			for _, to := range broker.LeaseStates {
				if reached[from] && broker.CheckLeaseTransition(from, to) == nil {
					reached[to] = true
				}
			}
		}
	}
	for _, s := range broker.LeaseStates {
		if !reached[s] && s != broker.LeaseDenied { // denied leases are created denied
			t.Errorf("%s is never reached", s)
		}
		for _, to := range broker.LeaseStates {
			err := broker.CheckLeaseTransition(s, to)
			if s.Terminal() && err == nil {
				t.Errorf("%s → %s allowed; nothing leaves an end state", s, to)
			}
			if err == nil {
				if broker.LeaseTransitionActors(s, to) == 0 {
					t.Errorf("%s → %s allowed, but no actor may cause it", s, to)
				}
				continue
			}
			if !errors.Is(err, broker.ErrLeaseTransition) || broker.ErrorCode(err) != broker.ETRANSITION || broker.ErrorMessage(err) == "" {
				t.Errorf("%s → %s: %v; want an ETRANSITION error wrapping ErrLeaseTransition", s, to, err)
			}
		}
	}
	if got := broker.LeaseTransitionActors(broker.LeaseActive, broker.LeaseRevoking).String(); got != "agent|system|security" {
		t.Errorf("active → revoking actors = %s", got)
	}
	if got := broker.LeaseTransitionActors(broker.LeasePending, broker.LeaseApproved).String(); got != "approver" {
		t.Errorf("pending → approved actors = %s", got)
	}
}

func TestCheckLeaseUpdate(t *testing.T) {
	approved := broker.LeaseApproved
	for _, tt := range []struct {
		name string
		cur  broker.LeaseState
		upd  broker.LeaseUpdate
		want error
		code string
	}{
		{"OK", broker.LeasePending, broker.LeaseUpdate{From: []broker.LeaseState{broker.LeasePending}, State: &approved, Actor: "approver:dana@example.com"}, nil, ""},
		{"Note", broker.LeaseActive, broker.LeaseUpdate{From: []broker.LeaseState{broker.LeaseActive}, Actor: "system:issuer"}, nil, ""},
		{"ErrUnguarded", broker.LeasePending, broker.LeaseUpdate{State: &approved}, broker.ErrUnguardedLeaseUpdate, broker.EINTERNAL},
		{"ErrConflict", broker.LeaseActive, broker.LeaseUpdate{From: []broker.LeaseState{broker.LeasePending}, State: &approved}, nil, broker.ECONFLICT},
		{"ErrTransition", broker.LeaseExpired, broker.LeaseUpdate{From: []broker.LeaseState{broker.LeaseExpired}}, broker.ErrLeaseTransition, broker.ETRANSITION},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := broker.CheckLeaseUpdate(tt.cur, &tt.upd)
			if got := broker.ErrorCode(err); got != tt.code {
				t.Errorf("code = %q (%v), want %q", got, err, tt.code)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestErrorUnwrap checks that an *Error's sentinel is found by errors.Is
// through further wrapping, while its text stays the caller-safe message.
func TestErrorUnwrap(t *testing.T) {
	sentinel := errors.New("sentinel")
	err := fmt.Errorf("step: %w", &broker.Error{Code: broker.ECONFLICT, Message: "Safe.", Err: sentinel})
	if !errors.Is(err, sentinel) || broker.ErrorCode(err) != broker.ECONFLICT || broker.ErrorMessage(err) != "Safe." {
		t.Fatalf("err = %v: Is %t, code %s", err, errors.Is(err, sentinel), broker.ErrorCode(err))
	}
	if errors.Is(broker.Errorf(broker.ECONFLICT, "Other."), sentinel) {
		t.Fatal("an *Error without Err matches the sentinel")
	}
}
