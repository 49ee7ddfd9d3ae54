package web

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"time"
)

// Client certificate modes of the TLS listener.
const (
	// ClientCertsOff asks for no client certificate.
	ClientCertsOff = "off"
	// ClientCertsOptional verifies a client certificate when one is sent:
	// agents may use mutual TLS, bearer credentials, or both.
	ClientCertsOptional = "optional"
	// ClientCertsRequired refuses connections without a verified client
	// certificate (the probes included).
	ClientCertsRequired = "required"
)

// TLSConfig makes Open serve HTTPS, TLS 1.3 only.
type TLSConfig struct {
	// CertFile and KeyFile are the server's PEM certificate chain and key.
	CertFile string
	KeyFile  string
	// ClientCerts is ClientCertsOff, ClientCertsOptional or
	// ClientCertsRequired.
	ClientCerts string
	// ClientCAs are the roots a client certificate must chain to: the
	// enrolment CA and the SPIFFE trust bundles. The handshake refuses
	// certificates that do not (wrong CA, expired, not for client auth);
	// the Authenticator then maps a verified chain to its agent.
	ClientCAs *x509.CertPool
	// CheckClientCert, if set, runs on every handshake that presented a
	// verified client certificate, resumed sessions included, and refuses
	// the connection when it returns an error: Stint's store says whether
	// the certificate is revoked.
	CheckClientCert func(ctx context.Context, chain []*x509.Certificate) error
}

// checkClientCertTimeout bounds the store lookup of one handshake.
const checkClientCertTimeout = 5 * time.Second

// tlsConfig builds the listener's crypto/tls configuration.
func (c *TLSConfig) tlsConfig() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load tls certificate: %w", err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
	}
	switch c.ClientCerts {
	case ClientCertsOff, "":
		cfg.ClientAuth = tls.NoClientCert
	case ClientCertsOptional, ClientCertsRequired:
		if c.ClientCAs == nil {
			return nil, fmt.Errorf("tls: client certificates are %s but no client CA is configured", c.ClientCerts)
		}
		cfg.ClientCAs = c.ClientCAs
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if c.ClientCerts == ClientCertsRequired {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
		if check := c.CheckClientCert; check != nil {
			// VerifyConnection, unlike VerifyPeerCertificate, also runs
			// when a session is resumed, so a revoked certificate cannot
			// come back through a session ticket issued before.
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if len(cs.VerifiedChains) == 0 {
					return nil
				}
				ctx, cancel := context.WithTimeout(context.Background(), checkClientCertTimeout)
				defer cancel()
				if err := check(ctx, cs.VerifiedChains[0]); err != nil {
					return fmt.Errorf("client certificate refused: %w", err)
				}
				return nil
			}
		}
	default:
		return nil, fmt.Errorf("tls: client certificates must be off, optional or required, not %q", c.ClientCerts)
	}
	return cfg, nil
}

// peerCertificates returns the request's client certificate chain, leaf
// first, if the TLS handshake verified it; nil otherwise.
func peerCertificates(r *http.Request) []*x509.Certificate {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.PeerCertificates) == 0 {
		return nil
	}
	return r.TLS.PeerCertificates
}
