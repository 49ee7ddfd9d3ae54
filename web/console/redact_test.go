package console_test

import (
	"testing"

	"github.com/stint-broker/stint/broker/secrettest"
	"github.com/stint-broker/stint/web/console"
)

func TestOIDCNeverRendered(t *testing.T) {
	o := &console.OIDC{Issuer: "https://idp.example.com", ClientID: "stint", ClientSecret: "oidc-s3cret"}
	secrettest.AssertHidden(t, o, "oidc-s3cret")
}
