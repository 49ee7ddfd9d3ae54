package web_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestOneJSONDecoder keeps decodeJSON the only reader of JSON request
// bodies in the web package and the console below it, so that every endpoint has the strict rules
// (exact names, no duplicate keys, no control characters). A new call to
// encoding/json's decoders outside json.go fails here unless it is listed
// with the reason it does not read a request body.
func TestOneJSONDecoder(t *testing.T) {
	allowed := map[string]string{
		"json.go":         "decodeJSON itself",
		"console/oidc.go": "the OIDC flow cookie, HMAC-verified before it is decoded",
		"mcp.go":          "a peek at JSON-RPC tool names to check scopes; the MCP SDK decodes the body",
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	console, err := filepath.Glob("console/*.go")
	if err != nil || len(console) == 0 {
		t.Fatalf("the console's files: %v, %v", console, err)
	}
	files = append(files, console...)
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			x, ok := sel.X.(*ast.Ident)
			if !ok {
				return true
			}
			call := x.Name + "." + sel.Sel.Name
			switch call {
			case "json.NewDecoder", "json.Unmarshal":
				if _, ok := allowed[name]; !ok {
					t.Errorf("%s: %s reads JSON outside decodeJSON; use decodeJSON (or list the file here with a reason)", fset.Position(sel.Pos()), call)
				}
			case "c.Bind", "echo.DefaultBinder":
				t.Errorf("%s: %s bypasses decodeJSON", fset.Position(sel.Pos()), call)
			}
			return true
		})
	}
}
