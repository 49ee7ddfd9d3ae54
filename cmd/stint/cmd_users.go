package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/users"
)

func newUsersCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "users",
		Short: "Manage the web console's users (run on the server host, against its store)",
		Long: `Manage the humans who log in to the web console at /console. Each has a role:
admin (everything), approver (reads, and decides pending leases, never of an
agent they own; needs --email) or reviewer (reads and exports only).
Passwords are stored only as bcrypt hashes. Users are disabled, never
deleted, so that the audit log keeps naming them. These commands open the
store named in the configuration file directly.`,
	}
	cmd.AddCommand(newUsersAddCommand(), newUsersListCommand(), newUsersDisableCommand(), newUsersPasswordCommand())
	return cmd
}

func newUsersAddCommand() *cobra.Command {
	var role, email string
	var fromStdin bool
	cmd := &cobra.Command{
		Use:   "add NAME --role admin|approver|reviewer [--email EMAIL] [--password-stdin]",
		Short: "Add a console user; the password is prompted for, or read from stdin",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			u := &broker.User{Name: args[0], Role: broker.UserRole(role), Email: strings.ToLower(strings.TrimSpace(email)), State: broker.UserActive}
			// Validate before asking for a password; the hash is checked again below.
			u.PasswordHash = "-"
			if err := u.Validate(); err != nil {
				return err
			}
			password, err := readPassword(cmd, fromStdin)
			if err != nil {
				return err
			}
			db, _, err := openStore(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			if err := users.NewService(db).AddUser(adminContext(cmd.Context()), u, password); err != nil {
				return err
			}
			return show(cmd, u, func(out io.Writer) error {
				_, err := fmt.Fprintf(out, "user %s (%s) added\n", u.Name, u.Role)
				return err
			})
		},
	}
	addOutputFlag(cmd)
	cmd.Flags().StringVar(&role, "role", "", "admin, approver or reviewer (required)")
	cmd.Flags().StringVar(&email, "email", "", "the user's email: required for approvers; matches agent owners and approver lists")
	cmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of stdin instead of prompting")
	cmd.MarkFlagRequired("role")
	return cmd
}

// readPassword prompts twice on the terminal (without echo), or reads one
// line from stdin with --password-stdin.
func readPassword(cmd *cobra.Command, fromStdin bool) (string, error) {
	in := cmd.InOrStdin()
	if fromStdin {
		line, err := bufio.NewReader(in).ReadString('\n')
		if err != nil && err != io.EOF {
			return "", fmt.Errorf("read password: %w", err)
		}
		return checkPassword(strings.TrimRight(line, "\r\n"))
	}
	f, ok := in.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", broker.FieldErrorf("password", "No terminal to prompt on: pass --password-stdin and pipe the password in.")
	}
	stderr := cmd.ErrOrStderr()
	fmt.Fprint(stderr, "Password: ")
	first, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(stderr)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	fmt.Fprint(stderr, "Again: ")
	second, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(stderr)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if string(first) != string(second) {
		return "", broker.FieldErrorf("password", "The passwords differ.")
	}
	return checkPassword(string(first))
}

func checkPassword(p string) (string, error) {
	if err := users.CheckPasswordPolicy(p); err != nil {
		return "", err
	}
	return p, nil
}

func newUsersListCommand() *cobra.Command {
	return withOutput(&cobra.Command{
		Use:   "list",
		Short: "List console users",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			db, _, err := openStore(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			all, err := users.NewService(db).FindUsers(cmd.Context())
			if err != nil {
				return err
			}
			if all == nil {
				all = []*broker.User{}
			}
			return show(cmd, struct {
				Users []*broker.User `json:"users"`
			}{all}, func(out io.Writer) error {
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tROLE\tEMAIL\tSTATE\tLAST LOGIN")
				for _, u := range all {
					last := "never"
					if u.LastLoginAt != nil {
						last = u.LastLoginAt.Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.Name, u.Role, u.Email, u.State, last)
				}
				tw.Flush()
				_, err := fmt.Fprintf(out, "%d users\n", len(all))
				return err
			})
		},
	})
}

func newUsersDisableCommand() *cobra.Command {
	return withOutput(&cobra.Command{
		Use:   "disable NAME",
		Short: "Disable a console user and end their sessions",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			db, _, err := openStore(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			u, err := users.NewService(db).DisableUser(adminContext(cmd.Context()), args[0])
			if err != nil {
				return err
			}
			return show(cmd, u, func(out io.Writer) error {
				_, err := fmt.Fprintf(out, "user %s is disabled; their sessions are ended\n", u.Name)
				return err
			})
		},
	})
}

func newUsersPasswordCommand() *cobra.Command {
	var fromStdin bool
	cmd := &cobra.Command{
		Use:   "set-password NAME [--password-stdin]",
		Short: "Set a console user's password",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			password, err := readPassword(cmd, fromStdin)
			if err != nil {
				return err
			}
			db, _, err := openStore(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			u, err := users.NewService(db).SetPassword(adminContext(cmd.Context()), args[0], password)
			if err != nil {
				return err
			}
			return show(cmd, u, func(out io.Writer) error {
				_, err := fmt.Fprintf(out, "password of %s changed\n", u.Name)
				return err
			})
		},
	}
	addOutputFlag(cmd)
	cmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of stdin instead of prompting")
	return cmd
}
