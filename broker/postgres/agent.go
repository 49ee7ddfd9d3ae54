package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/stint-broker/stint/broker"
)

// CreateAgent implements broker.AgentStore. It assigns an ID when a.ID is
// empty and stamps CreatedAt and UpdatedAt when they are zero.
func (db *DB) CreateAgent(ctx context.Context, a *broker.Agent) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()

	if err := createAgent(ctx, tx, a); err != nil {
		return err
	}
	if err := appendAgentAudit(ctx, tx, broker.AuditAgentCreated, a.ID, map[string]any{
		"name": a.Name, "owner": a.Owner, "labels": a.Labels, "state": a.State}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// FindAgentByID implements broker.AgentStore.
func (db *DB) FindAgentByID(ctx context.Context, id string) (*broker.Agent, error) {
	tx := db.readOne(ctx)
	return findAgentByID(ctx, tx, id)
}

// FindAgentByName implements broker.AgentStore.
func (db *DB) FindAgentByName(ctx context.Context, name string) (*broker.Agent, error) {
	tx := db.readOne(ctx)

	return findAgent(ctx, tx, "name = ?", name)
}

// FindAgents implements broker.AgentStore.
func (db *DB) FindAgents(ctx context.Context, filter broker.AgentFilter) ([]*broker.Agent, int, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer tx.Rollback()
	return findAgents(ctx, tx, filter)
}

// UpdateAgent implements broker.AgentStore. A non-nil Labels replaces the
// labels (an empty map clears them); LastSeenAt pointing to a zero time
// clears it.
func (db *DB) UpdateAgent(ctx context.Context, id string, upd broker.AgentUpdate) (*broker.Agent, error) {
	tx, err := db.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	a, err := updateAgent(ctx, tx, id, upd)
	if err != nil {
		return nil, err
	}
	if err := appendAgentUpdateAudit(ctx, tx, a, upd); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return a, nil
}

// CreateAPIKey implements broker.AgentStore. It assigns an ID when k.ID is
// empty and stamps CreatedAt when it is zero. It also returns ENOTFOUND if
// the agent does not exist.
func (db *DB) CreateAPIKey(ctx context.Context, k *broker.APIKey) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()

	if err := createAPIKey(ctx, tx, k); err != nil {
		return err
	}
	if err := appendAgentAudit(ctx, tx, broker.AuditAgentKeyCreated, k.AgentID, map[string]any{
		"key_id": k.ID, "prefix": k.Prefix, "expires_at": k.ExpiresAt}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// FindAgentByAPIKeyHash implements broker.AgentStore: authentication's one
// read.
func (db *DB) FindAgentByAPIKeyHash(ctx context.Context, hash string) (*broker.APIKey, *broker.Agent, error) {
	tx := db.readOne(ctx)
	var (
		k                    broker.APIKey
		createdAt, expiresAt int64
		revokedAt            sql.NullInt64
	)
	a, err := scanAgent(prefixScanner{
		row: tx.QueryRowContext(ctx, `
			SELECT k.id, k.agent_id, k.prefix, k.hash, k.created_at, k.expires_at, k.revoked_at, `+agentColumnsOf("a")+`
			FROM api_keys AS k JOIN agents AS a ON a.id = k.agent_id
			WHERE k.hash = ?`, hash),
		dest: []any{&k.ID, &k.AgentID, &k.Prefix, &k.Hash, &createdAt, &expiresAt, &revokedAt},
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, broker.Errorf(broker.ENOTFOUND, "API key not found.")
	} else if err != nil {
		return nil, nil, fmt.Errorf("find api key and agent: %w", err)
	}
	k.CreatedAt, k.ExpiresAt = fromNanos(createdAt), fromNanos(expiresAt)
	k.RevokedAt = fromNullNanos(revokedAt)
	return &k, a, nil
}

// prefixScanner scans dest, then the columns its caller asks for, from one
// row: a joined row read by a scanner written for one table.
type prefixScanner struct {
	row  rowScanner
	dest []any
}

func (p prefixScanner) Scan(dest ...any) error {
	return p.row.Scan(append(p.dest, dest...)...)
}

// FindAPIKeys implements broker.AgentStore. An unknown agent has no keys.
func (db *DB) FindAPIKeys(ctx context.Context, agentID string) ([]*broker.APIKey, error) {
	tx := db.readOne(ctx)
	return findAPIKeys(ctx, tx, "agent_id = ?", agentID)
}

// RevokeAPIKeys implements broker.AgentStore. A zero at means now.
func (db *DB) RevokeAPIKeys(ctx context.Context, agentID string, at time.Time) (int, error) {
	tx, err := db.begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()

	if at.IsZero() {
		at = tx.now
	}
	res, err := tx.ExecContext(ctx, `
		UPDATE api_keys SET revoked_at = ?
		WHERE agent_id = ? AND revoked_at IS NULL`,
		nanos(at), agentID)
	if err != nil {
		return 0, fmt.Errorf("revoke api keys: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("revoke api keys: %w", err)
	}
	if n > 0 {
		if err := appendAgentAudit(ctx, tx, broker.AuditAgentKeysRevoked, agentID, map[string]any{"keys": n}); err != nil {
			return 0, err
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return int(n), nil
}

// createAgent inserts a, filling in its ID and timestamps when unset.
func createAgent(ctx context.Context, tx *tx, a *broker.Agent) error {
	if a.ID == "" {
		id, err := newID()
		if err != nil {
			return err
		}
		a.ID = id
	}
	if a.CreatedAt.IsZero() {
		a.CreatedAt = tx.now
	}
	if a.UpdatedAt.IsZero() {
		a.UpdatedAt = a.CreatedAt
	}
	a.CreatedAt, a.UpdatedAt = normTime(a.CreatedAt), normTime(a.UpdatedAt)
	a.LastSeenAt = normTimePtr(a.LastSeenAt)
	if a.Labels == nil {
		a.Labels = map[string]string{}
	}
	labels, err := json.Marshal(a.Labels)
	if err != nil {
		return fmt.Errorf("encode labels: %w", err)
	}
	if a.AuthMethods == nil {
		a.AuthMethods = broker.DefaultAuthMethods()
	}
	a.TokensNotBefore = normTimePtr(a.TokensNotBefore)
	methods, err := json.Marshal(a.AuthMethods)
	if err != nil {
		return fmt.Errorf("encode auth methods: %w", err)
	}

	if _, err := tx.ExecContext(ctx, `
		INSERT INTO agents (id, name, owner, labels, state, created_at, updated_at, last_seen_at,
			auth_methods, spiffe_id, client_secret_hash, public_jwks, tokens_not_before)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.ID, a.Name, a.Owner, string(labels), string(a.State),
		nanos(a.CreatedAt), nanos(a.UpdatedAt), nullNanos(a.LastSeenAt),
		string(methods), a.SPIFFEID, a.ClientSecretHash, a.PublicJWKS, nullNanos(a.TokensNotBefore),
	); err != nil {
		return fmt.Errorf("insert agent: %w", formatError(err))
	}
	return nil
}

// findAgentByID returns ENOTFOUND if no agent has the id.
func findAgentByID(ctx context.Context, tx *tx, id string) (*broker.Agent, error) {
	return findAgent(ctx, tx, "id = ?", id)
}

// findAgent returns the agent matching one condition on a unique column, or
// ENOTFOUND.
func findAgent(ctx context.Context, tx *tx, cond string, arg any) (*broker.Agent, error) {
	a, err := scanAgent(tx.QueryRowContext(ctx, `
		SELECT `+agentColumns+`
		FROM agents
		WHERE `+cond+tx.lockClause(), arg))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, broker.Errorf(broker.ENOTFOUND, "Agent not found.")
	} else if err != nil {
		return nil, err
	}
	return a, nil
}

// findAgents returns one page of matching agents by name, and the total.
func findAgents(ctx context.Context, tx *tx, filter broker.AgentFilter) ([]*broker.Agent, int, error) {
	where, args := []string{"1 = 1"}, []any{}
	if v := filter.ID; v != nil {
		where, args = append(where, "id = ?"), append(args, *v)
	}
	if v := filter.Name; v != nil {
		where, args = append(where, "name = ?"), append(args, *v)
	}
	if v := filter.State; v != nil {
		where, args = append(where, "state = ?"), append(args, string(*v))
	}
	if v := filter.SPIFFEID; v != nil {
		where, args = append(where, "spiffe_id = ? AND spiffe_id <> ''"), append(args, *v)
	}
	cond := strings.Join(where, " AND ")

	var total int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM agents WHERE `+cond, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count agents: %w", err)
	}

	rows, err := tx.QueryContext(ctx, `
		SELECT `+agentColumns+`
		FROM agents
		WHERE `+cond+`
		ORDER BY name
		`+limitOffset(filter.Limit, filter.Offset),
		args...)
	if err != nil {
		return nil, 0, fmt.Errorf("find agents: %w", err)
	}
	defer rows.Close()

	agents := []*broker.Agent{}
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, 0, err
		}
		agents = append(agents, a)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("find agents: %w", err)
	}
	return agents, total, nil
}

// agentColumns are the columns scanAgent reads, in order.
const agentColumns = `id, name, owner, labels, state, created_at, updated_at, last_seen_at,
		auth_methods, spiffe_id, client_secret_hash, public_jwks, tokens_not_before`

// agentColumnsOf is agentColumns qualified by a table alias, for joins.
func agentColumnsOf(alias string) string {
	cols := strings.Split(agentColumns, ",")
	for i, c := range cols {
		cols[i] = alias + "." + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

// scanAgent reads agentColumns.
func scanAgent(row rowScanner) (*broker.Agent, error) {
	var (
		a                           broker.Agent
		labels, state, methods      string
		createdAt, updatedAt        int64
		lastSeenAt, tokensNotBefore sql.NullInt64
	)
	if err := row.Scan(&a.ID, &a.Name, &a.Owner, &labels, &state, &createdAt, &updatedAt, &lastSeenAt,
		&methods, &a.SPIFFEID, &a.ClientSecretHash, &a.PublicJWKS, &tokensNotBefore); err != nil {
		return nil, fmt.Errorf("scan agent: %w", err)
	}
	if err := json.Unmarshal([]byte(methods), &a.AuthMethods); err != nil {
		return nil, fmt.Errorf("decode auth methods of agent %s: %w", a.ID, err)
	}
	a.TokensNotBefore = fromNullNanos(tokensNotBefore)
	if err := json.Unmarshal([]byte(labels), &a.Labels); err != nil {
		return nil, fmt.Errorf("decode labels of agent %s: %w", a.ID, err)
	}
	if a.Labels == nil {
		a.Labels = map[string]string{}
	}
	a.State = broker.AgentState(state)
	a.CreatedAt, a.UpdatedAt = fromNanos(createdAt), fromNanos(updatedAt)
	a.LastSeenAt = fromNullNanos(lastSeenAt)
	return &a, nil
}

// updateAgent applies upd to the agent and returns it as stored.
func updateAgent(ctx context.Context, tx *tx, id string, upd broker.AgentUpdate) (*broker.Agent, error) {
	a, err := findAgentByID(ctx, tx, id)
	if err != nil {
		return nil, err
	}
	if v := upd.Owner; v != nil {
		a.Owner = *v
	}
	if upd.Labels != nil {
		a.Labels = maps.Clone(upd.Labels)
	}
	if v := upd.State; v != nil {
		if a.State == broker.AgentDisabled && *v != broker.AgentDisabled {
			return nil, errAgentDisabled(a)
		}
		a.State = *v
	}
	if v := upd.LastSeenAt; v != nil {
		a.LastSeenAt = normTimePtr(v)
	}
	if upd.AuthMethods != nil {
		a.AuthMethods = append([]string(nil), upd.AuthMethods...)
	}
	if v := upd.SPIFFEID; v != nil {
		a.SPIFFEID = *v
	}
	if v := upd.ClientSecretHash; v != nil {
		a.ClientSecretHash = *v
	}
	if v := upd.PublicJWKS; v != nil {
		a.PublicJWKS = *v
	}
	if v := upd.TokensNotBefore; v != nil {
		a.TokensNotBefore = normTimePtr(v)
	}
	a.UpdatedAt = tx.now

	labels, err := json.Marshal(a.Labels)
	if err != nil {
		return nil, fmt.Errorf("encode labels: %w", err)
	}
	methods, err := json.Marshal(a.AuthMethods)
	if err != nil {
		return nil, fmt.Errorf("encode auth methods: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `
		UPDATE agents
		SET owner = ?, labels = ?, state = ?, updated_at = ?, last_seen_at = ?,
			auth_methods = ?, spiffe_id = ?, client_secret_hash = ?, public_jwks = ?, tokens_not_before = ?
		WHERE id = ?`,
		a.Owner, string(labels), string(a.State), nanos(a.UpdatedAt), nullNanos(a.LastSeenAt),
		string(methods), a.SPIFFEID, a.ClientSecretHash, a.PublicJWKS, nullNanos(a.TokensNotBefore),
		id,
	); err != nil {
		return nil, fmt.Errorf("update agent: %w", formatError(err))
	}
	return a, nil
}

// errAgentDisabled is the refusal to move a disabled agent to another
// state: disabling is final.
func errAgentDisabled(a *broker.Agent) error {
	return broker.Errorf(broker.ECONFLICT, "Agent %s is disabled for good: it cannot be re-activated or suspended. Register a new agent instead.", a.Name)
}

// createAPIKey inserts k, filling in its ID and CreatedAt when unset.
func createAPIKey(ctx context.Context, tx *tx, k *broker.APIKey) error {
	if k.ID == "" {
		id, err := newID()
		if err != nil {
			return err
		}
		k.ID = id
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = tx.now
	}
	k.CreatedAt, k.ExpiresAt = normTime(k.CreatedAt), normTime(k.ExpiresAt)
	k.RevokedAt = normTimePtr(k.RevokedAt)

	if _, err := tx.ExecContext(ctx, `
		INSERT INTO api_keys (id, agent_id, prefix, hash, created_at, expires_at, revoked_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`,
		k.ID, k.AgentID, k.Prefix, k.Hash,
		nanos(k.CreatedAt), nanos(k.ExpiresAt), nullNanos(k.RevokedAt),
	); isForeignKeyError(err) {
		return broker.Errorf(broker.ENOTFOUND, "Agent not found.")
	} else if err != nil {
		return fmt.Errorf("insert api key: %w", formatError(err))
	}
	return nil
}

// findAPIKeys returns the keys matching one condition, newest first.
func findAPIKeys(ctx context.Context, tx *tx, cond string, arg any) ([]*broker.APIKey, error) {
	rows, err := tx.QueryContext(ctx, `
		SELECT id, agent_id, prefix, hash, created_at, expires_at, revoked_at
		FROM api_keys
		WHERE `+cond+`
		ORDER BY created_at DESC, id DESC`,
		arg)
	if err != nil {
		return nil, fmt.Errorf("find api keys: %w", err)
	}
	defer rows.Close()

	keys := []*broker.APIKey{}
	for rows.Next() {
		var (
			k                    broker.APIKey
			createdAt, expiresAt int64
			revokedAt            sql.NullInt64
		)
		if err := rows.Scan(&k.ID, &k.AgentID, &k.Prefix, &k.Hash, &createdAt, &expiresAt, &revokedAt); err != nil {
			return nil, fmt.Errorf("scan api key: %w", err)
		}
		k.CreatedAt, k.ExpiresAt = fromNanos(createdAt), fromNanos(expiresAt)
		k.RevokedAt = fromNullNanos(revokedAt)
		keys = append(keys, &k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find api keys: %w", err)
	}
	return keys, nil
}

// limitOffset renders a LIMIT clause; limit 0 means no limit.
func limitOffset(limit, offset int) string {
	if limit <= 0 && offset <= 0 {
		return ""
	}
	if limit <= 0 {
		return fmt.Sprintf("OFFSET %d", max(offset, 0))
	}
	return fmt.Sprintf("LIMIT %d OFFSET %d", limit, max(offset, 0))
}
