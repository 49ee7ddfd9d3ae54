package identity

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

// readPrivateKeyFile reads a PEM "PRIVATE KEY" (PKCS #8) file that only its
// owner may read, as Stint's CA and token-signing keys are kept. fi is the
// file's stat, already taken by the caller.
func readPrivateKeyFile(path string, fi os.FileInfo) (any, error) {
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by others (mode %o); chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s holds no PKCS #8 private key", path)
	}
	return x509.ParsePKCS8PrivateKey(block.Bytes)
}
