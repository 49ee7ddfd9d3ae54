package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	_ "time/tzdata" // policy.timezone works on hosts without a zoneinfo database

	"github.com/spf13/cobra"

	"github.com/stint-broker/stint/approvals/governance"
	"github.com/stint-broker/stint/approvals/policy"
	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases"
)

// Enabled reports whether policies are configured; without them a role's
// auto_approve flag decides.
func (c *PolicyConfig) Enabled() bool { return len(c.Files) > 0 }

// Validate checks the policy section (not the policies: loading does that).
func (c *PolicyConfig) Validate() error {
	if c.Timezone == "" {
		return errors.New("policy.timezone is required: an IANA zone such as UTC or Europe/Berlin")
	}
	if _, err := time.LoadLocation(c.Timezone); err != nil {
		return fmt.Errorf("policy.timezone %q is not a time zone: use an IANA name such as UTC or Europe/Berlin", c.Timezone)
	}
	seen := map[string]bool{}
	for i, f := range c.Files {
		if strings.TrimSpace(f) == "" {
			return fmt.Errorf("policy.files[%d] is empty", i)
		}
		if seen[f] {
			return fmt.Errorf("policy.files names %s twice", f)
		}
		seen[f] = true
	}
	if c.Schema != "" && !c.Enabled() {
		return errors.New("policy.schema is set but policy.files is empty: name the policy files")
	}
	if g := c.DefaultApproverGroup; len(g) > 64 || strings.ContainsFunc(g, func(r rune) bool { return r <= ' ' }) {
		return fmt.Errorf("policy.default_approver_group %q must be at most 64 characters without spaces", g)
	}
	return nil
}

// approvalsConfig is the policy.Config for this section.
func (c *PolicyConfig) approvalsConfig() (policy.Config, error) {
	loc, err := time.LoadLocation(c.Timezone)
	if err != nil {
		return policy.Config{}, fmt.Errorf("policy.timezone: %w", err)
	}
	return policy.Config{
		Files: c.Files, Schema: c.Schema, Location: loc, DefaultApproverGroup: c.DefaultApproverGroup,
	}, nil
}

// Open loads and validates the configured policies.
func (c *PolicyConfig) Open(logger *slog.Logger) (*policy.Engine, error) {
	pc, err := c.approvalsConfig()
	if err != nil {
		return nil, err
	}
	p, err := policy.New(pc)
	if err != nil {
		return nil, err
	}
	if logger != nil {
		p.Logger = logger
	}
	return p, nil
}

// openExamplePolicy loads the embedded example policies with the zone and
// default group of c.
func openExamplePolicy(c *PolicyConfig) (*policy.Engine, error) {
	pc, err := c.approvalsConfig()
	if err != nil {
		return nil, err
	}
	pc.Files, pc.Schema, pc.FS = policy.ExamplePolicyFiles, "", policy.ExamplePolicies
	return policy.New(pc)
}

// ReloadPolicy reads, validates and swaps in the policy files again. On error
// the policies in force stay in force and the error is returned.
func (m *Main) ReloadPolicy() error {
	if m.Policy == nil {
		return errors.New("no policy is configured (policy.files is empty); roles' auto_approve decides")
	}
	if err := m.Policy.Reload(); err != nil {
		return err
	}
	return nil
}

// reloadOnHangup reloads the policies on every SIGHUP until ctx ends.
func (m *Main) reloadOnHangup(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	m.reloadOn(ctx, hup)
}

// reloadOn reloads the policies whenever sig delivers, logging the outcome.
func (m *Main) reloadOn(ctx context.Context, sig <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
			if err := m.ReloadPolicy(); err != nil {
				m.Logger.Error("policy reload failed; the policies in force stay", "err", err)
				continue
			}
			m.Logger.Info("policy reloaded", "policies", len(m.Policy.Policies()), "files", m.Config.Policy.Files)
		}
	}
}

func newPolicyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Validate, test and explain the Cedar policies that decide requests",
		Long: `Work with the Cedar policies named by policy.files in the configuration.

Each request is evaluated with the agent as principal (Agent::"name"), the
action request or extend, the role as resource (Role::"name") and a context
of TTL, task, source IP, hour and weekday in policy.timezone, risk score and
the agent's active roles; ` + "`stint policy schema`" + ` prints every attribute.
A matching forbid, an evaluation error or the lack of a matching permit
denies; otherwise the largest @approvals("N") among the matching permits is
the number of approvals needed (0: granted at once), from the group named by
@approvers("group") or policy.default_approver_group.

The server loads the policies at start and again on SIGHUP, which re-reads
the files and schema that policy.files and policy.schema named at start
(other configuration changes need a restart); a reload that fails validation
keeps the policies in force and logs why.`,
	}
	cmd.AddCommand(newPolicyValidateCommand(), newPolicyTestCommand(), newPolicyExplainCommand(),
		newPolicySchemaCommand(), newPolicyExamplesCommand())
	return cmd
}

// readPolicyConfig reads the configuration named by --config; with
// allowMissing, a missing file yields the defaults.
func readPolicyConfig(cmd *cobra.Command, allowMissing bool) (Config, error) {
	cfg, _, err := readConfigFlag(cmd)
	if err != nil && allowMissing && errors.Is(err, fs.ErrNotExist) {
		return DefaultConfig(), nil
	}
	return cfg, err
}

func newPolicyValidateCommand() *cobra.Command {
	var schemaFile string
	cmd := &cobra.Command{
		Use:   "validate [FILE...]",
		Short: "Load and validate the policies and print their ids",
		Long: `Load the policies named by policy.files (or the FILEs given) and validate
them against the schema (policy.schema, --schema, or Stint's own), as the
server does at start and on SIGHUP. Prints each policy's id, effect,
position and approvals; exits non-zero naming the file and position of every
policy that does not parse or validate.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := readPolicyConfig(cmd, len(args) > 0)
			if err != nil {
				return err
			}
			pc := cfg.Policy
			if len(args) > 0 {
				pc.Files = args
			}
			if schemaFile != "" {
				pc.Schema = schemaFile
			}
			if !pc.Enabled() {
				return errors.New("no policy files: set policy.files in the configuration or name FILEs (without policies, roles' auto_approve decides)")
			}
			p, err := pc.Open(nil)
			if err != nil {
				return err
			}
			infos := p.Policies()
			if infos == nil {
				infos = []policy.Info{}
			}
			permits := 0
			for _, i := range infos {
				if !i.Forbid() {
					permits++
				}
			}
			return show(cmd, struct {
				Policies []policy.Info `json:"policies"`
				Schema   string        `json:"schema"`
				TimeZone string        `json:"time_zone"`
			}{infos, p.Schema(), p.Location().String()}, func(out io.Writer) error {
				fmt.Fprintf(out, "%d policies valid (%d permit, %d forbid) against %s; time zone %s\n",
					len(infos), permits, len(infos)-permits, p.Schema(), p.Location())
				if len(infos) == 0 {
					fmt.Fprintln(out, "No policy permits anything: every request will be denied.")
				}
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "ID\tEFFECT\tAPPROVALS\tPOSITION")
				for _, i := range infos {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", i.ID, i.Effect, approvalsText(i, pc.DefaultApproverGroup), i.Position)
				}
				return w.Flush()
			})
		},
	}
	addOutputFlag(cmd)
	cmd.Flags().StringVar(&schemaFile, "schema", "", "Cedar schema file (default policy.schema, else Stint's embedded schema)")
	return cmd
}

func approvalsText(i policy.Info, defaultGroup string) string {
	switch {
	case i.Forbid():
		return "-"
	case i.Approvals == 0:
		return "0 (auto)"
	case i.Approvers == "":
		return fmt.Sprintf("%d from %s", i.Approvals, defaultGroup)
	}
	return fmt.Sprintf("%d from %s", i.Approvals, i.Approvers)
}

func newPolicySchemaCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print Stint's Cedar schema: every attribute policies can use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(policy.DefaultSchema)
			return err
		},
	}
}

func newPolicyExamplesCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "examples [--dir DIR]",
		Short: "Print the example policies, schema and decision table, or write them to DIR",
		Long: `Print Stint's example policies (guards.cedar, tiers.cedar), its schema
(stint.cedarschema) and a decision table for them (examples.test.yaml). With
--dir, write them there instead (existing files are left alone and reported),
ready to be named in policy.files and run with stint policy test.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			names, err := fs.Glob(policy.ExamplePolicies, "*")
			if err != nil {
				return err
			}
			if dir == "" {
				for _, n := range names {
					b, _ := fs.ReadFile(policy.ExamplePolicies, n)
					fmt.Fprintf(out, "// ==> %s <==\n%s\n", n, b)
				}
				return nil
			}
			written, err := writeExamplePolicies(dir, false)
			for _, n := range written {
				fmt.Fprintf(out, "wrote %s\n", n)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory to write the files to")
	return cmd
}

// writeExamplePolicies writes the embedded examples into dir, never
// overwriting a file, and returns the paths it wrote. An existing file is an
// error unless keepExisting.
func writeExamplePolicies(dir string, keepExisting bool) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	names, err := fs.Glob(policy.ExamplePolicies, "*")
	if err != nil {
		return nil, err
	}
	var written []string
	var errs []error
	for _, n := range names {
		b, err := fs.ReadFile(policy.ExamplePolicies, n)
		if err != nil {
			return written, err
		}
		path := filepath.Join(dir, n)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if keepExisting && errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("write %s: %w", path, err))
			continue
		}
		_, werr := f.Write(b)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			errs = append(errs, fmt.Errorf("write %s: %w", path, werr))
			continue
		}
		written = append(written, path)
	}
	return written, errors.Join(errs...)
}

func newPolicyTestCommand() *cobra.Command {
	var examples bool
	cmd := &cobra.Command{
		Use:   "test FILE",
		Short: "Run a decision table against the policies; exits non-zero if a case fails",
		Long: `Decide every case of the YAML decision table FILE with the configured
policies (or, with --examples, Stint's example policies) and compare with
what the case expects. Prints PASS or FAIL per case and exits non-zero if any
case fails: run it in the CI of your policy repository.

  roles:                      # optional; cases may also name configured roles
    - {name: db-readonly, sensitivity: low, kind: database, max_ttl: 4h, eligible: {team: data}}
  cases:
    - name: low role for 30 minutes is granted at once
      agent: {name: etl-bot, owner: alice@example.com, labels: {team: data}, auth_method: api_key}
      role: db-readonly       # a role's name, or a role as under roles
      action: request         # or extend; default request
      context: {ttl: 30m, hour: 10, weekday: tue, risk_score: 0, source_ip: 10.0.0.7,
                active_roles: [], task: nightly report, justification: ticket 42}
      expect: {outcome: approve, approvals: 0, group: "", policies: [low-short-auto]}

outcome is approve, approvals or deny; approvals, group and policies (the
decision's policy ids, in any order) are checked only when given. Hour and
weekday are in policy.timezone; without them a case is asked on a Wednesday
at 12:00 (or give time: 2030-01-08T10:00:00+01:00). The TTL defaults to the
role's default_ttl, the auth method to api_key. ` + "`stint policy examples`" + `
prints a table for the example policies.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := readPolicyConfig(cmd, examples)
			if err != nil {
				return err
			}
			var p *policy.Engine
			switch {
			case examples:
				p, err = openExamplePolicy(&cfg.Policy)
			case !cfg.Policy.Enabled():
				return errors.New("no policy files: set policy.files in the configuration, or use --examples")
			default:
				p, err = cfg.Policy.Open(nil)
			}
			if err != nil {
				return err
			}
			table, err := policy.ReadTable(args[0])
			if err != nil {
				return err
			}
			results, err := p.RunTable(args[0], table, cfg.Roles)
			if err != nil {
				return err
			}
			type caseJSON struct {
				Name     string          `json:"name"`
				Passed   bool            `json:"passed"`
				Problems []string        `json:"problems,omitempty"`
				Decision broker.Decision `json:"decision"`
			}
			report := struct {
				Cases  []caseJSON `json:"cases"`
				Passed int        `json:"passed"`
				Failed int        `json:"failed"`
			}{Cases: []caseJSON{}}
			for _, r := range results {
				report.Cases = append(report.Cases, caseJSON{r.Name, len(r.Problems) == 0, r.Problems, r.Decision})
				if len(r.Problems) > 0 {
					report.Failed++
				}
			}
			report.Passed = len(results) - report.Failed
			failed := report.Failed
			err = show(cmd, report, func(out io.Writer) error {
				for _, r := range results {
					if len(r.Problems) == 0 {
						fmt.Fprintf(out, "PASS  %s\n", r.Name)
						continue
					}
					fmt.Fprintf(out, "FAIL  %s\n", r.Name)
					for _, pr := range r.Problems {
						fmt.Fprintf(out, "        %s\n", pr)
					}
					fmt.Fprintf(out, "        decided %s\n", decisionSummary(r.Decision))
				}
				_, err := fmt.Fprintf(out, "%d of %d cases passed\n", len(results)-failed, len(results))
				return err
			})
			if err != nil {
				return err
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d cases failed", failed, len(results))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&examples, "examples", false, "test Stint's example policies instead of the configured ones")
	addOutputFlag(cmd)
	return cmd
}

// decisionSummary renders a decision on one line.
func decisionSummary(d broker.Decision) string {
	s := string(d.Outcome)
	if d.Outcome == broker.OutcomeApprovals {
		s = fmt.Sprintf("%d approval(s) from %s", d.Approvals, d.ApproverGroup)
	}
	if len(d.PolicyIDs) > 0 {
		s += " by [" + strings.Join(d.PolicyIDs, ", ") + "]"
	}
	if len(d.Reasons) > 0 {
		s += ": " + strings.Join(d.Reasons, " ")
	}
	return s
}

func newPolicyExplainCommand() *cobra.Command {
	var c policy.Case
	var labels []string
	var ttl, when, weekday string
	var hour int
	var examples, asJSON bool
	cmd := &cobra.Command{
		Use:   "explain --agent NAME --role ROLE [flags]",
		Short: "Show why one request gets its decision: matching permits and forbids, reasons",
		Long: `Decide one request with the configured policies (or --examples) and show
the decision, every permit and forbid that matched with its id, position and
annotations, any policy that failed to evaluate, and the entities and context
policy saw.

The decision is the server's answer, from the lease service's own decision
path: policy, then the governance rules (an agent that is not active is
refused; a role an access review removed, separation of duty against the
agent's live leases, the privileged safeguards and a risk score at the revoke
threshold deny or add approvals). A "policy:" line shows what the policies
alone decided when the rules changed it.

The role comes from the configuration. The agent is looked up in the store
unless --owner or --label describe it (then it need not be registered).
Hour and weekday are in policy.timezone; by default the request is made now.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := readPolicyConfig(cmd, false)
			if err != nil {
				return err
			}
			var p *policy.Engine
			switch {
			case examples:
				p, err = openExamplePolicy(&cfg.Policy)
			case !cfg.Policy.Enabled():
				return errors.New("no policy files: set policy.files in the configuration, or use --examples")
			default:
				p, err = cfg.Policy.Open(nil)
			}
			if err != nil {
				return err
			}
			var role *broker.Role
			for _, r := range cfg.Roles {
				if r.Name == c.Role.Name {
					role = r
				}
			}
			if role == nil {
				return fmt.Errorf("role %q is not in the configuration", c.Role.Name)
			}
			agent, db, err := explainAgent(cmd, cfg, c.Agent.Name, c.Agent.Owner, labels)
			if err != nil {
				return err
			}
			if db != nil {
				defer db.Close()
				if !cmd.Flags().Changed("active-role") {
					// What the server would see: the agent's live leases.
					if c.Context.ActiveRoles, err = db.LiveRoles(cmd.Context(), agent.ID, ""); err != nil {
						return fmt.Errorf("find live roles: %w", err)
					}
				}
			}
			req := broker.DecisionRequest{
				Action: c.Action, Agent: agent, Role: role, TTL: role.DefaultTTL,
				Task: c.Context.Task, Justification: c.Context.Justification,
				AuthMethod: c.Agent.AuthMethod, OnBehalfOf: c.Agent.OnBehalfOf, SourceIP: c.Context.SourceIP,
				RiskScore: c.Context.RiskScore, ActiveRoles: c.Context.ActiveRoles, Time: time.Now(),
			}
			if ttl != "" {
				if req.TTL, err = time.ParseDuration(ttl); err != nil || req.TTL <= 0 {
					return fmt.Errorf("--ttl %q: use a duration such as 30m", ttl)
				}
			}
			if when != "" || cmd.Flags().Changed("hour") || weekday != "" {
				cc := policy.CaseContext{Time: when, Weekday: weekday}
				if cmd.Flags().Changed("hour") {
					cc.Hour = &hour
				}
				if cc.Time == "" && (cc.Hour == nil || cc.Weekday == "") {
					// Fill what was not given from now, in the zone.
					now := time.Now().In(p.Location())
					if cc.Hour == nil {
						h := now.Hour()
						cc.Hour = &h
					}
					if cc.Weekday == "" {
						d := int(now.Weekday())
						if d == 0 {
							d = 7
						}
						cc.Weekday = strconv.Itoa(d)
					}
				}
				if req.Time, err = cc.RequestTime(p.Location()); err != nil {
					return err
				}
			}
			x, err := p.Explain(req)
			if err != nil {
				return err
			}
			v, err := serverVerdict(cmd, cfg, p, db, agent, req)
			if err != nil {
				return err
			}
			if o, _ := outputJSON(cmd); o || asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(explainOutput{Explanation: x, Decision: v.Decision, PolicyDecision: x.Decision, Refused: v.Refused})
			}
			printExplanation(cmd.OutOrStdout(), x, v, p.Location(), req)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.Agent.Name, "agent", "", "agent name (required)")
	f.StringVar(&c.Role.Name, "role", "", "role name from the configuration (required)")
	f.StringVar((*string)(&c.Action), "action", string(broker.ActionRequest), "request or extend")
	f.StringVar(&ttl, "ttl", "", "requested window, e.g. 30m (default: the role's default_ttl)")
	f.IntVar(&hour, "hour", 0, "hour of the request, 0-23, in policy.timezone (default: now)")
	f.StringVar(&weekday, "weekday", "", "weekday of the request, 1 (Monday) to 7 or a name (default: today)")
	f.StringVar(&when, "time", "", "time of the request, RFC 3339 (instead of --hour and --weekday)")
	f.IntVar(&c.Context.RiskScore, "risk", 0, "risk score, 0-100")
	f.StringVar(&c.Context.SourceIP, "source-ip", "", "source address of the request (default: unknown)")
	f.StringVar(&c.Agent.AuthMethod, "auth-method", broker.AuthAPIKey, "how the agent authenticated: api_key, mtls, client_secret or private_key_jwt")
	f.StringVar(&c.Agent.OnBehalfOf, "on-behalf-of", "", "the human the agent acts for")
	f.StringVar(&c.Agent.Owner, "owner", "", "owner email, to describe an agent that is not registered")
	f.StringArrayVar(&labels, "label", nil, "agent label key=value (repeatable), to describe an agent that is not registered")
	f.StringArrayVar(&c.Context.ActiveRoles, "active-role", nil, "a role the agent holds a live lease on (repeatable; default for a registered agent: its live leases)")
	f.StringVar(&c.Context.Task, "task", "policy explain", "the task of the request")
	f.StringVar(&c.Context.Justification, "justification", "", "the justification of the request")
	f.BoolVar(&examples, "examples", false, "use Stint's example policies instead of the configured ones")
	f.BoolVar(&asJSON, "json", false, "print the explanation as JSON (as -o json)")
	addOutputFlag(cmd)
	cmd.MarkFlagRequired("agent")
	cmd.MarkFlagRequired("role")
	return cmd
}

// explainAgent describes the agent from flags, or finds it in the store,
// which it then returns open (the caller closes it) for the governance
// rules that read it: role removals by access reviews, live leases.
func explainAgent(cmd *cobra.Command, cfg Config, name, owner string, labels []string) (*broker.Agent, Store, error) {
	if owner != "" || len(labels) > 0 {
		lbl, err := broker.ParseLabels(labels)
		if err != nil {
			return nil, nil, err
		}
		if owner == "" {
			owner = "owner@example.com"
		}
		return &broker.Agent{ID: "explain:" + name, Name: name, Owner: owner, Labels: lbl, State: broker.AgentActive}, nil, nil
	}
	if cfg.Store.Driver != driverPostgres {
		if _, err := os.Stat(cfg.Store.Path); err != nil {
			return nil, nil, fmt.Errorf("store %s not found: describe agent %s with --owner and --label", cfg.Store.Path, name)
		}
	}
	db, err := openConfiguredStore(cmd.Context(), cfg.Store, os.Getenv)
	if err != nil {
		return nil, nil, fmt.Errorf("open store: %w", err)
	}
	a, err := db.FindAgentByName(cmd.Context(), name)
	if err != nil {
		db.Close()
		if broker.ErrorCode(err) == broker.ENOTFOUND {
			return nil, nil, fmt.Errorf("agent %s is not registered in %s: describe it with --owner and --label", name, cfg.Store.Describe())
		}
		return nil, nil, err
	}
	return a, db, nil
}

// verdict is what the server answers a request: a decision, or a refusal
// before any decision (an agent that is not active, a window the role does
// not allow).
type verdict struct {
	Decision *broker.Decision
	// Refused is the error's code and message, as the API shows them.
	Refused *explainRefusal
}

// explainRefusal is an error the API would answer instead of a decision.
type explainRefusal struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// explainOutput is `policy explain --json`: Decision is the server's answer
// (policy's decision with the governance rules applied), PolicyDecision
// what the policies alone decided.
type explainOutput struct {
	*policy.Explanation
	Decision       *broker.Decision `json:"decision,omitempty"`
	PolicyDecision broker.Decision  `json:"policy_decision"`
	Refused        *explainRefusal  `json:"refused,omitempty"`
}

// serverVerdict decides req with the lease service's own decision path,
// wired as the server wires it: policy p, the privileged safeguards,
// separation of duty, role removals by access reviews (db, when the agent
// is registered) and risk containment at the configured threshold.
func serverVerdict(cmd *cobra.Command, cfg Config, p *policy.Engine, db Store, agent *broker.Agent, req broker.DecisionRequest) (verdict, error) {
	var store leases.Store
	if db != nil {
		store = db
	}
	svc := leases.NewService(store, nil, cfg.Roles, nil)
	svc.Decider = p
	setDecisionRules(svc, cfg)
	risk := broker.RiskAssessment{Score: req.RiskScore}
	if !cfg.Risk.Disabled {
		risk.Contain = (&governance.Risk{RevokeThreshold: cfg.Risk.RevokeThreshold}).Crosses(req.RiskScore)
	}
	actor := broker.Actor{Kind: broker.ActorAgent, Name: agent.Name, AgentID: agent.ID,
		AuthMethod: req.AuthMethod, OnBehalfOf: req.OnBehalfOf, SourceIP: req.SourceIP}
	lr := broker.LeaseRequest{Role: req.Role.Name, TTL: req.TTL.String(), Task: req.Task, Justification: req.Justification}
	d, err := svc.DecideRequest(cmd.Context(), agent, actor, lr, req.Time, risk, req.ActiveRoles)
	switch code := broker.ErrorCode(err); {
	case err == nil:
		return verdict{Decision: &d}, nil
	case code != broker.EINTERNAL:
		return verdict{Refused: &explainRefusal{Code: code, Message: userMessage(err)}}, nil
	}
	return verdict{}, err
}

func printExplanation(out io.Writer, x *policy.Explanation, v verdict, loc *time.Location, req broker.DecisionRequest) {
	switch {
	case v.Refused != nil:
		fmt.Fprintf(out, "decision:  refused (%s) before policy decides: %s\n", v.Refused.Code, v.Refused.Message)
		fmt.Fprintf(out, "policy:    %s\n", decisionSummary(x.Decision))
	default:
		fmt.Fprintf(out, "decision:  %s\n", decisionSummary(*v.Decision))
		if decisionSummary(*v.Decision) != decisionSummary(x.Decision) {
			fmt.Fprintf(out, "policy:    %s (Stint's governance rules changed it)\n", decisionSummary(x.Decision))
		}
	}
	fmt.Fprintf(out, "request:   agent %s %s role %s for %s at %s\n", req.Agent.Name, req.Action, req.Role.Name,
		req.TTL, req.Time.In(loc).Format("Mon 2006-01-02 15:04 MST"))
	fmt.Fprintf(out, "evaluated: %d of %d policies (the others' scope cannot match)\n", x.Evaluated, x.Total)
	section := func(title string, ps []policy.Info) {
		fmt.Fprintf(out, "\nmatching %s:\n", title)
		if len(ps) == 0 {
			fmt.Fprintln(out, "  (none)")
		}
		for _, p := range ps {
			fmt.Fprintf(out, "  %s  %s%s\n", p.ID, p.Position, annotationsText(p.Annotations))
			if p.Reason != "" {
				fmt.Fprintf(out, "      %s\n", p.Reason)
			}
		}
	}
	section("forbids", x.Forbids)
	section("permits", x.Permits)
	if len(x.Errors) > 0 {
		fmt.Fprintln(out, "\nfailed to evaluate (the request is denied):")
		for _, e := range x.Errors {
			fmt.Fprintf(out, "  %s  %s: %s\n", e.Policy.ID, e.Policy.Position, e.Message)
		}
	}
	fmt.Fprintf(out, "\nprincipal: %s\nresource:  %s\ncontext:   %s\n", x.Principal, x.Resource, x.Context)
}

func annotationsText(a map[string]string) string {
	keys := make([]string, 0, len(a))
	for k := range a {
		if k != policy.AnnotationID && k != policy.AnnotationReason {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  @%s(%q)", k, a[k])
	}
	return b.String()
}
