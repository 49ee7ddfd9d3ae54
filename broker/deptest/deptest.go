// Package deptest guards the layering of the module: which packages may
// depend on which, and which single package may import each third-party
// SDK. The rules live in one table (deps_test.go in this package), each
// with the reason it exists, and one test checks them all against the
// import graph that "go list" reports. Test files are not part of the graph:
// a test may import what its package may not.
package deptest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// Kind is what a rule forbids.
type Kind int

// Rule kinds.
const (
	// NoDep forbids the rule's packages to depend on Dep, directly or
	// through another package.
	NoDep Kind = iota + 1
	// SoleImporter forbids every package but the rule's to import Dep
	// directly: the rule's packages are the one seam to it.
	SoleImporter
	// StdOnly forbids the rule's packages every dependency outside the
	// standard library, except the packages listed in Allow.
	StdOnly
)

// Rule is one ban and the reason for it.
type Rule struct {
	// Pkgs are the packages the rule is about, as import paths relative to
	// the module ("leases", "broker/sqlite"); "web/..." is web and every
	// package below it.
	Pkgs []string
	Kind Kind
	// Dep is the import path the rule bans (NoDep) or reserves
	// (SoleImporter); a path bans its subpackages too. Paths of this
	// module are written relative to it ("approvals"), others in full
	// ("github.com/hashicorp/vault/api").
	Dep string
	// Allow lists, for StdOnly, the packages of this module the rule's
	// packages may still depend on.
	Allow []string
	// Why is the reason, shown with every violation.
	Why string
}

// Package is one package of the graph.
type Package struct {
	ImportPath string
	// Imports are the packages its non-test files import.
	Imports []string
	// Deps are every package it depends on, directly or not.
	Deps []string
}

// Graph is the module's import graph without test files.
type Graph struct {
	// Module is the module path, such as "github.com/stint-broker/stint".
	Module string
	// Pkgs are the module's packages by import path.
	Pkgs map[string]*Package
	// Std reports whether an import path is in the standard library.
	Std func(path string) bool
}

// Load runs "go list" once for every package of the module that holds the
// current directory and returns their graph.
func Load(tb testing.TB) *Graph {
	tb.Helper()
	mod, err := exec.Command("go", "list", "-m").Output()
	if err != nil {
		tb.Fatalf("go list -m: %v", goError(err))
	}
	g := &Graph{Module: strings.TrimSpace(string(mod)), Pkgs: map[string]*Package{}}
	out, err := exec.Command("go", "list", "-e", "-deps", "-json=ImportPath,Imports,Deps,Standard", g.Module+"/...").Output()
	if err != nil {
		tb.Fatalf("go list -deps: %v", goError(err))
	}
	std := map[string]bool{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p struct {
			Package
			Standard bool
		}
		if err := dec.Decode(&p); err != nil {
			tb.Fatalf("decode go list: %v", err)
		}
		switch {
		case p.Standard:
			std[p.ImportPath] = true
		case p.ImportPath == g.Module || strings.HasPrefix(p.ImportPath, g.Module+"/"):
			pkg := p.Package
			g.Pkgs[p.ImportPath] = &pkg
		}
	}
	if len(g.Pkgs) == 0 {
		tb.Fatalf("go list found no packages of %s", g.Module)
	}
	g.Std = func(path string) bool { return std[path] }
	return g
}

func goError(err error) error {
	if ee, ok := err.(*exec.ExitError); ok {
		return fmt.Errorf("%w\n%s", err, ee.Stderr)
	}
	return err
}

// Check reports every violation of rules as a test error.
func (g *Graph) Check(t testing.TB, rules []Rule) {
	t.Helper()
	for _, v := range g.Violations(rules) {
		t.Error(v)
	}
}

// Violations returns one line per broken rule and package, and one per rule
// that can no longer fail (it names no package of the module, or reserves
// a dependency nobody imports), sorted.
func (g *Graph) Violations(rules []Rule) []string {
	var out []string
	for i, r := range rules {
		pkgs := g.match(r.Pkgs)
		if len(pkgs) == 0 {
			out = append(out, fmt.Sprintf("rule %d (%s) names no package of the module: %v", i, r.Why, r.Pkgs))
			continue
		}
		dep := g.full(r.Dep)
		switch r.Kind {
		case NoDep:
			for _, p := range pkgs {
				for _, d := range g.Pkgs[p].Deps {
					if under(d, dep) {
						out = append(out, fmt.Sprintf("%s depends on %s: %s", g.rel(p), d, r.Why))
					}
				}
			}
		case SoleImporter:
			importers := 0
			for path, p := range g.Pkgs {
				for _, imp := range p.Imports {
					if !under(imp, dep) {
						continue
					}
					if slices.Contains(pkgs, path) {
						importers++
					} else {
						out = append(out, fmt.Sprintf("%s imports %s: %s", g.rel(path), imp, r.Why))
					}
				}
			}
			if importers == 0 {
				out = append(out, fmt.Sprintf("rule %d reserves %s for %v, which do not import it: the rule is stale", i, r.Dep, r.Pkgs))
			}
		case StdOnly:
			allow := g.match(r.Allow)
			for _, p := range pkgs {
				for _, d := range g.Pkgs[p].Deps {
					if !g.Std(d) && !slices.Contains(allow, d) && !slices.Contains(pkgs, d) {
						out = append(out, fmt.Sprintf("%s depends on %s, outside the standard library: %s", g.rel(p), d, r.Why))
					}
				}
			}
		default:
			out = append(out, fmt.Sprintf("rule %d has no kind", i))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// match returns the module's packages that patterns name, sorted.
func (g *Graph) match(patterns []string) []string {
	var out []string
	for path := range g.Pkgs {
		for _, pat := range patterns {
			base, tree := strings.CutSuffix(pat, "/...")
			base = g.full(base)
			if path == base || tree && strings.HasPrefix(path, base+"/") {
				out = append(out, path)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// full returns the import path of p: paths of the module are written
// relative to it in rules.
func (g *Graph) full(p string) string {
	first, _, _ := strings.Cut(p, "/")
	if strings.Contains(first, ".") {
		return p
	}
	return g.Module + "/" + p
}

// rel returns p relative to the module.
func (g *Graph) rel(p string) string {
	return strings.TrimPrefix(p, g.Module+"/")
}

// under reports whether path is dep or below it.
func under(path, dep string) bool {
	return path == dep || strings.HasPrefix(path, dep+"/")
}
