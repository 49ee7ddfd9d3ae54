package vault_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases"
	"github.com/stint-broker/stint/leases/vault"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
)

var _ leases.Issuer = (*vault.Issuer)(nil)

// slack absorbs Vault's whole-second rounding, the 5 s that the PostgreSQL
// plugin adds to VALID UNTIL, and the time the test itself takes.
const slack = 15 * time.Second

func TestOpen(t *testing.T) {
	for _, tt := range []struct {
		Name string
		Cfg  vault.Config
		OK   bool
	}{
		{"OK", vault.Config{Address: "http://127.0.0.1:8200", Token: "t"}, true},
		{"OKNamespace", vault.Config{Address: "https://vault.internal", Token: "t", Timeout: time.Second, Namespace: "ns1"}, true},
		{"ErrNoAddress", vault.Config{Token: "t"}, false},
		{"ErrBadAddress", vault.Config{Address: "127.0.0.1:8200", Token: "t"}, false},
		{"ErrNoToken", vault.Config{Address: "http://127.0.0.1:8200"}, false},
		{"ErrNegativeTimeout", vault.Config{Address: "http://127.0.0.1:8200", Token: "t", Timeout: -time.Second}, false},
	} {
		t.Run(tt.Name, func(t *testing.T) {
			is, err := vault.Open(tt.Cfg)
			if got, want := err == nil, tt.OK; got != want {
				t.Fatalf("Open: err = %v, want ok=%v", err, want)
			}
			if is != nil {
				is.Close()
			}
		})
	}
}

func TestOpen_IgnoresEnvironment(t *testing.T) {
	s := vaulttest.Start(t)
	t.Setenv("VAULT_TOKEN", "env-token-must-not-be-used")
	t.Setenv("VAULT_WRAP_TTL", "60s")
	t.Setenv("VAULT_NAMESPACE", "nope")
	is := openIssuer(t, s.Config())
	g, err := is.Issue(context.Background(), issueRequest("lease-env", dbRole(), time.Minute))
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	// A wrapped response would carry no lease id.
	if !strings.HasPrefix(g.VaultLeaseID, "database/creds/") {
		t.Fatalf("VaultLeaseID = %q, want a database lease", g.VaultLeaseID)
	}
	if err := is.Revoke(context.Background(), g.VaultLeaseID); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
}

func TestDevRoles(t *testing.T) {
	for _, r := range vault.DevRoles() {
		if err := r.Validate(); err != nil {
			t.Errorf("DevRoles: %v", err)
		}
	}
}

func TestIssuer(t *testing.T) {
	s := vaulttest.Start(t)
	dsn := vaulttest.PGDSN(t)
	is := openIssuer(t, s.Config())
	root := newClient(t, s.Addr, s.RootToken)

	t.Run("Database", func(t *testing.T) {
		ctx := context.Background()
		const window = 2 * time.Minute
		g, err := is.Issue(ctx, issueRequest("lease-db-1", dbRole(), window))
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		if !strings.HasPrefix(g.VaultLeaseID, "database/creds/"+vault.DevDatabaseRole+"/") {
			t.Errorf("VaultLeaseID = %q", g.VaultLeaseID)
		}
		if g.LeaseDuration > window || g.LeaseDuration < window-slack {
			t.Errorf("LeaseDuration = %s, want the %s window (the Vault role's TTL is 1h)", g.LeaseDuration, window)
		}
		user, _ := g.Data["username"].(string)
		password, _ := g.Data["password"].(string)
		if user == "" || password == "" {
			t.Fatalf("Data lacks username or password: keys %v", keys(g.Data))
		}
		if g.Username != user {
			t.Errorf("Grant.Username = %q, want the minted user %q (recorded on the lease)", g.Username, user)
		}

		// Vault's own record of the lease is no longer than the window.
		l, err := lookupLease(ctx, root, g.VaultLeaseID)
		if err != nil {
			t.Fatalf("lookup lease: %v", err)
		}
		ttl := seconds(t, l.Data["ttl"])
		if ttl > window || ttl < window-slack {
			t.Errorf("Vault lease ttl = %s, want ≤ %s", ttl, window)
		}
		// So is PostgreSQL's VALID UNTIL: the renew statements ran.
		admin := pgConnect(t, dsn, "", "")
		var validUntil time.Time
		if err := admin.QueryRow(ctx, `SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1`, user).Scan(&validUntil); err != nil {
			t.Fatalf("read rolvaliduntil: %v", err)
		}
		if left := time.Until(validUntil); left > window+time.Second || left < window-slack {
			t.Errorf("VALID UNTIL is %s away, want about the %s window", left.Round(time.Second), window)
		}
		t.Logf("lease ttl %s, Grant.LeaseDuration %s, VALID UNTIL in %s", ttl, g.LeaseDuration, time.Until(validUntil).Round(time.Second))

		// The credential logs in and reads.
		session := pgConnect(t, dsn, user, password)
		var who string
		if err := session.QueryRow(ctx, `SELECT current_user`).Scan(&who); err != nil {
			t.Fatalf("query as %s: %v", user, err)
		} else if who != user {
			t.Fatalf("current_user = %q, want %q", who, user)
		}
		var n int
		if err := session.QueryRow(ctx, `SELECT count(*) FROM pg_catalog.pg_roles`).Scan(&n); err != nil {
			t.Fatalf("read as %s: %v", user, err)
		}

		// Revoke kills the open session, drops the role and forgets the lease.
		if err := is.Revoke(ctx, g.VaultLeaseID); err != nil {
			t.Fatalf("Revoke: %v", err)
		}
		if _, err := session.Exec(ctx, `SELECT 1`); err == nil {
			t.Errorf("open session still runs queries after Revoke")
		} else {
			t.Logf("open session after Revoke: %v", err)
		}
		if c, err := pgx.Connect(ctx, userDSN(t, dsn, user, password)); err == nil {
			c.Close(ctx)
			t.Errorf("new login succeeds after Revoke")
		}
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname = $1`, user).Scan(&n); err != nil {
			t.Fatal(err)
		} else if n != 0 {
			t.Errorf("role %s still exists after Revoke", user)
		}
		if _, err := lookupLease(ctx, root, g.VaultLeaseID); !isInvalidLease(err) {
			t.Errorf("lookup after Revoke: err = %v, want 400 invalid lease", err)
		}
		if err := is.Revoke(ctx, g.VaultLeaseID); err != nil {
			t.Errorf("second Revoke: %v", err)
		}
	})

	t.Run("Token", func(t *testing.T) {
		ctx := context.Background()
		const window = 2 * time.Minute
		g, err := is.Issue(ctx, issueRequest("lease-tok-1", tokenRole(), window))
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		if !strings.HasPrefix(g.VaultLeaseID, vault.AccessorPrefix) {
			t.Errorf("VaultLeaseID = %q, want accessor:…", g.VaultLeaseID)
		}
		if g.LeaseDuration > window || g.LeaseDuration < window-slack {
			t.Errorf("LeaseDuration = %s, want the %s window", g.LeaseDuration, window)
		}
		if g.Renewable {
			t.Errorf("Renewable = true")
		}
		token, _ := g.Data["token"].(string)
		if token == "" {
			t.Fatalf("Data lacks token: keys %v", keys(g.Data))
		}
		if strings.Contains(g.VaultLeaseID, token) {
			t.Fatalf("the handle contains the token")
		}
		agent := newClient(t, s.Addr, token)

		// The policy allows the agents' folder and lookup-self, nothing else.
		sec, err := agent.Logical().ReadWithContext(ctx, vault.DevAgentSecret)
		if err != nil {
			t.Fatalf("read %s with the token: %v", vault.DevAgentSecret, err)
		}
		if data, _ := sec.Data["data"].(map[string]any); data["message"] != "hello, agent" {
			t.Errorf("read %s = %v", vault.DevAgentSecret, sec.Data)
		}
		if _, err := agent.Logical().ReadWithContext(ctx, vault.DevAdminSecret); !isStatus(err, 403) {
			t.Errorf("read %s with the token: err = %v, want 403", vault.DevAdminSecret, err)
		}
		if _, err := agent.Logical().ListWithContext(ctx, "sys/policies/acl"); !isStatus(err, 403) {
			t.Errorf("list policies with the token: err = %v, want 403", err)
		}
		self, err := agent.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			t.Fatalf("lookup-self: %v", err)
		}
		ttl := seconds(t, self.Data["ttl"])
		if ttl > window {
			t.Errorf("token ttl = %s, want ≤ %s", ttl, window)
		}
		if meta, _ := self.Data["meta"].(map[string]any); meta["stint_lease_id"] != "lease-tok-1" || meta["stint_agent"] != "etl-bot" {
			t.Errorf("token meta = %v", self.Data["meta"])
		}
		if got, want := strings.Join(toStrings(self.Data["policies"]), ","), vault.DevPolicy; got != want {
			t.Errorf("token policies = %q, want %q", got, want)
		}
		t.Logf("token ttl %s, display name %v, policies %v", ttl, self.Data["display_name"], self.Data["policies"])

		if err := is.Revoke(ctx, g.VaultLeaseID); err != nil {
			t.Fatalf("Revoke: %v", err)
		}
		if _, err := agent.Logical().ReadWithContext(ctx, vault.DevAgentSecret); !isStatus(err, 403) {
			t.Errorf("read with a revoked token: err = %v, want 403", err)
		}
		if err := is.Revoke(ctx, g.VaultLeaseID); err != nil {
			t.Errorf("second Revoke: %v", err)
		}
		if err := is.Revoke(ctx, vault.AccessorPrefix+"no-such-accessor"); err != nil {
			t.Errorf("Revoke unknown accessor: %v", err)
		}
	})

	t.Run("ListIssued", func(t *testing.T) {
		ctx := context.Background()
		start := time.Now().Add(-2 * time.Second)
		db, err := is.Issue(ctx, issueRequest("lease-list-db", dbRole(), time.Minute))
		if err != nil {
			t.Fatalf("Issue db: %v", err)
		}
		tok, err := is.Issue(ctx, issueRequest("lease-list-tok", tokenRole(), time.Minute))
		if err != nil {
			t.Fatalf("Issue token: %v", err)
		}
		// A token not minted by Stint (no stint_lease_id) is not listed.
		if _, err := root.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{Policies: []string{vault.DevPolicy}, TTL: "1m"}); err != nil {
			t.Fatal(err)
		}
		end := time.Now().Add(2 * time.Second)

		got, err := is.ListIssued(ctx, vault.DevRoles())
		if err != nil {
			t.Fatalf("ListIssued: %v", err)
		}
		if len(got) != 2 {
			t.Errorf("ListIssued returned %d credentials, want 2: %+v", len(got), got)
		}
		for _, want := range []struct {
			id, leaseID string
		}{{db.VaultLeaseID, ""}, {tok.VaultLeaseID, "lease-list-tok"}} {
			i := slices.IndexFunc(got, func(x leases.Issued) bool { return x.VaultLeaseID == want.id })
			if i < 0 {
				t.Errorf("ListIssued lacks %s", want.id)
				continue
			}
			if at := got[i].IssuedAt; at.Before(start) || at.After(end) {
				t.Errorf("%s: IssuedAt = %s, want between %s and %s", want.id, at, start, end)
			}
			if got[i].LeaseID != want.leaseID {
				t.Errorf("%s: LeaseID = %q, want %q", want.id, got[i].LeaseID, want.leaseID)
			}
		}

		for _, h := range []string{db.VaultLeaseID, tok.VaultLeaseID} {
			if err := is.Revoke(ctx, h); err != nil {
				t.Fatalf("Revoke %s: %v", h, err)
			}
		}
		if got, err := is.ListIssued(ctx, vault.DevRoles()); err != nil {
			t.Fatalf("ListIssued: %v", err)
		} else if len(got) != 0 {
			t.Errorf("ListIssued after Revoke = %+v, want none", got)
		}
	})

	t.Run("ErrNotLeased", func(t *testing.T) {
		r := &broker.Role{Name: "kv", Kind: broker.KindGeneric, Vault: broker.RoleVault{Path: vault.DevAgentSecret, Method: "read"}}
		_, err := is.Issue(context.Background(), issueRequest("lease-kv", r, time.Minute))
		if err == nil || !strings.Contains(err.Error(), "no lease") {
			t.Fatalf("Issue: err = %v, want no lease", err)
		}
		if errors.Is(err, leases.ErrUnavailable) {
			t.Errorf("err wraps ErrUnavailable: %v", err)
		}
	})

	t.Run("ErrNotLeasedRevokesToken", func(t *testing.T) {
		// A token minted through a generic role has no lease: Issue refuses
		// it and revokes the token rather than leave it unrecorded.
		ctx := context.Background()
		before := countAccessors(t, root)
		r := &broker.Role{Name: "tok-generic", Kind: broker.KindGeneric, Vault: tokenRole().Vault}
		_, err := is.Issue(ctx, issueRequest("lease-generic-tok", r, time.Minute))
		if err == nil || !strings.Contains(err.Error(), "no lease") {
			t.Fatalf("Issue: err = %v, want no lease", err)
		}
		if after := countAccessors(t, root); after != before {
			t.Errorf("token accessors: %d before, %d after; want the minted token revoked", before, after)
		}
	})

	t.Run("ErrLeaseLongerThanWindow", func(t *testing.T) {
		// PKI leases cannot be renewed, so a 1h certificate lease cannot be
		// shortened to a 1m window: Issue must revoke it and fail.
		ctx := context.Background()
		for _, w := range []struct {
			path string
			data map[string]any
		}{
			{"sys/mounts/pki", map[string]any{"type": "pki", "config": map[string]any{"max_lease_ttl": "24h"}}},
			{"pki/root/generate/internal", map[string]any{"common_name": "stint-test-ca", "ttl": "24h"}},
			{"pki/roles/agent", map[string]any{"allow_any_name": true, "ttl": "1h", "max_ttl": "1h", "generate_lease": true}},
		} {
			if _, err := root.Logical().WriteWithContext(ctx, w.path, w.data); err != nil {
				t.Fatalf("write %s: %v", w.path, err)
			}
		}
		r := &broker.Role{Name: "cert", Kind: broker.KindGeneric, Vault: broker.RoleVault{
			Path: "pki/issue/agent", Method: "write", Params: map[string]any{"common_name": "agent.test"},
		}}
		_, err := is.Issue(ctx, issueRequest("lease-cert", r, time.Minute))
		if err == nil {
			t.Fatal("Issue: want an error")
		}
		t.Logf("Issue: %v", err)
		got, err := is.ListIssued(ctx, []*broker.Role{r})
		if err != nil {
			t.Fatalf("ListIssued: %v", err)
		}
		if len(got) != 0 {
			t.Errorf("ListIssued = %+v, want the certificate's lease revoked", got)
		}
	})

	t.Run("ErrNoSuchRole", func(t *testing.T) {
		r := &broker.Role{Name: "nope", Kind: broker.KindDatabase, Vault: broker.RoleVault{Path: "database/creds/stint-nope", Method: "read"}}
		_, err := is.Issue(context.Background(), issueRequest("lease-nope", r, time.Minute))
		if err == nil || errors.Is(err, leases.ErrUnavailable) {
			t.Fatalf("Issue: err = %v, want a plain error", err)
		}
		t.Logf("Issue: %v", err)
	})

	t.Run("ErrPermissionDenied", func(t *testing.T) {
		cfg := s.Config()
		cfg.Token = "hvs.not-a-token"
		bad := openIssuer(t, cfg)
		_, err := bad.Issue(context.Background(), issueRequest("lease-403", dbRole(), time.Minute))
		if !isStatus(err, 403) || errors.Is(err, leases.ErrUnavailable) {
			t.Fatalf("Issue: err = %v, want 403 without ErrUnavailable", err)
		}
		if strings.Contains(err.Error(), cfg.Token) {
			t.Errorf("error contains the token: %v", err)
		}
		if err := bad.Revoke(context.Background(), "database/creds/stint-readonly/x"); !isStatus(err, 403) || errors.Is(err, leases.ErrUnavailable) {
			t.Fatalf("Revoke: err = %v, want 403 without ErrUnavailable", err)
		}
	})
}

// TestIssuer_Unavailable checks that a sealed or stopped Vault makes every
// call fail with ErrUnavailable, and that state survives a restart.
func TestIssuer_Unavailable(t *testing.T) {
	s := vaulttest.Start(t)
	dsn := vaulttest.PGDSN(t)
	is := openIssuer(t, s.Config())
	root := newClient(t, s.Addr, s.RootToken)
	ctx := context.Background()

	db, err := is.Issue(ctx, issueRequest("lease-restart-db", dbRole(), 5*time.Minute))
	if err != nil {
		t.Fatalf("Issue db: %v", err)
	}
	tok, err := is.Issue(ctx, issueRequest("lease-restart-tok", tokenRole(), 5*time.Minute))
	if err != nil {
		t.Fatalf("Issue token: %v", err)
	}
	if err := is.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}

	unavailable := func(t *testing.T, state string) {
		t.Helper()
		if err := is.Ping(ctx); !errors.Is(err, leases.ErrUnavailable) {
			t.Errorf("%s: Ping: err = %v, want ErrUnavailable", state, err)
		}
		if _, err := is.Issue(ctx, issueRequest("lease-down", dbRole(), time.Minute)); !errors.Is(err, leases.ErrUnavailable) {
			t.Errorf("%s: Issue: err = %v, want ErrUnavailable", state, err)
		} else {
			t.Logf("%s: Issue: %v", state, err)
		}
		if _, err := is.Issue(ctx, issueRequest("lease-down", tokenRole(), time.Minute)); !errors.Is(err, leases.ErrUnavailable) {
			t.Errorf("%s: Issue token: err = %v, want ErrUnavailable", state, err)
		}
		if err := is.Revoke(ctx, db.VaultLeaseID); !errors.Is(err, leases.ErrUnavailable) {
			t.Errorf("%s: Revoke: err = %v, want ErrUnavailable", state, err)
		}
		if _, err := is.ListIssued(ctx, vault.DevRoles()); !errors.Is(err, leases.ErrUnavailable) {
			t.Errorf("%s: ListIssued: err = %v, want ErrUnavailable", state, err)
		}
	}

	if _, err := root.Logical().WriteWithContext(ctx, "sys/seal", nil); err != nil {
		t.Fatalf("seal: %v", err)
	}
	unavailable(t, "sealed")
	if err := s.Unseal(ctx); err != nil {
		t.Fatalf("Unseal: %v", err)
	}
	if err := is.Ping(ctx); err != nil {
		t.Fatalf("Ping after unseal: %v", err)
	}

	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	unavailable(t, "stopped")
	if err := s.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := is.Ping(ctx); err != nil {
		t.Fatalf("Ping after restart: %v", err)
	}

	// Leases minted before the restart are still known, and revocable.
	got, err := is.ListIssued(ctx, vault.DevRoles())
	if err != nil {
		t.Fatalf("ListIssued: %v", err)
	}
	if len(got) != 2 {
		t.Errorf("ListIssued after restart = %+v, want the 2 credentials minted before", got)
	}
	user, _ := db.Data["username"].(string)
	admin := pgConnect(t, dsn, "", "")
	var n int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname = $1`, user).Scan(&n); err != nil || n != 1 {
		t.Fatalf("role %s before Revoke: count %d, err %v", user, n, err)
	}
	if err := is.Revoke(ctx, db.VaultLeaseID); err != nil {
		t.Fatalf("Revoke db after restart: %v", err)
	}
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname = $1`, user).Scan(&n); err != nil || n != 0 {
		t.Errorf("role %s after Revoke: count %d, err %v", user, n, err)
	}
	if err := is.Revoke(ctx, tok.VaultLeaseID); err != nil {
		t.Fatalf("Revoke token after restart: %v", err)
	}
	g, err := is.Issue(ctx, issueRequest("lease-after", dbRole(), time.Minute))
	if err != nil {
		t.Fatalf("Issue after restart: %v", err)
	}
	if err := is.Revoke(ctx, g.VaultLeaseID); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
}

func dbRole() *broker.Role    { return vault.DevRoles()[0] }
func tokenRole() *broker.Role { return vault.DevRoles()[1] }

func issueRequest(leaseID string, r *broker.Role, window time.Duration) leases.IssueRequest {
	return leases.IssueRequest{LeaseID: leaseID, Agent: "etl-bot", Role: r, Window: window}
}

func openIssuer(tb testing.TB, cfg vault.Config) *vault.Issuer {
	tb.Helper()
	is, err := vault.Open(cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { is.Close() })
	return is
}

// newClient returns a Vault client with the given token, for checking what
// the Issuer did.
func newClient(tb testing.TB, addr, token string) *api.Client {
	tb.Helper()
	c, err := api.NewClient(&api.Config{Address: addr, MaxRetries: 0, Timeout: 10 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	c.SetToken(token)
	return c
}

func lookupLease(ctx context.Context, c *api.Client, id string) (*api.Secret, error) {
	return c.Logical().WriteWithContext(ctx, "sys/leases/lookup", map[string]any{"lease_id": id})
}

func isStatus(err error, code int) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == code
}

func isInvalidLease(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == 400 && slices.ContainsFunc(re.Errors, func(e string) bool {
		return strings.Contains(e, "invalid lease")
	})
}

// pgConnect connects to the DSN's server, as user if given; the connection is
// closed when the test ends.
func pgConnect(tb testing.TB, dsn, user, password string) *pgx.Conn {
	tb.Helper()
	if user != "" {
		dsn = userDSN(tb, dsn, user, password)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("connect to PostgreSQL as %q: %v", user, err)
	}
	tb.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func userDSN(tb testing.TB, dsn, user, password string) string {
	tb.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	u.User = url.UserPassword(user, password)
	return u.String()
}

func seconds(tb testing.TB, v any) time.Duration {
	tb.Helper()
	n, ok := v.(json.Number)
	if !ok {
		tb.Fatalf("ttl %v (%T) is not a number", v, v)
	}
	i, err := n.Int64()
	if err != nil {
		tb.Fatal(err)
	}
	return time.Duration(i) * time.Second
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func countAccessors(tb testing.TB, root *api.Client) int {
	tb.Helper()
	s, err := root.Logical().ListWithContext(context.Background(), "auth/token/accessors")
	if err != nil {
		tb.Fatalf("list accessors: %v", err)
	}
	ks, _ := s.Data["keys"].([]any)
	return len(ks)
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}
