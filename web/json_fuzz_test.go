package web_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/web"
)

// FuzzDecodeJSON decodes arbitrary bodies into the API's request types with
// the strict decoder every handler uses. Whatever the body: it never panics
// and never fails as an internal error (a malformed body is always the
// caller's EINVALID); and a body it accepts has only exact field names,
// each once, no control characters in any string, and decodes to the same
// value again after re-encoding. The seed corpus is in
// testdata/fuzz/FuzzDecodeJSON.
func FuzzDecodeJSON(f *testing.F) {
	for _, seed := range []string{
		`{"role":"db-readonly","ttl":"5m","task":"nightly report","justification":"OPS-1"}`,
		`{"role":"db-readonly","Role":"vault-token","task":"x"}`,
		`{"role":"a","role":"b"}`,
		`{"task":"a\u001b[2Kb"}`,
		`{"name":"bot","owner":"a@b.c","labels":{"team":"data","env":"prod"},"auth_methods":["api_key","mtls"]}`,
		`{"labels":{"team":"a","team":"b"}}`,
		`{"digest":"abc","reason":"no \u202e"}`,
		`[1,2,{"a":[{"b":{}}]}]`, `{}`, ``, `null`, `{"breakglass":true,"breakglass_reason":"incident"}`,
		`{"role":"x"} trailing`, `{"ttl":900}`, "{\"task\":\"\xff\"}",
	} {
		f.Add([]byte(seed), uint8(0))
		f.Add([]byte(seed), uint8(1))
		f.Add([]byte(seed), uint8(2))
	}
	f.Fuzz(func(t *testing.T, body []byte, kind uint8) {
		var v any
		switch kind % 3 {
		case 0:
			v = new(web.CreateLeaseRequest)
		case 1:
			v = new(web.CreateAgentRequest)
		default:
			v = new(web.DecideRequest)
		}
		err := web.DecodeStrict(body, v)
		if err != nil {
			var be *broker.Error
			if !errors.As(err, &be) || be.Code != broker.EINVALID {
				t.Fatalf("body %q: error %v, want an EINVALID *broker.Error", body, err)
			}
			return
		}
		if len(bytes.TrimSpace(body)) == 0 {
			return
		}
		// An independent look at the top-level object: exact names, once.
		var top map[string]json.RawMessage
		if json.Unmarshal(body, &top) == nil {
			names := fieldNames(reflect.TypeOf(v).Elem())
			for k := range top {
				if !names[k] {
					t.Fatalf("body %q accepted with key %q, not an exact field name", body, k)
				}
			}
			if n := topLevelKeys(t, body); n != len(top) {
				t.Fatalf("body %q accepted with a repeated key (%d keys, %d distinct)", body, n, len(top))
			}
		}
		walkStrings(reflect.ValueOf(v).Elem(), func(s string) {
			if strings.IndexFunc(s, broker.IsControl) >= 0 {
				t.Fatalf("body %q accepted with a control character in %q", body, s)
			}
		})
		again := reflect.New(reflect.TypeOf(v).Elem()).Interface()
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := web.DecodeStrict(b, again); err != nil || !reflect.DeepEqual(v, again) {
			t.Fatalf("re-encoded %s decodes to %+v, %v; want %+v", b, again, err, v)
		}
	})
}

// fieldNames returns the JSON names of struct type t's fields.
func fieldNames(t reflect.Type) map[string]bool {
	out := map[string]bool{}
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		out[name] = true
	}
	return out
}

// topLevelKeys counts the keys of the top-level object of body, repeats
// included.
func topLevelKeys(t *testing.T, body []byte) int {
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil { // {
		t.Fatal(err)
	}
	n := 0
	for dec.More() {
		if _, err := dec.Token(); err != nil { // key
			t.Fatal(err)
		}
		n++
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// walkStrings calls fn with every string in v.
func walkStrings(v reflect.Value, fn func(string)) {
	switch v.Kind() {
	case reflect.String:
		fn(v.String())
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			walkStrings(v.Elem(), fn)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			walkStrings(v.Field(i), fn)
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			walkStrings(v.Index(i), fn)
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			walkStrings(it.Key(), fn)
			walkStrings(it.Value(), fn)
		}
	}
}
