// Package pgtest gives tests a PostgreSQL database of their own: a fresh
// schema in the server STINT_TEST_PG_DSN names, dropped when the test ends,
// so that tests and concurrent runs never see each other's rows. Tests that
// call it skip when the variable is unset.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDSN names the variable holding the DSN of the test server. Its role
// must be allowed to create schemas and roles.
const EnvDSN = "STINT_TEST_PG_DSN"

// AdminDSN returns the test server's DSN. When it is unset it skips tb, or
// fails it under CI (CI=true), where a missing PostgreSQL is an error.
func AdminDSN(tb testing.TB) string {
	tb.Helper()
	dsn := os.Getenv(EnvDSN)
	if dsn == "" {
		msg := fmt.Sprintf("%s is not set: no PostgreSQL to test against (make test sets it; or export %s='postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable')", EnvDSN, EnvDSN)
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return dsn
}

// Exec runs sql on the test server as its administrator.
func Exec(tb testing.TB, sql string, args ...any) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, AdminDSN(tb))
	if err != nil {
		tb.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		tb.Fatalf("pgtest: %s: %v", sql, err)
	}
}

// NewSchema creates an empty schema, dropped with everything in it when tb
// ends, and returns its name and a DSN whose connections use it.
func NewSchema(tb testing.TB) (name, dsn string) {
	tb.Helper()
	admin := AdminDSN(tb)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	name = "stint_test_" + hex.EncodeToString(b[:])
	Exec(tb, "CREATE SCHEMA "+name)
	tb.Cleanup(func() { Exec(tb, "DROP SCHEMA "+name+" CASCADE") })
	return name, WithParam(tb, admin, "search_path", name)
}

// WithParam returns dsn with a query parameter set (a URL DSN) or a
// key=value pair added.
func WithParam(tb testing.TB, dsn, key, value string) string {
	tb.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			tb.Fatalf("pgtest: %s: %v", EnvDSN, err)
		}
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " " + key + "=" + value
}
