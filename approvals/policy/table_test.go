package policy_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stint-broker/stint/approvals/policy"
	"github.com/stint-broker/stint/broker"
)

// configRoles stand for the roles of a configuration, which a table's cases
// may name besides the table's own.
var configRoles = []*broker.Role{
	{Name: "db-readonly", Kind: broker.KindDatabase, Sensitivity: broker.SensitivityLow, DefaultTTL: 15 * time.Minute, MaxTTL: time.Hour, Eligible: map[string]string{"team": "data"}},
	{Name: "vault-token", Kind: broker.KindToken, Sensitivity: broker.SensitivityMedium, DefaultTTL: 15 * time.Minute, MaxTTL: time.Hour},
}

func writeTable(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "table.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func runTable(t *testing.T, path string) ([]policy.CaseResult, error) {
	t.Helper()
	table, err := policy.ReadTable(path)
	if err != nil {
		return nil, err
	}
	return examplePolicy(t).RunTable(path, table, configRoles)
}

// TestRunTableShipped: the decision table shipped with the example
// policies passes against them, every case.
func TestRunTableShipped(t *testing.T) {
	results, err := runTable(t, filepath.Join("policies", "examples.test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 16 {
		t.Fatalf("%d cases, want 16", len(results))
	}
	for _, r := range results {
		if len(r.Problems) != 0 {
			t.Errorf("%s: %q (decided %+v)", r.Name, r.Problems, r.Decision)
		}
	}
}

// TestRunTableFailure: a case whose expectation the policies do not meet
// lists every difference, and carries the decision reached.
func TestRunTableFailure(t *testing.T) {
	results, err := runTable(t, writeTable(t, `cases:
  - name: configured role, granted at once
    agent: {name: etl-bot, labels: {team: data}}
    role: db-readonly
    expect: {outcome: approve, policies: [low-short-auto]}
  - agent: {name: etl-bot}
    role: vault-token
    expect: {outcome: approve, approvals: 0, group: "", policies: [low-short-auto]}
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 || results[0].Name != "configured role, granted at once" || len(results[0].Problems) != 0 {
		t.Fatalf("results %+v", results)
	}
	want := []string{
		"outcome approvals, want approve",
		"approvals 1, want 0",
		`approver group "approvers", want ""`,
		"policies [medium-one-approval], want [low-short-auto]",
	}
	r := results[1]
	if r.Name != "case 2" || !slices.Equal(r.Problems, want) {
		t.Errorf("%s: problems %q, want %q", r.Name, r.Problems, want)
	}
	if r.Decision.Outcome != broker.OutcomeApprovals || r.Decision.Approvals != 1 || r.Decision.ApproverGroup != "approvers" {
		t.Errorf("decision %+v", r.Decision)
	}
}

// TestRunTableErrors: a table that cannot be run says where and why.
func TestRunTableErrors(t *testing.T) {
	for _, tc := range []struct{ name, table, want string }{
		{"UnknownRole", "cases:\n  - agent: {name: a}\n    role: nope\n    expect: {outcome: deny}\n",
			`table.yaml:2: case 1: role "nope" is neither in the table's roles nor in the configuration (db-readonly, vault-token)`},
		{"UnknownKey", "cases:\n  - agent: {name: a}\n    role: db-readonly\n    expekt: {outcome: deny}\n", "field expekt not found"},
		{"BadWeekday", "cases:\n  - agent: {name: a}\n    role: db-readonly\n    context: {weekday: funday}\n    expect: {outcome: deny}\n", `weekday "funday"`},
		{"BadHour", "cases:\n  - agent: {name: a}\n    role: db-readonly\n    context: {hour: 24}\n    expect: {outcome: deny}\n", "context.hour 24: use 0 to 23"},
		{"TimeAndHour", "cases:\n  - agent: {name: a}\n    role: db-readonly\n    context: {hour: 3, time: \"2030-01-08T10:00:00Z\"}\n    expect: {outcome: deny}\n", "give time, or hour and weekday, not both"},
		{"BadTTL", "cases:\n  - agent: {name: a}\n    role: db-readonly\n    context: {ttl: soon}\n    expect: {outcome: deny}\n", `context.ttl "soon"`},
		{"BadAction", "cases:\n  - agent: {name: a}\n    role: db-readonly\n    action: revoke\n    expect: {outcome: deny}\n", `action "revoke": use request or extend`},
		{"NoOutcome", "cases:\n  - agent: {name: a}\n    role: db-readonly\n    expect: {approvals: 1}\n", "expect.outcome is required"},
		{"BadOutcome", "cases:\n  - agent: {name: a}\n    role: db-readonly\n    expect: {outcome: maybe}\n", `expect.outcome "maybe"`},
		{"NoAgent", "cases:\n  - role: db-readonly\n    expect: {outcome: deny}\n", "agent.name is required"},
		{"BadInlineRole", "cases:\n  - agent: {name: a}\n    role: {name: x, sensitivity: spicy, max_ttl: 1h}\n    expect: {outcome: deny}\n", `sensitivity must be low, medium, high or critical, not "spicy"`},
		{"BadTableRole", "roles: [{name: x, sensitivity: low, max_ttl: 1h, default_ttl: 2h}]\ncases:\n  - agent: {name: a}\n    role: x\n    expect: {outcome: deny}\n", "role x: max_ttl must be positive and default_ttl at most max_ttl"},
		{"NoCases", "roles: []\n", "no cases"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runTable(t, writeTable(t, tc.table))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// TestRequestTime: a case's hour and weekday are in the policies' zone, a
// weekday by number or name; without them it is a Wednesday at 12:00.
func TestRequestTime(t *testing.T) {
	hour := 9
	for _, tc := range []struct {
		ctx  policy.CaseContext
		want time.Time
	}{
		{policy.CaseContext{}, time.Date(2030, 1, 9, 12, 0, 0, 0, berlin)},
		{policy.CaseContext{Hour: &hour, Weekday: "sun"}, time.Date(2030, 1, 13, 9, 0, 0, 0, berlin)},
		{policy.CaseContext{Weekday: "1"}, time.Date(2030, 1, 7, 12, 0, 0, 0, berlin)},
		{policy.CaseContext{Time: "2030-01-08T10:00:00+01:00"}, time.Date(2030, 1, 8, 10, 0, 0, 0, berlin)},
	} {
		got, err := tc.ctx.RequestTime(berlin)
		if err != nil || !got.Equal(tc.want) || got.Weekday() != tc.want.Weekday() {
			t.Errorf("%+v: %v %v, want %v", tc.ctx, got, err, tc.want)
		}
	}
}
