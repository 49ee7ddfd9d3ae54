package web_test

import (
	"testing"

	"github.com/stint-broker/stint/broker/secrettest"
	"github.com/stint-broker/stint/web"
)

func TestOIDCNeverRendered(t *testing.T) {
	o := &web.OIDC{Issuer: "https://idp.example.com", ClientID: "stint", ClientSecret: "oidc-s3cret"}
	secrettest.AssertHidden(t, o, "oidc-s3cret")
}
