package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/stint-broker/stint/broker"
)

// apiClient is the agent side of the HTTP API, for the leases commands.
type apiClient struct {
	addr string
	key  string
	hc   *http.Client
}

func newAPIClient(cmd *cobra.Command) (*apiClient, error) {
	addr, _ := cmd.Flags().GetString("addr")
	key, _ := cmd.Flags().GetString("key")
	if key == "" {
		key = os.Getenv("STINT_KEY")
	}
	if key == "" {
		return nil, broker.Errorf(broker.EUNAUTHORIZED, "No key: set STINT_KEY (an agent API key, or an admin token for revoke) or pass --key.")
	}
	caFile, _ := cmd.Flags().GetString("cacert")
	hc, base, err := newHTTPClient(addr, caFile)
	if err != nil {
		return nil, err
	}
	return &apiClient{addr: base, key: key, hc: hc}, nil
}

// newHTTPClient returns a client for the Stint server at addr (http:// is
// assumed without a scheme) and the server's base URL. With caFile, https
// servers are verified against its PEM certificates instead of the
// system's.
func newHTTPClient(addr, caFile string) (*http.Client, string, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	hc := &http.Client{Timeout: 2 * time.Minute}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, "", fmt.Errorf("read --cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, "", fmt.Errorf("--cacert %s holds no PEM certificate", caFile)
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}
	}
	return hc, strings.TrimRight(addr, "/"), nil
}

// readAllLimited reads a response body of at most 8 MiB.
func readAllLimited(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	return data, nil
}

// newStringBody is a request body holding s, and its length.
func newStringBody(s string) (io.ReadCloser, int64) {
	return io.NopCloser(strings.NewReader(s)), int64(len(s))
}

// do sends a request and returns the response body; a non-2xx answer becomes
// an error carrying the server's message.
func (c *apiClient) do(cmd *cobra.Command, method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(cmd.Context(), method, c.addr+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach stint at %s: %w", c.addr, err)
	}
	defer resp.Body.Close()
	data, err := readAllLimited(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message, Field string } `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
			return nil, &broker.Error{Code: e.Error.Code, Message: e.Error.Message, Field: e.Error.Field}
		}
		return nil, fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return data, nil
}

func printJSON(out io.Writer, data []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, data, "", "  "); err != nil {
		_, err = out.Write(data)
		return err
	}
	buf.WriteByte('\n')
	_, err := buf.WriteTo(out)
	return err
}

func newLeasesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "leases",
		Short: "Request, inspect, release and revoke leases over the HTTP API",
		Long: `Talk to a running Stint server as an agent (or as an admin for revoke).
The server address comes from --addr or STINT_ADDR, the key from --key or
STINT_KEY.`,
	}
	cmd.PersistentFlags().String("addr", envOr("STINT_ADDR", "http://127.0.0.1:7070"), "Stint server address (env STINT_ADDR)")
	// The key's default is read at run time, not shown as a flag default:
	// help output must never print a secret.
	cmd.PersistentFlags().String("key", "", "agent API key or admin token (default: env STINT_KEY)")
	cmd.PersistentFlags().String("cacert", os.Getenv("STINT_CACERT"), "PEM CA certificate(s) to verify an https server with, instead of the system's (env STINT_CACERT)")

	var role, ttl, task, justification string
	request := &cobra.Command{
		Use:   "request --role ROLE --task TEXT [--ttl 15m] [--justification TEXT]",
		Short: "Request a lease; prints the lease and its credential (shown once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAPIClient(cmd)
			if err != nil {
				return err
			}
			data, err := c.do(cmd, http.MethodPost, "/v1/leases", map[string]string{
				"role": role, "ttl": ttl, "task": task, "justification": justification,
			})
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), data)
		},
	}
	request.Flags().StringVar(&role, "role", "", "role to lease (see stint leases roles)")
	request.Flags().StringVar(&ttl, "ttl", "", "task window, e.g. 15m (default: the role's default_ttl)")
	request.Flags().StringVar(&task, "task", "", "what the access is for (required)")
	request.Flags().StringVar(&justification, "justification", "", "why the task needs it")

	var state, roleFilter string
	list := &cobra.Command{
		Use:   "list [--state S] [--role R]",
		Short: "List leases (an agent sees its own)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAPIClient(cmd)
			if err != nil {
				return err
			}
			q := url.Values{}
			if state != "" {
				q.Set("state", state)
			}
			if roleFilter != "" {
				q.Set("role", roleFilter)
			}
			data, err := c.do(cmd, http.MethodGet, "/v1/leases?"+q.Encode(), nil)
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), data)
		},
	}
	list.Flags().StringVar(&state, "state", "", "only leases in this state")
	list.Flags().StringVar(&roleFilter, "role", "", "only leases of this role")

	simple := func(use, short, method, suffix string) *cobra.Command {
		return &cobra.Command{
			Use: use + " ID", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := newAPIClient(cmd)
				if err != nil {
					return err
				}
				data, err := c.do(cmd, method, "/v1/leases/"+url.PathEscape(args[0])+suffix, nil)
				if err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), data)
			},
		}
	}

	var reason string
	revoke := &cobra.Command{
		Use:   "revoke ID --reason TEXT",
		Short: "Revoke a lease (admin token)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAPIClient(cmd)
			if err != nil {
				return err
			}
			data, err := c.do(cmd, http.MethodPost, "/v1/leases/"+url.PathEscape(args[0])+"/revoke", map[string]string{"reason": reason})
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), data)
		},
	}
	revoke.Flags().StringVar(&reason, "reason", "", "why (required; recorded in history)")

	var extendTTL string
	extend := &cobra.Command{
		Use:   "extend ID [--ttl 15m]",
		Short: "Lengthen an active lease's window (its own agent; decided by policy action extend)",
		Long: `Ask to lengthen an active lease's window by --ttl (default: the role's
default_ttl). Stint grants it only at once, once half the window has passed,
within the role's max_extensions and max_total_ttl, and renews the credential
in Vault; the lease printed shows the new expires_at and its whole window as
ttl. A denial leaves the lease to expire as planned.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAPIClient(cmd)
			if err != nil {
				return err
			}
			data, err := c.do(cmd, http.MethodPost, "/v1/leases/"+url.PathEscape(args[0])+"/extend", map[string]string{"ttl": extendTTL})
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), data)
		},
	}
	extend.Flags().StringVar(&extendTTL, "ttl", "", "time to add, e.g. 15m (default: the role's default_ttl)")

	roles := &cobra.Command{
		Use: "roles", Short: "List the roles this key may request", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAPIClient(cmd)
			if err != nil {
				return err
			}
			data, err := c.do(cmd, http.MethodGet, "/v1/roles", nil)
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), data)
		},
	}

	cmd.AddCommand(request, list, roles,
		simple("show", "Show a lease (never its credential)", http.MethodGet, ""),
		simple("history", "Show a lease's history", http.MethodGet, "/events"),
		simple("release", "Release a lease now; returns once Vault has revoked it", http.MethodDelete, ""),
		simple("wait", "Wait up to 30s for a pending lease's decision and show the lease", http.MethodGet, "?wait=30s"),
		simple("activate", "Activate an approved lease; prints its credential (shown once)", http.MethodPost, "/activate"),
		simple("cancel", "Withdraw a pending or approved lease", http.MethodPost, "/cancel"),
		extend, revoke)
	return cmd
}
