package main

import (
	"fmt"
	"io"
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
		newAgentsRevokeAllCommand())
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
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "agent:   %s\nid:      %s\nowner:   %s\nlabels:  %s\n", a.Name, a.ID, a.Owner, broker.FormatLabels(a.Labels))
			printKey(out, secret, key)
			return nil
		},
	}
	cmd.Flags().StringVar(&owner, "owner", "", "email of the human accountable for the agent (required)")
	cmd.Flags().StringArrayVar(&labels, "label", nil, "label key=value (repeatable); roles select eligible agents by label")
	cmd.Flags().DurationVar(&keyTTL, "key-ttl", 0, "API key lifetime (default keys.default_ttl)")
	cmd.Flags().StringSliceVar(&methods, "auth-methods", nil, "authentication methods the agent may use (default api_key): api_key, mtls, client_secret, private_key_jwt")
	cmd.MarkFlagRequired("owner")
	return cmd
}

func printKey(out io.Writer, secret string, key *broker.APIKey) {
	fmt.Fprintf(out, "api key: %s\n", secret)
	fmt.Fprintf(out, "expires: %s\n", key.ExpiresAt.Format(time.RFC3339))
	fmt.Fprintln(out, "The key is shown only now; Stint stores only its hash.")
}

func newAgentsListCommand() *cobra.Command {
	return &cobra.Command{
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
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tID\tOWNER\tSTATE\tLABELS\tLAST SEEN")
			for _, a := range agents {
				seen := "never"
				if a.LastSeenAt != nil {
					seen = a.LastSeenAt.Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.Name, a.ID, a.Owner, a.State, broker.FormatLabels(a.Labels), seen)
			}
			tw.Flush()
			fmt.Fprintf(cmd.OutOrStdout(), "%d agents\n", total)
			return nil
		},
	}
}

func newAgentsRotateKeyCommand() *cobra.Command {
	var ttl time.Duration
	cmd := agentCommand("rotate-key NAME|ID", "Revoke an agent's API keys and print a new one (shown once)", "",
		func(cmd *cobra.Command, m *Main, a *broker.Agent) error {
			secret, key, err := m.Agents.RotateKey(adminContext(cmd.Context()), a.ID, ttl)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "agent:   %s (%s)\n", a.Name, a.ID)
			printKey(cmd.OutOrStdout(), secret, key)
			return nil
		})
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "new key lifetime (default keys.default_ttl)")
	return cmd
}

func newAgentsStateCommand(verb string, state broker.AgentState, short string) *cobra.Command {
	return agentCommand(verb+" NAME|ID", short, "",
		func(cmd *cobra.Command, m *Main, a *broker.Agent) error {
			ctx := adminContext(cmd.Context())
			a, err := m.Agents.SetAgentState(ctx, a.ID, state)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "agent %s is %s\n", a.Name, a.State)
			if state == broker.AgentActive {
				return nil
			}
			revoked, err := m.Leases.RevokeAgentLeases(ctx, a.ID, "agent "+string(state))
			printRevoked(cmd.OutOrStdout(), revoked)
			return err
		})
}

func newAgentsRevokeAllCommand() *cobra.Command {
	var reason string
	cmd := agentCommand("revoke-all NAME|ID --reason TEXT", "Revoke every live lease of an agent (kill switch)", "",
		func(cmd *cobra.Command, m *Main, a *broker.Agent) error {
			revoked, err := m.Leases.RevokeAgentLeases(adminContext(cmd.Context()), a.ID, reason)
			printRevoked(cmd.OutOrStdout(), revoked)
			return err
		})
	cmd.Flags().StringVar(&reason, "reason", "", "why the leases are revoked (required; recorded in history)")
	cmd.MarkFlagRequired("reason")
	return cmd
}

func printRevoked(out io.Writer, leases []*broker.Lease) {
	for _, l := range leases {
		fmt.Fprintf(out, "lease %s (%s): %s\n", l.ID, l.Role, l.State)
	}
	fmt.Fprintf(out, "%d live leases revoked\n", len(leases))
}
