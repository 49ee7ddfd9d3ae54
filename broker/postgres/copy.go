package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/stint-broker/stint/broker"
)

// copyTables are the tables stint migrate copy moves, in an order that
// satisfies their foreign keys. The copy writes rows, not lease events, so
// it adds no approval notice: approval_notices is copied as it was.
var copyTables = []string{
	"audit_events",
	"agents", "api_keys", "agent_certificates", "containments",
	"leases", "lease_events", "lease_idempotency_keys",
	"approvals", "approval_messages", "approval_notices",
	"oauth_jtis", "subject_token_uses",
	"console_users", "console_sessions",
	"reviews", "review_items", "review_attestations", "role_exclusions",
	"login_throttle",
}

// identityTables have generated ids, whose sequences the copy moves past
// the copied rows.
var identityTables = []string{"approvals", "approval_notices", "review_attestations"}

// CopyReport says what CopyFrom moved.
type CopyReport struct {
	// Rows is how many rows each table received.
	Rows map[string]int64
	// Tables lists the tables in the order they were copied.
	Tables []string
	// Head is the audit chain's last event after the copy (nil if empty).
	Head *broker.AuditEvent
	// Verified is the verification of the copied chain.
	Verified *broker.AuditVerification
}

// CopyFrom moves every row of a Stint SQLite store (src, opened with the
// modernc driver, at the schema version this binary's PostgreSQL baseline
// equals or later migrated) into db, which must be empty, in one
// transaction: either everything arrives or nothing does. Values move
// unchanged (both schemas store times as unix nanoseconds and JSON as
// text), so the audit chain's hashes still hold. It then verifies the copied
// chain against the source's head and fails if it does not verify or if
// any table's row count differs. The source must not be written meanwhile:
// stop Stint first.
func (db *DB) CopyFrom(ctx context.Context, src *sql.DB) (*CopyReport, error) {
	if err := db.checkEmpty(ctx); err != nil {
		return nil, err
	}
	srcHead, err := sourceHead(ctx, src)
	if err != nil {
		return nil, err
	}

	report := &CopyReport{Rows: map[string]int64{}}
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin copy: %w", err)
	}
	defer tx.Rollback(ctx)
	// lease_events takes rows only from a copy (migration 0001).
	if _, err := tx.Exec(ctx, `SET LOCAL stint.copy = 'on'`); err != nil {
		return nil, fmt.Errorf("begin copy: %w", err)
	}
	for _, table := range copyTables {
		n, err := copyTable(ctx, src, tx, table)
		if err != nil {
			return nil, fmt.Errorf("copy %s: %w", table, err)
		}
		report.Rows[table] = n
		report.Tables = append(report.Tables, table)
	}
	for _, table := range identityTables {
		if _, err := tx.Exec(ctx, `SELECT setval(pg_get_serial_sequence('`+table+`', 'id'), COALESCE((SELECT MAX(id) FROM `+table+`), 0) + 1, false)`); err != nil {
			return nil, fmt.Errorf("move %s's id sequence: %w", table, err)
		}
	}
	if srcHead != nil {
		if _, err := tx.Exec(ctx, `UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1`, srcHead.Seq, srcHead.Hash); err != nil {
			return nil, fmt.Errorf("set audit head: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit copy: %w", err)
	}

	// Verify what arrived: the chain as a whole, its head against the
	// source's, and every table's count.
	v, err := broker.VerifyAudit(ctx, db, broker.AuditVerifyOptions{})
	if err != nil {
		return report, fmt.Errorf("verify copied audit chain: %w", err)
	}
	report.Verified = v
	if !v.OK {
		return report, fmt.Errorf("the copied audit chain does not verify: broken at seq %d: %s", v.BrokenAt, v.Reason)
	}
	head, err := db.AuditHead(ctx)
	if err != nil {
		return report, err
	}
	report.Head = head
	switch {
	case srcHead == nil && head != nil, srcHead != nil && head == nil,
		srcHead != nil && (head.Seq != srcHead.Seq || head.Hash != srcHead.Hash):
		return report, fmt.Errorf("the copied audit chain's head differs from the source's")
	}
	for _, table := range copyTables {
		var want, got int64
		if err := src.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table).Scan(&want); err != nil {
			return report, fmt.Errorf("count source %s: %w", table, err)
		}
		if err := db.pool.QueryRow(ctx, `SELECT COUNT(*) FROM `+table).Scan(&got); err != nil {
			return report, fmt.Errorf("count copied %s: %w", table, err)
		}
		if got != want {
			return report, fmt.Errorf("table %s has %d rows in the copy, %d in the source", table, got, want)
		}
	}
	return report, nil
}

// checkEmpty refuses a database that already holds Stint data: a copy
// never merges two stores.
func (db *DB) checkEmpty(ctx context.Context) error {
	var seq int64
	var agents, users bool
	if err := db.pool.QueryRow(ctx, `SELECT (SELECT seq FROM audit_head WHERE id = 1),
		EXISTS (SELECT 1 FROM agents), EXISTS (SELECT 1 FROM console_users)`).Scan(&seq, &agents, &users); err != nil {
		return fmt.Errorf("check the target is empty: %w", err)
	}
	if seq != 0 || agents || users {
		return errors.New("the PostgreSQL store is not empty: copy into a new, empty database (a copy never merges two stores)")
	}
	return nil
}

// sourceHead reads the source chain's last event.
func sourceHead(ctx context.Context, src *sql.DB) (*broker.AuditEvent, error) {
	var e broker.AuditEvent
	err := src.QueryRowContext(ctx, `SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1`).Scan(&e.Seq, &e.Hash)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("read the source's audit head: %w", err)
	}
	return &e, nil
}

// copyTable streams one table's rows from src into tx with COPY, column by
// column as the PostgreSQL table names them; booleans, integers 0 and 1 in
// SQLite, become booleans.
func copyTable(ctx context.Context, src *sql.DB, tx pgx.Tx, table string) (int64, error) {
	rows, err := tx.Query(ctx, `SELECT column_name, data_type FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position`, table)
	if err != nil {
		return 0, fmt.Errorf("read columns: %w", err)
	}
	var cols []string
	var isBool []bool
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			rows.Close()
			return 0, err
		}
		cols = append(cols, name)
		isBool = append(isBool, typ == "boolean")
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if len(cols) == 0 {
		return 0, fmt.Errorf("no such table in the PostgreSQL schema")
	}
	srcRows, err := src.QueryContext(ctx, `SELECT `+strings.Join(cols, ", ")+` FROM `+table)
	if err != nil {
		return 0, fmt.Errorf("read the source (is it a Stint store at the latest schema? open it once with this stint): %w", err)
	}
	defer srcRows.Close()
	n, err := tx.CopyFrom(ctx, pgx.Identifier{table}, cols, &sqlRowSource{rows: srcRows, n: len(cols), isBool: isBool})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// sqlRowSource feeds database/sql rows to pgx's CopyFrom.
type sqlRowSource struct {
	rows   *sql.Rows
	n      int
	isBool []bool
}

func (s *sqlRowSource) Next() bool { return s.rows.Next() }

func (s *sqlRowSource) Values() ([]any, error) {
	vals := make([]any, s.n)
	ptrs := make([]any, s.n)
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := s.rows.Scan(ptrs...); err != nil {
		return nil, err
	}
	for i, v := range vals {
		if s.isBool[i] {
			switch b := v.(type) {
			case int64:
				vals[i] = b != 0
			}
		}
		if b, ok := v.([]byte); ok { // TEXT read as bytes
			vals[i] = string(b)
		}
	}
	return vals, nil
}

func (s *sqlRowSource) Err() error { return s.rows.Err() }
