package console_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/web/console"
)

// storeWrites are the methods by which a store changes something: every
// method of the stores the console could be handed that does not only
// read.
func storeWrites() []string {
	var out []string
	for _, t := range []reflect.Type{
		reflect.TypeFor[broker.LeaseStore](), reflect.TypeFor[broker.AgentStore](),
		reflect.TypeFor[broker.ApprovalStore](), reflect.TypeFor[broker.UserStore](),
		reflect.TypeFor[broker.LoginThrottleStore](), reflect.TypeFor[broker.AuditStore](),
	} {
		for m := range t.Methods() {
			if !readOnlyName(m.Name) {
				out = append(out, m.Name)
			}
		}
	}
	return out
}

// readOnlyName reports whether a method's name says it only reads.
func readOnlyName(name string) bool {
	for _, p := range []string{"Find", "Count", "Scan", "Live", "AuditHead"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// storeFields returns the fields of struct type t whose interface type
// holds a store's write method, as "Field.Method".
func storeFields(t reflect.Type, writes []string) []string {
	var out []string
	for f := range t.Fields() {
		if f.Type.Kind() != reflect.Interface {
			continue
		}
		for m := range f.Type.Methods() {
			if slices.Contains(writes, m.Name) {
				out = append(out, f.Name+"."+m.Name)
			}
		}
	}
	return out
}

// TestReadOnly: the console reads through Reader, which has no method that
// changes anything, and holds no store that could: every change goes
// through a service (the lease and approvals services through Host, and
// Users).
// Host.Audit, the append-only audit log the API records in too, is the one
// write it may make itself (an export is recorded).
func TestReadOnly(t *testing.T) {
	writes := storeWrites()
	if len(writes) < 10 || !slices.Contains(writes, "UpdateLease") || !slices.Contains(writes, "CreateSession") {
		t.Fatalf("store write methods = %v: the list the guard checks against is wrong", writes)
	}
	users := reflect.TypeFor[broker.UserStore]()
	for m := range reflect.TypeFor[console.Reader]().Methods() {
		if !readOnlyName(m.Name) {
			t.Errorf("console.Reader has %s, which does not only read", m.Name)
		}
		// Users and sessions are the users service's (FindSession, for one,
		// moves a session's idle expiry).
		if _, ok := users.MethodByName(m.Name); ok {
			t.Errorf("console.Reader has %s of broker.UserStore: users and sessions go through broker.UserService", m.Name)
		}
	}
	if got := storeFields(reflect.TypeFor[console.Console](), writes); len(got) != 0 {
		t.Errorf("console.Console holds a store that writes: %v", got)
	}
	if got := storeFields(reflect.TypeFor[console.Host](), writes); !slices.Equal(got, []string{"Audit.Record"}) {
		t.Errorf("console.Host's store writes = %v, want only Audit.Record", got)
	}

	// The guard catches a console that is handed a read-write store.
	type leaky struct {
		Reader console.Reader
		Store  interface {
			console.Reader
			broker.LeaseStore
		}
	}
	if got := storeFields(reflect.TypeFor[leaky](), writes); !slices.Contains(got, "Store.UpdateLease") || slices.ContainsFunc(got, func(s string) bool {
		return strings.HasPrefix(s, "Reader.")
	}) {
		t.Errorf("a console struct with a read-write store: flagged %v, want Store.UpdateLease and nothing of Reader", got)
	}
}
