package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/stint-broker/stint/broker/identity"
)

func newCACommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Manage Stint's enrolment CA for agent client certificates",
		Long: `Manage Stint's enrolment CA. It signs short-lived client certificates for
agents (stint agents enroll); each names its agent in a single URI SAN,
spiffe://<identity.trust_domain>/agent/<name>, and is recorded by serial so
that it can be revoked. The CA lives in identity.ca_dir: ca.pem (its
certificate) and ca.key (its private key, mode 0600). identity.ca_dir has no
default, so that no private key lands in the directory Stint happens to run
from. stint serve loads the CA when the directory holds one; stint dev
creates one in its state directory.`,
	}
	cmd.AddCommand(newCAInitCommand())
	return cmd
}

func newCAInitCommand() *cobra.Command {
	var name string
	var validity time.Duration
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create the enrolment CA in identity.ca_dir (refuses to replace one)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, cfgPath, err := readConfigFlag(cmd)
			if err != nil {
				return err
			}
			if cfg.Identity.CADir == "" {
				return fmt.Errorf("identity.ca_dir is not set in %s: name the directory for the CA and its private key, outside any source tree (such as /var/lib/stint/ca)", cfgPath)
			}
			if validity < 24*time.Hour {
				return fmt.Errorf("--validity %s is too short: at least 24h", validity)
			}
			ca, err := identity.InitCA(cfg.Identity.CADir, name, validity, time.Now().UTC())
			if err != nil {
				return err
			}
			created := struct {
				Dir      string    `json:"dir"`
				Subject  string    `json:"subject"`
				Expires  time.Time `json:"expires"`
				AgentURI string    `json:"agent_uri"`
			}{cfg.Identity.CADir, ca.Cert.Subject.String(), ca.Cert.NotAfter.UTC(), "spiffe://" + cfg.Identity.TrustDomain + "/agent/<name>"}
			return show(cmd, created, func(out io.Writer) error {
				_, err := fmt.Fprintf(out, "enrolment CA created in %s\nsubject: %s\nexpires: %s\nagent certificates will be named %s\n",
					created.Dir, created.Subject, created.Expires.Format(time.RFC3339), created.AgentURI)
				return err
			})
		},
	}
	addOutputFlag(cmd)
	cmd.Flags().StringVar(&name, "name", "Stint agent enrolment CA", "the CA certificate's common name")
	cmd.Flags().DurationVar(&validity, "validity", 5*365*24*time.Hour, "how long the CA certificate is valid")
	return cmd
}
