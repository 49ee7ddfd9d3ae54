package vault_test

import (
	"testing"

	"github.com/stint-broker/stint/broker/secrettest"
	"github.com/stint-broker/stint/leases/vault"
)

func TestSecretsNeverRendered(t *testing.T) {
	cfg := vault.Config{Address: "https://vault.internal:8200", Token: "hvs.s3cret"}
	secrettest.AssertHidden(t, cfg, "hvs.s3cret")
	secrettest.AssertHidden(t, &cfg, "hvs.s3cret")
	opts := vault.DevOptions{Dir: "/tmp/x", PGDSN: "postgres://admin:pg-s3cret@127.0.0.1:5432/postgres"}
	secrettest.AssertHidden(t, opts, "pg-s3cret")
	dev := &vault.DevServer{Addr: "http://127.0.0.1:8250", RootToken: "hvs.r00t-s3cret", Dir: "/tmp/x"}
	secrettest.AssertHidden(t, dev, "hvs.r00t-s3cret")
}
