package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"text/template"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/stint-broker/stint/leases/vault"
)

// ensureDevServerCert makes sure certFile and keyFile hold a server
// certificate for host (and localhost, 127.0.0.1 and ::1) signed by the
// development TLS CA in caDir, which is created on first use. A missing,
// expiring or foreign certificate is replaced; the CA is kept, so clients
// that trust caDir/ca.pem keep working.
func ensureDevServerCert(caDir, certFile, keyFile, host string, now time.Time) error {
	if err := os.MkdirAll(caDir, 0o700); err != nil {
		return err
	}
	caCert, caKey, err := loadOrCreateDevTLSCA(caDir, now)
	if err != nil {
		return err
	}
	if b, err := os.ReadFile(certFile); err == nil {
		if blk, _ := pem.Decode(b); blk != nil {
			if c, err := x509.ParseCertificate(blk.Bytes); err == nil &&
				c.CheckSignatureFrom(caCert) == nil && now.Add(24*time.Hour).Before(c.NotAfter) && c.VerifyHostname(host) == nil {
				if _, err := os.Stat(keyFile); err == nil {
					return nil
				}
			}
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "Stint development server"},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if ip := net.ParseIP(host); ip != nil && !ip.IsLoopback() && !ip.IsUnspecified() {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	} else if ip == nil && host != "" && host != "localhost" {
		tmpl.DNSNames = append(tmpl.DNSNames, host)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	if err := writeKeyFile(keyFile, key); err != nil {
		return err
	}
	return os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// loadOrCreateDevTLSCA returns the development TLS CA of caDir, creating it
// (valid five years) if it does not exist.
func loadOrCreateDevTLSCA(caDir string, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	certPath, keyPath := filepath.Join(caDir, devTLSCACertFile), filepath.Join(caDir, devTLSCAKeyFile)
	if b, err := os.ReadFile(certPath); err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, nil, fmt.Errorf("%s holds no certificate", certPath)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", certPath, err)
		}
		key, err := readECKey(keyPath)
		if err != nil {
			return nil, nil, err
		}
		return c, key, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "Stint development TLS CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(5 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	if err := writeKeyFile(keyPath, key); err != nil {
		return nil, nil, err
	}
	return c, key, os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func randomSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// writeKeyFile writes key as PKCS #8 PEM, mode 0600.
func writeKeyFile(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.Chmod(path, 0o600)
}

// readECKey reads a PKCS #8 (or SEC 1) PEM ECDSA key.
func readECKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s holds no PEM key", path)
	}
	if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s is not an ECDSA key", path)
	}
	return ek, nil
}

// loadOrCreateECKey reads the ECDSA key at path, or creates a P-256 one
// there (mode 0600).
func loadOrCreateECKey(path string) (*ecdsa.PrivateKey, error) {
	k, err := readECKey(path)
	if !errors.Is(err, os.ErrNotExist) {
		return k, err
	}
	if k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	return k, writeKeyFile(path, k)
}

// jwkKeyID is the RFC 7638 thumbprint of key's public half, base64url.
func jwkKeyID(key *ecdsa.PrivateKey) (string, error) {
	tp, err := (&jose.JSONWebKey{Key: &key.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// publicJWKS is a JWK Set holding key's public half, for SetPublicJWKS.
func publicJWKS(key *ecdsa.PrivateKey) ([]byte, error) {
	kid, err := jwkKeyID(key)
	if err != nil {
		return nil, err
	}
	return json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"}}})
}

// sameJWKS reports whether the registered key set stored and the set want
// hold the same key ids.
func sameJWKS(stored string, want []byte) bool {
	var a, b jose.JSONWebKeySet
	if json.Unmarshal([]byte(stored), &a) != nil || json.Unmarshal(want, &b) != nil || len(a.Keys) != len(b.Keys) {
		return false
	}
	for i := range a.Keys {
		if a.Keys[i].KeyID != b.Keys[i].KeyID {
			return false
		}
	}
	return true
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// devBanner is what `stint dev` prints once it serves. It follows the
// configuration (kept across restarts and editable), so every address and
// step it shows is one that works with it.
var devBanner = template.Must(template.New("banner").Parse(`
Stint is running on {{.Base}} (SQLite store {{.Cfg.Store.Path}}, Vault {{.VaultAddr}}).
Configuration: {{.CfgPath}}   State: {{.Dir}} (make clean removes it)

Agent "{{.Agent}}" is registered. Its API key {{if .KeyReused}}is the one printed last time{{else}}is new{{end}} (expires {{.KeyExpires}});
Stint stores only its hash, so for this demo the key is kept in clear in {{.Dir}}/{{.KeyFile}}
(mode 0600) and reused on restart:

  export STINT_ADDR={{.Base}}{{if .TLS}} STINT_CACERT={{.CACert}}{{end}}
  export STINT_KEY=$(cat {{.Dir}}/{{.KeyFile}})

Request a 5-minute PostgreSQL credential:

  curl -s{{.CurlCA}} -X POST $STINT_ADDR/v1/leases -H "Authorization: Bearer $STINT_KEY" \
    -H 'Content-Type: application/json' \
    -d '{"role":"db-readonly","ttl":"5m","task":"nightly report","justification":"read sales tables"}'

or with the CLI:

  bin/stint leases request --role db-readonly --ttl 5m --task "nightly report"

Log in with the username and password it returns:

  PGPASSWORD=<password> psql -h 127.0.0.1 -U <username> postgres -c 'select current_user'

Other commands: bin/stint leases list | show ID | history ID | extend ID | release ID | roles
{{if .Extensions}}
Extensions: once half of a db-readonly window has passed, add to it (twice at most, 2h in all):

  bin/stint leases extend ID --ttl 5m     # the lease shows its new expires_at and ttl
{{end}}
The vault-token role needs one human approval (policy in {{.PolicyDir}};
approvers {{.Approver}} and {{.SecondApprover}}):

  bin/stint leases request --role vault-token --ttl 10m --task "read the agent secret"   # 202 pending
  bin/stint -c {{.CfgPath}} approvals list --as {{.Approver}}                  # each lease ID and its digest
  bin/stint -c {{.CfgPath}} approvals approve ID --digest DIGEST --as {{.Approver}}
  bin/stint leases activate ID                                    # the Vault token, once

The token's Vault policy ({{.VaultPolicy}}) reads every secret under secret/agents/ (KV v2 path
secret/data/agents/*, such as {{.AgentSecret}}), not only one, and nothing outside it:

  curl -s -H "X-Vault-Token: <token>" {{.VaultAddr}}/v1/{{.AgentSecret}}      # 200
  curl -s -H "X-Vault-Token: <token>" {{.VaultAddr}}/v1/{{.AdminSecret}}   # 403
{{if .TLS}}
mTLS: enrol a client certificate for {{.Agent}} from the enrolment CA ({{.Cfg.Identity.CADir}}):

  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN={{.Agent}} \
    -keyout {{.Dir}}/{{.Agent}}.key -out {{.Dir}}/{{.Agent}}.csr
  bin/stint -c {{.CfgPath}} agents enroll {{.Agent}} --csr {{.Dir}}/{{.Agent}}.csr --out {{.Dir}}/{{.Agent}}.pem
  curl -s{{.CurlCA}} --cert {{.Dir}}/{{.Agent}}.pem --key {{.Dir}}/{{.Agent}}.key $STINT_ADDR/v1/whoami   # "auth_method":"mtls"
{{end}}{{if .OAuth}}
OAuth (issuer {{.Cfg.OAuth.Issuer}}); client_id {{.Agent}}, its secret in {{.Dir}}/{{.SecretFile}} (0600, clear for the demo):

  curl -s{{.CurlCA}} -u {{.Agent}}:$(cat {{.Dir}}/{{.SecretFile}}) -d grant_type=client_credentials {{.Cfg.OAuth.Issuer}}/oauth/token   # client_secret_basic
  bin/stint token --client-id {{.Agent}} --private-key {{.Dir}}/{{.JWTKeyFile}}                      # private_key_jwt: prints an access token
  STINT_KEY=$(bin/stint token --client-id {{.Agent}} --private-key {{.Dir}}/{{.JWTKeyFile}}) bin/stint leases request --role db-readonly --task "via OAuth"
{{end}}{{if .Metrics}}
Metrics: curl -s http://{{.Cfg.Metrics.Listen}}/metrics | grep '^stint_leases'
{{end}}{{if .Console}}
Console: {{.Base}}/console — user {{.ConsoleUser}}, password in {{.Dir}}/{{.ConsolePassFile}} (0600){{if .TLS}}; the browser will warn
about the development CA ({{.CACert}}) unless you trust it{{end}}.
{{end}}
Every lease event is in the tamper-evident audit chain; check it with:

  bin/stint -c {{.CfgPath}} audit verify

Admin token (for revoke), in {{.Dir}}/{{.AdminTokenFile}}:
  curl -s{{.CurlCA}} -X POST $STINT_ADDR/v1/leases/ID/revoke -H "Authorization: Bearer $(cat {{.Dir}}/{{.AdminTokenFile}})" \
    -H 'Content-Type: application/json' -d '{"reason":"test"}'

Vault root token (development only): {{.VaultRootToken}}
Stop with Ctrl-C.
`))

// printDevInstructions prints the banner for cfg and st.
func printDevInstructions(out io.Writer, cfg Config, dir string, st *devState) error {
	scheme, curlCA, caCert := "http", "", ""
	if cfg.TLS.Enabled() {
		scheme = "https"
		caCert = filepath.Join(filepath.Dir(cfg.TLS.CertFile), devTLSCACertFile)
		curlCA = " --cacert " + caCert
	}
	extensions := false
	for _, r := range cfg.Roles {
		if r.Name == "db-readonly" && r.MaxExtensions > 0 {
			extensions = true
		}
	}
	return devBanner.Execute(out, map[string]any{
		"Base": scheme + "://" + cfg.Listen, "Cfg": cfg, "CfgPath": filepath.Join(dir, devConfigFile), "Dir": dir,
		"TLS": cfg.TLS.Enabled(), "CACert": caCert, "CurlCA": curlCA,
		"OAuth": cfg.OAuth.Enabled, "Metrics": cfg.Metrics.Listen != "", "Console": cfg.Console.Enabled && st.ConsolePassword != "",
		"Extensions": extensions,
		"Agent":      devAgent, "KeyReused": st.KeyReused, "KeyExpires": st.KeyExpires.Format(time.RFC3339),
		"KeyFile": devAgentKeyFile, "SecretFile": devClientSecretFile, "JWTKeyFile": devJWTKeyFile,
		"ConsoleUser": devConsoleUser, "ConsolePassFile": devConsolePassFile, "AdminTokenFile": devAdminTokenFile,
		"PolicyDir": filepath.Join(dir, "policies"), "Approver": devApprover, "SecondApprover": devSecondApprover,
		"VaultAddr": st.VaultAddr, "VaultRootToken": st.VaultRootToken,
		"VaultPolicy": vault.DevPolicy, "AgentSecret": vault.DevAgentSecret, "AdminSecret": vault.DevAdminSecret,
	})
}
