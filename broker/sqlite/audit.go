package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/stint-broker/stint/broker"
)

// The audit chain (broker.AuditEvent) lives in audit_events. Every append
// happens inside a write transaction: it reads the head (the highest seq,
// one primary-key seek), seals the new events after it and inserts them.
// SQLite's single writer serializes write transactions (BEGIN IMMEDIATE on
// one connection here, the file lock across processes), so two appends can
// never read the same head: the chain cannot fork, and a lease change and its
// audit event commit or roll back together.
//
// A PostgreSQL store must serialize appends itself, since its writers run
// concurrently: take a transaction-scoped advisory lock
// (pg_advisory_xact_lock on a constant key) before reading the head, in the
// same transaction as the change being audited, and keep seq UNIQUE so that
// a missed lock fails loudly instead of forking the chain. SELECT … FOR
// UPDATE on the head row would not do: it does not block an append to an
// empty chain.

// auditColumns is the column list every audit query selects, in
// scanAuditEvent's order.
const auditColumns = `seq, at, kind, actor, subject, details, prev_hash, hash`

// Record implements broker.AuditLog.
func (db *DB) Record(ctx context.Context, e broker.AuditEvent) error {
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := appendAudit(ctx, tx, &e); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// AuditHead implements broker.AuditStore.
func (db *DB) AuditHead(ctx context.Context) (*broker.AuditEvent, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	return auditHead(ctx, tx)
}

// FindAuditEvents implements broker.AuditStore. Events are ordered by seq,
// newest first.
func (db *DB) FindAuditEvents(ctx context.Context, filter broker.AuditFilter) ([]*broker.AuditEvent, int, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer tx.Rollback()

	cond, args := auditWhere(filter)
	var total int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_events WHERE `+cond, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count audit events: %w", err)
	}
	events := []*broker.AuditEvent{}
	if total == 0 {
		return events, 0, nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit_events WHERE `+cond+`
		ORDER BY seq DESC `+limitOffset(filter.Limit, filter.Offset), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("find audit events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		e, err := scanAuditEvent(rows)
		if err != nil {
			return nil, 0, err
		}
		events = append(events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("find audit events: %w", err)
	}
	return events, total, nil
}

// ScanAuditEvents implements broker.AuditStore. It reads in one read
// transaction, so the events form one snapshot of the chain however many
// are appended meanwhile.
func (db *DB) ScanAuditEvents(ctx context.Context, filter broker.AuditFilter, fn func(*broker.AuditEvent) error) error {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()

	cond, args := auditWhere(filter)
	// Not through the statement cache: a long scan would hold a cached
	// statement that others need.
	rows, err := tx.Tx.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit_events WHERE `+cond+` ORDER BY seq`, args...)
	if err != nil {
		return fmt.Errorf("scan audit events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		e, err := scanAuditEvent(rows)
		if err != nil {
			return err
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("scan audit events: %w", err)
	}
	return nil
}

// auditWhere renders filter as a WHERE condition and its arguments.
func auditWhere(filter broker.AuditFilter) (string, []any) {
	where, args := []string{"1 = 1"}, []any{}
	if v := filter.Since; v != nil {
		where, args = append(where, "at >= ?"), append(args, nanos(*v))
	}
	if v := filter.Until; v != nil {
		where, args = append(where, "at < ?"), append(args, nanos(*v))
	}
	if v := filter.Kind; v != nil && *v != "" {
		if strings.HasSuffix(*v, ".") {
			// A prefix: kinds are [a-z0-9_.], so the range needs no escaping.
			where, args = append(where, "kind >= ? AND kind < ?"), append(args, *v, (*v)[:len(*v)-1]+"/")
		} else {
			where, args = append(where, "kind = ?"), append(args, *v)
		}
	}
	if v := filter.Actor; v != nil {
		where, args = append(where, "actor = ?"), append(args, *v)
	}
	if v := filter.Subject; v != nil {
		where, args = append(where, "subject = ?"), append(args, *v)
	}
	if filter.AfterSeq > 0 {
		where, args = append(where, "seq > ?"), append(args, filter.AfterSeq)
	}
	return strings.Join(where, " AND "), args
}

// scanAuditEvent reads one row of auditColumns.
func scanAuditEvent(row rowScanner) (*broker.AuditEvent, error) {
	var (
		e       broker.AuditEvent
		at      int64
		details string
	)
	if err := row.Scan(&e.Seq, &at, &e.Kind, &e.Actor, &e.Subject, &details, &e.PrevHash, &e.Hash); err != nil {
		return nil, fmt.Errorf("scan audit event: %w", err)
	}
	e.At, e.Details = fromNanos(at), json.RawMessage(details)
	return &e, nil
}

// auditHead returns the last event of the chain, or nil if it is empty.
func auditHead(ctx context.Context, tx *tx) (*broker.AuditEvent, error) {
	e, err := scanAuditEvent(tx.QueryRowContext(ctx, `SELECT `+auditColumns+` FROM audit_events ORDER BY seq DESC LIMIT 1`))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("read audit head: %w", err)
	}
	return e, nil
}

// auditHeadLink returns the seq and hash of the chain's last event (all
// that sealing the next one needs), or nil if the chain is empty.
func auditHeadLink(ctx context.Context, tx *tx) (*broker.AuditEvent, error) {
	if head, ok, err := tx.chainHead(ctx); err != nil || ok {
		return head, err
	}
	var e broker.AuditEvent
	err := tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1`).Scan(&e.Seq, &e.Hash)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("read audit head: %w", err)
	}
	return &e, nil
}

// appendAudit seals events after the chain's head and inserts them, in
// order, in tx. It validates kinds, canonicalizes details and stamps zero
// times with tx.now.
func appendAudit(ctx context.Context, tx *tx, events ...*broker.AuditEvent) error {
	rows := make([]auditInsert, len(events))
	for i, e := range events {
		rows[i].event = e
	}
	return insertAudit(ctx, tx, rows)
}

// auditInsert is one event to append.
type auditInsert struct {
	event *broker.AuditEvent
	// leaseEventID is the lease event it mirrors; 0 for none.
	leaseEventID int64
	// canonical is set when the store built Details in canonical form itself.
	canonical bool
}

// insertAudit is appendAudit for events that may mirror lease events.
func insertAudit(ctx context.Context, tx *tx, rows []auditInsert) error {
	if len(rows) == 0 {
		return nil
	}
	for _, r := range rows {
		e := r.event
		if !broker.ValidAuditKind(e.Kind) {
			return broker.FieldErrorf("kind", "Audit kind %q is invalid.", e.Kind)
		}
		if !r.canonical {
			details, err := broker.CanonicalDetails(e.Details)
			if err != nil {
				return err
			}
			e.Details = details
		}
		if e.At.IsZero() {
			e.At = tx.now
		}
		e.At = normTime(e.At)
	}
	prev, err := auditHeadLink(ctx, tx)
	if err != nil {
		return err
	}
	for _, r := range rows {
		r.event.Seal(prev)
		prev = r.event
	}

	// Multi-row INSERTs of up to auditChunk rows: one statement text per
	// chunk size, so the statement cache keeps them parsed. (A JSON array
	// through json_each cost twice as much: SQLite re-parses the array for
	// every extracted column.)
	for len(rows) > 0 {
		n := min(len(rows), auditChunk)
		args := make([]any, 0, n*9)
		for _, r := range rows[:n] {
			e := r.event
			args = append(args, e.Seq, nanos(e.At), e.Kind, e.Actor, e.Subject, string(e.Details), e.PrevHash, e.Hash, nullID(r.leaseEventID))
		}
		if _, err := tx.ExecContext(ctx, auditInsertSQL(n), args...); err != nil {
			return fmt.Errorf("append audit events: %w", err)
		}
		tx.appended(rows[n-1].event)
		rows = rows[n:]
	}
	return nil
}

// auditChunk is the most rows one INSERT appends (9 parameters each, well
// under SQLite's limit of 32,766).
const auditChunk = 100

// auditInsertSQLs caches the INSERT text for each chunk size.
var auditInsertSQLs [auditChunk + 1]string

func init() {
	for n := 1; n <= auditChunk; n++ {
		auditInsertSQLs[n] = `INSERT INTO audit_events (` + auditColumns + `, lease_event_id) VALUES ` +
			strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?, ?, ?, ?), ", n), ", ")
	}
}

// auditInsertSQL returns the INSERT of n rows, 1 <= n <= auditChunk.
func auditInsertSQL(n int) string { return auditInsertSQLs[n] }

// nullID is the stored form of an optional id: NULL when 0.
func nullID(id int64) any {
	if id == 0 {
		return nil
	}
	return id
}

// The lease history is the audit chain: each lease event is an audit event
// of kind lease.created, lease.state or lease.note whose subject is the
// lease id, and its id is the event's seq. Writers queue lease events on
// their transaction (insertLeaseEvent); Commit appends them, so a lease
// change and its history commit or roll back together.
//
// Before schema version 10, lease events were rows of lease_events, each
// mirrored into the chain in the transaction that wrote it (the audit row's
// lease_event_id names it, and its details carry it as event_id).
// lease_events keeps those rows and takes no more.

// appendLeaseEvents appends the lease events queued on tx to the chain, in
// order, and sets each one's ID to its seq.
func appendLeaseEvents(ctx context.Context, tx *tx) error {
	inserts := make([]auditInsert, len(tx.leaseEvents))
	for i, e := range tx.leaseEvents {
		var l *broker.Lease
		if e.From == "" {
			if l = tx.created[e.LeaseID]; l == nil {
				var err error
				if l, err = findLeaseByID(ctx, tx, e.LeaseID); err != nil {
					return fmt.Errorf("audit the creation of lease %s: %w", e.LeaseID, err)
				}
			}
		}
		inserts[i] = auditInsert{event: leaseAuditEvent(e, l), canonical: true}
	}
	if err := insertAudit(ctx, tx, inserts); err != nil {
		return err
	}
	for i, e := range tx.leaseEvents {
		e.ID = inserts[i].event.Seq
	}
	if err := insertNotices(ctx, tx, tx.leaseEvents); err != nil {
		return err
	}
	clear(tx.leaseEvents)
	tx.leaseEvents = tx.leaseEvents[:0]
	return nil
}

// mirrorLegacyLeaseEvents appends to the chain the rows of lease_events that
// it does not mirror yet. Every writer before schema version 10 mirrored its
// lease events as it wrote them, so there are none unless the database
// comes from before the chain (schema version 5) and nothing wrote to it
// since. Open runs it once.
func (db *DB) mirrorLegacyLeaseEvents(ctx context.Context) error {
	// Read first, so that opening a database (each CLI command does) takes
	// the write lock only when there is something to write.
	var behind bool
	if err := db.readOne(ctx).QueryRowContext(ctx, `
		SELECT EXISTS (SELECT 1 FROM lease_events
			WHERE id > (SELECT IFNULL(MAX(lease_event_id), 0) FROM audit_events))`).Scan(&behind); err != nil {
		return fmt.Errorf("find unmirrored lease events: %w", err)
	} else if !behind {
		return nil
	}
	tx, err := db.begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var last sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT MAX(lease_event_id) FROM audit_events`).Scan(&last); err != nil {
		return fmt.Errorf("find the last mirrored lease event: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `
		SELECT id, lease_id, at, from_state, to_state, actor, reason
		FROM lease_events WHERE id > ? ORDER BY id`, last.Int64)
	if err != nil {
		return fmt.Errorf("find unmirrored lease events: %w", err)
	}
	var pending []*broker.LeaseEvent
	for rows.Next() {
		var (
			e        broker.LeaseEvent
			at       int64
			from, to string
		)
		if err := rows.Scan(&e.ID, &e.LeaseID, &at, &from, &to, &e.Actor, &e.Reason); err != nil {
			rows.Close()
			return fmt.Errorf("scan lease event: %w", err)
		}
		e.At, e.From, e.To = fromNanos(at), broker.LeaseState(from), broker.LeaseState(to)
		pending = append(pending, &e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("find unmirrored lease events: %w", err)
	}
	if len(pending) == 0 {
		return nil
	}
	inserts := make([]auditInsert, len(pending))
	for i, e := range pending {
		var l *broker.Lease
		if e.From == "" {
			if l, err = findLeaseByID(ctx, tx, e.LeaseID); err != nil {
				return fmt.Errorf("audit lease event %d: %w", e.ID, err)
			}
		}
		inserts[i] = auditInsert{event: leaseAuditEvent(e, l), leaseEventID: e.ID, canonical: true}
	}
	if err := insertAudit(ctx, tx, inserts); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// leaseAuditEvent returns the audit event of lease event e, its details in
// canonical form. The creation event carries what was asked and what policy
// decided; l is the lease (nil for later events, whose details are built
// directly: a batch of hundreds must not pay for a JSON round trip each).
// A legacy event (e.ID set: a row of lease_events) carries its id as
// event_id.
func leaseAuditEvent(e *broker.LeaseEvent, l *broker.Lease) *broker.AuditEvent {
	a := &broker.AuditEvent{At: e.At, Actor: e.Actor, Subject: e.LeaseID}
	switch {
	case l != nil:
		a.Kind = broker.AuditLeaseCreated
		a.Details = leaseCreatedDetails(e, l)
	case e.From == e.To:
		// Keys in sorted order, as canonical details require.
		a.Kind = broker.AuditLeaseNote
		a.Details = append(eventID(e), `"reason":`...)
		a.Details = append(append(a.Details, jsonString(e.Reason)...), `,"state":`...)
		a.Details = append(append(a.Details, jsonString(string(e.To))...), '}')
	default:
		a.Kind = broker.AuditLeaseState
		a.Details = append(eventID(e), `"from":`...)
		a.Details = append(append(a.Details, jsonString(string(e.From))...), `,"reason":`...)
		a.Details = append(append(a.Details, jsonString(e.Reason)...), `,"to":`...)
		a.Details = append(append(a.Details, jsonString(string(e.To))...), '}')
	}
	return a
}

// eventID opens the details of a state or note event: with a legacy
// event's event_id, the first key in sorted order.
func eventID(e *broker.LeaseEvent) []byte {
	b := make([]byte, 0, 96+len(e.Reason))
	b = append(b, '{')
	if e.ID != 0 {
		b = append(strconv.AppendInt(append(b, `"event_id":`...), e.ID, 10), ',')
	}
	return b
}

// leaseCreatedDetails renders the details of lease l's creation event e in
// canonical form: what was asked and what policy decided, keys in sorted
// order at every level, compact, strings encoded as encoding/json encodes
// them. It is what broker.AuditDetails makes of the same fields as a map,
// without the reflection and the JSON round trip (a grant's hot path).
func leaseCreatedDetails(e *broker.LeaseEvent, l *broker.Lease) []byte {
	b := make([]byte, 0, 384+len(l.Task)+len(l.Justification)+len(l.Decision))
	str := func(key, v string) {
		b = append(append(append(b, '"'), key...), `":`...)
		b = append(append(b, jsonString(v)...), ',')
	}
	num := func(key string, v int64) {
		b = append(append(append(b, '"'), key...), `":`...)
		b = append(strconv.AppendInt(b, v, 10), ',')
	}
	b = append(b, '{')
	str("agent", l.Agent)
	str("agent_id", l.AgentID)
	str("auth_method", l.AuthMethod)
	if l.Breakglass {
		b = append(b, `"breakglass":true,`...)
	}
	str("decision", l.Decision)
	if e.ID != 0 {
		num("event_id", e.ID)
	}
	str("justification", l.Justification)
	if l.OnBehalfOf != "" {
		str("on_behalf_of", l.OnBehalfOf)
	}
	if d := l.PolicyDecision; d != nil {
		b = append(b, `"policy_decision":{`...)
		if d.Approvals != 0 {
			num("approvals", int64(d.Approvals))
		}
		if d.ApproverGroup != "" {
			str("approver_group", d.ApproverGroup)
		}
		str("outcome", string(d.Outcome))
		list := func(key string, vs []string) {
			if len(vs) == 0 {
				return
			}
			b = append(append(append(b, '"'), key...), `":[`...)
			for i, v := range vs {
				if i > 0 {
					b = append(b, ',')
				}
				b = append(b, jsonString(v)...)
			}
			b = append(b, "],"...)
		}
		list("policy_ids", d.PolicyIDs)
		list("reasons", d.Reasons)
		b = append(b[:len(b)-1], "},"...)
	}
	str("reason", e.Reason)
	num("risk_score", int64(l.RiskScore))
	str("role", l.Role)
	str("source_ip", l.SourceIP)
	str("state", string(e.To))
	str("task", l.Task)
	str("ttl", l.TTL.String())
	return append(b[:len(b)-1], '}')
}

// jsonString encodes s in canonical form: as encoding/json encodes it, after
// replacing each byte of invalid UTF-8 with U+FFFD (which encoding/json
// would write as the escape \ufffd, and a decode-and-encode round trip
// as the character itself).
func jsonString(s string) []byte {
	plain := true // printable ASCII that encoding/json writes as is
	for i := 0; i < len(s) && plain; i++ {
		c := s[i]
		plain = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	if plain {
		b := make([]byte, 0, len(s)+2)
		return append(append(append(b, '"'), s...), '"')
	}
	if !utf8.ValidString(s) {
		var sb strings.Builder
		for i := 0; i < len(s); {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				sb.WriteRune(utf8.RuneError)
			} else {
				sb.WriteString(s[i : i+size])
			}
			i += size
		}
		s = sb.String()
	}
	b, _ := json.Marshal(s) // a string always encodes
	return b
}

// appendAgentAudit records an admin action on an agent in tx, by the actor
// of ctx.
func appendAgentAudit(ctx context.Context, tx *tx, kind, agentID string, details map[string]any) error {
	return appendAudit(ctx, tx, &broker.AuditEvent{Kind: kind, Actor: actorString(ctx), Subject: agentID, Details: broker.AuditDetails(details)})
}

// appendAgentUpdateAudit records an agent update unless it only touched the
// last-seen time (which authentication writes, and which is not an action).
func appendAgentUpdateAudit(ctx context.Context, tx *tx, a *broker.Agent, upd broker.AgentUpdate) error {
	d := map[string]any{}
	if upd.State != nil {
		d["state"] = *upd.State
	}
	if upd.Owner != nil {
		d["owner"] = *upd.Owner
	}
	if upd.Labels != nil {
		d["labels"] = upd.Labels
	}
	if len(d) == 0 {
		return nil
	}
	d["name"] = a.Name
	return appendAgentAudit(ctx, tx, broker.AuditAgentUpdated, a.ID, d)
}
