package web

import (
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

// decodeJSON reads the request body into v strictly: unknown fields, values of
// the wrong type, trailing data and malformed JSON are EINVALID errors naming
// the field when there is one. An empty body decodes as {}, so that a missing
// required field is reported by the handler's own checks.
func decodeJSON(c echo.Context, v any) error {
	dec := json.NewDecoder(c.Request().Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); errors.Is(err, io.EOF) {
		return nil
	} else if err != nil {
		return decodeError(err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		var he *echo.HTTPError
		if errors.As(err, &he) {
			return err
		}
		return broker.Errorf(broker.EINVALID, "The request body must hold exactly one JSON object.")
	}
	return nil
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

// checkMaxLen returns EINVALID naming field if value has more than max
// characters.
func checkMaxLen(field, value string, max int) error {
	if utf8.RuneCountInString(value) > max {
		return broker.FieldErrorf(field, "Field %q must be at most %d characters.", field, max)
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
