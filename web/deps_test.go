package web_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps guards the layering (DESIGN.md § Layout): web talks to the domain
// only through broker's interfaces, and broker imports nothing but the
// standard library.
func TestDeps(t *testing.T) {
	t.Run("web", func(t *testing.T) {
		deps := goListDeps(t, "github.com/stint-broker/stint/web", false)
		for _, dep := range deps {
			for _, banned := range []string{
				"github.com/stint-broker/stint/leases",
				"github.com/stint-broker/stint/approvals",
				"github.com/stint-broker/stint/broker/sqlite",
				"github.com/stint-broker/stint/broker/postgres",
				"github.com/stint-broker/stint/broker/mock",
				"github.com/stint-broker/stint/cmd",
				"github.com/hashicorp/vault",
				"github.com/slack-go/slack",
				"modernc.org/sqlite",
				"github.com/jackc/pgx",
			} {
				if dep == banned || strings.HasPrefix(dep, banned+"/") {
					t.Errorf("web imports %s", dep)
				}
			}
		}
	})
	for _, pkg := range []string{"broker", "broker/mock"} {
		t.Run(pkg, func(t *testing.T) {
			allowed := map[string]bool{
				"github.com/stint-broker/stint/broker": true,
				"github.com/stint-broker/stint/" + pkg: true,
			}
			for _, dep := range goListDeps(t, "github.com/stint-broker/stint/"+pkg, true) {
				if !allowed[dep] {
					t.Errorf("%s imports %s, which is not in the standard library", pkg, dep)
				}
			}
		})
	}
}

// goListDeps returns the import paths pkg depends on, itself included; with
// nonStandard, only those outside the standard library.
func goListDeps(t *testing.T, pkg string, nonStandard bool) []string {
	t.Helper()
	format := "{{.ImportPath}}"
	if nonStandard {
		format = "{{if not .Standard}}{{.ImportPath}}{{end}}"
	}
	out, err := exec.Command("go", "list", "-deps", "-f", format, pkg).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}
