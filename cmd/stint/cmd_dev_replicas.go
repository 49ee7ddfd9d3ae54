package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"go.yaml.in/yaml/v3"
)

// devStoreDatabase is the database `stint dev --store postgres` keeps its
// store in, on the server of --pg-dsn.
const devStoreDatabase = "stint_dev"

// devStore resolves the --store flag of `stint dev`: "sqlite" keeps the
// configured store; "postgres" is the database devStoreDatabase on the
// server of pgDSN, created if missing; a postgres:// URL is used as it is.
func devStore(ctx context.Context, store, pgDSN string) (*StoreConfig, error) {
	switch {
	case store == "" || store == driverSQLite:
		return nil, nil
	case strings.HasPrefix(store, "postgres://") || strings.HasPrefix(store, "postgresql://"):
		return &StoreConfig{Driver: driverPostgres, DSN: store}, nil
	case store != driverPostgres:
		return nil, fmt.Errorf("--store %q: want sqlite, postgres or a postgres:// URL", store)
	}
	u, err := url.Parse(pgDSN)
	if err != nil {
		return nil, errors.New("--pg-dsn is not a postgres:// URL")
	}
	conn, err := pgx.Connect(ctx, pgDSN)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL at %s to create the store's database: %w", u.Redacted(), err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, devStoreDatabase).Scan(&exists); err != nil {
		return nil, fmt.Errorf("look for database %s: %w", devStoreDatabase, err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+devStoreDatabase); err != nil {
			return nil, fmt.Errorf("create database %s: %w", devStoreDatabase, err)
		}
	}
	u.Path = "/" + devStoreDatabase
	return &StoreConfig{Driver: driverPostgres, DSN: u.String()}, nil
}

// devReplica is one more `stint serve` process of `stint dev --replicas`.
type devReplica struct {
	ID, URL, Config string
	cmd             *exec.Cmd
}

// startDevReplicas starts replicas 2..n of the development setup, each a
// `stint serve` child process on the same store with a configuration of
// its own written to dir: cfg with the listen port (and the metrics port,
// if any) moved up by one per replica. The children stop with SIGTERM when
// ctx ends (Ctrl-C on a terminal reaches them directly too).
func startDevReplicas(ctx context.Context, cfg Config, dir string, n int, env []string, logs io.Writer) ([]*devReplica, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the stint binary: %w", err)
	}
	scheme := "http"
	if cfg.TLS.Enabled() {
		scheme = "https"
	}
	var out []*devReplica
	for i := 2; i <= n; i++ {
		rc := cfg
		if rc.Listen, err = shiftPort(cfg.Listen, i-1); err != nil {
			return out, fmt.Errorf("listen: %w", err)
		}
		if cfg.Metrics.Listen != "" {
			if rc.Metrics.Listen, err = shiftPort(cfg.Metrics.Listen, i-1); err != nil {
				return out, fmt.Errorf("metrics.listen: %w", err)
			}
		}
		b, err := yaml.Marshal(&rc)
		if err != nil {
			return out, err
		}
		path := filepath.Join(dir, fmt.Sprintf("stint-replica-%d.yaml", i))
		header := fmt.Sprintf("# Replica %d of `stint dev --replicas`, rewritten at each start from %s.\n", i, devConfigFile)
		if err := os.WriteFile(path, append([]byte(header), b...), 0o600); err != nil {
			return out, err
		}
		r := &devReplica{ID: fmt.Sprintf("dev-%d", i), URL: scheme + "://" + rc.Listen, Config: path}
		r.cmd = exec.CommandContext(ctx, self, "serve", "--config", path, "--replica-id", r.ID)
		r.cmd.Env = env
		r.cmd.Stdout, r.cmd.Stderr = logs, logs
		r.cmd.Cancel = func() error { return r.cmd.Process.Signal(syscall.SIGTERM) }
		r.cmd.WaitDelay = 30 * time.Second
		if err := r.cmd.Start(); err != nil {
			return out, fmt.Errorf("start replica %s: %w", r.ID, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// wait waits for every replica to exit.
func waitDevReplicas(rs []*devReplica) {
	for _, r := range rs {
		r.cmd.Wait()
	}
}

// shiftPort returns addr with its port moved up by n.
func shiftPort(addr string, n int) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p == 0 {
		return "", fmt.Errorf("%q: several replicas need a fixed port", addr)
	}
	return net.JoinHostPort(host, strconv.Itoa(p+n)), nil
}
