package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/stint-broker/stint/broker"
)

// Files of the enrolment CA directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca.key"
)

// DefaultTrustDomain names Stint-issued client certificates when no trust
// domain is configured.
const DefaultTrustDomain = "stint.local"

// CA is Stint's enrolment CA: it signs short-lived client certificates for
// agents (stint agents enroll). Each certificate names its agent in a single
// URI SAN, spiffe://<trust domain>/agent/<name> (so it is also a valid SPIFFE
// X.509-SVID), has the clientAuth extended key usage, and is recorded in the
// store by serial; only recorded, unrevoked certificates authenticate.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// TrustDomain is the host of the agent URIs it issues.
	TrustDomain string
}

// AgentURI returns the URI SAN of an agent's Stint-issued certificate.
func AgentURI(trustDomain, agent string) string {
	return (&url.URL{Scheme: "spiffe", Host: trustDomain, Path: "/agent/" + agent}).String()
}

// InitCA creates a CA in dir: an ECDSA P-256 key (ca.key, mode 0600) and a
// self-signed certificate (ca.pem) valid for validity. It refuses to replace
// an existing key.
func InitCA(dir, commonName string, validity time.Duration, now time.Time) (*CA, error) {
	keyPath, certPath := filepath.Join(dir, CAKeyFile), filepath.Join(dir, CACertFile)
	if _, err := os.Stat(keyPath); err == nil {
		return nil, fmt.Errorf("%s already exists: the CA is initialised (delete the directory to start over, which invalidates every issued certificate)", keyPath)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create CA directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"Stint"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("sign CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode CA key: %w", err)
	}
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, fmt.Errorf("write CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// writeNew creates path with mode perm, failing if it exists.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// LoadCA reads the CA that InitCA wrote to dir. It refuses a key file that
// others may read.
func LoadCA(dir string) (*CA, error) {
	keyPath, certPath := filepath.Join(dir, CAKeyFile), filepath.Join(dir, CACertFile)
	fi, err := os.Stat(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w (run stint ca init)", err)
	}
	k, err := readPrivateKeyFile(keyPath, fi)
	if err != nil {
		return nil, fmt.Errorf("load CA key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("load CA key: unsupported key type %T", k)
	}
	certs, err := ReadCertificates(certPath)
	if err != nil {
		return nil, fmt.Errorf("load CA certificate: %w", err)
	}
	if len(certs) != 1 || !certs[0].IsCA {
		return nil, fmt.Errorf("load CA certificate: %s must hold exactly one CA certificate", certPath)
	}
	if !publicKeysEqual(certs[0].PublicKey, signer.Public()) {
		return nil, fmt.Errorf("load CA: %s does not match %s", certPath, keyPath)
	}
	return &CA{Cert: certs[0], Key: signer}, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}

// ReadCertificates reads every PEM certificate in a file.
func ReadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return certs, nil
}

// ParseCSR decodes and checks a PEM certificate signing request: its
// signature must verify and its key must be ECDSA P-256/P-384, Ed25519 or
// RSA of at least 2048 bits. Returns EINVALID naming field csr.
func ParseCSR(data []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, broker.FieldErrorf("csr", "The CSR must be a PEM \"CERTIFICATE REQUEST\" block.")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, broker.FieldErrorf("csr", "The CSR cannot be parsed.")
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, broker.FieldErrorf("csr", "The CSR's signature does not verify.")
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, broker.FieldErrorf("csr", "ECDSA keys must use P-256 or P-384.")
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, broker.FieldErrorf("csr", "RSA keys must have at least 2048 bits.")
		}
	default:
		return nil, broker.FieldErrorf("csr", "Unsupported key type: use ECDSA P-256/P-384, Ed25519 or RSA ≥ 2048.")
	}
	return csr, nil
}

// sign issues a client certificate for the CSR's key naming uri, valid from
// now for ttl (never past the CA's own expiry). Only the key is taken from
// the CSR: its subject and extensions are ignored.
func (ca *CA) sign(csr *x509.CertificateRequest, agent, uri string, ttl time.Duration, now time.Time) (*x509.Certificate, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("agent uri: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(ttl)
	if notAfter.After(ca.Cert.NotAfter) {
		return nil, broker.Errorf(broker.ECONFLICT, "The enrolment CA expires at %s, before the certificate would; create a new CA.", ca.Cert.NotAfter.Format(time.RFC3339))
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: agent, Organization: []string{"Stint agents"}},
		NotBefore:    now.Add(-time.Minute), // tolerate small clock skew on the verifier
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign client certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// randomSerial returns a positive 128-bit random serial.
func randomSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

// serialHex is the stored form of a serial number.
func serialHex(c *x509.Certificate) string { return hex.EncodeToString(c.SerialNumber.Bytes()) }

// fingerprint is the hex SHA-256 of a certificate's DER.
func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
