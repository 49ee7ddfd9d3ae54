package main

import (
	"context"
	"errors"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/stint-broker/stint/web/client"
)

// taskList is what `stint tasks list` prints.
type taskList struct {
	Tasks     []*client.Task `json:"tasks"`
	Truncated bool           `json:"truncated"`
}

// taskShow is what `stint tasks show` prints.
type taskShow struct {
	Task   string          `json:"task"`
	Leases []*client.Lease `json:"leases"`
}

func newTasksCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tasks",
		Short: "See and end every lease of one task over the HTTP API",
		Long: `A lease names its task (stint exec --task, or STINT_TASK, which a nested
stint exec inherits). These commands list tasks, show a task's leases, and
end every live lease of a task in one call: release (an agent its own, an
admin every agent's) or revoke (admin token, with a reason). TASK defaults
to STINT_TASK. The server and credentials are given as for stint leases;
every command prints a table by default and JSON with -o json.`,
	}
	addClientFlags(cmd.PersistentFlags())

	var filter client.TaskFilter
	var state string
	list := &cobra.Command{
		Use:   "list [--state S] [--agent A]",
		Short: "List tasks with live leases (an agent sees its own)",
		Args:  cobra.NoArgs,
		RunE: runClient(func(ctx context.Context, c *client.Client, _ []string) (any, error) {
			if state != "" {
				filter.States = strings.Split(state, ",")
			}
			tasks, truncated, err := c.Tasks(ctx, filter)
			if tasks == nil {
				tasks = []*client.Task{}
			}
			return taskList{Tasks: tasks, Truncated: truncated}, err
		}),
	}
	list.Flags().StringVar(&state, "state", "", "group leases in these states (comma-separated; default: the live ones)")
	list.Flags().StringVar(&filter.Agent, "agent", "", "only leases of this agent (admins)")
	list.Flags().IntVar(&filter.Max, "max", 0, "read at most this many leases, newest first (default 5000)")

	show := taskCommand("show", "Show every lease of a task, newest first", func(ctx context.Context, c *client.Client, task string) (any, error) {
		leases, err := c.TaskLeaseList(ctx, task)
		if leases == nil {
			leases = []*client.Lease{}
		}
		return taskShow{Task: task, Leases: leases}, err
	})
	release := taskCommand("release", "Release every live lease of a task (an agent its own; an admin every agent's)", func(ctx context.Context, c *client.Client, task string) (any, error) {
		return c.ReleaseTask(ctx, task)
	})
	var reason string
	revoke := taskCommand("revoke", "Revoke every agent's live leases of a task (admin token)", func(ctx context.Context, c *client.Client, task string) (any, error) {
		if strings.TrimSpace(reason) == "" {
			return nil, usageError(errors.New("give --reason: it is recorded in each lease's history"))
		}
		return c.RevokeTask(ctx, task, reason)
	})
	revoke.Use += " --reason TEXT"
	revoke.Flags().StringVar(&reason, "reason", "", "why (required; recorded in each lease's history)")

	subs := []*cobra.Command{list, show, release, revoke}
	for _, s := range subs {
		addOutputFlag(s)
	}
	cmd.AddCommand(subs...)
	return cmd
}

// taskCommand is a subcommand that acts on one task: the argument, else
// STINT_TASK.
func taskCommand(use, short string, call func(ctx context.Context, c *client.Client, task string) (any, error)) *cobra.Command {
	return &cobra.Command{
		Use: use + " [TASK]", Short: short, Args: cobra.MaximumNArgs(1),
		RunE: runClient(func(ctx context.Context, c *client.Client, args []string) (any, error) {
			task, err := taskArg(args)
			if err != nil {
				return nil, err
			}
			return call(ctx, c, task)
		}),
	}
}

// taskArg is the task named on the command line, else STINT_TASK.
func taskArg(args []string) (string, error) {
	if len(args) == 1 && strings.TrimSpace(args[0]) != "" {
		return args[0], nil
	}
	if t := os.Getenv(taskEnv); strings.TrimSpace(t) != "" {
		return t, nil
	}
	return "", usageError(errors.New("name the task: stint tasks COMMAND TASK, or set " + taskEnv))
}
