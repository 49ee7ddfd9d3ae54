package policy_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/stint-broker/stint/approvals/policy"
	"github.com/stint-broker/stint/broker"
)

// FuzzPolicyRequest builds Cedar requests from arbitrary request fields (an
// agent's name and labels, a role, task text, the user acted for, the
// source address, the window, the risk score, the clock) and decides them
// with the example policies. Whatever the input: building never panics; a
// request that cannot be built is denied, never granted (fail closed); the
// scope index picks the same decision as evaluating every policy; and an
// agent the role's selector does not match is never granted by the
// example set. The seed corpus is in testdata/fuzz/FuzzPolicyRequest.
func FuzzPolicyRequest(f *testing.F) {
	f.Add("etl-bot", "team", "data", "db-readonly", "nightly report", "bob@example.com", "10.1.2.3", int64(30*time.Minute), 0, int64(0), uint8(0))
	f.Add("etl-bot", "team", "data", "db-admin", "migrate", "", "::1", int64(time.Hour), 95, int64(3*time.Hour), uint8(3))
	f.Add("Bad Name", "", "", "", "\x1b[31m\u202e", "", "not-an-ip", int64(-1), -5, int64(-1<<62), uint8(255))
	f.Add("a", "team", "*", "root-token", "x", "😀", "300.1.1.1/33", int64(1<<62), 1<<30, int64(1<<40), uint8(6))
	p, err := policy.New(policy.Config{
		Files: policy.ExamplePolicyFiles, FS: policy.ExamplePolicies,
		Location: berlin, DefaultApproverGroup: "approvers",
	})
	if err != nil {
		f.Fatalf("load example policies: %v", err)
	}
	roles := []*broker.Role{lowRole, mediumRole, highRole, criticalRole}
	f.Fuzz(func(t *testing.T, agent, labelKey, labelValue, role, task, onBehalfOf, sourceIP string, ttlNanos int64, riskScore int, clock int64, flags uint8) {
		r := request(roles[int(flags)%len(roles)])
		if role != "" {
			rc := *r.Role
			rc.Name = role
			r.Role = &rc
		}
		r.Agent.Name = agent
		r.Agent.Labels = map[string]string{labelKey: labelValue}
		r.Task, r.Justification, r.OnBehalfOf, r.SourceIP = task, task, onBehalfOf, sourceIP
		r.TTL, r.RiskScore = time.Duration(ttlNanos), riskScore
		r.Time = wednesdayNoon.Add(time.Duration(clock))
		r.Breakglass = flags&0x10 != 0
		if flags&0x20 != 0 {
			r.Action = broker.ActionExtend
		}
		if flags&0x40 != 0 {
			r.AuthMethod = broker.AuthMTLS
		}
		r.ActiveRoles = []string{labelValue, role}

		_, _, buildErr := policy.BuildRequest(r, berlin)
		d, err := p.Decide(context.Background(), r)
		if err != nil {
			t.Fatalf("Decide returned an error (it must fail closed with a denial): %v", err)
		}
		switch d.Outcome {
		case broker.OutcomeApprove, broker.OutcomeDeny:
		case broker.OutcomeApprovals:
			if d.Approvals < 1 || d.ApproverGroup == "" {
				t.Fatalf("approvals without a count or group: %+v", d)
			}
		default:
			t.Fatalf("unknown outcome %q", d.Outcome)
		}
		if buildErr != nil && d.Outcome != broker.OutcomeDeny {
			t.Fatalf("request that cannot be built (%v) decided %+v, want a denial", buildErr, d)
		}
		if full := p.DecideUnindexed(r); !reflect.DeepEqual(d, full) {
			t.Fatalf("indexed decision %+v differs from evaluating every policy %+v", d, full)
		}
		if d.Outcome == broker.OutcomeApprove && !r.Role.EligibleFor(r.Agent) {
			t.Fatalf("an ineligible agent granted: %+v", d)
		}
	})
}
