package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases"
)

// DefaultTimeout bounds one Vault call, retries included, when
// Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// AccessorPrefix starts the handle Stint records for a minted Vault token:
// "accessor:<accessor>". The token itself is never recorded.
const AccessorPrefix = "accessor:"

// controlRetries is how often the control client repeats a call that failed
// for want of Vault. Revocations, lookups and renewals are idempotent.
const controlRetries = 2

// Config says how Stint reaches Vault. Nothing is read from VAULT_*
// environment variables: what is not here is not used.
type Config struct {
	// Address is Vault's URL, e.g. "https://vault.internal:8200". Required.
	Address string
	// Token is the broker's Vault token. Required. It needs update on the
	// roles' mint paths, sys/leases/renew, sys/leases/revoke,
	// sys/leases/lookup, auth/token/revoke-accessor and
	// auth/token/lookup-accessor; ListIssued also needs list and sudo on
	// sys/leases/lookup/<path> and auth/token/accessors.
	Token string
	// Timeout bounds each Vault call, retries included. Zero means
	// DefaultTimeout.
	Timeout time.Duration
	// Namespace is the Vault Enterprise namespace, if any.
	Namespace string
	// CACert is the path of a PEM file with the CA that signed Vault's TLS
	// certificate, when the system pool does not hold it.
	CACert string
}

// Issuer mints and revokes credentials through HashiCorp Vault. It holds two
// clients: one that mints and never retries (a replayed mint would leave a
// credential that nobody recorded) and one for revocations, lookups, renewals
// and listings, which retries a failed call a few times.
type Issuer struct {
	mint    vaultClient // never retries: minting, and Ping
	control vaultClient // retries: revoke, lookup, renew, list
	closers []func()
}

// Open checks cfg and returns an Issuer. It does not contact Vault: a Vault
// that is down at start-up makes Ping and the lease calls fail, not Open.
func Open(cfg Config) (*Issuer, error) {
	if cfg.Address == "" {
		return nil, errors.New("open vault issuer: address is required")
	}
	u, err := url.Parse(cfg.Address)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("open vault issuer: address %q must be an http:// or https:// URL", cfg.Address)
	}
	if cfg.Token == "" {
		return nil, errors.New("open vault issuer: token is required")
	}
	if cfg.Timeout < 0 {
		return nil, errors.New("open vault issuer: timeout must not be negative")
	} else if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	mint, err := newSDKClient(cfg, 0)
	if err != nil {
		return nil, fmt.Errorf("open vault issuer: %w", err)
	}
	control, err := newSDKClient(cfg, controlRetries)
	if err != nil {
		mint.close()
		return nil, fmt.Errorf("open vault issuer: %w", err)
	}
	return &Issuer{mint: mint, control: control, closers: []func(){mint.close, control.close}}, nil
}

// Close releases the Issuer's idle connections.
func (is *Issuer) Close() error {
	for _, c := range is.closers {
		c()
	}
	return nil
}

// Issue implements leases.Issuer.
//
// Database and generic roles mint a Vault lease: if its TTL is longer than
// the window, Issue shortens it with sys/leases/renew (the PostgreSQL plugin
// then moves VALID UNTIL too), and revokes it if Vault will not. Token roles
// mint an orphan token whose TTL and explicit max TTL are the window; its
// handle is "accessor:<accessor>".
func (is *Issuer) Issue(ctx context.Context, req leases.IssueRequest) (*leases.Grant, error) {
	switch {
	case req.Role == nil:
		return nil, errors.New("issue: no role")
	case req.Window < time.Second:
		return nil, fmt.Errorf("issue %s: window %s is under a second", req.Role.Name, req.Window)
	case req.Role.Kind == broker.KindToken:
		return is.issueToken(ctx, req)
	default:
		return is.issueLease(ctx, req)
	}
}

// mintSecret makes the role's one minting call. It never retries.
func (is *Issuer) mintSecret(ctx context.Context, v broker.RoleVault, params map[string]any) (*api.Secret, error) {
	var (
		s   *api.Secret
		err error
	)
	switch v.Method {
	case "read":
		s, err = is.mint.read(ctx, v.Path)
	case "write":
		s, err = is.mint.write(ctx, v.Path, params)
	default:
		return nil, fmt.Errorf("mint %s: unknown vault method %q", v.Path, v.Method)
	}
	if err != nil {
		return nil, fmt.Errorf("mint %s: %w", v.Path, wrapVaultError(err))
	}
	if s == nil {
		return nil, fmt.Errorf("mint %s: vault returned nothing (no such path?)", v.Path)
	}
	return s, nil
}

// databaseExpirySlack is how far past the Vault lease expiry Vault's database
// plugins set the target's own expiry (PostgreSQL VALID UNTIL), in seconds.
const databaseExpirySlack = 5

func (is *Issuer) issueLease(ctx context.Context, req leases.IssueRequest) (*leases.Grant, error) {
	v := req.Role.Vault
	s, err := is.mintSecret(ctx, v, v.Params)
	if err != nil {
		return nil, err
	}
	if s.LeaseID == "" {
		err := fmt.Errorf("mint %s: vault returned no lease; Stint mints only leased, revocable secrets", v.Path)
		if s.Auth != nil && s.Auth.Accessor != "" {
			err = errors.Join(err, is.Revoke(ctx, AccessorPrefix+s.Auth.Accessor))
		}
		return nil, err
	}

	window := windowSeconds(req.Window)
	if req.Role.Kind == broker.KindDatabase && window > 2*databaseExpirySlack {
		// The database plugin sets VALID UNTIL to the lease expiry plus its
		// slack; aim that much earlier so the target's own expiry also falls
		// inside the window.
		window -= databaseExpirySlack
	}
	ttl, renewable := s.LeaseDuration, s.Renewable
	if ttl > window {
		// database/creds takes no TTL: shorten the lease instead. A smaller
		// increment than the current TTL moves the expiry earlier.
		r, err := is.control.write(ctx, "sys/leases/renew", map[string]any{
			"lease_id":  s.LeaseID,
			"increment": window,
		})
		if err != nil {
			err = fmt.Errorf("role %q: its Vault TTL (%ds) exceeds the %s window and Vault would not shorten lease %s (revoking it): %w",
				req.Role.Name, ttl, req.Window, s.LeaseID, wrapVaultError(err))
			return nil, errors.Join(err, is.Revoke(ctx, s.LeaseID))
		}
		if r != nil {
			ttl, renewable = r.LeaseDuration, r.Renewable
		}
		// Vault rounds to whole seconds; allow one.
		if ttl > window+1 {
			err := fmt.Errorf("role %q: its Vault TTL (%ds) exceeds the %s window and Vault would not shorten lease %s (revoking it)",
				req.Role.Name, ttl, req.Window, s.LeaseID)
			return nil, errors.Join(err, is.Revoke(ctx, s.LeaseID))
		}
	}
	g := &leases.Grant{
		VaultLeaseID:  s.LeaseID,
		LeaseDuration: time.Duration(ttl) * time.Second,
		Renewable:     renewable,
		Data:          s.Data,
	}
	// Database engines (and others with a login, such as RabbitMQ) return
	// the user they created beside its password.
	if u, ok := s.Data["username"].(string); ok {
		g.Username = u
	}
	return g, nil
}

func (is *Issuer) issueToken(ctx context.Context, req leases.IssueRequest) (*leases.Grant, error) {
	v := req.Role.Vault
	if v.Method != "write" {
		return nil, fmt.Errorf("mint %s: token roles mint with method write, not %q", v.Path, v.Method)
	}
	window := windowSeconds(req.Window)
	params := make(map[string]any, len(v.Params)+5)
	for k, val := range v.Params {
		params[k] = val
	}
	meta := map[string]string{}
	switch m := v.Params["meta"].(type) {
	case map[string]string:
		for k, val := range m {
			meta[k] = val
		}
	case map[string]any:
		for k, val := range m {
			meta[k] = fmt.Sprint(val)
		}
	}
	meta["stint_lease_id"] = req.LeaseID
	meta["stint_agent"] = req.Agent
	params["meta"] = meta
	params["ttl"] = fmt.Sprintf("%ds", window)
	params["explicit_max_ttl"] = fmt.Sprintf("%ds", window)
	params["renewable"] = false
	params["display_name"] = "stint-" + prefix(req.LeaseID, 8)

	s, err := is.mintSecret(ctx, v, params)
	if err != nil {
		return nil, err
	}
	if s.Auth == nil || s.Auth.Accessor == "" || s.Auth.ClientToken == "" {
		err := fmt.Errorf("mint %s: vault returned no token", v.Path)
		if s.LeaseID != "" {
			err = errors.Join(err, is.Revoke(ctx, s.LeaseID))
		}
		return nil, err
	}
	handle := AccessorPrefix + s.Auth.Accessor
	if s.Auth.LeaseDuration > window+1 {
		err := fmt.Errorf("role %q: Vault gave its token a TTL of %ds, longer than the %s window; token revoked",
			req.Role.Name, s.Auth.LeaseDuration, req.Window)
		return nil, errors.Join(err, is.Revoke(ctx, handle))
	}
	return &leases.Grant{
		VaultLeaseID:  handle,
		LeaseDuration: time.Duration(s.Auth.LeaseDuration) * time.Second,
		Renewable:     s.Auth.Renewable,
		Data: map[string]any{
			"token":    s.Auth.ClientToken,
			"accessor": s.Auth.Accessor,
			"policies": s.Auth.Policies,
		},
	}, nil
}

// Revoke implements leases.Issuer. handle is a Vault lease id or
// "accessor:<accessor>" for a token. Revoke returns only once Vault no longer
// knows the credential: the lease lookup answers "invalid lease", or the
// accessor lookup "invalid accessor". Unknown handles succeed.
func (is *Issuer) Revoke(ctx context.Context, handle string) error {
	if acc, ok := strings.CutPrefix(handle, AccessorPrefix); ok {
		return is.revokeToken(ctx, acc)
	}
	return is.revokeLease(ctx, handle)
}

func (is *Issuer) revokeLease(ctx context.Context, leaseID string) error {
	if leaseID == "" {
		return errors.New("revoke vault lease: empty lease id")
	}
	// sync: the backend's revocation (for PostgreSQL: terminate sessions,
	// drop the role) runs before Vault answers, and a failure is an error.
	_, err := is.control.write(ctx, "sys/leases/revoke", map[string]any{"lease_id": leaseID, "sync": true})
	if err != nil {
		return fmt.Errorf("revoke vault lease %s: %w", leaseID, wrapVaultError(err))
	}
	_, err = is.control.write(ctx, "sys/leases/lookup", map[string]any{"lease_id": leaseID})
	switch {
	case err == nil:
		return fmt.Errorf("revoke vault lease %s: the lease still exists after revocation", leaseID)
	case vaultSaid(err, 400, "invalid lease"):
		return nil
	default:
		return fmt.Errorf("verify revocation of vault lease %s: %w", leaseID, wrapVaultError(err))
	}
}

func (is *Issuer) revokeToken(ctx context.Context, accessor string) error {
	if accessor == "" {
		return errors.New("revoke vault token: empty accessor")
	}
	// An unknown accessor answers 200 with a warning; an accessor whose token
	// is already gone answers 400 "token not found". Both mean revoked.
	_, err := is.control.write(ctx, "auth/token/revoke-accessor", map[string]any{"accessor": accessor})
	if err != nil && !vaultSaid(err, 400, "token not found") {
		return fmt.Errorf("revoke vault token %s%s: %w", AccessorPrefix, accessor, wrapVaultError(err))
	}
	_, err = is.control.write(ctx, "auth/token/lookup-accessor", map[string]any{"accessor": accessor})
	switch {
	case err == nil:
		return fmt.Errorf("revoke vault token %s%s: the token still exists after revocation", AccessorPrefix, accessor)
	case vaultSaid(err, 400, "invalid accessor"), vaultSaid(err, 403, "bad token"):
		return nil
	default:
		return fmt.Errorf("verify revocation of vault token %s%s: %w", AccessorPrefix, accessor, wrapVaultError(err))
	}
}

// ListIssued implements leases.Issuer. For database and generic roles it
// lists the leases under each role's path (sys/leases/lookup/<path>/, which
// needs list and sudo) and looks each one up. For token roles it lists every
// token accessor (auth/token/accessors, list and sudo) and keeps the tokens
// minted from one of the roles' paths that carry a stint_lease_id in their
// metadata. Credentials revoked while it lists are left out.
func (is *Issuer) ListIssued(ctx context.Context, roles []*broker.Role) ([]leases.Issued, error) {
	var out []leases.Issued
	seen := make(map[string]bool)
	tokenPaths := make(map[string]bool)
	for _, r := range roles {
		path := strings.Trim(r.Vault.Path, "/")
		if r.Kind == broker.KindToken {
			tokenPaths[path] = true
			continue
		}
		if seen[path] {
			continue
		}
		seen[path] = true
		issued, err := is.listLeases(ctx, path)
		if err != nil {
			return nil, err
		}
		out = append(out, issued...)
	}
	if len(tokenPaths) > 0 {
		issued, err := is.listTokens(ctx, tokenPaths)
		if err != nil {
			return nil, err
		}
		out = append(out, issued...)
	}
	return out, nil
}

func (is *Issuer) listLeases(ctx context.Context, path string) ([]leases.Issued, error) {
	s, err := is.control.list(ctx, "sys/leases/lookup/"+path+"/")
	if err != nil {
		return nil, fmt.Errorf("list vault leases under %s: %w", path, wrapVaultError(err))
	}
	var out []leases.Issued
	for _, key := range listKeys(s) {
		if strings.HasSuffix(key, "/") {
			continue // a deeper prefix, not a lease of this role
		}
		id := path + "/" + key
		l, err := is.control.write(ctx, "sys/leases/lookup", map[string]any{"lease_id": id})
		if vaultSaid(err, 400, "invalid lease") {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("look up vault lease %s: %w", id, wrapVaultError(err))
		}
		issuedAt, err := parseTime(l, "issue_time")
		if err != nil {
			return nil, fmt.Errorf("look up vault lease %s: %w", id, err)
		}
		out = append(out, leases.Issued{VaultLeaseID: id, IssuedAt: issuedAt})
	}
	return out, nil
}

func (is *Issuer) listTokens(ctx context.Context, paths map[string]bool) ([]leases.Issued, error) {
	s, err := is.control.list(ctx, "auth/token/accessors")
	if err != nil {
		return nil, fmt.Errorf("list vault token accessors: %w", wrapVaultError(err))
	}
	var out []leases.Issued
	for _, acc := range listKeys(s) {
		t, err := is.control.write(ctx, "auth/token/lookup-accessor", map[string]any{"accessor": acc})
		if vaultSaid(err, 400, "invalid accessor") || vaultSaid(err, 403, "bad token") {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("look up vault token %s%s: %w", AccessorPrefix, acc, wrapVaultError(err))
		} else if t == nil || t.Data == nil {
			continue
		}
		meta, _ := t.Data["meta"].(map[string]any)
		leaseID, _ := meta["stint_lease_id"].(string)
		path, _ := t.Data["path"].(string)
		if leaseID == "" || !paths[strings.Trim(path, "/")] {
			continue
		}
		issuedAt, err := parseTime(t, "creation_time")
		if err != nil {
			return nil, fmt.Errorf("look up vault token %s%s: %w", AccessorPrefix, acc, err)
		}
		out = append(out, leases.Issued{VaultLeaseID: AccessorPrefix + acc, IssuedAt: issuedAt, LeaseID: leaseID})
	}
	return out, nil
}

// Ping implements leases.Issuer. It asks sys/health once, without retries,
// so that it reports Vault's state now; an unreachable, uninitialised or
// sealed Vault is an error wrapping leases.ErrUnavailable.
func (is *Issuer) Ping(ctx context.Context) error {
	h, err := is.mint.health(ctx)
	switch {
	case err != nil:
		return fmt.Errorf("ping vault: %w", &vaultError{err: err, unavailable: !errors.Is(err, context.Canceled)})
	case !h.Initialized:
		return fmt.Errorf("ping vault: %w", &vaultError{err: errors.New("vault is not initialised"), unavailable: true})
	case h.Sealed:
		return fmt.Errorf("ping vault: %w", &vaultError{err: errors.New("vault is sealed"), unavailable: true})
	}
	return nil
}

// windowSeconds is the window in whole seconds, rounded down so that a TTL
// derived from it never outlasts the window.
func windowSeconds(d time.Duration) int { return int(d / time.Second) }

func prefix(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// listKeys returns the "keys" of a LIST answer; nil (404) has none.
func listKeys(s *api.Secret) []string {
	if s == nil || s.Data == nil {
		return nil
	}
	raw, _ := s.Data["keys"].([]any)
	keys := make([]string, 0, len(raw))
	for _, k := range raw {
		if k, ok := k.(string); ok {
			keys = append(keys, k)
		}
	}
	return keys
}

// parseTime reads a time field of a lookup answer: an RFC 3339 string
// (lease issue_time) or Unix seconds (token creation_time).
func parseTime(s *api.Secret, field string) (time.Time, error) {
	if s == nil || s.Data == nil {
		return time.Time{}, fmt.Errorf("vault answered without %s", field)
	}
	switch v := s.Data[field].(type) {
	case string:
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return time.Time{}, fmt.Errorf("parse %s %q: %w", field, v, err)
		}
		return t.UTC(), nil
	case json.Number:
		n, err := v.Int64()
		if err != nil {
			return time.Time{}, fmt.Errorf("parse %s %q: %w", field, v, err)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("vault answered without %s", field)
}
