package web

import (
	"go/ast"
	"go/constant"
	"go/importer"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestREADMEStatusTable checks that the README's status table lists every
// HTTP status the web package (its console included) can answer: each status of statusByCode and
// each http.Status constant its source names. A status added in code but
// not in the table fails here.
func TestREADMEStatusTable(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[int]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\| (\d{3}) \|`).FindAllStringSubmatch(string(readme), -1) {
		n, _ := strconv.Atoi(m[1])
		documented[n] = true
	}
	if len(documented) == 0 {
		t.Fatal("README has no status table (rows like `| 404 | not_found | … |`)")
	}

	want := map[int]string{}
	for code, status := range statusByCode {
		want[status] = "statusByCode[" + code + "]"
	}
	httpPkg, err := importer.Default().Import("net/http")
	if err != nil {
		t.Fatalf("import net/http: %v", err)
	}
	files, _ := filepath.Glob("*.go")
	console, _ := filepath.Glob("console/*.go")
	if len(console) == 0 {
		t.Fatal("found none of the console's files")
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
			if !ok || !strings.HasPrefix(sel.Sel.Name, "Status") {
				return true
			}
			if id, ok := sel.X.(*ast.Ident); !ok || id.Name != "http" {
				return true
			}
			obj := httpPkg.Scope().Lookup(sel.Sel.Name)
			if obj == nil {
				return true
			}
			if c, ok := constantInt(obj); ok {
				want[c] = fset.Position(sel.Pos()).String() + " " + sel.Sel.Name
			}
			return true
		})
	}
	if len(want) < 10 {
		t.Fatalf("found only %d statuses in the source: the scan is broken", len(want))
	}
	for status, where := range want {
		if !documented[status] {
			t.Errorf("status %d (%s) is missing from the README's status table", status, where)
		}
	}
}

func constantInt(obj interface{ String() string }) (int, bool) {
	type valued interface{ Val() constant.Value }
	v, ok := obj.(valued)
	if !ok {
		return 0, false
	}
	n, ok := constant.Int64Val(v.Val())
	return int(n), ok
}
