package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// maxResponse caps the size of a response body the client reads.
const maxResponse = 8 << 20

// Client talks to one Stint server. It is safe for concurrent use. Create it
// with New.
type Client struct {
	base *url.URL
	hc   *http.Client
	auth authenticator
	// userAgent is sent with every request.
	userAgent string
	// timeout bounds each request but the long polls.
	timeout time.Duration
}

// authenticator adds credentials to a request. refresh is called after a
// 401: it drops a cached token so that the next authorize fetches a new one,
// and reports whether a retry can succeed.
type authenticator interface {
	authorize(ctx context.Context, req *http.Request) error
	refresh() bool
	describe() string
}

// settings collects the options of New.
type settings struct {
	hc        *http.Client
	roots     *x509.CertPool
	certs     []tls.Certificate
	auth      authenticator
	userAgent string
	timeout   time.Duration
	errs      []error
}

// Option configures a Client in New.
type Option func(*settings)

// WithAPIKey authenticates with an agent's API key, an admin token, an
// approver token or an access token already obtained elsewhere, sent as
// "Authorization: Bearer <key>".
func WithAPIKey(key string) Option {
	return func(s *settings) {
		key = strings.TrimSpace(key)
		if key == "" {
			s.errs = append(s.errs, errors.New("client: the API key is empty"))
			return
		}
		s.setAuth(&bearerAuth{key: key})
	}
}

// WithClientCertificate presents cert in the TLS handshake (mutual TLS).
// Alone, it is the agent's authentication; with WithClientSecret or
// WithPrivateKeyJWT, the server binds the access token it issues to the
// certificate.
func WithClientCertificate(cert tls.Certificate) Option {
	return func(s *settings) { s.certs = append(s.certs, cert) }
}

// WithClientCertificateFiles is WithClientCertificate with a PEM certificate
// (chain) and its PEM private key read from files.
func WithClientCertificateFiles(certFile, keyFile string) Option {
	return func(s *settings) {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			s.errs = append(s.errs, fmt.Errorf("client: load client certificate: %w", err))
			return
		}
		s.certs = append(s.certs, cert)
	}
}

// WithRootCAs verifies an https server against pool instead of the
// system's roots.
func WithRootCAs(pool *x509.CertPool) Option {
	return func(s *settings) { s.roots = pool }
}

// WithCAFile is WithRootCAs with the PEM certificates in file.
func WithCAFile(file string) Option {
	return func(s *settings) {
		data, err := os.ReadFile(file)
		if err != nil {
			s.errs = append(s.errs, fmt.Errorf("client: read CA file: %w", err))
			return
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			s.errs = append(s.errs, fmt.Errorf("client: CA file %s holds no PEM certificate", file))
			return
		}
		s.roots = pool
	}
}

// WithHTTPClient sends requests through hc. Its transport must carry any TLS
// settings itself: WithRootCAs and WithClientCertificate do not change a
// client given here.
func WithHTTPClient(hc *http.Client) Option {
	return func(s *settings) { s.hc = hc }
}

// WithTimeout bounds every request but the long polls, which set their own
// bound from the wait they ask for. The default is one minute.
func WithTimeout(d time.Duration) Option {
	return func(s *settings) { s.timeout = d }
}

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option {
	return func(s *settings) { s.userAgent = ua }
}

func (s *settings) setAuth(a authenticator) {
	if s.auth != nil {
		s.errs = append(s.errs, errors.New("client: give one authentication method (an API key, OAuth client credentials, or a client certificate alone)"))
		return
	}
	s.auth = a
}

// New returns a client of the Stint server at addr, such as
// "https://stint.example.com" (http:// is assumed without a scheme).
// It needs exactly one authentication method: WithAPIKey, WithClientSecret,
// WithPrivateKeyJWT, or WithClientCertificate alone.
func New(addr string, opts ...Option) (*Client, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	base, err := url.Parse(strings.TrimRight(addr, "/"))
	if err != nil || base.Host == "" || (base.Scheme != "http" && base.Scheme != "https") {
		return nil, fmt.Errorf("client: server address %q is not an http(s) URL", addr)
	}
	s := settings{timeout: time.Minute, userAgent: "stint-go-client"}
	for _, o := range opts {
		o(&s)
	}
	if len(s.errs) > 0 {
		return nil, errors.Join(s.errs...)
	}
	if s.auth == nil && len(s.certs) > 0 {
		s.auth = certAuth{}
	}
	if s.auth == nil {
		return nil, errors.New("client: no authentication: use WithAPIKey, WithClientSecret, WithPrivateKeyJWT or WithClientCertificate")
	}
	hc := s.hc
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: s.roots, Certificates: s.certs}
		hc = &http.Client{Transport: tr}
	}
	c := &Client{base: base, hc: hc, auth: s.auth, userAgent: s.userAgent, timeout: s.timeout}
	if o, ok := s.auth.(*oauthSource); ok {
		o.c = c
	}
	return c, nil
}

// URL returns the server's base URL.
func (c *Client) URL() string { return c.base.String() }

// String describes the client without its credentials.
func (c *Client) String() string {
	return fmt.Sprintf("stint client for %s (%s)", c.base, c.auth.describe())
}

// GoString implements fmt.GoStringer like String, so %#v shows no secret.
func (c *Client) GoString() string { return c.String() }

// Format implements fmt.Formatter like String, for every verb.
func (c *Client) Format(f fmt.State, _ rune) { io.WriteString(f, c.String()) }

// bearerAuth sends a fixed bearer token.
type bearerAuth struct{ key string }

func (b *bearerAuth) authorize(_ context.Context, req *http.Request) error {
	req.Header.Set("Authorization", "Bearer "+b.key)
	return nil
}
func (b *bearerAuth) refresh() bool { return false }
func (b *bearerAuth) describe() string {
	return "api key " + redactKey(b.key)
}

// certAuth relies on the TLS client certificate alone.
type certAuth struct{}

func (certAuth) authorize(context.Context, *http.Request) error { return nil }
func (certAuth) refresh() bool                                  { return false }
func (certAuth) describe() string                               { return "client certificate" }

// publicKeyPrefixes are the prefixes Stint puts before a key's secret part:
// an API key and an OAuth client secret.
var publicKeyPrefixes = []string{"stint_ak_", "stint_cs_"}

// redactKey shows a key's public prefix (such as "stint_ak_") and no more.
// The secret part is random and may itself contain "_", so the prefix is
// matched, not searched for.
func redactKey(key string) string {
	for _, p := range publicKeyPrefixes {
		if strings.HasPrefix(key, p) {
			return p + "[redacted]"
		}
	}
	return "[redacted]"
}

// request is one API call.
type request struct {
	method string
	path   string
	query  url.Values
	body   any
	// timeout overrides the client's default.
	timeout time.Duration
}

// do sends r and decodes a 2xx JSON answer into out (if not nil). Any other
// answer is a *Error. It returns the HTTP status.
func (c *Client) do(ctx context.Context, r request, out any) (int, error) {
	var body []byte
	if r.body != nil {
		var err error
		if body, err = json.Marshal(r.body); err != nil {
			return 0, fmt.Errorf("encode request: %w", err)
		}
	}
	for attempt := 0; ; attempt++ {
		status, err := c.send(ctx, r, body, out)
		var e *Error
		if attempt == 0 && errors.As(err, &e) && e.Status == http.StatusUnauthorized && c.auth.refresh() {
			continue // an expired access token: fetch a new one once
		}
		return status, err
	}
}

func (c *Client) send(ctx context.Context, r request, body []byte, out any) (int, error) {
	timeout := c.timeout
	if r.timeout > 0 {
		timeout = r.timeout
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	// Paths are built with url.PathEscape already.
	u := c.base.String() + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, rd)
	if err != nil {
		return 0, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if err := c.auth.authorize(ctx, req); err != nil {
		return 0, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, &UnreachableError{URL: c.base.String(), Err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("read response of %s %s: %w", r.method, r.path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, newError(resp, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode response of %s %s: %w", r.method, r.path, err)
		}
	}
	return resp.StatusCode, nil
}

// pathEscape escapes one path segment (a lease id).
func pathEscape(s string) string { return url.PathEscape(s) }

// UnreachableError is returned when the server cannot be reached at all (no
// answer: refused connection, DNS failure, TLS failure, timeout).
type UnreachableError struct {
	URL string
	Err error
}

// Error implements error.
func (e *UnreachableError) Error() string {
	return fmt.Sprintf("reach stint at %s: %v", e.URL, e.Err)
}

// Unwrap returns the transport's error.
func (e *UnreachableError) Unwrap() error { return e.Err }
