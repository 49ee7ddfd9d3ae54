package leases_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// leaseWriters are the store methods that change a lease's state, with
// their argument count (ContainAgent is also a lease service method, with
// two).
var leaseWriters = map[string]int{
	"UpdateLease":          3,
	"UpdateLeaseExclusive": 4,
	"UpdateLeaseIfExpires": 4,
	"RecordApproval":       5,
	"ClaimExpiredLeases":   6,
	"EndRevocations":       4,
	"EndOverdueLeases":     5,
	"ContainAgent":         3,
}

// leaseWriterOwners are the packages that may call leaseWriters: the lease
// service, the stores that implement them, and the stores' conformance
// suite (test code, in a non-test file).
var leaseWriterOwners = []string{"leases", "broker/sqlite", "broker/postgres", "broker/storetest"}

// TestLeaseStateOwner checks that leases is the only writer of lease
// state: no other package (test files aside) calls a store method that
// changes a lease's state. Approvals hand approvers' answers to
// leases.Service.RecordVerdict; the API, the console and the CLI go
// through the lease service.
func TestLeaseStateOwner(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			// Nested modules (cmd/devvault) and hidden folders are not ours to check.
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || rel == "cmd/devvault") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		pkg := filepath.ToSlash(filepath.Dir(rel))
		for _, owner := range leaseWriterOwners {
			if pkg == owner || (owner != "leases" && strings.HasPrefix(pkg, owner+"/")) {
				return nil
			}
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		checked++
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if want, ok := leaseWriters[sel.Sel.Name]; ok && len(call.Args) == want {
				t.Errorf("%s: %s calls the store's %s; only leases writes lease state (go through leases.Service)",
					fset.Position(call.Pos()), pkg, sel.Sel.Name)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("checked %d files; the walk missed the tree", checked)
	}
}
