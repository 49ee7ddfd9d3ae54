package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/stint-broker/stint/broker"
)

// decodeJSON reads the request body into v strictly. It is the only way a
// handler reads a JSON body (c.Bind is disabled), so that every endpoint
// gets the same rules: keys match field names exactly (no case folding),
// a key that appears twice in an object is refused (encoding/json would keep
// the last), unknown fields, values of the wrong type, trailing data and
// malformed JSON are refused, and no string, key or value, may hold a
// control or bidirectional formatting character (broker.CheckText). Each
// refusal is an EINVALID error naming the field when there is one. An empty
// body decodes as {}, so that a missing required field is reported by the
// handler's own checks.
func decodeJSON(c echo.Context, v any) error {
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		var he *echo.HTTPError
		if errors.As(err, &he) {
			return err // the body limit tripped: 413
		}
		return fmt.Errorf("read request body: %w", err)
	}
	return decodeStrict(body, v)
}

// decodeStrict is decodeJSON on a body already read.
func decodeStrict(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	// First the rules encoding/json does not know, on the raw tokens; then
	// encoding/json itself, which can no longer match a key by case or keep
	// a duplicate's last value.
	if err := checkStrict(body, reflect.TypeOf(v)); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return broker.Errorf(broker.EINVALID, "The request body must hold exactly one JSON object.")
	}
	return nil
}

// maxJSONDepth bounds how deeply request bodies nest; none of ours nests
// more than three levels.
const maxJSONDepth = 32

// checkStrict walks the JSON in body alongside the Go type t it will decode
// into and refuses what encoding/json would accept silently: an object key
// that matches a struct field only by case or not at all, a key repeated in
// one object, and a string (key or value) with a control or bidirectional
// formatting character. Syntax errors are left to encoding/json, which
// reports them with an offset.
func checkStrict(body []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	err := walkJSON(dec, t, "", 0)
	if errors.Is(err, errJSONSyntax) {
		return nil
	}
	return err
}

// errJSONSyntax stops checkStrict at malformed JSON, which encoding/json
// then reports.
var errJSONSyntax = errors.New("malformed JSON")

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// walkJSON checks the next JSON value of dec, which decodes into t (nil: not
// known, so only duplicates and characters are checked). field names the
// value in errors.
func walkJSON(dec *json.Decoder, t reflect.Type, field string, depth int) error {
	if depth > maxJSONDepth {
		return broker.Errorf(broker.EINVALID, "The request body nests more than %d levels.", maxJSONDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return errJSONSyntax
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && (reflect.PointerTo(t).Implements(unmarshalerType) || t.Implements(unmarshalerType)) {
		t = nil // it reads its own JSON; check only what every value must satisfy
	}
	switch tok := tok.(type) {
	case string:
		return checkJSONText(field, tok)
	case json.Delim:
		switch tok {
		case '{':
			return walkObject(dec, t, field, depth)
		case '[':
			var elem reflect.Type
			if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
				elem = t.Elem()
			}
			for dec.More() {
				if err := walkJSON(dec, elem, field, depth+1); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil {
				return errJSONSyntax
			}
		}
	}
	return nil
}

// walkObject checks the members of an object whose '{' was just read.
func walkObject(dec *json.Decoder, t reflect.Type, field string, depth int) error {
	var (
		fields map[string]reflect.Type // a struct's fields by exact JSON name
		elem   reflect.Type            // a map's values
	)
	if t != nil {
		switch t.Kind() {
		case reflect.Struct:
			fields = jsonFields(t)
		case reflect.Map:
			elem = t.Elem()
		}
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return errJSONSyntax
		}
		key, ok := tok.(string)
		if !ok {
			return errJSONSyntax
		}
		name := key
		if field != "" {
			name = field + "." + key
		}
		if err := checkJSONText(name, key); err != nil {
			return err
		}
		if seen[key] {
			return broker.FieldErrorf(name, "Field %q appears more than once.", name)
		}
		seen[key] = true
		next := elem
		if fields != nil {
			ft, ok := fields[key]
			if !ok {
				return broker.FieldErrorf(name, "Unknown field %q.", name)
			}
			next = ft
		}
		if t != nil && t.Kind() == reflect.Map {
			name = field // a map's keys are data, not fields: errors name the map
		}
		if err := walkJSON(dec, next, name, depth+1); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil {
		return errJSONSyntax
	}
	return nil
}

// jsonFields returns the exact JSON names of struct type t's fields, as
// encoding/json names them (tag name, else the Go name; "-" skipped;
// embedded structs flattened), with their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			for k, v := range jsonFields(ft) {
				if _, ok := out[k]; !ok {
					out[k] = v
				}
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// checkJSONText applies broker.CheckText to a string of the body; an
// unnamed field is the body itself.
func checkJSONText(field, s string) error {
	if field == "" {
		field = "body"
	}
	return broker.CheckText(field, s)
}

// decodeError classifies a json.Decoder error.
func decodeError(err error) error {
	var (
		he     *echo.HTTPError
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &he):
		return err // the body limit tripped: 413
	case errors.As(err, &typ):
		if typ.Field == "" {
			return broker.Errorf(broker.EINVALID, "The request body must be a JSON object.")
		}
		return broker.FieldErrorf(typ.Field, "Field %q must be %s.", typ.Field, jsonKind(typ.Type))
	case errors.As(err, &syntax):
		return broker.Errorf(broker.EINVALID, "The request body is not valid JSON (at byte %d).", syntax.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return broker.Errorf(broker.EINVALID, "The request body is not valid JSON (it ends too soon).")
	}
	if field, ok := unknownField(err); ok && field != "" {
		return broker.FieldErrorf(field, "Unknown field %q.", field)
	} else if ok {
		return broker.Errorf(broker.EINVALID, "The request body has an unknown field.")
	}
	return fmt.Errorf("decode request body: %w", err)
}

// unknownField extracts the name from the error DisallowUnknownFields
// produces, `json: unknown field "name"`; encoding/json has no typed error
// for it.
func unknownField(err error) (string, bool) {
	_, rest, ok := strings.Cut(err.Error(), "unknown field ")
	if !ok {
		return "", false
	}
	name, err := strconv.Unquote(rest)
	if err != nil || !utf8.ValidString(name) || len(name) > 64 {
		return "", true
	}
	return name, true
}

// jsonKind names the JSON type that decodes into t, for error messages.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "of another type"
}

// firstError returns the first non-nil error, so that a response names one
// field at a time.
func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// checkRequired returns EINVALID naming field if value is blank.
func checkRequired(field, value string) error {
	if strings.TrimSpace(value) == "" {
		return broker.FieldErrorf(field, "Field %q is required.", field)
	}
	return nil
}

// parseDuration parses an optional duration field such as "24h"; empty means
// zero. Returns EINVALID naming field if it does not parse or is negative.
func parseDuration(field, value string) (time.Duration, error) {
	if value == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(value)
	if err != nil || d <= 0 {
		return 0, broker.FieldErrorf(field, "Field %q must be a positive duration such as \"24h\" or \"90m\".", field)
	}
	return d, nil
}

// queryInt parses an optional non-negative integer query parameter; def is
// returned when it is absent.
func queryInt(c echo.Context, name string, def int) (int, error) {
	s := c.QueryParam(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, broker.FieldErrorf(name, "Query parameter %q must be a non-negative integer.", name)
	}
	return n, nil
}

// pageQuery reads the limit (def when absent or 0, at most max) and offset
// query parameters of a list endpoint.
func pageQuery(c echo.Context, def, max int) (limit, offset int, err error) {
	if limit, err = queryInt(c, "limit", def); err != nil {
		return 0, 0, err
	}
	if limit == 0 {
		limit = def
	}
	if offset, err = queryInt(c, "offset", 0); err != nil {
		return 0, 0, err
	}
	return min(limit, max), offset, nil
}

// formatTime renders t as RFC 3339 in UTC.
func formatTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339)
}

// formatTimePtr renders t as RFC 3339 in UTC, or "" if t is nil or zero.
func formatTimePtr(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return formatTime(*t)
}
