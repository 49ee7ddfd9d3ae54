package broker_test

import (
	"strings"
	"testing"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/secrettest"
)

func TestTokenRequestNeverRendered(t *testing.T) {
	req := broker.TokenRequest{
		GrantType: "client_credentials", ClientID: "etl-bot", ClientSecret: "cs-s3cret",
		ClientAssertionType: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", ClientAssertion: "eyJassertion.s3cret",
		SubjectToken: "eyJsubject.s3cret", ActorToken: "eyJactor.s3cret", SourceIP: "10.0.0.7",
	}
	secrets := []string{"cs-s3cret", "eyJassertion.s3cret", "eyJsubject.s3cret", "eyJactor.s3cret"}
	secrettest.AssertHidden(t, req, secrets...)
	secrettest.AssertHidden(t, &req, secrets...)
	// What is not secret still shows, so that a log line stays useful.
	if got := secrettest.Renderings(req)["slog json"]; !contains(got, "etl-bot", "client_credentials", "10.0.0.7") {
		t.Errorf("slog json drops the request's public fields: %s", got)
	}
}

func TestTokenResponseNeverRendered(t *testing.T) {
	resp := broker.TokenResponse{AccessToken: "eyJaccess.s3cret", TokenType: "Bearer", ExpiresIn: 300}
	secrettest.AssertHidden(t, resp, "eyJaccess.s3cret")
	secrettest.AssertHidden(t, &resp, "eyJaccess.s3cret")
}

func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
