package vault

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/stint-broker/stint/leases"
)

// vaultClient is the part of the Vault API that Stint calls. The Issuer only
// reads, writes and lists paths and asks for sys/health; everything else
// (revocation, lookups, renewals, token creation) is a write to a known path.
type vaultClient interface {
	read(ctx context.Context, path string) (*api.Secret, error)
	write(ctx context.Context, path string, data map[string]any) (*api.Secret, error)
	list(ctx context.Context, path string) (*api.Secret, error)
	health(ctx context.Context) (*api.HealthResponse, error)
}

// sdkClient implements vaultClient with the Vault Go client. The development
// server also uses it to initialise and unseal Vault.
type sdkClient struct {
	c         *api.Client
	transport *http.Transport
}

func (s *sdkClient) read(ctx context.Context, path string) (*api.Secret, error) {
	return s.c.Logical().ReadWithContext(ctx, path)
}

func (s *sdkClient) write(ctx context.Context, path string, data map[string]any) (*api.Secret, error) {
	return s.c.Logical().WriteWithContext(ctx, path, data)
}

func (s *sdkClient) list(ctx context.Context, path string) (*api.Secret, error) {
	return s.c.Logical().ListWithContext(ctx, path)
}

func (s *sdkClient) health(ctx context.Context) (*api.HealthResponse, error) {
	return s.c.Sys().HealthWithContext(ctx)
}

func (s *sdkClient) initialize(ctx context.Context) (*api.InitResponse, error) {
	return s.c.Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
}

func (s *sdkClient) unseal(ctx context.Context, key string) (*api.SealStatusResponse, error) {
	return s.c.Sys().UnsealWithContext(ctx, key)
}

func (s *sdkClient) setToken(token string) { s.c.SetToken(token) }

func (s *sdkClient) close() { s.transport.CloseIdleConnections() }

// newSDKClient builds a Vault client from cfg alone. api.DefaultConfig and
// api.NewClient read VAULT_* environment variables (token, namespace,
// headers, wrap TTL, retries, TLS); every one of those settings is set
// explicitly here so that none leaks in. retries is how many times a failed
// call (connection error, 5xx) is repeated.
func newSDKClient(cfg Config, retries int) (*sdkClient, error) {
	transport := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          16,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
	}
	ac := &api.Config{
		Address: cfg.Address,
		HttpClient: &http.Client{
			Transport: transport,
			// The Vault client follows redirects itself (standby nodes).
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		Timeout:      cfg.Timeout,
		MaxRetries:   retries,
		MinRetryWait: 250 * time.Millisecond,
		MaxRetryWait: time.Second,
	}
	if cfg.CACert != "" {
		if err := ac.ConfigureTLS(&api.TLSConfig{CACert: cfg.CACert}); err != nil {
			return nil, fmt.Errorf("configure vault tls: %w", err)
		}
	}
	c, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("new vault client: %w", err)
	}
	headers := http.Header{}
	headers.Set(api.RequestHeaderName, "true")
	c.SetHeaders(headers) // drops VAULT_HEADERS and VAULT_NAMESPACE
	if cfg.Namespace != "" {
		c.SetNamespace(cfg.Namespace)
	}
	c.SetToken(cfg.Token) // overrides VAULT_TOKEN, even when empty
	// Never wrap: VAULT_WRAP_TTL would otherwise wrap every response and hide
	// the lease id of what we mint.
	c.SetWrappingLookupFunc(func(string, string) string { return "" })
	return &sdkClient{c: c, transport: transport}, nil
}

// vaultError is a failed Vault call described in one line. It keeps the SDK's
// error in its chain and, when Vault could not be reached, leases.ErrUnavailable
// too, so that errors.Is(err, leases.ErrUnavailable) holds.
type vaultError struct {
	err         error
	unavailable bool
}

// wrapVaultError classifies err from a Vault call. It returns nil for nil.
func wrapVaultError(err error) error {
	if err == nil {
		return nil
	}
	return &vaultError{err: err, unavailable: unreachable(err)}
}

func (e *vaultError) Error() string {
	var re *api.ResponseError
	if errors.As(e.err, &re) {
		msg := strings.TrimSpace(strings.Join(re.Errors, "; "))
		if msg == "" {
			msg = http.StatusText(re.StatusCode)
		}
		return fmt.Sprintf("vault answered %d: %s", re.StatusCode, msg)
	}
	if e.unavailable {
		return "vault unreachable: " + e.err.Error()
	}
	return e.err.Error()
}

func (e *vaultError) Unwrap() []error {
	if e.unavailable {
		return []error{e.err, leases.ErrUnavailable}
	}
	return []error{e.err}
}

// unreachable reports whether err means that Vault could not serve the call:
// no connection, a timeout, a 5xx (503 when sealed or on standby trouble) or
// a rate limit. A canceled context is the caller's doing, not Vault's.
func unreachable(err error) bool {
	var re *api.ResponseError
	switch {
	case errors.As(err, &re):
		return re.StatusCode >= 500 || re.StatusCode == http.StatusTooManyRequests
	case errors.Is(err, context.Canceled):
		return false
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF):
		return true
	}
	var ne net.Error // includes *url.Error from the HTTP client
	return errors.As(err, &ne)
}

// vaultSaid reports whether err is Vault answering status with a message
// containing text.
func vaultSaid(err error, status int, text string) bool {
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != status {
		return false
	}
	for _, e := range re.Errors {
		if strings.Contains(e, text) {
			return true
		}
	}
	return false
}
