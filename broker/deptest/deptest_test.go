package deptest_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/stint-broker/stint/broker/deptest"
)

// TestViolations runs each kind of rule against a small made-up graph, so
// that the guard is shown to fail where it should.
func TestViolations(t *testing.T) {
	const m = "example.com/m"
	g := &deptest.Graph{Module: m, Std: func(p string) bool { return !strings.Contains(p, ".") }, Pkgs: map[string]*deptest.Package{
		m + "/dict":     {ImportPath: m + "/dict", Imports: []string{"fmt"}, Deps: []string{"fmt"}},
		m + "/svc":      {ImportPath: m + "/svc", Imports: []string{m + "/dict"}, Deps: []string{m + "/dict", "fmt"}},
		m + "/svc/sdk":  {ImportPath: m + "/svc/sdk", Imports: []string{"sdk.io/api/v2"}, Deps: []string{"sdk.io/api/v2"}},
		m + "/web":      {ImportPath: m + "/web", Imports: []string{m + "/svc/sdk"}, Deps: []string{m + "/svc/sdk", "sdk.io/api/v2"}},
		m + "/web/page": {ImportPath: m + "/web/page", Imports: []string{"sdk.io/api"}, Deps: []string{"sdk.io/api", "fmt"}},
		m + "/bad":      {ImportPath: m + "/bad", Imports: []string{m + "/svc"}, Deps: []string{m + "/svc", m + "/dict", "x.io/y"}},
	}}
	tests := []struct {
		Name string
		Rule deptest.Rule
		Want []string
	}{
		{"NoDepOK", deptest.Rule{Pkgs: []string{"svc"}, Kind: deptest.NoDep, Dep: "web", Why: "w"}, nil},
		{"NoDepTransitive", deptest.Rule{Pkgs: []string{"web/..."}, Kind: deptest.NoDep, Dep: "sdk.io/api", Why: "w"},
			[]string{"web depends on sdk.io/api/v2: w", "web/page depends on sdk.io/api: w"}},
		{"NoDepOneLevel", deptest.Rule{Pkgs: []string{"web"}, Kind: deptest.NoDep, Dep: "svc", Why: "w"},
			[]string{"web depends on example.com/m/svc/sdk: w"}},
		{"SoleImporterOK", deptest.Rule{Pkgs: []string{"svc/sdk", "web/page"}, Kind: deptest.SoleImporter, Dep: "sdk.io/api", Why: "w"}, nil},
		{"SoleImporter", deptest.Rule{Pkgs: []string{"svc/sdk"}, Kind: deptest.SoleImporter, Dep: "sdk.io/api", Why: "w"},
			[]string{"web/page imports sdk.io/api: w"}},
		{"SoleImporterStale", deptest.Rule{Pkgs: []string{"dict"}, Kind: deptest.SoleImporter, Dep: "x.io/y", Why: "w"},
			[]string{"rule 0 reserves x.io/y for [dict], which do not import it: the rule is stale"}},
		{"StdOnlyOK", deptest.Rule{Pkgs: []string{"dict"}, Kind: deptest.StdOnly, Why: "w"}, nil},
		{"StdOnlyAllow", deptest.Rule{Pkgs: []string{"svc"}, Kind: deptest.StdOnly, Allow: []string{"dict"}, Why: "w"}, nil},
		{"StdOnly", deptest.Rule{Pkgs: []string{"bad"}, Kind: deptest.StdOnly, Allow: []string{"dict"}, Why: "w"},
			[]string{"bad depends on example.com/m/svc, outside the standard library: w", "bad depends on x.io/y, outside the standard library: w"}},
		{"NoPackage", deptest.Rule{Pkgs: []string{"gone"}, Kind: deptest.NoDep, Dep: "web", Why: "w"},
			[]string{"rule 0 (w) names no package of the module: [gone]"}},
	}
	for _, tt := range tests {
		t.Run(tt.Name, func(t *testing.T) {
			if got := g.Violations([]deptest.Rule{tt.Rule}); !slices.Equal(got, tt.Want) {
				t.Errorf("violations:\n got %q\nwant %q", got, tt.Want)
			}
		})
	}
}
