package governance

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/stint-broker/stint/broker"
)

// CheckConflictSets validates separation-of-duty configuration against the
// roles. Both kinds of sets name roles that no agent may hold live leases
// on at the same time (the lease store checks it in the transaction that
// makes a lease live). They differ in what is checked at load:
//
//   - strict sets (sod.conflicts) must also be separated by eligibility:
//     no agent may be eligible for two roles of a set. Two label selectors
//     can match the same agent unless some label key appears in both with
//     different fixed values (team=finance and team=treasury can never
//     both hold; team=finance and team="*", or a selector without the key
//     — an empty selector matches every agent — can). Such a pair is
//     refused, naming both roles and their selectors;
//   - dynamic sets (sod.dynamic_conflicts) allow one agent to be eligible
//     for both roles — it may hold either, never both at once.
//
// Every set needs at least two distinct, defined roles. The error names
// every problem found.
func CheckConflictSets(roles []*broker.Role, strict, dynamic broker.ConflictSets) error {
	byName := make(map[string]*broker.Role, len(roles))
	for _, r := range roles {
		if r != nil {
			byName[r.Name] = r
		}
	}
	var errs []error
	check := func(key string, sets broker.ConflictSets, eligibility bool) {
		for i, set := range sets {
			where := fmt.Sprintf("%s[%d]", key, i)
			if len(set) < 2 {
				errs = append(errs, fmt.Errorf("%s: a conflict set names at least two roles", where))
				continue
			}
			for j, name := range set {
				switch {
				case byName[name] == nil:
					errs = append(errs, fmt.Errorf("%s: role %q is not defined", where, name))
				case slices.Contains(set[:j], name):
					errs = append(errs, fmt.Errorf("%s: role %q is listed twice", where, name))
				}
			}
			if !eligibility {
				continue
			}
			for j, a := range set {
				for _, b := range set[j+1:] {
					ra, rb := byName[a], byName[b]
					if ra == nil || rb == nil || a == b {
						continue
					}
					if SelectorsOverlap(ra.Eligible, rb.Eligible) {
						errs = append(errs, fmt.Errorf("separation of duty: roles %q and %q conflict (%s), but one agent can be eligible for both: "+
							"their eligible selectors {%s} and {%s} can match the same agent; require different values of one label "+
							"(e.g. team=finance and team=treasury), or move the pair to sod.dynamic_conflicts to allow eligibility for both while never holding both at once",
							a, b, where, selectorText(ra.Eligible), selectorText(rb.Eligible)))
					}
				}
			}
		}
	}
	check("sod.conflicts", strict, true)
	check("sod.dynamic_conflicts", dynamic, false)
	return errors.Join(errs...)
}

// SelectorsOverlap reports whether one agent can carry labels satisfying
// both eligibility selectors: they overlap unless a key they share has
// different fixed values ("*" matches any value).
func SelectorsOverlap(a, b map[string]string) bool {
	for k, va := range a {
		vb, ok := b[k]
		if ok && va != "*" && vb != "*" && va != vb {
			return false
		}
	}
	return true
}

// selectorText renders a selector for messages: "" is "everyone".
func selectorText(sel map[string]string) string {
	if len(sel) == 0 {
		return "everyone"
	}
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + sel[k]
	}
	return strings.Join(keys, ",")
}

// AllConflicts joins strict and dynamic sets: the sets the lease store
// enforces at activation.
func AllConflicts(strict, dynamic broker.ConflictSets) broker.ConflictSets {
	out := make(broker.ConflictSets, 0, len(strict)+len(dynamic))
	out = append(out, strict...)
	return append(out, dynamic...)
}
