package broker

import (
	"encoding/csv"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"time"
)

// AuditEncoder writes audit events as JSON lines ("json") or CSV ("csv"):
// the one export format of the console and of `stint audit export`.
type AuditEncoder struct {
	json *json.Encoder
	csv  *csv.Writer
}

// NewAuditEncoder returns an encoder writing format to w.
func NewAuditEncoder(w io.Writer, format string) *AuditEncoder {
	if format == "csv" {
		return &AuditEncoder{csv: csv.NewWriter(w)}
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &AuditEncoder{json: enc}
}

// auditCSVHeader names the CSV columns.
var auditCSVHeader = []string{"seq", "at", "kind", "actor", "subject", "details", "prev_hash", "hash"}

// Header writes the CSV header; JSON lines have none.
func (e *AuditEncoder) Header() error {
	if e.csv != nil {
		return e.csv.Write(auditCSVHeader)
	}
	return nil
}

// Write writes one event.
func (e *AuditEncoder) Write(ev *AuditEvent) error {
	if e.csv != nil {
		return e.csv.Write([]string{
			strconv.FormatInt(ev.Seq, 10), ev.At.UTC().Format(time.RFC3339Nano), CSVCell(ev.Kind), CSVCell(ev.Actor),
			CSVCell(ev.Subject), CSVCell(string(ev.Details)), ev.PrevHash, ev.Hash,
		})
	}
	return e.json.Encode(ev)
}

// Flush writes out what the CSV writer buffers and reports its error.
func (e *AuditEncoder) Flush() error {
	if e.csv != nil {
		e.csv.Flush()
		return e.csv.Error()
	}
	return nil
}

// CSVCell neutralises a value a spreadsheet would run as a formula: one
// that starts with =, +, -, @, a tab or a carriage return gets a leading
// quote. Every CSV export writes its free-text cells through it.
func CSVCell(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}
