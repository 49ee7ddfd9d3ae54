// Command stint is Stint's single binary: the server (stint serve), a local
// development setup (stint dev), operator commands (stint agents …) and an
// agent-side client (stint leases …).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/web/client"
)

// Version is set at build time with -ldflags "-X main.Version=…".
var Version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCommand(os.Stdout, os.Stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		if !errors.Is(err, errSilent) {
			fmt.Fprintln(os.Stderr, "stint:", broker.EscapeControl(userMessage(err)))
		}
		os.Exit(exitCode(err))
	}
}

// exitStatus is an error with the exit status the command documents for it.
type exitStatus struct {
	code int
	err  error
}

func (e *exitStatus) Error() string { return e.err.Error() }
func (e *exitStatus) Unwrap() error { return e.err }

// exitCode is the process's exit status for err: the one a command chose
// (exitStatus), else 1.
func exitCode(err error) int {
	var e *exitStatus
	if errors.As(err, &e) {
		return e.code
	}
	return 1
}

// userMessage renders an error for the terminal: a broker error's safe
// message (with its field), anything else in full, since the operator is the
// one who sees it.
func userMessage(err error) string {
	var e *broker.Error
	if errors.As(err, &e) {
		if e.Field != "" {
			return fmt.Sprintf("%s (%s)", e.Message, e.Field)
		}
		return e.Message
	}
	// The server's answer: its message, with the field at fault.
	var ce *client.Error
	if errors.As(err, &ce) {
		if ce.Field != "" {
			return fmt.Sprintf("%s (%s)", ce.Message, ce.Field)
		}
		return ce.Message
	}
	return err.Error()
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "stint",
		Short:         "Just-in-time privileged access broker for AI agents",
		Long:          "Stint gives agents time-boxed, task-scoped credentials minted by HashiCorp Vault and revokes them when the task window closes.\n\n" + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	// Human-readable output goes through terminalWriter, which escapes
	// control characters in whatever text it carries (terminal.go).
	root.SetOut(newTerminalWriter(stdout))
	root.SetErr(newTerminalWriter(stderr))
	root.PersistentPreRunE = checkOutputFlag
	root.PersistentFlags().StringP("config", "c", envOr("STINT_CONFIG", "stint.yaml"), "configuration file (env STINT_CONFIG)")
	root.AddCommand(
		newServeCommand(),
		newDevCommand(),
		newAgentsCommand(),
		newCACommand(),
		newLeasesCommand(),
		newTasksCommand(),
		newMCPCommand(),
		newTokenCommand(),
		newReconcileCommand(),
		newApprovalsCommand(),
		newConfigCommand(),
		newPolicyCommand(),
		newAuditCommand(),
		newUsersCommand(),
		newReviewsCommand(),
		newMigrateCommand(),
		newExecCommand(),
	)
	return root
}

// readConfigFlag reads the configuration file named by --config (or
// STINT_CONFIG). A missing file's error says how to name one.
func readConfigFlag(cmd *cobra.Command) (Config, string, error) {
	path, _ := cmd.Flags().GetString("config")
	cfg, err := ReadConfig(path)
	if errors.Is(err, fs.ErrNotExist) {
		hint := "name the configuration file with -c FILE or STINT_CONFIG"
		// `make run` (stint dev) writes its configuration here.
		dev := filepath.Join(devDir, devConfigFile)
		if _, serr := os.Stat(dev); serr == nil && path != dev {
			hint += fmt.Sprintf(" (the development setup's is %s: bin/stint -c %s %s)", dev, dev, strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" "))
		}
		err = fmt.Errorf("%w; %s", err, hint)
	}
	return cfg, path, err
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// newLogger builds the one logger passed down to every component.
func newLogger(cfg LogConfig, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Level)); err != nil {
		return nil, fmt.Errorf("log.level %q: use debug, info, warn or error", cfg.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(cfg.Format) {
	case "json", "":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log.format %q: use json or text", cfg.Format)
}

// usageError marks err as a usage mistake (a bad flag value): exit status 2.
func usageError(err error) error { return &exitStatus{code: exitUsage, err: err} }
