// Package openapitest holds the API's tests to its contract: it loads the
// OpenAPI document (web/openapi.yaml) and validates real requests and
// responses against it with kin-openapi, and compares the document's routes
// with the routes a server registers.
//
// Tests use it in three places: the web package's scenario tables, the
// authorization matrix and the end-to-end tests of cmd/stint (through
// web.Server.Wrap), so every exchange those tests make is checked.
package openapitest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/stint-broker/stint/web"
)

// ConsolePrefix is the one part of the server the document leaves out: the
// console's HTML pages and forms, for people with a browser, not programs.
// Excluded applies the rule.
const ConsolePrefix = "/console"

// Excluded reports whether path is outside the document by rule: the
// console (ConsolePrefix and everything below it).
func Excluded(path string) bool {
	return path == ConsolePrefix || strings.HasPrefix(path, ConsolePrefix+"/")
}

// emptyAnswers are the operations that may answer with no body at all (and
// so no Content-Type) where the document describes a body: Slack takes an
// empty 200 as the acknowledgement of a click, and a JSON body when there is
// something to say. OpenAPI 3.0 cannot say "this body or none".
var emptyAnswers = map[string]bool{"slackInteractions": true}

// maxBody bounds how much of a request body the validator reads; the server
// refuses anything over 64 KB anyway.
const maxBody = 1 << 20

type loaded struct {
	doc    *openapi3.T
	router routers.Router
}

var load = sync.OnceValues(func() (*loaded, error) {
	// The MCP endpoint answers with server-sent events: a text body.
	openapi3filter.RegisterBodyDecoder("text/event-stream", openapi3filter.PlainBodyDecoder)
	doc, err := Load(web.OpenAPIDocument())
	if err != nil {
		return nil, err
	}
	// The router matches paths only, whatever host the test server has.
	rdoc := *doc
	rdoc.Servers = openapi3.Servers{{URL: "/"}}
	router, err := gorillamux.NewRouter(&rdoc)
	if err != nil {
		return nil, fmt.Errorf("route the OpenAPI document: %w", err)
	}
	return &loaded{doc: doc, router: router}, nil
})

// Load parses and validates an OpenAPI document.
func Load(data []byte) (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(data)
	if err != nil {
		return nil, fmt.Errorf("load the OpenAPI document: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("the OpenAPI document is invalid: %w", err)
	}
	return doc, nil
}

// Document returns the server's OpenAPI document, loaded and validated once.
func Document(tb testing.TB) *openapi3.T {
	tb.Helper()
	l, err := load()
	if err != nil {
		tb.Fatal(err)
	}
	return l.doc
}

// Handler wraps h so that every exchange through it is checked against the
// document; each violation is reported with tb.Errorf:
//   - a request to a path and method the document lacks (the console aside)
//     must be refused (a status of 400 or more);
//   - a request the document refuses (a missing required field, an unknown
//     field, no credential where one is needed) must be refused too: the
//     server may be stricter than the document, never looser;
//   - every response must be one the document lists for the operation: its
//     status, content type and body schema.
func Handler(tb testing.TB, h http.Handler) http.Handler {
	tb.Helper()
	l, err := load()
	if err != nil {
		tb.Fatal(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if Excluded(r.URL.Path) {
			h.ServeHTTP(w, r)
			return
		}
		var body []byte
		if r.Body != nil {
			var err error
			if body, err = io.ReadAll(io.LimitReader(r.Body, maxBody)); err != nil {
				tb.Errorf("openapitest: read the request body of %s %s: %v", r.Method, r.URL.Path, err)
			}
			r.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(body), r.Body), r.Body}
		}
		rec := &recorder{ResponseWriter: w}
		route, params, routeErr := l.router.FindRoute(r)
		if routeErr != nil {
			h.ServeHTTP(rec, r)
			if rec.Status() < 400 {
				tb.Errorf("openapitest: %s %s is not in the OpenAPI document (%v), yet the server answered %d",
					r.Method, r.URL.Path, routeErr, rec.Status())
			}
			return
		}

		in := &openapi3filter.RequestValidationInput{
			Request:    cloneWithBody(r, body),
			PathParams: params,
			Route:      route,
			Options: &openapi3filter.Options{
				AuthenticationFunc:    authenticate,
				IncludeResponseStatus: true,
				MultiError:            true,
			},
		}
		reqErr := openapi3filter.ValidateRequest(r.Context(), in)
		h.ServeHTTP(rec, r)
		status := rec.Status()
		if reqErr != nil && status < 400 {
			tb.Errorf("openapitest: the OpenAPI document refuses %s %s (%v), yet the server answered %d",
				r.Method, r.URL.Path, reqErr, status)
		}
		in.Request = cloneWithBody(r, body) // the validation above consumed it
		opts := *in.Options
		if rec.body.Len() == 0 && rec.Header().Get("Content-Type") == "" && emptyAnswers[route.Operation.OperationID] {
			opts.ExcludeResponseBody = true
		}
		respErr := openapi3filter.ValidateResponse(r.Context(), &openapi3filter.ResponseValidationInput{
			RequestValidationInput: in,
			Status:                 status,
			Header:                 rec.Header(),
			Body:                   io.NopCloser(bytes.NewReader(rec.body.Bytes())),
			Options:                &opts,
		})
		if respErr != nil {
			tb.Errorf("openapitest: %s %s answered %d with a response the OpenAPI document does not allow: %v\nbody: %s",
				r.Method, r.URL.Path, status, respErr, truncate(rec.body.Bytes()))
		}
	})
}

// Wrap returns a function that wraps a handler with Handler, for
// web.Server.Wrap.
func Wrap(tb testing.TB) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler { return Handler(tb, h) }
}

// authenticate checks that a request carries the credential a security
// scheme asks for; whether the credential is good is the server's business.
func authenticate(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	r := in.RequestValidationInput.Request
	scheme := in.SecurityScheme
	if scheme == nil || scheme.Type != "http" {
		return fmt.Errorf("security scheme %q is not supported by the validator", in.SecuritySchemeName)
	}
	kind, secret, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	switch {
	case strings.EqualFold(scheme.Scheme, "bearer"):
		if strings.EqualFold(kind, "Bearer") && strings.TrimSpace(secret) != "" {
			return nil
		}
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && in.SecuritySchemeName == "bearerAuth" {
			return nil // mutual TLS, which OpenAPI 3.0 cannot name
		}
		return errors.New("no bearer credential")
	case strings.EqualFold(scheme.Scheme, "basic"):
		if _, _, ok := r.BasicAuth(); ok {
			return nil
		}
		return errors.New("no HTTP Basic credential")
	}
	return fmt.Errorf("security scheme %q is not supported by the validator", in.SecuritySchemeName)
}

func cloneWithBody(r *http.Request, body []byte) *http.Request {
	c := r.Clone(r.Context())
	c.Body = io.NopCloser(bytes.NewReader(body))
	c.ContentLength = int64(len(body))
	return c
}

func truncate(b []byte) string {
	if len(b) > 2000 {
		return string(b[:2000]) + "…"
	}
	return string(b)
}

// recorder passes a response through and keeps a copy of its status and
// body for validation.
type recorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.body.Write(p)
	return r.ResponseWriter.Write(p)
}

// Flush implements http.Flusher when the underlying writer does.
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer (the long
// poll sets its own write deadline).
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Status is the status written, 200 if only a body was, 0 if nothing was.
func (r *recorder) Status() int {
	if r.status == 0 {
		return http.StatusOK
	}
	return r.status
}

var echoParam = regexp.MustCompile(`:[A-Za-z0-9_]+|\*`)
var docParam = regexp.MustCompile(`\{[^}]*\}`)

// DocumentPath writes an echo route path as the document does: ":id"
// becomes "{id}".
func DocumentPath(echoPath string) string {
	return echoParam.ReplaceAllStringFunc(echoPath, func(p string) string {
		if p == "*" {
			return "{path}"
		}
		return "{" + p[1:] + "}"
	})
}

// CheckRoutes compares the routes a server registers with the document's
// operations and returns one line per difference: a route the document
// lacks, or an operation the server does not serve. Routes under the
// console (Excluded) are left out on both sides, and so is echo's
// catch-all for unknown paths. Parameter names do not matter: "/v1/leases/:id"
// matches "/v1/leases/{lease}".
func CheckRoutes(doc *openapi3.T, routes []web.Route) []string {
	key := func(method, path string) string { return method + " " + docParam.ReplaceAllString(path, "{}") }
	served := map[string]string{}
	for _, r := range routes {
		if r.Method == "echo_route_not_found" || Excluded(r.Path) {
			continue
		}
		p := DocumentPath(r.Path)
		served[key(r.Method, p)] = r.Method + " " + p
	}
	documented := map[string]string{}
	for path, item := range doc.Paths.Map() {
		if Excluded(path) {
			continue
		}
		for method := range item.Operations() {
			documented[key(method, path)] = method + " " + path
		}
	}
	var problems []string
	for k, name := range served {
		if _, ok := documented[k]; !ok {
			problems = append(problems, "the server serves "+name+", which the OpenAPI document (web/openapi.yaml) lacks")
		}
	}
	for k, name := range documented {
		if _, ok := served[k]; !ok {
			problems = append(problems, "the OpenAPI document (web/openapi.yaml) names "+name+", which the server does not serve")
		}
	}
	slices.Sort(problems)
	return problems
}
