package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"text/tabwriter"
	"time"

	"github.com/pressly/goose/v3"
	"github.com/spf13/cobra"

	"github.com/stint-broker/stint/broker/postgres"
	"github.com/stint-broker/stint/broker/sqlite"
	"github.com/stint-broker/stint/migrations"
)

func newMigrateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Show and apply the store's schema migrations; copy a SQLite store to PostgreSQL",
		Long: `Stint applies its schema migrations itself when it starts (replicas on one
PostgreSQL database take a lock, so one migrates and the others wait). These
commands do the same by hand against the store the configuration names:
status lists the migrations and which are applied, up applies the pending
ones. Migrations are forward-only: down is refused. copy moves a SQLite store
into an empty PostgreSQL database with its audit chain intact.`,
	}
	cmd.AddCommand(newMigrateStatusCommand(), newMigrateUpCommand(), newMigrateDownCommand(), newMigrateCopyCommand())
	return cmd
}

func newMigrateStatusCommand() *cobra.Command {
	return withOutput(&cobra.Command{
		Use:   "status",
		Short: "List the schema migrations this stint knows and whether the store has each",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, err := readConfigFlag(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var rows []postgres.MigrationStatus
			var current int64
			if cfg.Store.Driver == driverPostgres {
				dsn, err := cfg.Store.PostgresDSN(os.Getenv)
				if err != nil {
					return err
				}
				m, err := postgres.OpenMigrator(ctx, dsn)
				if err != nil {
					return err
				}
				defer m.Close()
				if rows, current, err = m.Status(ctx); err != nil {
					return err
				}
			} else {
				if _, err := os.Stat(cfg.Store.Path); err != nil {
					return fmt.Errorf("store %s: %w (it is created, at the latest schema, when stint first opens it)", cfg.Store.Path, err)
				}
				p, db, err := sqliteProvider(cfg.Store.Path)
				if err != nil {
					return err
				}
				defer db.Close()
				if current, err = p.GetDBVersion(ctx); err != nil {
					return fmt.Errorf("read schema version: %w", err)
				}
				st, err := p.Status(ctx)
				if err != nil {
					return fmt.Errorf("read migrations: %w", err)
				}
				for _, s := range st {
					rows = append(rows, postgres.MigrationStatus{Version: s.Source.Version, Name: s.Source.Path,
						Applied: s.State == goose.StateApplied, AppliedAt: s.AppliedAt})
				}
			}
			st := migrationStatus{Store: cfg.Store.Describe(), Version: current, Migrations: []migrationRow{}}
			for _, r := range rows {
				row := migrationRow{Version: r.Version, Name: r.Name, Applied: r.Applied}
				if r.Applied {
					at := r.AppliedAt.UTC()
					row.AppliedAt = &at
				} else {
					st.Pending++
				}
				st.Migrations = append(st.Migrations, row)
			}
			st.Newer = len(rows) > 0 && current > rows[len(rows)-1].Version
			return show(cmd, st, func(out io.Writer) error {
				fmt.Fprintf(out, "store: %s, schema version %d\n", st.Store, current)
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "VERSION\tMIGRATION\tAPPLIED")
				for _, r := range st.Migrations {
					at := "pending"
					if r.AppliedAt != nil {
						at = r.AppliedAt.Format("2006-01-02 15:04:05Z")
					}
					fmt.Fprintf(w, "%d\t%s\t%s\n", r.Version, r.Name, at)
				}
				w.Flush()
				if st.Newer {
					fmt.Fprintf(out, "the store's schema (%d) is newer than this stint knows (%d): run a newer stint\n", current, rows[len(rows)-1].Version)
				} else {
					fmt.Fprintf(out, "%d pending\n", st.Pending)
				}
				return nil
			})
		},
	})
}

// migrationStatus is what migrate status shows with -o json. Newer is true
// when the store's schema is newer than this stint knows.
type migrationStatus struct {
	Store      string         `json:"store"`
	Version    int64          `json:"version"`
	Migrations []migrationRow `json:"migrations"`
	Pending    int            `json:"pending"`
	Newer      bool           `json:"newer"`
}

type migrationRow struct {
	Version   int64      `json:"version"`
	Name      string     `json:"name"`
	Applied   bool       `json:"applied"`
	AppliedAt *time.Time `json:"applied_at,omitempty"`
}

// sqliteProvider opens the SQLite file with goose's provider for it.
func sqliteProvider(path string) (*goose.Provider, *sql.DB, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return nil, nil, fmt.Errorf("open sqlite: %w", err)
	}
	files, err := fs.Sub(migrations.FS, "sqlite")
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, files, goose.WithDisableGlobalRegistry(true), goose.WithLogger(goose.NopLogger()))
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("load migrations: %w", err)
	}
	return p, db, nil
}

func newMigrateUpCommand() *cobra.Command {
	return withOutput(&cobra.Command{
		Use:   "up",
		Short: "Apply the pending schema migrations (stint serve does this too when it starts)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, err := readConfigFlag(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if cfg.Store.Driver == driverPostgres {
				dsn, err := cfg.Store.PostgresDSN(os.Getenv)
				if err != nil {
					return err
				}
				m, err := postgres.OpenMigrator(ctx, dsn)
				if err != nil {
					return err
				}
				defer m.Close()
				applied, err := m.Up(ctx)
				if err != nil {
					return err
				}
				return reportApplied(cmd, cfg, applied)
			}
			// sqlite.Open applies what is pending (and refuses a newer schema).
			before := int64(-1)
			if _, err := os.Stat(cfg.Store.Path); err == nil {
				p, db, err := sqliteProvider(cfg.Store.Path)
				if err != nil {
					return err
				}
				before, err = p.GetDBVersion(ctx)
				db.Close()
				if err != nil {
					return fmt.Errorf("read schema version: %w", err)
				}
			}
			db, err := sqlite.Open(ctx, cfg.Store.Path)
			if err != nil {
				return err
			}
			db.Close()
			p, raw, err := sqliteProvider(cfg.Store.Path)
			if err != nil {
				return err
			}
			defer raw.Close()
			after, err := p.GetDBVersion(ctx)
			if err != nil {
				return fmt.Errorf("read schema version: %w", err)
			}
			var applied []int64
			for v := max(before, 0) + 1; v <= after; v++ {
				applied = append(applied, v)
			}
			return reportApplied(cmd, cfg, applied)
		},
	})
}

func reportApplied(cmd *cobra.Command, cfg Config, applied []int64) error {
	if applied == nil {
		applied = []int64{}
	}
	return show(cmd, struct {
		Store   string  `json:"store"`
		Applied []int64 `json:"applied"`
	}{cfg.Store.Describe(), applied}, func(out io.Writer) error {
		if len(applied) == 0 {
			fmt.Fprintf(out, "%s: schema up to date, nothing to apply\n", cfg.Store.Describe())
			return nil
		}
		fmt.Fprintf(out, "%s: applied migrations %v\n", cfg.Store.Describe(), applied)
		return nil
	})
}

func newMigrateDownCommand() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "down --yes",
		Short: "Refused: Stint's migrations are forward-only",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				return errors.New("migrate down rolls the schema back and needs --yes; note that Stint's migrations are forward-only, so it is refused anyway")
			}
			return errors.New("migrate down is refused: Stint's migrations are forward-only (none has a down section, because lease history and the audit chain are never dropped); to go back, restore the backup of the store taken before the upgrade and run the stint version that wrote it")
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm rolling the schema back (refused: migrations are forward-only)")
	return cmd
}

func newMigrateCopyCommand() *cobra.Command {
	var from, to string
	cmd := &cobra.Command{
		Use:   "copy --from FILE.db [--to DSN]",
		Short: "Copy a SQLite store into an empty PostgreSQL database, audit chain intact",
		Long: `Copy every row of a SQLite store into an empty PostgreSQL database in one
transaction, then verify the copy: the audit chain must verify and end with
the source's head, and every table must hold as many rows as in the source.
Stop stint before copying: the source must not change meanwhile. The SQLite
file is first brought to the latest schema (as any stint command would).
--to defaults to the configuration's PostgreSQL store (store.dsn or
store.dsn_env). Afterwards, set store.driver: postgres and start stint.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if to == "" {
				cfg, _, err := readConfigFlag(cmd)
				if err != nil {
					return fmt.Errorf("%w (or name the target with --to DSN)", err)
				}
				if cfg.Store.Driver != driverPostgres {
					return errors.New("no PostgreSQL target: name it with --to DSN, or configure store.driver: postgres with store.dsn or store.dsn_env")
				}
				if to, err = cfg.Store.PostgresDSN(os.Getenv); err != nil {
					return err
				}
			}
			report, err := copySQLiteToPostgres(ctx, from, to)
			if err != nil {
				return err
			}
			copied := struct {
				Rows        map[string]int `json:"rows"`
				AuditEvents int            `json:"audit_events"`
				HeadSeq     int64          `json:"audit_head_seq,omitempty"`
				HeadHash    string         `json:"audit_head_hash,omitempty"`
			}{Rows: map[string]int{}}
			for _, t := range report.Tables {
				copied.Rows[t] = int(report.Rows[t])
			}
			if report.Head != nil {
				copied.AuditEvents, copied.HeadSeq, copied.HeadHash = int(report.Verified.Checked), int64(report.Head.Seq), report.Head.Hash
			}
			return show(cmd, copied, func(out io.Writer) error {
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "TABLE\tROWS")
				for _, t := range report.Tables {
					fmt.Fprintf(w, "%s\t%d\n", t, report.Rows[t])
				}
				w.Flush()
				if report.Head != nil {
					fmt.Fprintf(out, "audit chain verified: %d events, head seq %d hash %s (same as the source)\n",
						report.Verified.Checked, report.Head.Seq, report.Head.Hash)
				} else {
					fmt.Fprintln(out, "audit chain verified: empty")
				}
				fmt.Fprintln(out, "copied; now set store.driver: postgres in the configuration and start stint")
				return nil
			})
		},
	}
	addOutputFlag(cmd)
	cmd.Flags().StringVar(&from, "from", "", "the SQLite store to copy (required)")
	cmd.Flags().StringVar(&to, "to", "", "the PostgreSQL DSN to copy into (default: the configuration's store)")
	cmd.MarkFlagRequired("from")
	return cmd
}

// copySQLiteToPostgres brings the SQLite store at from to the latest
// schema, opens (and migrates) the PostgreSQL database at to, and copies.
func copySQLiteToPostgres(ctx context.Context, from, to string) (*postgres.CopyReport, error) {
	if _, err := os.Stat(from); err != nil {
		return nil, fmt.Errorf("copy: source store: %w", err)
	}
	// Bring the source to the latest schema and mirror any legacy history
	// into its chain, as starting stint on it would.
	sdb, err := sqlite.Open(ctx, from)
	if err != nil {
		return nil, fmt.Errorf("copy: open source: %w", err)
	}
	sdb.Close()
	src, err := sql.Open("sqlite", "file:"+from+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return nil, fmt.Errorf("copy: open source: %w", err)
	}
	defer src.Close()
	dst, err := postgres.Open(ctx, to)
	if err != nil {
		return nil, fmt.Errorf("copy: open target: %w", err)
	}
	defer dst.Close()
	report, err := dst.CopyFrom(ctx, src)
	if err != nil {
		return report, fmt.Errorf("copy: %w", err)
	}
	return report, nil
}
