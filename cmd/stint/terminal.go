package main

import (
	"io"
	"sync"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/stint-broker/stint/broker"
)

// terminalWriter is what every command writes its human-readable output
// through (newRootCommand wraps standard output and standard error in it):
// text an agent chose (a task, a justification, a reason, a name) can hold
// escape sequences that would recolour, hide or overwrite what an approver
// reads, so every character broker.IsControl refuses is written escaped
// (broker.EscapeControl), except the newline and tab that the output's own
// layout uses. It holds back the first bytes of a UTF-8 sequence that a
// write splits, until the next write completes it.
type terminalWriter struct {
	w io.Writer

	mu      sync.Mutex // the server's logger and commands may write at once
	pending []byte
}

// newTerminalWriter wraps w.
func newTerminalWriter(w io.Writer) *terminalWriter { return &terminalWriter{w: w} }

// Write implements io.Writer. It reports len(p) written when the escaped
// text was written in full.
func (t *terminalWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	buf := append(t.pending, p...)
	t.pending = nil
	// Keep an incomplete UTF-8 sequence at the end for the next write.
	if tail := incompleteSuffix(buf); tail > 0 {
		t.pending = append([]byte(nil), buf[len(buf)-tail:]...)
		buf = buf[:len(buf)-tail]
	}
	out := make([]byte, 0, len(buf)+16)
	start := 0
	for i := 0; i < len(buf); {
		r, size := utf8.DecodeRune(buf[i:])
		if r == '\n' || r == '\t' || !broker.IsControl(r) || (r == utf8.RuneError && size == 3) {
			i += size
			continue
		}
		out = append(out, buf[start:i]...)
		out = append(out, broker.EscapeControl(string(buf[i:i+size]))...)
		i += size
		start = i
	}
	out = append(out, buf[start:]...)
	if _, err := t.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// incompleteSuffix returns how many bytes at the end of b are the start of
// a UTF-8 sequence cut short: a leading byte followed by fewer continuation
// bytes than it announces (0 if none). Whether the sequence is valid is
// decided when it is complete.
func incompleteSuffix(b []byte) int {
	for n := 1; n <= 3 && n <= len(b); n++ {
		c := b[len(b)-n]
		switch {
		case c < 0x80:
			return 0
		case c >= 0xc0:
			if n < seqLen(c) {
				return n
			}
			return 0
		}
		// a continuation byte: look further back for its leading byte
	}
	return 0
}

// seqLen is the length of the UTF-8 sequence that leading byte c starts.
func seqLen(c byte) int {
	switch {
	case c >= 0xf0:
		return 4
	case c >= 0xe0:
		return 3
	}
	return 2
}

// rawOut is the command's standard output without the escaping of
// terminalWriter, for output that is data rather than text to read (an
// audit export): it must reach its reader byte for byte.
func rawOut(cmd *cobra.Command) io.Writer {
	if t, ok := cmd.OutOrStdout().(*terminalWriter); ok {
		return t.w
	}
	return cmd.OutOrStdout()
}
