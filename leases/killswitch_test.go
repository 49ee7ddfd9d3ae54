package leases_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// killSwitchFile is the one file that may take an agent out of service:
// Service.ContainAgent marks every live lease of the agent to end in the
// same store transaction that changes its state.
const killSwitchFile = "leases/contain.go"

// TestNoSuspendWithoutRevoke guards the kill switch: no code but
// ContainAgent builds an agent update that changes the agent's state,
// except re-activation (a state of exactly new(broker.AgentActive)). A
// caller that suspended or disabled an agent on its own would leave its
// leases, and the credentials they hold, alive.
func TestNoSuspendWithoutRevoke(t *testing.T) {
	root := moduleRoot(t)
	var files int
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			// Nested modules, test data and the store conformance suite
			// (which sets states to test the stores) are not callers.
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || rel == "cmd/devvault" || rel == "broker/storetest") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") || rel == killSwitchFile {
			return nil
		}
		files++
		for _, bad := range stateChanges(t, path) {
			t.Errorf("%s:%d: an agent's state is changed outside the kill switch (%s); call LeaseService.ContainAgent, which revokes its leases too", rel, bad, killSwitchFile)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 100 {
		t.Fatalf("scanned %d files from %s; the walk missed the tree", files, root)
	}
}

// TestNoSuspendWithoutRevokeCatches runs the guard's check on code that
// suspends an agent without the kill switch, so that the guard cannot pass
// by finding nothing.
func TestNoSuspendWithoutRevokeCatches(t *testing.T) {
	src := `package web

func suspend(s store, id string) {
	s.UpdateAgent(ctx, id, broker.AgentUpdate{State: ptr(broker.AgentSuspended)})
	var upd broker.AgentUpdate
	upd.State = &disabled
	s.UpdateAgent(ctx, id, broker.AgentUpdate{State: new(broker.AgentActive)}) // re-activation is fine
}
`
	path := filepath.Join(t.TempDir(), "suspend.go")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := stateChanges(t, path); len(got) != 2 || got[0] != 4 || got[1] != 6 {
		t.Fatalf("guard found state changes on lines %v, want [4 6]", got)
	}
}

// stateChanges returns the lines of the Go file at path that set an
// AgentUpdate's State to anything but new(broker.AgentActive): a
// composite literal of AgentUpdate with a State field, or an assignment to
// a .State field of something declared as an AgentUpdate.
func stateChanges(tb testing.TB, path string) []int {
	tb.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, 0)
	if err != nil {
		tb.Fatal(err)
	}
	updates := map[string]bool{} // names declared as AgentUpdate values
	var lines []int
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.ValueSpec:
			if isAgentUpdate(n.Type) {
				for _, name := range n.Names {
					updates[name.Name] = true
				}
			}
			for i, v := range n.Values {
				if cl, ok := v.(*ast.CompositeLit); ok && isAgentUpdate(cl.Type) && i < len(n.Names) {
					updates[n.Names[i].Name] = true
				}
			}
		case *ast.AssignStmt:
			for i, lhs := range n.Lhs {
				if id, ok := lhs.(*ast.Ident); ok && i < len(n.Rhs) {
					if cl, ok := n.Rhs[i].(*ast.CompositeLit); ok && isAgentUpdate(cl.Type) {
						updates[id.Name] = true
					}
				}
				if sel, ok := lhs.(*ast.SelectorExpr); ok && sel.Sel.Name == "State" {
					if x, ok := sel.X.(*ast.Ident); ok && updates[x.Name] {
						lines = append(lines, fset.Position(n.Pos()).Line)
					}
				}
			}
		case *ast.CompositeLit:
			if !isAgentUpdate(n.Type) {
				return true
			}
			for _, e := range n.Elts {
				kv, ok := e.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				if key, ok := kv.Key.(*ast.Ident); ok && key.Name == "State" && !isActivation(kv.Value) {
					lines = append(lines, fset.Position(kv.Pos()).Line)
				}
			}
		}
		return true
	})
	return lines
}

// isAgentUpdate reports whether e names the type broker.AgentUpdate.
func isAgentUpdate(e ast.Expr) bool {
	switch t := e.(type) {
	case *ast.SelectorExpr:
		return t.Sel.Name == "AgentUpdate"
	case *ast.Ident:
		return t.Name == "AgentUpdate"
	}
	return false
}

// isActivation reports whether e is new(broker.AgentActive).
func isActivation(e ast.Expr) bool {
	call, ok := e.(*ast.CallExpr)
	if !ok || len(call.Args) != 1 {
		return false
	}
	if fn, ok := call.Fun.(*ast.Ident); !ok || fn.Name != "new" {
		return false
	}
	sel, ok := call.Args[0].(*ast.SelectorExpr)
	return ok && sel.Sel.Name == "AgentActive"
}

// moduleRoot is the directory of the main module's go.mod.
func moduleRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		tb.Fatalf("no go.mod above the leases package: %v", err)
	}
	return dir
}
