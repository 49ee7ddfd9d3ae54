// Command devvault is a real HashiCorp Vault server for Stint's development and
// tests, built from Vault's own Go module (v1.21.0). It is a nested module so
// the Stint module never depends on the Vault server (BUSL-1.1); it is never
// shipped inside Stint.
//
// Rather than Vault's whole command line with every plugin, it runs Vault's
// core and HTTP handler with only what Stint's development and tests use:
//   - storage "file" (or "inmem"), a Shamir seal, no clustering or HA;
//   - token auth, the system, identity and cubbyhole backends (always in the
//     core), the KV (v1 and v2), database and PKI secrets engines, and the
//     builtin postgresql-database-plugin;
//   - the file audit device.
//
// It understands the subset of Vault's command line that Stint uses, so that
// a full Vault binary can stand in for it:
//
//	devvault server -config=vault.hcl   # Vault's HCL server configuration
//	devvault version                    # "Vault v1.21.0 …"
//
// The server starts uninitialised and sealed like any Vault server; clients
// initialise and unseal it through the HTTP API (sys/init, sys/unseal).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/cli"
	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/audit"
	"github.com/hashicorp/vault/builtin/plugin"
	"github.com/hashicorp/vault/command/server"
	vaulthttp "github.com/hashicorp/vault/http"
	"github.com/hashicorp/vault/internalshared/configutil"
	"github.com/hashicorp/vault/sdk/helper/logging"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/physical"
	"github.com/hashicorp/vault/sdk/physical/file"
	"github.com/hashicorp/vault/sdk/physical/inmem"
	"github.com/hashicorp/vault/vault"
	"github.com/hashicorp/vault/version"

	logicalKv "github.com/hashicorp/vault-plugin-secrets-kv"
	logicalDb "github.com/hashicorp/vault/builtin/logical/database"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `Usage: devvault <command> [options]

A real Vault server (Vault v%s) with only what Stint's development and tests use.

Commands:
  server -config=FILE   run a server from Vault's HCL configuration (storage "file" or
                        "inmem", tcp or unix listeners, Shamir seal, no clustering)
  version               print the Vault version
`

// run runs the command line args and returns the process's exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, usage, version.Version)
		return 1
	}
	switch args[0] {
	case "version", "-version", "--version", "-v":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "server":
		if err := serve(args[1:], stderr); err != nil {
			fmt.Fprintf(stderr, "Error: %v\n", err)
			return 1
		}
		return 0
	case "help", "-help", "--help", "-h":
		fmt.Fprintf(stdout, usage, version.Version)
		return 0
	default:
		fmt.Fprintf(stderr, "devvault: unknown command %q (this development Vault only runs \"server\" and \"version\"; use the vault CLI against it for anything else)\n\n", args[0])
		fmt.Fprintf(stderr, usage, version.Version)
		return 1
	}
}

// versionString starts like a full Vault's `vault version` ("Vault v1.21.0"),
// so scripts that parse either read the same version. (Vault's build date is
// left out: without release ldflags Vault sets it to a year ago.)
func versionString() string {
	return "Vault v" + version.GetVersion().VersionNumber() + " (stint devvault: kv, database with postgresql-database-plugin, pki)"
}

// serve runs the server until SIGINT or SIGTERM.
func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var configs []string
	fs.Func("config", "path to a Vault HCL configuration file or directory (repeatable)", func(s string) error {
		configs = append(configs, s)
		return nil
	})
	logLevel := fs.String("log-level", "", "log level (trace, debug, info, warn, error); overrides log_level in the configuration")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (this development Vault takes only -config and -log-level; dev mode flags such as -dev are not supported)", fs.Args())
	}
	if len(configs) == 0 {
		return errors.New("-config is required: name a Vault HCL configuration")
	}
	var config *server.Config
	for _, path := range configs {
		c, err := server.LoadConfig(path)
		if err != nil {
			return fmt.Errorf("load configuration %s: %w", path, err)
		}
		if config == nil {
			config = c
		} else {
			config = config.Merge(c)
		}
	}
	if *logLevel != "" {
		config.LogLevel = *logLevel
	}
	if err := checkConfig(config); err != nil {
		return err
	}

	level := hclog.LevelFromString(config.LogLevel)
	if config.LogLevel == "" {
		level = hclog.Info
	} else if level == hclog.NoLevel {
		return fmt.Errorf("log_level %q is not one of trace, debug, info, warn, error", config.LogLevel)
	}
	logger := logging.NewVaultLoggerWithWriter(stderr, level)

	backend, err := newStorage(config.Storage, logger.Named("storage."+config.Storage.Type))
	if err != nil {
		return err
	}

	redirect := config.APIAddr
	if redirect == "" {
		redirect = config.Storage.RedirectAddr
	}
	coreConfig := &vault.CoreConfig{
		RawConfig:    config,
		Physical:     backend,
		StorageType:  config.Storage.Type,
		RedirectAddr: redirect,
		// A nil Seal is a Shamir seal: unseal keys come from sys/init.
		AuditBackends: map[string]audit.Factory{
			"file": audit.NewFileBackend,
		},
		CredentialBackends: map[string]logical.Factory{
			"plugin": plugin.Factory,
		},
		LogicalBackends: map[string]logical.Factory{
			"plugin":   plugin.Factory,
			"database": logicalDb.Factory,
			"kv":       logicalKv.Factory,
		},
		BuiltinRegistry:             registry,
		LogLevel:                    config.LogLevel,
		Logger:                      logger,
		AllLoggers:                  []hclog.Logger{logger},
		DisableCache:                config.DisableCache,
		CacheSize:                   config.CacheSize,
		DisableMlock:                config.DisableMlock,
		MaxLeaseTTL:                 config.MaxLeaseTTL,
		DefaultLeaseTTL:             config.DefaultLeaseTTL,
		RemoveIrrevocableLeaseAfter: config.RemoveIrrevocableLeaseAfter,
		ClusterName:                 config.ClusterName,
		EnableUI:                    false,
		EnableRaw:                   config.EnableRawEndpoint,
		EnableIntrospection:         config.EnableIntrospectionEndpoint,
		DisableSealWrap:             config.DisableSealWrap,
		DisableKeyEncodingChecks:    config.DisablePrintableCheck,
		Experiments:                 config.Experiments,
	}
	core, err := vault.NewCore(coreConfig)
	if err != nil {
		if vault.IsFatalError(err) {
			return fmt.Errorf("initialise core: %w", err)
		}
		logger.Warn("non-fatal error while initialising the core", "error", err)
	}
	core.SetClusterHandler(vaulthttp.Handler.Handler(&vault.HandlerProperties{
		Core:           core,
		ListenerConfig: &configutil.Listener{},
	}))

	servers := make([]*http.Server, 0, len(config.Listeners))
	addrs := make([]string, 0, len(config.Listeners))
	for _, lnConfig := range config.Listeners {
		ln, _, _, err := server.NewListener(lnConfig, io.Discard, cli.NewMockUi())
		if err != nil {
			for _, s := range servers {
				s.Close()
			}
			return fmt.Errorf("listen on %s %s: %w", lnConfig.Type, lnConfig.Address, err)
		}
		srv := &http.Server{
			Handler: vaulthttp.Handler.Handler(&vault.HandlerProperties{
				Core:                  core,
				ListenerConfig:        lnConfig,
				DisablePrintableCheck: config.DisablePrintableCheck,
			}),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			IdleTimeout:       5 * time.Minute,
			ErrorLog:          logger.StandardLogger(nil),
		}
		servers = append(servers, srv)
		addrs = append(addrs, ln.Addr().String())
		go func(ln net.Listener) {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("http server stopped", "addr", ln.Addr().String(), "error", err)
			}
		}(ln)
	}

	fmt.Fprintf(stderr, "==> Vault server started (%s)\n", versionString())
	fmt.Fprintf(stderr, "    listening on %s, storage %q, api address %q\n\n", strings.Join(addrs, ", "), config.Storage.Type, redirect)
	logger.Info("vault server started; waiting to be initialised or unsealed through the HTTP API")

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	signal.Ignore(syscall.SIGHUP)
	got := <-sig
	logger.Info("shutting down", "signal", got.String())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(ctx)
	}
	if err := core.Shutdown(); err != nil {
		return fmt.Errorf("shut down core: %w", err)
	}
	return nil
}

// checkConfig refuses what a full Vault would do but this one cannot, rather
// than silently running something else.
func checkConfig(c *server.Config) error {
	var problems []string
	if c.Storage == nil {
		problems = append(problems, `a storage stanza is required (storage "file" { path = "…" } or storage "inmem" {})`)
	}
	if c.HAStorage != nil {
		problems = append(problems, "ha_storage is not supported")
	}
	if len(c.Seals) > 0 {
		problems = append(problems, "seal stanzas are not supported (the seal is Shamir; unseal through sys/unseal)")
	}
	if c.ServiceRegistration != nil {
		problems = append(problems, "service_registration is not supported")
	}
	if len(c.Listeners) == 0 {
		problems = append(problems, `a listener stanza is required (listener "tcp" { address = "127.0.0.1:8200" tls_disable = true })`)
	}
	if len(problems) == 0 {
		return nil
	}
	sort.Strings(problems)
	return fmt.Errorf("this development Vault runs only part of Vault's server configuration:\n  - %s", strings.Join(problems, "\n  - "))
}

// newStorage opens the configured storage backend.
func newStorage(s *server.Storage, logger hclog.Logger) (physical.Backend, error) {
	var factory physical.Factory
	switch s.Type {
	case "file":
		factory = file.NewFileBackend
	case "inmem":
		factory = inmem.NewInmem
	default:
		return nil, fmt.Errorf("storage %q is not in this development Vault: use \"file\" or \"inmem\"", s.Type)
	}
	b, err := factory(s.Config, logger)
	if err != nil {
		return nil, fmt.Errorf("open %s storage: %w", s.Type, err)
	}
	return b, nil
}
