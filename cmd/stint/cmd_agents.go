package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/stint-broker/stint/broker"
)

func newAgentsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agents",
		Short: "Register and manage agents (run on the server host, against its store)",
		Long: `Register and manage agents. These commands open the store and Vault named
in the configuration file directly and act as an admin: run them on the
server host.`,
	}
	cmd.AddCommand(newAgentsCreateCommand(), newAgentsListCommand(), newAgentsRotateKeyCommand(),
		newAgentsStateCommand("disable", broker.AgentDisabled, "Disable an agent for good: its keys are revoked and its live leases revoked; it can never be re-activated"),
		newAgentsStateCommand("suspend", broker.AgentSuspended, "Suspend an agent: it cannot authenticate and its live leases are revoked; activate undoes it"),
		newAgentsStateCommand("activate", broker.AgentActive, "Re-activate a suspended agent (a disabled agent cannot be re-activated)"),
		newAgentsRevokeAllCommand(),
		newAgentsContainmentsCommand())
	cmd.AddCommand(agentIdentityCommands()...)
	return cmd
}

func newAgentsCreateCommand() *cobra.Command {
	var owner string
	var labels []string
	var keyTTL time.Duration
	var methods []string
	cmd := &cobra.Command{
		Use:   "create NAME --owner EMAIL [--label k=v]... [--auth-methods m1,m2]",
		Short: "Register an agent and print its id and API key (shown once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			lbl, err := broker.ParseLabels(labels)
			if err != nil {
				return err
			}
			m, err := openMain(cmd)
			if err != nil {
				return err
			}
			defer m.Close()
			a, secret, key, err := m.Agents.CreateAgent(adminContext(cmd.Context()), broker.NewAgent{Name: args[0], Owner: owner, Labels: lbl, KeyTTL: keyTTL, AuthMethods: methods})
			if err != nil {
				return err
			}
			created := newAgentKey{Agent: a}
			if key != nil {
				created.APIKey, created.KeyExpiresAt = secret, &key.ExpiresAt
			}
			return show(cmd, created, func(out io.Writer) error {
				fmt.Fprintf(out, "agent:   %s\nid:      %s\nowner:   %s\nlabels:  %s\nauth:    %s\n", a.Name, a.ID, a.Owner, broker.FormatLabels(a.Labels), strings.Join(a.AuthMethods, ","))
				if key != nil {
					printKey(out, secret, key)
				} else {
					printCredentialSteps(out, a)
				}
				return nil
			})
		},
	}
	addOutputFlag(cmd)
	cmd.Flags().StringVar(&owner, "owner", "", "email of the human accountable for the agent (required)")
	cmd.Flags().StringArrayVar(&labels, "label", nil, "label key=value (repeatable); roles select eligible agents by label")
	cmd.Flags().DurationVar(&keyTTL, "key-ttl", 0, "API key lifetime (default keys.default_ttl)")
	cmd.Flags().StringSliceVar(&methods, "auth-methods", nil, "authentication methods the agent may use (default api_key): api_key, mtls, client_secret, private_key_jwt")
	cmd.MarkFlagRequired("owner")
	return cmd
}

// newAgentKey is what agents create and rotate-key show with -o json: the
// agent and its new API key, shown this once.
type newAgentKey struct {
	*broker.Agent
	APIKey       string     `json:"api_key,omitempty"`
	KeyExpiresAt *time.Time `json:"key_expires_at,omitempty"`
}

// printCredentialSteps says how an agent that may not use an API key gets
// its first credential, one line per method it allows.
func printCredentialSteps(out io.Writer, a *broker.Agent) {
	fmt.Fprintln(out, "No API key: the agent may not use api_key. Its credentials:")
	for _, m := range a.AuthMethods {
		switch m {
		case broker.AuthMTLS:
			fmt.Fprintf(out, "  mtls:            make a key and CSR (openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %[1]s.key -out %[1]s.csr -subj /CN=%[1]s),\n"+
				"                   then stint agents enroll %[1]s --csr %[1]s.csr --out %[1]s.pem (needs the enrolment CA: stint ca init)\n", a.Name)
		case broker.AuthClientSecret:
			fmt.Fprintf(out, "  client_secret:   stint agents client-secret %s\n", a.Name)
		case broker.AuthPrivateKeyJWT:
			fmt.Fprintf(out, "  private_key_jwt: stint agents set-jwk %s --jwk PUBLIC-JWK-FILE\n", a.Name)
		}
	}
}

func printKey(out io.Writer, secret string, key *broker.APIKey) {
	fmt.Fprintf(out, "api key: %s\n", secret)
	fmt.Fprintf(out, "expires: %s\n", key.ExpiresAt.Format(time.RFC3339))
	fmt.Fprintln(out, "The key is shown only now; Stint stores only its hash.")
}

func newAgentsListCommand() *cobra.Command {
	return withOutput(&cobra.Command{
		Use:   "list",
		Short: "List agents",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := openMain(cmd)
			if err != nil {
				return err
			}
			defer m.Close()
			agents, total, err := m.Agents.FindAgents(adminContext(cmd.Context()), broker.AgentFilter{})
			if err != nil {
				return err
			}
			if agents == nil {
				agents = []*broker.Agent{}
			}
			return show(cmd, struct {
				Agents []*broker.Agent `json:"agents"`
				Total  int             `json:"total"`
			}{agents, total}, func(out io.Writer) error {
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tID\tOWNER\tSTATE\tLABELS\tLAST SEEN")
				for _, a := range agents {
					seen := "never"
					if a.LastSeenAt != nil {
						seen = a.LastSeenAt.Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.Name, a.ID, a.Owner, a.State, broker.FormatLabels(a.Labels), seen)
				}
				tw.Flush()
				_, err := fmt.Fprintf(out, "%d agents\n", total)
				return err
			})
		},
	})
}

func newAgentsRotateKeyCommand() *cobra.Command {
	var ttl time.Duration
	cmd := agentCommand("rotate-key NAME|ID", "Revoke an agent's API keys and print a new one (shown once)", "",
		func(cmd *cobra.Command, m *Main, a *broker.Agent) error {
			secret, key, err := m.Agents.RotateKey(adminContext(cmd.Context()), a.ID, ttl)
			if err != nil {
				return err
			}
			return show(cmd, newAgentKey{Agent: a, APIKey: secret, KeyExpiresAt: &key.ExpiresAt}, func(out io.Writer) error {
				fmt.Fprintf(out, "agent:   %s (%s)\n", a.Name, a.ID)
				printKey(out, secret, key)
				return nil
			})
		})
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "new key lifetime (default keys.default_ttl)")
	return cmd
}

func newAgentsStateCommand(verb string, state broker.AgentState, short string) *cobra.Command {
	var (
		reason string
		wait   time.Duration
	)
	long := containLong
	if state == broker.AgentActive {
		long = ""
	}
	cmd := agentCommand(verb+" NAME|ID", short, long,
		func(cmd *cobra.Command, m *Main, a *broker.Agent) error {
			ctx := adminContext(cmd.Context())
			if state == broker.AgentActive {
				a, err := m.Agents.ActivateAgent(ctx, a.ID)
				if err != nil {
					return err
				}
				return show(cmd, a, func(out io.Writer) error {
					_, err := fmt.Fprintf(out, "agent %s is %s\n", a.Name, a.State)
					return err
				})
			}
			return containAndWait(cmd, m, broker.ContainRequest{AgentID: a.ID, State: state, Reason: reason}, wait)
		})
	if state != broker.AgentActive {
		cmd.Flags().StringVar(&reason, "reason", "", "why (recorded on the agent's history and on every lease it ends)")
		cmd.Flags().DurationVar(&wait, "wait", 2*time.Minute, "how long to wait for Vault to confirm every revocation (0: do not wait)")
	}
	return cmd
}

func newAgentsRevokeAllCommand() *cobra.Command {
	var (
		reason string
		wait   time.Duration
	)
	cmd := agentCommand("revoke-all NAME|ID --reason TEXT", "Revoke every live lease of an agent (kill switch)", containLong,
		func(cmd *cobra.Command, m *Main, a *broker.Agent) error {
			return containAndWait(cmd, m, broker.ContainRequest{AgentID: a.ID, Reason: reason}, wait)
		})
	cmd.Flags().StringVar(&reason, "reason", "", "why the leases are revoked (required; recorded in history)")
	cmd.Flags().DurationVar(&wait, "wait", 2*time.Minute, "how long to wait for Vault to confirm every revocation (0: do not wait)")
	cmd.MarkFlagRequired("reason")
	return cmd
}

// containLong explains what the kill-switch commands do and how they exit.
const containLong = `The kill switch. In one store transaction the agent is suspended or disabled
(revoke-all leaves its state alone) and every live lease of it (pending,
approved, issuing, active, revoking) is marked to end; from then on none of
them can become active. The revocation queue then revokes each credential in
Vault, retrying with backoff until Vault confirms, across restarts.

The command waits up to --wait for Vault to confirm every revocation and shows
the progress. The revocations are done by the running server (stint serve),
and by this command too when it has Stint's Vault token (vault.token_env).

Exit status: 0 when Vault confirmed every revocation; 3 when the wait ended
first (the containment stands and the queue keeps going: follow it with
"stint agents containments NAME" or GET /v1/containments/ID); 1 on an error.`

// errNotConfirmed is the exit status of a containment that the wait did not
// see completed.
var errNotConfirmed = &exitStatus{code: 3, err: errors.New("not every revocation was confirmed by Vault within --wait")}

// containAndWait contains the agent and waits for Vault to confirm every
// revocation, printing the progress. With Stint's Vault token it revokes as
// well; without it, the running server's revocation queue does.
func containAndWait(cmd *cobra.Command, m *Main, req broker.ContainRequest, wait time.Duration) error {
	ctx := adminContext(cmd.Context())
	asJSON, err := outputJSON(cmd)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if asJSON {
		out = io.Discard // the containment as it ends up, below
	}
	c, err := m.Leases.ContainAgent(ctx, req)
	if err != nil {
		return err
	}
	switch c.AgentState {
	case "":
		fmt.Fprintf(out, "agent %s contained (containment %s): %d live leases marked to end\n", c.Agent, c.ID, c.Progress.Total)
	default:
		fmt.Fprintf(out, "agent %s is %s (containment %s): %d live leases marked to end\n", c.Agent, c.AgentState, c.ID, c.Progress.Total)
	}
	if !m.vaultMissing {
		// Revoke from here too: the kill switch must not depend on the
		// server being up. Claims keep the two from revoking one lease at once.
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			for rctx.Err() == nil {
				if err := m.Leases.RetryRevocations(rctx); err != nil && rctx.Err() == nil {
					m.Logger.Warn("revocation pass failed", "err", err)
				}
				select {
				case <-rctx.Done():
				case <-time.After(250 * time.Millisecond):
				}
			}
		}()
	}
	p := newProgressLine(cmd.ErrOrStderr())
	deadline := time.Now().Add(wait)
	for !c.Progress.Done() && time.Now().Before(deadline) {
		p.show(containmentLine(c))
		select {
		case <-cmd.Context().Done():
			deadline = time.Now()
		case <-time.After(200 * time.Millisecond):
		}
		if c, err = m.Leases.WaitContainment(ctx, c.ID, 0); err != nil {
			p.done()
			return err
		}
	}
	p.done()
	if asJSON {
		if err := writeJSON(cmd.OutOrStdout(), c); err != nil {
			return err
		}
	}
	if c.Progress.Done() {
		fmt.Fprintf(out, "%d of %d leases ended; Vault confirmed every revocation\n", c.Progress.Ended, c.Progress.Total)
		return nil
	}
	fmt.Fprintf(out, "NOT CONFIRMED: %d of %d leases ended; %d still wait for Vault to confirm their revocation\n",
		c.Progress.Ended, c.Progress.Total, c.Progress.Revoking)
	for _, e := range c.Progress.Errors {
		fmt.Fprintf(out, "  %d failing: %s\n", e.Leases, e.Error)
	}
	if m.vaultMissing {
		fmt.Fprintf(out, "This command has no Vault token (%s), so the running server (stint serve) revokes them; is it running?\n", m.Config.Vault.TokenEnv)
	}
	fmt.Fprintf(out, "The containment stands and the revocation queue keeps retrying; follow it with: stint agents containments %s\n", c.Agent)
	return errNotConfirmed
}

// containmentLine says how far a containment got, in one line.
func containmentLine(c *broker.Containment) string {
	p := c.Progress
	line := fmt.Sprintf("ended %d/%d", p.Ended, p.Total)
	if p.Failing > 0 {
		line += fmt.Sprintf(", %d failing", p.Failing)
		if len(p.Errors) > 0 {
			line += " (" + p.Errors[0].Error + ")"
		}
	}
	return line
}

func newAgentsContainmentsCommand() *cobra.Command {
	return agentCommand("containments NAME|ID", "List an agent's containments (kill switches) and their progress", "",
		func(cmd *cobra.Command, m *Main, a *broker.Agent) error {
			cs, err := m.Leases.FindContainments(adminContext(cmd.Context()), a.ID, 0)
			if err != nil {
				return err
			}
			if cs == nil {
				cs = []*broker.Containment{}
			}
			return show(cmd, struct {
				Containments []*broker.Containment `json:"containments"`
			}{cs}, func(out io.Writer) error {
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "ID\tCREATED\tSTATE\tBY\tPROGRESS\tREASON")
				for _, c := range cs {
					state := string(c.AgentState)
					if state == "" {
						state = "-"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.CreatedAt.UTC().Format(time.RFC3339), state, c.Actor, containmentLine(c), c.Reason)
				}
				return w.Flush()
			})
		})
}
