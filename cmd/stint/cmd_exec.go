package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"

	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/web/client"
)

// taskEnv names the task a process works for: stint exec sets it in its
// command's environment, and stint exec and stint leases request use it
// when no --task is given, so nested tools join the same task.
const taskEnv = "STINT_TASK"

// leaseEnv names the lease whose credential the command holds.
const leaseEnv = "STINT_LEASE_ID"

// envFileEnv names the file --env-file wrote.
const envFileEnv = "STINT_ENV_FILE"

// execOptions are stint exec's flags.
type execOptions struct {
	role, leaseID, ttl, task, justification string
	env                                     []string
	pgpass, envFile, extend                 bool
	// warnBefore is how long before the window's end the command is
	// warned about; extendAt is when (as a fraction of the window left)
	// --extend asks.
	warnBefore time.Duration
}

func newExecCommand() *cobra.Command {
	var o execOptions
	cmd := &cobra.Command{
		Use:   "exec (--role ROLE | --lease ID) [flags] -- COMMAND [ARGS...]",
		Short: "Run a command with a lease's credential in its environment, and release the lease when it exits",
		Long: `Request a lease on --role (or take the approved lease --lease ID that was
requested elsewhere), wait for approval if the role needs it, activate it,
and run COMMAND with the credential in its environment only. When COMMAND
exits, however it exits, the lease is released and its credential revoked.

Environment of COMMAND: stint exec's own, minus every STINT_ variable (the
API key and settings never reach it), plus the credential:
  database roles  PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE DATABASE_URL
  token roles     VAULT_TOKEN, and VAULT_ADDR if the role sets vault_addr
  any role        the role's env mapping (NAME: credential field, in the
                  server's configuration, shown by stint leases roles)
  --env NAME=field adds or overrides one variable
and STINT_TASK (the task; a nested stint exec joins it) and STINT_LEASE_ID.
--pgpass writes the database password to a 0600 file named by PGPASSFILE
instead of PGPASSWORD and DATABASE_URL; --env-file writes the credential's
variables to a 0600 file named by STINT_ENV_FILE instead of the
environment. Both files are removed when COMMAND exits.

stint exec stays COMMAND's parent: it forwards SIGINT, SIGTERM, SIGHUP and
SIGQUIT to COMMAND's process group and exits with COMMAND's exit status
(128+N if signal N killed it). Near the window's end it asks to extend the
lease with --extend (if the role allows extensions), else it warns and sends
COMMAND SIGTERM when the window ends. If stint exec itself is killed with
SIGKILL, the lease still ends when its window does.

Progress goes to standard error on a terminal; elsewhere stint exec prints
only errors. See "stint --help" for its exit statuses (200-206).`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runExec(cmd, o, args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.role, "role", "", "role to lease")
	f.StringVar(&o.leaseID, "lease", "", "use this approved lease (requested elsewhere) instead of requesting one")
	f.StringVar(&o.ttl, "ttl", "", "task window, e.g. 15m (default: the role's default_ttl)")
	f.StringVar(&o.task, "task", "", "what the access is for (default: env STINT_TASK, else \"exec COMMAND\")")
	f.StringVar(&o.justification, "justification", "", "why the task needs it")
	f.StringArrayVar(&o.env, "env", nil, "NAME=field: put the credential's field in NAME (repeatable)")
	f.BoolVar(&o.pgpass, "pgpass", false, "database roles: pass the password in a 0600 PGPASSFILE, not the environment")
	f.BoolVar(&o.envFile, "env-file", false, "write the credential's variables to a 0600 file named by STINT_ENV_FILE, not the environment")
	f.BoolVar(&o.extend, "extend", false, "extend the lease when its window nears its end, if the role allows")
	f.DurationVar(&o.warnBefore, "warn-before", time.Minute, "warn this long before the window ends")
	addClientFlags(f)
	f.SetInterspersed(false)
	return cmd
}

// execError is a stint exec failure with its exit status.
func execError(code int, format string, args ...any) error {
	return &exitStatus{code: code, err: fmt.Errorf(format, args...)}
}

// execFailure classifies an error of the API client as stint exec's exit
// status, with a line that says what to do.
func execFailure(step string, err error) error {
	var u *client.UnreachableError
	if errors.As(err, &u) {
		return execError(exitExecUnreachable, "%s: cannot reach the Stint server at %s (%v); check --addr or STINT_ADDR", step, u.URL, u.Err)
	}
	e, ok := client.AsError(err)
	if !ok {
		if errors.Is(err, context.Canceled) {
			return execError(exitExecNoDecision, "%s: interrupted", step)
		}
		return &exitStatus{code: exitExecUnavailable, err: fmt.Errorf("%s: %w", step, err)}
	}
	msg := e.Message
	if e.Field != "" {
		msg += " (" + e.Field + ")"
	}
	switch e.Code {
	case client.CodeUnauthorized:
		return execError(exitExecAuth, "%s: %s Check STINT_KEY or --key.", step, msg)
	case client.CodeForbidden, client.CodeDenied, client.CodeInvalid, client.CodeNotFound, client.CodeConflict:
		return execError(exitExecRefused, "%s: %s", step, msg)
	}
	return execError(exitExecUnavailable, "%s: %s Try again shortly.", step, msg)
}

// progress writes stint exec's own lines: all of them on a terminal,
// only warnings elsewhere.
type progress struct {
	w       io.Writer
	verbose bool
}

func (p progress) info(format string, args ...any) {
	if p.verbose {
		fmt.Fprintf(p.w, "stint exec: "+format+"\n", args...)
	}
}

func (p progress) warn(format string, args ...any) {
	fmt.Fprintf(p.w, "stint exec: "+format+"\n", args...)
}

func runExec(cmd *cobra.Command, o execOptions, args []string) error {
	if len(args) == 0 {
		return execError(exitExecUsage, "no command: stint exec --role ROLE -- COMMAND [ARGS...]")
	}
	if (o.role == "") == (o.leaseID == "") {
		return execError(exitExecUsage, "give exactly one of --role and --lease")
	}
	if o.leaseID != "" && (o.ttl != "" || o.task != "" || o.justification != "") {
		return execError(exitExecUsage, "--ttl, --task and --justification are for --role; the lease of --lease was requested with its own")
	}
	overrides, err := parseEnvFlags(o.env)
	if err != nil {
		return &exitStatus{code: exitExecUsage, err: err}
	}
	// A command that cannot run must not cost a lease.
	path, err := exec.LookPath(args[0])
	if err != nil {
		return execError(exitExecNoCommand, "command %q not found or not executable (%v); nothing was requested", args[0], err)
	}
	c, err := newClient(cmd)
	if err != nil {
		var es *exitStatus
		if errors.As(err, &es) || broker.ErrorCode(err) != "" {
			return execError(exitExecUsage, "%s", userMessage(err))
		}
		return execError(exitExecUsage, "%v", err)
	}
	p := progress{w: cmd.ErrOrStderr(), verbose: term.IsTerminal(int(os.Stderr.Fd()))}
	ctx := cmd.Context()

	// The lease, approved or active.
	var lease *client.Lease
	if o.leaseID != "" {
		if lease, err = c.Lease(ctx, o.leaseID); err != nil {
			return execFailure("find lease "+o.leaseID, err)
		}
		if lease.State != client.StatePending && lease.State != client.StateApproved {
			return execError(exitExecRefused, "lease %s is %s; stint exec --lease takes a pending or approved lease that was not activated yet", lease.ID, lease.State)
		}
	}
	roleName := o.role
	if lease != nil {
		roleName = lease.Role
	}
	role, err := findRole(ctx, c, roleName)
	if err != nil {
		return err
	}
	if lease == nil {
		task := o.task
		if task == "" {
			task = os.Getenv(taskEnv)
		}
		if task == "" {
			task = "exec " + filepath.Base(args[0])
		}
		if lease, err = c.RequestLease(ctx, client.LeaseRequest{Role: role.Name, TTL: o.ttl, Task: task, Justification: o.justification}); err != nil {
			return execFailure("request a lease on "+role.Name, err)
		}
	}
	// From here on, every way out ends the lease.
	released := false
	release := func() {
		if released {
			return
		}
		released = true
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		if lease.State == client.StateActive {
			_, err = c.ReleaseLease(rctx, lease.ID)
		} else if !lease.Ended() {
			_, err = c.CancelLease(rctx, lease.ID)
		}
		if err != nil {
			p.warn("could not release lease %s (%s); it ends with its window anyway", lease.ID, userMessage(err))
			return
		}
		p.info("lease %s released", lease.ID)
	}
	defer release()

	if lease.State == client.StatePending {
		// On an error lease stays as it was, so that release withdraws it.
		decided, err := awaitApproval(ctx, c, lease, p)
		if err != nil {
			return err
		}
		lease = decided
	}
	if lease.State == client.StateApproved {
		activated, err := c.ActivateLease(context.WithoutCancel(ctx), lease.ID)
		if err != nil {
			return execFailure("activate lease "+lease.ID, err)
		}
		lease = activated
	}
	if lease.State != client.StateActive || lease.Credential == nil {
		return leaseEndedError(lease)
	}

	files, env, err := buildChildEnv(os.Environ(), role, lease, overrides, o)
	defer files.remove()
	if err != nil {
		return &exitStatus{code: exitExecUsage, err: err}
	}
	p.info("lease %s on %s is active until %s; running %s", lease.ID, role.Name, fmtTime(lease.ExpiresAt), args[0])

	code, err := runChild(ctx, c, path, args, env, lease, role, o, p)
	if err != nil {
		return err
	}
	release()
	if code != 0 {
		return &exitStatus{code: code, err: errSilent}
	}
	return nil
}

// errSilent marks an exit status that needs no message: the command's own.
var errSilent = errors.New("the command's exit status")

// findRole returns the role the caller may request by name.
func findRole(ctx context.Context, c *client.Client, name string) (*client.Role, error) {
	roles, err := c.Roles(ctx)
	if err != nil {
		return nil, execFailure("list roles", err)
	}
	var names []string
	for _, r := range roles {
		if r.Name == name {
			return r, nil
		}
		names = append(names, r.Name)
	}
	return nil, execError(exitExecRefused, "unknown role %q; you may request: %s (stint leases roles)", name, strings.Join(names, ", "))
}

// awaitApproval waits for a human decision, showing progress on a
// terminal. Interrupted, it returns the error that cancels the lease.
func awaitApproval(ctx context.Context, c *client.Client, lease *client.Lease, p progress) (*client.Lease, error) {
	start := time.Now()
	need := "approval"
	if d := lease.PolicyDecision; d != nil && d.ApproverGroup != "" {
		need = fmt.Sprintf("%d approval(s) from %s", max(d.Approvals, 1), d.ApproverGroup)
	}
	deadline := ""
	if lease.DecideBy != nil {
		deadline = ", decided by " + fmtTime(lease.DecideBy)
	}
	p.info("lease %s waits for %s%s (Ctrl-C withdraws it)", lease.ID, need, deadline)
	decided, err := c.AwaitDecision(ctx, lease.ID, func(*client.Lease) {
		p.info("still waiting for %s after %s", need, time.Since(start).Round(time.Second))
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, execError(exitExecNoDecision, "interrupted while lease %s waited for approval; the request is withdrawn", lease.ID)
		}
		return nil, execFailure("wait for approval of lease "+lease.ID, err)
	}
	*lease = *decided
	if decided.State == client.StateApproved {
		p.info("lease %s approved", lease.ID)
	}
	return decided, nil
}

// leaseEndedError says why a lease cannot be used, with its exit status.
func leaseEndedError(l *client.Lease) error {
	why := l.Decision
	if why == "" {
		why = "no reason given"
	}
	switch l.State {
	case client.StateDenied, client.StateRejected:
		return execError(exitExecRefused, "lease %s was %s: %s", l.ID, l.State, why)
	case client.StateTimedOut, client.StateLapsed, client.StateCanceled:
		return execError(exitExecNoDecision, "lease %s %s before it could be used; request it again", l.ID, strings.ReplaceAll(l.State, "_", " "))
	}
	return execError(exitExecUnavailable, "lease %s is %s, with no credential: %s", l.ID, l.State, why)
}

// parseEnvFlags reads --env NAME=field values.
func parseEnvFlags(vals []string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range vals {
		name, field, ok := strings.Cut(v, "=")
		switch {
		case !ok || field == "":
			return nil, fmt.Errorf("--env %q: use NAME=field, such as --env DB_PASS=password", v)
		case !broker.ValidEnvName(name):
			return nil, fmt.Errorf("--env %q: %q is not a variable name (letters, digits, underscores)", v, name)
		case strings.HasPrefix(name, "STINT_"):
			return nil, fmt.Errorf("--env %q: STINT_ variables belong to Stint", v)
		}
		out[name] = field
	}
	return out, nil
}

// tempFiles are files stint exec wrote for the command; remove deletes
// them.
type tempFiles []string

func (t tempFiles) remove() {
	for _, f := range t {
		os.RemoveAll(f)
	}
}

// buildChildEnv builds the command's environment: parent minus every
// STINT_ variable, plus the credential's variables, STINT_TASK and
// STINT_LEASE_ID. It returns the files it wrote (--pgpass, --env-file).
func buildChildEnv(parent []string, role *client.Role, lease *client.Lease, overrides map[string]string, o execOptions) (tempFiles, []string, error) {
	cred := lease.Credential
	vars := map[string]string{}
	field := func(name string) string { v, _ := cred.Field(name); return v }
	switch role.Kind {
	case "database":
		user, pass, host, port, db := field("username"), field("password"), field("host"), field("port"), field("database")
		vars["PGHOST"], vars["PGPORT"], vars["PGUSER"], vars["PGDATABASE"] = host, port, user, db
		if !o.pgpass {
			vars["PGPASSWORD"] = pass
		}
		u := url.URL{Scheme: "postgres", Host: host, Path: "/" + db}
		if port != "" {
			u.Host = host + ":" + port
		}
		if o.pgpass {
			u.User = url.User(user)
		} else {
			u.User = url.UserPassword(user, pass)
		}
		vars["DATABASE_URL"] = u.String()
	case "token":
		vars["VAULT_TOKEN"] = field("token")
		if role.VaultAddr != "" {
			vars["VAULT_ADDR"] = role.VaultAddr
		}
	}
	mapping := map[string]string{}
	for k, v := range role.Env {
		mapping[k] = v
	}
	for k, v := range overrides {
		mapping[k] = v
	}
	for name, f := range mapping {
		v, ok := cred.Field(f)
		if !ok {
			return nil, nil, fmt.Errorf("the credential of role %s has no field %q for %s; its fields are %s", role.Name, f, name, fieldNames(cred))
		}
		vars[name] = v
	}
	if len(vars) == 0 {
		return nil, nil, fmt.Errorf("role %s (kind %s) has no env mapping: give --env NAME=field for the fields %s", role.Name, role.Kind, fieldNames(cred))
	}

	var files tempFiles
	extra := map[string]string{taskEnv: lease.Task, leaseEnv: lease.ID}
	if o.pgpass || o.envFile {
		dir, err := os.MkdirTemp("", "stint-exec-")
		if err != nil {
			return nil, nil, fmt.Errorf("create a private directory: %w", err)
		}
		files = append(files, dir)
		if o.pgpass {
			if role.Kind != "database" {
				return files, nil, fmt.Errorf("--pgpass is for database roles; %s is a %s role", role.Name, role.Kind)
			}
			line := strings.Join([]string{pgpassEscape(field("host")), pgpassEscape(field("port")), pgpassEscape(field("database")), pgpassEscape(field("username")), pgpassEscape(field("password"))}, ":") + "\n"
			f := filepath.Join(dir, "pgpass")
			if err := os.WriteFile(f, []byte(line), 0o600); err != nil {
				return files, nil, fmt.Errorf("write the pgpass file: %w", err)
			}
			extra["PGPASSFILE"] = f
		}
		if o.envFile {
			names := make([]string, 0, len(vars))
			for k := range vars {
				names = append(names, k)
			}
			sort.Strings(names)
			var b strings.Builder
			for _, k := range names {
				fmt.Fprintf(&b, "%s=%s\n", k, shellQuote(vars[k]))
			}
			f := filepath.Join(dir, "env")
			if err := os.WriteFile(f, []byte(b.String()), 0o600); err != nil {
				return files, nil, fmt.Errorf("write the env file: %w", err)
			}
			extra[envFileEnv] = f
			vars = map[string]string{}
		}
	}
	for k, v := range extra {
		vars[k] = v
	}

	env := make([]string, 0, len(parent)+len(vars))
	for _, kv := range parent {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "STINT_") {
			continue // the key and Stint's settings stay with stint exec
		}
		if _, ok := vars[name]; ok {
			continue
		}
		if role.Kind == "database" && o.pgpass && (name == "PGPASSWORD") {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return files, env, nil
}

func fieldNames(c *client.Credential) string {
	var names []string
	for k := range c.Reveal() {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// pgpassEscape escapes ':' and '\' for a .pgpass line.
func pgpassEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(s)
}

// shellQuote quotes s for a POSIX shell's "source".
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// forwarded are the signals stint exec passes to its command.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}

// runChild runs the command in its own process group, forwards signals to
// it, watches the window, and returns its exit status (128+N for signal N).
func runChild(ctx context.Context, c *client.Client, path string, args, env []string, lease *client.Lease, role *client.Role, o execOptions, p progress) (int, error) {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)

	child := exec.Command(path, args[1:]...)
	child.Args[0] = args[0]
	child.Env = env
	child.Stdin, child.Stdout, child.Stderr = os.Stdin, os.Stdout, os.Stderr
	restore := setProcessGroup(child)
	if err := child.Start(); err != nil {
		restore()
		return 0, execError(exitExecNoCommand, "start %s: %v; the lease is released", args[0], err)
	}
	pgid := child.Process.Pid
	done := make(chan error, 1)
	go func() { done <- child.Wait() }()

	expires := time.Now().Add(24 * time.Hour)
	if lease.ExpiresAt != nil {
		expires = *lease.ExpiresAt
	}
	windowTimer := time.NewTimer(time.Until(expires))
	defer windowTimer.Stop()
	warnTimer := time.NewTimer(time.Until(expires.Add(-o.warnBefore)))
	defer warnTimer.Stop()
	if time.Until(expires) <= o.warnBefore {
		// A window no longer than the warning gets none: the command
		// just started.
		warnTimer.Stop()
	}
	// --extend asks once half the window has passed (when the server
	// first grants an extension), and again after each extension.
	var extendC <-chan time.Time
	canExtend := o.extend && role.MaxExtensions > lease.Extensions
	nextExtend := func(l *client.Lease) {
		if !canExtend || l.ActivatedAt == nil || l.ExpiresAt == nil {
			extendC = nil
			return
		}
		half := l.ActivatedAt.Add(l.ExpiresAt.Sub(*l.ActivatedAt) / 2)
		at := max(time.Until(half), 0) + time.Second
		if left := time.Until(*l.ExpiresAt); at > left-o.warnBefore && left > o.warnBefore {
			at = max(left-o.warnBefore, time.Second)
		}
		extendC = time.After(at)
	}
	nextExtend(lease)
	if o.extend && !canExtend {
		p.warn("role %s allows no (more) extensions; the command gets SIGTERM when the window ends at %s", role.Name, fmtTime(&expires))
	}

	for {
		select {
		case err := <-done:
			restore()
			return exitStatusOf(child.ProcessState, err), nil
		case s := <-sigs:
			// Forwarded to the whole group: the command's own children
			// hear it too.
			syscall.Kill(-pgid, s.(syscall.Signal))
		case <-extendC:
			l, err := c.ExtendLease(context.WithoutCancel(ctx), lease.ID, "")
			if err != nil {
				canExtend = false
				extendC = nil
				p.warn("could not extend lease %s: %s; the command gets SIGTERM when the window ends at %s", lease.ID, userMessage(err), fmtTime(&expires))
				continue
			}
			lease = l
			expires = *l.ExpiresAt
			windowTimer.Reset(time.Until(expires))
			warnTimer.Reset(time.Until(expires.Add(-o.warnBefore)))
			canExtend = role.MaxExtensions > l.Extensions
			p.info("lease %s extended until %s", lease.ID, fmtTime(&expires))
			nextExtend(l)
		case <-warnTimer.C:
			if extendC == nil {
				p.warn("lease %s ends at %s: the command gets SIGTERM then", lease.ID, fmtTime(&expires))
			}
		case <-windowTimer.C:
			p.warn("lease %s window ended; sending the command SIGTERM", lease.ID)
			syscall.Kill(-pgid, syscall.SIGTERM)
		}
	}
}

// exitStatusOf is a finished command's exit status, 128+N for signal N.
func exitStatusOf(ps *os.ProcessState, err error) int {
	if ps == nil {
		return exitExecNoCommand
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	if code := ps.ExitCode(); code >= 0 {
		return code
	}
	_ = err
	return exitFailure
}
