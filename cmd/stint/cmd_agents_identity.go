package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/stint-broker/stint/broker"
)

// agentIdentityCommands are the "stint agents" subcommands for credentials
// beyond the first API key.
func agentIdentityCommands() []*cobra.Command {
	return []*cobra.Command{
		newAgentsSetAuthCommand(), newAgentsEnrollCommand(), newAgentsCertsCommand(), newAgentsRevokeCertCommand(),
		newAgentsClientSecretCommand(), newAgentsSetJWKCommand(), newAgentsRevokeKeyCommand(),
	}
}

// agentCommand is the common shape of the agent subcommands: open Main,
// find the agent named by the first argument, run fn as an admin. Each shows
// what it did, with -o json as JSON.
func agentCommand(use, short, long string, fn func(cmd *cobra.Command, m *Main, a *broker.Agent) error) *cobra.Command {
	return withOutput(&cobra.Command{
		Use: use, Short: short, Long: long, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := openMain(cmd)
			if err != nil {
				return err
			}
			defer m.Close()
			a, err := m.Agents.FindAgent(adminContext(cmd.Context()), args[0])
			if err != nil {
				return err
			}
			return fn(cmd, m, a)
		},
	})
}

func newAgentsSetAuthCommand() *cobra.Command {
	var methods []string
	var spiffeID string
	cmd := agentCommand("set-auth NAME|ID [--methods m1,m2] [--spiffe-id URI]",
		"Set how an agent may authenticate, and map a SPIFFE ID to it",
		`Set the authentication methods an agent may use: api_key, mtls (a client
certificate from the enrolment CA or a SPIFFE X.509-SVID), client_secret
(OAuth client_secret_basic or client_secret_post) and private_key_jwt (OAuth, RFC 7523). A new agent
may use api_key only. --spiffe-id maps an X.509-SVID's SPIFFE ID to the agent
(its trust domain needs a bundle in identity.spiffe); --spiffe-id "" removes
the mapping.`,
		func(cmd *cobra.Command, m *Main, a *broker.Agent) error {
			ctx := adminContext(cmd.Context())
			if !cmd.Flags().Changed("methods") && !cmd.Flags().Changed("spiffe-id") {
				return fmt.Errorf("nothing to set: give --methods and/or --spiffe-id")
			}
			var err error
			if cmd.Flags().Changed("methods") {
				if a, err = m.Agents.SetAuthMethods(ctx, a.ID, methods); err != nil {
					return err
				}
			}
			if cmd.Flags().Changed("spiffe-id") {
				if a, err = m.Agents.SetSPIFFEID(ctx, a.ID, spiffeID); err != nil {
					return err
				}
			}
			return show(cmd, a, func(out io.Writer) error {
				_, err := fmt.Fprintf(out, "agent %s: auth methods %s; spiffe id %s\n", a.Name, strings.Join(a.AuthMethods, ","), orNone(a.SPIFFEID))
				return err
			})
		})
	cmd.Flags().StringSliceVar(&methods, "methods", nil, "comma-separated methods: api_key, mtls, client_secret, private_key_jwt")
	cmd.Flags().StringVar(&spiffeID, "spiffe-id", "", "SPIFFE ID of the agent's X.509-SVIDs, such as spiffe://example.org/ns/etl/sa/loader")
	return cmd
}

// revokedCount is what revoke-cert and revoke-key show with -o json.
type revokedCount struct {
	Agent   string `json:"agent"`
	Revoked int    `json:"revoked"`
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func newAgentsEnrollCommand() *cobra.Command {
	var csrPath, outPath string
	var ttl time.Duration
	cmd := agentCommand("enroll NAME|ID --csr FILE [--ttl 24h] [--out FILE]",
		"Issue a short-lived client certificate for an agent's CSR",
		`Sign a client certificate for the key in the agent's PEM certificate signing
request with the enrolment CA (stint ca init). Only the CSR's key is used: the
certificate names the agent in one URI SAN, spiffe://<identity.trust_domain>/agent/<name>,
with the clientAuth key usage. It is valid for --ttl (default identity.cert_ttl,
at most identity.cert_max_ttl) and recorded by serial; stint agents revoke-cert
revokes it, and disabling the agent revokes all. The agent must allow mtls.
Example key and CSR:
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout agent.key -out agent.csr -subj /CN=etl`,
		func(cmd *cobra.Command, m *Main, a *broker.Agent) error {
			csr, err := os.ReadFile(csrPath)
			if err != nil {
				return fmt.Errorf("read --csr: %w", err)
			}
			rec, certPEM, err := m.Agents.Enroll(adminContext(cmd.Context()), a.ID, csr, ttl)
			if err != nil {
				return err
			}
			if outPath != "" {
				if err := os.WriteFile(outPath, certPEM, 0o644); err != nil {
					return fmt.Errorf("write --out: %w", err)
				}
			}
			issued := struct {
				*broker.Certificate
				PEM string `json:"certificate_pem,omitempty"`
			}{Certificate: rec}
			if outPath == "" {
				issued.PEM = string(certPEM)
			}
			return show(cmd, issued, func(out io.Writer) error {
				if outPath == "" {
					out.Write(certPEM)
				}
				_, err := fmt.Fprintf(cmd.ErrOrStderr(), "issued certificate %s for agent %s (%s), valid until %s\n",
					rec.Serial, a.Name, rec.URI, rec.NotAfter.Format(time.RFC3339))
				return err
			})
		})
	cmd.Flags().StringVar(&csrPath, "csr", "", "PEM certificate signing request holding the agent's public key (required)")
	cmd.Flags().StringVar(&outPath, "out", "", "write the PEM certificate here instead of standard output")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "certificate lifetime (default identity.cert_ttl)")
	cmd.MarkFlagRequired("csr")
	return cmd
}

func newAgentsCertsCommand() *cobra.Command {
	return agentCommand("certs NAME|ID", "List the client certificates issued to an agent", "",
		func(cmd *cobra.Command, m *Main, a *broker.Agent) error {
			certs, err := m.Agents.FindCertificates(adminContext(cmd.Context()), a.ID)
			if err != nil {
				return err
			}
			if certs == nil {
				certs = []*broker.Certificate{}
			}
			return show(cmd, struct {
				Certificates []*broker.Certificate `json:"certificates"`
			}{certs}, func(out io.Writer) error {
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SERIAL\tURI\tNOT AFTER\tREVOKED")
				for _, c := range certs {
					revoked := "no"
					if c.RevokedAt != nil {
						revoked = c.RevokedAt.Format(time.RFC3339) + " " + c.RevokeReason
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Serial, c.URI, c.NotAfter.Format(time.RFC3339), revoked)
				}
				return tw.Flush()
			})
		})
}

func newAgentsRevokeCertCommand() *cobra.Command {
	var serial, reason string
	var all bool
	cmd := agentCommand("revoke-cert NAME|ID (--serial HEX | --all) [--reason TEXT]",
		"Revoke an agent's Stint-issued client certificates",
		`Revoke one of the agent's client certificates (--serial, as stint agents
certs lists it) or all of them (--all). A revoked certificate is refused at
once. SPIFFE X.509-SVIDs are revoked by their issuer; to refuse them here,
remove the agent's mapping (set-auth --spiffe-id "") or suspend the agent.`,
		func(cmd *cobra.Command, m *Main, a *broker.Agent) error {
			if all == (serial != "") {
				return fmt.Errorf("give exactly one of --serial and --all")
			}
			n, err := m.Agents.RevokeCertificates(adminContext(cmd.Context()), a.ID, serial, reason)
			if err != nil {
				return err
			}
			return show(cmd, revokedCount{Agent: a.Name, Revoked: n}, func(out io.Writer) error {
				_, err := fmt.Fprintf(out, "%d certificates of agent %s revoked\n", n, a.Name)
				return err
			})
		})
	cmd.Flags().StringVar(&serial, "serial", "", "serial number in hex")
	cmd.Flags().BoolVar(&all, "all", false, "revoke every certificate of the agent")
	cmd.Flags().StringVar(&reason, "reason", "revoked by an admin", "why (recorded with the certificate)")
	return cmd
}

func newAgentsClientSecretCommand() *cobra.Command {
	return agentCommand("client-secret NAME|ID",
		"Generate an agent's OAuth client secret (shown once; replaces the old one)",
		`Generate a random OAuth client secret for client_secret_basic (or
client_secret_post) at POST /oauth/token (client_id is the agent's name). It replaces any previous secret.
Stint keeps only its SHA-256 hash: the secret has 256 random bits, so a slow
password hash would add nothing. The agent must allow client_secret.`,
		func(cmd *cobra.Command, m *Main, a *broker.Agent) error {
			secret, err := m.Agents.NewClientSecret(adminContext(cmd.Context()), a.ID)
			if err != nil {
				return err
			}
			return show(cmd, struct {
				ClientID     string `json:"client_id"`
				ClientSecret string `json:"client_secret"`
			}{a.Name, secret}, func(out io.Writer) error {
				_, err := fmt.Fprintf(out, "client_id:     %s\nclient_secret: %s\nThe secret is shown only now; Stint stores only its hash.\n", a.Name, secret)
				return err
			})
		})
}

func newAgentsSetJWKCommand() *cobra.Command {
	var path string
	cmd := agentCommand("set-jwk NAME|ID --jwk FILE",
		"Register an agent's public key(s) for private_key_jwt",
		`Register the public key (a JWK) or keys (a JWK Set) with which the agent signs
its client assertions (RFC 7523) at POST /oauth/token. Keys must be public EC,
RSA (≥ 2048 bits) or Ed25519 signing keys; a key without "kid" gets its RFC
7638 thumbprint. This replaces the keys registered before. The agent must
allow private_key_jwt.`,
		func(cmd *cobra.Command, m *Main, a *broker.Agent) error {
			data, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("read --jwk: %w", err)
			}
			a, err = m.Agents.SetPublicJWKS(adminContext(cmd.Context()), a.ID, data)
			if err != nil {
				return err
			}
			return show(cmd, a, func(out io.Writer) error {
				_, err := fmt.Fprintf(out, "agent %s: public key registered for private_key_jwt\n", a.Name)
				return err
			})
		})
	cmd.Flags().StringVar(&path, "jwk", "", "file holding a public JWK or JWK Set (required)")
	cmd.MarkFlagRequired("jwk")
	return cmd
}

func newAgentsRevokeKeyCommand() *cobra.Command {
	return agentCommand("revoke-key NAME|ID", "Revoke every API key of an agent at once (issue a new one with rotate-key)", "",
		func(cmd *cobra.Command, m *Main, a *broker.Agent) error {
			n, err := m.Agents.RevokeKeys(adminContext(cmd.Context()), a.ID)
			if err != nil {
				return err
			}
			return show(cmd, revokedCount{Agent: a.Name, Revoked: n}, func(out io.Writer) error {
				_, err := fmt.Fprintf(out, "%d API keys of agent %s revoked\n", n, a.Name)
				return err
			})
		})
}
