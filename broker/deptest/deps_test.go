package deptest_test

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/stint-broker/stint/broker/deptest"
)

// Reasons shared by several rules.
const (
	whyDictionary = "broker is the dictionary every package shares; it imports nothing of ours and nothing outside the standard library (README § Architecture)"
	whyMeet       = "leases and approvals never import each other: they meet through broker's interfaces, wired in cmd/stint"
	whyNoStore    = "services reach a store only through broker's interfaces; only cmd/stint picks the store"
	whyNoWeb      = "the HTTP layer calls the services, never the other way round"
	whyNoCmd      = "cmd/stint is the composition root: it imports everything and nothing imports it"
	whyNoAdapter  = "a service reaches an SDK only through its port; the adapter below it is wired in cmd/stint"
	whyWebDomain  = "web serves the services through broker's interfaces; it never runs the domain itself"
	whyMockTests  = "broker/mock is for tests; production code must not link it"
	whySplit      = "approvals/policy (Cedar evaluation), approvals/governance (risk, reviews, separation of duty) and approvals (the human approval workflow) never import each other: they meet through broker's interfaces, wired in cmd/stint"
	// The console's other half is TestReadOnly in web/console: Reader has
	// no method that writes, and Console holds no store that does.
	whyConsoleReads = "the console reads through console.Reader and changes state only through the services the API uses; it never holds a store"
)

// approvalsPkgs are the three packages of approvals: the workflow, Cedar
// evaluation and governance.
var approvalsPkgs = []string{"approvals", "approvals/policy", "approvals/governance"}

// rules is every layering rule of the module, with its reason. A new
// package or SDK gets its rows here.
var rules = []deptest.Rule{
	// The dictionary.
	{Pkgs: []string{"broker"}, Kind: deptest.StdOnly, Why: whyDictionary},
	{Pkgs: []string{"broker/mock"}, Kind: deptest.StdOnly, Allow: []string{"broker"}, Why: "the fn-field mocks implement broker's interfaces and nothing else"},

	// The lease lifecycle.
	{Pkgs: []string{"leases"}, Kind: deptest.NoDep, Dep: "approvals", Why: whyMeet},
	{Pkgs: []string{"leases"}, Kind: deptest.NoDep, Dep: "leases/vault", Why: whyNoAdapter + " (leases.Issuer is the port)"},
	{Pkgs: []string{"leases"}, Kind: deptest.NoDep, Dep: "web", Why: whyNoWeb},
	{Pkgs: []string{"leases"}, Kind: deptest.NoDep, Dep: "broker/sqlite", Why: whyNoStore},
	{Pkgs: []string{"leases"}, Kind: deptest.NoDep, Dep: "broker/postgres", Why: whyNoStore},
	{Pkgs: []string{"leases"}, Kind: deptest.NoDep, Dep: "broker/mock", Why: whyMockTests},
	{Pkgs: []string{"leases"}, Kind: deptest.NoDep, Dep: "cmd", Why: whyNoCmd},

	// Approvals.
	{Pkgs: approvalsPkgs, Kind: deptest.NoDep, Dep: "leases", Why: whyMeet},
	{Pkgs: []string{"approvals"}, Kind: deptest.NoDep, Dep: "approvals/slack", Why: whyNoAdapter + " (approvals.Notifier is the port)"},
	{Pkgs: approvalsPkgs, Kind: deptest.NoDep, Dep: "web", Why: whyNoWeb},
	{Pkgs: approvalsPkgs, Kind: deptest.NoDep, Dep: "broker/sqlite", Why: whyNoStore},
	{Pkgs: approvalsPkgs, Kind: deptest.NoDep, Dep: "broker/postgres", Why: whyNoStore},
	{Pkgs: approvalsPkgs, Kind: deptest.NoDep, Dep: "broker/mock", Why: whyMockTests},
	{Pkgs: approvalsPkgs, Kind: deptest.NoDep, Dep: "cmd", Why: whyNoCmd},
	{Pkgs: []string{"approvals/policy", "approvals/governance"}, Kind: deptest.NoDep, Dep: "approvals", Why: whySplit},
	{Pkgs: []string{"approvals"}, Kind: deptest.NoDep, Dep: "approvals/policy", Why: whySplit},
	{Pkgs: []string{"approvals"}, Kind: deptest.NoDep, Dep: "approvals/governance", Why: whySplit},

	// The HTTP layer.
	{Pkgs: []string{"web/..."}, Kind: deptest.NoDep, Dep: "leases", Why: whyWebDomain},
	{Pkgs: []string{"web/..."}, Kind: deptest.NoDep, Dep: "approvals", Why: whyWebDomain + " (approvals/slack hands it an http.Handler)"},
	{Pkgs: []string{"web/..."}, Kind: deptest.NoDep, Dep: "broker/sqlite", Why: whyNoStore},
	{Pkgs: []string{"web/..."}, Kind: deptest.NoDep, Dep: "broker/postgres", Why: whyNoStore},
	{Pkgs: []string{"web/..."}, Kind: deptest.NoDep, Dep: "broker/mock", Why: whyMockTests},
	{Pkgs: []string{"web/..."}, Kind: deptest.NoDep, Dep: "cmd", Why: whyNoCmd},
	{Pkgs: []string{"web/console"}, Kind: deptest.NoDep, Dep: "broker/sqlite", Why: whyConsoleReads},
	{Pkgs: []string{"web/console"}, Kind: deptest.NoDep, Dep: "broker/postgres", Why: whyConsoleReads},
	{Pkgs: []string{"web/console"}, Kind: deptest.NoDep, Dep: "broker/identity",
		Why: "the console's people log in through broker.UserService; agents' credentials are not the console's to check"},
	{Pkgs: []string{"web/console"}, Kind: deptest.NoDep, Dep: "web/client", Why: "the console calls the services in process, not the API over HTTP"},

	// Adapters sit below their parent and beside nothing else.
	{Pkgs: []string{"leases/vault/..."}, Kind: deptest.NoDep, Dep: "approvals", Why: "the Vault adapter serves leases only"},
	{Pkgs: []string{"leases/vault/..."}, Kind: deptest.NoDep, Dep: "web", Why: whyNoWeb},
	{Pkgs: []string{"approvals/slack"}, Kind: deptest.NoDep, Dep: "leases", Why: "the Slack adapter serves approvals only; lease state changes go through approvals"},
	{Pkgs: []string{"approvals/slack"}, Kind: deptest.NoDep, Dep: "web", Why: "the Slack adapter hands web an http.Handler; web does not hand it anything"},
	{Pkgs: []string{"broker/sqlite", "broker/postgres/..."}, Kind: deptest.NoDep, Dep: "leases", Why: "stores are dumb: the lifecycle's rules live in leases, not in SQL"},
	{Pkgs: []string{"broker/sqlite", "broker/postgres/..."}, Kind: deptest.NoDep, Dep: "approvals", Why: "stores are dumb: approval rules live in approvals, not in SQL"},
	{Pkgs: []string{"broker/sqlite", "broker/postgres/..."}, Kind: deptest.NoDep, Dep: "web", Why: whyNoWeb},
	{Pkgs: []string{"broker/sqlite"}, Kind: deptest.NoDep, Dep: "broker/postgres", Why: "each store stands alone; storetest holds what they share"},
	{Pkgs: []string{"broker/postgres/..."}, Kind: deptest.NoDep, Dep: "broker/sqlite", Why: "each store stands alone; storetest holds what they share"},
	{Pkgs: []string{"broker/identity", "broker/checkpoint"}, Kind: deptest.NoDep, Dep: "leases", Why: "identity and checkpoints serve every service through broker's interfaces"},
	{Pkgs: []string{"broker/identity", "broker/checkpoint"}, Kind: deptest.NoDep, Dep: "approvals", Why: "identity and checkpoints serve every service through broker's interfaces"},
	{Pkgs: []string{"broker/identity", "broker/checkpoint"}, Kind: deptest.NoDep, Dep: "web", Why: whyNoWeb},
	{Pkgs: []string{"broker/identity", "broker/checkpoint"}, Kind: deptest.NoDep, Dep: "broker/sqlite", Why: whyNoStore},
	{Pkgs: []string{"broker/identity", "broker/checkpoint"}, Kind: deptest.NoDep, Dep: "broker/postgres", Why: whyNoStore},
	{Pkgs: []string{"broker/users"}, Kind: deptest.NoDep, Dep: "leases", Why: "console users are people, not leases: the console reaches leases through broker.LeaseService"},
	{Pkgs: []string{"broker/users"}, Kind: deptest.NoDep, Dep: "approvals", Why: "console users are people who log in; what they may decide is the approvals service's"},
	{Pkgs: []string{"broker/users"}, Kind: deptest.NoDep, Dep: "web", Why: whyNoWeb},
	{Pkgs: []string{"broker/users"}, Kind: deptest.NoDep, Dep: "broker/sqlite", Why: whyNoStore},
	{Pkgs: []string{"broker/users"}, Kind: deptest.NoDep, Dep: "broker/postgres", Why: whyNoStore},
	{Pkgs: []string{"broker/users"}, Kind: deptest.NoDep, Dep: "broker/identity", Why: "console users and agents are separate identities with separate credentials"},
	{Pkgs: []string{"web/..."}, Kind: deptest.NoDep, Dep: "broker/users", Why: "the console logs people in through broker.UserService; passwords and sessions stay in the service"},

	// Each SDK has one seam.
	{Pkgs: []string{"leases/vault"}, Kind: deptest.SoleImporter, Dep: "github.com/hashicorp/vault/api",
		Why: "only the Vault adapter speaks to Vault; the rest of Stint sees leases.Issuer"},
	{Pkgs: []string{"approvals/slack"}, Kind: deptest.SoleImporter, Dep: "github.com/slack-go/slack",
		Why: "only the Slack adapter speaks to Slack; approvals sees its Notifier port"},
	{Pkgs: []string{"broker/sqlite"}, Kind: deptest.SoleImporter, Dep: "modernc.org/sqlite",
		Why: "only the SQLite store opens SQLite"},
	{Pkgs: []string{"broker/postgres/...", "leases/vault/vaulttest", "cmd/stint"}, Kind: deptest.SoleImporter, Dep: "github.com/jackc/pgx",
		Why: "only the PostgreSQL store opens PostgreSQL (vaulttest logs in with minted credentials to prove they work; \"stint dev --store postgres\" creates its development database)"},
	{Pkgs: []string{"broker/sqlite", "broker/postgres", "cmd/stint"}, Kind: deptest.SoleImporter, Dep: "github.com/pressly/goose",
		Why: "the stores apply their own migrations when they open; only \"stint migrate\" reads their status besides"},
	{Pkgs: []string{"web/..."}, Kind: deptest.SoleImporter, Dep: "github.com/labstack/echo",
		Why: "echo stays in the HTTP layer; handlers call services that know nothing of HTTP"},
	{Pkgs: []string{"web/console"}, Kind: deptest.SoleImporter, Dep: "github.com/coreos/go-oidc",
		Why: "single sign-on is the console's, an HTTP concern"},
	{Pkgs: []string{"web/console"}, Kind: deptest.SoleImporter, Dep: "golang.org/x/oauth2",
		Why: "the console is an OAuth client of the identity provider; Stint's own OAuth server (web, broker/identity) builds its tokens itself"},
	{Pkgs: []string{"web/..."}, Kind: deptest.SoleImporter, Dep: "github.com/prometheus/client_golang",
		Why: "metrics are served over HTTP; services count through broker's interfaces"},
	{Pkgs: []string{"broker/users"}, Kind: deptest.SoleImporter, Dep: "golang.org/x/crypto/bcrypt",
		Why: "console passwords are hashed and checked in one place, the users service, under its throttle and its bound on concurrent hashes"},
	{Pkgs: []string{"approvals/policy"}, Kind: deptest.SoleImporter, Dep: "github.com/cedar-policy/cedar-go",
		Why: "policy evaluation has one home; the rest of Stint sees broker.Decider"},
	{Pkgs: []string{"cmd/stint"}, Kind: deptest.SoleImporter, Dep: "github.com/robfig/cron",
		Why: "schedules are wiring: jobs are plain methods, cmd/stint decides when they run"},
	{Pkgs: []string{"cmd/stint"}, Kind: deptest.SoleImporter, Dep: "github.com/spf13/cobra",
		Why: "the command line is the composition root's"},
	{Pkgs: []string{"cmd/stint"}, Kind: deptest.SoleImporter, Dep: "github.com/spf13/pflag",
		Why: "flags are the command line's, which is the composition root's"},
	{Pkgs: []string{"cmd/stint"}, Kind: deptest.SoleImporter, Dep: "golang.org/x/term",
		Why: "only the CLI talks to a terminal (password prompts, progress)"},
	{Pkgs: []string{"cmd/stint"}, Kind: deptest.SoleImporter, Dep: "golang.org/x/sys",
		Why: "process groups and signals of \"stint exec\" are the CLI's; the services stay portable"},
	{Pkgs: []string{"broker/identity", "web/client", "cmd/stint"}, Kind: deptest.SoleImporter, Dep: "github.com/go-jose/go-jose",
		Why: "JOSE is identity's: broker/identity signs and checks tokens and assertions; the client signs its private_key_jwt; cmd/stint writes the development JWKS"},
	{Pkgs: []string{"broker/identity"}, Kind: deptest.SoleImporter, Dep: "golang.org/x/time/rate",
		Why: "request limits are identity's (broker/identity/limits.go); a second limiter elsewhere would count apart from it"},
	{Pkgs: []string{"web", "web/mcp", "cmd/stint"}, Kind: deptest.SoleImporter, Dep: "github.com/modelcontextprotocol/go-sdk",
		Why: "MCP is a protocol edge: web/mcp holds the tools, web serves them over HTTP, cmd/stint over stdio; the services never see it"},
	{Pkgs: []string{"cmd/stint", "web", "approvals/policy"}, Kind: deptest.SoleImporter, Dep: "go.yaml.in/yaml",
		Why: "only the composition root reads configuration (web reads its own OpenAPI document, to serve it as JSON; approvals/policy reads decision tables, which test policies)"},
	{Pkgs: []string{"web/openapitest"}, Kind: deptest.SoleImporter, Dep: "github.com/getkin/kin-openapi",
		Why: "the OpenAPI validator is for tests: the server serves its document and never validates with it"},
}

// TestDeps checks every rule against the module's import graph.
func TestDeps(t *testing.T) {
	deptest.Load(t).Check(t, rules)
}

// TestDepsCatch: the module's own rules, on its own graph with one banned
// import added, report that import with its reason; and the graph as it is
// breaks none of them.
func TestDepsCatch(t *testing.T) {
	g := deptest.Load(t)
	if v := g.Violations(rules); len(v) != 0 {
		t.Fatalf("the module breaks its rules: %q", v)
	}
	for _, tt := range []struct{ Pkg, Dep, Why string }{
		{"web/console", "broker/sqlite", whyConsoleReads},
		{"web/console", "broker/postgres", whyConsoleReads},
		{"web", "broker/users", "passwords and sessions stay in the service"},
		{"leases", "approvals", whyMeet},
		{"approvals/governance", "approvals/policy", whySplit},
		{"approvals", "github.com/cedar-policy/cedar-go", "policy evaluation has one home"},
		{"approvals", "github.com/hashicorp/vault/api", "only the Vault adapter speaks to Vault"},
		{"leases", "github.com/slack-go/slack", "only the Slack adapter speaks to Slack"},
		{"broker/identity", "modernc.org/sqlite", "only the SQLite store opens SQLite"},
		{"web", "github.com/jackc/pgx/v5", "only the PostgreSQL store opens PostgreSQL"},
		{"web/console", "golang.org/x/crypto/bcrypt", "hashed and checked in one place"},
		{"broker", "github.com/labstack/echo/v4", whyDictionary},
	} {
		t.Run(tt.Pkg+"→"+tt.Dep, func(t *testing.T) {
			got := withImport(t, g, tt.Pkg, tt.Dep).Violations(rules)
			found := false
			for _, v := range got {
				if strings.HasPrefix(v, tt.Pkg+" ") && strings.Contains(v, tt.Dep) && strings.Contains(v, tt.Why) {
					found = true
				}
			}
			if !found {
				t.Errorf("with %s importing %s, violations = %q; want one naming both and the reason %q", tt.Pkg, tt.Dep, got, tt.Why)
			}
		})
	}
}

// withImport returns a copy of g in which pkg imports dep directly.
func withImport(t *testing.T, g *deptest.Graph, pkg, dep string) *deptest.Graph {
	t.Helper()
	full := func(p string) string {
		if first, _, _ := strings.Cut(p, "/"); strings.Contains(first, ".") {
			return p
		}
		return g.Module + "/" + p
	}
	p := g.Pkgs[full(pkg)]
	if p == nil {
		t.Fatalf("no package %s", pkg)
	}
	c := *g
	c.Pkgs = maps.Clone(g.Pkgs)
	c.Pkgs[p.ImportPath] = &deptest.Package{
		ImportPath: p.ImportPath,
		Imports:    append(slices.Clone(p.Imports), full(dep)),
		Deps:       append(slices.Clone(p.Deps), full(dep)),
	}
	return &c
}
