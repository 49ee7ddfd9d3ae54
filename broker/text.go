package broker

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Free text (a task, a justification, a reason, a note, a label value) is
// shown to approvers in terminals, Slack and the console. A control
// character in it could recolour or overwrite what an approver reads (ESC
// and CSI sequences, carriage return, backspace) and a bidirectional
// override could make it read backwards, so free text is refused when it
// holds one (CheckText) and escaped wherever it is shown (EscapeControl),
// for text stored before the check or arriving by another path.

// IsControl reports whether r may not appear in free text: a C0 control
// (newline and tab included: every free-text field is one line), DEL, a
// C1 control, a bidirectional formatting character (U+061C, U+200E,
// U+200F, U+202A–U+202E, U+2066–U+2069), a line or paragraph separator
// (U+2028, U+2029), or utf8.RuneError (invalid UTF-8).
func IsControl(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	case r == 0x2028, r == 0x2029, r == utf8.RuneError:
		return true
	}
	return false
}

// CheckText returns EINVALID naming field if value holds a character that
// IsControl refuses, or is not valid UTF-8.
func CheckText(field, value string) error {
	for i, r := range value {
		if IsControl(r) {
			at := utf8.RuneCountInString(value[:i]) + 1
			if r == utf8.RuneError {
				return FieldErrorf(field, "Field %q is not valid UTF-8, or holds the replacement character U+FFFD (at character %d).", field, at)
			}
			return FieldErrorf(field, "Field %q must not contain control or bidirectional formatting characters (U+%04X at character %d).", field, r, at)
		}
	}
	return nil
}

// EscapeControl returns s with every character that IsControl refuses
// written as an escape: \xHH for C0 controls and bytes that are not valid
// UTF-8, \uHHHH for the others. Escaped text cannot move a terminal's
// cursor, change its colours or reorder what is shown; DEL, C1 and bidi
// characters become valid JSON escapes, so JSON passed through it stays
// valid and means the same.
func EscapeControl(s string) string {
	i := strings.IndexFunc(s, IsControl)
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x20:
			fmt.Fprintf(&b, `\x%02x`, r)
		case IsControl(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}
