package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"
)

// openMain reads the config named by --config and opens a Main.
func openMain(cmd *cobra.Command) (*Main, error) {
	cfg, _, err := readConfigFlag(cmd)
	if err != nil {
		return nil, err
	}
	logCfg := cfg.Log
	var level slog.Level
	if cmd.Name() != "serve" && level.UnmarshalText([]byte(logCfg.Level)) == nil && level == slog.LevelInfo {
		// A one-shot command prints what it did; its info logs would only
		// repeat that on stderr. Warnings and errors still show, and
		// log.level debug shows everything.
		logCfg.Level = "warn"
	}
	logger, err := newLogger(logCfg, cmd.ErrOrStderr())
	if err != nil {
		return nil, err
	}
	m := NewMain(cfg, logger)
	if f := cmd.Flags().Lookup("replica-id"); f != nil {
		m.ReplicaID = f.Value.String()
	}
	// Only the server and the reconciler cannot work without Vault.
	m.VaultOptional = cmd.Name() != "serve" && cmd.Name() != "reconcile"
	m.SlackOptional = cmd.Name() != "serve"
	if err := m.Open(cmd.Context()); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func newServeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the Stint server: HTTP API, expiry loop and reconciler",
		Long: `Run the Stint server. It serves the HTTP API on the configured address,
revokes leases when their windows close (overdue ones at once on start),
retries failed revocations until Vault confirms them, and reconciles Vault
with the lease store on the configured schedule. SIGINT or SIGTERM stops it
gracefully: it stops accepting connections, finishes the requests in
flight (up to 20 s), lets running jobs end and releases its claims of
scheduled jobs and of revocations it did not finish, so that another
replica on the same store takes them at once.

Several replicas may serve one PostgreSQL store (store.driver postgres);
--replica-id (or STINT_REPLICA_ID, or replica.id) names this one in logs,
metrics and its claims; the default is the host name and process id.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := openMain(cmd)
			if err != nil {
				return err
			}
			defer m.Close()
			return m.Run(cmd.Context())
		},
	}
	cmd.Flags().String("replica-id", os.Getenv("STINT_REPLICA_ID"), "name of this replica in logs, metrics and job claims (env STINT_REPLICA_ID; default replica.id, else host name and process id)")
	return cmd
}

func newReconcileCommand() *cobra.Command {
	return withOutput(&cobra.Command{
		Use:   "reconcile",
		Short: "Run one reconciliation pass between Vault and the lease store",
		Long: `Run one reconciliation pass: revoke Vault credentials under the configured
roles that no lease records, revoke credentials of leases that already ended,
and fail leases stuck minting. The server runs this on a schedule; this
command runs it once and prints what it did.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := openMain(cmd)
			if err != nil {
				return err
			}
			defer m.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Minute)
			defer cancel()
			rep, err := m.Leases.Reconcile(ctx)
			if err != nil {
				return err
			}
			errs := make([]string, 0, len(rep.Errors))
			for _, e := range rep.Errors {
				errs = append(errs, fmt.Sprint(e))
			}
			err = show(cmd, struct {
				Checked       int      `json:"checked"`
				Orphans       []string `json:"orphans"`
				Stale         []string `json:"stale"`
				FailedIssuing []string `json:"failed_issuing"`
				Errors        []string `json:"errors"`
			}{rep.Checked, nonNilStrings(rep.Orphans), nonNilStrings(rep.Stale), nonNilStrings(rep.FailedIssuing), errs}, func(out io.Writer) error {
				fmt.Fprintf(out, "checked %d Vault credentials\n", rep.Checked)
				fmt.Fprintf(out, "revoked %d orphaned credentials %v\n", len(rep.Orphans), rep.Orphans)
				fmt.Fprintf(out, "revoked %d credentials of ended leases %v\n", len(rep.Stale), rep.Stale)
				fmt.Fprintf(out, "failed %d leases stuck issuing %v\n", len(rep.FailedIssuing), rep.FailedIssuing)
				for _, e := range errs {
					fmt.Fprintln(out, "error:", e)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if len(rep.Errors) > 0 {
				return fmt.Errorf("%d revocations failed; they are retried on the next pass", len(rep.Errors))
			}
			return nil
		},
	})
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func newConfigCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with the configuration file"}
	cmd.AddCommand(withOutput(&cobra.Command{
		Use:   "validate",
		Short: "Check the configuration file and print the roles it defines",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, path, err := readConfigFlag(cmd)
			if err != nil {
				return err
			}
			type roleJSON struct {
				Name        string `json:"name"`
				Kind        string `json:"kind"`
				Sensitivity string `json:"sensitivity"`
				MaxTTL      string `json:"max_ttl"`
				AutoApprove bool   `json:"auto_approve"`
				VaultPath   string `json:"vault_path"`
			}
			roles := []roleJSON{}
			for _, r := range cfg.Roles {
				roles = append(roles, roleJSON{r.Name, string(r.Kind), string(r.Sensitivity), r.MaxTTL.String(), r.AutoApprove, r.Vault.Path})
			}
			return show(cmd, struct {
				File  string     `json:"file"`
				Valid bool       `json:"valid"`
				Roles []roleJSON `json:"roles"`
			}{path, true, roles}, func(out io.Writer) error {
				fmt.Fprintf(out, "%s is valid: %d roles\n", path, len(cfg.Roles))
				for _, r := range cfg.Roles {
					fmt.Fprintf(out, "  %-20s %-8s %-9s max %-8s auto_approve=%t  %s\n", r.Name, r.Kind, r.Sensitivity, r.MaxTTL, r.AutoApprove, r.Vault.Path)
				}
				return nil
			})
		},
	}))
	return cmd
}
