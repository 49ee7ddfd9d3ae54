package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/postgres"
	"github.com/stint-broker/stint/broker/sqlite"
	"github.com/stint-broker/stint/web"
)

// Store is everything the composition root needs of a store: the ports
// the services, the web server and the jobs use. *sqlite.DB (the embedded
// default) and *postgres.DB (several replicas on one database) both
// implement it; the configuration's store.driver picks one.
type Store interface {
	broker.AgentStore
	broker.LeaseStore
	broker.ApprovalStore
	broker.LeaseGuard
	broker.ReviewStore
	broker.ContainmentStore
	broker.IdempotencyStore
	broker.LoginThrottleStore
	broker.IdentityStore
	broker.UserStore
	broker.AuditLog
	broker.AuditStore
	broker.JobStore
	broker.RateStore
	broker.AuthFailureStore
	broker.RevocationClaimStore
	broker.RiskPatternStore
	broker.NoticeClaimStore
	web.MetricsSource

	// Ping reports whether the store answers.
	Ping(ctx context.Context) error
	// Close closes it.
	Close() error
}

var (
	_ Store = (*sqlite.DB)(nil)
	_ Store = (*postgres.DB)(nil)
)

// Store drivers (store.driver).
const (
	driverSQLite   = "sqlite"
	driverPostgres = "postgres"
)

// openConfiguredStore opens the store the configuration names, applying
// its pending migrations. getenv reads store.dsn_env.
func openConfiguredStore(ctx context.Context, c StoreConfig, getenv func(string) string) (Store, error) {
	switch c.Driver {
	case driverPostgres:
		dsn, err := c.PostgresDSN(getenv)
		if err != nil {
			return nil, err
		}
		db, err := postgres.Open(ctx, dsn)
		if err != nil {
			return nil, err
		}
		return db, nil
	default:
		db, err := sqlite.Open(ctx, c.Path)
		if err != nil {
			return nil, err
		}
		return db, nil
	}
}

// PostgresDSN returns the PostgreSQL DSN: store.dsn, or the variable
// store.dsn_env names (which keeps a password out of the file).
func (c StoreConfig) PostgresDSN(getenv func(string) string) (string, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if c.DSN != "" {
		return c.DSN, nil
	}
	dsn := getenv(c.DSNEnv)
	if dsn == "" {
		return "", fmt.Errorf("open store: environment variable %s (store.dsn_env) is empty: set it to the PostgreSQL DSN, e.g. postgres://stint:PASSWORD@db.example.com:5432/stint?sslmode=verify-full", c.DSNEnv)
	}
	return dsn, nil
}

// Describe names the store for logs and messages, without a password.
func (c StoreConfig) Describe() string {
	if c.Driver == driverPostgres {
		if c.DSNEnv != "" && c.DSN == "" {
			return "PostgreSQL (DSN from $" + c.DSNEnv + ")"
		}
		return "PostgreSQL"
	}
	return "SQLite " + c.Path
}

// maxClockSkew is how far this host's clock may differ from PostgreSQL's
// before Stint warns: expiry, approval deadlines and claim timeouts run by
// each replica's clock.
const maxClockSkew = 5 * time.Second

// warnClockSkew logs a warning when this host's clock and the PostgreSQL
// server's differ by more than maxClockSkew.
func warnClockSkew(db Store, logger *slog.Logger) {
	pg, ok := db.(*postgres.DB)
	if !ok {
		return
	}
	if skew := pg.ClockSkew(); skew > maxClockSkew || skew < -maxClockSkew {
		logger.Warn("this host's clock differs from the PostgreSQL server's: replicas end leases by their own clocks, so this one ends them early or late by as much; synchronise the clocks (NTP)",
			"skew", skew.Round(time.Millisecond).String(), "server_ahead", skew > 0)
	}
}

// observeCommits tells metrics of every committed write transaction.
func observeCommits(db Store, fn func(writes int, held time.Duration)) {
	switch db := db.(type) {
	case *sqlite.DB:
		db.OnCommit = fn
	case *postgres.DB:
		db.OnCommit = fn
	}
}
