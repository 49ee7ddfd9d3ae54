package identity

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/stint-broker/stint/broker"
)

// ClientSecretPrefix starts every OAuth client secret Stint generates.
// Secrets are 256 random bits, so a SHA-256 hash is a safe way to store them
// (a slow password hash protects guessable secrets; these are not).
const ClientSecretPrefix = "stint_cs_"

// SetAuthMethods replaces the methods the agent may authenticate with.
// Returns EINVALID (field auth_methods), ENOTFOUND, or EFORBIDDEN for
// non-admins.
func (s *Service) SetAuthMethods(ctx context.Context, agentID string, methods []string) (*broker.Agent, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	if err := broker.ValidateAuthMethods(methods); err != nil {
		return nil, err
	}
	return s.Store.UpdateAgent(ctx, agentID, broker.AgentUpdate{AuthMethods: methods})
}

// SetSPIFFEID maps a SPIFFE ID to the agent ("" removes the mapping). The ID's
// trust domain must have a configured bundle. Returns EINVALID (field
// spiffe_id), ECONFLICT if another agent has the ID, or ENOTFOUND.
func (s *Service) SetSPIFFEID(ctx context.Context, agentID, id string) (*broker.Agent, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	if id != "" {
		u, err := ParseSPIFFEID(id)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(s.SPIFFE, func(b *TrustBundle) bool { return b.TrustDomain == u.Host }) {
			return nil, broker.FieldErrorf("spiffe_id", "No trust bundle is configured for trust domain %q (identity.spiffe).", u.Host)
		}
		id = u.String()
	}
	a, err := s.Store.UpdateAgent(ctx, agentID, broker.AgentUpdate{SPIFFEID: &id})
	if broker.ErrorCode(err) == broker.ECONFLICT {
		return nil, broker.FieldErrorf("spiffe_id", "Another agent already has SPIFFE ID %s.", id)
	}
	return a, err
}

// NewClientSecret generates the agent's OAuth client secret, replacing any
// previous one, and returns it; only its hash is kept. The agent must allow
// client_secret. Returns ENOTFOUND or ECONFLICT.
func (s *Service) NewClientSecret(ctx context.Context, agentID string) (string, error) {
	if err := requireAdmin(ctx); err != nil {
		return "", err
	}
	a, err := s.Store.FindAgentByID(ctx, agentID)
	if err != nil {
		return "", err
	}
	if err := usable(a, broker.AuthClientSecret); err != nil {
		return "", err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate client secret: %w", err)
	}
	secret := ClientSecretPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	hash := hashKey(secret)
	if _, err := s.Store.UpdateAgent(ctx, a.ID, broker.AgentUpdate{ClientSecretHash: &hash}); err != nil {
		return "", err
	}
	return secret, nil
}

// SetPublicJWKS registers the agent's public key(s) for private_key_jwt (see
// ParsePublicJWKS). The agent must allow private_key_jwt. Returns EINVALID
// (field jwk), ENOTFOUND or ECONFLICT.
func (s *Service) SetPublicJWKS(ctx context.Context, agentID string, jwk []byte) (*broker.Agent, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	a, err := s.Store.FindAgentByID(ctx, agentID)
	if err != nil {
		return nil, err
	}
	if err := usable(a, broker.AuthPrivateKeyJWT); err != nil {
		return nil, err
	}
	set, err := ParsePublicJWKS(jwk)
	if err != nil {
		return nil, err
	}
	return s.Store.UpdateAgent(ctx, a.ID, broker.AgentUpdate{PublicJWKS: &set})
}

// usable refuses credentials for a disabled agent or one that may not use
// method.
func usable(a *broker.Agent, method string) error {
	if a.State == broker.AgentDisabled {
		return broker.Errorf(broker.ECONFLICT, "Agent %s is disabled for good; register a new agent instead.", a.Name)
	}
	if !a.Allows(method) {
		return broker.Errorf(broker.ECONFLICT, "Agent %s may not use %s; allow it first (stint agents set-auth %s --methods %s).",
			a.Name, method, a.Name, strings.Join(append(slices.Clone(a.AuthMethods), method), ","))
	}
	return nil
}

// RevokeKeys revokes every API key of the agent at once and returns how
// many. Returns ENOTFOUND.
func (s *Service) RevokeKeys(ctx context.Context, agentID string) (int, error) {
	if err := requireAdmin(ctx); err != nil {
		return 0, err
	}
	if _, err := s.Store.FindAgentByID(ctx, agentID); err != nil {
		return 0, err
	}
	return s.Store.RevokeAPIKeys(ctx, agentID, s.Now().UTC())
}

// Enroll signs a client certificate for the key in the agent's PEM CSR,
// valid for ttl (zero means CertTTL; at most CertMaxTTL), records it and
// returns it with its PEM. The agent must be active and allow mtls. Returns
// EINVALID (fields csr, ttl), ENOTFOUND, ECONFLICT, or EUNAVAILABLE if no
// CA is configured.
func (s *Service) Enroll(ctx context.Context, agentID string, csrPEM []byte, ttl time.Duration) (*broker.Certificate, []byte, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, nil, err
	}
	if s.CA == nil || s.Identity == nil {
		return nil, nil, broker.Errorf(broker.EUNAVAILABLE, "No enrolment CA is configured: run stint ca init and set identity.ca_dir.")
	}
	switch {
	case ttl == 0:
		ttl = s.CertTTL
	case ttl < time.Minute:
		return nil, nil, broker.FieldErrorf("ttl", "Certificate TTL must be at least 1m.")
	case ttl > s.CertMaxTTL:
		return nil, nil, broker.FieldErrorf("ttl", "Certificate TTL %s exceeds the maximum of %s.", ttl, s.CertMaxTTL)
	}
	a, err := s.Store.FindAgentByID(ctx, agentID)
	if err != nil {
		return nil, nil, err
	}
	if a.State != broker.AgentActive {
		return nil, nil, broker.Errorf(broker.ECONFLICT, "Agent %s is %s; only active agents are enrolled.", a.Name, a.State)
	}
	if err := usable(a, broker.AuthMTLS); err != nil {
		return nil, nil, err
	}
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, nil, err
	}
	now := s.Now().UTC()
	uri := AgentURI(s.trustDomain(), a.Name)
	cert, err := s.CA.sign(csr, a.Name, uri, ttl, now)
	if err != nil {
		return nil, nil, err
	}
	rec := &broker.Certificate{
		Serial: serialHex(cert), AgentID: a.ID, Fingerprint: fingerprint(cert), URI: uri,
		NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, CreatedAt: now,
	}
	if err := s.Identity.CreateCertificate(ctx, rec); err != nil {
		return nil, nil, fmt.Errorf("record certificate: %w", err)
	}
	return rec, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), nil
}

func (s *Service) trustDomain() string {
	if s.CA != nil && s.CA.TrustDomain != "" {
		return s.CA.TrustDomain
	}
	return DefaultTrustDomain
}

// RevokeCertificates revokes the agent's Stint-issued certificates (only
// the one with serial, if given) and returns how many. Returns ENOTFOUND,
// also for a serial the agent does not hold unrevoked.
func (s *Service) RevokeCertificates(ctx context.Context, agentID, serial, reason string) (int, error) {
	if err := requireAdmin(ctx); err != nil {
		return 0, err
	}
	if s.Identity == nil {
		return 0, broker.Errorf(broker.EUNAVAILABLE, "The store keeps no certificates.")
	}
	if _, err := s.Store.FindAgentByID(ctx, agentID); err != nil {
		return 0, err
	}
	if serial != "" {
		// Accept the forms tools print: colons, 0x, upper case, no
		// leading zero.
		n, ok := new(big.Int).SetString(strings.TrimPrefix(strings.ToLower(strings.ReplaceAll(serial, ":", "")), "0x"), 16)
		if !ok || n.Sign() <= 0 {
			return 0, broker.FieldErrorf("serial", "Serial %q is not a hexadecimal number.", serial)
		}
		serial = hex.EncodeToString(n.Bytes())
	}
	n, err := s.Identity.RevokeCertificates(ctx, agentID, serial, s.Now().UTC(), reason)
	if err != nil {
		return 0, err
	}
	if serial != "" && n == 0 {
		return 0, broker.FieldErrorf("serial", "The agent holds no unrevoked certificate with serial %s.", serial)
	}
	return n, nil
}

// FindCertificates lists the agent's Stint-issued certificates, newest first.
func (s *Service) FindCertificates(ctx context.Context, agentID string) ([]*broker.Certificate, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	if s.Identity == nil {
		return []*broker.Certificate{}, nil
	}
	return s.Identity.FindCertificates(ctx, agentID)
}
