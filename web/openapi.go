package web

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"github.com/labstack/echo/v4"
	"go.yaml.in/yaml/v3"
)

// openapiYAML is the OpenAPI document of the HTTP API (openapi.yaml), the
// contract that clients are generated from and that the tests validate real
// requests and responses against (web/openapitest).
//
//go:embed openapi.yaml
var openapiYAML []byte

// OpenAPIDocument returns the OpenAPI 3.0 document of the HTTP API, in
// YAML, as kept in the repository.
func OpenAPIDocument() []byte { return openapiYAML }

var openapiJSON = sync.OnceValues(func() ([]byte, error) {
	var doc any
	if err := yaml.Unmarshal(openapiYAML, &doc); err != nil {
		return nil, fmt.Errorf("parse openapi.yaml: %w", err)
	}
	data, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode openapi.yaml as JSON: %w", err)
	}
	return data, nil
})

// OpenAPIJSON returns the OpenAPI document converted to JSON.
func OpenAPIJSON() ([]byte, error) { return openapiJSON() }

// registerOpenAPIRoutes serves the OpenAPI document, without
// authentication: it describes the API and holds no secret.
func (s *Server) registerOpenAPIRoutes(e *echo.Echo) {
	e.GET("/openapi.json", handleOpenAPIJSON)
	e.GET("/openapi.yaml", handleOpenAPIYAML)
}

// handleOpenAPIJSON handles "GET /openapi.json".
func handleOpenAPIJSON(c echo.Context) error {
	data, err := openapiJSON()
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "public, max-age=300")
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, data)
}

// handleOpenAPIYAML handles "GET /openapi.yaml".
func handleOpenAPIYAML(c echo.Context) error {
	c.Response().Header().Set(echo.HeaderCacheControl, "public, max-age=300")
	return c.Blob(http.StatusOK, "application/yaml", openapiYAML)
}
