package mcp

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/stint-broker/stint/broker"
)

// Credential file formats.
const (
	// FormatPGService is a libpq connection service file (pg_service.conf)
	// holding host, port, dbname, user and password under the service
	// name "stint": PGSERVICEFILE=<file> PGSERVICE=stint psql.
	FormatPGService = "pg_service"
	// FormatEnv is a file of shell variable assignments, values single-quoted:
	// VAULT_TOKEN for token roles, STINT_<FIELD> for generic ones.
	FormatEnv = "env"
)

// pgServiceName is the service name inside a pg_service file.
const pgServiceName = "stint"

// FileDelivery writes credentials to 0600 files in Dir, one per lease, and
// removes each file when its lease ends (Sweep) or when the server stops
// (Close). It is the stdio transport's delivery: the agent's processes read
// the file; the model only ever sees its path.
type FileDelivery struct {
	// Dir holds the files; it is created with mode 0700.
	Dir string

	mu    sync.Mutex
	files map[string]string // lease id → path
}

// NewFileDelivery returns a FileDelivery writing to dir, creating dir
// (mode 0700) if needed. It refuses a dir that others may read or write.
func NewFileDelivery(dir string) (*FileDelivery, error) {
	if dir == "" {
		return nil, errors.New("credential directory is empty")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("credential directory: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("create credential directory: %w", err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("credential directory: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("credential directory %s has mode %v; others must not reach it (chmod 700)", abs, fi.Mode().Perm())
	}
	return &FileDelivery{Dir: abs, files: map[string]string{}}, nil
}

// fileResult says where a credential went and how to use it.
type fileResult struct {
	Path, Format, Usage string
}

// Write writes the lease's credential to its file, replacing nothing: a
// lease's credential is minted once. The file is created 0600.
func (f *FileDelivery) Write(l *broker.Lease, cred *broker.Credential) (fileResult, error) {
	var body strings.Builder
	fmt.Fprintf(&body, "# Stint lease %s (role %s). Removed when the lease ends; the credential stops working at %s.\n",
		l.ID, l.Role, cred.ExpiresAt.UTC().Format(time.RFC3339))
	secret := cred.Reveal()
	var res fileResult
	switch cred.Kind {
	case broker.KindDatabase:
		res.Format = FormatPGService
		fmt.Fprintf(&body, "[%s]\n", pgServiceName)
		for _, kv := range [][2]string{
			{"host", fmt.Sprint(secret["host"])}, {"port", fmt.Sprint(secret["port"])},
			{"dbname", fmt.Sprint(secret["database"])}, {"user", fmt.Sprint(secret["username"])},
			{"password", fmt.Sprint(secret["password"])},
		} {
			if strings.ContainsAny(kv[1], "\r\n") {
				return res, fmt.Errorf("credential field %s holds a line break", kv[0])
			}
			fmt.Fprintf(&body, "%s=%s\n", kv[0], kv[1])
		}
	case broker.KindToken:
		res.Format = FormatEnv
		fmt.Fprintf(&body, "VAULT_TOKEN=%s\n", shellQuote(fmt.Sprint(secret["token"])))
	default:
		res.Format = FormatEnv
		keys := make([]string, 0, len(cred.Data))
		for k := range cred.Data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&body, "STINT_%s=%s\n", envName(k), shellQuote(fmt.Sprint(cred.Data[k])))
		}
	}
	ext := ".env"
	if res.Format == FormatPGService {
		ext = ".pgservice"
	}
	res.Path = filepath.Join(f.Dir, l.ID+ext)
	file, err := os.OpenFile(res.Path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return res, fmt.Errorf("create credential file: %w", err)
	}
	_, werr := file.WriteString(body.String())
	if cerr := file.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(res.Path)
		return res, fmt.Errorf("write credential file: %w", werr)
	}
	f.mu.Lock()
	f.files[l.ID] = res.Path
	f.mu.Unlock()
	if res.Format == FormatPGService {
		res.Usage = fmt.Sprintf("PGSERVICEFILE=%s PGSERVICE=%s psql", shellQuote(res.Path), pgServiceName)
	} else {
		res.Usage = fmt.Sprintf("set -a; . %s; set +a; <your command>", shellQuote(res.Path))
	}
	return res, nil
}

// Path returns the file of a lease, if one was written and not removed.
func (f *FileDelivery) Path(leaseID string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.files[leaseID]
	return p, ok
}

// Remove deletes the lease's file, if there is one.
func (f *FileDelivery) Remove(leaseID string) error {
	f.mu.Lock()
	p, ok := f.files[leaseID]
	delete(f.files, leaseID)
	f.mu.Unlock()
	if !ok {
		return nil
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove credential file: %w", err)
	}
	return nil
}

// Sweep removes the file of every lease that is no longer active (ended,
// expired, revoked by the kill switch), asking leases for each; a lease
// that cannot be read now is kept until the next sweep.
func (f *FileDelivery) Sweep(ctx context.Context, leases Leases) error {
	f.mu.Lock()
	ids := make([]string, 0, len(f.files))
	for id := range f.files {
		ids = append(ids, id)
	}
	f.mu.Unlock()
	var errs []error
	for _, id := range ids {
		l, err := leases.FindLeaseByID(ctx, id)
		if err != nil && broker.ErrorCode(err) != broker.ENOTFOUND {
			errs = append(errs, err)
			continue
		}
		if err == nil && l.State == broker.LeaseActive && (l.ExpiresAt == nil || time.Now().Before(*l.ExpiresAt)) {
			continue
		}
		if err := f.Remove(id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Watch sweeps every interval until ctx is done.
func (f *FileDelivery) Watch(ctx context.Context, leases Leases, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = f.Sweep(ctx, leases)
		}
	}
}

// Close removes every file still present: nothing would remove them once
// the server is gone.
func (f *FileDelivery) Close() error {
	f.mu.Lock()
	ids := make([]string, 0, len(f.files))
	for id := range f.files {
		ids = append(ids, id)
	}
	f.mu.Unlock()
	var errs []error
	for _, id := range ids {
		errs = append(errs, f.Remove(id))
	}
	return errors.Join(errs...)
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// envName turns a credential field name into an environment variable name.
func envName(k string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(k) {
		if r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}
