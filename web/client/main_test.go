package client_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stint-broker/stint/approvals"
	"github.com/stint-broker/stint/approvals/policy"
	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/broker/identity"
	"github.com/stint-broker/stint/broker/sqlite"
	"github.com/stint-broker/stint/leases"
	"github.com/stint-broker/stint/leases/vault"
	"github.com/stint-broker/stint/web"
)

// The examples and tests share one Stint wired as the binary wires it: a
// real SQLite store, a real development Vault minting PostgreSQL logins, the
// real lease and approval services and the real HTTP server.
var (
	// serverURL is where the server listens.
	serverURL string
	// agentKey is the API key of the agent "report-bot".
	agentKey string
	// approverToken is the approver token of dana@example.com.
	approverToken = "stint_approver_dana-example-token"
	// pgDSN is the PostgreSQL the development Vault mints logins for.
	pgDSN string
	// agents registers more agents.
	agents *identity.Service
)

// testPolicy grants low-sensitivity roles at once and routes medium ones
// to one approver of the security group.
const testPolicy = `
@id("low-auto")
permit (principal is Agent, action == Action::"request", resource is Role)
when { resource.sensitivity == "low" };

@id("medium-one-security")
@approvals("1")
@approvers("security")
@reason("Medium-sensitivity role: one approval from security.")
permit (principal is Agent, action == Action::"request", resource is Role)
when { resource.sensitivity == "medium" };
`

func TestMain(m *testing.M) {
	stop, err := startStint()
	if err != nil {
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, "web/client tests:", err)
			os.Exit(1)
		}
		// The examples cannot skip one by one: without the services,
		// none runs.
		fmt.Println("skipping web/client tests and examples:", err)
		os.Exit(0)
	}
	code := m.Run()
	stop()
	os.Exit(code)
}

// startStint starts the development Vault and Stint, and returns what stops
// them.
func startStint() (stop func(), err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pgDSN = os.Getenv("STINT_TEST_PG_DSN")
	if pgDSN == "" {
		pgDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	conn, err := pgx.Connect(ctx, pgDSN)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL at STINT_TEST_PG_DSN is unreachable: %w", err)
	}
	conn.Close(ctx)
	bin := os.Getenv("STINT_TEST_VAULT_BIN")
	if bin == "" {
		if wd, err := os.Getwd(); err == nil {
			bin = filepath.Join(wd, "..", "..", "bin", "vault")
		}
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("no Vault server binary: run `make devvault` or set STINT_TEST_VAULT_BIN")
	}
	dir, err := os.MkdirTemp("", "stint-client-test-")
	if err != nil {
		return nil, err
	}
	var closers []func()
	stop = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		os.RemoveAll(dir)
	}
	fail := func(err error) (func(), error) { stop(); return nil, err }

	port, err := freePort()
	if err != nil {
		return fail(err)
	}
	dv, err := vault.StartDev(ctx, vault.DevOptions{Bin: bin, Dir: filepath.Join(dir, "vault"), Port: port, PGDSN: pgDSN})
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { dv.Close() })
	issuer, err := vault.Open(dv.Config())
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { issuer.Close() })

	db, err := sqlite.Open(ctx, filepath.Join(dir, "stint.db"))
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { db.Close() })

	logger := slog.New(slog.DiscardHandler)
	roles := vault.DevRoles()
	agents = identity.NewService(db, nil)
	svc := leases.NewService(db, issuer, roles, logger)
	svc.Credentials = agents
	if svc.Decider, err = policy.NewFromDocuments([]policy.Document{{Name: "test.cedar", Text: []byte(testPolicy)}}, nil, policy.Config{}); err != nil {
		return fail(err)
	}
	sum := sha256.Sum256([]byte(approverToken))
	appr, err := approvals.NewService(db, []*broker.Approver{
		{Email: "dana@example.com", Name: "Dana", Groups: []string{"security"}, TokenSHA256: hex.EncodeToString(sum[:])},
	}, roles, logger)
	if err != nil {
		return fail(err)
	}
	svc.OnChange, appr.Verdicts = appr.LeaseChanged, svc

	srv := web.NewServer()
	srv.Leases, srv.Agents, srv.Approvals, srv.Logger = svc, agents, appr, logger
	srv.Auth = approverAuth{Authenticator: agents, approvals: appr}
	if err := srv.Open("127.0.0.1:0"); err != nil {
		return fail(err)
	}
	closers = append(closers, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	serverURL = srv.URL()

	_, key, _, err := agents.CreateAgent(admin(), broker.NewAgent{Name: "report-bot", Owner: "owner@example.com"})
	if err != nil {
		return fail(err)
	}
	agentKey = key
	return stop, nil
}

// approverAuth lets approver tokens in besides the agents' credentials, as
// the binary does.
type approverAuth struct {
	broker.Authenticator
	approvals *approvals.Service
}

func (a approverAuth) AuthenticateRequest(ctx context.Context, req broker.AuthRequest) (broker.Actor, error) {
	if actor, ok := a.approvals.AuthenticateApprover(req.Bearer); ok && req.Bearer != "" {
		return actor, nil
	}
	return a.Authenticator.AuthenticateRequest(ctx, req)
}

func admin() context.Context {
	return broker.NewContextWithActor(context.Background(), broker.Actor{Kind: broker.ActorAdmin, Name: "test", AuthMethod: "local"})
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// canLogIn reports whether PostgreSQL accepts the user and password.
func canLogIn(user, password string) error {
	cfg, err := pgx.ParseConfig(pgDSN)
	if err != nil {
		return err
	}
	cfg.User, cfg.Password = user, password
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}
