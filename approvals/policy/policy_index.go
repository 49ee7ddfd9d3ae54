package policy

import (
	"math/bits"

	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
)

// The scope index. cedar-go evaluates every policy of a set on every request;
// with a thousand policies that is tens of microseconds. Most policies name
// their principal, action or resource in the scope (principal ==
// Agent::"etl-bot", action == Action::"request", resource is Role), and a
// policy whose scope does not match a request evaluates to false without
// looking at its conditions, so it can neither permit, forbid nor fail. The
// index keeps, for each scope variable, which policies can match a given
// entity, and a request evaluates only the intersection.
//
// Exactness rests on one fact of buildRequest: Stint's entities have no
// parents (and requests contain no action groups), so `x in E` holds exactly
// when x == E. checkSchema refuses schemas that declare parents, and
// TestIndexMatchesFullEvaluation compares both paths over generated sets.

// bitset is a set of policy positions.
type bitset []uint64

func newBitset(n int) bitset { return make(bitset, (n+63)/64) }

func (b bitset) add(i int) { b[i/64] |= 1 << (i % 64) }

// scopeKind is what one scope variable is constrained to.
type scopeKind int

const (
	scopeAny   scopeKind = iota // principal, action, resource unconstrained
	scopeType                   // `is T`
	scopeUIDs                   // `== E`, `in E`, `in [E, F]`, `is T in E` with E of type T
	scopeNever                  // `is T in E` with E not of type T: matches nothing
)

// scopeConstraint is one scope variable's constraint in one policy.
type scopeConstraint struct {
	kind scopeKind
	typ  types.EntityType
	uids []types.EntityUID
}

// constraintOf reads a scope node. Stint's entities have no parents, so
// membership is equality (see above).
func constraintOf(n xast.IsScopeNode) scopeConstraint {
	switch s := n.(type) {
	case xast.ScopeTypeEq:
		return scopeConstraint{kind: scopeUIDs, uids: []types.EntityUID{s.Entity}}
	case xast.ScopeTypeIn:
		return scopeConstraint{kind: scopeUIDs, uids: []types.EntityUID{s.Entity}}
	case xast.ScopeTypeInSet:
		return scopeConstraint{kind: scopeUIDs, uids: s.Entities}
	case xast.ScopeTypeIs:
		return scopeConstraint{kind: scopeType, typ: s.Type}
	case xast.ScopeTypeIsIn:
		if s.Entity.Type != s.Type {
			return scopeConstraint{kind: scopeNever}
		}
		return scopeConstraint{kind: scopeUIDs, uids: []types.EntityUID{s.Entity}}
	}
	// ScopeTypeAll, and anything a later cedar-go adds: evaluate always.
	return scopeConstraint{kind: scopeAny}
}

// dimension indexes one scope variable: for an entity, the policies whose
// constraint on that variable it satisfies.
type dimension struct {
	any    bitset
	byType map[types.EntityType]bitset
	byUID  map[types.EntityUID]bitset
}

func newDimension(cs []scopeConstraint) dimension {
	n := len(cs)
	d := dimension{any: newBitset(n), byType: map[types.EntityType]bitset{}, byUID: map[types.EntityUID]bitset{}}
	for i, c := range cs {
		if c.kind == scopeAny {
			d.any.add(i)
		}
	}
	// byType[T] = unconstrained ∪ `is T`.
	for i, c := range cs {
		if c.kind != scopeType {
			continue
		}
		b, ok := d.byType[c.typ]
		if !ok {
			b = append(bitset(nil), d.any...)
			d.byType[c.typ] = b
		}
		b.add(i)
	}
	// byUID[E] = byType[E's type] ∪ policies naming E.
	for i, c := range cs {
		if c.kind != scopeUIDs {
			continue
		}
		for _, uid := range c.uids {
			b, ok := d.byUID[uid]
			if !ok {
				base, ok := d.byType[uid.Type]
				if !ok {
					base = d.any
				}
				b = append(bitset(nil), base...)
				d.byUID[uid] = b
			}
			b.add(i)
		}
	}
	return d
}

func (d *dimension) lookup(uid types.EntityUID) bitset {
	if b, ok := d.byUID[uid]; ok {
		return b
	}
	if b, ok := d.byType[uid.Type]; ok {
		return b
	}
	return d.any
}

// scopeIndex finds the policies whose scope can match a request.
type scopeIndex struct {
	principal, action, resource dimension
}

func newScopeIndex(policies []*xast.Policy) scopeIndex {
	p := make([]scopeConstraint, len(policies))
	a := make([]scopeConstraint, len(policies))
	r := make([]scopeConstraint, len(policies))
	for i, pol := range policies {
		p[i] = constraintOf(pol.Principal)
		a[i] = constraintOf(pol.Action)
		r[i] = constraintOf(pol.Resource)
	}
	return scopeIndex{principal: newDimension(p), action: newDimension(a), resource: newDimension(r)}
}

// candidates appends to dst, in load order, the positions of the policies
// whose scope can match the request.
func (x *scopeIndex) candidates(dst []int32, principal, action, resource types.EntityUID) []int32 {
	p, a, r := x.principal.lookup(principal), x.action.lookup(action), x.resource.lookup(resource)
	for w := range p {
		word := p[w] & a[w] & r[w]
		for word != 0 {
			dst = append(dst, int32(w*64+bits.TrailingZeros64(word)))
			word &= word - 1
		}
	}
	return dst
}
