package openapitest_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stint-broker/stint/web"
	"github.com/stint-broker/stint/web/openapitest"
)

// TestDocument checks that the document loads and is valid OpenAPI 3.0,
// and that what the server serves at /openapi.json is the same document.
func TestDocument(t *testing.T) {
	doc := openapitest.Document(t)
	if got, want := doc.OpenAPI, "3.0.3"; got != want {
		t.Errorf("openapi = %q, want %q", got, want)
	}
	data, err := web.OpenAPIJSON()
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := openapitest.Load(data)
	if err != nil {
		t.Fatalf("the JSON form: %v", err)
	}
	if got, want := len(fromJSON.Paths.Map()), len(doc.Paths.Map()); got != want || want < 30 {
		t.Errorf("the JSON form has %d paths, the YAML %d (want the same, at least 30)", got, want)
	}
}

// spyTB records what the validator reports instead of failing the test.
type spyTB struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (s *spyTB) Helper() {}

func (s *spyTB) Errorf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errors = append(s.errors, fmt.Sprintf(format, args...))
}

func (s *spyTB) Fatal(args ...any) { s.TB.Fatal(args...) }

// TestHandler shows the validator failing on each kind of violation, and
// passing an exchange that keeps the contract.
func TestHandler(t *testing.T) {
	const lease = `{"id":"l1","state":"active","role":"r","agent":"a","agent_id":"a1","task":"t","justification":"",` +
		`"ttl":"15m0s","created_at":"2026-03-04T10:00:00Z","updated_at":"2026-03-04T10:00:00Z","risk_score":0}`
	for _, tc := range []struct {
		Name        string
		Method, URL string
		Auth        string
		Body        string
		Status      int
		Answer      string
		WantError   string // "" means no violation
	}{
		{Name: "OK", Method: "GET", URL: "/v1/leases/l1", Auth: "Bearer k", Status: 200, Answer: lease},
		{Name: "OKRefusedBadRequest", Method: "POST", URL: "/v1/leases", Auth: "Bearer k", Body: `{"role":"r"}`, Status: 400,
			Answer: `{"error":{"code":"invalid","message":"task is required","field":"task"}}`},
		{Name: "OKUnknownRouteRefused", Method: "GET", URL: "/v1/nope", Auth: "Bearer k", Status: 404,
			Answer: `{"error":{"code":"not_found","message":"No such endpoint."}}`},
		{Name: "OKConsoleExcluded", Method: "GET", URL: "/console/leases", Status: 200, Answer: "<html></html>"},
		{Name: "ErrUnknownRouteServed", Method: "GET", URL: "/v1/nope", Auth: "Bearer k", Status: 200, Answer: `{}`,
			WantError: "is not in the OpenAPI document"},
		{Name: "ErrResponseField", Method: "GET", URL: "/v1/leases/l1", Auth: "Bearer k", Status: 200,
			Answer: strings.Replace(lease, `"risk_score":0`, `"risk_score":0,"secret":"x"`, 1), WantError: "does not allow"},
		{Name: "ErrResponseMissingField", Method: "GET", URL: "/v1/leases/l1", Auth: "Bearer k", Status: 200,
			Answer: strings.Replace(lease, `"task":"t",`, ``, 1), WantError: "does not allow"},
		{Name: "ErrUndocumentedStatus", Method: "GET", URL: "/v1/leases/l1", Auth: "Bearer k", Status: 418,
			Answer: `{"error":{"code":"invalid","message":"teapot"}}`, WantError: "does not allow"},
		{Name: "ErrErrorCode", Method: "GET", URL: "/v1/leases/l1", Auth: "Bearer k", Status: 404,
			Answer: `{"error":{"code":"gone","message":"x"}}`, WantError: "does not allow"},
		{Name: "ErrAcceptedRefusedRequest", Method: "POST", URL: "/v1/leases", Auth: "Bearer k", Body: `{"role":"r","extra":1}`,
			Status: 201, Answer: lease, WantError: "refuses"},
		{Name: "ErrAcceptedWithoutCredential", Method: "GET", URL: "/v1/leases/l1", Status: 200, Answer: lease, WantError: "refuses"},
	} {
		t.Run(tc.Name, func(t *testing.T) {
			spy := &spyTB{TB: t}
			var gotBody string
			h := openapitest.Handler(spy, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				gotBody = string(b)
				ct := "application/json"
				if strings.HasPrefix(tc.Answer, "<") {
					ct = "text/html"
				}
				w.Header().Set("Content-Type", ct)
				w.WriteHeader(tc.Status)
				io.WriteString(w, tc.Answer)
			}))
			req := httptest.NewRequest(tc.Method, tc.URL, strings.NewReader(tc.Body))
			if tc.Body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			if tc.Auth != "" {
				req.Header.Set("Authorization", tc.Auth)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if gotBody != tc.Body {
				t.Errorf("the handler read body %q, want %q", gotBody, tc.Body)
			}
			if rec.Code != tc.Status || rec.Body.String() != tc.Answer {
				t.Errorf("passed through %d %q, want %d %q", rec.Code, rec.Body.String(), tc.Status, tc.Answer)
			}
			switch {
			case tc.WantError == "" && len(spy.errors) > 0:
				t.Errorf("unexpected violations: %q", spy.errors)
			case tc.WantError != "" && (len(spy.errors) == 0 || !strings.Contains(strings.Join(spy.errors, "\n"), tc.WantError)):
				t.Errorf("violations %q, want one containing %q", spy.errors, tc.WantError)
			}
		})
	}
}

// TestCheckRoutes shows the route comparison failing both ways.
func TestCheckRoutes(t *testing.T) {
	doc := openapitest.Document(t)
	var all []web.Route
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			all = append(all, web.Route{Method: method, Path: strings.NewReplacer("{id}", ":id").Replace(path)})
		}
	}
	all = append(all, web.Route{Method: "GET", Path: "/console/leases"}, web.Route{Method: "GET", Path: "/console/static/*"})
	if problems := openapitest.CheckRoutes(doc, all); len(problems) > 0 {
		t.Errorf("the document's own routes: %q", problems)
	}

	extra := append(all, web.Route{Method: "POST", Path: "/v1/leases/:id/frobnicate"})
	problems := openapitest.CheckRoutes(doc, extra)
	if len(problems) != 1 || !strings.Contains(problems[0], "POST /v1/leases/{id}/frobnicate, which the OpenAPI document") {
		t.Errorf("a route the document lacks: %q", problems)
	}

	var fewer []web.Route
	for _, r := range all {
		if !(r.Method == "DELETE" && r.Path == "/v1/leases/:id") {
			fewer = append(fewer, r)
		}
	}
	problems = openapitest.CheckRoutes(doc, fewer)
	if len(problems) != 1 || !strings.Contains(problems[0], "names DELETE /v1/leases/{id}, which the server does not serve") {
		t.Errorf("a route the server lacks: %q", problems)
	}
}

// TestServed checks that the server serves the document without
// authentication, in both forms, and that both load.
func TestServed(t *testing.T) {
	h := openapitest.Handler(t, web.NewServer().Handler())
	for _, path := range []string{"/openapi.json", "/openapi.yaml"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s = %d %s, want 200", path, rec.Code, rec.Body)
		}
		if _, err := openapitest.Load(rec.Body.Bytes()); err != nil {
			t.Errorf("GET %s: %v", path, err)
		}
	}
}
