package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/google/uuid"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/stint-broker/stint/web/client"
	mcptools "github.com/stint-broker/stint/web/mcp"
)

// defaultCredentialDir is where `stint mcp` writes credential files when
// --credential-dir is not given: the user's runtime directory (a tmpfs
// only they can read) when there is one, else a private directory under
// the system's temporary directory.
func defaultCredentialDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "stint")
	}
	return filepath.Join(os.TempDir(), "stint-"+strconv.Itoa(os.Getuid()))
}

func newMCPCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mcp",
		Short: "Serve Stint's MCP tools over stdio, beside an LLM agent",
		Long: `Serve the Model Context Protocol over stdin and stdout for a local MCP
client (an agent framework or a coding assistant), as the agent whose
credentials it is given: --key or STINT_KEY (an API key), --cert/--cert-key
(mutual TLS), or --client-id with --client-secret-file or --private-key
(OAuth client credentials). It calls the Stint server's HTTP API (--addr or
STINT_ADDR).

The tools are list_roles, request_access, lease_status, release_access,
extend_access and list_my_leases. A tool result never holds the secret
(unless the role says mcp.inline_secret): the credential is written to a
0600 file in --credential-dir, whose path the result names, and the file is
removed when the lease ends (released, expired or revoked; checked every
--sweep) and when stint mcp stops. Every tool call is recorded in the
server's audit log.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			dir, _ := cmd.Flags().GetString("credential-dir")
			maxWait, _ := cmd.Flags().GetDuration("max-wait")
			sweep, _ := cmd.Flags().GetDuration("sweep")
			if sweep <= 0 {
				return usageError(fmt.Errorf("--sweep must be positive, not %s", sweep))
			}
			if maxWait <= 0 || maxWait > client.MaxWait {
				return usageError(fmt.Errorf("--max-wait must be positive and at most %s, not %s", client.MaxWait, maxWait))
			}
			// stdout carries the protocol: logs go to stderr.
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			srv, files, api, err := newStdioMCP(c, dir, maxWait, logger)
			if err != nil {
				return err
			}
			defer files.Close()
			ctx := cmd.Context()
			go files.Watch(ctx, api, sweep)
			if err := srv.Run(ctx, &sdk.StdioTransport{}); err != nil && ctx.Err() == nil {
				return fmt.Errorf("serve mcp over stdio: %w", err)
			}
			return nil
		},
	}
	addClientFlags(cmd.Flags())
	cmd.Flags().String("credential-dir", defaultCredentialDir(), "directory (mode 0700, created if missing) for the 0600 credential files")
	cmd.Flags().Duration("max-wait", mcptools.DefaultMaxWait, "longest a tool waits for a human approval before answering pending")
	cmd.Flags().Duration("sweep", 5*time.Second, "how often credential files of ended leases are removed")
	return cmd
}

// newStdioMCP builds the stdio MCP server over the API client c: the tools,
// the credential files in dir, and the audit of every call.
func newStdioMCP(c *client.Client, dir string, maxWait time.Duration, logger *slog.Logger) (*sdk.Server, *mcptools.FileDelivery, *mcptools.API, error) {
	files, err := mcptools.NewFileDelivery(dir)
	if err != nil {
		return nil, nil, nil, err
	}
	api := &mcptools.API{Client: c, Session: uuid.NewString()}
	srv := mcptools.NewServer(mcptools.Config{
		Leases:    api,
		Transport: "stdio",
		Files:     files,
		Record: func(ctx context.Context, call mcptools.Call) {
			if err := api.Record(ctx, call); err != nil {
				logger.Warn("record mcp tool call in the audit log", "tool", call.Tool, "lease_id", call.LeaseID, "err", err)
			}
		},
		MaxWait: maxWait,
		Version: Version,
		Logger:  logger,
	})
	return srv, files, api, nil
}
