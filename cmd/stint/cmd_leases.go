package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/web/client"
)

// addClientFlags adds the flags that say which server to reach and how to
// authenticate to it, each with its environment variable.
func addClientFlags(fs *pflag.FlagSet) {
	fs.String("addr", envOr("STINT_ADDR", "http://127.0.0.1:7070"), "Stint server address (env STINT_ADDR)")
	// Secrets' defaults are read at run time, not shown as flag defaults:
	// help output must never print a secret.
	fs.String("key", "", "agent API key, approver or admin token, or access token (default: env STINT_KEY)")
	fs.String("cacert", os.Getenv("STINT_CACERT"), "PEM CA certificate(s) to verify an https server with, instead of the system's (env STINT_CACERT)")
	fs.String("cert", os.Getenv("STINT_CERT"), "PEM client certificate for mutual TLS (env STINT_CERT; with --cert-key)")
	fs.String("cert-key", os.Getenv("STINT_CERT_KEY"), "PEM private key of --cert (env STINT_CERT_KEY)")
	fs.String("client-id", os.Getenv("STINT_CLIENT_ID"), "OAuth client id (the agent's name) for client credentials (env STINT_CLIENT_ID)")
	fs.String("client-secret-file", os.Getenv("STINT_CLIENT_SECRET_FILE"), "file holding the OAuth client secret: client_secret_basic (env STINT_CLIENT_SECRET_FILE)")
	fs.String("private-key", os.Getenv("STINT_PRIVATE_KEY"), "PEM private key for OAuth private_key_jwt (env STINT_PRIVATE_KEY)")
}

// clientKeyEnv is the environment variable that holds the API key.
const clientKeyEnv = "STINT_KEY"

// newClient builds the API client from the flags of addClientFlags: an API
// key (--key or STINT_KEY), OAuth client credentials (--client-id with
// --client-secret-file or --private-key), or a client certificate alone.
func newClient(cmd *cobra.Command) (*client.Client, error) {
	get := func(name string) string { v, _ := cmd.Flags().GetString(name); return v }
	opts := []client.Option{client.WithUserAgent("stint-cli/" + Version)}
	if ca := get("cacert"); ca != "" {
		opts = append(opts, client.WithCAFile(ca))
	}
	cert, certKey := get("cert"), get("cert-key")
	if (cert == "") != (certKey == "") {
		return nil, usageError(errors.New("give --cert and --cert-key together (or STINT_CERT and STINT_CERT_KEY)"))
	}
	if cert != "" {
		opts = append(opts, client.WithClientCertificateFiles(cert, certKey))
	}
	key := get("key")
	if key == "" {
		key = os.Getenv(clientKeyEnv)
	}
	clientID, secretFile, privKey := get("client-id"), get("client-secret-file"), get("private-key")
	switch {
	case secretFile != "" && privKey != "":
		return nil, usageError(errors.New("give one of --client-secret-file and --private-key"))
	case secretFile != "" || privKey != "":
		if clientID == "" {
			return nil, usageError(errors.New("OAuth client credentials need --client-id (or STINT_CLIENT_ID)"))
		}
		if secretFile != "" {
			secret, err := readSecretFile(secretFile)
			if err != nil || secret == "" {
				return nil, fmt.Errorf("read --client-secret-file %s: %v", secretFile, orEmpty(err))
			}
			opts = append(opts, client.WithClientSecret(clientID, secret))
		} else {
			signer, err := client.ReadPrivateKey(privKey)
			if err != nil {
				return nil, fmt.Errorf("read --private-key: %w", err)
			}
			opts = append(opts, client.WithPrivateKeyJWT(clientID, signer))
		}
	case key != "":
		opts = append(opts, client.WithAPIKey(key))
	case cert == "":
		return nil, broker.Errorf(broker.EUNAUTHORIZED, "No credentials: set STINT_KEY (an agent API key, or an admin token for revoke) or pass --key, --cert/--cert-key, or --client-id with --client-secret-file or --private-key.")
	}
	return client.New(get("addr"), opts...)
}

func newLeasesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "leases",
		Short: "Request, inspect, release and revoke leases over the HTTP API",
		Long: `Talk to a running Stint server as an agent (or as an admin for revoke).
The server address comes from --addr or STINT_ADDR; the credentials from
--key or STINT_KEY (an API key or token), --cert/--cert-key (mutual TLS), or
--client-id with --client-secret-file or --private-key (OAuth client
credentials). Every command prints a table by default and the API's JSON
with -o json.`,
	}
	addClientFlags(cmd.PersistentFlags())

	run := runClient

	var req client.LeaseRequest
	request := &cobra.Command{
		Use:   "request --role ROLE --task TEXT [--ttl 15m] [--justification TEXT]",
		Short: "Request a lease; prints the lease and its credential (shown once)",
		Args:  cobra.NoArgs,
		RunE: run(func(ctx context.Context, c *client.Client, _ []string) (any, error) {
			if req.Task == "" {
				req.Task = os.Getenv(taskEnv)
			}
			return c.RequestLease(ctx, req)
		}),
	}
	request.Flags().StringVar(&req.Role, "role", "", "role to lease (see stint leases roles)")
	request.Flags().StringVar(&req.TTL, "ttl", "", "task window, e.g. 15m (default: the role's default_ttl)")
	request.Flags().StringVar(&req.Task, "task", "", "what the access is for (required; default: env "+taskEnv+")")
	request.Flags().StringVar(&req.Justification, "justification", "", "why the task needs it")

	var filter client.LeaseFilter
	var state string
	list := &cobra.Command{
		Use:   "list [--state S] [--role R] [--task T]",
		Short: "List leases (an agent sees its own)",
		Args:  cobra.NoArgs,
		RunE: run(func(ctx context.Context, c *client.Client, _ []string) (any, error) {
			if state != "" {
				filter.States = strings.Split(state, ",")
			}
			return c.Leases(ctx, filter)
		}),
	}
	list.Flags().StringVar(&state, "state", "", "only leases in these states (comma-separated)")
	list.Flags().StringVar(&filter.Role, "role", "", "only leases of this role")
	list.Flags().StringVar(&filter.Agent, "agent", "", "only leases of this agent (admins)")
	list.Flags().StringVar(&filter.Task, "task", "", "only leases of this task")
	list.Flags().IntVar(&filter.Limit, "limit", 0, "at most this many (default 50, at most 500)")
	list.Flags().IntVar(&filter.Offset, "offset", 0, "skip this many")

	one := func(use, short string, call func(ctx context.Context, c *client.Client, id string) (any, error)) *cobra.Command {
		return &cobra.Command{
			Use: use + " ID", Short: short, Args: cobra.ExactArgs(1),
			RunE: run(func(ctx context.Context, c *client.Client, args []string) (any, error) { return call(ctx, c, args[0]) }),
		}
	}

	var reason string
	revoke := one("revoke", "Revoke a lease (admin token)", func(ctx context.Context, c *client.Client, id string) (any, error) {
		return c.RevokeLease(ctx, id, reason)
	})
	revoke.Use = "revoke ID --reason TEXT"
	revoke.Flags().StringVar(&reason, "reason", "", "why (required; recorded in history)")

	var extendTTL string
	extend := one("extend", "Lengthen an active lease's window (its own agent; decided by policy action extend)", func(ctx context.Context, c *client.Client, id string) (any, error) {
		return c.ExtendLease(ctx, id, extendTTL)
	})
	extend.Use = "extend ID [--ttl 15m]"
	extend.Long = `Ask to lengthen an active lease's window by --ttl (default: the role's
default_ttl). Stint grants it only at once, once half the window has passed,
within the role's max_extensions and max_total_ttl, and renews the credential
in Vault; the lease printed shows the new expires_at and its whole window as
ttl. A denial leaves the lease to expire as planned.`
	extend.Flags().StringVar(&extendTTL, "ttl", "", "time to add, e.g. 15m (default: the role's default_ttl)")

	var wait time.Duration
	waitCmd := one("wait", "Wait for a pending lease's decision and show the lease", func(ctx context.Context, c *client.Client, id string) (any, error) {
		return c.WaitLease(ctx, id, wait)
	})
	waitCmd.Flags().DurationVar(&wait, "wait", 30*time.Second, "how long to wait at most (up to 60s)")

	roles := &cobra.Command{
		Use: "roles", Short: "List the roles this key may request", Args: cobra.NoArgs,
		RunE: run(func(ctx context.Context, c *client.Client, _ []string) (any, error) { return c.Roles(ctx) }),
	}
	whoami := &cobra.Command{
		Use: "whoami", Short: "Show who the server takes these credentials for", Args: cobra.NoArgs,
		RunE: run(func(ctx context.Context, c *client.Client, _ []string) (any, error) { return c.Whoami(ctx) }),
	}

	subs := []*cobra.Command{request, list, roles, whoami,
		one("show", "Show a lease (never its credential)", func(ctx context.Context, c *client.Client, id string) (any, error) { return c.Lease(ctx, id) }),
		one("history", "Show a lease's history", func(ctx context.Context, c *client.Client, id string) (any, error) { return c.LeaseEvents(ctx, id) }),
		one("release", "Release a lease now; returns once Vault has revoked it", func(ctx context.Context, c *client.Client, id string) (any, error) {
			return c.ReleaseLease(ctx, id)
		}),
		waitCmd,
		one("activate", "Activate an approved lease; prints its credential (shown once)", func(ctx context.Context, c *client.Client, id string) (any, error) {
			return c.ActivateLease(ctx, id)
		}),
		one("cancel", "Withdraw a pending or approved lease", func(ctx context.Context, c *client.Client, id string) (any, error) { return c.CancelLease(ctx, id) }),
		extend, revoke}
	for _, s := range subs {
		addOutputFlag(s)
	}
	cmd.AddCommand(subs...)
	return cmd
}

// runClient wraps a subcommand of an API command: it builds the client and
// prints what the call returns, as a table or as JSON.
func runClient(call func(ctx context.Context, c *client.Client, args []string) (any, error)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		asJSON, err := outputJSON(cmd)
		if err != nil {
			return err
		}
		c, err := newClient(cmd)
		if err != nil {
			return err
		}
		v, err := call(cmd.Context(), c, args)
		if err != nil {
			return err
		}
		return printResult(cmd.OutOrStdout(), v, asJSON)
	}
}

// printResult prints what a client call returned, as JSON or as a table.
// A lease's credential is revealed here: the command was asked for it.
func printResult(out io.Writer, v any, asJSON bool) error {
	if asJSON {
		if l, ok := v.(*client.Lease); ok {
			return writeJSON(out, revealedLease{Lease: l, Credential: l.Credential.Reveal()})
		}
		return writeJSON(out, v)
	}
	switch v := v.(type) {
	case *client.Lease:
		return printLease(out, v)
	case *client.LeasePage:
		if err := printLeaseTable(out, v.Leases); err != nil {
			return err
		}
		_, err := fmt.Fprintf(out, "%d of %d\n", len(v.Leases), v.Total)
		return err
	case *client.TaskLeases:
		if err := printLeaseTable(out, v.Leases); err != nil {
			return err
		}
		noun := "leases"
		if len(v.Leases) == 1 {
			noun = "lease"
		}
		_, err := fmt.Fprintf(out, "%d %s of task %q ended\n", len(v.Leases), noun, v.Task)
		return err
	case taskList:
		t := newTable(out, "TASK", "LIVE", "LEASES", "AGENTS", "ROLES", "LATEST")
		for _, k := range v.Tasks {
			t.row(k.Name, fmt.Sprint(k.Live), fmt.Sprint(k.Leases), strings.Join(k.Agents, ","), strings.Join(k.Roles, ","), fmtTime(&k.Latest))
		}
		if err := t.flush(); err != nil {
			return err
		}
		if v.Truncated {
			_, err := fmt.Fprintln(out, "(only the newest leases were read; narrow with --state or --agent)")
			return err
		}
		return nil
	case taskShow:
		return printLeaseTable(out, v.Leases)
	case []*client.LeaseEvent:
		t := newTable(out, "AT", "FROM", "TO", "ACTOR", "REASON")
		for _, e := range v {
			t.row(fmtTime(&e.At), e.From, e.To, e.Actor, e.Reason)
		}
		return t.flush()
	case []*client.Role:
		t := newTable(out, "NAME", "KIND", "SENSITIVITY", "DEFAULT_TTL", "MAX_TTL", "AUTO_APPROVE", "DESCRIPTION")
		for _, r := range v {
			t.row(r.Name, r.Kind, r.Sensitivity, r.DefaultTTL, r.MaxTTL, fmt.Sprint(r.AutoApprove), r.Description)
		}
		return t.flush()
	case *client.Identity:
		t := newTable(out)
		t.row("kind", v.Kind)
		t.row("name", v.Name)
		t.row("agent_id", v.AgentID)
		t.row("auth_method", v.AuthMethod)
		t.row("source_ip", v.SourceIP)
		return t.flush()
	}
	return writeJSON(out, v)
}

// printLeaseTable prints leases one a line.
func printLeaseTable(out io.Writer, leases []*client.Lease) error {
	t := newTable(out, "ID", "STATE", "ROLE", "AGENT", "TASK", "TTL", "CREATED", "EXPIRES")
	for _, l := range leases {
		t.row(l.ID, l.State, l.Role, l.Agent, l.Task, l.TTL, fmtTime(&l.CreatedAt), fmtTime(l.ExpiresAt))
	}
	return t.flush()
}

// revealedLease is a lease with its credential in clear, for -o json.
type revealedLease struct {
	*client.Lease
	Credential map[string]any `json:"credential,omitempty"`
}

// printLease prints one lease as "field  value" lines, and its credential
// if the answer carried one.
func printLease(out io.Writer, l *client.Lease) error {
	t := newTable(out)
	t.row("id", l.ID)
	t.row("state", l.State)
	if l.EndState != "" {
		t.row("end_state", l.EndState)
	}
	t.row("role", l.Role)
	t.row("agent", l.Agent)
	t.row("task", l.Task)
	t.row("justification", l.Justification)
	t.row("ttl", l.TTL)
	if l.Decision != "" {
		t.row("decision", l.Decision)
	}
	t.row("risk_score", fmt.Sprint(l.RiskScore))
	t.row("created_at", fmtTime(&l.CreatedAt))
	for _, f := range []struct {
		name string
		at   *time.Time
	}{{"decide_by", l.DecideBy}, {"activate_by", l.ActivateBy}, {"activated_at", l.ActivatedAt}, {"expires_at", l.ExpiresAt}, {"ended_at", l.EndedAt}} {
		if f.at != nil {
			t.row(f.name, fmtTime(f.at))
		}
	}
	if l.Extensions > 0 {
		t.row("extensions", fmt.Sprint(l.Extensions))
	}
	if l.AuthMethod != "" {
		t.row("auth_method", l.AuthMethod)
	}
	if l.Username != "" {
		t.row("username", l.Username)
	}
	if l.RevokeError != "" {
		t.row("revoke_error", l.RevokeError)
	}
	if cred := l.Credential.Reveal(); cred != nil {
		names := make([]string, 0, len(cred))
		for k := range cred {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			v, _ := l.Credential.Field(k)
			t.row("credential."+k, v)
		}
	}
	return t.flush()
}

func fmtTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
