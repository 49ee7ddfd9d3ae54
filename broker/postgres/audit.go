package postgres

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

// The audit chain (broker.AuditEvent) lives in audit_events, its head in
// audit_head (flushAudit). A write transaction queues its events and
// appends them at Commit, with the change they record.

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
	rows, err := tx.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit_events WHERE `+cond+` ORDER BY seq`, args...)
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
			where, args = append(where, "starts_with(kind, ?)"), append(args, *v)
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

// appendAudit validates events, canonicalizes their details, stamps zero
// times with tx.now and queues them on tx: Commit appends them to the
// chain, before the lease events the transaction wrote.
func appendAudit(ctx context.Context, tx *tx, events ...*broker.AuditEvent) error {
	for _, e := range events {
		if !broker.ValidAuditKind(e.Kind) {
			return broker.FieldErrorf("kind", "Audit kind %q is invalid.", e.Kind)
		}
		details, err := broker.CanonicalDetails(e.Details)
		if err != nil {
			return err
		}
		e.Details = details
		if e.At.IsZero() {
			e.At = tx.now
		}
		e.At = normTime(e.At)
	}
	tx.audits = append(tx.audits, events...)
	return nil
}

// flushAudit appends the events queued on tx to the chain: it locks the
// chain's head row (audit_head) for the rest of the transaction, seals the
// events after it, inserts them and moves the head. Replicas' appends thus
// run one at a time, each in the transaction of the change it records, and
// the chain stays one line; were the lock ever missed, UNIQUE on seq and on
// prev_hash would fail the transaction rather than fork the chain. The lock
// is taken last, after every row lock of the transaction, so that it is
// held only for the appends and the commit and two writers never wait on
// each other in a cycle through it.
func flushAudit(ctx context.Context, tx *tx) error {
	events := make([]*broker.AuditEvent, 0, len(tx.audits)+len(tx.leaseEvents))
	events = append(events, tx.audits...)
	for _, e := range tx.leaseEvents {
		var l *broker.Lease
		if e.From == "" {
			if l = tx.created[e.LeaseID]; l == nil {
				var err error
				if l, err = findLeaseByID(ctx, tx, e.LeaseID); err != nil {
					return fmt.Errorf("audit the creation of lease %s: %w", e.LeaseID, err)
				}
			}
		}
		events = append(events, leaseAuditEvent(e, l))
	}

	var head broker.AuditEvent
	if err := tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE`).Scan(&head.Seq, &head.Hash); err != nil {
		return fmt.Errorf("lock audit head: %w", err)
	}
	prev := &head
	if head.Seq == 0 {
		prev = nil
	}
	for _, e := range events {
		e.Seal(prev)
		prev = e
	}
	for rows := events; len(rows) > 0; {
		n := min(len(rows), auditChunk)
		args := make([]any, 0, n*8)
		for _, e := range rows[:n] {
			args = append(args, e.Seq, nanos(e.At), e.Kind, e.Actor, e.Subject, string(e.Details), e.PrevHash, e.Hash)
		}
		if _, err := tx.ExecContext(ctx, auditInsertSQL(n), args...); err != nil {
			return fmt.Errorf("append audit events: %w", formatError(err))
		}
		rows = rows[n:]
	}
	if _, err := tx.ExecContext(ctx, `UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1`, prev.Seq, prev.Hash); err != nil {
		return fmt.Errorf("move audit head: %w", err)
	}
	for i, e := range tx.leaseEvents {
		e.ID = events[len(tx.audits)+i].Seq
	}
	if err := insertNotices(ctx, tx, tx.leaseEvents); err != nil {
		return err
	}
	tx.audits, tx.leaseEvents = nil, nil
	return nil
}

// auditChunk is the most rows one INSERT appends.
const auditChunk = 100

// auditInsertSQLs caches the INSERT text for each chunk size.
var auditInsertSQLs [auditChunk + 1]string

func init() {
	for n := 1; n <= auditChunk; n++ {
		auditInsertSQLs[n] = `INSERT INTO audit_events (` + auditColumns + `) VALUES ` +
			strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?, ?, ?), ", n), ", ")
	}
}

// auditInsertSQL returns the INSERT of n rows, 1 <= n <= auditChunk.
func auditInsertSQL(n int) string { return auditInsertSQLs[n] }

// The lease history is the audit chain: each lease event is an audit event
// of kind lease.created, lease.state or lease.note whose subject is the
// lease id, and its id is the event's seq. Writers queue lease events on
// their transaction (insertLeaseEvent); Commit appends them, so a lease
// change and its history commit or roll back together.

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
