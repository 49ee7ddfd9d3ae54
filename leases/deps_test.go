package leases_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps guards the layering (DESIGN.md § Layout): leases meets approvals
// only through broker's interfaces, reaches Vault only through its Issuer
// port (leases/vault is an adapter below it, never imported by it), and
// imports no other adapter.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "github.com/stint-broker/stint/leases").Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list printed no dependencies")
	}
	for _, dep := range deps {
		for _, banned := range []string{
			"github.com/stint-broker/stint/approvals",
			"github.com/stint-broker/stint/web",
			"github.com/stint-broker/stint/leases/vault",
			"github.com/stint-broker/stint/broker/sqlite",
			"github.com/stint-broker/stint/cmd",
			"github.com/hashicorp/vault",
			"github.com/labstack/echo",
			"github.com/slack-go/slack",
			"modernc.org/sqlite",
		} {
			if dep == banned || strings.HasPrefix(dep, banned+"/") {
				t.Errorf("leases imports %s", dep)
			}
		}
	}
}
