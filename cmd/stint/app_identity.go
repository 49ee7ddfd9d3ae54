package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/stint-broker/stint/broker/identity"
	"github.com/stint-broker/stint/web"
)

// openIdentity configures agent authentication beyond API keys (the
// enrolment CA, SPIFFE bundles, OAuth, per-agent limits) and wires it into
// the HTTP server: its authenticator, token endpoint and TLS listener. It
// runs once m.Agents, m.Leases and m.HTTP exist.
func (m *Main) openIdentity() error {
	ic, a := m.Config.Identity, m.Agents
	a.Logger = m.Logger
	a.CertTTL, a.CertMaxTTL = ic.CertTTL, ic.CertMaxTTL
	if ic.CADir != "" {
		if _, err := os.Stat(filepath.Join(ic.CADir, identity.CAKeyFile)); err == nil {
			ca, err := identity.LoadCA(ic.CADir)
			if err != nil {
				return err
			}
			ca.TrustDomain = ic.TrustDomain
			a.CA = ca
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("identity.ca_dir: %w", err)
		}
	}
	for _, b := range ic.SPIFFE {
		roots, err := identity.ReadCertificates(b.BundleFile)
		if err != nil {
			return fmt.Errorf("identity.spiffe %s: %w", b.TrustDomain, err)
		}
		tb, err := identity.NewTrustBundle(b.TrustDomain, roots)
		if err != nil {
			return fmt.Errorf("identity.spiffe: %w", err)
		}
		a.SPIFFE = append(a.SPIFFE, tb)
	}

	if oc := m.Config.OAuth; oc.Enabled {
		key, err := identity.LoadOrCreateSigningKey(oc.SigningKeyFile)
		if err != nil {
			return fmt.Errorf("oauth.signing_key_file: %w", err)
		}
		var trusted []*identity.TrustedIssuer
		for _, t := range oc.TrustedIssuers {
			aud := t.Audience
			if aud == "" {
				aud = oc.Issuer
			}
			var ti *identity.TrustedIssuer
			if t.JWKSFile != "" {
				ti, err = identity.NewTrustedIssuerFile(t.Issuer, aud, t.UserClaim, t.JWKSFile)
			} else {
				ti, err = identity.NewTrustedIssuerURL(t.Issuer, aud, t.UserClaim, t.JWKSURL)
			}
			if err != nil {
				return fmt.Errorf("oauth.trusted_issuers: %w", err)
			}
			trusted = append(trusted, ti)
		}
		if a.OAuth, err = identity.NewOAuth(oc.Issuer, key, oc.TokenTTL, trusted); err != nil {
			return err
		}
		for _, d := range oc.Delegations {
			a.OAuth.Delegations = append(a.OAuth.Delegations, d.delegation())
		}
		m.HTTP.OAuth = a
	}

	lim := m.Config.Limits
	a.Limits = identity.NewRateLimiter(lim.RequestsPerSecond, lim.Burst)
	if m.Config.Store.Driver == driverPostgres {
		// Several replicas may share this store: the buckets live in it,
		// so an agent gets one rate however many replicas it talks to.
		// With SQLite, one process, they stay in memory (exact, and no
		// write per request).
		a.Limits.Store = m.DB
	}
	m.Leases.MaxLiveLeases = lim.MaxLiveLeases
	m.HTTP.Auth = a

	if tc := m.Config.TLS; tc.Enabled() {
		m.HTTP.TLS = &web.TLSConfig{CertFile: tc.CertFile, KeyFile: tc.KeyFile, ClientCerts: tc.ClientCerts, ClientCAs: a.ClientCAs(),
			CheckClientCert: a.CheckClientCertificate}
		if tc.ClientCerts != web.ClientCertsOff && a.CA == nil && len(a.SPIFFE) == 0 {
			m.Logger.Warn("tls.client_certs is on but there is no enrolment CA (stint ca init) and no identity.spiffe bundle: every client certificate will be refused")
		}
	}
	return nil
}
