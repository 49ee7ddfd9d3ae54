package broker_test

import (
	"encoding/json"
	"testing"

	"github.com/stint-broker/stint/broker"
)

func TestCheckText(t *testing.T) {
	for _, ok := range []string{"", "nightly report", "rapport d'été — ünïcödé ✓", "日本語のタスク", "a\\x1b[31m stays text"} {
		if err := broker.CheckText("task", ok); err != nil {
			t.Errorf("CheckText(%q) = %v, want nil", ok, err)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"approve\x1b[2K\rDENIED", `Field "task" must not contain control or bidirectional formatting characters (U+001B at character 8).`},
		{"nul\x00", `Field "task" must not contain control or bidirectional formatting characters (U+0000 at character 4).`},
		{"line\nbreak", `Field "task" must not contain control or bidirectional formatting characters (U+000A at character 5).`},
		{"tab\t", `Field "task" must not contain control or bidirectional formatting characters (U+0009 at character 4).`},
		{"del\x7f", `Field "task" must not contain control or bidirectional formatting characters (U+007F at character 4).`},
		{"csi\u009b31m", `Field "task" must not contain control or bidirectional formatting characters (U+009B at character 4).`},
		{"é\u202eevil", `Field "task" must not contain control or bidirectional formatting characters (U+202E at character 2).`},
		{"\u2066isolate", `Field "task" must not contain control or bidirectional formatting characters (U+2066 at character 1).`},
		{"sep\u2028", `Field "task" must not contain control or bidirectional formatting characters (U+2028 at character 4).`},
		{"bad\xffutf8", `Field "task" is not valid UTF-8, or holds the replacement character U+FFFD (at character 4).`},
	} {
		err := broker.CheckText("task", tc.in)
		if broker.ErrorCode(err) != broker.EINVALID || broker.ErrorField(err) != "task" || broker.ErrorMessage(err) != tc.want {
			t.Errorf("CheckText(%q) = %v, want EINVALID %q", tc.in, err, tc.want)
		}
	}
}

func TestEscapeControl(t *testing.T) {
	for in, want := range map[string]string{
		"plain é ✓":                "plain é ✓",
		"\x1b[31mred\x1b[0m":       `\x1b[31mred\x1b[0m`,
		"a\rb\nc\td\x00":           `a\x0db\x0ac\x09d\x00`,
		"del\x7f csi\u009b":        `del\u007f csi\u009b`,
		"rtl\u202eevil\u2069":      `rtl\u202eevil\u2069`,
		"bad\xff\xc2":              `bad\xff\xc2`,
		"\u2028\u2029\u061c\u200f": `\u2028\u2029\u061c\u200f`,
	} {
		if got := broker.EscapeControl(in); got != want {
			t.Errorf("EscapeControl(%q) = %q, want %q", in, got, want)
		}
		if got := broker.EscapeControl(want); got != want {
			t.Errorf("EscapeControl is not idempotent on %q: %q", want, got)
		}
	}
	// JSON that went through it is still valid and means the same, for
	// the characters a JSON encoder leaves raw.
	raw, _ := json.Marshal(map[string]string{"task": "x\x7f\u009b\u202ey"})
	var back map[string]string
	if err := json.Unmarshal([]byte(broker.EscapeControl(string(raw))), &back); err != nil || back["task"] != "x\x7f\u009b\u202ey" {
		t.Fatalf("escaped JSON decodes to %q, %v", back, err)
	}
}

func TestAgentValidateRefusesControlCharacters(t *testing.T) {
	for _, a := range []*broker.Agent{
		{Name: "etl", Owner: "ana@example.com\x1b[0m"},
		{Name: "etl", Owner: "ana@example.com", Labels: map[string]string{"team": "da\u202eta"}},
	} {
		if err := a.Validate(); broker.ErrorCode(err) != broker.EINVALID {
			t.Errorf("Validate(owner %q, labels %q) = %v, want EINVALID", a.Owner, a.Labels, err)
		}
	}
}
