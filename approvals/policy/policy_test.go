package policy_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	_ "time/tzdata"

	"github.com/cedar-policy/cedar-go"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
	"github.com/cedar-policy/cedar-go/x/exp/schema"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"

	"github.com/stint-broker/stint/approvals/policy"
	"github.com/stint-broker/stint/broker"
)

var berlin = mustLocation("Europe/Berlin")

func mustLocation(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return loc
}

// Roles of the decision tables.
var (
	lowRole = &broker.Role{Name: "db-readonly", Kind: broker.KindDatabase, Sensitivity: broker.SensitivityLow,
		DefaultTTL: 15 * time.Minute, MaxTTL: 4 * time.Hour, Eligible: map[string]string{"team": "data"}, AutoApprove: true}
	mediumRole = &broker.Role{Name: "vault-token", Kind: broker.KindToken, Sensitivity: broker.SensitivityMedium,
		DefaultTTL: 15 * time.Minute, MaxTTL: time.Hour}
	highRole = &broker.Role{Name: "db-admin", Kind: broker.KindDatabase, Sensitivity: broker.SensitivityHigh,
		DefaultTTL: 15 * time.Minute, MaxTTL: time.Hour}
	criticalRole = &broker.Role{Name: "root-token", Kind: broker.KindToken, Sensitivity: broker.SensitivityCritical,
		DefaultTTL: 10 * time.Minute, MaxTTL: 30 * time.Minute}
)

// wednesdayNoon is a Wednesday, 12:00 in Berlin.
var wednesdayNoon = time.Date(2030, 1, 9, 12, 0, 0, 0, berlin)

// request is a request by etl-bot (team=data, API key) for 30 minutes on a
// Wednesday at noon in Berlin, changed by opts.
func request(role *broker.Role, opts ...func(*broker.DecisionRequest)) broker.DecisionRequest {
	r := broker.DecisionRequest{
		Action: broker.ActionRequest,
		Agent: &broker.Agent{ID: "0190a0a0-0000-7000-8000-000000000001", Name: "etl-bot", Owner: "alice@example.com",
			Labels: map[string]string{"team": "data"}, State: broker.AgentActive},
		Role:       role,
		TTL:        30 * time.Minute,
		Task:       "nightly report",
		AuthMethod: broker.AuthAPIKey,
		SourceIP:   "10.1.2.3",
		Time:       wednesdayNoon,
	}
	for _, o := range opts {
		o(&r)
	}
	return r
}

func ttl(d time.Duration) func(*broker.DecisionRequest) {
	return func(r *broker.DecisionRequest) { r.TTL = d }
}
func risk(n int) func(*broker.DecisionRequest) {
	return func(r *broker.DecisionRequest) { r.RiskScore = n }
}
func auth(m string) func(*broker.DecisionRequest) {
	return func(r *broker.DecisionRequest) { r.AuthMethod = m }
}
func at(t time.Time) func(*broker.DecisionRequest) {
	return func(r *broker.DecisionRequest) { r.Time = t }
}
func labels(kv ...string) func(*broker.DecisionRequest) {
	return func(r *broker.DecisionRequest) {
		r.Agent.Labels = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			r.Agent.Labels[kv[i]] = kv[i+1]
		}
	}
}
func extend(r *broker.DecisionRequest) { r.Action = broker.ActionExtend }

// examplePolicy loads the shipped example policies with Berlin time.
func examplePolicy(tb testing.TB) *policy.Engine {
	tb.Helper()
	p, err := policy.New(policy.Config{
		Files: policy.ExamplePolicyFiles, FS: policy.ExamplePolicies,
		Location: berlin, DefaultApproverGroup: "approvers",
	})
	if err != nil {
		tb.Fatalf("load example policies: %v", err)
	}
	return p
}

func decide(tb testing.TB, p *policy.Engine, r broker.DecisionRequest) broker.Decision {
	tb.Helper()
	d, err := p.Decide(context.Background(), r)
	if err != nil {
		tb.Fatalf("Decide returned an error: %v", err)
	}
	return d
}

// TestPolicyExamples is the decision table for every example rule.
func TestPolicyExamples(t *testing.T) {
	p := examplePolicy(t)
	tuesday := func(h, m int) time.Time { return time.Date(2030, 1, 8, h, m, 0, 0, berlin) }
	for _, tt := range []struct {
		name      string
		req       broker.DecisionRequest
		outcome   broker.Outcome
		approvals int
		group     string
		policies  []string
	}{
		{"LowShortAutoApproves", request(lowRole), broker.OutcomeApprove, 0, "", []string{"low-short-auto"}},
		{"LowExactlyOneHourAutoApproves", request(lowRole, ttl(time.Hour)), broker.OutcomeApprove, 0, "", []string{"low-short-auto"}},
		{"LowLongNeedsOne", request(lowRole, ttl(2*time.Hour)), broker.OutcomeApprovals, 1, "approvers", []string{"low-long-one-approval"}},
		{"LowExtendAutoApproves", request(lowRole, extend), broker.OutcomeApprove, 0, "", []string{"low-short-auto"}},
		{"MediumNeedsOne", request(mediumRole), broker.OutcomeApprovals, 1, "approvers", []string{"medium-one-approval"}},
		{"HighNeedsTwoFromSecurity", request(highRole, auth(broker.AuthMTLS)), broker.OutcomeApprovals, 2, "security", []string{"high-two-security"}},
		{"HighPrivateKeyJWT", request(highRole, auth(broker.AuthPrivateKeyJWT)), broker.OutcomeApprovals, 2, "security", []string{"high-two-security"}},
		{"HighWithAPIKeyDenied", request(highRole), broker.OutcomeDeny, 0, "", []string{"deny-weak-auth-high"}},
		{"HighWithClientSecretDenied", request(highRole, auth(broker.AuthClientSecret)), broker.OutcomeDeny, 0, "", []string{"deny-weak-auth-high"}},
		{"CriticalInBusinessHours", request(criticalRole, auth(broker.AuthMTLS), at(tuesday(10, 0))), broker.OutcomeApprovals, 2, "security", []string{"critical-two-security"}},
		{"CriticalAt0900", request(criticalRole, auth(broker.AuthMTLS), at(tuesday(9, 0))), broker.OutcomeApprovals, 2, "security", []string{"critical-two-security"}},
		{"CriticalAt1759", request(criticalRole, auth(broker.AuthMTLS), at(tuesday(17, 59))), broker.OutcomeApprovals, 2, "security", []string{"critical-two-security"}},
		{"CriticalAt0859Denied", request(criticalRole, auth(broker.AuthMTLS), at(tuesday(8, 59))), broker.OutcomeDeny, 0, "", []string{"deny-critical-off-hours"}},
		{"CriticalAt1800Denied", request(criticalRole, auth(broker.AuthMTLS), at(tuesday(18, 0))), broker.OutcomeDeny, 0, "", []string{"deny-critical-off-hours"}},
		{"CriticalSaturdayDenied", request(criticalRole, auth(broker.AuthMTLS), at(time.Date(2030, 1, 12, 11, 0, 0, 0, berlin))), broker.OutcomeDeny, 0, "", []string{"deny-critical-off-hours"}},
		{"CriticalSundayDenied", request(criticalRole, auth(broker.AuthMTLS), at(time.Date(2030, 1, 13, 11, 0, 0, 0, berlin))), broker.OutcomeDeny, 0, "", []string{"deny-critical-off-hours"}},
		// 08:30 UTC is 09:30 in Berlin: the hour is read in policy.timezone.
		{"CriticalHourInConfiguredZone", request(criticalRole, auth(broker.AuthMTLS), at(time.Date(2030, 1, 8, 8, 30, 0, 0, time.UTC))), broker.OutcomeApprovals, 2, "security", []string{"critical-two-security"}},
		// 17:30 UTC is 18:30 in Berlin.
		{"CriticalOffHoursInConfiguredZone", request(criticalRole, auth(broker.AuthMTLS), at(time.Date(2030, 1, 8, 17, 30, 0, 0, time.UTC))), broker.OutcomeDeny, 0, "", []string{"deny-critical-off-hours"}},
		{"CriticalSaturdayWithAPIKeyDeniedTwice", request(criticalRole, at(time.Date(2030, 1, 12, 11, 0, 0, 0, berlin))), broker.OutcomeDeny, 0, "", []string{"deny-critical-off-hours", "deny-weak-auth-high"}},
		{"OverMaxTTLDenied", request(mediumRole, ttl(2*time.Hour)), broker.OutcomeDeny, 0, "", []string{"deny-over-max-ttl"}},
		{"OverMaxTTLByOneSecondDenied", request(lowRole, ttl(4*time.Hour+time.Second)), broker.OutcomeDeny, 0, "", []string{"deny-over-max-ttl"}},
		{"IneligibleDenied", request(lowRole, labels("team", "ml")), broker.OutcomeDeny, 0, "", []string{"deny-ineligible"}},
		{"UnlabelledDenied", request(lowRole, labels()), broker.OutcomeDeny, 0, "", []string{"deny-ineligible"}},
		{"Risk39NoStepUp", request(lowRole, risk(39)), broker.OutcomeApprove, 0, "", []string{"low-short-auto"}},
		{"Risk40LowShortNeedsOne", request(lowRole, risk(40)), broker.OutcomeApprovals, 1, "approvers", []string{"risk-step-up-low-short"}},
		{"Risk40LowLongNeedsTwo", request(lowRole, risk(40), ttl(2*time.Hour)), broker.OutcomeApprovals, 2, "approvers", []string{"risk-step-up-low-long"}},
		{"Risk40MediumNeedsTwo", request(mediumRole, risk(40)), broker.OutcomeApprovals, 2, "approvers", []string{"risk-step-up-medium"}},
		{"Risk79HighNeedsThreeFromSecurity", request(highRole, risk(79), auth(broker.AuthMTLS)), broker.OutcomeApprovals, 3, "security", []string{"risk-step-up-high"}},
		{"Risk80Denied", request(lowRole, risk(80)), broker.OutcomeDeny, 0, "", []string{"deny-high-risk"}},
		{"Risk100Denied", request(mediumRole, risk(100)), broker.OutcomeDeny, 0, "", []string{"deny-high-risk"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := decide(t, p, tt.req)
			if d.Outcome != tt.outcome || d.Approvals != tt.approvals || d.ApproverGroup != tt.group {
				t.Errorf("got %s/%d/%q, want %s/%d/%q (reasons %q)", d.Outcome, d.Approvals, d.ApproverGroup,
					tt.outcome, tt.approvals, tt.group, d.Reasons)
			}
			got := slices.Sorted(slices.Values(d.PolicyIDs))
			if !slices.Equal(got, tt.policies) {
				t.Errorf("policies %q, want %q", got, tt.policies)
			}
			if len(d.Reasons) != len(d.PolicyIDs) || slices.Contains(d.Reasons, "") {
				t.Errorf("reasons %q should explain each of %q", d.Reasons, d.PolicyIDs)
			}
		})
	}
}

// TestPolicyReasons checks the sentences decisions carry.
func TestPolicyReasons(t *testing.T) {
	p := examplePolicy(t)
	t.Run("Annotation", func(t *testing.T) {
		d := decide(t, p, request(highRole))
		if want := "High and critical roles require authentication by mTLS or private_key_jwt."; !slices.Equal(d.Reasons, []string{want}) {
			t.Errorf("reasons %q, want [%q]", d.Reasons, want)
		}
	})
	t.Run("NoPermit", func(t *testing.T) {
		q, err := policy.NewFromDocuments([]policy.Document{{Name: "p.cedar", Text: []byte(
			`permit (principal, action, resource is Role) when { resource.sensitivity == "low" };`)}}, nil, policy.Config{})
		if err != nil {
			t.Fatal(err)
		}
		d := decide(t, q, request(mediumRole, extend))
		want := "No policy permits agent etl-bot to extend a lease on role vault-token."
		if d.Outcome != broker.OutcomeDeny || len(d.PolicyIDs) != 0 || !slices.Equal(d.Reasons, []string{want}) {
			t.Errorf("got %+v, want deny with %q", d, want)
		}
	})
	t.Run("Generated", func(t *testing.T) {
		q, err := policy.NewFromDocuments([]policy.Document{{Name: "p.cedar", Text: []byte(`
@approvals("2")
permit (principal, action, resource);
@id("no-ml") forbid (principal, action, resource) when { principal.hasTag("team") && principal.getTag("team") == "ml" };
`)}}, nil, policy.Config{DefaultApproverGroup: "ops"})
		if err != nil {
			t.Fatal(err)
		}
		d := decide(t, q, request(lowRole))
		if d.Outcome != broker.OutcomeApprovals || d.Approvals != 2 || d.ApproverGroup != "ops" ||
			!slices.Equal(d.PolicyIDs, []string{"p.cedar:2:1"}) ||
			!slices.Equal(d.Reasons, []string{"Policy p.cedar:2:1 permits this request with 2 approvals from ops."}) {
			t.Errorf("got %+v", d)
		}
		d = decide(t, q, request(lowRole, labels("team", "ml")))
		if d.Outcome != broker.OutcomeDeny || !slices.Equal(d.Reasons, []string{"Policy no-ml forbids this request."}) {
			t.Errorf("got %+v", d)
		}
	})
	t.Run("GroupOfTheFirstDeterminingPermitNamingOne", func(t *testing.T) {
		q, err := policy.NewFromDocuments([]policy.Document{{Name: "p.cedar", Text: []byte(`
@id("a") @approvals("1") @approvers("ops") permit (principal, action, resource);
@id("b") @approvals("2") permit (principal, action, resource);
@id("c") @approvals("2") @approvers("security") permit (principal, action, resource);
@id("d") @approvals("2") @approvers("dba") permit (principal, action, resource);
`)}}, nil, policy.Config{DefaultApproverGroup: "approvers"})
		if err != nil {
			t.Fatal(err)
		}
		d := decide(t, q, request(lowRole))
		if d.Approvals != 2 || d.ApproverGroup != "security" || !slices.Equal(d.PolicyIDs, []string{"b", "c", "d"}) {
			t.Errorf("got %+v, want 2 from security by b, c, d", d)
		}
	})
}

// TestPolicyFailClosed: whatever goes wrong denies, with the reason.
func TestPolicyFailClosed(t *testing.T) {
	permitAll := `@id("permit-all") permit (principal, action, resource);`
	load := func(t *testing.T, text string) *policy.Engine {
		t.Helper()
		p, err := policy.NewFromDocuments([]policy.Document{{Name: "p.cedar", Text: []byte(text)}}, nil, policy.Config{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	wantDeny := func(t *testing.T, d broker.Decision, policies []string, reason string) {
		t.Helper()
		if d.Outcome != broker.OutcomeDeny {
			t.Fatalf("outcome %s, want deny (%+v)", d.Outcome, d)
		}
		if !slices.Equal(d.PolicyIDs, policies) {
			t.Errorf("policies %q, want %q", d.PolicyIDs, policies)
		}
		if !slices.ContainsFunc(d.Reasons, func(s string) bool { return strings.Contains(s, reason) }) {
			t.Errorf("reasons %q lack %q", d.Reasons, reason)
		}
	}

	t.Run("EmptyPolicySet", func(t *testing.T) {
		p := load(t, "// no policies yet\n")
		if n := len(p.Policies()); n != 0 {
			t.Fatalf("%d policies", n)
		}
		wantDeny(t, decide(t, p, request(lowRole)), nil, "No policy permits agent etl-bot to request role db-readonly.")
	})

	// risk_score * 2^63-1 overflows for any score of 2 or more: the policy
	// validates but fails at evaluation.
	overflowingForbid := `@id("overflowing-forbid") forbid (principal, action, resource) when { context.risk_score * 9223372036854775807 > 100 };`
	t.Run("ErrorInForbid", func(t *testing.T) {
		text := permitAll + "\n" + overflowingForbid
		p := load(t, text)
		// cedar-go on its own skips the failing forbid and allows: the
		// fail-open this guards against.
		ps, err := cedar.NewPolicySetFromBytes("p.cedar", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		req, entities, err := policy.BuildRequest(request(lowRole, risk(2)), time.UTC)
		if err != nil {
			t.Fatal(err)
		}
		if d, diag := cedar.Authorize(ps, entities, req); d != cedar.Allow || len(diag.Errors) != 1 {
			t.Fatalf("cedar-go alone: %v with %d errors; the test no longer shows the fail-open", d, len(diag.Errors))
		}
		wantDeny(t, decide(t, p, request(lowRole, risk(2))), []string{"overflowing-forbid"},
			"Policy overflowing-forbid (p.cedar:2:1) could not be evaluated: integer overflow")
		// With no overflow the forbid simply does not match.
		if d := decide(t, p, request(lowRole, risk(0))); d.Outcome != broker.OutcomeApprove {
			t.Errorf("risk 0: %+v, want approve", d)
		}
	})
	t.Run("ErrorInPermit", func(t *testing.T) {
		p := load(t, permitAll+"\n"+`@id("overflowing-permit") @approvals("1") @approvers("ops") permit (principal, action, resource) when { context.ttl_seconds * 9223372036854775807 > 0 };`)
		wantDeny(t, decide(t, p, request(lowRole)), []string{"overflowing-permit"}, "could not be evaluated")
	})
	t.Run("ErrorAndForbid", func(t *testing.T) {
		p := load(t, permitAll+"\n"+overflowingForbid+"\n"+`@id("no-risk") forbid (principal, action, resource) when { context.risk_score > 1 };`)
		wantDeny(t, decide(t, p, request(lowRole, risk(5))), []string{"no-risk", "overflowing-forbid"}, "could not be evaluated")
	})
	t.Run("MissingAttribute", func(t *testing.T) {
		// A schema that promises an attribute Stint does not provide is
		// refused at load (TestPolicySchemaCheck); were one trusted, the
		// policy reading it fails at evaluation and the request is denied.
		schemaText := strings.Replace(string(policy.DefaultSchema), "on_behalf_of: String,", "on_behalf_of: String,\n  clearance: String,", 1)
		docs := []policy.Document{{Name: "p.cedar", Text: []byte(permitAll + "\n" +
			`@id("needs-clearance") forbid (principal, action, resource) unless { principal.clearance == "top" };`)}}
		if _, err := policy.NewFromDocuments(docs, []byte(schemaText), policy.Config{}); err == nil ||
			!strings.Contains(err.Error(), `entity type Agent declares attribute "clearance", which Stint does not provide`) {
			t.Fatalf("load: %v, want the schema refused", err)
		}
		p, err := policy.NewTrustingSchema(docs, []byte(schemaText), policy.Config{})
		if err != nil {
			t.Fatal(err)
		}
		wantDeny(t, decide(t, p, request(lowRole)), []string{"needs-clearance"}, "`clearance`")
	})
	t.Run("BadRequest", func(t *testing.T) {
		p := load(t, permitAll)
		for name, r := range map[string]broker.DecisionRequest{
			"NoAgent":        request(lowRole, func(r *broker.DecisionRequest) { r.Agent = nil }),
			"NoRole":         request(nil),
			"UnknownAction":  request(lowRole, func(r *broker.DecisionRequest) { r.Action = "delete" }),
			"BadSensitivity": request(&broker.Role{Name: "x", Sensitivity: "extreme", MaxTTL: time.Hour}),
		} {
			t.Run(name, func(t *testing.T) {
				wantDeny(t, decide(t, p, r), nil, "The request cannot be evaluated")
			})
		}
	})
}

// TestPolicyLoadErrors: bad policies are refused at load with file, position
// and what is wrong.
func TestPolicyLoadErrors(t *testing.T) {
	for _, tt := range []struct {
		name, text, defaultGroup string
		want                     []string
	}{
		{"UnknownAttribute", "permit (principal, action, resource)\nwhen { principal.clearance == \"top\" };", "",
			[]string{"p.cedar:1:1: policy p.cedar:1:1: attribute `clearance` on entity type `Agent` not found"}},
		{"UnknownContextAttribute", "\n\n@id(\"x\") permit (principal, action, resource) when { context.ttl < 60 };", "",
			[]string{"p.cedar:3:1: policy x: attribute `ttl` in context for Action::"}},
		{"UnknownEntityType", `permit (principal, action, resource is Widget);`, "",
			[]string{"p.cedar:1:1: policy p.cedar:1:1: unrecognized entity type `Widget`"}},
		{"UnknownAction", `permit (principal, action == Action::"delete", resource);`, "",
			[]string{"unrecognized action `Action::\"delete\"`"}},
		{"OptionalWithoutHas", `forbid (principal, action, resource) when { context.source_ip.isLoopback() };`, "",
			[]string{"unable to guarantee safety of access to optional attribute `source_ip`"}},
		{"TagWithoutHasTag", `forbid (principal, action, resource) when { principal.getTag("team") == "ml" };`, "",
			[]string{"unable to guarantee safety of access to tag"}},
		{"TypeMismatch", `permit (principal, action, resource) when { context.hour == "9" };`, "",
			[]string{"p.cedar:1:1:"}},
		{"ParseError", "permit (principal, action, resource) when { context.hour > };", "",
			[]string{"p.cedar: parser error: parse error at p.cedar:1:"}},
		{"UnknownAnnotation", `@approval("2") permit (principal, action, resource);`, "",
			[]string{"unknown annotation @approval (Stint reads @id, @approvals, @approvers, @reason, @description)"}},
		{"ApprovalsNotANumber", `@approvals("two") @approvers("ops") permit (principal, action, resource);`, "",
			[]string{`@approvals("two") must be a whole number from 0 to 10`}},
		{"TooManyApprovals", `@approvals("11") @approvers("ops") permit (principal, action, resource);`, "",
			[]string{`@approvals("11") must be a whole number from 0 to 10`}},
		{"ApprovalsOnForbid", `@approvals("1") forbid (principal, action, resource);`, "ops",
			[]string{"@approvals on a forbid means nothing"}},
		{"ApproversWithoutApprovals", `@approvers("ops") permit (principal, action, resource);`, "",
			[]string{`@approvers("ops") without @approvals of at least 1 means nothing`}},
		{"NoGroup", `@approvals("1") permit (principal, action, resource);`, "",
			[]string{`@approvals("1") needs an approver group: add @approvers("group") or set policy.default_approver_group`}},
		{"BadID", `@id("has space") permit (principal, action, resource);`, "",
			[]string{`@id "has space" must be`}},
		{"DuplicateID", "@id(\"a\") permit (principal, action, resource);\n@id(\"a\") forbid (principal, action, resource);", "",
			[]string{`p.cedar:2:1: policy a: @id "a" is already used by the policy at p.cedar:1:1`}},
		{"EveryProblemReported", "@id(\"one\") permit (principal, action, resource) when { principal.x };\n@id(\"two\") permit (principal, action, resource) when { resource.y };", "",
			[]string{"p.cedar:1:1: policy one: attribute `x`", "p.cedar:2:1: policy two: attribute `y`"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := policy.NewFromDocuments([]policy.Document{{Name: "p.cedar", Text: []byte(tt.text)}}, nil,
				policy.Config{DefaultApproverGroup: tt.defaultGroup})
			if err == nil {
				t.Fatal("loaded; want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
		})
	}
	t.Run("MissingFile", func(t *testing.T) {
		_, err := policy.New(policy.Config{Files: []string{filepath.Join(t.TempDir(), "nope.cedar")}})
		if err == nil || !strings.Contains(err.Error(), "read policy file") || !strings.Contains(err.Error(), "nope.cedar") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("ValidationErrorsNamedOnce", func(t *testing.T) {
		// The validator reports the problem once per action; Stint once.
		_, err := policy.NewFromDocuments([]policy.Document{{Name: "p.cedar", Text: []byte(
			`permit (principal, action, resource) when { context.nope };`)}}, nil, policy.Config{})
		if n := strings.Count(err.Error(), "attribute `nope`"); n != 1 {
			t.Errorf("named %d times: %v", n, err)
		}
	})
}

// TestPolicySchemaCheck: a custom schema must describe Stint's requests.
func TestPolicySchemaCheck(t *testing.T) {
	base := string(policy.DefaultSchema)
	permit := []policy.Document{{Name: "p.cedar", Text: []byte(`permit (principal, action, resource);`)}}
	for _, tt := range []struct{ name, schema, want string }{
		{"ExtraAttribute", strings.Replace(base, "kind: String,", "kind: String,\n  owner_team: String,", 1),
			`entity type Role declares attribute "owner_team", which Stint does not provide`},
		{"WrongType", strings.Replace(base, "risk_score: Long,", "risk_score: String,", 1),
			`declares attribute "risk_score" with another type than the Long Stint provides`},
		{"SourceIPRequired", strings.Replace(base, "source_ip?: ipaddr,", "source_ip: ipaddr,", 1),
			`must declare attribute "source_ip" optional (source_ip?: ipaddr)`},
		{"NoAgent", "entity Role;\naction request, extend appliesTo { principal: Role, resource: Role };",
			"schema must declare entity type Agent"},
		{"Namespaced", "namespace Stint {\n" + base + "\n}", "schema must declare entity type Agent (outside any namespace)"},
		{"OtherAction", base + "\naction delete appliesTo { principal: Agent, resource: Role, context: RequestContext };",
			`schema declares action Action::"delete"; Stint asks only about request and extend`},
		{"Parents", strings.Replace(base, "entity Agent {", "entity Team;\nentity Agent in [Team] {", 1),
			"entity type Agent must not have parents"},
		{"TagsNotString", strings.Replace(base, "} tags String;\n\n// The role", "} tags Long;\n\n// The role", 1),
			"entity type Agent must have tags of type String"},
		{"Unparsable", "entity Agent {", "schema schema: "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := policy.NewFromDocuments(permit, []byte(tt.schema), policy.Config{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v\nwant %q", err, tt.want)
			}
		})
	}
	t.Run("FewerAttributes", func(t *testing.T) {
		// A schema may leave attributes out; policies then cannot use them.
		narrow := strings.Replace(base, "  task: String,\n", "", 1)
		if _, err := policy.NewFromDocuments(permit, []byte(narrow), policy.Config{}); err != nil {
			t.Fatalf("narrow schema refused: %v", err)
		}
		_, err := policy.NewFromDocuments([]policy.Document{{Name: "p.cedar", Text: []byte(
			`permit (principal, action, resource) when { context.task != "" };`)}}, []byte(narrow), policy.Config{})
		if err == nil || !strings.Contains(err.Error(), "attribute `task` in context") {
			t.Errorf("error %v", err)
		}
	})
}

// TestRequestConformsToSchema: the entities and context Stint builds are
// what the embedded schema says, checked by cedar-go's validator.
func TestRequestConformsToSchema(t *testing.T) {
	var s schema.Schema
	if err := s.UnmarshalCedar(policy.DefaultSchema); err != nil {
		t.Fatal(err)
	}
	res, err := s.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	v := validate.New(res)
	for name, r := range map[string]broker.DecisionRequest{
		"Full": request(highRole, extend, func(r *broker.DecisionRequest) {
			r.ActiveRoles = []string{"db-readonly", "vault-token"}
			r.OnBehalfOf = "bob@example.com"
			r.Justification = "incident 42"
			r.RiskScore = 55
		}),
		"NoSourceIP":     request(lowRole, func(r *broker.DecisionRequest) { r.SourceIP = "" }),
		"SourceWithPort": request(lowRole, func(r *broker.DecisionRequest) { r.SourceIP = "[::1]:4242" }),
		"NoLabels":       request(mediumRole, labels()),
	} {
		t.Run(name, func(t *testing.T) {
			req, entities, err := policy.BuildRequest(r, berlin)
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Request(req); err != nil {
				t.Errorf("request: %v", err)
			}
			if err := v.Entities(entities); err != nil {
				t.Errorf("entities: %v", err)
			}
		})
	}
	t.Run("Values", func(t *testing.T) {
		req, entities, err := policy.BuildRequest(request(lowRole, ttl(90*time.Minute), func(r *broker.DecisionRequest) {
			r.SourceIP = "[::1]:4242"
			r.Time = time.Date(2030, 1, 13, 23, 30, 0, 0, time.UTC) // Monday 00:30 in Berlin
		}), berlin)
		if err != nil {
			t.Fatal(err)
		}
		ctx, _ := req.Context.MarshalJSON()
		for _, want := range []string{`"ttl_seconds":5400`, `"hour":0`, `"weekday":1`, `"eligible":true`, `"source_ip":{"__extn":{"fn":"ip","arg":"::1"}}`, `"justification_given":false`} {
			if !strings.Contains(string(ctx), want) {
				t.Errorf("context %s lacks %s", ctx, want)
			}
		}
		agent, _ := entities[req.Principal].MarshalJSON()
		for _, want := range []string{`"type":"Agent","id":"etl-bot"`, `"owner":"alice@example.com"`, `"auth_method":"api_key"`, `"tags":{"team":"data"}`} {
			if !strings.Contains(string(agent), want) {
				t.Errorf("agent %s lacks %s", agent, want)
			}
		}
		role, _ := entities[req.Resource].MarshalJSON()
		for _, want := range []string{`"sensitivity_rank":1`, `"max_ttl_seconds":14400`, `"tags":{"team":"data"}`} {
			if !strings.Contains(string(role), want) {
				t.Errorf("role %s lacks %s", role, want)
			}
		}
	})
}

// TestPolicyReload: a good reload swaps the set; a bad one keeps the old.
func TestPolicyReload(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "p.cedar")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`@id("auto") permit (principal, action, resource);`)
	p, err := policy.New(policy.Config{Files: []string{file}})
	if err != nil {
		t.Fatal(err)
	}
	if d := decide(t, p, request(lowRole)); d.Outcome != broker.OutcomeApprove {
		t.Fatalf("got %+v", d)
	}

	write(`@id("auto") permit (principal, action, resource) when { principal.nope };`)
	if err := p.Reload(); err == nil || !strings.Contains(err.Error(), file+":1:1: policy auto: attribute `nope`") {
		t.Fatalf("reload: %v", err)
	}
	if d := decide(t, p, request(lowRole)); d.Outcome != broker.OutcomeApprove || !slices.Equal(d.PolicyIDs, []string{"auto"}) {
		t.Errorf("after a failed reload: %+v, want the old set's approve", d)
	}
	os.Remove(file)
	if err := p.Reload(); err == nil {
		t.Error("reload of a missing file succeeded")
	}
	if n := len(p.Policies()); n != 1 {
		t.Errorf("%d policies after failed reloads, want 1", n)
	}

	write(`@id("one") @approvals("1") @approvers("ops") permit (principal, action, resource);`)
	// Decisions run while the set is swapped: each sees the old or the new.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				d := decide(t, p, request(lowRole))
				if !(d.Outcome == broker.OutcomeApprove && d.PolicyIDs[0] == "auto") &&
					!(d.Outcome == broker.OutcomeApprovals && d.PolicyIDs[0] == "one" && d.ApproverGroup == "ops") {
					t.Errorf("mixed decision %+v", d)
					return
				}
			}
		})
	}
	if err := p.Reload(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if d := decide(t, p, request(lowRole)); d.Outcome != broker.OutcomeApprovals || d.Approvals != 1 {
		t.Errorf("after reload: %+v", d)
	}
}

// TestPolicyExplain lists every matching policy, not only the deciding ones.
func TestPolicyExplain(t *testing.T) {
	p := examplePolicy(t)
	ids := func(ps []policy.Info) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.ID)
		}
		return out
	}
	x, err := p.Explain(request(highRole, risk(50), auth(broker.AuthMTLS)))
	if err != nil {
		t.Fatal(err)
	}
	if x.Decision.Approvals != 3 || x.Decision.ApproverGroup != "security" {
		t.Errorf("decision %+v", x.Decision)
	}
	if got, want := ids(x.Permits), []string{"high-two-security", "risk-step-up-high"}; !slices.Equal(got, want) {
		t.Errorf("permits %q, want %q", got, want)
	}
	if len(x.Forbids) != 0 || len(x.Errors) != 0 || x.Total != 14 || x.Evaluated != 14 {
		t.Errorf("forbids %q errors %v evaluated %d of %d", ids(x.Forbids), x.Errors, x.Evaluated, x.Total)
	}
	if !strings.Contains(x.Context, `"risk_score":50`) || !strings.Contains(x.Principal, `"auth_method":"mtls"`) ||
		!strings.Contains(x.Resource, `"sensitivity":"high"`) {
		t.Errorf("request shown as %s %s %s", x.Principal, x.Resource, x.Context)
	}

	x, err = p.Explain(request(criticalRole, at(time.Date(2030, 1, 12, 11, 0, 0, 0, berlin))))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(x.Forbids), []string{"deny-critical-off-hours", "deny-weak-auth-high"}; !slices.Equal(got, want) {
		t.Errorf("forbids %q, want %q", got, want)
	}
	if got, want := ids(x.Permits), []string{"critical-two-security"}; !slices.Equal(got, want) {
		t.Errorf("permits %q, want %q (a matching forbid hides them from Cedar's answer)", got, want)
	}

	if _, err := p.Explain(request(nil)); err == nil {
		t.Error("explained a request without a role")
	}
}

// TestPolicyInfo reports what validate prints.
func TestPolicyInfo(t *testing.T) {
	p := examplePolicy(t)
	infos := p.Policies()
	if len(infos) != 14 {
		t.Fatalf("%d policies", len(infos))
	}
	first, high := infos[0], infos[8]
	if first.ID != "deny-ineligible" || first.Effect != "forbid" || first.Position != "guards.cedar:4:1" || first.Reason == "" {
		t.Errorf("first %+v", first)
	}
	if high.ID != "high-two-security" || high.Approvals != 2 || high.Approvers != "security" || high.Annotations["approvals"] != "2" {
		t.Errorf("high %+v", high)
	}
	if p.Schema() != "embedded stint.cedarschema" || p.Location() != berlin {
		t.Errorf("schema %q location %v", p.Schema(), p.Location())
	}
}

// TestExampleSchemaValidatesExamples double-checks with cedar-go directly
// that the shipped policies validate against the shipped schema.
func TestExampleSchemaValidatesExamples(t *testing.T) {
	var s schema.Schema
	if err := s.UnmarshalCedar(policy.DefaultSchema); err != nil {
		t.Fatal(err)
	}
	res, err := s.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	v := validate.New(res)
	for _, name := range policy.ExamplePolicyFiles {
		b, err := fs.ReadFile(policy.ExamplePolicies, name)
		if err != nil {
			t.Fatal(err)
		}
		list, err := cedar.NewPolicyListFromBytes(name, b)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range list {
			if err := v.Policy("", (*xast.Policy)(p.AST())); err != nil {
				t.Errorf("%v: %v", p.Position(), err)
			}
		}
	}
}

// TestPolicyTask: policy reads the lease's task as context.task, so a role
// can be kept to one kind of task; the forbid names itself in the denial.
func TestPolicyTask(t *testing.T) {
	p, err := policy.NewFromDocuments([]policy.Document{{Name: "tasks.cedar", Text: []byte(`
@id("allow-all")
permit (principal is Agent, action == Action::"request", resource is Role);

@id("admin-for-migrations")
forbid (principal is Agent, action == Action::"request", resource == Role::"db-admin")
unless { context.task like "migrate *" };
`)}}, nil, policy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	task := func(s string) func(*broker.DecisionRequest) { return func(r *broker.DecisionRequest) { r.Task = s } }
	for _, tt := range []struct {
		name    string
		req     broker.DecisionRequest
		outcome broker.Outcome
		policy  string
	}{
		{"InPattern", request(highRole, task("migrate orders/v2")), broker.OutcomeApprove, "allow-all"},
		{"OutsidePattern", request(highRole, task("nightly report")), broker.OutcomeDeny, "admin-for-migrations"},
		{"PatternIsAnchored", request(highRole, task("not a migrate job")), broker.OutcomeDeny, "admin-for-migrations"},
		{"OtherRoleAnyTask", request(lowRole, task("nightly report")), broker.OutcomeApprove, "allow-all"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := decide(t, p, tt.req)
			if d.Outcome != tt.outcome || !slices.Equal(d.PolicyIDs, []string{tt.policy}) {
				t.Errorf("decision %+v, want %s by %s", d, tt.outcome, tt.policy)
			}
		})
	}
}
