package mcp_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/stint-broker/stint/broker"
	mcptools "github.com/stint-broker/stint/web/mcp"
)

// rateLimited answers Roles and refuses every preview as over the rate
// limit; the other calls are not used.
type rateLimited struct{ mcptools.Leases }

func (rateLimited) Roles(context.Context) ([]*broker.Role, error) {
	return []*broker.Role{{Name: "db-readonly", Kind: broker.KindDatabase, Sensitivity: broker.SensitivityLow, DefaultTTL: time.Minute, MaxTTL: time.Hour}}, nil
}

func (rateLimited) PreviewLease(context.Context, broker.LeaseRequest) (*broker.LeasePreview, error) {
	e := broker.Errorf(broker.ETOOMANY, "Rate limit exceeded.")
	e.RetryAfter = 3 * time.Second
	return nil, e
}

func TestListRolesOverRateLimit(t *testing.T) {
	srv := mcptools.NewServer(mcptools.Config{Leases: rateLimited{}, Transport: "stdio"})
	st, ct := sdk.NewInMemoryTransports()
	ss, err := srv.Connect(t.Context(), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "test", Version: "0"}, nil).Connect(t.Context(), ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.CallTool(t.Context(), &sdk.CallToolParams{Name: "list_roles", Arguments: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res.StructuredContent)
	var out mcptools.ListRolesOut
	json.Unmarshal(b, &out)
	if res.IsError || len(out.Roles) != 1 || out.Roles[0].Would != mcptools.WouldUnknown || !strings.Contains(out.Roles[0].PreviewProblem, "Try again in 3 seconds") {
		t.Fatalf("list_roles over the rate limit = %s", b)
	}
}

func TestFileDelivery(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "creds")
	f, err := mcptools.NewFileDelivery(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("directory mode %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	l := &broker.Lease{ID: "lease-1", Role: "vault-token"}
	res, err := mcptools.WriteForTest(f, l, &broker.Credential{Kind: broker.KindToken, Data: map[string]any{"token": "hvs.it's"}, ExpiresAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(res.Path)
	fi, _ := os.Stat(res.Path)
	if res.Format != mcptools.FormatEnv || fi.Mode().Perm() != 0o600 || !strings.Contains(string(b), `VAULT_TOKEN='hvs.it'\''s'`) {
		t.Fatalf("token file %s (%v): %s", res.Path, fi.Mode().Perm(), b)
	}
	// A lease's credential is written once.
	if _, err := mcptools.WriteForTest(f, l, &broker.Credential{Kind: broker.KindToken, Data: map[string]any{"token": "x"}}); err == nil {
		t.Fatal("a second file for one lease was written")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(res.Path); !os.IsNotExist(err) {
		t.Fatalf("file after Close: %v", err)
	}
	// A directory others can reach is refused.
	open := filepath.Join(t.TempDir(), "open")
	os.Mkdir(open, 0o755)
	if _, err := mcptools.NewFileDelivery(open); err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("NewFileDelivery(0755 dir) = %v", err)
	}
}
