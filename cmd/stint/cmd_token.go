package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spf13/cobra"

	"github.com/stint-broker/stint/broker"
)

// clientAssertionType is the client_assertion_type of RFC 7523 §2.2.
const clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

func newTokenCommand() *cobra.Command {
	var addr, caFile, clientID, secretFile, keyFile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "token --client-id NAME (--client-secret-file FILE | --private-key FILE)",
		Short: "Get an OAuth access token for an agent from Stint's token endpoint",
		Long: `Ask Stint's OAuth token endpoint (oauth.enabled) for an access token with the
client_credentials grant, as the agent named by --client-id, and print the
token (use it as the bearer token of the API: STINT_KEY=$(stint token …)).

--client-secret-file authenticates with client_secret_basic (the secret from
stint agents client-secret); --private-key with private_key_jwt: a client
assertion (RFC 7523) signed ES256 with the agent's PEM ECDSA P-256 key, whose
public half is registered with stint agents set-jwk. The assertion names the
token endpoint that the server's metadata announces as its audience and lives
one minute.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (secretFile == "") == (keyFile == "") {
				return fmt.Errorf("give exactly one of --client-secret-file and --private-key")
			}
			hc, base, err := newHTTPClient(addr, caFile)
			if err != nil {
				return err
			}
			endpoint, err := tokenEndpoint(cmd, hc, base)
			if err != nil {
				return err
			}
			form := url.Values{"grant_type": {"client_credentials"}}
			req, err := http.NewRequestWithContext(cmd.Context(), http.MethodPost, endpoint, nil)
			if err != nil {
				return err
			}
			if secretFile != "" {
				secret, err := readSecretFile(secretFile)
				if err != nil || secret == "" {
					return fmt.Errorf("read --client-secret-file %s: %v", secretFile, orEmpty(err))
				}
				req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
			} else {
				assertion, err := signClientAssertion(keyFile, clientID, endpoint, time.Now())
				if err != nil {
					return err
				}
				form.Set("client_assertion_type", clientAssertionType)
				form.Set("client_assertion", assertion)
				form.Set("client_id", clientID)
			}
			req.Body, req.ContentLength = newStringBody(form.Encode())
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Accept", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				return fmt.Errorf("reach %s: %w", endpoint, err)
			}
			defer resp.Body.Close()
			var body struct {
				AccessToken      string `json:"access_token"`
				TokenType        string `json:"token_type"`
				ExpiresIn        int    `json:"expires_in"`
				Error            string `json:"error"`
				ErrorDescription string `json:"error_description"`
			}
			raw, err := readAllLimited(resp.Body)
			if err != nil {
				return err
			}
			if err := json.Unmarshal(raw, &body); err != nil || resp.StatusCode != http.StatusOK || body.AccessToken == "" {
				if body.ErrorDescription != "" || body.Error != "" {
					return broker.Errorf(broker.EUNAUTHORIZED, "Token endpoint answered %s: %s %s", resp.Status, body.Error, body.ErrorDescription)
				}
				return fmt.Errorf("token endpoint answered %s: %s", resp.Status, strings.TrimSpace(string(raw)))
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), raw)
			}
			fmt.Fprintln(cmd.OutOrStdout(), body.AccessToken)
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", envOr("STINT_ADDR", "http://127.0.0.1:7070"), "Stint server address (env STINT_ADDR)")
	cmd.Flags().StringVar(&caFile, "cacert", envOr("STINT_CACERT", ""), "PEM CA certificate(s) to verify an https server with (env STINT_CACERT)")
	cmd.Flags().StringVar(&clientID, "client-id", "", "the agent's name (required)")
	cmd.Flags().StringVar(&secretFile, "client-secret-file", "", "file holding the agent's client secret (client_secret_basic)")
	cmd.Flags().StringVar(&keyFile, "private-key", "", "the agent's PEM ECDSA P-256 private key (private_key_jwt)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the whole token response instead of the access token alone")
	cmd.MarkFlagRequired("client-id")
	return cmd
}

func orEmpty(err error) string {
	if err == nil {
		return "the file is empty"
	}
	return err.Error()
}

// tokenEndpoint reads the token endpoint from the server's authorization
// server metadata (RFC 8414).
func tokenEndpoint(cmd *cobra.Command, hc *http.Client, base string) (string, error) {
	req, err := http.NewRequestWithContext(cmd.Context(), http.MethodGet, base+"/.well-known/oauth-authorization-server", nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("reach stint at %s: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s answers %s for its OAuth metadata: is oauth.enabled set?", base, resp.Status)
	}
	var md struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	raw, err := readAllLimited(resp.Body)
	if err != nil {
		return "", err
	}
	if err := json.Unmarshal(raw, &md); err != nil || md.TokenEndpoint == "" {
		return "", fmt.Errorf("%s: OAuth metadata without a token_endpoint", base)
	}
	return md.TokenEndpoint, nil
}

// signClientAssertion returns an RFC 7523 client assertion for clientID and
// the token endpoint aud, signed ES256 with the key in keyFile and naming
// the key's RFC 7638 thumbprint as kid.
func signClientAssertion(keyFile, clientID, aud string, now time.Time) (string, error) {
	key, err := readECKey(keyFile)
	if err != nil {
		return "", fmt.Errorf("read --private-key: %w", err)
	}
	kid, err := jwkKeyID(key)
	if err != nil {
		return "", err
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	return jwt.Signed(sig).Claims(jwt.Claims{
		Issuer: clientID, Subject: clientID, Audience: jwt.Audience{aud}, ID: hex.EncodeToString(jti[:]),
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute)),
	}).Serialize()
}
