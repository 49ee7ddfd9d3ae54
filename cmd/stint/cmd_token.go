package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/stint-broker/stint/web/client"
)

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
			jsonOut, err := outputJSON(cmd)
			if err != nil {
				return err
			}
			opts := []client.Option{client.WithUserAgent("stint-cli/" + Version)}
			if caFile != "" {
				opts = append(opts, client.WithCAFile(caFile))
			}
			if secretFile != "" {
				secret, err := readSecretFile(secretFile)
				if err != nil || secret == "" {
					return fmt.Errorf("read --client-secret-file %s: %v", secretFile, orEmpty(err))
				}
				opts = append(opts, client.WithClientSecret(clientID, secret))
			} else {
				signer, err := client.ReadPrivateKey(keyFile)
				if err != nil {
					return fmt.Errorf("read --private-key: %w", err)
				}
				opts = append(opts, client.WithPrivateKeyJWT(clientID, signer))
			}
			c, err := client.New(addr, opts...)
			if err != nil {
				return err
			}
			token, expires, err := c.Token(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON || jsonOut {
				return writeJSON(cmd.OutOrStdout(), map[string]any{
					"access_token": token,
					"token_type":   "Bearer",
					"expires_in":   int64(time.Until(expires).Round(time.Second) / time.Second),
				})
			}
			fmt.Fprintln(cmd.OutOrStdout(), token)
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", envOr("STINT_ADDR", "http://127.0.0.1:7070"), "Stint server address (env STINT_ADDR)")
	cmd.Flags().StringVar(&caFile, "cacert", envOr("STINT_CACERT", ""), "PEM CA certificate(s) to verify an https server with (env STINT_CACERT)")
	cmd.Flags().StringVar(&clientID, "client-id", "", "the agent's name (required)")
	cmd.Flags().StringVar(&secretFile, "client-secret-file", "", "file holding the agent's client secret (client_secret_basic)")
	cmd.Flags().StringVar(&keyFile, "private-key", "", "the agent's PEM ECDSA P-256 private key (private_key_jwt)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the whole token response instead of the access token alone")
	addOutputFlag(cmd)
	cmd.MarkFlagRequired("client-id")
	return cmd
}

func orEmpty(err error) string {
	if err == nil {
		return "the file is empty"
	}
	return err.Error()
}
