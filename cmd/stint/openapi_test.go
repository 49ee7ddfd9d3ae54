package main

import (
	"strings"
	"testing"

	"github.com/stint-broker/stint/web/openapitest"
)

// TestOpenAPIRoutes holds the OpenAPI document (web/openapi.yaml) and the
// server to the same routes: the server of the authorization matrix has
// every optional part enabled (OAuth, metrics, Slack, the console with SSO),
// and each route it registers must be in the document, each operation of the
// document served. The console's HTML pages are left out by the rule of
// openapitest.Excluded.
func TestOpenAPIRoutes(t *testing.T) {
	w := newMatrixWorld(t)
	routes := w.m.HTTP.Routes()
	if len(routes) < 40 {
		t.Fatalf("the server registers only %d routes: the matrix server is not fully configured", len(routes))
	}
	if problems := openapitest.CheckRoutes(openapitest.Document(t), routes); len(problems) > 0 {
		t.Errorf("the server and its OpenAPI document disagree:\n%s\nAdd the route to web/openapi.yaml (echo's :name written {name}) or remove it from the document.",
			strings.Join(problems, "\n"))
	}
}
