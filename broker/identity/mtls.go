package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/stint-broker/stint/broker"
)

// TrustBundle is a SPIFFE trust domain's X.509 roots. An X.509-SVID that
// chains to them authenticates the agent whose SPIFFEID is the certificate's
// URI SAN.
type TrustBundle struct {
	TrustDomain string
	Roots       *x509.CertPool

	certs []*x509.Certificate
}

// ClientCAs returns every root a client certificate may chain to: the
// enrolment CA and the SPIFFE bundles. The TLS listener verifies chains
// against it; authentication then verifies again against the one root that
// gives the certificate its meaning.
func (s *Service) ClientCAs() *x509.CertPool {
	pool := x509.NewCertPool()
	if s.CA != nil {
		pool.AddCert(s.CA.Cert)
	}
	for _, b := range s.SPIFFE {
		for _, c := range b.certs {
			pool.AddCert(c)
		}
	}
	return pool
}

// NewTrustBundle builds a bundle for trustDomain from PEM roots.
func NewTrustBundle(trustDomain string, roots []*x509.Certificate) (*TrustBundle, error) {
	if !validTrustDomain(trustDomain) {
		return nil, fmt.Errorf("trust domain %q: use lower-case letters, digits, '.', '-' and '_'", trustDomain)
	}
	b := &TrustBundle{TrustDomain: trustDomain, Roots: x509.NewCertPool()}
	for _, c := range roots {
		b.Roots.AddCert(c)
	}
	b.certs = roots
	return b, nil
}

// validTrustDomain checks a SPIFFE trust domain name (SPIFFE-ID §2.1).
func validTrustDomain(td string) bool {
	if td == "" || len(td) > 255 {
		return false
	}
	for _, r := range td {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
		default:
			return false
		}
	}
	return true
}

// ParseSPIFFEID checks a SPIFFE ID (SPIFFE-ID §2): scheme spiffe, a valid
// trust domain, a non-empty path of non-empty segments of [A-Za-z0-9._-],
// no query, fragment, port or user info. Returns EINVALID naming spiffe_id.
func ParseSPIFFEID(s string) (*url.URL, error) {
	bad := broker.FieldErrorf("spiffe_id", "%q is not a SPIFFE ID such as spiffe://example.org/ns/etl/sa/loader.", s)
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "spiffe" || u.User != nil || u.Port() != "" || u.RawQuery != "" || u.Fragment != "" ||
		u.Opaque != "" || !validTrustDomain(u.Host) || u.Path == "" || u.Path == "/" || strings.HasSuffix(u.Path, "/") || u.RawPath != "" {
		return nil, bad
	}
	for _, seg := range strings.Split(u.Path[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return nil, bad
		}
		for _, r := range seg {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
				return nil, bad
			}
		}
	}
	return u, nil
}

// authenticateCert resolves a verified client certificate chain (leaf
// first) to its agent: a Stint-issued certificate through the store's record
// of its serial, an X.509-SVID through the agent's SPIFFE ID. It returns the
// agent id it blames on failure, when it got that far.
func (s *Service) authenticateCert(ctx context.Context, certs []*x509.Certificate, now time.Time) (*broker.Agent, string, error) {
	leaf := certs[0]
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	verify := func(roots *x509.CertPool) error {
		_, err := leaf.Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		})
		return err
	}
	var lastErr error
	if s.CA != nil {
		roots := x509.NewCertPool()
		roots.AddCert(s.CA.Cert)
		if lastErr = verify(roots); lastErr == nil {
			return s.stintCertAgent(ctx, leaf)
		}
	}
	for _, b := range s.SPIFFE {
		if lastErr = verify(b.Roots); lastErr == nil {
			return s.svidAgent(ctx, b, leaf)
		}
	}
	var inv x509.CertificateInvalidError
	if errors.As(lastErr, &inv) && inv.Reason == x509.Expired {
		return nil, "", broker.Errorf(broker.EUNAUTHORIZED, "The client certificate has expired or is not yet valid.")
	}
	return nil, "", broker.Errorf(broker.EUNAUTHORIZED, "The client certificate is not issued by a trusted CA.")
}

// CheckClientCertificate decides whether the TLS listener completes a
// handshake with a client certificate chain (leaf first) that crypto/tls
// verified: a certificate the enrolment CA signed must be one Stint
// recorded and has not revoked, so that a revoked certificate opens no
// connection at all. X.509-SVIDs pass; their agents are checked per
// request. It returns EUNAUTHORIZED for a refused certificate, and an
// error (which also refuses) when the store cannot answer.
func (s *Service) CheckClientCertificate(ctx context.Context, chain []*x509.Certificate) error {
	if len(chain) == 0 || s.CA == nil {
		return nil
	}
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	roots := x509.NewCertPool()
	roots.AddCert(s.CA.Cert)
	// The handshake verified the chain against every client root; this
	// tells the enrolment CA's certificates from the SVIDs.
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: s.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil
	}
	_, _, err := s.stintCertAgent(ctx, leaf)
	return err
}

// stintCertAgent maps a certificate the enrolment CA signed.
func (s *Service) stintCertAgent(ctx context.Context, leaf *x509.Certificate) (*broker.Agent, string, error) {
	if s.Identity == nil {
		return nil, "", errors.New("identity store is not configured")
	}
	rec, err := s.Identity.FindCertificateBySerial(ctx, serialHex(leaf))
	if broker.ErrorCode(err) == broker.ENOTFOUND {
		return nil, "", broker.Errorf(broker.EUNAUTHORIZED, "The client certificate is unknown to Stint.")
	} else if err != nil {
		return nil, "", fmt.Errorf("find certificate: %w", err)
	}
	if rec.Fingerprint != fingerprint(leaf) || len(leaf.URIs) != 1 || leaf.URIs[0].String() != rec.URI {
		return nil, rec.AgentID, broker.Errorf(broker.EUNAUTHORIZED, "The client certificate is unknown to Stint.")
	}
	if rec.RevokedAt != nil {
		return nil, rec.AgentID, broker.Errorf(broker.EUNAUTHORIZED, "The client certificate has been revoked.")
	}
	a, err := s.Store.FindAgentByID(ctx, rec.AgentID)
	if err != nil {
		return nil, rec.AgentID, fmt.Errorf("find agent: %w", err)
	}
	return a, a.ID, nil
}

// svidAgent maps an X.509-SVID of bundle b (X509-SVID §4: one URI SAN, a
// leaf that is not a CA).
func (s *Service) svidAgent(ctx context.Context, b *TrustBundle, leaf *x509.Certificate) (*broker.Agent, string, error) {
	if len(leaf.URIs) != 1 || leaf.IsCA {
		return nil, "", broker.Errorf(broker.EUNAUTHORIZED, "The client certificate is not an X.509-SVID: it needs exactly one URI SAN.")
	}
	id, err := ParseSPIFFEID(leaf.URIs[0].String())
	if err != nil || id.Host != b.TrustDomain {
		return nil, "", broker.Errorf(broker.EUNAUTHORIZED, "The certificate's SPIFFE ID does not belong to the trust domain that signed it.")
	}
	sid := id.String()
	agents, _, err := s.Store.FindAgents(ctx, broker.AgentFilter{SPIFFEID: &sid, Limit: 1})
	if err != nil {
		return nil, "", fmt.Errorf("find agent by spiffe id: %w", err)
	}
	if len(agents) == 0 {
		return nil, "", broker.Errorf(broker.EUNAUTHORIZED, "No agent is mapped to SPIFFE ID %s.", sid)
	}
	return agents[0], agents[0].ID, nil
}
