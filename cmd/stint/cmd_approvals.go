package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/stint-broker/stint/broker"
)

func newApprovalsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "approvals",
		Short: "List and decide pending leases as an approver (run on the server host, against its store)",
		Long: `List and decide leases that wait for human approval, when Slack is not at
hand. These commands open the store named in the configuration file directly:
run them on the server host. --as names the approver you act as; it must be
listed under approvers: in the configuration, and the same rules hold as in
Slack: only members of the lease's approver group decide it, never the owner
of the agent, never the user the agent acts for, and every answer is bound to
the digest of the request that "stint approvals list" shows.

Remote approvers use the API with an approver token instead:
GET /v1/approvals, POST /v1/leases/{id}/approve and /deny.`,
	}
	cmd.AddCommand(newApprovalsListCommand(), newApprovalsDecideCommand(broker.VerdictApprove), newApprovalsDecideCommand(broker.VerdictDeny))
	return cmd
}

// approverContext is the context of an approver acting from the server
// host.
func approverContext(ctx context.Context, email string) context.Context {
	return broker.NewContextWithActor(ctx, broker.Actor{Kind: broker.ActorApprover, Name: strings.ToLower(strings.TrimSpace(email)), AuthMethod: "local"})
}

func newApprovalsListCommand() *cobra.Command {
	var as string
	cmd := &cobra.Command{
		Use:   "list --as EMAIL",
		Short: "List the pending leases you may decide, with the digest to answer with",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := openMain(cmd)
			if err != nil {
				return err
			}
			defer m.Close()
			pending, err := m.Approvals.FindPendingApprovals(approverContext(cmd.Context(), as))
			if err != nil {
				return err
			}
			if pending == nil {
				pending = []*broker.PendingApproval{}
			}
			return show(cmd, struct {
				Approvals []*broker.PendingApproval `json:"approvals"`
			}{pending}, func(out io.Writer) error {
				printPendingApprovals(out, pending)
				return nil
			})
		},
	}
	addOutputFlag(cmd)
	cmd.Flags().StringVar(&as, "as", "", "email of the configured approver you act as (required)")
	cmd.MarkFlagRequired("as")
	return cmd
}

func printPendingApprovals(out io.Writer, pending []*broker.PendingApproval) {
	if len(pending) == 0 {
		fmt.Fprintln(out, "Nothing waits for your approval.")
		return
	}
	for i, p := range pending {
		if i > 0 {
			fmt.Fprintln(out)
		}
		l := p.Lease
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "lease:\t%s\n", l.ID)
		fmt.Fprintf(tw, "agent:\t%s (owner %s)\n", l.Agent, p.Owner)
		fmt.Fprintf(tw, "role:\t%s for %s\n", l.Role, l.TTL)
		fmt.Fprintf(tw, "task:\t%s\n", l.Task)
		fmt.Fprintf(tw, "justification:\t%s\n", l.Justification)
		if d := l.PolicyDecision; d != nil {
			fmt.Fprintf(tw, "policy:\t%s\n", strings.Join(d.Reasons, "; "))
			fmt.Fprintf(tw, "approvals:\t%d of %d from %s\n", countApprovals(p.Approvals), p.Needed, d.ApproverGroup)
		}
		fmt.Fprintf(tw, "risk score:\t%d\n", l.RiskScore)
		if l.DecideBy != nil {
			fmt.Fprintf(tw, "decide by:\t%s\n", l.DecideBy.UTC().Format(time.RFC3339))
		}
		for _, a := range p.Approvals {
			fmt.Fprintf(tw, "answer:\t%s by %s via %s at %s %s\n", a.Verdict, a.Approver, a.Via, a.At.UTC().Format(time.RFC3339), a.Reason)
		}
		fmt.Fprintf(tw, "digest:\t%s\n", p.Digest)
		tw.Flush()
	}
	fmt.Fprintf(out, "\n%d pending. Answer with: stint approvals approve|deny LEASE --digest DIGEST --as EMAIL\n", len(pending))
}

func countApprovals(list []*broker.Approval) int {
	n := 0
	for _, a := range list {
		if a.Verdict == broker.VerdictApprove {
			n++
		}
	}
	return n
}

func newApprovalsDecideCommand(v broker.Verdict) *cobra.Command {
	var as, digest, reason string
	short := "Approve a pending lease (with the digest from \"stint approvals list\")"
	if v == broker.VerdictDeny {
		short = "Deny a pending lease, with an optional reason"
	}
	cmd := &cobra.Command{
		Use:   string(v) + " LEASE_ID --digest DIGEST --as EMAIL",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := openMain(cmd)
			if err != nil {
				return err
			}
			defer m.Close()
			ctx := approverContext(cmd.Context(), as)
			var l *broker.Lease
			if v == broker.VerdictApprove {
				l, err = m.Approvals.Approve(ctx, args[0], digest)
			} else {
				l, err = m.Approvals.Deny(ctx, args[0], digest, reason)
			}
			if err != nil {
				return err
			}
			return show(cmd, l, func(out io.Writer) error {
				fmt.Fprintf(out, "lease %s is %s\n", l.ID, l.State)
				if l.State == broker.LeaseApproved && l.ActivateBy != nil {
					fmt.Fprintf(out, "the agent must activate it by %s\n", l.ActivateBy.UTC().Format(time.RFC3339))
				}
				return nil
			})
		},
	}
	addOutputFlag(cmd)
	cmd.Flags().StringVar(&as, "as", "", "email of the configured approver you act as (required)")
	cmd.Flags().StringVar(&digest, "digest", "", "digest of the request as \"stint approvals list\" showed it (required)")
	if v == broker.VerdictDeny {
		cmd.Flags().StringVar(&reason, "reason", "", "why (optional; recorded and shown to the agent's owner)")
	}
	cmd.MarkFlagRequired("as")
	cmd.MarkFlagRequired("digest")
	return cmd
}
