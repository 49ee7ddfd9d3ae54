package policy_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/stint-broker/stint/broker"
)

// policyGen writes random policy sets and requests over agents agent-0 … and
// roles role-0 …, for the index equivalence test and the benchmark.
type policyGen struct {
	rng            *rand.Rand
	agents, roles  int
	sensitivities  []broker.Sensitivity
	authMethods    []string
	allScopeForms  bool // every scope form the validator accepts
	erroringShare  int  // one policy in erroringShare may fail at evaluation (0: none)
	unscopedShare  int  // percent of policies with an unconstrained scope
	forbidShare    int  // percent of forbids
	approvalsShare int  // percent of permits needing approvals
	typeShare      int  // percent of scoped principals and resources given as `is T` rather than an entity
}

func (g *policyGen) agent(i int) string { return fmt.Sprintf("agent-%d", i) }
func (g *policyGen) role(i int) string  { return fmt.Sprintf("role-%d", i) }

func (g *policyGen) principalScope() string {
	if g.rng.IntN(100) < g.unscopedShare {
		return "principal"
	}
	a := g.agent(g.rng.IntN(g.agents))
	if g.rng.IntN(100) < g.typeShare {
		return "principal is Agent"
	}
	forms := []string{fmt.Sprintf("principal == Agent::%q", a)}
	if g.allScopeForms {
		forms = append(forms,
			fmt.Sprintf("principal in Agent::%q", a),
			fmt.Sprintf("principal is Agent in Agent::%q", a),
		)
	}
	return forms[g.rng.IntN(len(forms))]
}

func (g *policyGen) actionScope() string {
	if g.rng.IntN(100) < g.unscopedShare {
		return "action"
	}
	forms := []string{
		`action == Action::"request"`,
		`action in [Action::"request", Action::"extend"]`,
		`action == Action::"extend"`,
	}
	if g.allScopeForms {
		forms = append(forms, `action in Action::"request"`, `action in [Action::"extend"]`)
	}
	return forms[g.rng.IntN(len(forms))]
}

func (g *policyGen) resourceScope() string {
	if g.rng.IntN(100) < g.unscopedShare {
		return "resource"
	}
	r := g.role(g.rng.IntN(g.roles))
	if g.rng.IntN(100) < g.typeShare {
		return "resource is Role"
	}
	forms := []string{fmt.Sprintf("resource == Role::%q", r)}
	if g.allScopeForms {
		forms = append(forms,
			fmt.Sprintf("resource in Role::%q", r),
			fmt.Sprintf("resource is Role in Role::%q", r),
		)
	}
	return forms[g.rng.IntN(len(forms))]
}

func (g *policyGen) condition() string {
	conds := []string{
		fmt.Sprintf("context.ttl_seconds <= %d", 600*(1+g.rng.IntN(12))),
		fmt.Sprintf("context.hour >= %d && context.hour < %d", g.rng.IntN(12), 12+g.rng.IntN(12)),
		fmt.Sprintf("context.weekday <= %d", 1+g.rng.IntN(7)),
		fmt.Sprintf("context.risk_score >= %d", g.rng.IntN(100)),
		fmt.Sprintf("resource.sensitivity == %q", g.sensitivities[g.rng.IntN(len(g.sensitivities))]),
		fmt.Sprintf("resource.sensitivity_rank <= %d", 1+g.rng.IntN(4)),
		fmt.Sprintf("principal.auth_method == %q", g.authMethods[g.rng.IntN(len(g.authMethods))]),
		`principal.hasTag("team") && principal.getTag("team") == "data"`,
		fmt.Sprintf("context.active_roles.contains(%q)", g.role(g.rng.IntN(g.roles))),
		`context has source_ip && context.source_ip.isInRange(ip("10.0.0.0/8"))`,
		"context.eligible",
		"context.justification_given",
	}
	n := 1 + g.rng.IntN(3)
	out := make([]string, n)
	for i := range out {
		out[i] = conds[g.rng.IntN(len(conds))]
	}
	if g.erroringShare > 0 && g.rng.IntN(g.erroringShare) == 0 {
		// Overflows when risk_score >= 2.
		out = append(out, "context.risk_score * 4611686018427387904 < 100")
	}
	return strings.Join(out, " && ")
}

// policies returns n policies as one Cedar document.
func (g *policyGen) policies(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "@id(\"p%d\")\n", i)
		effect := "permit"
		if g.rng.IntN(100) < g.forbidShare {
			effect = "forbid"
		} else if g.rng.IntN(100) < g.approvalsShare {
			fmt.Fprintf(&b, "@approvals(\"%d\")\n", 1+g.rng.IntN(3))
			if g.rng.IntN(2) == 0 {
				fmt.Fprintf(&b, "@approvers(\"group-%d\")\n", g.rng.IntN(5))
			}
		}
		fmt.Fprintf(&b, "%s (%s, %s, %s)\nwhen { %s };\n\n", effect, g.principalScope(), g.actionScope(), g.resourceScope(), g.condition())
	}
	return b.String()
}

// request returns a random request; roles are built once per index.
func (g *policyGen) request(roles []*broker.Role) broker.DecisionRequest {
	action := broker.ActionRequest
	if g.rng.IntN(4) == 0 {
		action = broker.ActionExtend
	}
	var active []string
	for range g.rng.IntN(3) {
		active = append(active, g.role(g.rng.IntN(g.roles)))
	}
	// Some agents and roles are named by no policy's scope.
	agent := g.rng.IntN(g.agents + g.agents/4 + 1)
	// An agent's labels are its own: a third each team=data, team=ml, none.
	labels := map[string]string{}
	if t := agent % 3; t < 2 {
		labels["team"] = []string{"data", "ml"}[t]
	}
	src := ""
	if g.rng.IntN(3) > 0 {
		src = fmt.Sprintf("%d.1.2.3", []int{10, 192}[g.rng.IntN(2)])
	}
	return broker.DecisionRequest{
		Action: action,
		Agent: &broker.Agent{ID: fmt.Sprintf("id-%d", agent), Name: g.agent(agent),
			Owner: "owner@example.com", Labels: labels},
		Role:          roles[g.rng.IntN(len(roles))],
		TTL:           time.Duration(1+g.rng.IntN(120)) * time.Minute,
		Task:          "generated",
		Justification: []string{"", "because"}[g.rng.IntN(2)],
		AuthMethod:    g.authMethods[g.rng.IntN(len(g.authMethods))],
		SourceIP:      src,
		Time:          time.Date(2030, 1, 7+g.rng.IntN(7), g.rng.IntN(24), 0, 0, 0, time.UTC),
		RiskScore:     g.rng.IntN(101),
		ActiveRoles:   active,
	}
}

func (g *policyGen) roleSet() []*broker.Role {
	roles := make([]*broker.Role, g.roles+g.roles/4+1)
	for i := range roles {
		roles[i] = &broker.Role{
			Name: g.role(i), Kind: broker.KindDatabase, Sensitivity: g.sensitivities[i%len(g.sensitivities)],
			DefaultTTL: 15 * time.Minute, MaxTTL: time.Duration(1+i%4) * time.Hour,
		}
		if i%3 == 0 {
			roles[i].Eligible = map[string]string{"team": "data"}
		}
	}
	return roles
}

func newPolicyGen(seed uint64) *policyGen {
	return &policyGen{
		typeShare:     50,
		rng:           rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		sensitivities: []broker.Sensitivity{broker.SensitivityLow, broker.SensitivityMedium, broker.SensitivityHigh, broker.SensitivityCritical},
		authMethods:   []string{broker.AuthAPIKey, broker.AuthMTLS, broker.AuthPrivateKeyJWT},
	}
}
