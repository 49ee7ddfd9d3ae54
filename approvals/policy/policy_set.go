package policy

import (
	"errors"
	"fmt"
	"iter"
	"maps"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/ast"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
	"github.com/cedar-policy/cedar-go/x/exp/schema"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"

	"github.com/stint-broker/stint/broker"
)

// Policy annotations Stint reads. Others are refused at load, so that a typo
// such as @approval("2") cannot silently lower what a request needs.
const (
	// AnnotationID names the policy in decisions, logs and explanations.
	AnnotationID = "id"
	// AnnotationApprovals is how many approvals a matching permit requires
	// ("0" or absent: none).
	AnnotationApprovals = "approvals"
	// AnnotationApprovers names the group approvals come from.
	AnnotationApprovers = "approvers"
	// AnnotationReason is the sentence shown when the policy decides.
	AnnotationReason = "reason"
	// AnnotationDescription is free text for readers of the policy.
	AnnotationDescription = "description"
)

// MaxApprovals caps @approvals: more distinct approvers than this is a typo.
const MaxApprovals = 10

var knownAnnotations = []string{AnnotationID, AnnotationApprovals, AnnotationApprovers, AnnotationReason, AnnotationDescription}

var policyIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$`)

// Document is one Cedar policy file: its name (used in positions and
// errors) and its text.
type Document struct {
	Name string
	Text []byte
}

// Info describes one loaded policy.
type Info struct {
	// ID is the @id annotation, or file:line:column if it has none.
	ID string `json:"id"`
	// Effect is "permit" or "forbid".
	Effect string `json:"effect"`
	// Position is where the policy starts, file:line:column.
	Position string `json:"position"`
	// Approvals and Approvers are the permit's @approvals and @approvers.
	Approvals int    `json:"approvals,omitempty"`
	Approvers string `json:"approvers,omitempty"`
	// Reason is the @reason annotation, if any.
	Reason string `json:"reason,omitempty"`
	// Annotations are all of the policy's annotations.
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Forbid reports whether the policy is a forbid.
func (p Info) Forbid() bool { return p.Effect == "forbid" }

// compiledPolicy is a loaded policy.
type compiledPolicy struct {
	info Info
	id   cedar.PolicyID
	ast  *ast.Policy
	// conditions is the policy with its scope taken out: what is left to
	// evaluate once the scope index has matched the scope.
	conditions *cedar.Policy
	// reason is the sentence the policy contributes when it decides.
	reason string
}

// policySet is an immutable, validated, indexed policy set.
type policySet struct {
	policies     []compiledPolicy
	byID         map[cedar.PolicyID]int
	index        scopeIndex
	defaultGroup string
	schemaName   string

	// whole are the policies compiled with their scope, for evaluating
	// without the index (tests and the benchmark's baseline); built on
	// first use, so a server holds one compiled copy.
	wholeOnce sync.Once
	whole     []*cedar.Policy
}

// wholePolicies returns the policies compiled as parsed, scope included.
func (s *policySet) wholePolicies() []*cedar.Policy {
	s.wholeOnce.Do(func() {
		s.whole = make([]*cedar.Policy, len(s.policies))
		for i := range s.policies {
			s.whole[i] = cedar.NewPolicyFromAST(s.policies[i].ast)
		}
	})
	return s.whole
}

// compilePolicySet parses docs, reads their annotations, validates every
// policy against the schema, and indexes the set. Errors name the file and
// the position of each bad policy; all problems are reported, not only the
// first.
func compilePolicySet(docs []Document, schemaName string, schemaText []byte, defaultGroup string, trustSchema bool) (*policySet, error) {
	validator, err := loadSchema(schemaName, schemaText, trustSchema)
	if err != nil {
		return nil, err
	}
	s := &policySet{byID: map[cedar.PolicyID]int{}, defaultGroup: defaultGroup, schemaName: schemaName}
	var errs []error
	var asts []*xast.Policy
	for _, doc := range docs {
		list, err := cedar.NewPolicyListFromBytes(doc.Name, doc.Text)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s", doc.Name, strings.ReplaceAll(err.Error(), "<input>", doc.Name)))
			continue
		}
		for _, p := range list {
			info, perrs := readPolicy(p, defaultGroup)
			if v := validator.Policy("", (*xast.Policy)(p.AST())); v != nil {
				perrs = append(perrs, dedupe(v)...)
			}
			if prev, dup := s.byID[cedar.PolicyID(info.ID)]; dup {
				perrs = append(perrs, fmt.Errorf("@id %q is already used by the policy at %s", info.ID, s.policies[prev].info.Position))
			}
			for _, e := range perrs {
				errs = append(errs, fmt.Errorf("%s: policy %s: %w", info.Position, info.ID, e))
			}
			if len(perrs) > 0 {
				continue
			}
			s.byID[cedar.PolicyID(info.ID)] = len(s.policies)
			s.policies = append(s.policies, compiledPolicy{info: info, id: cedar.PolicyID(info.ID), ast: p.AST(),
				conditions: withoutScope(p), reason: reasonOf(info, defaultGroup)})
			asts = append(asts, (*xast.Policy)(p.AST()))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	s.index = newScopeIndex(asts)
	return s, nil
}

// withoutScope returns p with principal, action and resource unconstrained.
// Every policy the scope index selects has a scope that matches the request
// (see policy_index.go), and a matching scope is a true first conjunct, so the
// policy and its conditions alone decide, and fail, alike.
func withoutScope(p *cedar.Policy) *cedar.Policy {
	stripped := *(*xast.Policy)(p.AST())
	stripped.Principal, stripped.Action, stripped.Resource = xast.ScopeTypeAll{}, xast.ScopeTypeAll{}, xast.ScopeTypeAll{}
	return cedar.NewPolicyFromAST((*ast.Policy)(&stripped))
}

// loadSchema parses and resolves a Cedar schema (human-readable format) and
// checks that it describes the requests Stint builds (unless trust, which
// only tests use to stand for a schema that has drifted from the code).
func loadSchema(name string, text []byte, trust bool) (*validate.Validator, error) {
	var sc schema.Schema
	sc.SetFilename(name)
	if err := sc.UnmarshalCedar(text); err != nil {
		return nil, fmt.Errorf("schema %s: %w", name, err)
	}
	res, err := sc.Resolve()
	if err != nil {
		return nil, fmt.Errorf("schema %s: %w", name, err)
	}
	if err := checkSchema(res); err != nil && !trust {
		return nil, fmt.Errorf("schema %s does not describe Stint's requests:\n%w", name, err)
	}
	return validate.New(res, validate.WithStrict()), nil
}

// readPolicy reads a policy's id and Stint's annotations, returning every
// problem with them.
func readPolicy(p *cedar.Policy, defaultGroup string) (Info, []error) {
	pos := p.Position()
	info := Info{
		Effect:      "permit",
		Position:    fmt.Sprintf("%s:%d:%d", pos.Filename, pos.Line, pos.Column),
		Annotations: map[string]string{},
	}
	if p.Effect() == cedar.Forbid {
		info.Effect = "forbid"
	}
	info.ID = info.Position
	var errs []error
	for k, v := range p.Annotations() {
		info.Annotations[string(k)] = string(v)
	}
	keys := make([]string, 0, len(info.Annotations))
	for k := range info.Annotations {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := info.Annotations[k]
		switch k {
		case AnnotationID:
			if !policyIDPattern.MatchString(v) {
				errs = append(errs, fmt.Errorf("@id %q must be 1-128 characters of letters, digits and . _ : / @ -, starting with a letter or digit", v))
				continue
			}
			info.ID = v
		case AnnotationApprovals:
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > MaxApprovals {
				errs = append(errs, fmt.Errorf("@approvals(%q) must be a whole number from 0 to %d", v, MaxApprovals))
				continue
			}
			info.Approvals = n
		case AnnotationApprovers:
			if v == "" || len(v) > 64 || strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
				errs = append(errs, fmt.Errorf("@approvers(%q) must name a group: 1-64 characters without spaces", v))
				continue
			}
			info.Approvers = v
		case AnnotationReason:
			if strings.TrimSpace(v) == "" {
				errs = append(errs, errors.New("@reason must not be empty"))
				continue
			}
			info.Reason = v
		case AnnotationDescription:
		default:
			errs = append(errs, fmt.Errorf("unknown annotation @%s (Stint reads @%s)", k, strings.Join(knownAnnotations, ", @")))
		}
	}
	if info.Forbid() {
		if _, ok := info.Annotations[AnnotationApprovals]; ok {
			errs = append(errs, errors.New("@approvals on a forbid means nothing: a matching forbid denies"))
		}
		if _, ok := info.Annotations[AnnotationApprovers]; ok {
			errs = append(errs, errors.New("@approvers on a forbid means nothing: a matching forbid denies"))
		}
		return info, errs
	}
	switch {
	case info.Approvers != "" && info.Approvals == 0:
		errs = append(errs, fmt.Errorf("@approvers(%q) without @approvals of at least 1 means nothing", info.Approvers))
	case info.Approvals > 0 && info.Approvers == "" && defaultGroup == "":
		errs = append(errs, fmt.Errorf("@approvals(\"%d\") needs an approver group: add @approvers(\"group\") or set policy.default_approver_group", info.Approvals))
	}
	return info, errs
}

// dedupe splits a joined validation error into distinct lines: the validator
// reports a problem once per action the policy applies to.
func dedupe(err error) []error {
	var out []error
	seen := map[string]bool{}
	for _, line := range strings.Split(err.Error(), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		// The same problem for request and for extend reads the same
		// once the action is taken out.
		key := strings.ReplaceAll(strings.ReplaceAll(line, `Action::"extend"`, "ACTION"), `Action::"request"`, "ACTION")
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, errors.New(line))
	}
	return out
}

// policySubset iterates some of a set's policies in load order; it is the
// PolicyIterator cedar.Authorize evaluates. With idx nil it yields every
// policy whole; otherwise the policies at idx, which the scope index
// selected, without their (matching) scope.
type policySubset struct {
	set *policySet
	idx []int32
}

// All implements cedar.PolicyIterator.
func (s policySubset) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		if s.idx == nil {
			for i, whole := range s.set.wholePolicies() {
				if !yield(s.set.policies[i].id, whole) {
					return
				}
			}
			return
		}
		for _, i := range s.idx {
			p := &s.set.policies[i]
			if !yield(p.id, p.conditions) {
				return
			}
		}
	}
}

// evaluation is the raw result of evaluating a request.
type evaluation struct {
	decision cedar.Decision
	diag     cedar.Diagnostic
	// evaluated is how many policies were evaluated (the index's candidates).
	evaluated int
	// candidates are the positions the index selected (nil if unindexed).
	candidates []int32
}

// evaluate runs Cedar over the policies whose scope can match the request
// (all of them if !indexed). buf is scratch space for candidate positions.
func (s *policySet) evaluate(r cedarRequest, indexed bool, buf []int32) evaluation {
	sub := policySubset{set: s}
	n := len(s.policies)
	if indexed {
		sub.idx = s.index.candidates(buf[:0], r.req.Principal, r.req.Action, r.req.Resource)
		n = len(sub.idx)
		if sub.idx == nil {
			sub.idx = []int32{}
		}
	}
	d, diag := cedar.Authorize(sub, r.entities, r.req)
	return evaluation{decision: d, diag: diag, evaluated: n, candidates: sub.idx}
}

// decide turns an evaluation into Stint's decision (see the package doc):
// an error or a matching forbid denies, no matching permit denies, and
// otherwise the largest @approvals among the matching permits decides.
func (s *policySet) decide(ev evaluation, req broker.DecisionRequest) broker.Decision {
	deny := broker.Decision{Outcome: broker.OutcomeDeny}
	if ev.decision == cedar.Deny {
		// Reasons of a Deny are the forbids that matched.
		for _, r := range ev.diag.Reasons {
			p := s.policy(r.PolicyID)
			deny.PolicyIDs = append(deny.PolicyIDs, p.info.ID)
			deny.Reasons = append(deny.Reasons, p.reason)
		}
	}
	for _, e := range ev.diag.Errors {
		p := s.policy(e.PolicyID)
		deny.PolicyIDs = append(deny.PolicyIDs, p.info.ID)
		deny.Reasons = append(deny.Reasons, fmt.Sprintf(
			"Policy %s (%s) could not be evaluated: %s. A request policy cannot decide is denied.", p.info.ID, p.info.Position, e.Message))
	}
	if len(deny.PolicyIDs) > 0 {
		return deny
	}
	if ev.decision == cedar.Deny {
		deny.Reasons = []string{fmt.Sprintf("No policy permits %s.", subjectOf(req))}
		return deny
	}

	// Allowed: the determining permits are those that set the largest
	// @approvals; the group is the first of them naming one. Cedar reports
	// the permits in the order it evaluated them, which is load order.
	most := 0
	for _, r := range ev.diag.Reasons {
		most = max(most, s.policy(r.PolicyID).info.Approvals)
	}
	d := broker.Decision{Outcome: broker.OutcomeApprove}
	for _, r := range ev.diag.Reasons {
		p := s.policy(r.PolicyID)
		if p.info.Approvals != most {
			continue
		}
		d.PolicyIDs = append(d.PolicyIDs, p.info.ID)
		d.Reasons = append(d.Reasons, p.reason)
		if most > 0 && d.ApproverGroup == "" && p.info.Approvers != "" {
			d.ApproverGroup = p.info.Approvers
		}
	}
	if most > 0 {
		d.Outcome, d.Approvals = broker.OutcomeApprovals, most
		if d.ApproverGroup == "" {
			d.ApproverGroup = s.defaultGroup
		}
	}
	return d
}

// policy returns a policy by its Cedar id. Every id Cedar reports is one of
// the set's; were one not, it is treated as a failing forbid.
func (s *policySet) policy(id cedar.PolicyID) *compiledPolicy {
	if i, ok := s.byID[id]; ok {
		return &s.policies[i]
	}
	return &compiledPolicy{info: Info{ID: string(id), Effect: "forbid", Position: "unknown"},
		reason: fmt.Sprintf("Policy %s is not in the policy set; the request is denied.", id)}
}

// reasonOf is the sentence a deciding policy contributes: its @reason, or one
// generated from its effect and annotations.
func reasonOf(p Info, defaultGroup string) string {
	if p.Reason != "" {
		return p.Reason
	}
	switch {
	case p.Forbid():
		return fmt.Sprintf("Policy %s forbids this request.", p.ID)
	case p.Approvals == 0:
		return fmt.Sprintf("Policy %s permits this request without approval.", p.ID)
	}
	group := p.Approvers
	if group == "" {
		group = defaultGroup
	}
	noun := "approvals"
	if p.Approvals == 1 {
		noun = "approval"
	}
	return fmt.Sprintf("Policy %s permits this request with %d %s from %s.", p.ID, p.Approvals, noun, group)
}

// infos returns every policy's info in load order.
func (s *policySet) infos() []Info {
	out := make([]Info, len(s.policies))
	for i := range s.policies {
		out[i] = s.policies[i].info.clone()
	}
	return out
}

// clone returns a copy that shares nothing with the loaded set.
func (p Info) clone() Info {
	p.Annotations = maps.Clone(p.Annotations)
	return p
}
