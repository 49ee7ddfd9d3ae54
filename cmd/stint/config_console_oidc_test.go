package main

import (
	"strings"
	"testing"
)

func TestOIDCConfig(t *testing.T) {
	t.Setenv("STINT_TEST_OIDC_SECRET", "s3cret")
	const sso = `console:
  oidc:
    issuer: https://id.example.com
    client_id: stint
    client_secret_env: STINT_TEST_OIDC_SECRET
    redirect_url: https://stint.example.com/console/login/oidc/callback
`
	cfg, err := ParseConfig("stint.yaml", []byte(goodConfig+sso))
	if err != nil {
		t.Fatal(err)
	}
	if o := cfg.Console.OIDC; o == nil || o.ClientID != "stint" || o.Issuer != "https://id.example.com" {
		t.Fatalf("console.oidc = %+v", o)
	}
	for _, tc := range []struct{ name, from, to, want string }{
		{"HTTPIssuer", "https://id.example.com", "http://id.example.com", "console.oidc.issuer must be the provider's https URL"},
		{"NoClientID", "client_id: stint", "client_id: ''", "console.oidc.client_id is required"},
		{"SecretUnset", "STINT_TEST_OIDC_SECRET", "STINT_TEST_OIDC_UNSET", "environment variable STINT_TEST_OIDC_UNSET is not set"},
		{"WrongRedirect", "/console/login/oidc/callback", "/callback", "console.oidc.redirect_url must be this console's callback"},
		{"NoEmailScope", "    redirect_url:", "    scopes: [openid]\n    redirect_url:", "must include openid and email"},
		{"UnknownKey", "client_id: stint", "client_id: stint\n    client_secret: hunter2", `unknown key "client_secret"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("stint.yaml", []byte(goodConfig+strings.Replace(sso, tc.from, tc.to, 1)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want %q", err, tc.want)
			}
		})
	}
	t.Run("LocalhostHTTPIssuer", func(t *testing.T) {
		if _, err := ParseConfig("stint.yaml", []byte(goodConfig+strings.Replace(sso, "https://id.example.com", "http://127.0.0.1:5556", 1))); err != nil {
			t.Fatal(err)
		}
	})
}
