package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/stint-broker/stint/broker"
)

// Table is a decision table: requests and the decisions the policies
// should reach for them (`stint policy test` runs one).
type Table struct {
	// Roles are roles the cases may name, in addition to (and taking
	// precedence over) the configuration's.
	Roles []*TableRole `yaml:"roles"`
	Cases []*Case      `yaml:"cases"`
}

// TableRole is a role as a test table describes it: only what policy sees.
type TableRole struct {
	Name        string             `yaml:"name"`
	Sensitivity broker.Sensitivity `yaml:"sensitivity"`
	Kind        string             `yaml:"kind"`
	MaxTTL      time.Duration      `yaml:"max_ttl"`
	DefaultTTL  time.Duration      `yaml:"default_ttl"`
	Eligible    map[string]string  `yaml:"eligible"`
	AutoApprove bool               `yaml:"auto_approve"`
}

func (r *TableRole) role() (*broker.Role, error) {
	role := &broker.Role{
		Name: r.Name, Sensitivity: r.Sensitivity, Kind: broker.CredentialKind(r.Kind), MaxTTL: r.MaxTTL,
		DefaultTTL: r.DefaultTTL, Eligible: r.Eligible, AutoApprove: r.AutoApprove,
	}
	if role.Kind == "" {
		role.Kind = broker.KindGeneric
	}
	if role.DefaultTTL == 0 {
		role.DefaultTTL = role.MaxTTL
	}
	switch {
	case !broker.ValidName(role.Name):
		return nil, fmt.Errorf("role %q: name must be 1-64 characters of a-z, 0-9, '-', '_' or '.'", role.Name)
	case !role.Sensitivity.Valid():
		return nil, fmt.Errorf("role %s: sensitivity must be low, medium, high or critical, not %q", role.Name, role.Sensitivity)
	case !role.Kind.Valid():
		return nil, fmt.Errorf("role %s: kind must be database, token or generic, not %q", role.Name, role.Kind)
	case role.MaxTTL <= 0 || role.DefaultTTL <= 0 || role.DefaultTTL > role.MaxTTL:
		return nil, fmt.Errorf("role %s: max_ttl must be positive and default_ttl at most max_ttl", role.Name)
	}
	return role, nil
}

// Case is one row: a request and the decision expected for it.
type Case struct {
	Name string `yaml:"name"`
	// Agent is the agent asking.
	Agent struct {
		Name       string            `yaml:"name"`
		Owner      string            `yaml:"owner"`
		Labels     map[string]string `yaml:"labels"`
		AuthMethod string            `yaml:"auth_method"`
		OnBehalfOf string            `yaml:"on_behalf_of"`
	} `yaml:"agent"`
	// Role is a role's name (from the table or the configuration) or a role.
	Role   CaseRole      `yaml:"role"`
	Action broker.Action `yaml:"action"`
	// Context overrides the request's defaults.
	Context CaseContext `yaml:"context"`
	Expect  struct {
		Outcome   broker.Outcome `yaml:"outcome"`
		Approvals *int           `yaml:"approvals"`
		Group     *string        `yaml:"group"`
		Policies  []string       `yaml:"policies"`
	} `yaml:"expect"`
	line int
}

// CaseRole is a role name or an inline role.
type CaseRole struct {
	Name   string
	Inline *TableRole
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (r *CaseRole) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		return n.Decode(&r.Name)
	}
	r.Inline = &TableRole{}
	return n.Decode(r.Inline)
}

// CaseContext is what a case may set about the request. Hour and weekday
// (1 = Monday … 7 = Sunday, or a name) are in policy.timezone; without them
// or Time a case is asked on a Wednesday at 12:00.
type CaseContext struct {
	TTL           string   `yaml:"ttl"`
	Hour          *int     `yaml:"hour"`
	Weekday       string   `yaml:"weekday"`
	Time          string   `yaml:"time"`
	RiskScore     int      `yaml:"risk_score"`
	SourceIP      string   `yaml:"source_ip"`
	ActiveRoles   []string `yaml:"active_roles"`
	Task          string   `yaml:"task"`
	Justification string   `yaml:"justification"`
}

var weekdays = map[string]int{
	"mon": 1, "monday": 1, "tue": 2, "tuesday": 2, "wed": 3, "wednesday": 3, "thu": 4, "thursday": 4,
	"fri": 5, "friday": 5, "sat": 6, "saturday": 6, "sun": 7, "sunday": 7,
}

// RequestTime is when a case's request is made, in loc.
func (c *CaseContext) RequestTime(loc *time.Location) (time.Time, error) {
	if c.Time != "" {
		if c.Hour != nil || c.Weekday != "" {
			return time.Time{}, errors.New("context: give time, or hour and weekday, not both")
		}
		t, err := time.Parse(time.RFC3339, c.Time)
		if err != nil {
			return time.Time{}, fmt.Errorf("context.time %q: use RFC 3339, such as 2030-01-08T10:00:00+01:00", c.Time)
		}
		return t, nil
	}
	hour, day := 12, 3
	if c.Hour != nil {
		if *c.Hour < 0 || *c.Hour > 23 {
			return time.Time{}, fmt.Errorf("context.hour %d: use 0 to 23", *c.Hour)
		}
		hour = *c.Hour
	}
	if c.Weekday != "" {
		d, err := parseWeekday(c.Weekday)
		if err != nil {
			return time.Time{}, err
		}
		day = d
	}
	// 2030-01-07 is a Monday.
	return time.Date(2030, 1, 6+day, hour, 0, 0, 0, loc), nil
}

func parseWeekday(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil && n >= 1 && n <= 7 {
		return n, nil
	}
	if n, ok := weekdays[strings.ToLower(s)]; ok {
		return n, nil
	}
	return 0, fmt.Errorf("weekday %q: use 1 (Monday) to 7 (Sunday) or a day's name", s)
}

// ReadTable parses a test table; unknown keys are errors.
func ReadTable(path string) (*Table, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read test table: %w", err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var t Table
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&t); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(t.Cases) == 0 {
		return nil, fmt.Errorf("%s: no cases", path)
	}
	// Remember each case's line for messages.
	if len(root.Content) > 0 {
		doc := root.Content[0]
		for i := 0; i+1 < len(doc.Content); i += 2 {
			if doc.Content[i].Value == "cases" {
				for j, n := range doc.Content[i+1].Content {
					if j < len(t.Cases) {
						t.Cases[j].line = n.Line
					}
				}
			}
		}
	}
	return &t, nil
}

// CaseResult is one case's outcome.
type CaseResult struct {
	Name string
	// Problems are how the decision differs from what the case expects;
	// none is a pass.
	Problems []string
	Decision broker.Decision
}

// RunTable decides every case of t, read from path, with e. roles are the
// configuration's; the table's own roles take precedence over them.
func (e *Engine) RunTable(path string, t *Table, roles []*broker.Role) ([]CaseResult, error) {
	byName := map[string]*broker.Role{}
	for _, r := range roles {
		byName[r.Name] = r
	}
	for _, tr := range t.Roles {
		r, err := tr.role()
		if err != nil {
			return nil, fmt.Errorf("%s: roles: %w", path, err)
		}
		byName[r.Name] = r
	}
	var results []CaseResult
	for i, c := range t.Cases {
		where := fmt.Sprintf("%s:%d", path, c.line)
		name := c.Name
		if name == "" {
			name = fmt.Sprintf("case %d", i+1)
		}
		req, err := c.request(byName, e.Location())
		if err == nil {
			err = c.checkExpect()
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", where, name, err)
		}
		d, err := e.Decide(context.Background(), req)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", where, name, err)
		}
		results = append(results, CaseResult{Name: name, Problems: c.compare(d), Decision: d})
	}
	return results, nil
}

func (c *Case) request(roles map[string]*broker.Role, loc *time.Location) (broker.DecisionRequest, error) {
	var role *broker.Role
	switch {
	case c.Role.Inline != nil:
		r, err := c.Role.Inline.role()
		if err != nil {
			return broker.DecisionRequest{}, err
		}
		role = r
	case c.Role.Name == "":
		return broker.DecisionRequest{}, errors.New("role is required: a role's name or a role")
	default:
		role = roles[c.Role.Name]
		if role == nil {
			names := make([]string, 0, len(roles))
			for n := range roles {
				names = append(names, n)
			}
			sort.Strings(names)
			return broker.DecisionRequest{}, fmt.Errorf("role %q is neither in the table's roles nor in the configuration (%s)", c.Role.Name, strings.Join(names, ", "))
		}
	}
	if c.Agent.Name == "" {
		return broker.DecisionRequest{}, errors.New("agent.name is required")
	}
	action := c.Action
	if action == "" {
		action = broker.ActionRequest
	}
	if action != broker.ActionRequest && action != broker.ActionExtend {
		return broker.DecisionRequest{}, fmt.Errorf("action %q: use request or extend", action)
	}
	window := role.DefaultTTL
	if c.Context.TTL != "" {
		d, err := time.ParseDuration(c.Context.TTL)
		if err != nil || d <= 0 {
			return broker.DecisionRequest{}, fmt.Errorf("context.ttl %q: use a duration such as 30m", c.Context.TTL)
		}
		window = d
	}
	if c.Context.RiskScore < 0 || c.Context.RiskScore > 100 {
		return broker.DecisionRequest{}, fmt.Errorf("context.risk_score %d: use 0 to 100", c.Context.RiskScore)
	}
	when, err := c.Context.RequestTime(loc)
	if err != nil {
		return broker.DecisionRequest{}, err
	}
	auth := c.Agent.AuthMethod
	if auth == "" {
		auth = broker.AuthAPIKey
	}
	owner := c.Agent.Owner
	if owner == "" {
		owner = "owner@example.com"
	}
	task := c.Context.Task
	if task == "" {
		task = "policy test"
	}
	return broker.DecisionRequest{
		Action:        action,
		Agent:         &broker.Agent{ID: "test:" + c.Agent.Name, Name: c.Agent.Name, Owner: owner, Labels: c.Agent.Labels, State: broker.AgentActive},
		Role:          role,
		TTL:           window,
		Task:          task,
		Justification: c.Context.Justification,
		AuthMethod:    auth,
		OnBehalfOf:    c.Agent.OnBehalfOf,
		SourceIP:      c.Context.SourceIP,
		Time:          when,
		RiskScore:     c.Context.RiskScore,
		ActiveRoles:   c.Context.ActiveRoles,
	}, nil
}

func (c *Case) checkExpect() error {
	switch c.Expect.Outcome {
	case broker.OutcomeApprove, broker.OutcomeApprovals, broker.OutcomeDeny:
		return nil
	case "":
		return errors.New("expect.outcome is required: approve, approvals or deny")
	}
	return fmt.Errorf("expect.outcome %q: use approve, approvals or deny", c.Expect.Outcome)
}

// compare lists how d differs from what the case expects.
func (c *Case) compare(d broker.Decision) []string {
	var p []string
	if d.Outcome != c.Expect.Outcome {
		p = append(p, fmt.Sprintf("outcome %s, want %s", d.Outcome, c.Expect.Outcome))
	}
	if c.Expect.Approvals != nil && d.Approvals != *c.Expect.Approvals {
		p = append(p, fmt.Sprintf("approvals %d, want %d", d.Approvals, *c.Expect.Approvals))
	}
	if c.Expect.Group != nil && d.ApproverGroup != *c.Expect.Group {
		p = append(p, fmt.Sprintf("approver group %q, want %q", d.ApproverGroup, *c.Expect.Group))
	}
	if c.Expect.Policies != nil {
		got, want := slices.Sorted(slices.Values(d.PolicyIDs)), slices.Sorted(slices.Values(c.Expect.Policies))
		if !slices.Equal(got, want) {
			p = append(p, fmt.Sprintf("policies [%s], want [%s]", strings.Join(got, ", "), strings.Join(want, ", ")))
		}
	}
	return p
}
