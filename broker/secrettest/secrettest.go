// Package secrettest checks that a value holding a secret never renders it
// by accident: through fmt, log/slog or encoding/json, by value, by pointer
// or nested in another value.
package secrettest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// Renderings renders v in every way a program renders a value without
// asking for its secret: fmt with the common verbs, log/slog through the
// JSON and text handlers (as an attribute, in a group, nested in a struct,
// through With), and encoding/json nested in a struct. The keys name each
// rendering.
func Renderings(v any) map[string]string {
	out := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%d", "%x", "%q"} {
		out["fmt "+verb] = fmt.Sprintf(verb, v)
	}
	nested := struct {
		Name  string
		Value any
	}{"nested", v}
	out["fmt nested %+v"] = fmt.Sprintf("%+v", nested)
	for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
		"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
	} {
		var b bytes.Buffer
		log := slog.New(h(&b))
		log.Info("attr", "value", v)
		log.Info("group", slog.Group("g", "value", v))
		log.With("value", v).Info("with")
		out["slog "+name] = b.String()
	}
	return out
}

// NestedJSON is the rendering of v as a field of a struct passed to
// json.Marshal, which a log handler does with values it does not know.
func NestedJSON(v any) string {
	b, err := json.Marshal(struct{ Value any }{v})
	if err != nil {
		return "error: " + err.Error()
	}
	return string(b)
}

// AssertHidden fails tb if any rendering of v (Renderings) contains one of
// secrets.
func AssertHidden(tb testing.TB, v any, secrets ...string) {
	tb.Helper()
	for how, s := range Renderings(v) {
		for _, secret := range secrets {
			if secret == "" {
				tb.Fatalf("AssertHidden: an empty secret matches everything")
			}
			if strings.Contains(s, secret) {
				tb.Errorf("%s of %T reveals %q: %s", how, v, secret, s)
			}
		}
	}
}
