package broker

import (
	"fmt"
	"log/slog"
)

// Redacted replaces a secret wherever a value holding one is rendered.
const Redacted = "[redacted]"

// RedactString returns Redacted for a non-empty secret and "" for an empty
// one, so that a rendering still tells whether the secret was set.
func RedactString(secret string) string {
	if secret == "" {
		return ""
	}
	return Redacted
}

// tokenRequestFields is TokenRequest without its methods, for Format.
type tokenRequestFields TokenRequest

// redacted returns a copy of r whose secrets (client secret, client
// assertion, subject and actor tokens) are replaced by Redacted.
func (r TokenRequest) redacted() tokenRequestFields {
	r.ClientSecret = RedactString(r.ClientSecret)
	r.ClientAssertion = RedactString(r.ClientAssertion)
	r.SubjectToken = RedactString(r.SubjectToken)
	r.ActorToken = RedactString(r.ActorToken)
	return tokenRequestFields(r)
}

// Format implements fmt.Formatter: every verb renders the request with its
// secrets redacted.
func (r TokenRequest) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), r.redacted())
}

// LogValue implements slog.LogValuer: the request's non-secret fields, and
// whether each secret was sent.
func (r TokenRequest) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("grant_type", r.GrantType),
		slog.String("client_id", r.ClientID),
		slog.String("client_secret", RedactString(r.ClientSecret)),
		slog.Bool("basic_auth", r.BasicAuth),
		slog.String("client_assertion_type", r.ClientAssertionType),
		slog.String("client_assertion", RedactString(r.ClientAssertion)),
		slog.String("form_client_id", r.FormClientID),
		slog.String("scope", r.Scope),
		slog.String("subject_token", RedactString(r.SubjectToken)),
		slog.String("subject_token_type", r.SubjectTokenType),
		slog.String("actor_token", RedactString(r.ActorToken)),
		slog.String("requested_token_type", r.RequestedTokenType),
		slog.Int("peer_certificates", len(r.PeerCertificates)),
		slog.String("source_ip", r.SourceIP),
	)
}

// tokenResponseFields is TokenResponse without its methods, for Format.
type tokenResponseFields TokenResponse

// Format implements fmt.Formatter: every verb renders the response with
// the access token redacted. (encoding/json still renders it: that is the
// token endpoint's answer.)
func (r TokenResponse) Format(f fmt.State, verb rune) {
	r.AccessToken = RedactString(r.AccessToken)
	fmt.Fprintf(f, fmt.FormatString(f, verb), tokenResponseFields(r))
}

// LogValue implements slog.LogValuer without the access token.
func (r TokenResponse) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("access_token", RedactString(r.AccessToken)),
		slog.String("issued_token_type", r.IssuedTokenType),
		slog.String("token_type", r.TokenType),
		slog.Int("expires_in", r.ExpiresIn),
		slog.String("scope", r.Scope),
	)
}
