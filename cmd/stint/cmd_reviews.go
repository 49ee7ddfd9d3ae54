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

func newReviewsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "reviews",
		Short: "Run, list and attest access reviews and break-glass post-reviews (on the server host)",
		Long: `Access reviews make every agent's owner attest, role by role, that the agent
still needs what it may request, with evidence: when it last held a lease on
the role, how many it held, whether it never used it. Reviews open on
reviews.schedule (default quarterly) or with "stint reviews run". An owner
keeps or removes each role; removing revokes the agent's live leases on the
role and bars it from requesting it again. An agent whose review is still
open at the deadline (reviews.deadline) is suspended; reviews.grace later it
is disabled. Agents without a lease in reviews.inactive_days are flagged for
deprovisioning.

A break-glass grant opens a post-review that the owner closes with a note
("stint reviews close-breakglass"); an overdue one is escalated to security.

These commands open the store named in the configuration file directly: run
them on the server host. Without --as you act as an admin (recorded as
cli:$USER); with --as EMAIL you act as that approver and see only the
reviews of agents you own. Remote owners use the API with an approver token:
GET /v1/reviews, POST /v1/reviews/{id}/attest and /close.`,
	}
	cmd.AddCommand(newReviewsRunCommand(), newReviewsListCommand(), newReviewsShowCommand(),
		newReviewsAttestCommand(), newReviewsCloseCommand())
	return cmd
}

// reviewContext is an admin context, or with as an approver's.
func reviewContext(ctx context.Context, as string) context.Context {
	if as == "" {
		return adminContext(ctx)
	}
	return approverContext(ctx, as)
}

func newReviewsRunCommand() *cobra.Command {
	return withOutput(&cobra.Command{
		Use:   "run",
		Short: "Open an access review for every active agent without one, then enforce overdue reviews",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := openMain(cmd)
			if err != nil {
				return err
			}
			defer m.Close()
			opened, err := m.Reviews.RunReviews(adminContext(cmd.Context()))
			if err != nil {
				return err
			}
			return show(cmd, reviewList{Reviews: nonNilReviews(opened), Total: len(opened)}, func(out io.Writer) error {
				if len(opened) == 0 {
					fmt.Fprintln(out, "No review opened: every active agent with roles already has one open.")
					return nil
				}
				printReviewList(out, opened)
				_, err := fmt.Fprintf(out, "\n%d review(s) opened.\n", len(opened))
				return err
			})
		},
	})
}

// reviewList is what reviews list and run show with -o json.
type reviewList struct {
	Reviews []*broker.Review `json:"reviews"`
	Total   int              `json:"total"`
}

func nonNilReviews(r []*broker.Review) []*broker.Review {
	if r == nil {
		return []*broker.Review{}
	}
	return r
}

func newReviewsListCommand() *cobra.Command {
	var as, state, kind string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List reviews, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var filter broker.ReviewFilter
			switch v := broker.ReviewState(state); v {
			case "":
			case broker.ReviewOpen, broker.ReviewClosed:
				filter.State = &v
			default:
				return fmt.Errorf("--state must be open or closed, not %q", state)
			}
			switch v := broker.ReviewKind(kind); v {
			case "":
			case broker.ReviewAccess, broker.ReviewBreakglass:
				filter.Kind = &v
			default:
				return fmt.Errorf("--kind must be access or breakglass, not %q", kind)
			}
			m, err := openMain(cmd)
			if err != nil {
				return err
			}
			defer m.Close()
			reviews, total, err := m.Reviews.FindReviews(reviewContext(cmd.Context(), as), filter)
			if err != nil {
				return err
			}
			return show(cmd, reviewList{Reviews: nonNilReviews(reviews), Total: total}, func(out io.Writer) error {
				printReviewList(out, reviews)
				_, err := fmt.Fprintf(out, "\n%d review(s).\n", total)
				return err
			})
		},
	}
	addOutputFlag(cmd)
	cmd.Flags().StringVar(&as, "as", "", "act as this approver (an agent owner) instead of an admin")
	cmd.Flags().StringVar(&state, "state", "", "only reviews in this state: open or closed")
	cmd.Flags().StringVar(&kind, "kind", "", "only reviews of this kind: access or breakglass")
	return cmd
}

func printReviewList(out io.Writer, reviews []*broker.Review) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tSTATE\tAGENT\tOWNER\tDUE\tROLES\tFLAGS")
	for _, r := range reviews {
		done := 0
		for _, it := range r.Items {
			if it.Verdict != "" {
				done++
			}
		}
		var flags []string
		if r.Inactive {
			flags = append(flags, "inactive")
		}
		if r.SuspendedAt != nil {
			flags = append(flags, "suspended")
		}
		if r.DisabledAt != nil {
			flags = append(flags, "disabled")
		}
		if r.EscalatedAt != nil {
			flags = append(flags, "escalated")
		}
		roles := fmt.Sprintf("%d/%d attested", done, len(r.Items))
		if r.Kind == broker.ReviewBreakglass {
			roles = "lease " + r.LeaseID
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Kind, r.State, r.Agent, r.Owner,
			r.DueAt.UTC().Format(time.RFC3339), roles, strings.Join(flags, ","))
	}
	tw.Flush()
}

func newReviewsShowCommand() *cobra.Command {
	var as string
	cmd := &cobra.Command{
		Use:   "show REVIEW_ID",
		Short: "Show one review with each role's evidence and verdict",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := openMain(cmd)
			if err != nil {
				return err
			}
			defer m.Close()
			r, err := m.Reviews.FindReview(reviewContext(cmd.Context(), as), args[0])
			if err != nil {
				return err
			}
			return show(cmd, r, func(out io.Writer) error {
				printReview(out, r)
				return nil
			})
		},
	}
	addOutputFlag(cmd)
	cmd.Flags().StringVar(&as, "as", "", "act as this approver (an agent owner) instead of an admin")
	return cmd
}

func printReview(out io.Writer, r *broker.Review) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "review:\t%s (%s, %s)\n", r.ID, r.Kind, r.State)
	fmt.Fprintf(tw, "agent:\t%s (owner %s)\n", r.Agent, r.Owner)
	fmt.Fprintf(tw, "opened:\t%s\n", r.CreatedAt.UTC().Format(time.RFC3339))
	fmt.Fprintf(tw, "due:\t%s\n", r.DueAt.UTC().Format(time.RFC3339))
	if r.LeaseID != "" {
		fmt.Fprintf(tw, "break-glass lease:\t%s\n", r.LeaseID)
	}
	if r.LastLeaseAt != nil {
		fmt.Fprintf(tw, "last lease request:\t%s\n", r.LastLeaseAt.UTC().Format(time.RFC3339))
	}
	if r.Inactive {
		fmt.Fprintf(tw, "flag:\tinactive: no lease requested recently; consider disabling the agent\n")
	}
	for _, x := range []struct {
		what string
		at   *time.Time
	}{{"suspended", r.SuspendedAt}, {"disabled", r.DisabledAt}, {"escalated", r.EscalatedAt}, {"closed", r.ClosedAt}} {
		if x.at != nil {
			fmt.Fprintf(tw, "%s:\t%s\n", x.what, x.at.UTC().Format(time.RFC3339))
		}
	}
	if r.ClosedBy != "" {
		fmt.Fprintf(tw, "closed by:\t%s %s\n", r.ClosedBy, r.Note)
	}
	tw.Flush()
	if len(r.Items) == 0 {
		return
	}
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tLEASES\tLAST USED\tVERDICT\tBY\tNOTE")
	for _, it := range r.Items {
		last := "never"
		if it.LastLeaseAt != nil {
			last = it.LastLeaseAt.UTC().Format(time.RFC3339)
		}
		verdict := "-"
		if it.Verdict != "" {
			verdict = string(it.Verdict)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", it.Role, it.LeaseCount, last, verdict, it.AttestedBy, it.Note)
	}
	tw.Flush()
	// Every attestation, when a role has more than the one shown above.
	for _, it := range r.Items {
		if len(it.Attestations) < 2 {
			continue
		}
		fmt.Fprintf(out, "\n%s attestations:\n", it.Role)
		for _, a := range it.Attestations {
			fmt.Fprintf(out, "  %s  %s by %s", a.At.UTC().Format(time.RFC3339), a.Verdict, a.By)
			if a.Note != "" {
				fmt.Fprintf(out, ": %s", a.Note)
			}
			fmt.Fprintln(out)
		}
	}
}

func newReviewsAttestCommand() *cobra.Command {
	var as, note string
	var keep, remove bool
	cmd := &cobra.Command{
		Use:   "attest REVIEW_ID ROLE --keep|--remove",
		Short: "Keep or remove one role of an access review (the last verdict closes it)",
		Long: `Record your verdict for one role of an open access review. --remove revokes
the agent's live leases on the role at once and bars it from requesting the
role again, whatever its labels say; it is final. Every attestation is kept:
an admin's beside the owner's. Only the agent's owner (--as) and admins may
attest.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keep == remove {
				return fmt.Errorf("give exactly one of --keep and --remove")
			}
			verdict := broker.VerdictKeep
			if remove {
				verdict = broker.VerdictRemove
			}
			m, err := openMain(cmd)
			if err != nil {
				return err
			}
			defer m.Close()
			r, err := m.Reviews.Attest(reviewContext(cmd.Context(), as), args[0], args[1], verdict, note)
			if err != nil {
				return err
			}
			return show(cmd, r, func(out io.Writer) error {
				printReview(out, r)
				return nil
			})
		},
	}
	addOutputFlag(cmd)
	cmd.Flags().BoolVar(&keep, "keep", false, "the agent still needs the role")
	cmd.Flags().BoolVar(&remove, "remove", false, "the agent no longer needs the role: revoke and bar it")
	cmd.Flags().StringVar(&note, "note", "", "why (recorded in the review and the audit log)")
	cmd.Flags().StringVar(&as, "as", "", "act as this approver (the agent's owner) instead of an admin")
	return cmd
}

func newReviewsCloseCommand() *cobra.Command {
	var as, note string
	cmd := &cobra.Command{
		Use:   "close-breakglass REVIEW_ID --note TEXT",
		Short: "Close a break-glass post-review with a note on the emergency",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := openMain(cmd)
			if err != nil {
				return err
			}
			defer m.Close()
			r, err := m.Reviews.CloseBreakglass(reviewContext(cmd.Context(), as), args[0], note)
			if err != nil {
				return err
			}
			return show(cmd, r, func(out io.Writer) error {
				printReview(out, r)
				return nil
			})
		},
	}
	addOutputFlag(cmd)
	cmd.Flags().StringVar(&note, "note", "", "what the emergency was and what was done (required)")
	cmd.Flags().StringVar(&as, "as", "", "act as this approver (the agent's owner) instead of an admin")
	cmd.MarkFlagRequired("note")
	return cmd
}
