package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/checkpoint"
)

// openStore reads the config named by --config and opens only its store:
// the audit and users commands need neither Vault nor the services.
func openStore(cmd *cobra.Command) (Store, Config, error) {
	cfg, _, err := readConfigFlag(cmd)
	if err != nil {
		return nil, cfg, err
	}
	db, err := openConfiguredStore(cmd.Context(), cfg.Store, os.Getenv)
	if err != nil {
		return nil, cfg, fmt.Errorf("open store: %w", err)
	}
	return db, cfg, nil
}

func newAuditCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Verify and export the tamper-evident audit log",
		Long: `The audit log is an append-only hash chain of every lease state change, every
decision, every failed authentication, every admin action and every
configuration load. Each event carries the SHA-256 of the previous event and
of its own canonical content, so that editing, deleting or reordering any
event breaks the chain. Nothing is ever deleted: retention means export and
archive. These commands open the store named in the configuration file
directly; run them on the server host.`,
	}
	cmd.AddCommand(newAuditVerifyCommand(), newAuditExportCommand(), newAuditKeygenCommand())
	return cmd
}

func newAuditVerifyCommand() *cobra.Command {
	var anchors []string
	var asJSON bool
	var checkpointsPath, publicKeyPath string
	cmd := &cobra.Command{
		Use:   "verify [--anchor SEQ:HASH]... [--checkpoints FILE] [--public-key FILE]",
		Short: "Walk the audit chain and name the first broken link",
		Long: `Walk the whole audit chain, oldest first, and check every link: sequence
numbers without gaps (a gap means deleted events), each event's prev_hash
equal to the previous event's hash (a mismatch means deleted or reordered
events) and each event's hash equal to the SHA-256 of its content (a mismatch
means an edited event).

With signed checkpoints configured (audit.checkpoints), it also reads the
checkpoint file and checks every checkpoint's Ed25519 signature with the
configured public key (older checkpoints of a previous key are skipped; the
newest must be signed by this one), that the chain holds each checkpointed
event with the signed hash (checkpoint_mismatch: rewritten), and that the
chain reaches the newest checkpoint (truncated: its newest events were
deleted, which the chain alone cannot show). --checkpoints and --public-key
check a copy of the file and a key kept elsewhere instead of the configured
ones.

It prints the head (last seq and hash); --anchor SEQ:HASH checks a head
recorded earlier by hand in the same way.

Exit status: 0 when the chain verifies, 1 when it is broken (a broken link,
an anchor or checkpoint it does not hold, a truncation, or a checkpoint
whose signature is refused), 2 when it could not be checked (a bad flag,
configuration or store, or configured checkpoints that cannot be read), so
that a scheduled check can tell tampering from trouble.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.NoArgs(cmd, args); err != nil {
				return &exitStatus{code: exitUnverified, err: err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := verifyAudit(cmd, anchors, checkpointsPath, publicKeyPath)
			if err != nil {
				// No verdict: the chain may be intact or not.
				return &exitStatus{code: exitUnverified, err: err}
			}
			out := cmd.OutOrStdout()
			if o, _ := outputJSON(cmd); o || asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(v); err != nil {
					return &exitStatus{code: exitUnverified, err: err}
				}
			} else {
				printVerification(out, v, time.Now())
			}
			switch {
			case v.OK:
				return nil
			case v.Break == broker.AuditCheckpointUnavailable:
				return &exitStatus{code: exitUnverified, err: fmt.Errorf("audit chain head not verified: %s", v.Reason)}
			case v.BrokenAt == 0:
				return &exitStatus{code: exitBroken, err: fmt.Errorf("audit checkpoints refused (%s)", v.Break)}
			}
			return &exitStatus{code: exitBroken, err: fmt.Errorf("audit chain broken at event %d (%s)", v.BrokenAt, v.Break)}
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitStatus{code: exitUnverified, err: err}
	})
	cmd.Flags().StringArrayVar(&anchors, "anchor", nil, "SEQ:HASH of an event recorded earlier (repeatable); the chain must still hold it")
	cmd.Flags().StringVar(&checkpointsPath, "checkpoints", "", "checkpoint file to check instead of audit.checkpoints.file (a copy from the sink's host)")
	cmd.Flags().StringVar(&publicKeyPath, "public-key", "", "PEM public key checkpoints must be signed with, instead of the configured one")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON (as -o json)")
	addOutputFlag(cmd)
	return cmd
}

// Exit statuses of "stint audit verify" beyond 0 (verified).
const (
	exitBroken     = 1 // the chain is broken
	exitUnverified = 2 // no verdict: the check could not run
)

// verifyAudit walks the store's audit chain against anchors and the signed
// checkpoints (configured, or named by the flags), printing progress on
// stderr.
func verifyAudit(cmd *cobra.Command, anchors []string, checkpointsPath, publicKeyPath string) (*broker.AuditVerification, error) {
	anchorMap, err := parseAnchors(anchors)
	if err != nil {
		return nil, err
	}
	cfg, _, err := readConfigFlag(cmd)
	if err != nil {
		return nil, err
	}
	cc := cfg.Audit.Checkpoints
	if checkpointsPath != "" {
		cc.File = checkpointsPath
	}
	if publicKeyPath != "" {
		cc.PublicKeyFile = publicKeyPath
	}
	opts := broker.AuditVerifyOptions{Anchors: anchorMap}
	switch {
	case cc.Verifies():
		if opts.CheckpointKey, err = cc.PublicKey(); err != nil {
			return nil, err
		}
		opts.Checkpoints = &checkpoint.File{Path: cc.File}
	case checkpointsPath != "":
		return nil, broker.FieldErrorf("public-key", "--checkpoints needs the public key they are signed with: --public-key FILE, or audit.checkpoints.key_file in the configuration.")
	case publicKeyPath != "":
		return nil, broker.FieldErrorf("checkpoints", "--public-key needs a checkpoint file: --checkpoints FILE, or audit.checkpoints.file in the configuration.")
	}
	db, err := openConfiguredStore(cmd.Context(), cfg.Store, os.Getenv)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	defer db.Close()
	stderr := cmd.ErrOrStderr()
	start := time.Now()
	opts.Progress = func(n int64) {
		fmt.Fprintf(stderr, "checked %d events (%s)\n", n, time.Since(start).Round(time.Millisecond))
	}
	return broker.VerifyAudit(cmd.Context(), db, opts)
}

func printVerification(out io.Writer, v *broker.AuditVerification, now time.Time) {
	switch {
	case v.OK:
		fmt.Fprintf(out, "audit chain OK: %d events verified\n", v.Checked)
		if v.AnchorsMatched > 0 {
			fmt.Fprintf(out, "anchors: %d matched\n", v.AnchorsMatched)
		}
	case v.Break == broker.AuditCheckpointUnavailable:
		fmt.Fprintf(out, "audit chain NOT VERIFIED (%s): %s\n", v.Break, v.Reason)
		fmt.Fprintf(out, "events 1-%d verified, but not the head\n", v.Checked)
	case v.BrokenAt == 0:
		fmt.Fprintf(out, "audit chain BROKEN (%s): %s\n", v.Break, v.Reason)
		fmt.Fprintf(out, "events 1-%d verified, but not against the checkpoints\n", v.Checked)
	default:
		fmt.Fprintf(out, "audit chain BROKEN at event %d (%s): %s\n", v.BrokenAt, v.Break, v.Reason)
		fmt.Fprintf(out, "events 1-%d verified before the break\n", v.Checked)
	}
	if cp := v.Checkpoint; cp == nil && v.Break != broker.AuditCheckpointUnavailable {
		fmt.Fprintln(out, "checkpoints: none configured (audit.checkpoints): deleting the newest events is not detected without them or an --anchor")
	} else if cp != nil && v.OK {
		fmt.Fprintf(out, "checkpoint: newest seq %d hash %s signed %s (%s ago) by %s; the chain holds it (%d checkpointed events matched",
			cp.Seq, short(cp.Hash), cp.At.Format(time.RFC3339), now.Sub(cp.At).Round(time.Second), cp.KeyID, v.CheckpointsMatched)
		if v.CheckpointsSkipped > 0 {
			fmt.Fprintf(out, ", %d of earlier keys skipped", v.CheckpointsSkipped)
		}
		fmt.Fprintln(out, ")")
	}
	if v.Head != nil {
		fmt.Fprintf(out, "head: seq %d hash %s at %s\n", v.Head.Seq, v.Head.Hash, v.Head.At.Format(time.RFC3339))
		fmt.Fprintf(out, "anchor: --anchor %d:%s\n", v.Head.Seq, v.Head.Hash)
	}
}

// short abbreviates a hash for messages.
func short(h string) string {
	if len(h) > 12 {
		return h[:12] + "…"
	}
	return h
}

// parseAnchors reads "SEQ:HASH" flags.
func parseAnchors(flags []string) (map[int64]string, error) {
	anchors := map[int64]string{}
	for _, a := range flags {
		seqText, hash, ok := strings.Cut(a, ":")
		seq, err := strconv.ParseInt(seqText, 10, 64)
		if !ok || err != nil || seq < 1 || len(hash) != 64 {
			return nil, broker.FieldErrorf("anchor", "Anchor %q must look like SEQ:HASH, with the 64-character hex hash that verify printed.", a)
		}
		anchors[seq] = strings.ToLower(hash)
	}
	return anchors, nil
}

func newAuditExportCommand() *cobra.Command {
	var since, until, format, outPath, kind, subject string
	cmd := &cobra.Command{
		Use:   "export [--since T] [--until T] [--format jsonl|csv] [--out FILE]",
		Short: "Export audit events, oldest first, as JSON lines or CSV",
		Long: `Export audit events, oldest first. --since and --until take an RFC 3339 time
(2025-06-02T09:00:00Z), a date (2025-06-02, midnight UTC) or a duration
before now (72h); since is inclusive, until exclusive.

jsonl writes one event per line with every field, including prev_hash and
hash, so that an archive can be verified later. csv writes the same columns
for spreadsheets; cells that a spreadsheet would run as a formula (starting
with =, +, -, @) are prefixed with a single quote, so use jsonl for archives.
With --out the file is written whole or not at all (a temporary file renamed
at the end), and progress goes to stderr. The export itself is recorded in
the audit log.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			now := time.Now().UTC()
			filter := broker.AuditFilter{}
			var err error
			if filter.Since, err = parseWhen("since", since, now); err != nil {
				return err
			}
			if filter.Until, err = parseWhen("until", until, now); err != nil {
				return err
			}
			if kind != "" {
				filter.Kind = &kind
			}
			if subject != "" {
				filter.Subject = &subject
			}
			if format != "jsonl" && format != "csv" {
				return broker.FieldErrorf("format", "Format must be jsonl or csv, not %q.", format)
			}
			db, _, err := openStore(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			return exportAudit(cmd.Context(), db, filter, format, outPath, rawOut(cmd), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "first instant to export (RFC 3339, date, or duration ago); default: the beginning")
	cmd.Flags().StringVar(&until, "until", "", "instant to stop before (RFC 3339, date, or duration ago); default: now")
	cmd.Flags().StringVar(&format, "format", "jsonl", "jsonl or csv")
	cmd.Flags().StringVar(&outPath, "out", "", "write to FILE instead of stdout")
	cmd.Flags().StringVar(&kind, "kind", "", "only this kind, or a prefix ending in '.' such as lease.")
	cmd.Flags().StringVar(&subject, "subject", "", "only events about this lease id, agent id or user")
	return cmd
}

// parseWhen reads a --since/--until value; "" is nil.
func parseWhen(flag, v string, now time.Time) (*time.Time, error) {
	if v == "" {
		return nil, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return &t, nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return &t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		t := now.Add(-d)
		return &t, nil
	}
	return nil, broker.FieldErrorf(flag, "--%s %q: use an RFC 3339 time (2025-06-02T09:00:00Z), a date (2025-06-02) or a duration ago (72h).", flag, v)
}

// exportAudit writes the matching events to outPath (or stdout) in format.
func exportAudit(ctx context.Context, db broker.AuditStore, filter broker.AuditFilter, format, outPath string, stdout, stderr io.Writer) (err error) {
	w := stdout
	var tmp *os.File
	total := 0 // for the progress lines, which only a file export prints
	if outPath != "" {
		if _, total, err = db.FindAuditEvents(ctx, broker.AuditFilter{Since: filter.Since, Until: filter.Until, Kind: filter.Kind, Subject: filter.Subject, Limit: 1}); err != nil {
			return err
		}
		tmp, err = os.CreateTemp(filepath.Dir(outPath), "."+filepath.Base(outPath)+".*")
		if err != nil {
			return fmt.Errorf("create export file: %w", err)
		}
		defer func() {
			if err != nil {
				tmp.Close()
				os.Remove(tmp.Name())
			}
		}()
		w = tmp
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	enc := broker.NewAuditEncoder(bw, format)
	if err := enc.Header(); err != nil {
		return err
	}
	var n int64
	start, last := time.Now(), time.Now()
	err = db.ScanAuditEvents(ctx, filter, func(e *broker.AuditEvent) error {
		if err := enc.Write(e); err != nil {
			return err
		}
		n++
		if outPath != "" && time.Since(last) > time.Second {
			last = time.Now()
			fmt.Fprintf(stderr, "exported %d of %d events (%.0f%%)\n", n, total, 100*float64(n)/float64(max(total, 1)))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("export audit events: %w", err)
	}
	if err := enc.Flush(); err != nil {
		return fmt.Errorf("write export: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write export: %w", err)
	}
	if tmp != nil {
		if err := tmp.Sync(); err != nil {
			return fmt.Errorf("write export: %w", err)
		}
		if err := tmp.Close(); err != nil {
			return fmt.Errorf("write export: %w", err)
		}
		if err := os.Rename(tmp.Name(), outPath); err != nil {
			return fmt.Errorf("write export: %w", err)
		}
		fmt.Fprintf(stderr, "exported %d events to %s in %s\n", n, outPath, time.Since(start).Round(time.Millisecond))
	}
	details := map[string]any{"format": format, "events": n}
	if filter.Since != nil {
		details["since"] = filter.Since.UTC().Format(time.RFC3339Nano)
	}
	if filter.Until != nil {
		details["until"] = filter.Until.UTC().Format(time.RFC3339Nano)
	}
	if filter.Kind != nil {
		details["kind"] = *filter.Kind
	}
	actor := "admin:cli"
	if a, ok := broker.ActorFromContext(adminContext(ctx)); ok {
		actor = a.String()
	}
	if rec, ok := db.(broker.AuditLog); ok {
		if err := rec.Record(ctx, broker.AuditEvent{Kind: "audit.exported", Actor: actor, Details: broker.AuditDetails(details)}); err != nil {
			return fmt.Errorf("record export: %w", err)
		}
	}
	return nil
}

func newAuditKeygenCommand() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen --out FILE",
		Short: "Create the Ed25519 key that signs audit checkpoints",
		Long: `Create an Ed25519 key for signing audit checkpoints: the private key at FILE
(PKCS #8 PEM, mode 0600), which the server reads (audit.checkpoints.key_file),
and its public key at FILE.pub, which verifies them
(audit.checkpoints.public_key_file where the private key is not at hand).
Keep a copy of FILE.pub off the server's host. It never overwrites a file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return broker.FieldErrorf("out", "--out FILE is required: where to write the private key.")
			}
			pub, err := checkpoint.GenerateKey(out)
			if err != nil {
				return err
			}
			return show(cmd, struct {
				PrivateKey string `json:"private_key"`
				PublicKey  string `json:"public_key"`
				KeyID      string `json:"key_id"`
			}{out, out + ".pub", broker.AuditKeyID(pub)}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "wrote %s (private, 0600) and %s.pub (public)\nkey id: %s\n", out, out, broker.AuditKeyID(pub))
				return err
			})
		},
	}
	addOutputFlag(cmd)
	cmd.Flags().StringVar(&out, "out", "", "path of the private key to create; the public key goes to FILE.pub")
	return cmd
}
