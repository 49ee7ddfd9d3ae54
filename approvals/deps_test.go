package approvals_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps guards the layering (DESIGN.md § Layout): approvals meets
// leases only through broker's interfaces, and imports no adapter.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "github.com/stint-broker/stint/approvals").Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{
			"github.com/stint-broker/stint/leases",
			"github.com/stint-broker/stint/web",
			"github.com/stint-broker/stint/broker/sqlite",
			"github.com/stint-broker/stint/cmd",
			"github.com/stint-broker/stint/approvals/slack",
			"github.com/hashicorp/vault",
			"github.com/labstack/echo",
			"github.com/slack-go/slack",
		} {
			if dep == banned || strings.HasPrefix(dep, banned+"/") {
				t.Errorf("approvals imports %s", dep)
			}
		}
	}
}
